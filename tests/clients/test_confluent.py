"""librdkafka (confluent-kafka) producers, consumers and admin."""
import os
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

from conftest import topic_name


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create(broker, topic, partitions):
    a = admin(broker)  # keep the client alive until the future resolves
    fs = a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    fs[topic].result(timeout=30)


def consumer(broker, **extra):
    conf = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": "unused-assign-only",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    }
    conf.update(extra)
    return Consumer(conf)


def read_all(c, partitions, expected=None, timeout=60):
    """Reads from assigned partitions until every one reached EOF (and, if
    given, `expected` messages arrived). Fails after `timeout` seconds without
    progress (a slow machine is not a stall)."""
    out, eof = [], set()
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        deadline = time.time() + timeout
        if m.error():
            if m.error().code() == -191:  # _PARTITION_EOF
                eof.add(m.partition())
                if len(eof) == len(partitions) and (expected is None or len(out) >= expected):
                    return out
                continue
            raise KafkaException(m.error())
        out.append(m)
    raise AssertionError(f"timed out: {len(out)} messages, eof on {sorted(eof)} of {partitions}")


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_idempotent_acks_all_every_codec_keys_headers_nulls(broker, codec):
    topic = topic_name(codec)
    create(broker, topic, 3)
    p = Producer({
        "bootstrap.servers": broker.bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": codec,
        "linger.ms": 5,
    })
    delivered = []
    sent = []
    for i in range(300):
        part = i % 3
        key = None if i % 7 == 0 else f"key-{i}".encode()
        value = None if i % 11 == 0 else (f"value-{i}-" + "x" * (i % 50)).encode()
        headers = [("n", str(i).encode()), ("empty", b"")] if i % 2 else None
        sent.append((part, key, value, headers))
        p.produce(topic, value=value, key=key, partition=part, headers=headers,
                  on_delivery=lambda err, msg: delivered.append((err, msg.partition(), msg.offset())))
    assert p.flush(30) == 0
    errors = [d for d in delivered if d[0] is not None]
    assert not errors, errors[:3]
    assert len(delivered) == 300

    c = consumer(broker)
    c.assign([TopicPartition(topic, part, 0) for part in range(3)])
    got = read_all(c, [0, 1, 2], expected=300)
    c.close()
    assert len(got) == 300
    by_part = {part: [s for s in sent if s[0] == part] for part in range(3)}
    for part in range(3):
        msgs = [m for m in got if m.partition() == part]
        assert [m.offset() for m in msgs] == list(range(len(by_part[part])))
        for m, (_, key, value, headers) in zip(msgs, by_part[part]):
            assert m.key() == key
            assert m.value() == value
            assert (m.headers() or None) == headers


def test_assign_seek_and_offsets_for_times(broker):
    topic = topic_name("seek")
    create(broker, topic, 1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0})
    base = int(time.time() * 1000) - 100_000
    for i in range(50):
        p.produce(topic, value=f"m{i}".encode(), partition=0, timestamp=base + i * 1000)
        if i % 10 == 9:
            p.flush(10)  # several batches and segments
    assert p.flush(30) == 0

    c = consumer(broker)
    found = c.offsets_for_times([TopicPartition(topic, 0, base + 20_500)], timeout=20)
    assert found[0].offset == 21
    found = c.offsets_for_times([TopicPartition(topic, 0, base + 10**9)], timeout=20)
    assert found[0].offset == -1  # after the last record: end
    low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=20)
    assert (low, high) == (0, 50)

    c.assign([TopicPartition(topic, 0, 40)])
    got = read_all(c, [0])
    assert [m.value() for m in got] == [f"m{i}".encode() for i in range(40, 50)]
    c.seek(TopicPartition(topic, 0, 5))
    m = None
    while m is None or m.error():
        m = c.poll(5)
    assert m.offset() == 5 and m.value() == b"m5"
    c.close()


def test_ten_mib_record(broker):
    topic = topic_name("big")
    create(broker, topic, 1)
    big = os.urandom(10 * 1024 * 1024)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "message.max.bytes": 12 * 1024 * 1024})
    p.produce(topic, value=big, key=b"big", partition=0)
    p.produce(topic, value=b"small", partition=0)
    assert p.flush(60) == 0
    c = consumer(broker, **{"fetch.max.bytes": 50 * 1024 * 1024, "max.partition.fetch.bytes": 20 * 1024 * 1024,
                            "receive.message.max.bytes": 60 * 1024 * 1024})
    c.assign([TopicPartition(topic, 0, 0)])
    got = read_all(c, [0], expected=2)
    c.close()
    assert got[0].value() == big and got[0].key() == b"big"
    assert got[1].value() == b"small"


