"""A real Apache Kafka in the test rig (scripts/kafka.sh starts it).

Part A checks the fixture itself: librdkafka produces and consumes on each of
Apache Kafka's listeners (PLAINTEXT; SASL_PLAINTEXT and SASL_SSL with
SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN; SSL with a client certificate), and a
wrong password, a missing CA or a missing client certificate is refused.

Part B runs Apache Kafka's own command-line tools (the official Java client, at
the fixture's version) against our broker: kafka-topics, the console producer
and consumer, kafka-consumer-groups, kafka-get-offsets and kafka-configs.

Without the fixture's variables these tests skip, unless
KAFSCALE_TEST_REQUIRE_SERVERS is set (scripts/test sets it): then they fail.
"""
import os
import re
import shutil
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import topic_name

FIXTURE_VARS = [
    "KAFSCALE_TEST_KAFKA_PLAINTEXT",
    "KAFSCALE_TEST_KAFKA_SASL_PLAINTEXT",
    "KAFSCALE_TEST_KAFKA_SASL_SSL",
    "KAFSCALE_TEST_KAFKA_CA",
    "KAFSCALE_TEST_KAFKA_USER",
    "KAFSCALE_TEST_KAFKA_PASSWORD",
]


def need(names, what):
    """Skips (or, under KAFSCALE_TEST_REQUIRE_SERVERS, fails) without `names`."""
    missing = [n for n in names if not os.environ.get(n)]
    if not missing and shutil.which("java"):
        return
    why = f"{', '.join(missing) or 'java'} missing: {what} (scripts/test starts it with scripts/kafka.sh)"
    if os.environ.get("KAFSCALE_TEST_REQUIRE_SERVERS"):
        pytest.fail(why)
    pytest.skip(why)


# --- Part A: the Apache Kafka fixture -------------------------------------

LISTENERS = [
    ("PLAINTEXT", None),
    ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
    ("SASL_PLAINTEXT", "SCRAM-SHA-512"),
    ("SASL_PLAINTEXT", "PLAIN"),
    ("SASL_SSL", "SCRAM-SHA-256"),
    ("SASL_SSL", "SCRAM-SHA-512"),
    ("SASL_SSL", "PLAIN"),
    ("SSL", None),  # mutual TLS
]


def kafka_conf(protocol, mechanism, password=None, ca=True, client_cert=True):
    need(FIXTURE_VARS, "the Apache Kafka broker")
    if protocol == "SSL":
        need(["KAFSCALE_TEST_KAFKA_SSL", "KAFSCALE_TEST_KAFKA_CLIENT_CERT", "KAFSCALE_TEST_KAFKA_CLIENT_KEY"],
             "the Apache Kafka broker's mutual-TLS listener")
    env = os.environ
    conf = {"bootstrap.servers": env[f"KAFSCALE_TEST_KAFKA_{protocol}"], "security.protocol": protocol}
    if mechanism:
        conf.update({
            "sasl.mechanism": mechanism,
            "sasl.username": env["KAFSCALE_TEST_KAFKA_USER"],
            "sasl.password": password if password is not None else env["KAFSCALE_TEST_KAFKA_PASSWORD"],
        })
    if protocol in ("SASL_SSL", "SSL") and ca:
        conf["ssl.ca.location"] = env["KAFSCALE_TEST_KAFKA_CA"]
    if protocol == "SSL" and client_cert:
        conf["ssl.certificate.location"] = env["KAFSCALE_TEST_KAFKA_CLIENT_CERT"]
        conf["ssl.key.location"] = env["KAFSCALE_TEST_KAFKA_CLIENT_KEY"]
    return conf


@pytest.mark.parametrize("protocol,mechanism", LISTENERS,
                         ids=[f"{p}-{m}" if m else p for p, m in LISTENERS])
