//! One scenario of the `ObjectStore` contract, run against both stores: the
//! local directory of the embedded default and the real S3 server.

mod common;

use bytes::Bytes;
use kafscale_s3::{LocalStore, ObjectStore, PutOptions, StoreError};

async fn contract<S: ObjectStore>(store: &S) {
    let body = Bytes::from(common::random_bytes(50_000));
    let opts = PutOptions::default().with_meta("last-offset", 99);
    let meta = store
        .put(
            "ns/orders/3/segment-00000000000000000000.kfs",
            body.clone(),
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(meta.size, 50_000);
    store
        .put(
            "ns/orders/3/segment-00000000000000000000.index",
            Bytes::from_static(b"idx"),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    store
        .put(
            "ns/orders/10/segment-00000000000000000000.kfs",
            Bytes::from_static(b"z"),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    store
        .put(
            "ns/ordersX/0/a",
            Bytes::from_static(b"z"),
            &PutOptions::default(),
        )
        .await
        .unwrap();

    let got = store
        .get("ns/orders/3/segment-00000000000000000000.kfs")
        .await
        .unwrap();
    assert!(got.body == body);
    assert_eq!(
        got.meta.metadata.get("last-offset").map(String::as_str),
        Some("99")
    );
    let head = store
        .head("ns/orders/3/segment-00000000000000000000.kfs")
        .await
        .unwrap();
    assert_eq!(
        (head.size, head.metadata.get("last-offset").cloned()),
        (50_000, Some("99".into()))
    );
    let range = store
        .get_range("ns/orders/3/segment-00000000000000000000.kfs", 32..49_984)
        .await
        .unwrap();
    assert!(range == body.slice(32..49_984));

    let keys: Vec<String> = store
        .list("ns/orders/")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(
        keys,
        vec![
            "ns/orders/10/segment-00000000000000000000.kfs",
            "ns/orders/3/segment-00000000000000000000.index",
            "ns/orders/3/segment-00000000000000000000.kfs",
        ]
    );
    assert_eq!(store.list("ns/orders/3/segment-").await.unwrap().len(), 2);
    assert!(store.list("nothing/").await.unwrap().is_empty());

    // Overwrite replaces whole.
    store
        .put(
            "ns/ordersX/0/a",
            Bytes::from_static(b"second"),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        &store.get("ns/ordersX/0/a").await.unwrap().body[..],
        b"second"
    );

    // A write that requires the key to be free refuses to replace it, and
    // leaves the object as it was.
    let err = store
        .put(
            "ns/ordersX/0/a",
            Bytes::from_static(b"third"),
            &PutOptions::default().if_absent(),
        )
        .await
        .unwrap_err();
    assert!(err.is_exists(), "{err}");
    assert_eq!(
        &store.get("ns/ordersX/0/a").await.unwrap().body[..],
        b"second"
    );
    store
        .put(
            "ns/ordersX/0/b",
            Bytes::from_static(b"new"),
            &PutOptions::default().if_absent(),
        )
        .await
        .unwrap();
    assert_eq!(&store.get("ns/ordersX/0/b").await.unwrap().body[..], b"new");

    store
        .delete_many(&[
            "ns/orders/10/segment-00000000000000000000.kfs".into(),
            "never/existed".into(),
        ])
        .await
        .unwrap();
    let err = store
        .get("ns/orders/10/segment-00000000000000000000.kfs")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(
        store
            .head("ns/orders/10/segment-00000000000000000000.kfs")
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[test]
fn local_store_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    kafscale_shard::block_on(move || async move {
        let store = LocalStore::open(&root).unwrap();
        contract(&store).await;
        // Keys that would escape the directory are refused.
        for bad in ["../x", "/abs", "a//b", "a/./b", ""] {
            let err = store
                .put(bad, Bytes::new(), &PutOptions::default())
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::BadKey { .. }), "{bad}: {err}");
        }
        // Reopening finds everything (and cleans temp leftovers).
        std::fs::write(root.join("tmp/leftover"), b"partial").unwrap();
        let again = LocalStore::open(&root).unwrap();
        assert_eq!(again.list("ns/").await.unwrap().len(), 4);
        assert!(
            std::fs::read_dir(root.join("tmp"))
                .unwrap()
                .next()
                .is_none()
        );
    })
    .unwrap();
}

#[test]
fn s3_store_meets_the_contract() {
    common::with_bucket("contract", |s3| async move { contract(&s3).await });
}

#[test]
fn two_local_stores_on_one_directory_never_mix_objects() {
    // Each shard opens its own LocalStore on the same directory.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let handles: Vec<_> = (0..2u8)
        .map(|shard| {
            let root = root.clone();
            std::thread::spawn(move || {
                kafscale_shard::block_on(move || async move {
                    let store = LocalStore::open(&root).unwrap();
                    for i in 0..200u32 {
                        let key = format!("s{shard}/obj-{i}");
                        let body = Bytes::from(vec![shard; 1000 + i as usize]);
                        store.put(&key, body, &PutOptions::default()).await.unwrap();
                    }
                })
                .unwrap()
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    kafscale_shard::block_on(move || async move {
        let store = LocalStore::open(&root).unwrap();
        for shard in 0..2u8 {
            for i in 0..200u32 {
                let body = store.get(&format!("s{shard}/obj-{i}")).await.unwrap().body;
                assert_eq!(body.len(), 1000 + i as usize);
                assert!(
                    body.iter().all(|&b| b == shard),
                    "object s{shard}/obj-{i} holds another's bytes"
                );
            }
        }
    })
    .unwrap();
}
