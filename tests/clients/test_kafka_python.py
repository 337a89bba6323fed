"""kafka-python (pure Python client) producing, consuming and administering."""
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from conftest import topic_name


def test_produce_consume_assign_seek(broker):
    topic = topic_name("kp")
    adm = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    adm.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    assert topic in adm.list_topics()

    for codec in (None, "gzip"):
        p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", compression_type=codec, linger_ms=5)
        futures = [p.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=i % 2,
                          headers=[("h", b"1")]) for i in range(100)]
        metas = [f.get(timeout=30) for f in futures]
        p.close()
        assert all(m.offset >= 0 for m in metas)

    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                      consumer_timeout_ms=5000)
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    c.assign(tps)
    c.seek_to_beginning()
    got = list(c)
    assert len(got) == 200
    for part in (0, 1):
        offsets = [m.offset for m in got if m.partition == part]
        assert offsets == list(range(100))
    assert got[0].headers == [("h", b"1")]

    end = c.end_offsets(tps)
    assert end == {tps[0]: 100, tps[1]: 100}
    c.seek(tps[1], 90)
    rest = [m for m in c if m.partition == 1]
    assert [m.offset for m in rest] == list(range(90, 100))

    ts = int(time.time() * 1000) - 3_600_000
    found = c.offsets_for_times({tps[0]: ts})
    assert found[tps[0]].offset == 0
    c.close()

    adm.delete_topics([topic])
    deadline = time.time() + 10
    while topic in adm.list_topics():
        assert time.time() < deadline
        time.sleep(0.2)
    adm.close()
