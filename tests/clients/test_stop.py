"""Stopping a broker with SIGTERM: what it accepted is flushed and answered
before it exits, on both backends."""
import signal
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, backends, topic_name

# Long enough that no flush in these tests can come from the interval.
FLUSH_MS = 60_000


@pytest.mark.parametrize("backend", backends())
def test_sigterm_flushes_and_answers_every_produce_in_flight(backend, tmp_path):
    broker = Broker(backend, tmp_path / "first", flush_ms=FLUSH_MS)
    broker.start()
    topic = topic_name("stop")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])[topic].result(30)
    reports = []
    p = Producer({
        "bootstrap.servers": broker.bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        # One batch per partition: all of them in flight before the signal
        # (idempotence allows 5 requests in flight per connection).
        "linger.ms": 200,
        "message.timeout.ms": 120_000,
    })
    try:
        for i in range(200):
            p.produce(topic, value=b"v%d" % i, key=b"k%d" % i, partition=i % 4,
                      on_delivery=lambda err, msg: reports.append((err, msg)))
        p.poll(0)
        # Appended, but nothing is durable until the broker flushes, which
        # the interval would only do in a minute.
        deadline = time.time() + 3
        while time.time() < deadline:
            p.poll(0.1)
        assert reports == [], f"acknowledged before any flush: {reports[:3]}"

        broker.proc.send_signal(signal.SIGTERM)
        assert p.flush(30) == 0, f"unanswered after SIGTERM:\n{broker.log()}"
        errors = [(err, msg.partition()) for err, msg in reports if err is not None]
        assert not errors, f"{errors[:5]}\n{broker.log()}"
        assert len(reports) == 200
        assert broker.proc.wait(timeout=30) == 0, broker.log()
        assert "drained" in broker.log(), broker.log()
    finally:
        broker.stop()

    # Restarted on the same store: the 200 records, once each, in order.
    again = Broker(backend, tmp_path / "first", suffix=getattr(broker, "suffix", None))
    again.start()
    try:
        c = Consumer({"bootstrap.servers": again.bootstrap, "group.id": topic,
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        c.assign([TopicPartition(topic, part, 0) for part in range(4)])
        got = {part: [] for part in range(4)}
        deadline = time.time() + 30
        while sum(map(len, got.values())) < 200 and time.time() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got[m.partition()].append((m.offset(), m.value()))
        c.close()
        for part in range(4):
            want = [(n, b"v%d" % i) for n, i in enumerate(range(part, 200, 4))]
            assert got[part] == want, (part, got[part][:5], again.log())
    finally:
        again.stop()
