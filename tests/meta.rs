//! The metadata store, one scenario run against the embedded backend and
//! against the real etcd that `scripts/test` starts.

use kafscale::meta::embedded::FileKv;
use kafscale::meta::etcd::EtcdKv;
use kafscale::meta::{
    BrokerInfo, MetaClient, MetaError, MetaStore, PartitionState, SegmentCommit, SegmentRecord,
};

fn etcd_endpoints() -> Option<Vec<String>> {
    match std::env::var("KAFSCALE_TEST_ETCD_ENDPOINTS") {
        Ok(e) => Some(e.split(',').map(str::to_owned).collect()),
        Err(_) if std::env::var_os("KAFSCALE_TEST_REQUIRE_SERVERS").is_some() => {
            panic!("KAFSCALE_TEST_ETCD_ENDPOINTS is not set but KAFSCALE_TEST_REQUIRE_SERVERS is")
        }
        Err(_) => {
            eprintln!("skipped: no etcd (run scripts/test)");
            None
        }
    }
}

fn unique_ns(name: &str) -> String {
    format!("{name}-{}", rand::random::<u32>())
}

fn seg(base: i64, last: i64) -> SegmentRecord {
    SegmentRecord {
        base_offset: base,
        last_offset: last,
        message_count: (last - base + 1) as i32,
        size: 1000,
        created_ms: 1,
        min_timestamp: 10,
        max_timestamp: 20,
        aborted: Vec::new(),
        open_txns: Vec::new(),
        versions: None,
    }
}

fn commit(
    topic: &str,
    partition: u32,
    expected: PartitionState,
    base: i64,
    last: i64,
) -> SegmentCommit {
    SegmentCommit {
        topic: topic.into(),
        partition,
        expected,
        segment: seg(base, last),
        log_start: None,
    }
}

