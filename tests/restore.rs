//! Point-in-time restore on the embedded default while its broker runs: a
//! golden topic with known timestamps in every codec, restored with the
//! `kafscale restore` CLI as an operator would, read back by real clients
//! (confluent-kafka, kafka-python), its signed report verified, and
//! tampering and bad input refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::kafka::{group_consume, hex, run};
use common::{Broker, start, start_with_env};
use kafscale_client::{Acks, Client, ClientConfig, ClientError, KafkaCode, NewTopic};
use kafscale_codec::batch::{BatchBuilder, Compression};
use serde_json::{Value, json};

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];
const BATCHES: i64 = 6;
const PER_BATCH: i64 = 10;
/// Offset of the late record: the first of batch 4, stamped 3 s after the
/// base time (long before the cut).
const LATE: i64 = 40;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

struct Rec {
    offset: i64,
    timestamp: i64,
    key: Option<String>,
    value: Option<String>,
    headers: Vec<(String, Option<String>)>,
}

/// Record `i` of partition `p`: keys, null keys, null values and headers
/// (one with a null value) all occur. Record i is stamped base + i s, except
/// the late one; in partition 0 batch 2 is LogAppendTime, stamped base + 26 s.
fn golden(p: usize, base: i64) -> (Vec<Bytes>, Vec<Rec>) {
    let mut batches = Vec::new();
    let mut recs = Vec::new();
    for k in 0..BATCHES {
        let first = k * PER_BATCH;
        let ts_of = |i: i64| {
            if i == LATE {
                base + 3_000
            } else {
                base + i * 1000
            }
        };
        let log_append = p == 0 && k == 2;
        let mut b = BatchBuilder::new(0, ts_of(first)).compression(CODECS[p]);
        for i in first..first + PER_BATCH {
            let key = (i % 5 != 4).then(|| format!("k{p}-{i}"));
            let value = (i % 7 != 6).then(|| format!("v{p}-{i} ").repeat(1 + (i % 4) as usize));
            let headers: Vec<(String, Option<String>)> = if i % 2 == 0 {
                vec![("h".into(), Some(i.to_string())), ("n".into(), None)]
            } else {
                vec![]
            };
            let hs: Vec<(&str, Option<&[u8]>)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref().map(str::as_bytes)))
                .collect();
            b.push_at(
                ts_of(i),
                key.as_deref().map(str::as_bytes),
                value.as_deref().map(str::as_bytes),
                &hs,
            );
            recs.push(Rec {
                offset: i,
                timestamp: if log_append { base + 26_000 } else { ts_of(i) },
                key,
                value,
                headers,
            });
        }
        let mut raw = b.finish().to_vec();
        if log_append {
            raw[22] |= 0x08;
            raw[35..43].copy_from_slice(&(base + 26_000).to_be_bytes());
            let crc = crc32c::crc32c(&raw[21..]);
            raw[17..21].copy_from_slice(&crc.to_be_bytes());
        }
        batches.push(Bytes::from(raw));
    }
    (batches, recs)
}

/// `kafscale restore verify REPORT --public-key PUBLIC` with these store flags.
fn verify(report: &Path, public: &Path, store: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "restore",
        "verify",
        report.to_str().unwrap(),
        "--public-key",
        public.to_str().unwrap(),
    ];
    args.extend(store);
    kafscale(&args)
}

fn kafscale(args: &[&str]) -> (i32, String, String) {
    kafscale_env(args, &[])
}

fn kafscale_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kafscale"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("kafscale");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every record of every partition of `topic`, and offsets_for_times at
/// `ts`, as confluent-kafka (`confluent`) or kafka-python (`kafka-python`)
/// reads them.
fn client_read(client: &str, bootstrap: &str, topic: &str, partitions: usize, ts: i64) -> Value {
    const SCRIPT: &str = r#"
import json, sys, time
client, bootstrap, topic, n, ts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
hexb = lambda b: b.hex() if b is not None else None
out = {"records": [], "times": []}
if client == "confluent":
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "restore-check",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "enable.partition.eof": True})
    tps = [TopicPartition(topic, p, -2) for p in range(n)]
    c.assign(tps)
    eof, deadline = set(), time.time() + 60
    while len(eof) < n and time.time() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            if m.error().code() == -191:
                eof.add(m.partition()); continue
            sys.exit("consumer error: %s" % m.error())
        out["records"].append([m.partition(), m.offset(), m.timestamp()[1], hexb(m.key()), hexb(m.value()),
                               [[k, hexb(v)] for k, v in (m.headers() or [])]])
    if len(eof) < n:
        sys.exit("no end of every partition within 60 s")
    for tp in c.offsets_for_times([TopicPartition(topic, p, ts) for p in range(n)], timeout=10):
        out["times"].append(tp.offset)
    c.close()
else:
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=3000)
    tps = [TopicPartition(topic, p) for p in range(n)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    end = c.end_offsets(tps)
    deadline = time.time() + 60
    while any(c.position(tp) < end[tp] for tp in tps) and time.time() < deadline:
        for tp, msgs in c.poll(timeout_ms=1000).items():
            for m in msgs:
                out["records"].append([m.partition, m.offset, m.timestamp, hexb(m.key), hexb(m.value),
                                       [[k, hexb(v)] for k, v in m.headers]])
    found = c.offsets_for_times({tp: ts for tp in tps})
    out["times"] = [found[tp].offset if found[tp] is not None else -1 for tp in tps]
    c.close()
out["records"].sort(key=lambda r: (r[0], r[1]))
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .args([
            "-c",
            SCRIPT,
            client,
            bootstrap,
            topic,
            &partitions.to_string(),
            &ts.to_string(),
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{client} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("client output")
}

fn expected_json(all: &[Vec<Rec>], cuts: &[i64]) -> Value {
    let h = |s: &Option<String>| s.as_ref().map(|s| hex(s.as_bytes()));
    let mut out = Vec::new();
    for (p, recs) in all.iter().enumerate() {
        for r in recs.iter().filter(|r| r.offset < cuts[p]) {
            let headers: Vec<Value> = r.headers.iter().map(|(k, v)| json!([k, h(v)])).collect();
            out.push(json!([
                p,
                r.offset,
                r.timestamp,
                h(&r.key),
                h(&r.value),
                headers
            ]));
        }
    }
    Value::Array(out)
}

fn openssl_keys(dir: &Path) -> (PathBuf, PathBuf) {
    let (key, public) = (dir.join("signing.pem"), dir.join("signing.pub.pem"));
    let ok = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key)
        .status()
        .unwrap()
        .success()
        && Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&public)
            .status()
            .unwrap()
            .success();
    assert!(ok, "openssl could not make an Ed25519 key");
    (key, public)
}

