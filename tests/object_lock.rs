//! Segments under S3 object lock, against moto (an S3 server that enforces
//! locks: versioned objects, refused deletes of locked versions) and etcd:
//! a locked segment cannot be deleted or replaced, and what is written
//! under its key afterwards changes nothing the broker serves or a restore
//! copies; a bucket without object lock stops the broker with one sentence.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

const ACCESS: &str = "kafscale-test";
const SECRET: &str = "kafscale-test-secret";
const CREDS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", ACCESS),
    ("AWS_SECRET_ACCESS_KEY", SECRET),
];

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// etcd's and moto's endpoints (scripts/servers.sh starts both).
fn servers() -> Option<(String, String)> {
    let var = |n: &str| std::env::var(n).ok();
    match (
        var("KAFSCALE_TEST_ETCD_ENDPOINTS"),
        var("KAFSCALE_TEST_MOTO_ENDPOINT"),
    ) {
        (Some(etcd), Some(moto)) => Some((etcd, moto)),
        _ => {
            assert!(
                std::env::var_os("KAFSCALE_TEST_REQUIRE_SERVERS").is_none(),
                "KAFSCALE_TEST_ETCD_ENDPOINTS and KAFSCALE_TEST_MOTO_ENDPOINT are not set but KAFSCALE_TEST_REQUIRE_SERVERS is"
            );
            eprintln!("skipped: no etcd and moto (scripts/test starts them)");
            None
        }
    }
}

/// tests/clients/s3_lock.py: what someone with the bucket's credentials
/// does behind the broker's back, through boto3.
fn s3_lock(moto: &str, args: &[&str]) -> Value {
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/s3_lock.py"))
        .arg(moto)
        .args(args)
        .envs(CREDS)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "s3_lock.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn kafscale(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kafscale"))
        .args(args)
        .envs(CREDS)
        .output()
        .expect("kafscale");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// CreateTopics with topic configs (kafscale-client); the broker's error.
fn create_topic(port: u16, name: &str, configs: &[(&str, &str)]) -> Result<(), String> {
    let mut topic = kafscale_client::NewTopic::new(name, 1);
    for (k, v) in configs {
        topic.configs.insert((*k).to_owned(), (*v).to_owned());
    }
    common::kafka::run(move || async move {
        let c = kafscale_client::Client::connect(kafscale_client::ClientConfig::new(format!(
            "127.0.0.1:{port}"
        )))
        .await
        .map_err(|e| e.to_string())?;
        c.create_topics(&[topic], std::time::Duration::from_secs(30))
            .await
            .pop()
            .unwrap()
            .map_err(|e| e.to_string())
    })
}

/// A topic's own lock retention needs a broker that locks: elsewhere the
/// setting would promise what nothing does, so it is refused.
#[test]
fn a_topic_lock_retention_needs_a_locking_broker() {
    let b = common::start();
    let refused = create_topic(
        b.port,
        "unlockable",
        &[("kafscale.object.lock.retention.ms", "86400000")],
    );
    let why = refused.expect_err("an unlocked broker took a lock retention");
    assert!(
        why.contains("does not lock what it writes (start it with --s3-object-lock)"),
        "{why}"
    );
}

