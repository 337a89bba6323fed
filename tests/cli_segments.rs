//! `kafscale segments inspect` as an operator runs it: the real binary, on a
//! file and on an object in the real S3 server.

use std::process::Command;

use bytes::Bytes;
use kafscale_codec::batch::{BatchBuilder, Compression, RecordBatch};
use kafscale_codec::kfs::SegmentWriter;
use kafscale_s3::{Credentials, ObjectStore, PutOptions, S3Client, S3Config};

fn segment() -> Bytes {
    let mut w = SegmentWriter::new(500);
    for codec in [Compression::None, Compression::Zstd] {
        let mut b = BatchBuilder::new(0, 1_778_682_180_000).compression(codec);
        for i in 0..10 {
            b.push(Some(format!("k{i}").as_bytes()), Some(b"value"), &[]);
        }
        w.append(&RecordBatch::parse(b.finish()).unwrap()).unwrap();
    }
    w.seal(1_778_682_181_000).unwrap().segment.to_bytes()
}

fn inspect(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kafscale"))
        .args(["segments", "inspect"])
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn inspects_a_good_segment_as_table_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segment-00000000000000000500.kfs");
    std::fs::write(&path, segment()).unwrap();
    let p = path.to_str().unwrap();

    let (code, out, err) = inspect(&[p], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("base offset 500  messages 20"), "{out}");
    assert!(out.contains("zstd"), "{out}");
    assert!(out.contains("verdict  ok: 2 batches"), "{out}");

    let (code, out, _) = inspect(&[p, "--json"], &[]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["batches"][1]["base_offset"], 510);
    assert_eq!(v["batches"][1]["codec"], "zstd");
    assert_eq!(v["footer_last_offset"], 519);
    assert!(v["error"].is_null());
}

#[test]
fn corrupt_and_truncated_segments_exit_non_zero_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good = segment();

    let mut flipped = good.to_vec();
    flipped[40] ^= 0x01;
    let path = dir.path().join("flipped.kfs");
    std::fs::write(&path, &flipped).unwrap();
    let (code, out, err) = inspect(&[path.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("is corrupt") && err.contains("CRC32C"),
        "{err}"
    );
    assert!(out.contains("verdict  CORRUPT"), "{out}");

    let path = dir.path().join("truncated.kfs");
    std::fs::write(&path, &good[..good.len() - 7]).unwrap();
    let (code, _, err) = inspect(&[path.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("footer magic"), "{err}");

    let path = dir.path().join("tiny.kfs");
    std::fs::write(&path, b"KAFS").unwrap();
    let (code, _, err) = inspect(&[path.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("shorter than header"), "{err}");

    let (code, _, err) = inspect(&["/nonexistent/x.kfs"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read /nonexistent/x.kfs"), "{err}");
}

#[test]
fn inspects_a_segment_in_s3() {
    let endpoint = match std::env::var("KAFSCALE_TEST_S3_ENDPOINT") {
        Ok(e) => e,
        Err(_) if std::env::var_os("KAFSCALE_TEST_REQUIRE_SERVERS").is_some() => {
            panic!("no S3 endpoint")
        }
        Err(_) => return eprintln!("skipped: no S3 server (run scripts/test)"),
    };
    let key = std::env::var("KAFSCALE_TEST_S3_ACCESS_KEY").unwrap();
    let secret = std::env::var("KAFSCALE_TEST_S3_SECRET_KEY").unwrap();
    let bucket = format!("cli-{}", rand::random::<u32>());
    let cfg = S3Config::new(
        &endpoint,
        bucket.clone(),
        Credentials::new(key.clone(), secret.clone(), None),
    )
    .unwrap();
    kafscale_shard::block_on(move || async move {
        let s3 = S3Client::new(cfg);
        s3.create_bucket().await.unwrap();
        s3.put(
            "default/orders/0/segment-00000000000000000500.kfs",
            segment(),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    })
    .unwrap();
    let url = format!("s3://{bucket}/default/orders/0/segment-00000000000000000500.kfs");
    let env = [
        ("KAFSCALE_S3_ENDPOINT", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
    ];
    let (code, out, err) = inspect(&[&url], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("verdict  ok: 2 batches"), "{out}");

    let missing = format!("s3://{bucket}/nope.kfs");
    let (code, _, err) = inspect(&[&missing], &env);
    assert_eq!(code, 2);
    assert!(err.contains("does not exist"), "{err}");
}
