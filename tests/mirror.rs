//! The mirror against the Apache Kafka fixture of scripts/test: topics
//! copied into the spine byte for byte at their source offsets, over
//! SASL_SSL with SCRAM, set up with the `kafscale mirror` CLI (which uses
//! the broker's REST API) as an operator would.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::kafka::{ApacheKafka, confluent_produce, group_consume, run};
use common::{Broker, start_with};
use kafscale_client::{
    Acks, Client, ClientConfig, ClientError, FetchOptions, FetchSpec, KafkaCode, Mechanism,
    NewTopic, OffsetSpec,
};
use kafscale_codec::batch::{BatchBuilder, Compression};
use serde_json::Value;

fn unique(name: &str) -> String {
    format!("{name}{:08x}", rand::random::<u32>())
}

/// A broker whose REST API the CLI can use.
trait Http {
    fn http_port(&self) -> u16;
    fn kafka_port(&self) -> u16;
    /// The broker's admin token file, which the CLI is pointed at.
    fn token_file(&self) -> std::path::PathBuf;
}

impl Http for Broker {
    fn http_port(&self) -> u16 {
        self.metrics_port
    }
    fn token_file(&self) -> std::path::PathBuf {
        Broker::token_file(self)
    }
    fn kafka_port(&self) -> u16 {
        self.port
    }
}