fn scenario(store: &mut MetaStore) {
    let t = store.create_topic("orders", 3, Default::default()).unwrap();
    assert_eq!(t.partitions, 3);
    assert_eq!(t.id.len(), 32);
    assert!(matches!(
        store.create_topic("orders", 5, Default::default()),
        Err(MetaError::TopicExists { .. })
    ));
    store
        .create_topic("payments", 1, Default::default())
        .unwrap();
    let names: Vec<_> = store
        .topics()
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["orders", "payments"]);
    assert_eq!(
        store.partition_state("orders", 2).unwrap(),
        PartitionState::NEW
    );
    assert!(matches!(
        store.partition_state("orders", 3),
        Err(MetaError::UnknownPartition { partition: 3, .. })
    ));
    assert!(matches!(
        store.partition_state("nope", 0),
        Err(MetaError::UnknownTopic { .. })
    ));

    // Two partitions advance in one transaction.
    let s = store
        .commit(&[
            commit("orders", 0, PartitionState::NEW, 0, 99),
            commit("orders", 1, PartitionState::NEW, 0, 9),
        ])
        .unwrap();
    assert_eq!((s[0].next_offset, s[1].next_offset), (100, 10));
    assert_eq!(store.partition_state("orders", 0).unwrap().next_offset, 100);

    // A stale writer (still believes partition 0 is at 0) is refused, and its
    // good partner commit in the same transaction is not applied either.
    let stale = store.commit(&[
        commit("orders", 2, PartitionState::NEW, 0, 4),
        commit("orders", 0, PartitionState::NEW, 0, 49),
    ]);
    match stale {
        Err(MetaError::Conflict {
            topic,
            partition,
            expected,
            actual,
        }) => {
            assert_eq!(
                (topic.as_str(), partition, expected, actual),
                ("orders", 0, 0, 100)
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        store.partition_state("orders", 2).unwrap().next_offset,
        0,
        "partner commit leaked"
    );
    assert_eq!(store.segments("orders", 2).unwrap(), vec![]);

    // A writer with a different epoch is refused too (fencing).
    let fenced = PartitionState { epoch: 7, ..s[0] };
    assert!(matches!(
        store.commit(&[commit("orders", 0, fenced, 100, 120)]),
        Err(MetaError::Fenced {
            epoch: 7,
            actual: 0,
            ..
        })
    ));

    // A segment that starts before the partition's next offset is refused;
    // one that starts beyond it (an offset gap, which a mirrored partition
    // keeps from its source) is taken.
    assert!(matches!(
        store.commit(&[commit("orders", 0, s[0], 99, 120)]),
        Err(MetaError::Conflict { .. })
    ));

    let after_gap = store
        .commit(&[commit("orders", 0, s[0], 110, 149)])
        .unwrap();
    assert_eq!(after_gap[0].next_offset, 150);
    let segs = store.segments("orders", 0).unwrap();
    assert_eq!(
        segs.iter()
            .map(|s| (s.base_offset, s.last_offset))
            .collect::<Vec<_>>(),
        vec![(0, 99), (110, 149)]
    );

    let grown = store.add_partitions("payments", 4).unwrap();
    assert_eq!(grown.partitions, 4);
    assert_eq!(
        store.partition_state("payments", 3).unwrap(),
        PartitionState::NEW
    );
    assert!(matches!(
        store.add_partitions("payments", 2),
        Err(MetaError::BadPartitionCount { .. })
    ));

    store.delete_topic("payments").unwrap();
    assert!(store.topic("payments").unwrap().is_none());
    assert!(matches!(
        store.partition_state("payments", 0),
        Err(MetaError::UnknownTopic { .. })
    ));
    assert!(matches!(
        store.delete_topic("payments"),
        Err(MetaError::UnknownTopic { .. })
    ));
    // Recreating gives a fresh topic with a new id and empty partitions.
    let again = store
        .create_topic("payments", 1, Default::default())
        .unwrap();
    assert_eq!(
        store.partition_state("payments", 0).unwrap(),
        PartitionState::NEW
    );
    assert_ne!(again.id, t.id);
}

#[test]
fn embedded_store_scenario_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = MetaStore::new(Box::new(FileKv::open(dir.path()).unwrap()), "default");
        scenario(&mut store);
        // A second process on the same directory is refused while we hold it.
        let err = FileKv::open(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("another kafscale process"),
            "{err}"
        );
    }
    let mut store = MetaStore::new(Box::new(FileKv::open(dir.path()).unwrap()), "default");
    assert_eq!(store.partition_state("orders", 0).unwrap().next_offset, 150);
    assert_eq!(store.segments("orders", 0).unwrap().len(), 2);
}

#[test]
fn embedded_store_truncates_a_torn_tail_and_refuses_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = MetaStore::new(Box::new(FileKv::open(dir.path()).unwrap()), "default");
        store.create_topic("t", 1, Default::default()).unwrap();
        store
            .commit(&[commit("t", 0, PartitionState::NEW, 0, 9)])
            .unwrap();
    }
    let log = dir.path().join("meta.log");
    let good = std::fs::read(&log).unwrap();
    // A crash mid-append leaves half a record.
    let mut torn = good.clone();
    torn.extend_from_slice(&[0, 0, 1, 0, 1, 2, 3]);
    std::fs::write(&log, &torn).unwrap();
    {
        let mut store = MetaStore::new(Box::new(FileKv::open(dir.path()).unwrap()), "default");
        assert_eq!(store.partition_state("t", 0).unwrap().next_offset, 10);
    }
    assert_eq!(
        std::fs::read(&log).unwrap(),
        good,
        "torn tail not truncated"
    );

    // A flipped byte inside a complete record is corruption.
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 3] ^= 0x20;
    std::fs::write(&log, &bad).unwrap();
    let err = FileKv::open(dir.path()).unwrap_err();
    assert!(matches!(err, MetaError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("CRC32C"), "{err}");
}

