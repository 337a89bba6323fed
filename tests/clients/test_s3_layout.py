"""What the broker leaves in the bucket, read back with `kafscale segments
inspect` against the real S3 server."""
import json
import os
import subprocess
import time

import pytest
from confluent_kafka import Producer

from conftest import Broker, backends, binary, topic_name

BASE_TS = 1_778_682_180_000  # 2026-05-13T14:23:00Z


@pytest.mark.skipif("s3" not in backends(), reason="needs the S3 server and etcd (run scripts/test)")
def test_segment_objects_carry_metadata_that_matches_their_content(tmp_path):
    broker = Broker("s3", tmp_path, flush_ms=1000)
    broker.start()
    topic = topic_name("layout")
    try:
        before = int(time.time() * 1000)
        p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 20})
        for i in range(10):
            p.produce(topic, value=b"v%d" % i, partition=0, timestamp=BASE_TS + i * 1000)
        assert p.flush(30) == 0
        after = int(time.time() * 1000)
    finally:
        broker.stop()

    key = f"ns-{broker.suffix}/{topic}/0/segment-{0:020}.kfs"
    r = subprocess.run(
        [binary(), "segments", "inspect", f"s3://{broker.bucket}/{key}", "--json",
         "--s3-endpoint", os.environ["KAFSCALE_TEST_S3_ENDPOINT"]],
        capture_output=True, env=broker.env, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    report = json.loads(r.stdout)
    assert report["error"] is None
    assert report["base_offset"] == 0 and report["message_count"] == 10
    m = report["object_metadata"]
    assert m["base-offset"] == "0" and m["last-offset"] == "9" and m["message-count"] == "10"
    assert m["min-timestamp"] == str(BASE_TS) and m["max-timestamp"] == str(BASE_TS + 9000)
    assert before <= int(m["created-ms"]) <= after, (before, m["created-ms"], after)