def test_fixture_produce_consume(protocol, mechanism):
    conf = kafka_conf(protocol, mechanism)
    topic = topic_name("apache")
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(timeout=30)

    delivered = []
    p = Producer({**conf, "acks": "all", "enable.idempotence": True})
    sent = [(f"k{i % 3}".encode(), f"{protocol} {mechanism} {i}".encode()) for i in range(20)]
    for key, value in sent:
        p.produce(topic, key=key, value=value, on_delivery=lambda err, m: delivered.append(err))
    assert p.flush(30) == 0
    assert delivered == [None] * len(sent)

    c = Consumer({**conf, "group.id": f"g-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got = []
    deadline = time.time() + 60
    while len(got) < len(sent) and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        got.append((m.key(), m.value()))
    c.close()
    assert sorted(got) == sorted(sent)
    # Per key (one partition each) in the order produced.
    for k in {k for k, _ in sent}:
        assert [v for kk, v in got if kk == k] == [v for kk, v in sent if kk == k]


def first_error(conf, timeout=20):
    """The first error librdkafka reports for a producer with `conf`."""
    errors = []
    p = Producer({**conf, "error_cb": errors.append, "reconnect.backoff.ms": 1000})
    deadline = time.time() + timeout
    while not errors and time.time() < deadline:
        p.poll(0.2)
    assert errors, f"no error within {timeout} s"
    return errors[0]


@pytest.mark.parametrize("protocol,mechanism", [
    ("SASL_PLAINTEXT", "SCRAM-SHA-256"), ("SASL_PLAINTEXT", "PLAIN"), ("SASL_SSL", "SCRAM-SHA-512"),
])
def test_fixture_wrong_password_is_an_authentication_error(protocol, mechanism):
    err = first_error(kafka_conf(protocol, mechanism, password="not-the-password"))
    assert err.code() == KafkaError._AUTHENTICATION, err
    assert "Authentication failed" in err.str() or "authentication" in err.str().lower(), err


def test_fixture_mutual_tls_needs_a_client_certificate():
    # TLS 1.3: the server refuses the missing certificate after the handshake.
    err = first_error(kafka_conf("SSL", None, client_cert=False))
    # librdkafka 2.16 reports the server's alert on its first read:
    # "ssl/tls alert bad certificate".
    assert err.code() in (KafkaError._SSL, KafkaError._TRANSPORT), err
    assert "alert" in err.str() and "certificate" in err.str(), err


def test_fixture_tls_needs_the_ca():
    # Without our CA the system trust store does not know the server certificate.
    err = first_error(kafka_conf("SASL_SSL", "SCRAM-SHA-256", ca=False))
    assert err.code() == KafkaError._SSL, err
    assert "certificate verify failed" in err.str(), err


# --- Part B: Apache Kafka's tools against our broker ----------------------

@pytest.fixture(scope="module")
def tools(tmp_path_factory):
    need(["KAFSCALE_KAFKA_CLASSPATH"], "the Apache Kafka jars")
    # Warnings and errors of the tools to stderr; stdout carries only their output.
    conf = tmp_path_factory.mktemp("kafka-tools") / "log4j2.properties"
    conf.write_text("\n".join([
        "appender.err.type=Console", "appender.err.name=err", "appender.err.target=SYSTEM_ERR",
        "appender.err.layout.type=PatternLayout", "appender.err.layout.pattern=%p %c: %m%n",
        "rootLogger.level=WARN", "rootLogger.appenderRef.err.ref=err", "",
    ]))
    return Tools(os.environ["KAFSCALE_KAFKA_CLASSPATH"], conf)


class Tools:
    TOPICS = "org.apache.kafka.tools.TopicCommand"
    PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
    CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
    GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
    OFFSETS = "org.apache.kafka.tools.GetOffsetShell"
    CONFIGS = "kafka.admin.ConfigCommand"

    def __init__(self, classpath, log4j):
        self.classpath = classpath
        self.log4j = log4j

    def run(self, main, *args, stdin=None, timeout=120, check=True):
        cmd = ["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", f"-Dlog4j2.configurationFile={self.log4j}",
               "-cp", self.classpath, main, *args]
        r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
        if check:
            assert r.returncode == 0, f"{main} {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
        return r

    def consume(self, bootstrap, topic, count, *extra):
        """The console consumer's records as (partition, offset, key, value)."""
        r = self.run(self.CONSUMER, "--bootstrap-server", bootstrap, "--topic", topic,
                     "--max-messages", str(count), "--timeout-ms", "60000",
                     "--property", "print.partition=true", "--property", "print.offset=true",
                     "--property", "print.key=true", *extra)
        out = []
        for line in r.stdout.splitlines():
            m = re.fullmatch(r"Partition:(\d+)\tOffset:(\d+)\t(.*)\t(.*)", line)
            assert m, f"unexpected console consumer line {line!r}:\n{r.stdout}\n{r.stderr}"
            out.append((int(m[1]), int(m[2]), m[3], m[4]))
        assert f"Processed a total of {count} messages" in r.stderr, r.stderr
        return out


def create(broker, topic, partitions, config=None):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})  # alive until the future resolves
    new = NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})
    admin.create_topics([new])[topic].result(timeout=30)


