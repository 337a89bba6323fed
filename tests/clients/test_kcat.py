"""kcat (librdkafka 2.0 from Debian) producing and consuming."""
import subprocess

from conftest import topic_name


def kcat(*args, stdin=None, timeout=30):
    return subprocess.run(["kcat", *args], input=stdin, capture_output=True, timeout=timeout, check=True)


def test_kcat_round_trip_with_keys_and_headers(broker):
    topic = topic_name()
    lines = "".join(f"k{i}:value {i}\n" for i in range(100))
    kcat("-P", "-b", broker.bootstrap, "-t", topic, "-K:", "-H", "origin=kcat", "-X", "acks=all", stdin=lines.encode())
    out = kcat("-C", "-b", broker.bootstrap, "-t", topic, "-o", "beginning", "-e", "-f", "%o|%k|%s|%h\n")
    rows = out.stdout.decode().splitlines()
    assert len(rows) == 100
    for i, row in enumerate(rows):
        assert row == f"{i}|k{i}|value {i}|origin=kcat", row


def test_kcat_metadata_lists_the_broker_and_topic(broker):
    topic = topic_name()
    kcat("-P", "-b", broker.bootstrap, "-t", topic, stdin=b"x\n")
    out = kcat("-L", "-b", broker.bootstrap, "-t", topic).stdout.decode()
    assert f"127.0.0.1:{broker.port}" in out
    assert f'topic "{topic}" with 1 partitions' in out