#[test]
fn embedded_store_compacts_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = MetaStore::new(Box::new(FileKv::open(dir.path()).unwrap()), "default");
    store.create_topic("t", 1, Default::default()).unwrap();
    let mut state = PartitionState::NEW;
    // ~ 25k commits of ~ 300 bytes pass the 4 MiB compaction threshold.
    for i in 0..15_000i64 {
        state = store
            .commit(&[commit("t", 0, state, i * 10, i * 10 + 9)])
            .unwrap()[0];
    }
    drop(store);
    let snapshot =
        std::fs::metadata(dir.path().join("meta.snapshot")).expect("compaction wrote a snapshot");
    assert!(snapshot.len() > 0);
    assert!(
        std::fs::metadata(dir.path().join("meta.log"))
            .unwrap()
            .len()
            < 4 * 1024 * 1024
    );
    let mut store = MetaStore::new(Box::new(FileKv::open(dir.path()).unwrap()), "default");
    assert_eq!(store.partition_state("t", 0).unwrap().next_offset, 150_000);
    assert_eq!(store.segments("t", 0).unwrap().len(), 15_000);
}

#[test]
fn etcd_store_scenario() {
    let Some(endpoints) = etcd_endpoints() else {
        return;
    };
    let mut store = MetaStore::new(
        Box::new(EtcdKv::connect(&endpoints).unwrap()),
        unique_ns("scenario"),
    );
    scenario(&mut store);
}

/// Two stores on one namespace over two etcd connections (two brokers).
fn two_etcd_stores(name: &str) -> Option<(MetaStore, MetaStore)> {
    let endpoints = etcd_endpoints()?;
    let ns = unique_ns(name);
    let open = || MetaStore::new(Box::new(EtcdKv::connect(&endpoints).unwrap()), ns.clone());
    Some((open(), open()))
}