fn find_segment(dir: &Path, needle: &str) -> PathBuf {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().contains(needle)
                && path.extension().is_some_and(|x| x == "kfs")
                && !path.to_string_lossy().contains("meta")
            {
                return path;
            }
        }
    }
    panic!("no segment matching {needle} under {}", dir.display());
}

fn produce_golden(b: &Broker, base: i64) -> Vec<Vec<Rec>> {
    let bootstrap = format!("127.0.0.1:{}", b.port);
    let per_partition: Vec<(Vec<Bytes>, Vec<Rec>)> =
        (0..CODECS.len()).map(|p| golden(p, base)).collect();
    let batches: Vec<Vec<Bytes>> = per_partition.iter().map(|(b, _)| b.clone()).collect();
    run(move || async move {
        let c = Client::connect(ClientConfig::new(&bootstrap))
            .await
            .unwrap();
        for r in c
            .create_topics(
                &[NewTopic::new("golden", CODECS.len() as i32)],
                Duration::from_secs(10),
            )
            .await
        {
            r.unwrap();
        }
        // One batch at a time, a pause between them, so each partition's
        // log is several segments.
        for k in 0..BATCHES as usize {
            for (p, bs) in batches.iter().enumerate() {
                c.produce_raw("golden", p as i32, bs[k].clone(), Acks::All)
                    .await
                    .unwrap();
            }
            glommio::timer::sleep(Duration::from_millis(60)).await;
        }
    });
    per_partition.into_iter().map(|(_, r)| r).collect()
}