fn kcat_produce(port: u16, topic: &str, lines: &[String]) {
    use std::io::Write;
    let mut child = Command::new("kcat")
        .args(["-b", &format!("127.0.0.1:{port}"), "-P", "-t", topic])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat (scripts/setup installs it)");
    let mut input = child.stdin.take().unwrap();
    for l in lines {
        writeln!(input, "{l}").unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What kcat reads from the start to the end of `topic`; a broker that
/// cannot serve it (kcat retries for ever) gives what came in 20 s.
fn kcat_consume(port: u16, topic: &str) -> Vec<String> {
    let out = Command::new("timeout")
        .args([
            "20",
            "kcat",
            "-b",
            &format!("127.0.0.1:{port}"),
            "-C",
            "-t",
            topic,
            "-e",
            "-q",
        ])
        .output()
        .expect("kcat");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn suffix() -> String {
    format!("{}-{}", std::process::id(), now_ms() % 1_000_000)
}

#[test]
fn a_bucket_without_object_lock_stops_the_broker_with_one_sentence() {
    let Some((_, moto)) = servers() else {
        return;
    };
    let bucket = format!("plain-{}", suffix());
    assert_eq!(s3_lock(&moto, &["create-plain", &bucket])["ok"], true);
    let dir = tempfile::tempdir().unwrap();
    let (listen, metrics) = (
        format!("127.0.0.1:{}", common::free_port()),
        format!("127.0.0.1:{}", common::free_port()),
    );
    let broker = |extra: &[&str]| {
        let mut args = vec![
            "broker",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            &listen,
            "--metrics-listen",
            &metrics,
            "--s3-endpoint",
            &moto,
            "--s3-bucket",
            &bucket,
        ];
        args.extend(extra);
        kafscale(&args)
    };
    let (code, _, err) = broker(&["--s3-object-lock", "compliance", "--s3-retention", "1d"]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("bucket {bucket} has no object lock")),
        "{err}"
    );
    // A lock needs its retention, and a retention is a period.
    let (code, _, err) = broker(&["--s3-object-lock", "compliance"]);
    assert_ne!(code, 0);
    assert!(err.contains("--s3-retention"), "{err}");
    let (code, _, err) = broker(&["--s3-object-lock", "governance", "--s3-retention", "30x"]);
    assert_ne!(code, 0);
    assert!(err.contains("end it in d, h, m or s"), "{err}");
}

#[test]
fn locked_segments_cannot_be_deleted_or_replaced_and_are_still_served_and_restored() {
    let Some((etcd, moto)) = servers() else {
        return;
    };
    let s = suffix();
    let (bucket, ns) = (format!("locked-{s}"), format!("lock-{s}"));
    let store = [
        "--s3-endpoint",
        moto.as_str(),
        "--s3-bucket",
        bucket.as_str(),
        "--s3-namespace",
        ns.as_str(),
        "--etcd-endpoints",
        etcd.as_str(),
    ];
    let mut flags = store.to_vec();
    flags.extend([
        "--s3-create-bucket",
        "--s3-object-lock",
        "compliance",
        "--s3-retention",
        "1d",
        "--lease-ttl-secs",
        "3",
    ]);
    let mut b = common::start_with_env(&flags, &CREDS);
    // Two produces, two segments.
    let first: Vec<String> = (0..5).map(|i| format!("vault-{i}")).collect();
    let second: Vec<String> = (5..9).map(|i| format!("vault-{i}")).collect();
    kcat_produce(b.port, "vault", &first);
    kcat_produce(b.port, "vault", &second);
    let expected: Vec<String> = first.iter().chain(&second).cloned().collect();
    assert_eq!(kcat_consume(b.port, "vault"), expected);

    // Every object is locked in compliance mode for about a day.
    let prefix = format!("{ns}/vault/");
    let written = s3_lock(&moto, &["versions", &bucket, &prefix]);
    let written = written.as_array().unwrap().clone();
    let kfs: Vec<&Value> = written
        .iter()
        .filter(|v| v["key"].as_str().unwrap().ends_with(".kfs"))
        .collect();
    assert!(kfs.len() >= 2, "{written:?}");
    assert_eq!(written.len(), kfs.len() * 2, "a .kfs and an .index each");
    let tomorrow = kafscale_s3::format_unix_ms(now_ms() + 23 * 3_600_000);
    for v in &written {
        assert_eq!(v["mode"], "COMPLIANCE", "{v}");
        let until = v["until"].as_str().unwrap();
        // ISO 8601 in UTC sorts as time; compare the date and hour.
        assert!(until[..13] >= tomorrow[..13], "{until} is not ~1 day away");
    }

    // A topic can keep its segments locked longer than the broker's day.
    let three_days = (3 * 24 * 3_600_000u64).to_string();
    let created = create_topic(
        b.port,
        "vault-3d",
        &[("kafscale.object.lock.retention.ms", three_days.as_str())],
    );
    assert_eq!(created, Ok(()));
    // Not shorter than the broker's: a client cannot weaken the operator's lock.
    let shorter = create_topic(
        b.port,
        "vault-1h",
        &[("kafscale.object.lock.retention.ms", "3600000")],
    );
    assert!(
        shorter
            .as_ref()
            .is_err_and(|e| e.contains("a topic can only be locked longer")),
        "{shorter:?}"
    );
    kcat_produce(b.port, "vault-3d", &first);
    let long = s3_lock(&moto, &["versions", &bucket, &format!("{ns}/vault-3d/")]);
    let long = long.as_array().unwrap();
    assert!(long.len() >= 2, "{long:?}");
    let in_three_days = kafscale_s3::format_unix_ms(now_ms() + 71 * 3_600_000);
    for v in long {
        assert_eq!(v["mode"], "COMPLIANCE", "{v}");
        let until = v["until"].as_str().unwrap();
        assert!(
            until[..13] >= in_three_days[..13],
            "{until} is not ~3 days away"
        );
    }

    // `segments inspect` shows the lock of what it read.
    let key = kfs[0]["key"].as_str().unwrap();
    let (code, out, err) = kafscale(&[
        "segments",
        "inspect",
        &format!("s3://{bucket}/{key}"),
        "--s3-endpoint",
        &moto,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("s3 lock  COMPLIANCE until"), "{out}");

    // Nobody can delete a locked version. A write or a delete under the key
    // only adds a version (garbage) or a delete marker above it.
    for v in &kfs {
        let (key, version) = (v["key"].as_str().unwrap(), v["version"].as_str().unwrap());
        let refused = s3_lock(&moto, &["delete-version", &bucket, key, version]);
        assert_eq!(refused["ok"], false, "deleted a locked version of {key}");
        assert_eq!(refused["code"], "AccessDenied");
        assert_eq!(s3_lock(&moto, &["overwrite", &bucket, key])["ok"], true);
        let index = key.replace(".kfs", ".index");
        assert_eq!(
            s3_lock(&moto, &["delete", &bucket, &index])["delete_marker"],
            true
        );
    }
    let after = s3_lock(&moto, &["versions", &bucket, &prefix]);
    for v in &written {
        assert!(
            after
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["version"] == v["version"]),
            "version {} of {} is gone",
            v["version"],
            v["key"]
        );
    }

    // A broker with a cold cache serves the committed versions.
    // (It takes over once its previous run's lease has ended.)
    b.restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut got = kcat_consume(b.port, "vault");
    while got.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(300));
        got = kcat_consume(b.port, "vault");
    }
    assert_eq!(got, expected, "{}", b.log());

    // A restore reads and copies the committed versions too, and says so.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let to = kafscale_s3::format_unix_ms(now_ms());
    let bootstrap = format!("127.0.0.1:{}", b.port);
    let mut args = vec![
        "restore",
        "--topic",
        "vault",
        "--to",
        &to,
        "--as",
        "vault.r",
        "--bootstrap",
        &bootstrap,
        "--report",
        report.to_str().unwrap(),
        // What the restore writes is locked by its own flags (two days
        // here, so it is not the broker's one day carried over).
        "--s3-object-lock",
        "compliance",
        "--s3-retention",
        "2d",
    ];
    args.extend(store);
    let (code, out, err) = kafscale(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("every check passed"), "{out}");
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let objects = r["objects"].as_array().unwrap();
    for v in &kfs {
        let o = objects
            .iter()
            .find(|o| o["key"] == v["key"])
            .unwrap_or_else(|| panic!("{} not in the report: {r:#}", v["key"]));
        assert_eq!(o["lock_mode"], "COMPLIANCE", "{o}");
        assert_eq!(o["version_id"], v["version"], "{o}");
    }
    assert_eq!(kcat_consume(b.port, "vault.r"), expected);
    // Its report verifies against the versioned bucket: every object's
    // version (the .index's too) is the source's, found by restore verify.
    let mut args = vec!["restore", "verify", report.to_str().unwrap()];
    args.extend(store);
    let (code, out, err) = kafscale(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("every digest recomputed from the bucket matches"),
        "{out}"
    );

    // DeleteTopics takes a locked topic out of the metadata only, and says
    // so: its objects, versions and all, stay restorable (not even a delete
    // marker hides them from a restore that lists the bucket).
    let restored = format!("{ns}/vault.r/");
    let before = s3_lock(&moto, &["versions", &bucket, &restored]);
    assert!(!before.as_array().unwrap().is_empty(), "{before}");
    let in_two_days = kafscale_s3::format_unix_ms(now_ms() + 47 * 3_600_000);
    for v in before.as_array().unwrap() {
        assert_eq!(
            v["mode"], "COMPLIANCE",
            "a restored object is not locked: {v}"
        );
        let until = v["until"].as_str().unwrap();
        assert!(
            until[..13] >= in_two_days[..13],
            "{until} is not ~2 days away"
        );
    }
    let deleted = common::kafka::run(move || async move {
        let c = kafscale_client::Client::connect(kafscale_client::ClientConfig::new(bootstrap))
            .await
            .map_err(|e| e.to_string())?;
        c.delete_topics(&["vault.r"], std::time::Duration::from_secs(30))
            .await
            .pop()
            .unwrap()
            .map_err(|e| e.to_string())
    });
    let note = deleted.unwrap().expect("a message with the answer");
    assert!(
        note.contains("stay in the bucket under COMPLIANCE object lock"),
        "{note}"
    );
    assert!(kcat_consume(b.port, "vault.r").is_empty());
    // The objects would have been deleted in the background by now.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(s3_lock(&moto, &["versions", &bucket, &restored]), before);
    // And they are still restorable: from the bucket alone (the deleted
    // topic is in no metadata), as a new topic with the same records.
    let to = kafscale_s3::format_unix_ms(now_ms());
    let bootstrap = format!("127.0.0.1:{}", b.port);
    let mut args = vec![
        "restore",
        "--topic",
        "vault.r",
        "--to",
        &to,
        "--from-bucket",
        "--as",
        "vault.back",
        "--bootstrap",
        &bootstrap,
    ];
    args.extend(store);
    let (code, out, err) = kafscale(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("every check passed"), "{out}");
    assert_eq!(kcat_consume(b.port, "vault.back"), expected);
}