#[test]
fn etcd_refuses_a_stale_writer_from_another_connection() {
    let Some((mut a, mut b)) = two_etcd_stores("stale") else {
        return;
    };
    a.create_topic("t", 1, Default::default()).unwrap();
    // Both writers read the same state; a commits first.
    let seen_by_a = a.partition_state("t", 0).unwrap();
    let seen_by_b = b.partition_state("t", 0).unwrap();
    a.commit(&[commit("t", 0, seen_by_a, 0, 99)]).unwrap();
    let err = b.commit(&[commit("t", 0, seen_by_b, 0, 49)]).unwrap_err();
    assert!(
        matches!(
            err,
            MetaError::Conflict {
                expected: 0,
                actual: 100,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("another writer committed first"),
        "{err}"
    );
    assert_eq!(b.segments("t", 0).unwrap().len(), 1);
}

fn broker(id: i32) -> BrokerInfo {
    BrokerInfo {
        id,
        host: "127.0.0.1".into(),
        port: 9000 + id,
        started_ms: 1,
        http_port: 0,
        listeners: vec![],
    }
}

/// Two brokers on two connections: registration, claims, and the fence that
/// keeps an owner whose lease ended from committing.
#[test]
fn etcd_ownership_is_leased_and_fences_the_previous_owner() {
    let Some((mut a, mut b)) = two_etcd_stores("owners") else {
        return;
    };
    let la = a.grant_lease(30).unwrap();
    let lb = b.grant_lease(30).unwrap();
    a.register_broker(&broker(1), la).unwrap();
    assert!(matches!(
        b.register_broker(&broker(1), lb),
        Err(MetaError::BrokerIdTaken { id: 1 })
    ));
    // Who holds id 1, and for how long (what a waiting broker logs).
    let (lease, ttl) = b
        .broker_lease(1)
        .unwrap()
        .expect("registered under a lease");
    assert_eq!(lease, la);
    assert!((1..=30).contains(&ttl), "ttl {ttl}");
    assert_eq!(b.broker_lease(5).unwrap(), None, "no such broker");
    assert_eq!(b.register_any_broker(broker(7), lb).unwrap(), 0);
    assert_eq!(
        a.brokers()
            .unwrap()
            .iter()
            .map(|b| b.id)
            .collect::<Vec<_>>(),
        [0, 1]
    );

    a.create_topic("t", 2, Default::default()).unwrap();
    let mine = a.claim_partition("t", 0, 1, la).unwrap();
    assert_eq!(mine.epoch, 1);
    // Claiming again under the same lease is idempotent.
    assert_eq!(a.claim_partition("t", 0, 1, la).unwrap(), mine);
    let err = b.claim_partition("t", 0, 0, lb).unwrap_err();
    assert!(matches!(err, MetaError::OwnedBy { broker: 1, .. }), "{err}");
    assert_eq!(b.owners().unwrap().len(), 1);
    a.commit(&[commit("t", 0, mine, 0, 9)]).unwrap();
    let mine = a.partition_state("t", 0).unwrap();

    // a's lease ends (as when it is paused or dies): its keys go with it.
    a.revoke_lease(la).unwrap();
    assert!(!a.keep_alive(la).unwrap());
    assert_eq!(b.broker_lease(1).unwrap(), None, "gone with its lease");
    assert!(b.owners().unwrap().is_empty());
    assert_eq!(b.brokers().unwrap().len(), 1);
    let theirs = b.claim_partition("t", 0, 0, lb).unwrap();
    assert_eq!((theirs.epoch, theirs.next_offset), (2, 10));

    // a still believes it owns the partition: its commit is refused.
    let err = a.commit(&[commit("t", 0, mine, 10, 19)]).unwrap_err();
    assert!(
        matches!(
            err,
            MetaError::Fenced {
                epoch: 1,
                actual: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("changed owner"), "{err}");
    b.commit(&[commit("t", 0, theirs, 10, 14)]).unwrap();
    assert_eq!(b.segments("t", 0).unwrap().len(), 2);

    // Releasing hands the partition back without touching its data.
    let owner = b.owners().unwrap()[0].2;
    b.release_partition("t", 0, &owner).unwrap();
    assert!(b.owners().unwrap().is_empty());
    assert_eq!(b.partition_state("t", 0).unwrap().next_offset, 15);

    // Groups: one coordinator at a time.
    b.claim_coordinator("g", 0, lb).unwrap();
    let la2 = a.grant_lease(30).unwrap();
    assert!(matches!(
        a.claim_coordinator("g", 1, la2),
        Err(MetaError::OwnedBy { broker: 0, .. })
    ));
    assert_eq!(a.coordinators().unwrap()[0].0, "g");
}

/// A lease nobody renews expires on its own, and its keys with it.
#[test]
fn etcd_lease_expires_without_keep_alive() {
    let Some(endpoints) = etcd_endpoints() else {
        return;
    };
    let mut a = MetaStore::new(
        Box::new(EtcdKv::connect(&endpoints).unwrap()),
        unique_ns("expiry"),
    );
    let lease = a.grant_lease(1).unwrap();
    a.register_broker(&broker(3), lease).unwrap();
    assert!(a.keep_alive(lease).unwrap());
    assert_eq!(a.brokers().unwrap().len(), 1);
    std::thread::sleep(std::time::Duration::from_millis(3500));
    assert!(a.brokers().unwrap().is_empty());
    assert!(!a.keep_alive(lease).unwrap());
    // etcd answers, with an error: reported as a refusal, not as unreachable.
    let err = a.revoke_lease(lease).unwrap_err().to_string();
    assert!(
        err.starts_with("etcd at ")
            && err.contains("refused the request: etcdserver: requested lease not found"),
        "{err}"
    );
}

#[test]
fn embedded_store_has_no_leases() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = MetaStore::new(Box::new(FileKv::open(dir.path()).unwrap()), "x");
    let err = store.grant_lease(10).unwrap_err();
    assert!(err.to_string().contains("need etcd"), "{err}");
}

#[test]
fn etcd_unreachable_is_one_clear_sentence() {
    etcd_endpoints();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = EtcdKv::connect(&[format!("http://127.0.0.1:{port}")]).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("cannot reach etcd at http://127.0.0.1:{port}")),
        "{text}"
    );
}

#[test]
fn client_runs_requests_on_the_metadata_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let (client, thread) =
        MetaClient::spawn(move || Ok(MetaStore::new(Box::new(FileKv::open(&path)?), "default")))
            .unwrap();
    // From a glommio executor, as a shard would.
    let c = client.clone();
    let states = kafscale_shard::block_on(move || async move {
        c.create_topic("t", 2).await.unwrap();
        let s0 = c.partition_state("t", 0).await.unwrap();
        c.commit(vec![commit("t", 0, s0, 0, 4)]).await.unwrap()
    })
    .unwrap();
    assert_eq!(states[0].next_offset, 5);
    assert_eq!(
        client.call_blocking(|s| s.segments("t", 0)).unwrap().len(),
        1
    );
    drop(client);
    thread.join();

    // A store that cannot open reports why, and no thread is left behind.
    let err = MetaClient::spawn(|| Err(MetaError::Closed)).unwrap_err();
    assert!(matches!(err, MetaError::Closed));
}

