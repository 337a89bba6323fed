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

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