#[test]
fn a_golden_topic_is_restored_record_exact_and_its_signed_report_verifies() {
    let b = start();
    let dir = tempfile::tempdir().unwrap();
    let base = now_ms() / 1000 * 1000 - 3_600_000;
    let t = base + 25_500;
    let all = produce_golden(&b, base);
    // Partition 0's cut is at its LogAppendTime batch (all stamped base +
    // 26 s); the others' inside their (compressed) batch 2.
    let cuts: Vec<i64> = (0..CODECS.len())
        .map(|p| if p == 0 { 20 } else { 26 })
        .collect();

    let data_dir = b.data_dir().to_str().unwrap().to_owned();
    let http = format!("http://127.0.0.1:{}", b.metrics_port);
    let bootstrap = format!("127.0.0.1:{}", b.port);
    let to = kafscale_s3::format_unix_ms(t);
    let store: Vec<&str> = vec!["--data-dir", &data_dir, "--http", &http];
    let report = dir.path().join("report.json");
    let (key, public) = openssl_keys(dir.path());

    // The plan first: nothing changes.
    let mut args = vec!["restore", "--topic", "golden", "--to", &to, "--dry-run"];
    args.extend(&store);
    let (code, out, err) = kafscale(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("cut offset"), "{out}");
    for (p, cut) in cuts.iter().enumerate() {
        let row = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&p.to_string()))
            .unwrap_or_else(|| panic!("no plan row for partition {p}: {out}"));
        assert_eq!(
            row.split_whitespace().nth(3),
            Some(cut.to_string().as_str()),
            "{row}"
        );
    }

    let (report_s, key_s) = (report.to_str().unwrap(), key.to_str().unwrap());
    let mut args = vec![
        "restore",
        "--topic",
        "golden",
        "--to",
        &to,
        "--as",
        "golden.r",
        "--bootstrap",
        &bootstrap,
        "--report",
        report_s,
        "--sign-key",
        key_s,
        "--operator",
        "tester",
        "--trigger",
        "test",
    ];
    args.extend(&store);
    let (code, out, err) = kafscale(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("every check passed"), "{out}");
    // The audit line of a restore run from the command line.
    assert!(
        err.lines().any(|l| l.contains(&format!(r#""principal":"User:tester","host":"local","action":"Restore","target":"topic golden as golden.r, to {to}""#))
            && l.contains(r#""outcome":"ok""#)),
        "{err}"
    );

    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["passed"], true, "{r:#}");
    assert_eq!(r["operator"], "tester");
    assert_eq!(r["source_digest"], r["target_digest"]);
    let expected_total: i64 = cuts.iter().sum();
    assert_eq!(r["expected_records"], expected_total);
    assert_eq!(r["restored_records"], expected_total);
    for (p, cut) in cuts.iter().enumerate() {
        let pe = &r["partitions"][p];
        assert_eq!(pe["cut_offset"], *cut, "partition {p}: {pe:#}");
        assert_eq!(pe["first_excluded"]["offset"], *cut);
        let first_excluded_ts = if p == 0 {
            base + 26_000
        } else {
            base + cut * 1000
        };
        assert_eq!(pe["first_excluded"]["timestamp"], first_excluded_ts);
        assert_eq!(pe["last_kept"]["offset"], cut - 1);
        assert_eq!(pe["split_batches"], if p == 0 { 0 } else { 1 }, "{pe:#}");
        assert_eq!(pe["late_records"], 1, "{pe:#}");
        assert_eq!(pe["late_offsets"], json!([LATE]));
        assert_eq!(pe["source_digest"], pe["target_digest"]);
    }
    assert!(
        r["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["use_"] == "cut")
    );
    assert!(
        r["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["use_"] == "copied")
    );
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(
        html.contains("PASSED") && html.contains("golden.r"),
        "{html}"
    );

    // Real clients read exactly the records before the cut, and Kafka's
    // offsets_for_times for T + 1 ms on the original is where each
    // restored partition ends; the restored topic has nothing later than T.
    let expected = expected_json(&all, &cuts);
    for client in ["confluent", "kafka-python"] {
        let got = client_read(client, &bootstrap, "golden.r", CODECS.len(), t + 1);
        assert_eq!(got["records"], expected, "{client} read of golden.r");
        assert_eq!(got["times"], json!([-1, -1, -1, -1, -1]), "{client}");
        let orig = client_read(client, &bootstrap, "golden", CODECS.len(), t + 1);
        assert_eq!(
            orig["times"],
            json!(cuts),
            "{client} offsets_for_times on golden"
        );
    }

    // Served first: whole segments copied unread, the topic served, then
    // verified; the same evidence as verifying first.
    let served = dir.path().join("served.json");
    let mut args = vec![
        "restore",
        "--topic",
        "golden",
        "--to",
        &to,
        "--as",
        "golden.s",
        "--serve-first",
        "--report",
        served.to_str().unwrap(),
    ];
    args.extend(&store);
    let (code, out, err) = kafscale(&args);
    assert_eq!(code, 0, "{out}{err}");
    let s: Value = serde_json::from_slice(&std::fs::read(&served).unwrap()).unwrap();
    assert_eq!(s["passed"], true, "{s:#}");
    assert_eq!(s["source_digest"], r["source_digest"], "{s:#}");
    assert_eq!(s["target_digest"], r["target_digest"], "{s:#}");
    for p in 0..CODECS.len() {
        for field in [
            "cut_offset",
            "last_kept",
            "expected_records",
            "late_records",
        ] {
            assert_eq!(
                s["partitions"][p][field], r["partitions"][p][field],
                "partition {p} {field}"
            );
        }
    }
    let served_ms = s["served_ms"].as_i64().expect("served_ms");
    assert!(served_ms <= s["rto_ms"].as_i64().unwrap(), "{s:#}");
    assert!(
        s["objects"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["use_"] == "copied" && o["key"].as_str().unwrap().ends_with(".kfs"))
            .all(|o| o["crc_verified"] == true),
        "every copied segment verified after serving: {s:#}"
    );
    let got = client_read("confluent", &bootstrap, "golden.s", CODECS.len(), t + 1);
    assert_eq!(got["records"], expected, "confluent read of golden.s");

    // Nothing can be added to a restore.
    let refused = run(move || async move {
        let c = Client::connect(ClientConfig::new(&bootstrap))
            .await
            .unwrap();
        let mut batch = BatchBuilder::new(0, now_ms());
        batch.push(None, Some(b"x"), &[]);
        c.produce_raw("golden.r", 0, batch.finish(), Acks::All)
            .await
    });
    match refused {
        Err(ClientError::Kafka { code, .. }) => {
            assert_eq!(code, KafkaCode::INVALID_TOPIC_EXCEPTION)
        }
        other => panic!("produce to a restore: {other:?}"),
    }

    // The signed report verifies against the bucket...
    let public_s = public.to_str().unwrap();
    let mut args = vec!["restore", "verify", report_s, "--public-key", public_s];
    args.extend(&store);
    let (code, out, err) = kafscale(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("signature: valid"), "{out}");
    assert!(
        out.contains("every digest recomputed from the bucket matches"),
        "{out}"
    );

    // ...an edited one does not...
    let edited = dir.path().join("edited.json");
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(text.contains("\"late_records\":1"));
    std::fs::write(
        &edited,
        text.replacen("\"late_records\":1", "\"late_records\":0", 1),
    )
    .unwrap();
    std::fs::copy(
        dir.path().join("report.json.sig"),
        dir.path().join("edited.json.sig"),
    )
    .unwrap();
    let edited_s = edited.to_str().unwrap();
    let mut args = vec!["restore", "verify", edited_s, "--public-key", public_s];
    args.extend(&store);
    let (code, out, _) = kafscale(&args);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("changed after signing"), "{out}");

    // ...and a flipped byte in a source segment fails both verify and a new
    // restore, naming the object.
    let seg = find_segment(b.data_dir(), "golden/3/segment-00000000000000000000");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[100] ^= 0x20;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
        .unwrap();
    let mut args = vec!["restore", "verify", report_s, "--public-key", public_s];
    args.extend(&store);
    let (code, out, _) = kafscale(&args);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("default/golden/3/segment-00000000000000000000.kfs is corrupt"),
        "{out}"
    );
    let mut args = vec![
        "restore",
        "--topic",
        "golden",
        "--to",
        &to,
        "--as",
        "golden.r2",
    ];
    args.extend(&store);
    let (code, out, err) = kafscale(&args);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("segment default/golden/3/segment-00000000000000000000.kfs is corrupt"),
        "{err}"
    );
    // Served first, the corrupt segment is found after the topic is served:
    // the report fails its check, naming the object, and says so.
    let failed = dir.path().join("failed.json");
    let mut args = vec![
        "restore",
        "--topic",
        "golden",
        "--to",
        &to,
        "--as",
        "golden.s2",
        "--serve-first",
        "--report",
        failed.to_str().unwrap(),
    ];
    args.extend(&store);
    let (code, out, err) = kafscale(&args);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("partition 3: verification FAILED after golden.s2 was served"),
        "{err}"
    );
    let f: Value = serde_json::from_slice(&std::fs::read(&failed).unwrap()).unwrap();
    assert_eq!(f["passed"], false);
    let check = f["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "source segments verified")
        .unwrap();
    assert_eq!(check["passed"], false, "{check:#}");
    assert!(
        check["detail"]
            .as_str()
            .unwrap()
            .contains("segment default/golden/3/segment-00000000000000000000.kfs is corrupt"),
        "{check:#}"
    );
}

#[test]
fn bad_restore_requests_get_one_clear_sentence() {
    let b = start();
    let base = now_ms() / 1000 * 1000 - 3_600_000;
    produce_golden(&b, base);
    let data_dir = b.data_dir().to_str().unwrap().to_owned();
    let http = format!("http://127.0.0.1:{}", b.metrics_port);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--topic".into(),
                "nope".into(),
                "--to".into(),
                kafscale_s3::format_unix_ms(base),
            ],
            "topic nope does not exist",
        ),
        (
            vec![
                "--topic".into(),
                "golden".into(),
                "--to".into(),
                "2999-01-01T00:00:00Z".into(),
            ],
            "is in the future",
        ),
        (
            vec![
                "--topic".into(),
                "golden".into(),
                "--to".into(),
                kafscale_s3::format_unix_ms(base - 1),
            ],
            "nothing to restore: every record of golden is later than",
        ),
        (
            vec![
                "--topic".into(),
                "golden".into(),
                "--to".into(),
                "yesterday".into(),
            ],
            "is not an RFC 3339 time",
        ),
        (
            vec![
                "--topic".into(),
                "golden".into(),
                "--to-offset".into(),
                "9:1".into(),
            ],
            "names partition 9, but golden has 5 partitions",
        ),
        (
            vec![
                "--topic".into(),
                "golden".into(),
                "--to-offset".into(),
                "1:500".into(),
            ],
            "is outside partition 1 of golden",
        ),
        (
            vec![
                "--topic".into(),
                "golden".into(),
                "--to".into(),
                kafscale_s3::format_unix_ms(base + 5_000),
                "--as".into(),
                "golden".into(),
            ],
            "topic golden exists; name the restored topic with --as",
        ),
    ];
    for (extra, want) in cases {
        let mut args: Vec<&str> = vec!["restore", "--data-dir", &data_dir, "--http", &http];
        args.extend(extra.iter().map(String::as_str));
        let (code, out, err) = kafscale(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        // Progress lines may come first; the refusal is one line at the end.
        let refusal: Vec<&str> = err.lines().filter(|l| l.starts_with("kafscale:")).collect();
        assert_eq!(refusal.len(), 1, "one sentence: {err}");
        assert!(
            refusal[0].contains(want),
            "{args:?}: want {want:?}, got {err}"
        );
    }
    // A cut by offset restores exactly up to it.
    let (code, out, err) = kafscale(&[
        "restore",
        "--data-dir",
        &data_dir,
        "--http",
        &http,
        "--topic",
        "golden",
        "--to-offset",
        "1:33,2:0",
        "--as",
        "golden.o",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("every check passed"), "{out}");
    let bootstrap = format!("127.0.0.1:{}", b.port);
    let got = client_read("confluent", &bootstrap, "golden.o", CODECS.len(), 0);
    let per_partition = |p: i64| {
        got["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r[0] == p)
            .count() as i64
    };
    let whole = BATCHES * PER_BATCH;
    assert_eq!(
        (0..5).map(per_partition).collect::<Vec<_>>(),
        vec![whole, 33, 0, whole, whole]
    );
}

/// etcd and the S3 server of scripts/test, or `None` when they are not set
/// (a failure when KAFSCALE_TEST_REQUIRE_SERVERS is).
fn servers() -> Option<(String, String, String, String)> {
    let var = |n: &str| std::env::var(n).ok();
    match (
        var("KAFSCALE_TEST_ETCD_ENDPOINTS"),
        var("KAFSCALE_TEST_S3_ENDPOINT"),
        var("KAFSCALE_TEST_S3_ACCESS_KEY"),
        var("KAFSCALE_TEST_S3_SECRET_KEY"),
    ) {
        (Some(e), Some(s), Some(a), Some(k)) => Some((e, s, a, k)),
        _ => {
            assert!(
                std::env::var_os("KAFSCALE_TEST_REQUIRE_SERVERS").is_none(),
                "etcd and the S3 server are not set but KAFSCALE_TEST_REQUIRE_SERVERS is"
            );
            None
        }
    }
}

#[test]
fn a_restore_on_etcd_and_s3_copies_segments_inside_the_bucket() {
    let Some((etcd, s3, access, secret)) = servers() else {
        return;
    };
    let suffix = format!("{}-{}", std::process::id(), now_ms() % 1_000_000);
    let (bucket, ns) = (format!("restore-{suffix}"), format!("ns-{suffix}"));
    let store: Vec<String> = [
        "--s3-endpoint",
        &s3,
        "--s3-bucket",
        &bucket,
        "--s3-namespace",
        &ns,
        "--etcd-endpoints",
        &etcd,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let creds = [
        ("AWS_ACCESS_KEY_ID", access.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
    ];
    let mut flags: Vec<&str> = store.iter().map(String::as_str).collect();
    flags.push("--s3-create-bucket");
    let b = start_with_env(&flags, &creds);
    let base = now_ms() / 1000 * 1000 - 3_600_000;
    let t = base + 25_500;
    let all = produce_golden(&b, base);
    let cuts: Vec<i64> = (0..CODECS.len())
        .map(|p| if p == 0 { 20 } else { 26 })
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let report_s = report.to_str().unwrap();
    let bootstrap = format!("127.0.0.1:{}", b.port);
    let to = kafscale_s3::format_unix_ms(t);
    let mut args = vec![
        "restore",
        "--topic",
        "golden",
        "--to",
        &to,
        "--as",
        "golden.r",
        "--bootstrap",
        &bootstrap,
        "--report",
        report_s,
    ];
    args.extend(store.iter().map(String::as_str));
    let (code, out, err) = kafscale_env(&args, &creds);
    assert_eq!(code, 0, "{out}{err}");
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["passed"], true, "{r:#}");
    assert!(
        r["source"]["catalog"]
            .as_str()
            .unwrap()
            .starts_with("etcd at "),
        "{}",
        r["source"]["catalog"]
    );
    assert!(r["source"]["store"].as_str().unwrap().contains(&bucket));
    // Whole segments were copied by the S3 server (CopyObject); each
    // source object's ETag is in the evidence.
    let objects = r["objects"].as_array().unwrap();
    assert!(objects.iter().any(|o| o["use_"] == "copied"));
    assert!(
        objects
            .iter()
            .all(|o| !o["etag"].as_str().unwrap().is_empty()),
        "{objects:#?}"
    );
    for (p, cut) in cuts.iter().enumerate() {
        assert_eq!(r["partitions"][p]["cut_offset"], *cut);
    }
    let got = client_read("confluent", &bootstrap, "golden.r", CODECS.len(), t + 1);
    assert_eq!(got["records"], expected_json(&all, &cuts));

    let mut args = vec!["restore", "verify", report_s];
    args.extend(store.iter().map(String::as_str));
    let (code, out, err) = kafscale_env(&args, &creds);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("every digest recomputed from the bucket matches"),
        "{out}"
    );

    // Served first through S3's CopyObject: the same digests, and a report
    // that verifies.
    let served = dir.path().join("served.json");
    let mut args = vec![
        "restore",
        "--topic",
        "golden",
        "--to",
        &to,
        "--as",
        "golden.s",
        "--serve-first",
        "--bootstrap",
        &bootstrap,
        "--report",
        served.to_str().unwrap(),
    ];
    args.extend(store.iter().map(String::as_str));
    let (code, out, err) = kafscale_env(&args, &creds);
    assert_eq!(code, 0, "{out}{err}");
    let s: Value = serde_json::from_slice(&std::fs::read(&served).unwrap()).unwrap();
    assert_eq!(s["passed"], true, "{s:#}");
    assert_eq!(
        (&s["source_digest"], &s["target_digest"]),
        (&r["source_digest"], &r["target_digest"])
    );
    let mut args = vec!["restore", "verify", served.to_str().unwrap()];
    args.extend(store.iter().map(String::as_str));
    let (code, out, err) = kafscale_env(&args, &creds);
    assert_eq!(code, 0, "{out}{err}");

    // Credentials S3 refuses: one sentence, nothing created.
    let bad = [
        ("AWS_ACCESS_KEY_ID", access.as_str()),
        ("AWS_SECRET_ACCESS_KEY", "wrong"),
    ];
    let mut args = vec![
        "restore",
        "--topic",
        "golden",
        "--to",
        &to,
        "--as",
        "golden.bad",
    ];
    args.extend(store.iter().map(String::as_str));
    let (code, out, err) = kafscale_env(&args, &bad);
    assert_eq!(code, 2, "{out}{err}");
    let refusal: Vec<&str> = err.lines().filter(|l| l.starts_with("kafscale:")).collect();
    assert_eq!(refusal.len(), 1, "{err}");
    assert!(refusal[0].contains("SignatureDoesNotMatch"), "{err}");
    let mut args = vec!["restore", "--topic", "golden.bad", "--to", &to, "--dry-run"];
    args.extend(store.iter().map(String::as_str));
    let (_, _, err) = kafscale_env(&args, &creds);
    assert!(err.contains("topic golden.bad does not exist"), "{err}");
}

#[test]
fn with_the_metadata_store_lost_a_restore_rebuilds_the_log_from_the_bucket() {
    let Some((etcd, s3, access, secret)) = servers() else {
        return;
    };
    let suffix = format!("{}-{}", std::process::id(), now_ms() % 1_000_000);
    let (bucket, ns) = (format!("lost-{suffix}"), format!("ns-{suffix}"));
    let s3_flags = [
        "--s3-endpoint",
        &s3,
        "--s3-bucket",
        &bucket,
        "--s3-namespace",
        &ns,
    ];
    let creds = [
        ("AWS_ACCESS_KEY_ID", access.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
    ];
    let base = now_ms() / 1000 * 1000 - 3_600_000;
    let t = base + 25_500;
    let all = {
        let mut flags = s3_flags.to_vec();
        flags.extend(["--s3-create-bucket", "--etcd-endpoints", &etcd]);
        let a = start_with_env(&flags, &creds);
        produce_golden(&a, base)
    }; // broker A and, for this restore, its etcd are gone
    // An upload a crash interrupted: a .kfs with no .index (and not even a
    // segment). Not part of the log: skipped, not an error.
    let mut cfg = kafscale_s3::S3Config::new(
        &s3,
        bucket.clone(),
        kafscale_s3::Credentials::new(&access, &secret, None),
    )
    .unwrap();
    cfg.region = "us-east-1".into();
    let orphan = format!("{ns}/golden/0/segment-00000000000000000999.kfs");
    let key = orphan.clone();
    run(move || async move {
        use kafscale_s3::ObjectStore;
        kafscale_s3::S3Client::new(cfg)
            .put(
                &key,
                Bytes::from_static(b"half an upload"),
                &Default::default(),
            )
            .await
            .unwrap();
    });

    // A new broker on the same bucket with a new, embedded metadata store.
    let b = start_with_env(&s3_flags, &creds);
    let (data_dir, http) = (
        b.data_dir().to_str().unwrap().to_owned(),
        format!("http://127.0.0.1:{}", b.metrics_port),
    );
    let bootstrap = format!("127.0.0.1:{}", b.port);
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let to = kafscale_s3::format_unix_ms(t);
    let mut args = vec![
        "restore",
        "--from-bucket",
        "--topic",
        "golden",
        "--to",
        &to,
        "--as",
        "golden.r",
        "--bootstrap",
        &bootstrap,
        "--report",
        report.to_str().unwrap(),
        "--data-dir",
        &data_dir,
        "--http",
        &http,
    ];
    args.extend(s3_flags);
    let (code, out, err) = kafscale_env(&args, &creds);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains(&format!("{orphan} has no .index")), "{err}");
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["passed"], true, "{r:#}");
    assert!(
        r["source"]["catalog"]
            .as_str()
            .unwrap()
            .starts_with("the bucket alone"),
        "{}",
        r["source"]["catalog"]
    );
    assert!(
        r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "log rebuilt from the bucket alone")
    );
    let cuts: Vec<i64> = (0..CODECS.len())
        .map(|p| if p == 0 { 20 } else { 26 })
        .collect();
    for (p, cut) in cuts.iter().enumerate() {
        let pe = &r["partitions"][p];
        assert_eq!(pe["cut_offset"], *cut, "{pe:#}");
        assert_eq!(pe["source_high_watermark"], BATCHES * PER_BATCH);
        let last = pe["unconfirmed_last_segment"].as_str().unwrap();
        assert!(last.starts_with(&format!("{ns}/golden/{p}/segment-")) && last.ends_with(".kfs"));
    }
    let got = client_read("confluent", &bootstrap, "golden.r", CODECS.len(), t + 1);
    assert_eq!(got["records"], expected_json(&all, &cuts));
}