/// `--s3-object-lock governance`: every object is locked in governance
/// mode, so a delete of a locked version is refused unless the caller
/// bypasses governance (an S3 permission an operator may hold, unlike
/// compliance, which nobody can lift).
#[test]
fn governance_locked_segments_are_deleted_only_with_the_bypass() {
    let Some((etcd, moto)) = servers() else {
        return;
    };
    let s = suffix();
    let (bucket, ns) = (format!("gov-{s}"), format!("gov-{s}"));
    let b = common::start_with_env(
        &[
            "--s3-endpoint",
            moto.as_str(),
            "--s3-bucket",
            bucket.as_str(),
            "--s3-namespace",
            ns.as_str(),
            "--etcd-endpoints",
            etcd.as_str(),
            "--s3-create-bucket",
            "--s3-object-lock",
            "governance",
            "--s3-retention",
            "1d",
        ],
        &CREDS,
    );
    let records: Vec<String> = (0..3).map(|i| format!("gov-{i}")).collect();
    kcat_produce(b.port, "ledger", &records);
    assert_eq!(kcat_consume(b.port, "ledger"), records);
    let written = s3_lock(&moto, &["versions", &bucket, &format!("{ns}/ledger/")]);
    let written = written.as_array().unwrap().clone();
    assert!(written.len() >= 2, "{written:?}");
    for v in &written {
        assert_eq!(v["mode"], "GOVERNANCE", "{v}");
    }
    let kfs = written
        .iter()
        .find(|v| v["key"].as_str().unwrap().ends_with(".kfs"))
        .unwrap();
    let (key, version) = (
        kfs["key"].as_str().unwrap(),
        kfs["version"].as_str().unwrap(),
    );
    let refused = s3_lock(&moto, &["delete-version", &bucket, key, version]);
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(refused["code"], "AccessDenied", "{refused}");
    let bypassed = s3_lock(&moto, &["delete-version-bypass", &bucket, key, version]);
    assert_eq!(bypassed["ok"], true, "{bypassed}");
}
