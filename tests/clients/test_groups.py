"""Consumer groups (classic protocol) with real clients."""
import threading
import time

from confluent_kafka import ConsumerGroupTopicPartitions, Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer

from conftest import topic_name


def setup_topic(broker, partitions, per_partition):
    topic = topic_name("grp")
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(30)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 2})
    for part in range(partitions):
        for i in range(per_partition):
            p.produce(topic, value=f"{part}:{i}".encode(), partition=part)
    assert p.flush(60) == 0
    return topic


def ck_consumer(broker, group, **extra):
    conf = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 500,
    }
    conf.update(extra)
    return Consumer(conf)


def poll_until(consumers, pred, timeout=90, on_msg=None):
    """Polls every consumer from a thread of its own (as applications do)
    until `pred()` holds.

    One thread polling all of them in turn with short timeouts trips
    kafka-python 3.0.x: a join that completes while its consumer is not
    inside poll() is thrown away and a new JoinGroup is sent
    (`join_group_async` restarts when `_join_task.is_done`). That member is
    the group leader here (its id sorts first), and Kafka rebalances the
    whole group whenever the leader rejoins, so the group can rebalance
    again and again without settling."""
    stop = threading.Event()
    failures = []

    def drive(c):
        # Only this thread calls the consumer (neither client is safe to
        # call from two threads); `pred` sees its assignment through
        # `_assignments`.
        try:
            while not stop.is_set():
                if isinstance(c, KafkaConsumer):
                    for recs in c.poll(timeout_ms=200).values():
                        for r in recs:
                            on_msg and on_msg(c, r.partition, r.offset, r.value)
                else:
                    m = c.poll(0.2)
                    if m is not None and not m.error():
                        on_msg and on_msg(c, m.partition(), m.offset(), m.value())
                _assignments[id(c)] = _assigned_now(c)
        except Exception as e:  # reported by the caller's thread
            failures.append(e)

    for c in consumers:
        _assignments[id(c)] = _assigned_now(c)
    threads = [threading.Thread(target=drive, args=(c,), daemon=True) for c in consumers]
    for t in threads:
        t.start()
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and not failures:
            if pred():
                return
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        for c in consumers:
            _assignments.pop(id(c), None)
    stuck = [i for i, t in enumerate(threads) if t.is_alive()]
    assert not stuck, f"consumers {stuck} still inside poll() 60 s after being told to stop"
    assert not failures, f"a consumer failed: {failures[0]!r}"
    if pred():
        return
    state = [sorted(assigned(c)) for c in consumers]
    raise AssertionError(f"condition not reached in {timeout}s; assignments: {state}")


# Assignments of the consumers poll_until is driving, by id(consumer).
_assignments = {}


def assigned(c):
    if id(c) in _assignments:
        return _assignments[id(c)]
    return _assigned_now(c)


def _assigned_now(c):
    return {tp.partition for tp in c.assignment()}


def test_mixed_clients_share_partitions_and_resume_from_commits(broker):
    topic = setup_topic(broker, 12, 0)
    group = topic_name("g")
    seen = {}

    def record(c, part, offset, value):
        seen.setdefault((part, offset), []).append(value)

    cks = [ck_consumer(broker, group) for _ in range(3)]
    for c in cks:
        c.subscribe([topic])
    kp = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group, auto_offset_reset="earliest",
                       enable_auto_commit=False, session_timeout_ms=10000, heartbeat_interval_ms=500)
    members = cks + [kp]

    def balanced():
        sets = [assigned(c) for c in members]
        return sum(len(s) for s in sets) == 12 and set().union(*sets) == set(range(12)) and all(len(s) == 3 for s in sets)

    # Settle the group first: records read before the last rebalance may be
    # read again by the next owner (nothing is committed yet), as in Kafka.
    poll_until(members, balanced, on_msg=record)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 2})
    for part in range(12):
        for i in range(20):
            p.produce(topic, value=f"{part}:{i}".encode(), partition=part)
    assert p.flush(60) == 0
    poll_until(members, lambda: len(seen) == 240, on_msg=record)
    assert all(len(v) == 1 for v in seen.values()), "a record was delivered to two members"
    assert balanced(), "the assignment changed while consuming"

    # Commit what was read, then everyone leaves.
    for c in cks:
        c.commit(asynchronous=False)
    kp.commit()
    for c in cks:
        c.close()
    kp.close()

    # More records; a new generation of members resumes exactly after the commits.
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for part in range(12):
        p.produce(topic, value=f"{part}:new".encode(), partition=part)
    assert p.flush(30) == 0
    seen.clear()
    c2 = ck_consumer(broker, group)
    c2.subscribe([topic])
    poll_until([c2], lambda: len(seen) == 12, on_msg=record)
    assert sorted(seen) == [(part, 20) for part in range(12)]
    c2.commit(asynchronous=False)
    c2.close()

    adm = AdminClient({"bootstrap.servers": broker.bootstrap})
    listed = adm.list_consumer_groups().result(30)
    assert group in [g.group_id for g in listed.valid]
    res = adm.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(30)
    got = {tp.partition: tp.offset for tp in res.topic_partitions if tp.topic == topic}
    assert got == {part: 21 for part in range(12)}
    desc = adm.describe_consumer_groups([group])[group].result(30)
    assert desc.group_id == group and len(desc.members) == 0
    adm.delete_consumer_groups([group])[group].result(30)
    assert group not in [g.group_id for g in adm.list_consumer_groups().result(30).valid]