/// Batches of `per` records in each of `partitions` partitions of `topic`
/// on our broker, produced many at a time; returns the records' count.
fn produce_many(b: &Broker, topic: &str, partitions: i32, batches: usize, per: usize) -> i64 {
    let (bootstrap, topic) = (format!("127.0.0.1:{}", b.port), topic.to_owned());
    run(move || async move {
        let c = Client::connect(ClientConfig::new(&bootstrap))
            .await
            .unwrap();
        for r in c
            .create_topics(
                &[NewTopic::new(&topic, partitions)],
                Duration::from_secs(10),
            )
            .await
        {
            r.unwrap();
        }
        let ts = now_ms() - 60_000;
        let sends = (0..batches).flat_map(|k| (0..partitions).map(move |p| (k, p)));
        let sends: Vec<_> = sends.collect();
        for chunk in sends.chunks(100) {
            let all = chunk.iter().map(|&(k, p)| {
                let mut batch =
                    BatchBuilder::new(0, ts + k as i64).compression(CODECS[k % CODECS.len()]);
                for i in 0..per {
                    let v = format!("p{p}-b{k}-r{i}");
                    batch.push(Some(b"key"), Some(v.as_bytes()), &[("h", Some(b"x"))]);
                }
                let c = &c;
                let topic = &topic;
                async move {
                    c.produce_raw(topic, p, batch.finish(), Acks::All)
                        .await
                        .unwrap()
                }
            });
            futures::future::join_all(all).await;
        }
    });
    (partitions as i64) * (batches * per) as i64
}