def describe_partitions(text, topic):
    """kafka-topics --describe: {partition: leader}."""
    out = {}
    for m in re.finditer(rf"Topic: {re.escape(topic)}\tPartition: (\d+)\tLeader: (-?\d+)\tReplicas: (\S+)\tIsr: (\S+)",
                         text):
        out[int(m[1])] = int(m[2])
    return out


def test_kafka_topics(broker, tools):
    topic = topic_name("jtopics")
    b = ["--bootstrap-server", broker.bootstrap]
    r = tools.run(tools.TOPICS, *b, "--create", "--topic", topic, "--partitions", "3", "--replication-factor", "1",
                  "--config", "retention.ms=3600000")
    assert f"Created topic {topic}." in r.stdout

    r = tools.run(tools.TOPICS, *b, "--describe", "--topic", topic)
    assert re.search(rf"Topic: {re.escape(topic)}\tTopicId: \S+\tPartitionCount: 3\tReplicationFactor: 1"
                     r"\tConfigs: retention.ms=3600000\n", r.stdout), r.stdout
    # A single broker (id 0) leads every partition.
    assert describe_partitions(r.stdout, topic) == {0: 0, 1: 0, 2: 0}, r.stdout

    tools.run(tools.TOPICS, *b, "--alter", "--topic", topic, "--partitions", "5")
    r = tools.run(tools.TOPICS, *b, "--describe", "--topic", topic)
    assert "PartitionCount: 5\t" in r.stdout, r.stdout
    assert describe_partitions(r.stdout, topic) == {i: 0 for i in range(5)}, r.stdout

    # Shrinking is refused, as in Kafka.
    r = tools.run(tools.TOPICS, *b, "--alter", "--topic", topic, "--partitions", "2", check=False)
    assert r.returncode != 0
    assert "InvalidPartitionsException" in r.stdout + r.stderr, r.stdout + r.stderr

    other = topic_name("jtopics")
    tools.run(tools.TOPICS, *b, "--create", "--topic", other, "--partitions", "1")
    r = tools.run(tools.TOPICS, *b, "--list")
    assert {topic, other} <= set(r.stdout.split()), r.stdout

    tools.run(tools.TOPICS, *b, "--delete", "--topic", other)
    deadline = time.time() + 30
    while other in AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).topics:
        assert time.time() < deadline, f"{other} still listed after --delete"
        time.sleep(0.2)


def group_table(text):
    """kafka-consumer-groups --describe: {partition: (current, log_end, lag)}."""
    out = {}
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 6 and cols[2].isdigit():
            out[int(cols[2])] = tuple(int(c) if c.lstrip("-").isdigit() else c for c in cols[3:6])
    return out


def reset_table(text, group, topic):
    """kafka-consumer-groups --reset-offsets: {partition: new offset}."""
    return {int(m[1]): int(m[2]) for m in re.finditer(
        rf"^{re.escape(group)}\s+{re.escape(topic)}\s+(\d+)\s+(\d+)\s*$", text, re.M)}