/// Runs `kafscale mirror ...` against the broker's REST API.
fn cli(b: &impl Http, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kafscale"))
        .arg("mirror")
        .args(args)
        .args(["--http", &format!("http://127.0.0.1:{}", b.http_port())])
        .env("KAFSCALE_HTTP_TOKEN_FILE", b.token_file())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cli_ok(b: &impl Http, args: &[&str]) -> String {
    let (ok, out, err) = cli(b, args);
    assert!(ok, "kafscale mirror {args:?} failed: {err}{out}");
    out
}

fn status(b: &impl Http, job: &str) -> Value {
    let out = cli_ok(b, &["jobs", "status", job, "--json"]);
    serde_json::from_str(&out).unwrap()
}

/// Waits until the job copies `partitions` partitions, all caught up with
/// the source's high watermark as it is now (at least `min_records` in all).
fn wait_caught_up(b: &impl Http, job: &str, partitions: usize, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        // Just after a restart the HTTP port may not listen yet.
        let (ok, out, err) = cli(b, &["jobs", "status", job, "--json"]);
        if !ok {
            assert!(Instant::now() < deadline, "no status of {job}: {err}");
            std::thread::sleep(Duration::from_millis(300));
            continue;
        }
        let s: Value = serde_json::from_str(&out).unwrap();
        let parts = s["partitions"].as_array().cloned().unwrap_or_default();
        let done = parts.len() == partitions
            && parts.iter().all(|p| {
                p["source_high_watermark"].as_i64() >= Some(0)
                    && p["lag_records"].as_i64() == Some(0)
                    && p["state"] == "running"
            });
        if done {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} did not catch up in {timeout:?}: {}",
            serde_json::to_string_pretty(&s).unwrap()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Every batch of a partition up to its high watermark: (base offset, bytes).
async fn log_of(c: &Client, topic: &str, partition: i32) -> Vec<(i64, Bytes)> {
    let start = c
        .list_offset(topic, partition, OffsetSpec::Earliest)
        .await
        .unwrap()
        .offset;
    let hw = c
        .list_offset(topic, partition, OffsetSpec::Latest)
        .await
        .unwrap()
        .offset;
    let mut offset = start;
    let mut out = Vec::new();
    while offset < hw {
        let f = c
            .fetch_partition(
                &FetchSpec::new(topic, partition, offset),
                &FetchOptions::default(),
            )
            .await
            .unwrap();
        assert!(
            f.next_offset > offset,
            "{topic}-{partition}: no progress at {offset}"
        );
        for b in f.batches {
            if b.last_offset() >= offset {
                out.push((b.base_offset(), b.into_bytes()));
            }
        }
        offset = f.next_offset;
    }
    out
}

/// Asserts the copy of each (topic, partitions) holds exactly the source's
/// batches, byte for byte, at the same offsets; returns the batch count.
async fn assert_identical(source: &Client, copy: &Client, topics: &[(String, i32)]) -> usize {
    let mut batches = 0;
    for (topic, partitions) in topics {
        for p in 0..*partitions {
            let a = log_of(source, topic, p).await;
            let b = log_of(copy, topic, p).await;
            assert_eq!(
                a.iter().map(|x| x.0).collect::<Vec<_>>(),
                b.iter().map(|x| x.0).collect::<Vec<_>>(),
                "{topic}-{p}: batch offsets differ"
            );
            for ((off, x), (_, y)) in a.iter().zip(&b) {
                assert!(x == y, "{topic}-{p}: batch at {off} differs");
            }
            let hw = |c: &Client| {
                let (t, c) = (topic.clone(), c.clone());
                async move {
                    c.list_offset(&t, p, OffsetSpec::Latest)
                        .await
                        .unwrap()
                        .offset
                }
            };
            assert_eq!(
                hw(source).await,
                hw(copy).await,
                "{topic}-{p}: high watermarks"
            );
            batches += a.len();
        }
    }
    batches
}

/// Records stamped now: the source's time-based retention (7 days) would
/// delete older ones as soon as their segment rolls.
fn batch(n: usize, compression: Compression, tag: &str) -> Bytes {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut b = BatchBuilder::new(0, now).compression(compression);
    for i in 0..n {
        let key = format!("{tag}-{i}");
        let value = (i % 5 != 4).then(|| format!("{tag} value {i} ").repeat(1 + i % 9));
        b.push(
            (i % 3 != 2).then_some(key.as_bytes()),
            value.as_deref().map(str::as_bytes),
            &[("trace", Some(b"t")), ("none", None)],
        );
    }
    b.finish()
}

fn source_args(k: &ApacheKafka, name: &str) -> Vec<String> {
    [
        "sources",
        "add",
        name,
        "--bootstrap",
        &k.sasl_ssl,
        "--security-protocol",
        "SASL_SSL",
        "--sasl-mechanism",
        "SCRAM-SHA-512",
        "--sasl-username",
        &k.user,
        "--sasl-password-env",
        "KAFSCALE_TEST_KAFKA_PASSWORD",
        "--ssl-ca",
        &k.ca_file,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn our(b: &impl Http) -> ClientConfig {
    ClientConfig::new(format!("127.0.0.1:{}", b.kafka_port()))
}

/// The main scenario: three kinds of source topics (every codec from
/// librdkafka with keys, headers and null values; 200 partitions of our own
/// batches; an excluded one), copied over SASL_SSL/SCRAM-SHA-512; the copy
/// is byte-identical, read-only, survives kill -9 of the broker while the
/// source takes load, pauses and resumes, and picks up a new topic.
#[test]
fn mirror_copies_topics_byte_for_byte_and_resumes_from_its_own_log() {
    let Some(k) = ApacheKafka::from_env() else {
        return;
    };
    let p = unique("mir");
    let codecs = ["gzip", "snappy", "lz4", "zstd"];
    // Source topics.
    for codec in codecs {
        let topic = format!("{p}.{codec}");
        let c = k.scram(Mechanism::ScramSha256, false);
        run(move || async move {
            let c = Client::connect(c).await.unwrap();
            c.ensure_topic(&NewTopic::new(&topic, 1)).await.unwrap();
        });
        confluent_produce(&k.plaintext, &format!("{p}.{codec}"), codec, 400);
    }
    let (wide, excluded) = (format!("{p}.wide"), format!("{p}.excluded"));
    {
        let (c, wide, excluded) = (
            k.scram(Mechanism::ScramSha256, false),
            wide.clone(),
            excluded.clone(),
        );
        run(move || async move {
            let c = Client::connect(c).await.unwrap();
            c.ensure_topic(&NewTopic::new(&wide, 200)).await.unwrap();
            c.ensure_topic(&NewTopic::new(&excluded, 1)).await.unwrap();
            for part in 0..200 {
                for round in 0..(1 + part % 3) {
                    let codec = [Compression::None, Compression::Zstd][round as usize % 2];
                    c.produce_raw(&wide, part, batch(5, codec, "w"), Acks::All)
                        .await
                        .unwrap();
                }
            }
            c.produce_raw(&excluded, 0, batch(3, Compression::None, "x"), Acks::All)
                .await
                .unwrap();
        });
    }

    let mut b = start_with(&["--segment-bytes", "64KiB"]);
    let args = source_args(&k, "prod");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(cli_ok(&b, &args).contains("added source prod"));
    let include = format!(r"{p}\..*");
    let exclude = format!(r"{p}\.excluded");
    let out = cli_ok(
        &b,
        &[
            "jobs",
            "add",
            "dr",
            "--source",
            "prod",
            "--topics",
            &include,
            "--exclude",
            &exclude,
        ],
    );
    assert!(out.contains("added job dr"), "{out}");
    let listed = cli_ok(&b, &["jobs", "list"]);
    assert!(listed.contains("dr") && listed.contains("prod"), "{listed}");

    let partitions = 4 + 200;
    wait_caught_up(&b, "dr", partitions, Duration::from_secs(120));
    let mut topics: Vec<(String, i32)> = codecs.iter().map(|c| (format!("{p}.{c}"), 1)).collect();
    topics.push((wide.clone(), 200));
    let (src, copy) = (k.scram(Mechanism::ScramSha512, true), our(&b));
    let t = topics.clone();
    let batches = run(move || async move {
        let (src, copy) = (
            Client::connect(src).await.unwrap(),
            Client::connect(copy).await.unwrap(),
        );
        assert_identical(&src, &copy, &t).await
    });
    assert!(batches > 400, "only {batches} batches compared");

    // Excluded: never created. Read-only: a produce names the job.
    let (copy, ex, target) = (our(&b), excluded.clone(), format!("{p}.zstd"));
    run(move || async move {
        let c = Client::connect(copy).await.unwrap();
        let m = c.metadata(&[]).await.unwrap();
        assert!(m.topic(&ex).is_none(), "excluded topic was mirrored");
        let e = c
            .produce_raw(&target, 0, batch(1, Compression::None, "p"), Acks::All)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(KafkaCode::INVALID_TOPIC_EXCEPTION), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("read-only") && text.contains("mirror job dr"),
            "{text}"
        );
    });

    // kill -9 while the source takes load, then restart: the copy resumes
    // from its own log, nothing missing, nothing twice.
    let bootstrap = k.plaintext.clone();
    let zstd = format!("{p}.zstd");
    let load = std::thread::spawn(move || confluent_produce(&bootstrap, &zstd, "zstd", 3000));
    std::thread::sleep(Duration::from_millis(700));
    b.restart();
    load.join().unwrap();
    wait_caught_up(&b, "dr", partitions, Duration::from_secs(120));

    // Paused: the source moves on, the copy does not; resumed: caught up.
    assert!(cli_ok(&b, &["jobs", "pause", "dr"]).contains("paused"));
    std::thread::sleep(Duration::from_secs(3));
    confluent_produce(&k.plaintext, &format!("{p}.lz4"), "lz4", 50);
    std::thread::sleep(Duration::from_secs(2));
    let s = status(&b, "dr");
    assert_eq!(s["state"], "paused", "{s}");
    let lz4 = s["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["source_topic"] == format!("{p}.lz4"))
        .unwrap()
        .clone();
    assert_eq!(lz4["state"], "paused", "{lz4}");
    cli_ok(&b, &["jobs", "resume", "dr"]);

    // A new source topic is found and copied.
    let late = format!("{p}.late");
    {
        let (c, late) = (k.scram(Mechanism::ScramSha256, false), late.clone());
        run(move || async move {
            let c = Client::connect(c).await.unwrap();
            c.ensure_topic(&NewTopic::new(&late, 2)).await.unwrap();
            for part in 0..2 {
                c.produce_raw(&late, part, batch(7, Compression::Lz4, "late"), Acks::All)
                    .await
                    .unwrap();
            }
        });
    }
    wait_caught_up(&b, "dr", partitions + 2, Duration::from_secs(60));
    topics.push((late, 2));
    // The source topic grows: its copy gets the new partitions too.
    {
        let (c, grown) = (k.scram(Mechanism::ScramSha256, false), format!("{p}.gzip"));
        run(move || async move {
            let c = Client::connect(c).await.unwrap();
            c.create_partitions(&grown, 3, Duration::from_secs(30))
                .await
                .unwrap();
            glommio::timer::sleep(Duration::from_secs(1)).await;
            for part in 1..3 {
                c.produce_raw(
                    &grown,
                    part,
                    batch(4, Compression::Snappy, "grown"),
                    Acks::All,
                )
                .await
                .unwrap();
            }
        });
    }
    wait_caught_up(&b, "dr", partitions + 4, Duration::from_secs(60));
    topics[0].1 = 3;
    let (src, copy) = (k.scram(Mechanism::ScramSha512, true), our(&b));
    run(move || async move {
        let (src, copy) = (
            Client::connect(src).await.unwrap(),
            Client::connect(copy).await.unwrap(),
        );
        assert_identical(&src, &copy, &topics).await
    });

    // Metrics name the job and its partitions.
    let metrics = common::http_get(b.metrics_port, "/metrics");
    assert!(
        metrics.contains(&format!(
            "kafscale_mirror_lag_records{{job=\"dr\",topic=\"{p}.wide\",partition=\"199\"}} 0"
        )),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("mirror"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(metrics.contains("kafscale_mirror_source_connected{job=\"dr\"} 1"));

    // Removing the job leaves the copies, writable now.
    let out = cli_ok(&b, &["jobs", "remove", "dr"]);
    assert!(out.contains("writable"), "{out}");
    let (copy, target) = (our(&b), format!("{p}.gzip"));
    run(move || async move {
        let c = Client::connect(copy).await.unwrap();
        let r = c
            .produce_raw(
                &target,
                0,
                batch(1, Compression::None, "promoted"),
                Acks::All,
            )
            .await;
        // Shards may hold the topic's old configuration for a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut r = r;
        while r.is_err() && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(300)).await;
            r = c
                .produce_raw(
                    &target,
                    0,
                    batch(1, Compression::None, "promoted"),
                    Acks::All,
                )
                .await;
        }
        r.unwrap();
    });
    assert!(cli_ok(&b, &["sources", "remove", "prod"]).contains("removed"));
}

/// Bad sources never stop a job that works: an unreachable source and a
/// wrong password each give one clear status line, while a good job on
/// the same broker copies on.
#[test]
fn bad_sources_give_one_clear_status_line_and_stop_nothing_else() {
    let Some(k) = ApacheKafka::from_env() else {
        return;
    };
    let p = unique("bad");
    let topic = format!("{p}.t");
    {
        let (c, t) = (k.scram(Mechanism::ScramSha256, false), topic.clone());
        run(move || async move {
            let c = Client::connect(c).await.unwrap();
            c.ensure_topic(&NewTopic::new(&t, 1)).await.unwrap();
            c.produce_raw(&t, 0, batch(10, Compression::Snappy, "b"), Acks::All)
                .await
                .unwrap();
        });
    }
    let b = common::start_with_env(&[], &[("KAFSCALE_TEST_WRONG_PASSWORD", "not-it")]);
    let good = source_args(&k, "good");
    let dead_port = common::free_port().to_string();
    let mut wrong = source_args(&k, "wrong");
    let i = wrong
        .iter()
        .position(|a| a == "--sasl-password-env")
        .unwrap();
    wrong[i + 1] = "KAFSCALE_TEST_WRONG_PASSWORD".into();
    cli_ok(&b, &good.iter().map(String::as_str).collect::<Vec<_>>());
    cli_ok(
        &b,
        &[
            "sources",
            "add",
            "dead",
            "--bootstrap",
            &format!("127.0.0.1:{dead_port}"),
        ],
    );
    cli_ok(&b, &wrong.iter().map(String::as_str).collect::<Vec<_>>());
    let pattern = regex_escape(&topic);
    for (job, source) in [("ok", "good"), ("j-dead", "dead"), ("j-wrong", "wrong")] {
        cli_ok(
            &b,
            &[
                "jobs",
                "add",
                job,
                "--source",
                source,
                "--topics",
                &pattern,
                "--mapping",
                "prefix",
                "--prefix",
                &format!("{job}."),
            ],
        );
    }
    wait_caught_up(&b, "ok", 1, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    let expect: BTreeMap<&str, &str> =
        [("j-dead", "cannot connect"), ("j-wrong", "authentication")].into();
    for (job, needle) in expect {
        loop {
            let s = status(&b, job);
            let errors = s["errors"].to_string();
            if s["state"] == "error" && errors.to_lowercase().contains(needle) {
                assert!(!errors.contains("not-it"), "the password leaked: {errors}");
                break;
            }
            assert!(Instant::now() < deadline, "{job}: no clear error: {s}");
            std::thread::sleep(Duration::from_millis(300));
        }
        let table = cli_ok(&b, &["jobs", "status", job]);
        assert!(table.to_lowercase().contains(needle), "{table}");
    }
    // Bad requests are refused with a sentence.
    let (ok, _, err) = cli(
        &b,
        &["jobs", "add", "x", "--source", "nope", "--topics", "a"],
    );
    assert!(
        !ok && err.contains("mirror source \"nope\" does not exist"),
        "{err}"
    );
    let (ok, _, err) = cli(
        &b,
        &[
            "jobs",
            "add",
            "y",
            "--source",
            "good",
            "--topics",
            "(unclosed",
        ],
    );
    assert!(!ok && err.contains("not a regular expression"), "{err}");
    let (ok, _, err) = cli(&b, &["sources", "remove", "good"]);
    assert!(!ok && err.contains("used by job ok"), "{err}");
    let stored = common::http_as(
        b.metrics_port,
        "POST",
        "/v1/mirror/sources",
        r#"{"name":"p","bootstrap":["h:1"],"security_protocol":"SASL_SSL","sasl_mechanism":"PLAIN","sasl_username":"u","sasl_password":"hunter2"}"#,
        Some(&b.token()),
    );
    assert!(
        stored.starts_with("HTTP/1.1 400") && stored.contains("never stored"),
        "{stored}"
    );
    let api = common::http_get(b.metrics_port, "/v1/openapi.json");
    let doc: Value = serde_json::from_str(api.split("\r\n\r\n").nth(1).unwrap_or(&api)).unwrap();
    assert!(doc["paths"]["/v1/mirror/jobs/{name}/status"]["get"].is_object());
    // Offsets the source reports stay identical for the good job's copy.
    let (src, copy, t) = (
        k.scram(Mechanism::ScramSha256, false),
        our(&b),
        topic.clone(),
    );
    run(move || async move {
        let src = Client::connect(src).await.unwrap();
        let copy = Client::connect(copy).await.unwrap();
        let a = log_of(&src, &t, 0).await;
        let b = log_of(&copy, &format!("ok.{t}"), 0).await;
        assert_eq!(a, b);
        let e: ClientError = copy
            .produce_raw(
                &format!("ok.{t}"),
                0,
                batch(1, Compression::None, "z"),
                Acks::All,
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(KafkaCode::INVALID_TOPIC_EXCEPTION));
    });
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

/// Records of partition 0 as a confluent-kafka consumer sees them with an
/// isolation level, from the log start to the end: (offset, key, value).
fn consume_all(
    bootstrap: &str,
    topic: &str,
    isolation: &str,
) -> Vec<(i64, Option<String>, Option<String>)> {
    const SCRIPT: &str = r#"
import json, sys, time
from confluent_kafka import Consumer, TopicPartition
bootstrap, topic, isolation = sys.argv[1], sys.argv[2], sys.argv[3]
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "verify-" + isolation,
              "enable.auto.commit": False, "isolation.level": isolation,
              "auto.offset.reset": "earliest", "enable.partition.eof": True})
c.assign([TopicPartition(topic, 0, -2)])
out, deadline = [], time.time() + 60
while time.time() < deadline:
    m = c.poll(1.0)
    if m is None:
        continue
    if m.error():
        if m.error().code() == -191:  # _PARTITION_EOF
            break
        sys.exit("consumer error: %s" % m.error())
    k, v = m.key(), m.value()
    out.append([m.offset(), k.hex() if k is not None else None, v.hex() if v is not None else None])
else:
    sys.exit("no end of partition within 60 s")
c.close()
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT, bootstrap, topic, isolation])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "confluent-kafka consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("consumer output")
}

/// Commits and aborts transactions with confluent-kafka's transactional
/// producer: six transactions of five records, every third aborted.
fn transactional_produce(bootstrap: &str, topic: &str) {
    const SCRIPT: &str = r#"
import sys
from confluent_kafka import Producer
bootstrap, topic = sys.argv[1], sys.argv[2]
p = Producer({"bootstrap.servers": bootstrap, "transactional.id": "txn-" + topic, "linger.ms": 5})
p.init_transactions()
for t in range(6):
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, key=("k%d" % i).encode(), value=("t%d-%d" % (t, i)).encode(), partition=0)
    p.flush()
    if t % 3 == 1:
        p.abort_transaction()
    else:
        p.commit_transaction()
# Outside any transaction too (an idempotent producer's batches in between).
q = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
q.produce(topic, value=b"plain", partition=0)
q.flush()
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT, bootstrap, topic])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "transactional producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Offsets of partition 0 that hold a record (its batches' ranges).
async fn offsets_of(c: &Client, topic: &str) -> Vec<(i64, i64)> {
    log_of(c, topic, 0)
        .await
        .into_iter()
        .map(|(base, bytes)| {
            let b = kafscale_codec::batch::RecordBatch::parse(bytes).unwrap();
            (base, b.last_offset())
        })
        .collect()
}