/// The target cluster's end offsets of `topic`, summed.
fn kafka_records(bootstrap: &str, topic: &str, partitions: i32) -> i64 {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    run(move || async move {
        let c = Client::connect(ClientConfig::new(&bootstrap))
            .await
            .unwrap();
        let ps: Vec<i32> = (0..partitions).collect();
        match c
            .list_offsets(&topic, &ps, kafscale_client::OffsetSpec::Latest)
            .await
        {
            Ok(o) => o.iter().map(|o| o.offset).sum(),
            Err(_) => 0,
        }
    })
}

#[test]
fn a_restore_into_apache_kafka_is_read_the_same_and_an_interrupted_one_resumes_without_duplicates()
{
    let Some(k) = common::kafka::ApacheKafka::from_env() else {
        return;
    };
    let b = start();
    let dir = tempfile::tempdir().unwrap();
    let base = now_ms() / 1000 * 1000 - 3_600_000;
    // Partition 0 keeps its LogAppendTime batch (every record at base +
    // 26 s) and ends at its batch 3; the others end inside batch 2.
    let t = base + 27_500;
    let cuts = [30i64, 28, 28, 28, 28];
    let all = produce_golden(&b, base);
    let data_dir = b.data_dir().to_str().unwrap().to_owned();
    let http = format!("http://127.0.0.1:{}", b.metrics_port);
    let store = ["--data-dir", &data_dir, "--http", &http];
    let (key, public) = openssl_keys(dir.path());
    let suffix = now_ms().to_string();

    // Over SASL_SSL with SCRAM-SHA-512, the password from the environment.
    let target = format!("golden-{suffix}");
    let report = dir.path().join("kafka.json");
    let to = kafscale_s3::format_unix_ms(t);
    let mut args = vec![
        "restore",
        "--topic",
        "golden",
        "--to",
        &to,
        "--target-bootstrap",
        &k.sasl_ssl,
        "--target-topic",
        &target,
        "--target-security-protocol",
        "SASL_SSL",
        "--target-sasl-mechanism",
        "SCRAM-SHA-512",
        "--target-sasl-username",
        &k.user,
        "--target-sasl-password-env",
        "KAFSCALE_TEST_TARGET_PASSWORD",
        "--target-ssl-ca",
        &k.ca_file,
        "--report",
        report.to_str().unwrap(),
        "--sign-key",
        key.to_str().unwrap(),
    ];
    args.extend(store);
    let (code, out, err) = kafscale_env(
        &args,
        &[("KAFSCALE_TEST_TARGET_PASSWORD", k.password.as_str())],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("every check passed"), "{out}{err}");
    assert!(!out.contains(&k.password) && !err.contains(&k.password));
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["passed"], true, "{r:#}");
    assert_eq!(r["target"]["kind"], "kafka");
    assert_eq!(r["target"]["topic"], target.as_str());
    for (p, cut) in cuts.iter().enumerate() {
        let pe = &r["partitions"][p];
        assert_eq!(pe["cut_offset"], *cut, "{pe:#}");
        assert_eq!(pe["kafka"]["records"], *cut, "{pe:#}");
        assert_eq!(pe["kafka"]["target_start"], 0);
        assert_eq!(pe["kafka"]["target_end"], *cut);
        assert_eq!(pe["kafka"]["resumed_after"], 0);
        assert_eq!(pe["kafka"]["digest"], pe["target_digest"]);
        assert_eq!(pe["source_digest"], pe["target_digest"]);
    }
    assert_eq!(r["expected_records"], cuts.iter().sum::<i64>());
    // Each source segment in the evidence once, read when produced (the
    // cut ones when cut).
    let keys: Vec<&str> = r["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["use_"] == "produced" || o["use_"] == "cut")
        .map(|o| o["key"].as_str().unwrap())
        .collect();
    let unique: std::collections::BTreeSet<&&str> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "{keys:?}");
    assert!(keys.iter().any(|k| k.contains("golden/0/")), "{keys:?}");
    // Real clients on Apache Kafka read exactly the records before the cut,
    // with their timestamps (the LogAppendTime ones as consumers saw them)
    // and, the golden log having no gaps, at the same offsets.
    let expected = expected_json(&all, &cuts);
    for client in ["confluent", "kafka-python"] {
        let got = client_read(client, &k.plaintext, &target, CODECS.len(), t + 1);
        assert_eq!(got["records"], expected, "{client} read of {target}");
        assert_eq!(got["times"], json!([-1, -1, -1, -1, -1]), "{client}");
    }
    // The signed report verifies against the bucket.
    let (code, out, err) = verify(&report, &public, &store);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("every digest recomputed from the bucket matches"),
        "{out}"
    );
    // A topic holding other records is not taken for an earlier run.
    let mut args = vec![
        "restore",
        "--topic",
        "golden",
        "--to-offset",
        "0:10",
        "--target-bootstrap",
        &k.plaintext,
        "--target-topic",
        &target,
    ];
    args.extend(store);
    let (code, out, err) = kafscale(&args);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("it was not written by an earlier run of it"),
        "{err}"
    );

    // A topic whose retention would delete old restored records is refused
    // before anything is produced.
    let timed = format!("timed-{suffix}");
    {
        let (bootstrap, timed) = (k.plaintext.clone(), timed.clone());
        run(move || async move {
            let c = Client::connect(ClientConfig::new(&bootstrap))
                .await
                .unwrap();
            let mut t = NewTopic::new(&timed, 5);
            t.configs.insert("retention.ms".into(), "604800000".into());
            c.ensure_topic(&t).await.unwrap();
        });
    }
    let mut args = vec![
        "restore",
        "--topic",
        "golden",
        "--to",
        &to,
        "--target-bootstrap",
        &k.plaintext,
        "--target-topic",
        &timed,
    ];
    args.extend(store);
    let (code, out, err) = kafscale(&args);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("has retention.ms=604800000"), "{err}");
    assert_eq!(kafka_records(&k.plaintext, &timed, 5), 0);

    // An interrupted restore, run again, resumes: nothing twice, nothing missing.
    let total = produce_many(&b, "many", 2, 2000, 3);
    let target = format!("many-{suffix}");
    let to = kafscale_s3::format_unix_ms(now_ms());
    let mut args = vec![
        "restore",
        "--topic",
        "many",
        "--to",
        &to,
        "--target-bootstrap",
        &k.plaintext,
        "--target-topic",
        &target,
    ];
    args.extend(store);
    let mut child = Command::new(env!("CARGO_BIN_EXE_kafscale"))
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut seen = 0;
    while seen == 0 && std::time::Instant::now() < deadline {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore ended before any record reached the target"
        );
        std::thread::sleep(Duration::from_millis(20));
        seen = kafka_records(&k.plaintext, &target, 2);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let interrupted = kafka_records(&k.plaintext, &target, 2);
    assert!(
        interrupted > 0 && interrupted < total,
        "killed with {interrupted} of {total} records produced"
    );
    let report = dir.path().join("many.json");
    args.extend(["--report", report.to_str().unwrap()]);
    let (code, out, err) = kafscale(&args);
    assert_eq!(code, 0, "{out}{err}");
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["passed"], true, "{r:#}");
    let resumed: i64 = (0..2)
        .map(|p| {
            r["partitions"][p]["kafka"]["resumed_after"]
                .as_i64()
                .unwrap()
        })
        .sum();
    assert!(
        resumed >= interrupted && resumed < total,
        "resumed after {resumed}, {interrupted} were there when killed"
    );
    assert_eq!(r["restored_records"], total);
    let source = client_read("confluent", &format!("127.0.0.1:{}", b.port), "many", 2, 0);
    let copy = client_read("confluent", &k.plaintext, &target, 2, 0);
    assert_eq!(copy["records"].as_array().unwrap().len() as i64, total);
    assert_eq!(
        copy["records"], source["records"],
        "the same records in the same order"
    );
}

