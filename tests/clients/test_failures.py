"""Start-up refusals and an S3 outage, with the broker binary and real S3 servers."""
import os
import shutil
import subprocess
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaStorageError

from conftest import Broker, binary, free_port, topic_name

needs_servers = pytest.mark.skipif(
    not os.environ.get("KAFSCALE_TEST_S3_ENDPOINT") and not os.environ.get("KAFSCALE_TEST_REQUIRE_SERVERS"),
    reason="needs the S3 server and etcd from scripts/test",
)


def run_broker(tmp_path, *args, env=None):
    cmd = [binary(), "broker", "--listen", f"127.0.0.1:{free_port()}", "--metrics-listen",
           f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "data"), *args]
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(cmd, capture_output=True, timeout=60, env=e)


def s3_env(key=None, secret=None):
    return {
        "AWS_ACCESS_KEY_ID": key or os.environ["KAFSCALE_TEST_S3_ACCESS_KEY"],
        "AWS_SECRET_ACCESS_KEY": secret or os.environ["KAFSCALE_TEST_S3_SECRET_KEY"],
    }


def test_startup_refuses_an_unreachable_s3(tmp_path):
    r = run_broker(tmp_path, "--s3-endpoint", f"http://127.0.0.1:{free_port()}", "--s3-bucket", "b",
                   env={"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"})
    err = r.stderr.decode()
    assert r.returncode != 0
    assert "cannot use the S3 bucket: cannot reach S3 at http://127.0.0.1" in err, err


def test_startup_refuses_missing_credentials(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    cmd = [binary(), "broker", "--data-dir", str(tmp_path), "--s3-endpoint", "http://127.0.0.1:1", "--s3-bucket", "b"]
    r = subprocess.run(cmd, capture_output=True, timeout=30, env=env)
    assert r.returncode != 0
    assert "AWS_ACCESS_KEY_ID is not set" in r.stderr.decode()


@needs_servers
def test_startup_refuses_a_missing_bucket_and_wrong_credentials(tmp_path):
    ep = os.environ["KAFSCALE_TEST_S3_ENDPOINT"]
    r = run_broker(tmp_path, "--s3-endpoint", ep, "--s3-bucket", "no-such-bucket-here", env=s3_env())
    assert r.returncode != 0
    assert 'bucket "no-such-bucket-here" does not exist' in r.stderr.decode(), r.stderr.decode()
    r = run_broker(tmp_path, "--s3-endpoint", ep, "--s3-bucket", "whatever", "--s3-create-bucket",
                   env=s3_env(secret="wrong-secret-123"))
    err = r.stderr.decode()
    assert r.returncode != 0
    assert "rejected the credentials" in err and "wrong-secret-123" not in err, err


@needs_servers
def test_startup_refuses_an_unreachable_etcd(tmp_path):
    r = run_broker(tmp_path, "--etcd-endpoints", f"http://127.0.0.1:{free_port()}")
    err = r.stderr.decode()
    assert r.returncode != 0
    assert "cannot open the metadata store: cannot reach etcd at http://127.0.0.1" in err, err


def start_s3_server(root, port):
    key, secret = os.environ["KAFSCALE_TEST_S3_ACCESS_KEY"], os.environ["KAFSCALE_TEST_S3_SECRET_KEY"]
    if shutil.which("minio"):
        env = dict(os.environ, MINIO_ROOT_USER=key, MINIO_ROOT_PASSWORD=secret)
        cmd = ["minio", "server", "--quiet", "--address", f"127.0.0.1:{port}", str(root)]
    else:
        env = dict(os.environ)
        cmd = ["s3s-fs", "--host", "127.0.0.1", "--port", str(port), "--access-key", key, "--secret-key", secret, str(root)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    import socket
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail("S3 server did not start")


@needs_servers
def test_s3_outage_gives_retriable_errors_and_loses_nothing(tmp_path):
    root = tmp_path / "s3"
    root.mkdir()
    port = free_port()
    s3 = start_s3_server(root, port)
    broker = Broker("s3", tmp_path)
    i = broker.args.index("--s3-endpoint")
    broker.args[i + 1] = f"http://127.0.0.1:{port}"
    broker.start()
    topic = topic_name("outage")
    try:
        p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", retries=0, request_timeout_ms=60000)
        p.send(topic, b"before-1", partition=0).get(timeout=30)
        p.send(topic, b"before-2", partition=0).get(timeout=30)

        s3.kill()
        s3.wait()
        with pytest.raises(KafkaStorageError):
            p.send(topic, b"during", partition=0).get(timeout=60)

        s3 = start_s3_server(root, port)
        meta = p.send(topic, b"after", partition=0).get(timeout=60)
        assert meta.offset == 2, "the failed record must not have taken an offset"
        p.close()

        c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, consumer_timeout_ms=5000)
        c.assign([TopicPartition(topic, 0)])
        c.seek_to_beginning()
        assert [(m.offset, m.value) for m in c] == [(0, b"before-1"), (1, b"before-2"), (2, b"after")]
        c.close()
        assert broker.metrics()["kafscale_upload_errors_total"] >= 1
    finally:
        broker.stop()
        s3.kill()