def test_console_producer_consumer_and_groups(broker, tools):
    topic = topic_name("jconsole")
    group = f"jgroup-{uuid.uuid4().hex[:8]}"
    b = ["--bootstrap-server", broker.bootstrap]
    create(broker, topic, 3)

    sent = [(f"key-{i % 7}", f"value {i} " + "x" * (i % 13)) for i in range(60)]
    r = tools.run(tools.PRODUCER, *b, "--topic", topic, "--property", "parse.key=true",
                  "--property", "key.separator=|", "--producer-property", "acks=all",
                  stdin="".join(f"{k}|{v}\n" for k, v in sent))
    assert r.stdout.strip() == "", r.stdout

    got = tools.consume(broker.bootstrap, topic, len(sent), "--from-beginning", "--group", group)
    # Everything, once; each partition from offset 0 without gaps; each key in
    # one partition, in the order it was produced.
    assert sorted((k, v) for _, _, k, v in got) == sorted(sent)
    by_part = {}
    for part, off, k, v in got:
        by_part.setdefault(part, []).append((off, k, v))
    for part, recs in by_part.items():
        assert [off for off, _, _ in recs] == list(range(len(recs))), (part, recs)
    key_part = {}
    for part, _, k, _ in got:
        assert key_part.setdefault(k, part) == part, f"key {k} in partitions {key_part[k]} and {part}"
    for part, recs in by_part.items():
        order = [(k, v) for _, k, v in recs]
        assert order == [kv for kv in sent if key_part[kv[0]] == part], part
    ends = {p: len(by_part.get(p, [])) for p in range(3)}
    assert sum(ends.values()) == len(sent)

    # kafka-get-offsets: the log end offsets.
    r = tools.run(tools.OFFSETS, *b, "--topic", topic)
    assert {line for line in r.stdout.split()} == {f"{topic}:{p}:{n}" for p, n in ends.items()}, r.stdout

    # The group committed its position: no lag left.
    r = tools.run(tools.GROUPS, *b, "--describe", "--group", group)
    assert group_table(r.stdout) == {p: (n, n, 0) for p, n in ends.items()}, r.stdout
    r = tools.run(tools.GROUPS, *b, "--list")
    assert group in r.stdout.split(), r.stdout

    # Back to the start: every record again, from the committed offsets.
    r = tools.run(tools.GROUPS, *b, "--reset-offsets", "--to-earliest", "--execute", "--group", group, "--topic", topic)
    assert reset_table(r.stdout, group, topic) == {p: 0 for p in ends}, r.stdout
    r = tools.run(tools.GROUPS, *b, "--describe", "--group", group)
    assert group_table(r.stdout) == {p: (0, n, n) for p, n in ends.items()}, r.stdout
    again = tools.consume(broker.bootstrap, topic, len(sent), "--group", group)
    assert sorted(again) == sorted(got)

    # One partition to a chosen offset: exactly its records from there.
    part = max(ends, key=ends.get)
    r = tools.run(tools.GROUPS, *b, "--reset-offsets", "--to-offset", "2", "--execute", "--group", group,
                  "--topic", f"{topic}:{part}")
    assert reset_table(r.stdout, group, topic) == {part: 2}, r.stdout
    r = tools.run(tools.GROUPS, *b, "--describe", "--group", group)
    want = {p: (n, n, 0) for p, n in ends.items()}
    want[part] = (2, ends[part], ends[part] - 2)
    assert group_table(r.stdout) == want, r.stdout
    tail = tools.consume(broker.bootstrap, topic, ends[part] - 2, "--group", group)
    assert tail == [(part, off, k, v) for off, k, v in by_part[part][2:]]


