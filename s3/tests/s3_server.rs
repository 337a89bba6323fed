//! The S3 client against the real S3 server that `scripts/test` starts
//! (MinIO or s3s-fs, which both check SigV4).

mod common;

use bytes::Bytes;
use common::{random_bytes, with_bucket};
use kafscale_s3::{ObjectStore, PutOptions, RetryPolicy, S3Client, S3Config, StoreError};

const MIB: usize = 1024 * 1024;

#[test]
fn multipart_upload_of_three_8_mib_parts_and_a_tail() {
    with_bucket("multipart", |s3| async move {
        let data = Bytes::from(random_bytes(3 * 8 * MIB + 123_457));
        let opts = PutOptions::default().with_meta("base-offset", 42);
        let mut up = s3
            .create_multipart("ns/t/0/segment-00000000000000000042.kfs", &opts)
            .await
            .unwrap();
        let mut max_in_flight = 0;
        for part in 0..4 {
            let start = part * 8 * MIB;
            let end = (start + 8 * MIB).min(data.len());
            // Each part goes as two chunks, as a segment writer would hand them over.
            let mid = start + (end - start) / 2;
            up.push_part(vec![data.slice(start..mid), data.slice(mid..end)])
                .await
                .unwrap();
            max_in_flight = max_in_flight.max(up.parts_in_flight());
        }
        assert!(
            max_in_flight <= s3.config().max_parts_in_flight,
            "in flight {max_in_flight}"
        );
        let etag = up.complete().await.unwrap().etag;
        assert!(
            etag.contains('-') || !etag.is_empty(),
            "multipart etag {etag:?}"
        );

        let head = s3
            .head("ns/t/0/segment-00000000000000000042.kfs")
            .await
            .unwrap();
        assert_eq!(head.size, data.len() as u64);
        assert_eq!(
            head.metadata.get("base-offset").map(String::as_str),
            Some("42")
        );
        let got = s3
            .get("ns/t/0/segment-00000000000000000042.kfs")
            .await
            .unwrap();
        assert!(
            got.body == data,
            "multipart object differs from what was sent"
        );
    });
}