/// Source transactions (committed and aborted, with their control batches)
/// and a compacted topic with offset gaps: copied as they are, and
/// read_committed and read_uncommitted consumers get the same records from
/// the source and from the copy.
#[test]
fn transactions_and_compaction_gaps_read_the_same_on_the_copy() {
    let Some(k) = ApacheKafka::from_env() else {
        return;
    };
    let p = unique("txn");
    let (txn, compact) = (format!("{p}.txn"), format!("{p}.compact"));
    {
        let (c, txn, compact) = (
            ClientConfig::new(&k.plaintext),
            txn.clone(),
            compact.clone(),
        );
        run(move || async move {
            let c = Client::connect(c).await.unwrap();
            c.ensure_topic(&NewTopic::new(&txn, 1)).await.unwrap();
            let mut t = NewTopic::new(&compact, 1);
            for (key, value) in [
                ("cleanup.policy", "compact"),
                ("segment.ms", "100"),
                ("min.cleanable.dirty.ratio", "0.01"),
                ("delete.retention.ms", "0"),
            ] {
                t.configs.insert(key.into(), value.into());
            }
            c.ensure_topic(&t).await.unwrap();
            // Ten rounds over four keys, in separate batches and segments
            // (Kafka rolls by record time: 200 ms apart, segment.ms 100).
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            for round in 0..10 {
                let mut b = BatchBuilder::new(0, now + round * 200);
                for key in 0..4 {
                    let v = format!("round {round}");
                    b.push(
                        Some(format!("key{key}").as_bytes()),
                        Some(v.as_bytes()),
                        &[],
                    );
                }
                c.produce_raw(&compact, 0, b.finish(), Acks::All)
                    .await
                    .unwrap();
                glommio::timer::sleep(Duration::from_millis(150)).await;
            }
            // Wait until the cleaner has left gaps, and settled.
            let deadline = Instant::now() + Duration::from_secs(90);
            let mut last = Vec::new();
            loop {
                let now = offsets_of(&c, &compact).await;
                let records: i64 = now.iter().map(|(a, b)| b - a + 1).sum();
                if records < 40 && now == last {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the source never compacted: {now:?}"
                );
                last = now;
                glommio::timer::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    transactional_produce(&k.plaintext, &txn);

    let b = start_with(&[]);
    cli_ok(&b, &["sources", "add", "src", "--bootstrap", &k.plaintext]);
    cli_ok(
        &b,
        &[
            "jobs",
            "add",
            "tx",
            "--source",
            "src",
            "--topics",
            &format!(r"{p}\..*"),
        ],
    );
    wait_caught_up(&b, "tx", 2, Duration::from_secs(60));
    let (src, copy) = (ClientConfig::new(&k.plaintext), our(&b));
    let topics = vec![(txn.clone(), 1), (compact.clone(), 1)];
    let c2 = compact.clone();
    run(move || async move {
        let (src, copy) = (
            Client::connect(src).await.unwrap(),
            Client::connect(copy).await.unwrap(),
        );
        assert_identical(&src, &copy, &topics).await;
        let gaps = offsets_of(&copy, &c2).await;
        assert!(
            gaps.windows(2).any(|w| w[1].0 > w[0].1 + 1) || gaps.first().is_some_and(|g| g.0 > 0),
            "the copy has the source's gaps: {gaps:?}"
        );
    });
    let ours = format!("127.0.0.1:{}", b.port);
    for topic in [&txn, &compact] {
        for isolation in ["read_committed", "read_uncommitted"] {
            let a = consume_all(&k.plaintext, topic, isolation);
            let c = consume_all(&ours, topic, isolation);
            assert!(!a.is_empty(), "{topic} {isolation}: nothing consumed");
            assert_eq!(a, c, "{topic} {isolation}: source and copy differ");
        }
    }
    let committed = consume_all(&ours, &txn, "read_committed");
    let all = consume_all(&ours, &txn, "read_uncommitted");
    assert_eq!(committed.len(), 4 * 5 + 1, "aborted records hidden");
    assert_eq!(all.len(), 6 * 5 + 1, "aborted records visible uncommitted");
}

/// A broker of a cluster on etcd and an S3 server (scripts/test's, or one
/// of the test's own).
struct Node {
    child: std::process::Child,
    port: u16,
    metrics_port: u16,
    data_dir: std::path::PathBuf,
}

impl Http for Node {
    fn http_port(&self) -> u16 {
        self.metrics_port
    }
    fn token_file(&self) -> std::path::PathBuf {
        self.data_dir.join("admin.token")
    }
    fn kafka_port(&self) -> u16 {
        self.port
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Resident memory now, in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            * 1024
    }
}

struct Cluster {
    s3: String,
    etcd: String,
    ns: String,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// `None` (skipped) without scripts/test's etcd and S3 server.
    fn new(s3: Option<String>) -> Option<Self> {
        let (Ok(shared_s3), Ok(etcd)) = (
            std::env::var("KAFSCALE_TEST_S3_ENDPOINT"),
            std::env::var("KAFSCALE_TEST_ETCD_ENDPOINTS"),
        ) else {
            assert!(
                std::env::var_os("KAFSCALE_TEST_REQUIRE_SERVERS").is_none(),
                "the S3 server and etcd are not set but KAFSCALE_TEST_REQUIRE_SERVERS is"
            );
            return None;
        };
        Some(Self {
            s3: s3.unwrap_or(shared_s3),
            etcd,
            ns: unique("mirror-"),
            dir: tempfile::tempdir().unwrap(),
        })
    }

    fn node(&self, id: i32, extra: &[&str]) -> Node {
        let port = common::free_port();
        let metrics_port = common::free_port();
        let data_dir = self.dir.path().join(format!("b{id}"));
        let child = Command::new(env!("CARGO_BIN_EXE_kafscale"))
            .args(["broker", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--flush-interval-ms", "50", "--shards", "2"])
            .args(["--s3-endpoint", &self.s3, "--s3-bucket", &self.ns])
            .args(["--s3-create-bucket", "--s3-namespace", &self.ns])
            .args([
                "--etcd-endpoints",
                &self.etcd,
                "--broker-id",
                &id.to_string(),
            ])
            .args(["--lease-ttl-secs", "3"])
            .args(extra)
            .env(
                "AWS_ACCESS_KEY_ID",
                std::env::var("KAFSCALE_TEST_S3_ACCESS_KEY").unwrap_or_default(),
            )
            .env(
                "AWS_SECRET_ACCESS_KEY",
                std::env::var("KAFSCALE_TEST_S3_SECRET_KEY").unwrap_or_default(),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", metrics_port)).is_err() {
            assert!(Instant::now() < deadline, "broker {id} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Node {
            child,
            port,
            metrics_port,
            data_dir,
        }
    }
}

/// Produces batches of ten records round-robin to every partition of
/// `topic` at the source for `seconds`; returns the batches sent.
fn source_load(
    bootstrap: String,
    topic: String,
    partitions: i32,
    seconds: u64,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        run(move || async move {
            let c = Client::connect(ClientConfig::new(&bootstrap))
                .await
                .unwrap();
            let until = Instant::now() + Duration::from_secs(seconds);
            let mut sent = 0;
            while Instant::now() < until {
                for part in 0..partitions {
                    let codec = [Compression::Zstd, Compression::None][sent % 2];
                    c.produce_raw(&topic, part, batch(10, codec, "load"), Acks::All)
                        .await
                        .unwrap();
                    sent += 1;
                }
            }
            sent
        })
    })
}

fn create_source_topic(k: &ApacheKafka, topic: &str, partitions: i32) {
    let (c, t) = (ClientConfig::new(&k.plaintext), topic.to_owned());
    run(move || async move {
        let c = Client::connect(c).await.unwrap();
        c.ensure_topic(&NewTopic::new(&t, partitions))
            .await
            .unwrap();
        for part in 0..partitions {
            c.produce_raw(&t, part, batch(20, Compression::Gzip, "init"), Acks::All)
                .await
                .unwrap();
        }
    });
}

/// Two brokers share a job (each copies the partitions it owns); one is
/// killed while the source takes load: the other takes its partitions over
/// and the copy has every batch exactly once.
#[test]
fn two_brokers_share_a_job_and_a_killed_one_loses_nothing() {
    let Some(k) = ApacheKafka::from_env() else {
        return;
    };
    let Some(cluster) = Cluster::new(None) else {
        return;
    };
    let topic = unique("two.");
    create_source_topic(&k, &topic, 8);
    let a = cluster.node(0, &[]);
    let mut b = cluster.node(1, &[]);
    cli_ok(&a, &["sources", "add", "src", "--bootstrap", &k.plaintext]);
    cli_ok(
        &a,
        &[
            "jobs",
            "add",
            "shared",
            "--source",
            "src",
            "--topics",
            &regex_escape(&topic),
        ],
    );
    // Status through the other broker: both brokers report their part.
    let s = wait_caught_up(&b, "shared", 8, Duration::from_secs(60));
    let reporting = s["brokers_reporting"].as_array().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut reporting = reporting;
    while reporting < 2 {
        assert!(Instant::now() < deadline, "not both brokers report: {s}");
        std::thread::sleep(Duration::from_millis(500));
        reporting = status(&b, "shared")["brokers_reporting"]
            .as_array()
            .unwrap()
            .len();
    }
    let load = source_load(k.plaintext.clone(), topic.clone(), 8, 6);
    std::thread::sleep(Duration::from_secs(2));
    b.kill();
    let sent = load.join().unwrap();
    // The killed broker's part of the status is shown until its lease
    // (3 s) expires; then its partitions are the other broker's.
    std::thread::sleep(Duration::from_secs(5));
    assert!(sent > 16, "only {sent} batches of load");
    wait_caught_up(&a, "shared", 8, Duration::from_secs(90));
    let (src, copy) = (ClientConfig::new(&k.plaintext), our(&a));
    run(move || async move {
        let (src, copy) = (
            Client::connect(src).await.unwrap(),
            Client::connect(copy).await.unwrap(),
        );
        assert_identical(&src, &copy, &[(topic, 8)]).await
    });
}

/// An S3 server of the test's own, stopped and started on the same port
/// and directory.
struct OwnS3 {
    child: Option<std::process::Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl OwnS3 {
    fn start() -> Self {
        let mut s = Self {
            child: None,
            port: common::free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        s.resume();
        s
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn resume(&mut self) {
        let child = Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--access-key",
                &std::env::var("KAFSCALE_TEST_S3_ACCESS_KEY").unwrap_or_default(),
                "--secret-key",
                &std::env::var("KAFSCALE_TEST_S3_SECRET_KEY").unwrap_or_default(),
            ])
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("s3s-fs (installed by scripts/setup)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnS3 {
    fn drop(&mut self) {
        self.stop();
    }
}

/// S3 down for 60 s while the source takes load: the job says so, the
/// broker's memory stays within its budget + 64 MiB (the source's retention
/// is the buffer), and once S3 is back the copy catches up with nothing
/// lost or doubled.
#[test]
fn s3_down_for_a_minute_bounds_memory_and_loses_nothing() {
    let Some(k) = ApacheKafka::from_env() else {
        return;
    };
    if std::env::var_os("KAFSCALE_TEST_S3_ENDPOINT").is_none() {
        return; // no scripts/test servers (s3s-fs); Cluster::new reports it
    }
    let mut s3 = OwnS3::start();
    let Some(cluster) = Cluster::new(Some(s3.endpoint())) else {
        return;
    };
    let topic = unique("s3down.");
    create_source_topic(&k, &topic, 4);
    let budget = 64u64 << 20;
    let node = cluster.node(0, &["--memory-budget", "64MiB"]);
    cli_ok(
        &node,
        &["sources", "add", "src", "--bootstrap", &k.plaintext],
    );
    cli_ok(
        &node,
        &[
            "jobs",
            "add",
            "s3",
            "--source",
            "src",
            "--topics",
            &regex_escape(&topic),
        ],
    );
    wait_caught_up(&node, "s3", 4, Duration::from_secs(60));
    let before = node.rss();

    s3.stop();
    let load = source_load(k.plaintext.clone(), topic.clone(), 4, 20);
    let down_until = Instant::now() + Duration::from_secs(60);
    let mut peak = 0;
    let mut reported = false;
    while Instant::now() < down_until {
        peak = peak.max(node.rss());
        if !reported {
            let s = status(&node, "s3");
            reported = s["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["state"] == "target-unavailable");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let sent = load.join().unwrap();
    assert!(reported, "the job never reported the spine unavailable");
    assert!(
        peak <= budget + (64 << 20),
        "RSS peaked at {} MiB with S3 down (budget {} MiB; {} MiB before)",
        peak >> 20,
        budget >> 20,
        before >> 20
    );
    s3.resume();
    wait_caught_up(&node, "s3", 4, Duration::from_secs(120));
    let (src, copy) = (ClientConfig::new(&k.plaintext), our(&node));
    let batches = run(move || async move {
        let (src, copy) = (
            Client::connect(src).await.unwrap(),
            Client::connect(copy).await.unwrap(),
        );
        assert_identical(&src, &copy, &[(topic, 4)]).await
    });
    assert!(
        batches >= sent,
        "{batches} batches copied, {sent} sent under load"
    );
    eprintln!(
        "S3 down 60 s: {sent} batches produced meanwhile, RSS {} MiB before, peak {} MiB",
        before >> 20,
        peak >> 20
    );
}

/// Consumes up to `count` records of `topic` in consumer group `group`
/// with confluent-kafka, commits and leaves; returns their offsets.
/// `--groups`: a consumer group's committed offsets follow it to the copy,
/// so a confluent-kafka consumer stopped on the source continues on the
/// copy without a gap or a repeat.
#[test]
fn group_offsets_let_a_consumer_continue_on_the_copy() {
    let Some(k) = ApacheKafka::from_env() else {
        return;
    };
    let topic = unique("grp.");
    create_source_topic(&k, &topic, 1);
    confluent_produce(&k.plaintext, &topic, "lz4", 80);
    let group = unique("billing-");
    let first = group_consume(&k.plaintext, &topic, &group, 30);
    assert_eq!(first, (0..30).map(|o| (0, o)).collect::<Vec<_>>());
    let mut b = start_with(&[]);
    cli_ok(&b, &["sources", "add", "src", "--bootstrap", &k.plaintext]);
    cli_ok(
        &b,
        &[
            "jobs",
            "add",
            "g",
            "--source",
            "src",
            "--topics",
            &regex_escape(&topic),
            "--groups",
            "billing-.*",
        ],
    );
    wait_caught_up(&b, "g", 1, Duration::from_secs(60));
    let (copy, g, t) = (our(&b), group.clone(), topic.clone());
    run(move || async move {
        let c = Client::connect(copy).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let o = c.offset_fetch(&g, &[(&t, vec![0])]).await.unwrap();
            if o.first().is_some_and(|o| o.offset == 30) {
                break;
            }
            assert!(Instant::now() < deadline, "group offsets not copied: {o:?}");
            glommio::timer::sleep(Duration::from_millis(300)).await;
        }
    });
    // The synced offset is history too: a restore of the copy with
    // --groups gives the restored topic the group's offset.
    // A stopping broker appends the offset changes it holds before it
    // drains: after a restart the history has the synced offset.
    b.stop_and_restart();
    let report = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kafscale"))
        .args(["restore", "--topic", &topic, "--as", &format!("{topic}.r")])
        .args(["--to-offset", "0:100", "--groups", "^billing-"])
        .arg("--report")
        .arg(report.path())
        .arg("--data-dir")
        .arg(b.data_dir())
        .args(["--http", &format!("http://127.0.0.1:{}", b.metrics_port)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&std::fs::read(report.path()).unwrap()).unwrap();
    assert_eq!(r["passed"], true, "{r:#}");
    let o = &r["groups"]["offsets"][0];
    assert_eq!(
        (
            o["group"].as_str(),
            o["committed_offset"].as_i64(),
            o["read_back"].as_i64()
        ),
        (Some(group.as_str()), Some(30), Some(30)),
        "{:#}",
        r["groups"]
    );

    let ours = format!("127.0.0.1:{}", b.port);
    let rest = group_consume(&ours, &topic, &group, 1000);
    let hw = 20 + 80; // create_source_topic's batch, then confluent's records
    assert_eq!(
        rest,
        (30..hw).map(|o| (0, o)).collect::<Vec<_>>(),
        "no gap, no repeat"
    );
}

/// Deletes the records of `topic`-0 below `offset` at the source, with
/// Apache Kafka's own tool (DeleteRecords): what retention does, at once.
fn delete_records(k: &ApacheKafka, topic: &str, offset: i64) {
    let Ok(cp) = std::env::var("KAFSCALE_KAFKA_CLASSPATH") else {
        panic!("KAFSCALE_KAFKA_CLASSPATH (the Apache Kafka jars) is not set");
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("delete.json");
    std::fs::write(
        &spec,
        format!(r#"{{"version":1,"partitions":[{{"topic":"{topic}","partition":0,"offset":{offset}}}]}}"#),
    )
    .unwrap();
    let out = Command::new("java")
        .args(["-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", &cp])
        .arg("org.apache.kafka.tools.DeleteRecordsCommand")
        .args(["--bootstrap-server", &k.plaintext, "--offset-json-file"])
        .arg(&spec)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kafka-delete-records failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn partition_status(b: &impl Http, job: &str, topic: &str) -> Value {
    status(b, job)["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["source_topic"] == topic)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Source retention overtakes a paused mirror: the gap is recorded (status,
/// metric) and the copy continues at the source's log start; with
/// `--on-gap stop` the partition stops until resumed. A copy that begins
/// after the source's log start starts there, without a gap.
#[test]
fn retention_gaps_are_recorded_and_the_copy_goes_on() {
    let Some(k) = ApacheKafka::from_env() else {
        return;
    };
    let (go, stop, late) = (unique("gap.go."), unique("gap.stop."), unique("gap.late."));
    for t in [&go, &stop, &late] {
        create_source_topic(&k, t, 1); // offsets 0..20
    }
    // A source whose log starts at 15 before any mirror exists.
    delete_records(&k, &late, 15);
    let b = start_with(&[]);
    cli_ok(&b, &["sources", "add", "src", "--bootstrap", &k.plaintext]);
    cli_ok(
        &b,
        &[
            "jobs",
            "add",
            "go",
            "--source",
            "src",
            "--topics",
            &format!("{}|{}", regex_escape(&go), regex_escape(&late)),
        ],
    );
    cli_ok(
        &b,
        &[
            "jobs",
            "add",
            "stop",
            "--source",
            "src",
            "--topics",
            &regex_escape(&stop),
            "--on-gap",
            "stop",
        ],
    );
    wait_caught_up(&b, "go", 2, Duration::from_secs(60));
    wait_caught_up(&b, "stop", 1, Duration::from_secs(60));
    let l = partition_status(&b, "go", &late);
    assert_eq!(l["mirrored_next_offset"], 20, "{l}");
    let (copy, t) = (our(&b), late.clone());
    run(move || async move {
        let c = Client::connect(copy).await.unwrap();
        let start = c
            .list_offset(&t, 0, OffsetSpec::Earliest)
            .await
            .unwrap()
            .offset;
        assert_eq!(start, 15, "the copy starts where its source does");
    });
    assert!(status(&b, "go")["gaps"].as_array().unwrap().is_empty());

    // Paused, the source gets 40 more records and deletes up to 50.
    cli_ok(&b, &["jobs", "pause", "go"]);
    cli_ok(&b, &["jobs", "pause", "stop"]);
    std::thread::sleep(Duration::from_secs(3));
    for t in [&go, &stop] {
        let (c, topic) = (ClientConfig::new(&k.plaintext), t.clone());
        run(move || async move {
            let c = Client::connect(c).await.unwrap();
            for _ in 0..4 {
                c.produce_raw(&topic, 0, batch(10, Compression::Lz4, "more"), Acks::All)
                    .await
                    .unwrap();
            }
        });
        delete_records(&k, t, 50);
    }
    cli_ok(&b, &["jobs", "resume", "go"]);
    cli_ok(&b, &["jobs", "resume", "stop"]);
    let s = wait_caught_up(&b, "go", 2, Duration::from_secs(60));
    let gaps = s["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{s}");
    assert_eq!(
        (gaps[0]["from"].as_i64(), gaps[0]["to"].as_i64()),
        (Some(20), Some(50))
    );
    assert_eq!(gaps[0]["source_topic"], go.as_str());
    let table = cli_ok(&b, &["jobs", "status", "go"]);
    assert!(
        table.contains("offsets [20, 50) deleted at the source"),
        "{table}"
    );
    let metrics = common::http_get(b.metrics_port, "/metrics");
    assert!(
        metrics.contains(&format!(
            "kafscale_mirror_gap_records_total{{job=\"go\",topic=\"{go}\",partition=\"0\"}} 30"
        )),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("gap"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The copy: 0..20, then 50..60, nothing else.
    let (src, copy, t) = (ClientConfig::new(&k.plaintext), our(&b), go.clone());
    run(move || async move {
        let copy = Client::connect(copy).await.unwrap();
        let ranges = offsets_of(&copy, &t).await;
        assert_eq!(ranges.first().map(|r| r.0), Some(0));
        assert!(ranges.iter().all(|r| r.1 < 20 || r.0 >= 50), "{ranges:?}");
        assert_eq!(ranges.last().map(|r| r.1), Some(59));
        let src = Client::connect(src).await.unwrap();
        let tail: Vec<_> = log_of(&src, &t, 0).await;
        let ours: Vec<_> = log_of(&copy, &t, 0).await;
        assert_eq!(
            &ours[ours.len() - tail.len()..],
            &tail[..],
            "the rest is byte-identical"
        );
    });
    // --on-gap stop: recorded, the partition stays stopped until resumed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = partition_status(&b, "stop", &stop);
        if p["state"] == "gap" {
            assert_eq!(p["mirrored_next_offset"], 20, "{p}");
            assert!(
                p["last_error"]
                    .as_str()
                    .unwrap()
                    .contains("until the job is resumed"),
                "{p}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "not stopped at the gap: {p}");
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        partition_status(&b, "stop", &stop)["mirrored_next_offset"],
        20
    );
    cli_ok(&b, &["jobs", "resume", "stop"]);
    wait_caught_up(&b, "stop", 1, Duration::from_secs(60));
    assert_eq!(
        partition_status(&b, "stop", &stop)["mirrored_next_offset"],
        60
    );
}

/// An Apache Kafka broker of this test's own (scripts/kafka.sh), so it can
/// be killed and started again without touching the shared fixture.
struct OwnKafka {
    pid: u32,
    /// The restarted JVM (the first one belongs to kafka.sh's shell).
    child: Option<std::process::Child>,
    plaintext: String,
    dir: tempfile::TempDir,
}

impl OwnKafka {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
        let out = Command::new("bash")
            .args([
                "-c",
                r#"source "$1"; work="$2"; start_kafka >&2 || exit 1; echo "$KAFSCALE_TEST_KAFKA_PLAINTEXT $KAFKA_PID""#,
                "kafka",
                script,
            ])
            .arg(dir.path())
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/kafka.sh could not start a broker"
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let (plaintext, pid) = text.trim().split_once(' ').unwrap();
        Self {
            pid: pid.parse().unwrap(),
            child: None,
            plaintext: plaintext.to_owned(),
            dir,
        }
    }

    fn kill(&mut self) {
        common::signal(self.pid, "KILL");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::path::Path::new(&format!("/proc/{}", self.pid)).exists() {
            assert!(Instant::now() < deadline, "Kafka did not die");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the broker again on its data and ports (as kafka.sh does).
    fn restart(&mut self) {
        let kafka = self.dir.path().join("kafka");
        let child = Command::new("java")
            .args([
                "-Xms128m",
                "-Xmx512m",
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
            ])
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                kafka.join("log4j2.properties").display()
            ))
            .args([
                "-cp",
                &std::env::var("KAFSCALE_KAFKA_CLASSPATH").unwrap(),
                "kafka.Kafka",
            ])
            .arg(kafka.join("server.properties"))
            .stdout(std::fs::File::create(kafka.join("kafka-restarted.log")).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(90);
        let port: u16 = self.plaintext.rsplit(':').next().unwrap().parse().unwrap();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "Kafka did not start again");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for OwnKafka {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

/// The source broker killed (kill -9) and started again: the job says the
/// source is unreachable meanwhile, then resumes, and the copy is complete.
#[test]
fn a_restarted_source_broker_is_followed() {
    if ApacheKafka::from_env().is_none() {
        return; // scripts/test's fixture (and its jars) is not there
    }
    let mut kafka = OwnKafka::start();
    let k = ApacheKafka {
        plaintext: kafka.plaintext.clone(),
        ..ApacheKafka::from_env().unwrap()
    };
    let topic = unique("restart.");
    create_source_topic(&k, &topic, 4);
    let b = start_with(&[]);
    cli_ok(
        &b,
        &["sources", "add", "src", "--bootstrap", &kafka.plaintext],
    );
    cli_ok(
        &b,
        &[
            "jobs",
            "add",
            "r",
            "--source",
            "src",
            "--topics",
            &regex_escape(&topic),
        ],
    );
    wait_caught_up(&b, "r", 4, Duration::from_secs(60));
    kafka.kill();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(&b, "r");
        let down = s["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] == "source-unreachable");
        if down {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job never said the source is down: {s}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    kafka.restart();
    let (c, t) = (ClientConfig::new(&kafka.plaintext), topic.clone());
    run(move || async move {
        let c = Client::connect(c).await.unwrap();
        for part in 0..4 {
            c.produce_raw(&t, part, batch(15, Compression::Zstd, "after"), Acks::All)
                .await
                .unwrap();
        }
    });
    wait_caught_up(&b, "r", 4, Duration::from_secs(120));
    let (src, copy) = (ClientConfig::new(&kafka.plaintext), our(&b));
    run(move || async move {
        let (src, copy) = (
            Client::connect(src).await.unwrap(),
            Client::connect(copy).await.unwrap(),
        );
        assert_identical(&src, &copy, &[(topic, 4)]).await
    });
}

/// A source transaction open at the restore time: a mirrored copy restored
/// to T keeps committed and aborted transactions as they were and leaves the
/// open one out of read_committed (as if aborted, with no marker invented);
/// the cut is where Apache Kafka's own offsets_for_times(T + 1) points.
#[test]
fn a_mirrored_copy_restores_with_the_transaction_open_at_t_left_out() {
    let Some(k) = ApacheKafka::from_env() else {
        return;
    };
    let topic = unique("rtxn");
    const SCRIPT: &str = r#"
import sys, time
from confluent_kafka import Producer, Consumer, TopicPartition
bootstrap, topic = sys.argv[1], sys.argv[2]
p = Producer({"bootstrap.servers": bootstrap, "transactional.id": "txn-" + topic, "linger.ms": 5})
p.init_transactions()
def txn(tag, n, end):
    for i in range(n):
        p.produce(topic, key=b"k", value=("%s-%d" % (tag, i)).encode(), partition=0)
    p.flush()
    if end == "commit": p.commit_transaction()
    elif end == "abort": p.abort_transaction()
p.begin_transaction(); txn("a", 5, "commit")
p.begin_transaction(); txn("b", 5, "abort")
p.begin_transaction(); txn("c", 5, None)
time.sleep(0.2); t = int(time.time() * 1000); time.sleep(0.2)
txn("c2", 5, "commit")
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "times"})
cut = c.offsets_for_times([TopicPartition(topic, 0, t + 1)], timeout=10)[0].offset
print(t, cut)
"#;
    {
        let (c, topic) = (ClientConfig::new(&k.plaintext), topic.clone());
        run(move || async move {
            let c = Client::connect(c).await.unwrap();
            c.ensure_topic(&NewTopic::new(&topic, 1)).await.unwrap();
        });
    }
    let out = Command::new("python3")
        .args(["-c", SCRIPT, &k.plaintext, &topic])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|s| s.parse::<i64>().unwrap());
    let (t, kafka_cut) = (it.next().unwrap(), it.next().unwrap());

    let b = start_with(&[]);
    cli_ok(&b, &["sources", "add", "src", "--bootstrap", &k.plaintext]);
    cli_ok(
        &b,
        &["jobs", "add", "rt", "--source", "src", "--topics", &topic],
    );
    wait_caught_up(&b, "rt", 1, Duration::from_secs(60));

    let report = tempfile::NamedTempFile::new().unwrap();
    let restored = format!("{topic}.r");
    let ours = format!("127.0.0.1:{}", b.port);
    let out = Command::new(env!("CARGO_BIN_EXE_kafscale"))
        .args([
            "restore",
            "--topic",
            &topic,
            "--as",
            &restored,
            "--bootstrap",
            &ours,
        ])
        .args(["--to", &kafscale_s3::format_unix_ms(t), "--report"])
        .arg(report.path())
        .arg("--data-dir")
        .arg(b.data_dir())
        .args(["--http", &format!("http://127.0.0.1:{}", b.metrics_port)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&std::fs::read(report.path()).unwrap()).unwrap();
    assert_eq!(r["passed"], true, "{r:#}");
    let p0 = &r["partitions"][0];
    assert_eq!(
        p0["cut_offset"], kafka_cut,
        "the cut is Apache Kafka's offsets_for_times(T + 1)"
    );
    assert_eq!(
        p0["open_transactions"].as_array().unwrap().len(),
        1,
        "{p0:#}"
    );

    // Offsets are the source's: the restore is the source's prefix.
    let before_cut = |v: Vec<(i64, Option<String>, Option<String>)>| -> Vec<_> {
        v.into_iter().filter(|r| r.0 < kafka_cut).collect()
    };
    let uncommitted = consume_all(&ours, &restored, "read_uncommitted");
    assert_eq!(
        uncommitted,
        before_cut(consume_all(&k.plaintext, &topic, "read_uncommitted"))
    );
    assert_eq!(uncommitted.len(), 15, "a, b and the first half of c");
    let committed = consume_all(&ours, &restored, "read_committed");
    let values: Vec<Option<String>> = committed.into_iter().map(|r| r.2).collect();
    let want: Vec<Option<String>> = (0..5)
        .map(|i| Some(common::kafka::hex(format!("a-{i}").as_bytes())))
        .collect();
    assert_eq!(values, want, "only the committed transaction");

    // Into Apache Kafka: the committed records only, for either isolation
    // (the aborted transaction and the one open at T are left out, and no
    // transaction or marker is produced).
    let into = format!("{topic}.k");
    let out = Command::new(env!("CARGO_BIN_EXE_kafscale"))
        .args(["restore", "--topic", &topic, "--target-bootstrap"])
        .args([&k.plaintext, "--target-topic", &into])
        .args(["--to", &kafscale_s3::format_unix_ms(t), "--report"])
        .arg(report.path())
        .arg("--data-dir")
        .arg(b.data_dir())
        .args(["--http", &format!("http://127.0.0.1:{}", b.metrics_port)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&std::fs::read(report.path()).unwrap()).unwrap();
    assert_eq!(r["passed"], true, "{r:#}");
    let k0 = &r["partitions"][0]["kafka"];
    assert_eq!(k0["records"], 5, "{k0:#}");
    assert_eq!(
        k0["excluded_transactions"].as_array().unwrap().len(),
        2,
        "the aborted one and the one open at T: {k0:#}"
    );
    for isolation in ["read_uncommitted", "read_committed"] {
        let got = consume_all(&k.plaintext, &into, isolation);
        let values: Vec<Option<String>> = got.iter().map(|r| r.2.clone()).collect();
        assert_eq!(values, want, "{isolation} on the Kafka copy");
        let offsets: Vec<i64> = got.iter().map(|r| r.0).collect();
        assert_eq!(offsets, (0..5).collect::<Vec<_>>(), "{isolation}");
    }

    // --groups into Kafka: the copy's group offsets (source offsets) are
    // translated to the target's, which leaves out the markers, the
    // aborted transaction and the one open at the cut. The source log:
    // a 0-4, commit 5, b 6-10, abort 11, c 12-16 (open at T), c2 17-21.
    let group = |n: &str| format!("{topic}-g{n}");
    let commits = [("1", 3), ("2", 6), ("3", 13), ("4", 20)];
    {
        let (c, topic, list) = (
            ClientConfig::new(&ours),
            topic.clone(),
            commits.map(|(n, o)| (group(n), o)),
        );
        run(move || async move {
            let c = Client::connect(c).await.unwrap();
            for (g, offset) in list {
                let o = kafscale_client::CommittedOffset {
                    topic: topic.clone(),
                    partition: 0,
                    offset,
                    leader_epoch: -1,
                    metadata: None,
                };
                c.offset_commit(&g, &[o]).await.unwrap();
            }
            let n = common::kafka::wait_for_offset_history(&c, 4).await;
            assert!(n >= 4, "offset history: {n} records");
        });
    }
    let into_groups = format!("{topic}.kg");
    let out = Command::new(env!("CARGO_BIN_EXE_kafscale"))
        .args(["restore", "--topic", &topic, "--target-bootstrap"])
        .args([&k.plaintext, "--target-topic", &into_groups])
        .args(["--to-offset", &format!("0:{kafka_cut}"), "--groups"])
        .arg(format!("^{}-g", regex_escape(&topic)))
        .arg("--report")
        .arg(report.path())
        .arg("--data-dir")
        .arg(b.data_dir())
        .args(["--http", &format!("http://127.0.0.1:{}", b.metrics_port)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&std::fs::read(report.path()).unwrap()).unwrap();
    assert_eq!(r["passed"], true, "{r:#}");
    let got: Vec<(String, i64, i64, i64)> = r["groups"]["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["group"].as_str().unwrap().to_owned(),
                o["committed_offset"].as_i64().unwrap(),
                o["restored_offset"].as_i64().unwrap(),
                o["read_back"].as_i64().unwrap(),
            )
        })
        .collect();
    // Into the target: 3 is a-3; 6 and 13 come after a-4, the last record
    // produced, so the end (5); 20 is past the cut, so the cut, so the end.
    let want_groups: Vec<(String, i64, i64, i64)> =
        [("1", 3, 3), ("2", 6, 5), ("3", 13, 5), ("4", 20, 5)]
            .iter()
            .map(|&(n, committed, target)| (group(n), committed, target, target))
            .collect();
    assert_eq!(got, want_groups, "{:#}", r["groups"]);
    // A confluent-kafka consumer of the first group continues there.
    let read = group_consume(&k.plaintext, &into_groups, &group("1"), 100);
    assert_eq!(read, vec![(0, 3), (0, 4)]);
}

/// A source topic in the old message format (v1 message sets, as brokers
/// before Kafka 0.11 wrote them and as Kafka 3.9 still writes them when told
/// to) gets one clear status line, and a topic of the same job in record
/// batches v2 is copied meanwhile. The source is the Kafka 3.9 broker of
/// scripts/kafka-legacy.sh (ZooKeeper mode, message format 0.10.2).
#[test]
fn a_source_topic_in_the_old_message_format_gets_one_clear_line() {
    let Ok(legacy) = std::env::var("KAFSCALE_TEST_LEGACY_KAFKA") else {
        assert!(
            std::env::var_os("KAFSCALE_TEST_REQUIRE_SERVERS").is_none(),
            "KAFSCALE_TEST_LEGACY_KAFKA is not set but KAFSCALE_TEST_REQUIRE_SERVERS is"
        );
        eprintln!(
            "skipped: no Kafka 3.9 broker with the old message format (run under scripts/test)"
        );
        return;
    };
    let (old, new) = (unique("fmt-v1."), unique("fmt-v2."));
    const SCRIPT: &str = r#"
import sys
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka import Producer
bootstrap, old, new = sys.argv[1:4]
a = AdminClient({"bootstrap.servers": bootstrap})
# The broker's default format is 0.10.2 (v1); one topic asks for v2.
for f in a.create_topics([NewTopic(old, 1, 1),
                          NewTopic(new, 1, 1, config={"message.format.version": "2.8"})]).values():
    f.result()
p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
for t in (old, new):
    for i in range(5):
        p.produce(t, key=b"k", value=("%s-%d" % (t, i)).encode())
sys.exit(1 if p.flush(30) else 0)
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT, &legacy, &old, &new])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = start_with(&[]);
    cli_ok(&b, &["sources", "add", "legacy", "--bootstrap", &legacy]);
    let topics = format!("{}|{}", regex_escape(&old), regex_escape(&new));
    cli_ok(
        &b,
        &[
            "jobs", "add", "fmt", "--source", "legacy", "--topics", &topics,
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let (v1, v2) = loop {
        let (v1, v2) = (
            partition_status(&b, "fmt", &old),
            partition_status(&b, "fmt", &new),
        );
        let v1_reported = v1["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("old message format"));
        if v1_reported && v2["mirrored_next_offset"] == 5 {
            break (v1, v2);
        }
        assert!(
            Instant::now() < deadline,
            "v1: {v1:#}\nv2: {v2:#}\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(v1["state"], "error", "{v1:#}");
    let line = v1["last_error"].as_str().unwrap();
    assert!(
        line.starts_with(&format!(
            "source topic {old} partition 0 holds records in the old message format (magic 0 or 1), which cannot be copied byte for byte"
        )),
        "{line}"
    );
    assert_eq!(v2["state"], "running", "{v2:#}");
    // The v2 topic's copy holds its records.
    let copy = our(&b);
    let got = run(move || async move {
        let c = Client::connect(copy).await.unwrap();
        log_of(&c, &new, 0).await.len()
    });
    assert!(got >= 1, "the v2 topic was copied");
}