def test_kafka_configs(broker, tools):
    topic = topic_name("jconfigs")
    b = ["--bootstrap-server", broker.bootstrap]
    create(broker, topic, 1, {"retention.ms": "3600000"})

    # Only the topic's own settings, each with what it overrides (the synonyms,
    # by precedence).
    r = tools.run(tools.CONFIGS, *b, "--describe", "--entity-type", "topics", "--entity-name", topic)
    assert r.stdout.splitlines() == [
        f"Dynamic configs for topic {topic} are:",
        "  retention.ms=3600000 sensitive=false "
        "synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=3600000, DEFAULT_CONFIG:retention.ms=-1}",
    ], r.stdout

    r = tools.run(tools.CONFIGS, *b, "--describe", "--entity-type", "topics", "--entity-name", topic, "--all")
    configs = dict(re.findall(r"^\s+([a-z.]+)=(\S*) sensitive=", r.stdout, re.M))
    assert configs.get("cleanup.policy") == "delete", r.stdout
    assert configs.get("retention.ms") == "3600000", r.stdout
    assert {"segment.bytes", "max.message.bytes"} <= configs.keys(), r.stdout
    assert "  cleanup.policy=delete sensitive=false synonyms={DEFAULT_CONFIG:cleanup.policy=delete}" \
        in r.stdout.splitlines(), r.stdout

    r = tools.run(tools.CONFIGS, *b, "--describe", "--entity-type", "brokers", "--entity-name", "0", "--all")
    configs = dict(re.findall(r"^\s+([a-z.]+)=(\S*) sensitive=", r.stdout, re.M))
    assert configs.get("broker.id") == "0", r.stdout
    assert configs.get("num.partitions", "").isdigit(), r.stdout


def test_consumer_groups_with_a_live_member(broker, tools):
    topic = topic_name("jlive")
    group = f"jlive-{uuid.uuid4().hex[:8]}"
    b = ["--bootstrap-server", broker.bootstrap]
    create(broker, topic, 3)
    member = subprocess.Popen(
        ["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", f"-Dlog4j2.configurationFile={tools.log4j}",
         "-cp", tools.classpath, tools.CONSUMER, *b, "--topic", topic, "--group", group,
         "--consumer-property", "client.id=live-member"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # The member joins and is given all three partitions.
        deadline = time.time() + 60
        while True:
            r = tools.run(tools.GROUPS, *b, "--describe", "--group", group, "--members", "--verbose", check=False)
            rows = [line.split() for line in r.stdout.splitlines() if line.startswith(group)]
            if r.returncode == 0 and len(rows) == 1 and rows[0][4] == "3":
                break
            assert time.time() < deadline, f"no member with 3 partitions:\n{r.stdout}\n{r.stderr}"
            time.sleep(1)
        _, member_id, host, client_id, _, *rest = rows[0]
        assert member_id.startswith("live-member-") and host == "/127.0.0.1" and client_id == "live-member", rows
        assert f"{topic}:0,1,2" in rest, rows

        r = tools.run(tools.GROUPS, *b, "--describe", "--group", group, "--state")
        state = [line.split() for line in r.stdout.splitlines() if line.startswith(group)]
        assert len(state) == 1 and state[0][-2:] == ["Stable", "1"] and "range" in state[0], r.stdout

        # A group with a member cannot be deleted.
        r = tools.run(tools.GROUPS, *b, "--delete", "--group", group, check=False)
        assert "GroupNotEmptyException" in r.stdout + r.stderr, r.stdout + r.stderr
    finally:
        member.terminate()  # the JVM's shutdown hook closes the consumer: it leaves the group
        member.wait(timeout=30)

    r = tools.run(tools.GROUPS, *b, "--describe", "--group", group, "--state")
    state = [line.split() for line in r.stdout.splitlines() if line.startswith(group)]
    # No assignment strategy once nobody is left (Apache Kafka 4.1.1 shows "-" too).
    assert len(state) == 1 and state[0][-3:] == ["-", "Empty", "0"], r.stdout
    r = tools.run(tools.GROUPS, *b, "--delete", "--group", group)
    assert f"Deletion of requested consumer groups ('{group}') was successful." in r.stdout, r.stdout
    r = tools.run(tools.GROUPS, *b, "--list")
    assert group not in r.stdout.split(), r.stdout