#[test]
fn put_switches_to_multipart_above_the_threshold() {
    with_bucket("put-large", |s3| async move {
        let data = Bytes::from(random_bytes(s3.config().multipart_threshold + 3 * MIB));
        let meta = s3
            .put("big", data.clone(), &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(meta.size, data.len() as u64);
        assert!(
            meta.etag.contains('-'),
            "expected a multipart ETag, got {:?}",
            meta.etag
        );
        assert!(s3.get("big").await.unwrap().body == data);

        // A multipart write that requires the key free is refused at
        // CompleteMultipartUpload, and the first object stays.
        let other = Bytes::from(random_bytes(s3.config().multipart_threshold + MIB));
        let err = s3
            .put("big", other, &PutOptions::default().if_absent())
            .await
            .unwrap_err();
        assert!(err.is_exists(), "{err}");
        assert!(s3.get("big").await.unwrap().body == data);
    });
}

#[test]
fn ranged_get_returns_exactly_the_range() {
    with_bucket("range", |s3| async move {
        let data = Bytes::from(random_bytes(100_000));
        s3.put("obj", data.clone(), &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(
            s3.get_range("obj", 32..1032).await.unwrap(),
            data.slice(32..1032)
        );
        assert_eq!(
            s3.get_range("obj", 99_990..100_000).await.unwrap(),
            data.slice(99_990..)
        );
        assert_eq!(s3.get_range("obj", 5..5).await.unwrap().len(), 0);
        let err = s3.get_range("missing", 0..10).await.unwrap_err();
        assert!(err.is_not_found(), "{err}");
    });
}

#[test]
fn listing_more_than_1000_keys_follows_continuation_tokens() {
    with_bucket("list", |s3| async move {
        let n = 1_100;
        let mut tasks = Vec::new();
        for i in 0..n {
            let s3 = s3.clone();
            tasks.push(glommio::spawn_local(async move {
                let key = format!("ns/topic/0/segment-{i:020}.kfs");
                s3.put(&key, Bytes::from(vec![1u8; 10]), &PutOptions::default())
                    .await
                    .map(|_| ())
            }));
            if tasks.len() == 32 {
                for t in tasks.drain(..) {
                    t.await.unwrap();
                }
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        s3.put(
            "other/key",
            Bytes::from_static(b"x"),
            &PutOptions::default(),
        )
        .await
        .unwrap();
        let listed = s3.list("ns/topic/0/").await.unwrap();
        assert_eq!(listed.len(), n);
        assert!(
            listed.windows(2).all(|w| w[0].key < w[1].key),
            "not in order"
        );
        assert_eq!(
            listed[1099].key,
            format!("ns/topic/0/segment-{:020}.kfs", 1099)
        );
        assert!(listed.iter().all(|e| e.size == 10));

        let doomed: Vec<String> = listed.iter().take(1_050).map(|e| e.key.clone()).collect();
        s3.delete_many(&doomed).await.unwrap();
        assert_eq!(s3.list("ns/topic/0/").await.unwrap().len(), 50);
        assert!(s3.head(&doomed[0]).await.unwrap_err().is_not_found());
    });
}

#[test]
fn user_metadata_round_trips() {
    with_bucket("meta", |s3| async move {
        let opts = PutOptions::default()
            .with_meta("commit-time-ms", 1_778_682_180_000i64)
            .with_meta("Min-Timestamp", -1)
            .with_meta("max-timestamp", 1_778_682_179_999i64);
        s3.put("seg", Bytes::from_static(b"data"), &opts)
            .await
            .unwrap();
        let head = s3.head("seg").await.unwrap();
        assert_eq!(head.size, 4);
        assert_eq!(
            head.metadata.get("commit-time-ms").map(String::as_str),
            Some("1778682180000")
        );
        assert_eq!(
            head.metadata.get("min-timestamp").map(String::as_str),
            Some("-1")
        );
        let got = s3.get("seg").await.unwrap();
        assert_eq!(got.meta.metadata, head.metadata);
        assert_eq!(&got.body[..], b"data");
    });
}

#[test]
fn keys_with_special_characters_survive_signing() {
    with_bucket("keys", |s3| async move {
        let key = "ns/topic with space/0/a+b=c&d~e.kfs";
        s3.put(key, Bytes::from_static(b"x"), &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(&s3.get(key).await.unwrap().body[..], b"x");
        let listed = s3.list("ns/topic with space/").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, key);
    });
}

#[test]
fn wrong_credentials_give_a_clear_error_without_the_secret() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let secret = "definitely-wrong-secret-value";
    let err = kafscale_shard::block_on(move || async move {
        let good = S3Client::new(common::config(&endpoint, "creds"));
        good.create_bucket().await.unwrap();
        let mut cfg = good.config().clone();
        cfg.credentials =
            kafscale_s3::Credentials::new(cfg.credentials.access_key_id.clone(), secret, None);
        S3Client::new(cfg)
            .put("k", Bytes::from_static(b"x"), &PutOptions::default())
            .await
            .unwrap_err()
    })
    .unwrap();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Credentials { .. }), "{err:?}");
    assert!(text.contains("rejected the credentials"), "{text}");
    assert!(
        !text.contains(secret) && !format!("{err:?}").contains(secret),
        "secret leaked: {text}"
    );
}

#[test]
fn a_missing_bucket_is_named() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let err = kafscale_shard::block_on(move || async move {
        let s3 = S3Client::new(common::config(&endpoint, "nobucket"));
        s3.check_bucket().await.unwrap_err()
    })
    .unwrap();
    assert!(matches!(err, StoreError::NoSuchBucket { .. }), "{err:?}");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn an_unreachable_endpoint_is_retried_then_reported() {
    common::endpoint();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = kafscale_shard::block_on(move || async move {
        let mut cfg = S3Config::new(
            &format!("http://127.0.0.1:{port}"),
            "b",
            kafscale_s3::Credentials::new("a", "b", None),
        )
        .unwrap();
        cfg.retry = RetryPolicy {
            max_attempts: 3,
            base_delay: std::time::Duration::from_millis(5),
            ..cfg.retry
        };
        let started = std::time::Instant::now();
        let err = S3Client::new(cfg).get("k").await.unwrap_err();
        (err, started.elapsed())
    })
    .unwrap();
    assert!(matches!(err.0, StoreError::Connect { .. }), "{:?}", err.0);
    assert!(err.0.is_retryable());
    assert!(err.0.to_string().contains("cannot reach S3"), "{}", err.0);
}

#[test]
fn checksummed_puts_are_accepted() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    kafscale_shard::block_on(move || async move {
        let mut cfg = common::config(&endpoint, "crc");
        cfg.checksums = true;
        let s3 = S3Client::new(cfg);
        s3.create_bucket().await.unwrap();
        let data = Bytes::from(random_bytes(70_000));
        s3.put("c", data.clone(), &PutOptions::default())
            .await
            .unwrap();
        assert!(s3.get("c").await.unwrap().body == data);
    })
    .unwrap();
}

#[test]
fn a_copy_copies_and_a_missing_source_is_named() {
    with_bucket("copy", |s3| async move {
        let data = Bytes::from(random_bytes(1000));
        s3.put("from", data.clone(), &PutOptions::default())
            .await
            .unwrap();
        let meta = s3.copy("from", "to").await.unwrap();
        assert_eq!(meta.size, 1000);
        assert!(s3.get("to").await.unwrap().body == data);

        let err = s3.copy("absent", "elsewhere").await.unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("/absent") && !text.contains("elsewhere"),
            "{text}"
        );
    });
}