def test_members_joining_and_leaving_rebalance_cooperatively(broker):
    topic = setup_topic(broker, 6, 1)
    group = topic_name("coop")
    extra = {"partition.assignment.strategy": "cooperative-sticky"}
    a = ck_consumer(broker, group, **extra)
    a.subscribe([topic])
    poll_until([a], lambda: assigned(a) == set(range(6)))

    b = ck_consumer(broker, group, **extra)
    b.subscribe([topic])
    poll_until([a, b], lambda: len(assigned(a)) == 3 and len(assigned(b)) == 3 and assigned(a) | assigned(b) == set(range(6)))

    b.close()  # leaves the group: its partitions go back to a
    poll_until([a], lambda: assigned(a) == set(range(6)))
    a.close()


def test_a_killed_member_is_expired_after_its_session_timeout(broker):
    import subprocess
    import sys

    topic = setup_topic(broker, 4, 1)
    group = topic_name("expire")
    a = ck_consumer(broker, group, **{"session.timeout.ms": 6000})
    a.subscribe([topic])
    poll_until([a], lambda: assigned(a) == set(range(4)))
    # A second member in another process, killed with SIGKILL: no LeaveGroup
    # is ever sent, so only its session timeout can free its partitions.
    script = (
        "from kafka import KafkaConsumer\n"
        f"c = KafkaConsumer({topic!r}, bootstrap_servers={broker.bootstrap!r}, group_id={group!r}, "
        "session_timeout_ms=6000, heartbeat_interval_ms=500, enable_auto_commit=False)\n"
        "while True:\n    c.poll(timeout_ms=200)\n"
    )
    other = subprocess.Popen([sys.executable, "-c", script])
    try:
        poll_until([a], lambda: len(assigned(a)) == 2)
    finally:
        other.kill()
        other.wait()
    killed = time.time()
    poll_until([a], lambda: assigned(a) == set(range(4)), timeout=40)
    assert time.time() - killed >= 3, "partitions moved before the session timeout"
    a.close()


def test_committed_offsets_survive_a_broker_restart(broker):
    topic = setup_topic(broker, 2, 10)
    group = topic_name("restart")
    seen = {}

    def record(c, part, offset, value):
        seen[(part, offset)] = value

    c = ck_consumer(broker, group)
    c.subscribe([topic])
    poll_until([c], lambda: len(seen) == 20, on_msg=record)
    c.commit(asynchronous=False)
    c.close()

    broker.kill9()
    broker.start()

    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for part in range(2):
        p.produce(topic, value=b"after-restart", partition=part)
    assert p.flush(30) == 0
    seen.clear()
    c = ck_consumer(broker, group)
    c.subscribe([topic])
    poll_until([c], lambda: len(seen) == 2, on_msg=record)
    assert sorted(seen) == [(0, 10), (1, 10)]
    assert set(seen.values()) == {b"after-restart"}
    c.close()


def test_static_member_keeps_its_partitions_across_a_restart(broker):
    topic = setup_topic(broker, 4, 1)
    group = topic_name("static")

    def member(instance):
        c = ck_consumer(broker, group, **{"group.instance.id": instance, "session.timeout.ms": 30000})
        c.subscribe([topic])
        return c

    a, b = member("i-a"), member("i-b")
    poll_until([a, b], lambda: len(assigned(a)) == 2 and len(assigned(b)) == 2)
    mine_a, mine_b = assigned(a), assigned(b)
    # A static member leaves no LeaveGroup behind when it closes; its
    # replacement with the same group.instance.id takes over its member id.
    b.close()
    b2 = member("i-b")
    poll_until([a, b2], lambda: assigned(b2) == mine_b and assigned(a) == mine_a)
    a.close()
    b2.close()
