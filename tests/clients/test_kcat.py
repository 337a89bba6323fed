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


def test_config_file_and_env_apply_with_flags_winning(tmp_path):
    """--config TOML, KAFSCALE_* variables and flags, in that order of strength."""
    import urllib.request

    from conftest import Broker

    cfg = tmp_path / "kafscale.toml"
    cfg.write_text('default_partitions = 3\nsegment_bytes = "2MiB"\nflush_interval_ms = 40\n')
    b = Broker("embedded", tmp_path, extra_args=["--config", str(cfg)])
    b.env["KAFSCALE_FLUSH_INTERVAL_MS"] = "30"  # env beats the file
    b.start()
    try:
        topic = "cfg-topic"
        kcat("-P", "-b", b.bootstrap, "-t", topic, stdin=b"x\n")
        out = kcat("-L", "-b", b.bootstrap, "-t", topic).stdout.decode()
        assert f'topic "{topic}" with 3 partitions' in out, out
        # The flag (--flush-interval-ms 50 from the fixture) beats env and file.
        from confluent_kafka.admin import AdminClient, ConfigResource
        a = AdminClient({"bootstrap.servers": b.bootstrap})
        res = ConfigResource(ConfigResource.Type.TOPIC, topic)
        configs = a.describe_configs([res])[res].result(30)
        assert configs["segment.bytes"].value == str(2 * 1024 * 1024)
        assert configs["flush.ms"].value == "50"
        with urllib.request.urlopen(f"http://127.0.0.1:{b.metrics_port}/metrics") as r:
            assert "kafscale_requests_total" in r.read().decode()
    finally:
        b.stop()

    bad = tmp_path / "bad.toml"
    bad.write_text("no_such_setting = 1\n")
    r = subprocess.run([Broker("embedded", tmp_path).args[0], "broker", "--config", str(bad)], capture_output=True, timeout=30)
    assert r.returncode != 0
    assert 'unknown setting "no_such_setting"' in r.stderr.decode()
