//! The Kafka client under test, on a glommio executor, and the brokers it
//! is tested against: ours (started here) and the Apache Kafka broker that
//! `scripts/test` starts (scripts/kafka.sh), found through its variables.

use std::future::Future;
use std::process::Command;

use kafscale_client::{ClientConfig, Mechanism, Secret, TlsConfig};

/// Runs a client scenario on its own executor.
pub fn run<T, F, Fut>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    kafscale_shard::raise_memlock_limit();
    kafscale_shard::block_on(f).expect("client executor")
}

/// The Apache Kafka fixture's endpoints.
#[derive(Debug, Clone)]
pub struct ApacheKafka {
    pub plaintext: String,
    pub sasl_plaintext: String,
    pub sasl_ssl: String,
    pub ca_file: String,
    pub user: String,
    pub password: String,
}

impl ApacheKafka {
    /// `None` (the test is skipped) when the fixture is not running, except
    /// under scripts/test, where a missing fixture fails the test.
    pub fn from_env() -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok();
        let got = (|| {
            Some(Self {
                plaintext: var("KAFSCALE_TEST_KAFKA_PLAINTEXT")?,
                sasl_plaintext: var("KAFSCALE_TEST_KAFKA_SASL_PLAINTEXT")?,
                sasl_ssl: var("KAFSCALE_TEST_KAFKA_SASL_SSL")?,
                ca_file: var("KAFSCALE_TEST_KAFKA_CA")?,
                user: var("KAFSCALE_TEST_KAFKA_USER")?,
                password: var("KAFSCALE_TEST_KAFKA_PASSWORD")?,
            })
        })();
        if got.is_none() {
            assert!(
                std::env::var_os("KAFSCALE_TEST_REQUIRE_SERVERS").is_none(),
                "the Apache Kafka fixture's KAFSCALE_TEST_KAFKA_* variables are not set but KAFSCALE_TEST_REQUIRE_SERVERS is"
            );
            eprintln!("skipped: no Apache Kafka fixture (run under scripts/test)");
        }
        got
    }

    pub fn scram(&self, mechanism: Mechanism, tls: bool) -> ClientConfig {
        let bootstrap = if tls {
            &self.sasl_ssl
        } else {
            &self.sasl_plaintext
        };
        let mut c = ClientConfig::new(bootstrap).with_sasl(
            mechanism,
            &self.user,
            Secret::new(self.password.clone()),
        );
        if tls {
            c = c.with_tls(TlsConfig {
                ca_file: Some(self.ca_file.clone().into()),
                ..TlsConfig::default()
            });
        }
        c
    }
}

/// One record as confluent-kafka produced it (hex-encoded bytes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Produced {
    pub key: Option<String>,
    pub value: Option<String>,
    pub headers: Vec<(String, Option<String>)>,
    pub timestamp: i64,
}

/// Produces `count` records with confluent-kafka (librdkafka) to partition
/// 0 of `topic` with `codec`, and returns what it sent. Keys, null keys,
/// null values and headers (one with a null value) all occur.
pub fn confluent_produce(bootstrap: &str, topic: &str, codec: &str, count: usize) -> Vec<Produced> {
    const SCRIPT: &str = r#"
import json, sys
from confluent_kafka import Producer
bootstrap, topic, codec, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec,
              "linger.ms": 20, "batch.num.messages": 7, "acks": "all"})
errors = []
def report(err, msg):
    if err is not None:
        errors.append(str(err))
out = []
base = 1_700_000_000_000
for i in range(count):
    key = None if i % 4 == 3 else ("key-%d" % i).encode()
    value = None if i % 5 == 4 else (("value %d " % i) * (3 + i % 7)).encode()
    headers = [("trace", ("t-%d" % i).encode()), ("empty", None)] if i % 2 == 0 else []
    ts = base + i * 10
    p.produce(topic, value=value, key=key, partition=0, headers=headers, timestamp=ts, on_delivery=report)
    out.append({"key": key.hex() if key is not None else None,
                "value": value.hex() if value is not None else None,
                "headers": [[k, v.hex() if v is not None else None] for k, v in headers],
                "timestamp": ts})
    p.poll(0)
left = p.flush(30)
if left or errors:
    sys.exit("not delivered: %d left, errors %s" % (left, errors[:3]))
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT, bootstrap, topic, codec, &count.to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "confluent-kafka producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("producer output")
}

/// Consumes `topic` in `group` with confluent-kafka (librdkafka), from the
/// group's committed offsets (earliest without), committing each record,
/// until `count` records or the end of every partition; returns
/// (partition, offset) in the order read.
pub fn group_consume(bootstrap: &str, topic: &str, group: &str, count: usize) -> Vec<(i32, i64)> {
    const SCRIPT: &str = r#"
import json, sys, time
from confluent_kafka import Consumer
bootstrap, topic, group, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
              "auto.offset.reset": "earliest", "enable.partition.eof": True})
c.subscribe([topic])
out, ended, deadline = [], set(), time.time() + 60
while len(out) < count and time.time() < deadline:
    m = c.poll(1.0)
    if m is None:
        continue
    if m.error():
        if m.error().code() == -191:  # _PARTITION_EOF
            ended.add(m.partition())
            if ended >= {tp.partition for tp in c.assignment()}:
                break
            continue
        sys.exit("consumer error: %s" % m.error())
    ended.discard(m.partition())
    out.append([m.partition(), m.offset()])
    c.commit(message=m, asynchronous=False)
c.close()
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT, bootstrap, topic, group, &count.to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "confluent-kafka consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("consumer output")
}

/// Waits (up to 30 s) until the brokers' offset history holds at least
/// `n` records (it is appended every few seconds); returns how many.
pub async fn wait_for_offset_history(c: &kafscale_client::Client, n: i64) -> i64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let meta = c.metadata(&["__kafscale_offsets"]).await.unwrap();
        let partitions = meta
            .topic("__kafscale_offsets")
            .map_or(0, |t| t.partitions.len() as i32);
        let mut got = 0;
        for p in 0..partitions {
            got += c
                .list_offset("__kafscale_offsets", p, kafscale_client::OffsetSpec::Latest)
                .await
                .unwrap()
                .offset;
        }
        if got >= n || std::time::Instant::now() > deadline {
            return got;
        }
        glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