/// The cluster view is read every second: one record nobody can parse is left
/// out (and logged) instead of hiding every live broker.
#[test]
fn an_unreadable_broker_record_does_not_hide_the_others() {
    use kafscale::meta::keys;
    use kafscale::meta::kv::{Kv, Op, Txn};
    let Some(endpoints) = etcd_endpoints() else {
        return;
    };
    let ns = unique_ns("garbled");
    let mut store = MetaStore::new(Box::new(EtcdKv::connect(&endpoints).unwrap()), ns.clone());
    let lease = store.grant_lease(30).unwrap();
    store.register_broker(&broker(2), lease).unwrap();
    let mut raw = EtcdKv::connect(&endpoints).unwrap();
    assert!(
        raw.txn(Txn {
            compares: vec![],
            ops: vec![Op::Put(keys::broker(&ns, 9), "{not json".into())],
        })
        .unwrap()
    );
    let ids: Vec<i32> = store.brokers().unwrap().iter().map(|b| b.id).collect();
    assert_eq!(ids, [2]);
    store.revoke_lease(lease).unwrap();
}

/// etcd takes at most 128 operations per transaction (its default
/// `--max-txn-ops`): topics of hundreds of partitions, growing them, and a
/// group committing hundreds of offsets must still work.
fn large_topics(store: &mut MetaStore) {
    let meta = store.create_topic("wide", 300, Default::default()).unwrap();
    assert_eq!(meta.partitions, 300);
    assert_eq!(store.partition_state("wide", 299).unwrap().next_offset, 0);
    assert!(matches!(
        store.create_topic("wide", 300, Default::default()),
        Err(MetaError::TopicExists { .. })
    ));
    let grown = store.add_partitions("wide", 700).unwrap();
    assert_eq!(grown.partitions, 700);
    assert_eq!(store.topic("wide").unwrap().unwrap().partitions, 700);
    assert_eq!(store.partition_state("wide", 699).unwrap().epoch, 0);
    let offsets: Vec<_> = (0..300)
        .map(|p| {
            (
                "wide".to_owned(),
                p,
                kafscale::meta::CommittedOffset {
                    offset: i64::from(p) * 10,
                    metadata: None,
                    leader_epoch: -1,
                },
            )
        })
        .collect();
    store.commit_offsets("g", &offsets).unwrap();
    let got = store.group_offsets("g").unwrap();
    assert_eq!(got.len(), 300);
    assert!(got.iter().all(|(_, p, o)| o.offset == i64::from(*p) * 10));
    store.delete_topic("wide").unwrap();
    assert!(store.topic("wide").unwrap().is_none());
    // Created again from scratch after the delete.
    store.create_topic("wide", 200, Default::default()).unwrap();
    assert_eq!(store.partition_state("wide", 199).unwrap().next_offset, 0);
}

#[test]
fn etcd_store_takes_topics_of_hundreds_of_partitions() {
    let Some(endpoints) = etcd_endpoints() else {
        return;
    };
    let mut store = MetaStore::new(
        Box::new(EtcdKv::connect(&endpoints).unwrap()),
        unique_ns("wide"),
    );
    large_topics(&mut store);
}

#[test]
fn embedded_store_takes_topics_of_hundreds_of_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = MetaStore::new(Box::new(FileKv::open(dir.path()).unwrap()), "default");
    large_topics(&mut store);
}