#[test]
fn a_drill_restores_verifies_signs_and_removes_its_temporary_topic() {
    let b = start();
    let dir = tempfile::tempdir().unwrap();
    let base = now_ms() / 1000 * 1000 - 3_600_000;
    produce_golden(&b, base);
    let data_dir = b.data_dir().to_str().unwrap().to_owned();
    let http = format!("http://127.0.0.1:{}", b.metrics_port);
    let store = ["--data-dir", &data_dir, "--http", &http];
    let (key, public) = openssl_keys(dir.path());
    let report = dir.path().join("drill.json");
    // Golden records are stamped from an hour ago to 59 s later: a minute
    // ago is after every one of them.
    let mut args = vec![
        "restore",
        "drill",
        "--topic",
        "golden",
        "--at",
        "now-1m",
        "--report",
        report.to_str().unwrap(),
        "--sign-key",
        key.to_str().unwrap(),
    ];
    args.extend(store);
    let (code, out, err) = kafscale(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("removed with DeleteTopics"), "{err}");
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["passed"], true, "{r:#}");
    assert_eq!(r["trigger"], "drill");
    assert_eq!(r["target"]["temporary"], true);
    let temp = r["target"]["topic"].as_str().unwrap().to_owned();
    assert!(temp.starts_with("golden.drill-"), "{temp}");
    let cleaned = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "drill cleaned up")
        .expect("a clean-up check");
    assert_eq!(cleaned["passed"], true, "{cleaned:#}");
    let expected: i64 = r["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["cut_offset"].as_i64().unwrap())
        .sum();
    assert_eq!(expected, BATCHES * PER_BATCH * CODECS.len() as i64);
    assert_eq!(r["restored_records"], expected, "{r:#}");

    // The temporary topic is gone from the metadata and, soon, the bucket.
    let bootstrap = format!("127.0.0.1:{}", b.port);
    let (t, bs) = (temp.clone(), bootstrap.clone());
    let listed = run(move || async move {
        let c = Client::connect(ClientConfig::new(&bs)).await.unwrap();
        c.metadata(&[]).await.unwrap().topic(&t).is_some()
    });
    assert!(!listed, "{temp} is still listed");
    let objects = b.data_dir().join("objects");
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = walk(&objects)
            .into_iter()
            .filter(|p| p.is_file() && p.to_string_lossy().contains(&format!("/{temp}/")))
            .count();
        if left == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(left, 0, "objects of {temp} left in the bucket");

    // The signed report verifies: the source side recomputed from the
    // bucket (the temporary topic's objects are gone by design).
    let (code, out, err) = verify(&report, &public, &store);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("signature: valid"), "{out}");

    // A moment that is not one gets one sentence.
    let mut args = vec!["restore", "drill", "--topic", "golden", "--at", "yesterday"];
    args.extend(store);
    let (code, _, err) = kafscale(&args);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--at: \"yesterday\" is neither RFC 3339"),
        "{err}"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}

