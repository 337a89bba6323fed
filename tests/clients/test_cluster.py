"""Several brokers on one bucket and one etcd, with real clients: ownership
spread across live brokers, redirection, failover after kill -9, and the
fence that keeps a paused broker from appending."""
import os
import signal
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import kraw
from conftest import Broker, Cluster, topic_name
from test_groups import test_members_joining_and_leaving_rebalance_cooperatively as cooperative_scenario
from test_groups import test_mixed_clients_share_partitions_and_resume_from_commits as mixed_scenario

NOT_LEADER_OR_FOLLOWER = 6
NOT_COORDINATOR = 16
UNKNOWN_MEMBER_ID = 25


@pytest.fixture
def cluster3(tmp_path):
    c = Cluster(tmp_path, 3)
    c.start()
    yield c
    c.stop()


def create_topic(bootstrap, partitions):
    topic = topic_name("cl")
    a = AdminClient({"bootstrap.servers": bootstrap})
    a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(30)
    return topic


def topic_led_in_part_by(bootstrap, partitions, broker_id):
    """A new topic of which `broker_id` leads at least one partition. Owners
    are hashed from the topic name, so with 4 partitions over 2 brokers one
    name in 16 gives a broker none: try names until it has some."""
    for _ in range(20):
        topic = create_topic(bootstrap, partitions)
        if broker_id in leaders(bootstrap, topic).values():
            return topic
    raise AssertionError(f"broker {broker_id} leads no partition of 20 new topics")


def leaders(bootstrap, topic):
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return {p: m.leader for p, m in md.topics[topic].partitions.items()}