/// Group ids may hold any character: "a", "a/x" and a literal "a%2Fx" are
/// three groups, and deleting one leaves the others.
fn groups_with_slashes(store: &mut MetaStore) {
    let offset = |o| kafscale::meta::CommittedOffset {
        offset: o,
        metadata: None,
        leader_epoch: -1,
    };
    for (i, g) in ["a", "a/x", "a%2Fx"].iter().enumerate() {
        store
            .commit_offsets(g, &[("t".to_owned(), 0, offset(i as i64 + 1))])
            .unwrap();
    }
    let mut names = store.group_names().unwrap();
    names.sort();
    assert_eq!(names, ["a", "a%2Fx", "a/x"]);
    store.delete_group("a").unwrap();
    let mut names = store.group_names().unwrap();
    names.sort();
    assert_eq!(names, ["a%2Fx", "a/x"], "deleting a left a/x alone");
    assert_eq!(store.group_offsets("a/x").unwrap()[0].2.offset, 2);
    assert_eq!(store.group_offsets("a%2Fx").unwrap()[0].2.offset, 3);
    assert!(store.group_offsets("a").unwrap().is_empty());
}

#[test]
fn embedded_store_keeps_groups_with_slashes_apart() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = MetaStore::new(Box::new(FileKv::open(dir.path()).unwrap()), "default");
    groups_with_slashes(&mut store);
}

#[test]
fn etcd_store_keeps_groups_with_slashes_apart() {
    let Some(endpoints) = etcd_endpoints() else {
        return;
    };
    let mut store = MetaStore::new(
        Box::new(EtcdKv::connect(&endpoints).unwrap()),
        unique_ns("slashes"),
    );
    groups_with_slashes(&mut store);
}

/// A small tmpfs of its own (root mounts it; elsewhere the test is
/// skipped, unless KAFSCALE_TEST_REQUIRE_SERVERS says the machine must run
/// everything). Unmounted on drop.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status();
        if st.is_ok_and(|s| s.success()) {
            return Some(Self(dir));
        }
        assert!(
            std::env::var_os("KAFSCALE_TEST_REQUIRE_SERVERS").is_none(),
            "cannot mount a tmpfs (needs root) but KAFSCALE_TEST_REQUIRE_SERVERS is set"
        );
        eprintln!("skipped: cannot mount a tmpfs (needs root)");
        None
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

/// A full disk in the middle of an append: the transaction fails, the part
/// of its record that reached the file is taken back, and the transactions
/// acknowledged after it survive a restart. (Before, the next record was
/// appended after the torn one, and the next open dropped it and everything
/// after it as a torn tail: acknowledged metadata lost.)
#[test]
fn a_full_disk_mid_append_loses_nothing_acknowledged() {
    use kafscale::meta::kv::{Kv, Op, Txn};
    use std::io::Write;
    let Some(disk) = SmallDisk::mount("256k") else {
        return;
    };
    let meta = disk.0.path().join("meta");
    let put = |k: &str, v: String| Txn {
        compares: vec![],
        ops: vec![Op::Put(k.into(), v)],
    };
    let mut kv = FileKv::open(&meta).unwrap();
    assert!(kv.txn(put("before", "1".into())).unwrap());
    // Fill the disk.
    let filler = disk.0.path().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    while f.write_all(&[7u8; 4096]).is_ok() {}
    drop(f);
    // A record larger than what is left in the log's last page: the
    // kernel takes part of it, then ENOSPC.
    let before = std::fs::metadata(meta.join("meta.log")).unwrap().len();
    let err = kv.txn(put("big", "x".repeat(64 * 1024))).unwrap_err();
    assert!(err.to_string().contains("meta.log"), "{err}");
    let log_len = std::fs::metadata(meta.join("meta.log")).unwrap().len();
    assert_eq!(log_len, before, "the failed append was taken back");
    std::fs::remove_file(&filler).unwrap();
    // Room again: the next transaction is acknowledged.
    assert!(kv.txn(put("after", "2".into())).unwrap());
    assert_eq!(kv.get("big").unwrap(), None);
    drop(kv);
    let mut kv = FileKv::open(&meta).expect("the store opens after a failed append");
    assert_eq!(kv.get("before").unwrap().as_deref(), Some("1"));
    assert_eq!(
        kv.get("after").unwrap().as_deref(),
        Some("2"),
        "an acknowledged transaction was lost (the failed append left {log_len} bytes)"
    );
    assert_eq!(
        kv.get("big").unwrap(),
        None,
        "a failed transaction came back"
    );
}