def test_many_partitions(broker):
    topic = topic_name("many")
    n = 48
    create(broker, topic, n)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 2})
    for part in range(n):
        for i in range(20):
            p.produce(topic, value=f"{part}:{i}".encode(), partition=part)
    assert p.flush(60) == 0
    c = consumer(broker)
    c.assign([TopicPartition(topic, part, 0) for part in range(n)])
    got = read_all(c, list(range(n)), expected=n * 20)
    c.close()
    assert len(got) == n * 20
    for m in got:
        part, i = m.value().decode().split(":")
        assert int(part) == m.partition() and int(i) == m.offset()


def test_create_topic_refuses_unknown_or_malformed_settings(broker):
    """As Apache Kafka does: INVALID_CONFIG, and no topic is created."""
    a = admin(broker)
    for config in [{"no.such.setting": "1"}, {"retention.ms": "a week"}, {"cleanup.policy": "delete,archive"},
                   {"compression.type": "brotli"}]:
        topic = topic_name("badcfg")
        for validate_only in (True, False):
            with pytest.raises(KafkaException) as e:
                a.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1, config=config)],
                                validate_only=validate_only)[topic].result(30)
            assert e.value.args[0].code() == KafkaError.INVALID_CONFIG, (config, e.value)
        assert topic not in a.list_topics(timeout=10).topics
    topic = topic_name("goodcfg")
    a.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1,
                              config={"cleanup.policy": "compact,delete", "retention.ms": "-1",
                                      "compression.type": "zstd", "min.cleanable.dirty.ratio": "0.25"})])[topic].result(30)


def test_admin_create_describe_grow_delete(broker):
    a = admin(broker)
    topic = topic_name("admin")
    a.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1, config={"retention.ms": "86400000"})])[topic].result(30)
    with pytest.raises(KafkaException) as e:
        a.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(30)
    assert "TOPIC_ALREADY_EXISTS" in str(e.value) or "already exists" in str(e.value)

    md = a.list_topics(topic, timeout=10)
    assert len(md.topics[topic].partitions) == 2

    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = a.describe_configs([res])[res].result(30)
    assert configs["retention.ms"].value == "86400000"
    assert configs["cleanup.policy"].value == "delete"

    a.create_partitions([NewPartitions(topic, 5)])[topic].result(30)
    deadline = time.time() + 10
    while len(a.list_topics(topic, timeout=10).topics[topic].partitions) != 5:
        assert time.time() < deadline
        time.sleep(0.2)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    p.produce(topic, value=b"into the new partition", partition=4)
    assert p.flush(30) == 0

    a.delete_topics([topic])[topic].result(30)
    md = a.list_topics(timeout=10)
    assert topic not in md.topics

    bad = "bad/name"
    with pytest.raises(KafkaException):
        a.create_topics([NewTopic(bad, num_partitions=1, replication_factor=1)])[bad].result(30)


def test_kill9_under_load_then_restart_loses_no_acknowledged_record(broker):
    topic = topic_name("crash")
    partitions = 4
    create(broker, topic, partitions)
    acked = {part: [] for part in range(partitions)}
    failed = []
    lock = threading.Lock()

    def on_delivery(err, msg):
        with lock:
            if err is None:
                acked[msg.partition()].append((msg.offset(), msg.value()))
            else:
                failed.append(err)

    p = Producer({
        "bootstrap.servers": broker.bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "message.timeout.ms": 60000,
        "reconnect.backoff.ms": 50,
    })
    stop = threading.Event()

    def pump():
        i = 0
        while not stop.is_set():
            try:
                p.produce(topic, value=f"r{i}".encode(), partition=i % partitions, on_delivery=on_delivery)
                i += 1
            except BufferError:
                p.poll(0.05)
            p.poll(0)
            if i % 200 == 0:
                time.sleep(0.01)

    t = threading.Thread(target=pump)
    t.start()
    time.sleep(2)
    before = sum(len(v) for v in acked.values())
    broker.kill9()
    time.sleep(1)
    broker.start()
    time.sleep(2)
    stop.set()
    t.join()
    assert p.flush(90) == 0
    total = sum(len(v) for v in acked.values())
    assert before > 0, "nothing was acknowledged before the crash"
    assert total > before, "nothing was acknowledged after the restart"

    c = consumer(broker)
    c.assign([TopicPartition(topic, part, 0) for part in range(partitions)])
    got = read_all(c, list(range(partitions)), expected=total)
    c.close()
    for part in range(partitions):
        log = [(m.offset(), m.value()) for m in got if m.partition() == part]
        values = [v for _, v in log]
        assert len(values) == len(set(values)), f"partition {part} has duplicates"
        assert [o for o, _ in log] == list(range(len(log))), "offsets are not contiguous"
        stored = dict(log)
        for offset, value in acked[part]:
            assert stored.get(offset) == value, f"acknowledged record {value} at {part}/{offset} is missing"
        # Per-partition order of the producer is kept.
        seq = [int(v[1:]) for v in values]
        assert seq == sorted(seq)