/// Commits `offsets` ((partition, offset)) of `topic` for `group`, as an
/// admin tool does.
async fn commit(c: &Client, group: &str, topic: &str, offsets: &[(i32, i64)]) {
    let list: Vec<_> = offsets
        .iter()
        .map(|&(partition, offset)| kafscale_client::CommittedOffset {
            topic: topic.into(),
            partition,
            offset,
            leader_epoch: -1,
            metadata: Some(format!("at {offset}")),
        })
        .collect();
    c.offset_commit(group, &list).await.unwrap();
}

/// `--groups`: the restored topic gets the committed offsets matching
/// groups had at T, replayed from the offset history in the bucket: a
/// later commit, a group committing only after T and a group deleted
/// before T are not restored, an offset past the cut is set to the cut, a
/// confluent-kafka consumer of a restored group continues where the group
/// stood, and `restore verify` replays the history again (and catches an
/// edited offset).
#[test]
fn group_offsets_are_restored_as_they_stood_at_t() {
    // Offset changes are appended only when the broker stops (below): the
    // history holds them because a stopping broker appends what it holds.
    let mut b = common::start_with(&["--offset-history-interval", "1h"]);
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = format!("127.0.0.1:{}", b.port);
    let bs = bootstrap.clone();
    let t = run(move || async move {
        let c = Client::connect(ClientConfig::new(&bs)).await.unwrap();
        for r in c
            .create_topics(&[NewTopic::new("orders", 2)], Duration::from_secs(10))
            .await
        {
            r.unwrap();
        }
        let now = now_ms();
        for p in 0..2 {
            let mut batch = BatchBuilder::new(0, now - 10_000);
            for i in 0..10 {
                batch.push(Some(format!("k{i}").as_bytes()), Some(b"v"), &[]);
            }
            c.produce_raw("orders", p, batch.finish(), Acks::All)
                .await
                .unwrap();
        }
        // Two records stamped tomorrow: after any T, so partition 0 is cut
        // at 10 while a group has already read past them.
        let mut later = BatchBuilder::new(0, now + 86_400_000);
        later.push(None, Some(b"tomorrow"), &[]);
        later.push(None, Some(b"tomorrow"), &[]);
        c.produce_raw("orders", 0, later.finish(), Acks::All)
            .await
            .unwrap();
        commit(&c, "app", "orders", &[(0, 4), (1, 7)]).await;
        commit(&c, "app", "orders", &[(1, 7)]).await; // moves nothing
        commit(&c, "ahead", "orders", &[(0, 12)]).await;
        commit(&c, "gone", "orders", &[(0, 3)]).await;
        commit(&c, "other", "orders", &[(0, 5)]).await;
        glommio::timer::sleep(Duration::from_millis(30)).await;
        let t = now_ms();
        glommio::timer::sleep(Duration::from_millis(30)).await;
        commit(&c, "app", "orders", &[(0, 8)]).await;
        commit(&c, "late", "orders", &[(0, 2)]).await;
        t
    });
    // A group deleted before T: with Kafka's AdminClient (confluent-kafka).
    let deleted = Command::new("python3")
        .args([
            "-c",
            "import sys\nfrom confluent_kafka.admin import AdminClient\n\
             a = AdminClient({'bootstrap.servers': sys.argv[1]})\n\
             for f in a.delete_consumer_groups(['gone']).values(): f.result()",
            &bootstrap,
        ])
        .output()
        .unwrap();
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    // Stopped as an operator does (SIGTERM), then started again: the
    // history holds 8 records: 7 commits (the second of app moved nothing)
    // and one deletion.
    b.stop_and_restart();
    let bs = bootstrap.clone();
    let history = run(move || async move {
        let c = Client::connect(ClientConfig::new(&bs)).await.unwrap();
        common::kafka::wait_for_offset_history(&c, 8).await
    });
    assert_eq!(history, 8, "offset history records");
    let data_dir = b.data_dir().to_str().unwrap().to_owned();
    let http = format!("http://127.0.0.1:{}", b.metrics_port);
    let store = ["--data-dir", &data_dir, "--http", &http];
    let report = dir.path().join("groups.json");
    let to = kafscale_s3::format_unix_ms(t);
    let mut args = vec![
        "restore",
        "--topic",
        "orders",
        "--to",
        &to,
        "--as",
        "orders.r",
        "--groups",
        "^(app|ahead|gone|late)$",
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend(store);
    let (code, out, err) = kafscale(&args);
    assert_eq!(code, 0, "{out}{err}");
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["passed"], true, "{r:#}");
    let got: Vec<(String, u64, i64, i64, bool, i64)> = r["groups"]["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["group"].as_str().unwrap().to_owned(),
                o["partition"].as_u64().unwrap(),
                o["committed_offset"].as_i64().unwrap(),
                o["restored_offset"].as_i64().unwrap(),
                o["clamped"].as_bool().unwrap(),
                o["read_back"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("ahead".into(), 0, 12, 10, true, 10),
            ("app".into(), 0, 4, 4, false, 4),
            ("app".into(), 1, 7, 7, false, 7),
            // Deleted only after T: at T it stood.
            ("gone".into(), 0, 3, 3, false, 3),
        ],
        "{:#}",
        r["groups"]
    );
    let check = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "consumer group offsets as they stood")
        .expect("a group offsets check");
    assert_eq!(check["passed"], true, "{check:#}");
    assert!(
        r["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["use_"] == "offset history"),
        "the history objects are evidence"
    );

    // A consumer of app continues on the restored topic where app stood.
    let mut read = group_consume(&bootstrap, "orders.r", "app", 100);
    read.sort();
    let want: Vec<(i32, i64)> = (4..10)
        .map(|o| (0, o))
        .chain((7..10).map(|o| (1, o)))
        .collect();
    assert_eq!(read, want);

    // The history replays the same from the bucket; an edited offset does not.
    let (code, out, err) = kafscale(
        &[
            &["restore", "verify", report.to_str().unwrap()][..],
            &store[..],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{out}{err}");
    let mut edited = r.clone();
    edited["groups"]["offsets"][1]["committed_offset"] = json!(5);
    let tampered = dir.path().join("edited.json");
    std::fs::write(&tampered, serde_json::to_vec(&edited).unwrap()).unwrap();
    let (code, out, err) = kafscale(
        &[
            &["restore", "verify", tampered.to_str().unwrap()][..],
            &store[..],
        ]
        .concat(),
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("group offsets replayed from the history differ from the report's")
            && out.contains("app partition 0 at 4"),
        "{out}"
    );

    // Now the deletion is history too: a restore after it has no "gone".
    let report2 = dir.path().join("after.json");
    let mut args = vec![
        "restore",
        "--topic",
        "orders",
        "--to-offset",
        "0:10",
        "--as",
        "orders.r2",
        "--groups",
        "^gone$",
        "--report",
        report2.to_str().unwrap(),
    ];
    args.extend(store);
    let (code, out, err) = kafscale(&args);
    assert_eq!(code, 0, "{out}{err}");
    let r2: Value = serde_json::from_slice(&std::fs::read(&report2).unwrap()).unwrap();
    assert_eq!(r2["groups"]["offsets"], json!([]), "{:#}", r2["groups"]);

    // No history at all: one sentence, before anything is written.
    let quiet = common::start_with(&["--offset-history", "false"]);
    let data_dir = quiet.data_dir().to_str().unwrap().to_owned();
    let http = format!("http://127.0.0.1:{}", quiet.metrics_port);
    let bs = format!("127.0.0.1:{}", quiet.port);
    run(move || async move {
        let c = Client::connect(ClientConfig::new(&bs)).await.unwrap();
        for r in c
            .create_topics(&[NewTopic::new("quiet", 1)], Duration::from_secs(10))
            .await
        {
            r.unwrap();
        }
        let mut batch = BatchBuilder::new(0, now_ms() - 1000);
        batch.push(None, Some(b"v"), &[]);
        c.produce_raw("quiet", 0, batch.finish(), Acks::All)
            .await
            .unwrap();
    });
    let (code, _, err) = kafscale(&[
        "restore",
        "--topic",
        "quiet",
        "--to-offset",
        "0:1",
        "--groups",
        ".*",
        "--data-dir",
        &data_dir,
        "--http",
        &http,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--groups: there is no offset history (__kafscale_offsets)"),
        "{err}"
    );
}
