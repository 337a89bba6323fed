"""Real Kafka clients against the real `kafscale broker` binary.

Each test that takes the `broker` fixture runs twice: against the embedded
default (local directory + embedded metadata) and against the S3 server and
etcd that scripts/test started.
"""
import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def binary():
    path = os.environ.get("KAFSCALE_BIN") or str(ROOT / "target" / "debug" / "kafscale")
    if not os.path.exists(path):
        pytest.fail(f"{path} does not exist; build it with `cargo build` (scripts/test does)")
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, backend, tmp_path, extra_args=(), suffix=None, flush_ms=50):
        self.backend = backend
        self.port = free_port()
        self.metrics_port = free_port()
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.data_dir = tmp_path / "data"
        self.log_path = tmp_path / "broker.log"
        self.args = [
            binary(), "broker",
            "--listen", f"127.0.0.1:{self.port}",
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
            "--data-dir", str(self.data_dir),
            "--flush-interval-ms", str(flush_ms),
            "--shards", "2",
            *extra_args,
        ]
        self.env = dict(os.environ, KAFSCALE_LOG="info")
        if backend == "s3":
            # Brokers given the same suffix share a bucket and a namespace: a cluster.
            suffix = suffix or uuid.uuid4().hex[:10]
            self.suffix = suffix
            self.bucket = f"clients-{suffix}"
            self.args += [
                "--s3-endpoint", os.environ["KAFSCALE_TEST_S3_ENDPOINT"],
                "--s3-bucket", self.bucket,
                "--s3-create-bucket",
                "--s3-namespace", f"ns-{suffix}",
                "--etcd-endpoints", os.environ["KAFSCALE_TEST_ETCD_ENDPOINTS"],
            ]
            self.env["AWS_ACCESS_KEY_ID"] = os.environ["KAFSCALE_TEST_S3_ACCESS_KEY"]
            self.env["AWS_SECRET_ACCESS_KEY"] = os.environ["KAFSCALE_TEST_S3_SECRET_KEY"]
        self.proc = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=log)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"broker exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"broker did not become healthy:\n{self.log()}")

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def log(self):
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""


def backends():
    if os.environ.get("KAFSCALE_TEST_S3_ENDPOINT") and os.environ.get("KAFSCALE_TEST_ETCD_ENDPOINTS"):
        return ["embedded", "s3"]
    if os.environ.get("KAFSCALE_TEST_REQUIRE_SERVERS"):
        raise RuntimeError("KAFSCALE_TEST_REQUIRE_SERVERS is set but the S3/etcd endpoints are not")
    return ["embedded"]


@pytest.fixture(params=backends())
def broker(request, tmp_path):
    b = Broker(request.param, tmp_path)
    b.start()
    yield b
    b.stop()


def topic_name(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Cluster:
    """Several brokers sharing one bucket, one namespace and etcd."""

    def __init__(self, tmp_path, count, lease_ttl=None, flush_ms=50):
        # Short leases keep the failover tests quick; KAFSCALE_TEST_LEASE_TTL=10
        # measures the default.
        lease_ttl = lease_ttl or int(os.environ.get("KAFSCALE_TEST_LEASE_TTL", "3"))
        if "s3" not in backends():
            pytest.skip("clusters need the S3 server and etcd (run scripts/test)")
        suffix = uuid.uuid4().hex[:10]
        self.lease_ttl = lease_ttl
        self.brokers = [
            Broker("s3", tmp_path / f"broker{i}", suffix=suffix, flush_ms=flush_ms,
                   extra_args=["--broker-id", str(i), "--lease-ttl-secs", str(lease_ttl)])
            for i in range(count)
        ]

    @property
    def bootstrap(self):
        return ",".join(b.bootstrap for b in self.brokers if b.proc and b.proc.poll() is None)

    def start(self):
        for b in self.brokers:
            b.start()
        self.wait_for_brokers(len(self.brokers))

    def wait_for_brokers(self, count, timeout=30):
        """Until every live broker's Metadata lists `count` brokers."""
        from confluent_kafka.admin import AdminClient
        deadline = time.time() + timeout
        while time.time() < deadline:
            ok = True
            for b in self.brokers:
                if b.proc.poll() is not None:
                    continue
                md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10)
                ok &= len(md.brokers) == count
            if ok:
                return
            time.sleep(0.2)
        raise AssertionError(f"brokers did not see {count} live brokers in {timeout}s")

    def stop(self):
        for b in self.brokers:
            if b.proc and b.proc.poll() is None:
                # A paused broker cannot act on SIGTERM.
                b.proc.send_signal(signal.SIGCONT)
            b.stop()

    def logs(self):
        return "\n".join(f"--- broker {i}:\n{b.log()}" for i, b in enumerate(self.brokers))