def read_all(bootstrap, topic, partitions, timeout=60):
    """Every record of every partition, as {partition: [(offset, value)]}."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": topic_name("reader"), "enable.auto.commit": False})
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = {p: [] for p in range(partitions)}
    deadline = time.time() + timeout
    while any(len(got[p]) < ends[p] for p in got) and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            got[m.partition()].append((m.offset(), m.value().decode()))
    c.close()
    short = {p: (len(got[p]), ends[p]) for p in got if len(got[p]) < ends[p]}
    assert not short, f"partitions not read to their end (read, end): {short}"
    return got


def test_leaders_spread_and_requests_elsewhere_are_redirected(cluster3):
    c = cluster3
    # Partitions go to the broker they hash to (rendezvous): one broker leads
    # none of 12 about once in 40 topics, so take a topic where all three do.
    for _ in range(10):
        topic = create_topic(c.bootstrap, 12)
        lead = leaders(c.bootstrap, topic)
        if set(lead.values()) == {0, 1, 2}:
            break
    assert set(lead.values()) == {0, 1, 2}, f"leaders not spread over the live brokers: {lead}"
    # Every broker tells the same story.
    for b in c.brokers:
        assert leaders(b.bootstrap, topic) == lead

    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
    for part in range(12):
        for i in range(50):
            p.produce(topic, value=f"{part}:{i}".encode(), partition=part)
    assert p.flush(60) == 0
    got = read_all(c.bootstrap, topic, 12)
    for part in range(12):
        assert [v for _, v in got[part]] == [f"{part}:{i}" for i in range(50)]

    # A broker that does not own a partition refuses to append to it, with
    # the code that makes clients refresh their metadata.
    lead = leaders(c.bootstrap, topic)
    for part in (0, 1, 2):
        other = next(b for i, b in enumerate(c.brokers) if i != lead[part])
        conn = kraw.Conn(other.bootstrap)
        kraw.send_produce(conn, topic, part, [b"misdirected"])
        assert kraw.produce_error(conn) == NOT_LEADER_OR_FOLLOWER
        conn.close()
    # Exactly one broker coordinates a group; the others say NOT_COORDINATOR.
    codes = []
    for b in c.brokers:
        conn = kraw.Conn(b.bootstrap)
        codes.append(kraw.heartbeat_error(conn, "some-group"))
        conn.close()
    assert sorted(codes) == [NOT_COORDINATOR, NOT_COORDINATOR, UNKNOWN_MEMBER_ID], codes
    assert [v for _, v in read_all(c.bootstrap, topic, 12)[0]] == [f"0:{i}" for i in range(50)]


def test_consumer_group_across_three_brokers(cluster3):
    """Three confluent-kafka consumers and one kafka-python consumer, bootstrapped
    on all three brokers, share 12 partitions and resume from commits."""
    mixed_scenario(cluster3)


def test_cooperative_sticky_across_three_brokers(cluster3):
    cooperative_scenario(cluster3)


def test_kill9_one_broker_during_produce_loses_no_acknowledged_record(tmp_path):
    c = Cluster(tmp_path, 3)
    c.start()
    try:
        run_kill9_scenario(c)
    finally:
        c.stop()


def run_kill9_scenario(c):
    partitions = 12
    topic = create_topic(c.bootstrap, partitions)
    acked = {p: [] for p in range(partitions)}
    acked_at = {p: [] for p in range(partitions)}
    failed = []

    def delivered(err, msg):
        if err is None:
            acked[msg.partition()].append(msg.value().decode())
            acked_at[msg.partition()].append(time.time())
        else:
            failed.append((msg.partition(), msg.value().decode(), str(err)))

    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5,
                  "message.timeout.ms": 120000, "retry.backoff.ms": 100, "retry.backoff.max.ms": 500,
                  "topic.metadata.refresh.interval.ms": 1000})
    stop = threading.Event()

    def produce():
        seq = 0
        while not stop.is_set():
            for part in range(partitions):
                p.produce(topic, value=f"{part}:{seq}".encode(), partition=part, on_delivery=delivered)
            seq += 1
            p.poll(0.005)

    t = threading.Thread(target=produce)
    t.start()
    time.sleep(3)
    lead = leaders(c.bootstrap, topic)
    victim = lead[0]
    moved = [part for part, b in lead.items() if b == victim]
    c.brokers[victim].kill9()
    killed_at = time.time()
    time.sleep(c.lease_ttl + 10)
    stop.set()
    t.join()
    assert p.flush(120) == 0
    assert not failed, f"deliveries failed: {failed[:5]}"

    # Failover: for each partition the dead broker led, how long until the
    # first record was acknowledged again (by its new owner).
    gaps = [min(at for at in acked_at[part] if at > killed_at) - killed_at for part in moved]
    failover = max(gaps)
    print(f"failover after kill -9 with lease TTL {c.lease_ttl}s: {failover:.2f}s "
          f"(partitions moved: {len(moved)})")
    assert failover < c.lease_ttl + 10, f"clients took {failover:.1f}s to reach the new leaders"
    survivors = [b for i, b in enumerate(c.brokers) if i != victim]
    new_lead = leaders(survivors[0].bootstrap, topic)
    assert victim not in new_lead.values(), new_lead

    got = read_all(",".join(b.bootstrap for b in survivors), topic, partitions)
    for part in range(partitions):
        values = [v for _, v in got[part]]
        offsets = [o for o, _ in got[part]]
        assert offsets == list(range(len(offsets))), f"partition {part}: offsets not contiguous"
        assert len(values) == len(set(values)), f"partition {part}: a record is there twice"
        missing = set(acked[part]) - set(values)
        assert not missing, f"partition {part}: acknowledged records lost: {sorted(missing)[:5]}"
        seqs = [int(v.split(":")[1]) for v in values]
        assert seqs == sorted(seqs), f"partition {part}: records out of order"


def test_paused_broker_cannot_append_after_its_lease_expires(tmp_path):
    # Slow flushes, so the paused broker holds an unflushed append.
    c = Cluster(tmp_path, 2, flush_ms=1500)
    c.start()
    try:
        a, b = c.brokers
        topic = topic_led_in_part_by(c.bootstrap, 4, 0)
        part = next(p for p, leader in leaders(c.bootstrap, topic).items() if leader == 0)
        prod = Producer({"bootstrap.servers": a.bootstrap, "acks": "all"})
        for i in range(10):
            prod.produce(topic, value=f"before:{i}".encode(), partition=part)
        assert prod.flush(30) == 0

        # An append waiting for its flush when broker 0 is paused.
        pending = kraw.Conn(a.bootstrap, timeout=60)
        kraw.send_produce(pending, topic, part, [b"from-the-paused-broker"])
        time.sleep(0.3)
        os.kill(a.proc.pid, signal.SIGSTOP)
        time.sleep(c.lease_ttl + 2)

        # Broker 1 takes the partition over and appends.
        prod = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "message.timeout.ms": 30000})
        for i in range(10):
            prod.produce(topic, value=f"after:{i}".encode(), partition=part)
        assert prod.flush(40) == 0
        os.kill(a.proc.pid, signal.SIGCONT)

        # The paused broker's append is refused, now and on a new request.
        assert kraw.produce_error(pending) == NOT_LEADER_OR_FOLLOWER
        again = kraw.Conn(a.bootstrap)
        kraw.send_produce(again, topic, part, [b"from-the-paused-broker-again"])
        assert kraw.produce_error(again) == NOT_LEADER_OR_FOLLOWER
        deadline = time.time() + 10
        while "lost the cluster lease" not in a.log_path.read_text() and time.time() < deadline:
            time.sleep(0.2)
        assert "lost the cluster lease" in a.log_path.read_text()

        got = read_all(b.bootstrap, topic, 4)[part]
        assert [v for _, v in got] == [f"before:{i}" for i in range(10)] + [f"after:{i}" for i in range(10)]
        assert [o for o, _ in got] == list(range(20))
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


def test_stopped_broker_hands_its_partitions_over_at_once(tmp_path):
    """SIGTERM ends the broker's lease: the others take over without waiting
    for the lease TTL (10 s here)."""
    c = Cluster(tmp_path, 2, lease_ttl=10)
    c.start()
    try:
        a, b = c.brokers
        topic = topic_led_in_part_by(c.bootstrap, 4, 0)
        lead = leaders(c.bootstrap, topic)
        mine = [p for p, leader in lead.items() if leader == 0]
        assert mine, lead
        prod = Producer({"bootstrap.servers": c.bootstrap, "acks": "all"})
        for p in range(4):
            prod.produce(topic, value=b"before", partition=p)
        assert prod.flush(30) == 0
        a.proc.terminate()
        assert a.proc.wait(timeout=10) == 0
        stopped = time.time()
        # The first produce to each of its partitions through the survivor.
        for p in mine:
            while True:
                conn = kraw.Conn(b.bootstrap)
                kraw.send_produce(conn, topic, p, [b"after"])
                code = kraw.produce_error(conn)
                conn.close()
                if code == 0:
                    break
                assert code == NOT_LEADER_OR_FOLLOWER, code
                assert time.time() - stopped < 8, "the survivor waited for the lease TTL"
                time.sleep(0.1)
        took = time.time() - stopped
        print(f"partitions of a SIGTERMed broker writable again after {took:.2f}s (lease TTL 10 s)")
        assert "left the cluster" in a.log_path.read_text()
        got = read_all(b.bootstrap, topic, 4)
        for p in range(4):
            assert [v for _, v in got[p]] == ["before"] + (["after"] if p in mine else [])
    finally:
        c.stop()


def test_restarted_broker_outwaits_the_old_registration(tmp_path):
    """A broker restarted right after kill -9 finds its id still registered
    under the dead process's lease and waits for it. Its own lease must not
    lapse meanwhile: here the old lease lives 6 s and the new one has a 2 s
    TTL, so the wait is three of its TTLs."""
    c = Cluster(tmp_path, 1, lease_ttl=6)
    c.start()
    again = None
    try:
        old = c.brokers[0]
        old.proc.kill()
        old.proc.wait(timeout=10)
        again = Broker("s3", tmp_path / "again", suffix=old.suffix, flush_ms=50,
                       extra_args=["--broker-id", "0", "--lease-ttl-secs", "2"])
        again.start()
        log = again.log_path.read_text()
        assert "still registered" in log and "s left" in log, log[-2000:]
        time.sleep(3)  # longer than its own TTL: it must be renewing
        assert again.proc.poll() is None, again.log()
        md = AdminClient({"bootstrap.servers": again.bootstrap}).list_topics(timeout=10)
        assert [b.id for b in md.brokers.values()] == [0]
    finally:
        if again:
            again.stop()
        c.stop()
