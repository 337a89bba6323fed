"""kafscale-perf against the broker: the harness itself must be right."""
import json
import os
import subprocess

from conftest import ROOT, topic_name


def perf(*args):
    exe = os.environ.get("KAFSCALE_PERF_BIN") or str(ROOT / "target" / "debug" / "kafscale-perf")
    r = subprocess.run([exe, *args, "--json"], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)


def test_produce_then_consume_counts_match(broker):
    topic = topic_name("perf")
    pid = str(broker.proc.pid)
    p = perf("produce", "--bootstrap", broker.bootstrap, "--topic", topic, "--partitions", "4", "--connections", "2",
             "--record-size", "512", "--batch-size", "64KiB", "--total-bytes", "8MiB", "--compression", "lz4",
             "--server-pid", pid)
    assert p["bytes"] >= 8 * 1024 * 1024 and p["records"] > 0
    assert p["latency_ms"]["p50"] > 0 and p["server_cpu_seconds"] >= 0 and p["server_peak_rss_mib"] > 0
    c = perf("consume", "--bootstrap", broker.bootstrap, "--topic", topic, "--expect-records", str(p["records"]))
    assert c["records"] == p["records"]
