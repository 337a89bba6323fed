//! kafscale-client against both brokers it must work with: ours (the real
//! binary, embedded default) and a real Apache Kafka (the fixture of
//! scripts/test, PLAINTEXT, SASL_PLAINTEXT and SASL_SSL with SCRAM).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::kafka::{ApacheKafka, Produced, confluent_produce, hex, run};
use kafscale_client::{
    Acks, Client, ClientConfig, ClientError, FetchOptions, FetchSpec, IdempotentProducer,
    KafkaCode, Mechanism, NewTopic, OffsetSpec, Secret, TlsConfig,
};
use kafscale_codec::batch::{BatchBuilder, Compression, RecordBatch};

const CODECS: [(&str, Compression); 4] = [
    ("gzip", Compression::Gzip),
    ("snappy", Compression::Snappy),
    ("lz4", Compression::Lz4),
    ("zstd", Compression::Zstd),
];

fn unique(name: &str) -> String {
    format!("{name}-{}", uuid_ish())
}

fn uuid_ish() -> String {
    let n: u64 = rand::random();
    format!("{n:016x}")
}

/// Every batch of partition 0 up to its high watermark.
async fn fetch_all(client: &Client, topic: &str) -> Vec<RecordBatch> {
    let mut offset = 0;
    let mut out = Vec::new();
    let hw = client
        .list_offset(topic, 0, OffsetSpec::Latest)
        .await
        .unwrap()
        .offset;
    while offset < hw {
        let mut spec = FetchSpec::new(topic, 0, offset);
        spec.max_bytes = 4096; // several fetches, so truncated tails occur
        let f = client
            .fetch_partition(&spec, &FetchOptions::default())
            .await
            .unwrap();
        assert_eq!(f.high_watermark, hw);
        assert!(f.next_offset > offset, "no progress at {offset}");
        offset = f.next_offset;
        out.extend(f.batches);
    }
    out
}

/// Fetches what confluent-kafka produced in each codec and checks every
/// batch (CRC, codec) and every record against what the producer sent.
fn confluent_codecs_fetched_raw(bootstrap: String) {
    for (codec, compression) in CODECS {
        let topic = unique(&format!("codec-{codec}"));
        let b = bootstrap.clone();
        let t = topic.clone();
        run(move || async move {
            let c = Client::connect(ClientConfig::new(&b)).await.unwrap();
            c.ensure_topic(&NewTopic::new(&t, 1)).await.unwrap();
        });
        let sent = confluent_produce(&bootstrap, &topic, codec, 40);
        let b = bootstrap.clone();
        let got: Vec<(Compression, i64, Vec<Produced>)> = run(move || async move {
            let c = Client::connect(ClientConfig::new(&b)).await.unwrap();
            fetch_all(&c, &topic)
                .await
                .iter()
                .map(|batch| {
                    batch.validate().unwrap();
                    let records = batch.records().unwrap();
                    (
                        batch.compression().unwrap(),
                        batch.base_offset(),
                        records
                            .iter()
                            .map(|r| Produced {
                                key: r.key.as_ref().map(|k| hex(k)),
                                value: r.value.as_ref().map(|v| hex(v)),
                                headers: r
                                    .headers
                                    .iter()
                                    .map(|h| {
                                        (
                                            String::from_utf8(h.key.to_vec()).unwrap(),
                                            h.value.as_ref().map(|v| hex(v)),
                                        )
                                    })
                                    .collect(),
                                timestamp: r.timestamp,
                            })
                            .collect(),
                    )
                })
                .collect()
        });
        assert!(got.len() > 1, "{codec}: several batches expected");
        let mut next = 0;
        for (c, base, records) in &got {
            // librdkafka sends a batch uncompressed when the codec would
            // not make it smaller (a small first batch, say).
            assert!(
                *c == compression || *c == Compression::None,
                "{codec}: batch at {base} is {c}"
            );
            assert_eq!(*base, next, "{codec}: batches are contiguous");
            next = base + records.len() as i64;
        }
        let compressed = got.iter().filter(|g| g.0 == compression).count();
        assert!(
            compressed > 0,
            "{codec}: no batch of {} compressed",
            got.len()
        );
        let records: Vec<Produced> = got.into_iter().flat_map(|g| g.2).collect();
        assert_eq!(
            records, sent,
            "{codec}: records differ from what was produced"
        );
    }
}

fn batch(base_ts: i64, n: usize, compression: Compression, tag: &str) -> Bytes {
    let mut b = BatchBuilder::new(0, base_ts).compression(compression);
    for i in 0..n {
        let k = format!("{tag}-k{i}");
        let v = format!("{tag}-value-{i}-").repeat(5);
        b.push(Some(k.as_bytes()), Some(v.as_bytes()), &[("h", Some(b"x"))]);
    }
    b.finish()
}

/// One batch of three records produced to a new topic and fetched back:
/// the number of batches that came back (each checked to hold three).
async fn produce_and_fetch(c: &Client, name: &str, compression: Compression) -> usize {
    let topic = unique(name);
    c.ensure_topic(&NewTopic::new(&topic, 1)).await.unwrap();
    c.produce_raw(&topic, 0, batch(1, 3, compression, name), Acks::All)
        .await
        .unwrap();
    let f = c
        .fetch_partition(&FetchSpec::new(&topic, 0, 0), &FetchOptions::default())
        .await
        .unwrap();
    assert!(f.batches.iter().all(|b| b.record_count() == 3));
    f.batches.len()
}

/// Raw produce (acks 0, 1, all) then raw fetch: the bytes that come back are
/// the bytes sent, but for the offset the broker gave.
fn raw_round_trip(bootstrap: String) {
    run(move || async move {
        let c = Client::connect(ClientConfig::new(&bootstrap))
            .await
            .unwrap();
        let topic = unique("raw");
        c.ensure_topic(&NewTopic::new(&topic, 3)).await.unwrap();
        let meta = c.metadata(&[&topic]).await.unwrap();
        let t = meta.topic(&topic).unwrap();
        assert_eq!(t.partitions.len(), 3);
        assert!(
            t.partitions
                .iter()
                .all(|p| p.leader >= 0 && p.error.is_none())
        );
        assert!(meta.brokers.iter().any(|b| b.id == t.partitions[0].leader));

        let mut sent = Vec::new();
        for (i, acks) in [Acks::Leader, Acks::All, Acks::None, Acks::All]
            .into_iter()
            .enumerate()
        {
            let b = batch(
                1_700_000_000_000 + i as i64,
                5,
                CODECS[i].1,
                &format!("b{i}"),
            );
            let r = c.produce_raw(&topic, 1, b.clone(), acks).await.unwrap();
            match acks {
                Acks::None => assert!(r.is_none()),
                _ => assert_eq!(r.unwrap().base_offset, 5 * i as i64),
            }
            sent.push(b);
        }
        let mut offset = 0;
        let mut got = Vec::new();
        // acks=0 has no answer: wait until all four are visible.
        for _ in 0..100 {
            if c.list_offset(&topic, 1, OffsetSpec::Latest)
                .await
                .unwrap()
                .offset
                == 20
            {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
        while offset < 20 {
            let f = c
                .fetch_partition(&FetchSpec::new(&topic, 1, offset), &FetchOptions::default())
                .await
                .unwrap();
            offset = f.next_offset;
            got.extend(f.batches);
        }
        assert_eq!(got.len(), 4);
        for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
            assert_eq!(g.base_offset(), 5 * i as i64);
            // Offset (0..8) and partition leader epoch (12..16) are the
            // broker's; everything else, CRC included, is what was sent.
            assert_eq!(&g.as_bytes()[8..12], &s[8..12]);
            assert_eq!(&g.as_bytes()[16..], &s[16..], "batch {i}");
        }
        let earliest = c
            .list_offset(&topic, 1, OffsetSpec::Earliest)
            .await
            .unwrap();
        assert_eq!(earliest.offset, 0);
        let by_time = c
            .list_offset(&topic, 1, OffsetSpec::Timestamp(1_700_000_000_002))
            .await
            .unwrap();
        assert_eq!(by_time.offset, 10, "first batch with a timestamp >= T");
        // Pipelined: many requests in flight on one connection at once.
        let many = futures::future::join_all(
            (0..64).map(|_| c.list_offset(&topic, 1, OffsetSpec::Latest)),
        )
        .await;
        assert!(many.iter().all(|r| r.as_ref().unwrap().offset == 20));
    });
}

fn errors_name_the_problem(bootstrap: String) {
    run(move || async move {
        let c = Client::connect(ClientConfig::new(&bootstrap))
            .await
            .unwrap();
        let topic = unique("errs");
        c.ensure_topic(&NewTopic::new(&topic, 1)).await.unwrap();
        c.produce_raw(&topic, 0, batch(1, 3, Compression::None, "e"), Acks::All)
            .await
            .unwrap();
        let e = c
            .fetch_partition(&FetchSpec::new(&topic, 0, 1000), &FetchOptions::default())
            .await
            .unwrap_err();
        match &e {
            ClientError::OffsetOutOfRange {
                requested,
                log_start,
                high_watermark,
                ..
            } => assert_eq!(
                (*requested, *log_start, *high_watermark),
                (1000, 0, 3),
                "{e}"
            ),
            other => panic!("expected OffsetOutOfRange, got {other}"),
        }
        assert!(e.to_string().contains("[0, 3)"), "{e}");

        let mut quick = ClientConfig::new(&bootstrap);
        quick.retries = 2;
        let q = Client::connect(quick).await.unwrap();
        let e = q
            .fetch_partition(
                &FetchSpec::new("no-such-topic-here", 0, 0),
                &FetchOptions::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(KafkaCode::UNKNOWN_TOPIC_OR_PARTITION), "{e}");
        assert!(e.to_string().contains("UNKNOWN_TOPIC_OR_PARTITION"), "{e}");

        let e = c
            .create_topics(&[NewTopic::new(&topic, 1)], Duration::from_secs(10))
            .await
            .pop()
            .unwrap()
            .unwrap_err();
        assert_eq!(e.code(), Some(KafkaCode::TOPIC_ALREADY_EXISTS), "{e}");
        assert!(e.to_string().contains(&topic), "names the topic: {e}");
    });
}

/// A retry of an already written idempotent batch (its answer lost) is
/// not written again; the next batch follows it.
fn idempotent_produce_exactly_once(bootstrap: String) {
    run(move || async move {
        let c = Client::connect(ClientConfig::new(&bootstrap))
            .await
            .unwrap();
        let topic = unique("idem");
        c.ensure_topic(&NewTopic::new(&topic, 1)).await.unwrap();
        let p = IdempotentProducer::new(&c).await.unwrap();
        assert!(p.producer_id() >= 0);
        let first = p
            .prepare(&topic, 0, &batch(1, 4, Compression::Lz4, "a"))
            .unwrap();
        assert_eq!(first.first_sequence, 0);
        let r1 = p.send_prepared(&first).await.unwrap();
        assert_eq!(r1.base_offset, 0);
        p.send_prepared(&first).await.unwrap();
        let r2 = p
            .send(&topic, 0, &batch(2, 3, Compression::Zstd, "b"))
            .await
            .unwrap();
        assert_eq!(r2.base_offset, 4, "the retried batch was not written twice");
        let all = fetch_all(&c, &topic).await;
        let keys: Vec<String> = all
            .iter()
            .flat_map(|b| b.records().unwrap())
            .map(|r| String::from_utf8(r.key.unwrap().to_vec()).unwrap())
            .collect();
        assert_eq!(
            keys,
            ["a-k0", "a-k1", "a-k2", "a-k3", "b-k0", "b-k1", "b-k2"]
        );
        assert!(all.iter().all(|b| b.producer_id() == p.producer_id()));
        assert_eq!(all[1].base_sequence(), 4);
    });
}

fn admin_and_group_offsets(bootstrap: String) {
    run(move || async move {
        let c = Client::connect(ClientConfig::new(&bootstrap))
            .await
            .unwrap();
        let topic = unique("adm");
        let mut nt = NewTopic::new(&topic, 2);
        nt.configs = BTreeMap::from([("retention.ms".to_owned(), "3600000".to_owned())]);
        c.ensure_topic(&nt).await.unwrap();
        let cfg = c.describe_topic_config(&topic).await.unwrap();
        assert_eq!(
            cfg.get("retention.ms").cloned().flatten().as_deref(),
            Some("3600000"),
            "{cfg:?}"
        );
        let group = unique("grp");
        let offsets = vec![
            kafscale_client::CommittedOffset {
                topic: topic.clone(),
                partition: 0,
                offset: 7,
                leader_epoch: -1,
                metadata: Some("m".into()),
            },
            kafscale_client::CommittedOffset {
                topic: topic.clone(),
                partition: 1,
                offset: 0,
                leader_epoch: -1,
                metadata: None,
            },
        ];
        c.produce_raw(&topic, 0, batch(1, 8, Compression::None, "g"), Acks::All)
            .await
            .unwrap();
        c.offset_commit(&group, &offsets).await.unwrap();
        let mut got = c
            .offset_fetch(&group, &[(&topic, vec![0, 1])])
            .await
            .unwrap();
        got.sort_by_key(|o| o.partition);
        assert_eq!(
            got.iter().map(|o| o.offset).collect::<Vec<_>>(),
            [7, 0],
            "{got:?}"
        );
        assert_eq!(got[0].metadata.as_deref(), Some("m"));
        let all = c.offset_fetch(&group, &[]).await.unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
        let groups = c.list_groups().await.unwrap();
        assert!(groups.iter().any(|g| g.group_id == group), "{groups:?}");
        let d = c.describe_group(&group).await.unwrap();
        assert_eq!(d.group_id, group);
        assert!(d.members.is_empty());
    });
}

/// Each scenario as two tests: against our broker (embedded default) and
/// against the Apache Kafka fixture.
macro_rules! on_both_brokers {
    ($($scenario:ident => $ours:ident, $theirs:ident;)*) => {$(
        #[test]
        fn $ours() {
            let b = common::start();
            $scenario(format!("127.0.0.1:{}", b.port));
        }

        #[test]
        fn $theirs() {
            let Some(k) = ApacheKafka::from_env() else {
                return;
            };
            $scenario(k.plaintext);
        }
    )*};
}

on_both_brokers! {
    confluent_codecs_fetched_raw => kafscale_confluent_codecs_fetched_raw, apache_confluent_codecs_fetched_raw;
    raw_round_trip => kafscale_raw_round_trip, apache_raw_round_trip;
    errors_name_the_problem => kafscale_errors_name_the_problem, apache_errors_name_the_problem;
    idempotent_produce_exactly_once => kafscale_idempotent_produce_exactly_once, apache_idempotent_produce_exactly_once;
    admin_and_group_offsets => kafscale_admin_and_group_offsets, apache_admin_and_group_offsets;
}

// ---- against our broker (embedded default) ----

/// 600 connections that each announce a 1 MiB request and send 10 bytes of
/// it hold more than the whole memory budget (512 MiB): other clients are
/// still served at once (small requests never wait for the budget), and the
/// stalled connections are closed after the frame deadline, giving their
/// reservations back. (Before: nobody else could even finish ApiVersions.)
#[test]
fn kafscale_stalled_large_frames_do_not_stop_other_clients() {
    use std::io::{Read, Write};
    let b = common::start_with(&["--frame-read-timeout-ms", "3000"]);
    let mut stalled = Vec::new();
    for _ in 0..600 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", b.port)).unwrap();
        let mut head = ((1 << 20) - 100i32).to_be_bytes().to_vec();
        head.extend_from_slice(&[0u8; 10]);
        s.write_all(&head).unwrap();
        stalled.push(s);
    }
    let bootstrap = format!("127.0.0.1:{}", b.port);
    let started = std::time::Instant::now();
    run(move || async move {
        let mut cfg = ClientConfig::new(&bootstrap);
        cfg.request_timeout = Duration::from_secs(2);
        cfg.connect_timeout = Duration::from_secs(2);
        cfg.retries = 0;
        let c = Client::connect(cfg).await.unwrap();
        c.ensure_topic(&NewTopic::new("served", 1)).await.unwrap();
        c.produce_raw("served", 0, batch(1, 2, Compression::None, "s"), Acks::All)
            .await
            .unwrap();
    });
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "served while the frames stall"
    );
    // The stalled connections are closed once the deadline passes (a read
    // that times out means still open).
    for i in [0, stalled.len() - 1] {
        let s = &mut stalled[i];
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 1];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("stalled connection {i} is still open: {other:?}"),
        }
    }
}

/// A fetch asking for everything gets at most --fetch-max-bytes (and always
/// one whole batch), however much the partition holds.
#[test]
fn kafscale_fetch_answers_are_clamped() {
    let b = common::start_with(&["--fetch-max-bytes", "256KiB"]);
    let bootstrap = format!("127.0.0.1:{}", b.port);
    run(move || async move {
        let c = Client::connect(ClientConfig::new(&bootstrap))
            .await
            .unwrap();
        c.ensure_topic(&NewTopic::new("clamped", 1)).await.unwrap();
        let value = vec![9u8; 100 * 1024];
        for _ in 0..10 {
            let mut bb = BatchBuilder::new(0, 1);
            bb.push(None, Some(&value), &[]);
            c.produce_raw("clamped", 0, bb.finish(), Acks::All)
                .await
                .unwrap();
        }
        let mut spec = FetchSpec::new("clamped", 0, 0);
        spec.max_bytes = i32::MAX;
        let opts = FetchOptions {
            max_bytes: i32::MAX,
            ..FetchOptions::default()
        };
        let f = c.fetch_partition(&spec, &opts).await.unwrap();
        assert!(f.bytes() <= 256 * 1024 + 110 * 1024, "{} bytes", f.bytes());
        assert!(!f.batches.is_empty());
        assert!(f.batches.len() < 10, "{} batches", f.batches.len());
        // One batch larger than the limit still comes whole.
        let big = vec![1u8; 400 * 1024];
        let mut bb = BatchBuilder::new(0, 1);
        bb.push(None, Some(&big), &[]);
        let at = c
            .produce_raw("clamped", 0, bb.finish(), Acks::All)
            .await
            .unwrap()
            .unwrap()
            .base_offset;
        let f = c
            .fetch_partition(&FetchSpec::new("clamped", 0, at), &opts)
            .await
            .unwrap();
        assert_eq!(f.batches.len(), 1);
        assert!(f.bytes() > 400 * 1024);
    });
}

/// A topic of two billion partitions is refused at once (it used to be
/// attempted, one metadata key per partition).
#[test]
fn kafscale_partition_counts_are_capped() {
    let b = common::start();
    let bootstrap = format!("127.0.0.1:{}", b.port);
    run(move || async move {
        let mut cfg = ClientConfig::new(&bootstrap);
        cfg.request_timeout = Duration::from_secs(10);
        let c = Client::connect(cfg).await.unwrap();
        let e = c
            .create_topics(
                &[NewTopic::new("huge", 2_000_000_000)],
                Duration::from_secs(5),
            )
            .await
            .pop()
            .unwrap()
            .unwrap_err();
        assert_eq!(e.code(), Some(KafkaCode(37)), "INVALID_PARTITIONS: {e}");
        assert!(e.to_string().contains("--max-partitions-per-topic"), "{e}");
        c.ensure_topic(&NewTopic::new("small", 1)).await.unwrap();
        use kafscale_codec::kafka_protocol::messages::CreatePartitionsRequest;
        use kafscale_codec::kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
        let mut t = CreatePartitionsTopic::default();
        t.name = kafscale_codec::kafka_protocol::messages::TopicName("small".into());
        t.count = 2_000_000_000;
        let mut req = CreatePartitionsRequest::default();
        req.topics = vec![t];
        req.timeout_ms = 5000;
        let conn = c.any_broker().await.unwrap();
        let r = conn.call(&req).await.unwrap();
        assert_eq!(r.results[0].error_code, 37);
        assert_eq!(
            c.metadata(&["small"]).await.unwrap().topics[0]
                .partitions
                .len(),
            1
        );
    });
}

#[test]
fn kafscale_timeouts_and_lost_connections() {
    let mut b = common::start();
    let bootstrap = format!("127.0.0.1:{}", b.port);
    let topic = unique("lost");
    let (tx, rx) = std::sync::mpsc::channel::<&str>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let t = topic.clone();
    let client = std::thread::spawn(move || {
        run(move || async move {
            let c = Client::connect(ClientConfig::new(&bootstrap))
                .await
                .unwrap();
            c.ensure_topic(&NewTopic::new(&t, 1)).await.unwrap();
            c.produce_raw(&t, 0, batch(1, 2, Compression::None, "l"), Acks::All)
                .await
                .unwrap();
            c.list_offset(&t, 0, OffsetSpec::Latest).await.unwrap();
            // A paused broker: a call with a short timeout times out,
            // naming broker and API.
            let mut cfg = ClientConfig::new(&bootstrap);
            cfg.request_timeout = Duration::from_millis(400);
            cfg.retries = 1;
            let quick = Client::connect(cfg).await.unwrap();
            done_tx.send(()).unwrap();
            assert_eq!(rx.recv().unwrap(), "stopped");
            let e = quick
                .list_offset(&t, 0, OffsetSpec::Latest)
                .await
                .unwrap_err();
            assert!(matches!(e, ClientError::Timeout { .. }), "{e}");
            assert!(e.to_string().contains(&format!("{bootstrap}: ")), "{e}");
            done_tx.send(()).unwrap();
            // Killed and restarted: the connection died; the next call
            // opens a new one (retried with backoff until the broker is up).
            assert_eq!(rx.recv().unwrap(), "restarted");
            let mut r = Err(e);
            for _ in 0..50 {
                r = c.list_offset(&t, 0, OffsetSpec::Latest).await;
                if r.is_ok() {
                    break;
                }
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(r.unwrap().offset, 2);
        })
    });
    done_rx.recv().unwrap();
    common::signal(b.pid(), "STOP");
    tx.send("stopped").unwrap();
    done_rx.recv().unwrap();
    common::signal(b.pid(), "CONT");
    b.restart();
    tx.send("restarted").unwrap();
    client.join().unwrap();
}

/// A broker of a cluster on the S3 server and etcd of scripts/test.
struct ClusterBroker {
    child: std::process::Child,
    port: u16,
    metrics_port: u16,
}

impl ClusterBroker {
    /// One counter from the broker's /metrics.
    fn metric(&self, name: &str) -> f64 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }
}

impl Drop for ClusterBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cluster_broker(
    id: i32,
    suffix: &str,
    dir: &std::path::Path,
    flush_ms: u32,
) -> Option<ClusterBroker> {
    broker_on_etcd(id, suffix, dir, flush_ms, None)
}

/// As [`cluster_broker`], on the etcd at `etcd` instead of the shared one.
fn broker_on_etcd(
    id: i32,
    suffix: &str,
    dir: &std::path::Path,
    flush_ms: u32,
    etcd: Option<&str>,
) -> Option<ClusterBroker> {
    let (Ok(s3), Ok(shared_etcd)) = (
        std::env::var("KAFSCALE_TEST_S3_ENDPOINT"),
        std::env::var("KAFSCALE_TEST_ETCD_ENDPOINTS"),
    ) else {
        assert!(
            std::env::var_os("KAFSCALE_TEST_REQUIRE_SERVERS").is_none(),
            "the S3 server and etcd are not set but KAFSCALE_TEST_REQUIRE_SERVERS is"
        );
        return None;
    };
    let etcd = etcd.map_or(shared_etcd, str::to_owned);
    let port = common::free_port();
    let metrics_port = common::free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_kafscale"))
        .args(["broker", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .arg("--data-dir")
        .arg(dir.join(format!("b{id}")))
        .args([
            "--flush-interval-ms",
            &flush_ms.to_string(),
            "--shards",
            "1",
        ])
        .args([
            "--s3-endpoint",
            &s3,
            "--s3-bucket",
            &format!("client-{suffix}"),
        ])
        .args([
            "--s3-create-bucket",
            "--s3-namespace",
            &format!("ns-{suffix}"),
        ])
        .args(["--etcd-endpoints", &etcd, "--broker-id", &id.to_string()])
        .args(["--lease-ttl-secs", "3"])
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
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "broker {id} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(ClusterBroker {
        child,
        port,
        metrics_port,
    })
}

/// An etcd of this test's own, so it can be paused without touching the
/// other tests' etcd.
struct OwnEtcd {
    child: std::process::Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for OwnEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn own_etcd() -> OwnEtcd {
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (common::free_port(), common::free_port());
    let endpoint = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = std::process::Command::new("etcd")
        .args(["--name", "own", "--data-dir"])
        .arg(dir.path().join("etcd"))
        .args([
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("own={peer_url}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("etcd (scripts/setup installs it)");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
        assert!(std::time::Instant::now() < deadline, "etcd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    OwnEtcd {
        child,
        endpoint,
        _dir: dir,
    }
}

/// A metadata store that cannot answer does not make a topic listing come
/// back empty (a client would take every topic for deleted): the broker
/// closes the connection and the client retries.
#[test]
fn kafscale_topic_listing_without_metadata_store_is_not_empty() {
    if std::env::var("KAFSCALE_TEST_S3_ENDPOINT").is_err() {
        assert!(
            std::env::var_os("KAFSCALE_TEST_REQUIRE_SERVERS").is_none(),
            "the S3 server is not set but KAFSCALE_TEST_REQUIRE_SERVERS is"
        );
        return;
    }
    let etcd = own_etcd();
    let dir = tempfile::tempdir().unwrap();
    let suffix = uuid_ish()[..10].to_owned();
    let b = broker_on_etcd(0, &suffix, dir.path(), 20, Some(&etcd.endpoint)).unwrap();
    let bootstrap = format!("127.0.0.1:{}", b.port);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (paused_tx, paused_rx) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        run(move || async move {
            let mut cfg = ClientConfig::new(&bootstrap);
            cfg.retries = 0;
            let c = Client::connect(cfg).await.unwrap();
            c.ensure_topic(&NewTopic::new("listed", 1)).await.unwrap();
            let all = c.metadata(&[]).await.unwrap();
            assert!(all.topic("listed").is_some());
            tx.send(()).unwrap();
            paused_rx.recv().unwrap();
            match c.metadata(&[]).await {
                Ok(m) => panic!("a topic listing while the store is away: {:?}", m.topics),
                Err(e) => assert!(matches!(e, ClientError::ConnectionLost { .. }), "{e}"),
            }
        })
    });
    rx.recv().unwrap();
    common::signal(etcd.child.id(), "STOP");
    paused_tx.send(()).unwrap();
    let r = client.join();
    common::signal(etcd.child.id(), "CONT");
    r.unwrap();
    drop(b);
}

/// Two brokers on S3 + etcd; the leader of a partition is stopped while an
/// idempotent producer writes to it: the client follows the partition to
/// its new leader (NOT_LEADER_OR_FOLLOWER or a lost connection, metadata
/// refreshed) and every batch is in the log exactly once.
#[test]
fn kafscale_cluster_leader_moves_under_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let suffix = uuid_ish()[..10].to_owned();
    let Some(b0) = cluster_broker(0, &suffix, dir.path(), 20) else {
        return;
    };
    let b1 = cluster_broker(1, &suffix, dir.path(), 20).unwrap();
    let bootstrap = format!("127.0.0.1:{},127.0.0.1:{}", b0.port, b1.port);
    let b1_pid = b1.child.id();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (stopped_tx, stopped_rx) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        run(move || async move {
            let c = Client::connect(ClientConfig::new(&bootstrap))
                .await
                .unwrap();
            for _ in 0..100 {
                if c.metadata(&[]).await.unwrap().brokers.len() == 2 {
                    break;
                }
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
            // Partitions are claimed by the broker they hash to: take a
            // topic of which broker 1 leads a partition.
            let mut found = None;
            for _ in 0..20 {
                let topic = unique("moves");
                c.ensure_topic(&NewTopic::new(&topic, 8)).await.unwrap();
                let meta = c.metadata(&[&topic]).await.unwrap();
                let led = meta
                    .topic(&topic)
                    .unwrap()
                    .partitions
                    .iter()
                    .find(|p| p.leader == 1);
                if let Some(p) = led {
                    found = Some((topic, p.partition));
                    break;
                }
            }
            let (topic, p) = found.expect("broker 1 leads a partition of one of 20 topics");
            let producer = IdempotentProducer::new(&c).await.unwrap();
            for i in 0..3 {
                producer
                    .send(
                        &topic,
                        p,
                        &batch(1, 2, Compression::None, &format!("before{i}")),
                    )
                    .await
                    .unwrap();
            }
            tx.send(()).unwrap();
            stopped_rx.recv().unwrap();
            for i in 0..3 {
                producer
                    .send(
                        &topic,
                        p,
                        &batch(1, 2, Compression::Lz4, &format!("after{i}")),
                    )
                    .await
                    .unwrap();
            }
            let (leader, _) = c.leader(&topic, p).await.unwrap();
            assert_eq!(leader, 0, "the partition moved to the broker that is left");
            let mut spec = FetchSpec::new(&topic, p, 0);
            let mut keys = Vec::new();
            while keys.len() < 12 {
                let f = c
                    .fetch_partition(&spec, &FetchOptions::default())
                    .await
                    .unwrap();
                for b in &f.batches {
                    for r in b.records().unwrap() {
                        keys.push(String::from_utf8(r.key.unwrap().to_vec()).unwrap());
                    }
                }
                spec.offset = f.next_offset;
                if f.batches.is_empty() {
                    break;
                }
            }
            let want: Vec<String> = [
                "before0", "before1", "before2", "after0", "after1", "after2",
            ]
            .iter()
            .flat_map(|t| [format!("{t}-k0"), format!("{t}-k1")])
            .collect();
            assert_eq!(keys, want);
        })
    });
    rx.recv().unwrap();
    common::signal(b1_pid, "TERM");
    stopped_tx.send(()).unwrap();
    client.join().unwrap();
    drop(b0);
}

/// Hostname verification: a certificate from a trusted CA but for another
/// name is refused. The server is a TLS listener made here for the test.
#[test]
fn tls_certificate_for_another_name_is_refused() {
    use futures_rustls::rustls;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .current_dir(d)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    ssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=elsewhere.example",
    ]);
    std::fs::write(
        d.join("ext"),
        "subjectAltName=DNS:elsewhere.example\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    ssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "ext",
    ]);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(d.join("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(d.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let conn = rustls::ServerConnection::new(std::sync::Arc::new(config)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut b = [0u8; 1];
        // The client gives up during the handshake.
        let _ = std::io::Read::read(&mut tls, &mut b);
    });
    let cfg = ClientConfig::new(format!("127.0.0.1:{port}")).with_tls(TlsConfig {
        ca_file: Some(d.join("ca.pem")),
        ..TlsConfig::default()
    });
    let e = run(move || async move { Client::connect(cfg).await.unwrap_err() });
    let text = e.to_string();
    assert!(matches!(e, ClientError::Tls { .. }), "{text}");
    assert!(text.contains("not valid for name \"127.0.0.1\""), "{text}");
    server.join().unwrap();
}

/// etcd takes at most 128 operations per transaction: a topic of 300
/// partitions is created on S3 + etcd, and one flush that covers all of them
/// commits. (A one-minute flush interval holds every partition's record
/// until SIGTERM, whose drain flushes all 300 at once.)
#[test]
fn kafscale_etcd_takes_300_partitions_in_one_flush() {
    let dir = tempfile::tempdir().unwrap();
    let suffix = uuid_ish()[..10].to_owned();
    let Some(b) = cluster_broker(0, &suffix, dir.path(), 60_000) else {
        return;
    };
    let bootstrap = format!("127.0.0.1:{}", b.port);
    let mut quick = ClientConfig::new(&bootstrap);
    // A refused commit must show here, not be hidden by retries.
    quick.retries = 0;
    quick.request_timeout = Duration::from_secs(90);
    let (sent_tx, sent_rx) = std::sync::mpsc::channel::<usize>();
    let client = std::thread::spawn(move || {
        run(move || async move {
            let c = Client::connect(quick.clone()).await.unwrap();
            let topic = unique("wide");
            c.ensure_topic(&NewTopic::new(&topic, 300)).await.unwrap();
            // Twenty producers (connections), fifteen partitions each: a
            // connection has a bounded number of requests in flight.
            let mut clients = Vec::new();
            for _ in 0..20 {
                clients.push(Client::connect(quick.clone()).await.unwrap());
            }
            // A fetch of each partition loads its log on the broker first, so
            // the appends below need no metadata look-up once they arrive.
            let specs: Vec<FetchSpec> = (0..300).map(|p| FetchSpec::new(&topic, p, 0)).collect();
            let now = FetchOptions {
                max_wait: Duration::ZERO,
                ..FetchOptions::default()
            };
            for r in c.fetch(&specs, &now).await {
                assert!(r.unwrap().batches.is_empty());
            }
            let records: Vec<Bytes> = (0..300)
                .map(|p| batch(1, 1, Compression::None, &format!("p{p}")))
                .collect();
            let total: usize = records.iter().map(Bytes::len).sum();
            sent_tx.send(total).unwrap();
            let acked = futures::future::join_all(records.into_iter().enumerate().map(|(p, r)| {
                let c = clients[p % 20].clone();
                let topic = topic.clone();
                async move { c.produce_raw(&topic, p as i32, r, Acks::All).await }
            }))
            .await;
            for (p, r) in acked.iter().enumerate() {
                let offset = r.as_ref().map(|r| r.unwrap().base_offset);
                assert_eq!(offset.ok(), Some(0), "partition {p}: {r:?}");
            }
        })
    });
    // Every request read by the broker (it counts their bytes), then the
    // drain: all 300 partitions flush at once.
    let total = sent_rx.recv().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while b.metric("kafscale_produce_bytes_total") < total as f64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the produce requests did not all arrive"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    common::signal(b.child.id(), "TERM");
    client.join().unwrap();
}

// ---- against Apache Kafka ----

#[test]
fn apache_scram_logins_over_plaintext_and_tls() {
    let Some(k) = ApacheKafka::from_env() else {
        return;
    };
    for (mechanism, tls) in [
        (Mechanism::ScramSha256, false),
        (Mechanism::ScramSha512, false),
        (Mechanism::ScramSha256, true),
        (Mechanism::ScramSha512, true),
    ] {
        let cfg = k.scram(mechanism, tls);
        run(move || async move {
            let c = Client::connect(cfg).await.unwrap();
            let batches = produce_and_fetch(&c, "sasl", Compression::Zstd).await;
            assert_eq!(batches, 1, "{mechanism:?} tls={tls}");
        });
    }
}

/// Transactions at the source, as the mirror must see them: control
/// batches come through as batches, and read_committed fetches report the
/// aborted transaction and the last stable offset.
#[test]
fn apache_read_committed_reports_aborted_transactions() {
    let Some(k) = ApacheKafka::from_env() else {
        return;
    };
    let topic = unique("txn");
    let b = k.plaintext.clone();
    let t = topic.clone();
    run(move || async move {
        let c = Client::connect(ClientConfig::new(&b)).await.unwrap();
        c.ensure_topic(&NewTopic::new(&t, 1)).await.unwrap();
    });
    const SCRIPT: &str = r#"
import sys
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": sys.argv[1], "transactional.id": "kafscale-test-" + sys.argv[2]})
p.init_transactions(30)
for n, commit in ((3, True), (2, False), (1, True)):
    p.begin_transaction()
    for i in range(n):
        p.produce(sys.argv[2], value=b"v%d" % i, partition=0)
    p.flush(30)
    if commit:
        p.commit_transaction(30)
    else:
        p.abort_transaction(30)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", SCRIPT, &k.plaintext, &topic])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run(move || async move {
        use kafscale_client::Isolation;
        let c = Client::connect(ClientConfig::new(&k.plaintext))
            .await
            .unwrap();
        let committed = FetchOptions {
            isolation: Isolation::ReadCommitted,
            ..FetchOptions::default()
        };
        let f = c
            .fetch_partition(&FetchSpec::new(&topic, 0, 0), &committed)
            .await
            .unwrap();
        // 3 records + marker, 2 aborted + marker, 1 record + marker.
        assert_eq!(f.high_watermark, 9);
        assert_eq!(f.last_stable_offset, 9);
        let control: Vec<i64> = f
            .batches
            .iter()
            .filter(|b| b.is_control())
            .map(|b| b.base_offset())
            .collect();
        assert_eq!(control, [3, 6, 8]);
        assert!(f.batches.iter().all(|b| b.is_transactional()));
        assert_eq!(f.aborted.len(), 1, "{:?}", f.aborted);
        assert_eq!(f.aborted[0].first_offset, 4);
        assert_eq!(f.aborted[0].producer_id, f.batches[0].producer_id());
        let plain = c
            .fetch_partition(&FetchSpec::new(&topic, 0, 0), &FetchOptions::default())
            .await
            .unwrap();
        assert!(
            plain.aborted.is_empty(),
            "read_uncommitted lists no aborted transactions"
        );
        assert_eq!(plain.bytes(), f.bytes(), "the same batches either way");
        let lso = c
            .list_offset_isolated(&topic, 0, OffsetSpec::Latest, Isolation::ReadCommitted)
            .await
            .unwrap();
        assert_eq!(lso.offset, 9);
    });
}

/// Mutual TLS: the SSL listener requires a client certificate from its CA.
#[test]
fn apache_mutual_tls() {
    let Some(k) = ApacheKafka::from_env() else {
        return;
    };
    let (Ok(addr), Ok(cert), Ok(key)) = (
        std::env::var("KAFSCALE_TEST_KAFKA_SSL"),
        std::env::var("KAFSCALE_TEST_KAFKA_CLIENT_CERT"),
        std::env::var("KAFSCALE_TEST_KAFKA_CLIENT_KEY"),
    ) else {
        panic!("the Apache Kafka fixture runs without its SSL listener's variables");
    };
    let with_cert = ClientConfig::new(&addr).with_tls(TlsConfig {
        ca_file: Some(k.ca_file.clone().into()),
        cert_file: Some(cert.into()),
        key_file: Some(key.into()),
    });
    let without = ClientConfig::new(&addr).with_tls(TlsConfig {
        ca_file: Some(k.ca_file.clone().into()),
        ..TlsConfig::default()
    });
    run(move || async move {
        let c = Client::connect(with_cert).await.unwrap();
        assert_eq!(produce_and_fetch(&c, "mtls", Compression::Snappy).await, 1);
        let e = Client::connect(without).await.unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, ClientError::Tls { .. }), "{text}");
        assert!(text.to_lowercase().contains("certificate"), "{text}");
    });
}

#[test]
fn apache_plain_login() {
    let Some(k) = ApacheKafka::from_env() else {
        return;
    };
    let mut cfg = k.scram(Mechanism::Plain, true);
    cfg.sasl.as_mut().unwrap().mechanism = Mechanism::Plain;
    run(move || async move {
        let c = Client::connect(cfg).await.unwrap();
        let m = c.metadata(&[]).await.unwrap();
        assert!(!m.brokers.is_empty());
    });
}

/// The fixture gives SCRAM-SHA-256 sessions on its SASL_PLAINTEXT listener a
/// 3 s lifetime: a connection used past it logs in again (KIP-368) and stays
/// the same connection; the broker would close one that did not.
#[test]
fn apache_reauthenticates_before_the_session_ends() {
    let Some(k) = ApacheKafka::from_env() else {
        return;
    };
    let cfg = k.scram(Mechanism::ScramSha256, false);
    run(move || async move {
        let c = Client::connect(cfg).await.unwrap();
        let topic = unique("reauth");
        c.ensure_topic(&NewTopic::new(&topic, 1)).await.unwrap();
        let (leader, _) = c.leader(&topic, 0).await.unwrap();
        let conn = c.broker(leader).await.unwrap();
        let lifetime = conn
            .session_lifetime()
            .expect("the broker announces a session lifetime");
        assert!(lifetime <= Duration::from_secs(3), "{lifetime:?}");
        for i in 0..4 {
            c.produce_raw(&topic, 0, batch(1, 1, Compression::None, "r"), Acks::All)
                .await
                .unwrap();
            glommio::timer::sleep(Duration::from_millis(1500)).await;
            let now = c.broker(leader).await.unwrap();
            assert!(
                std::rc::Rc::ptr_eq(&conn, &now),
                "round {i}: the connection was replaced"
            );
        }
        assert!(
            conn.reauthentications() >= 1,
            "{}",
            conn.reauthentications()
        );
        let latest = c.list_offset(&topic, 0, OffsetSpec::Latest).await.unwrap();
        assert_eq!(latest.offset, 4);
    });
}

#[test]
fn apache_wrong_password_is_one_clear_error() {
    let Some(k) = ApacheKafka::from_env() else {
        return;
    };
    for tls in [false, true] {
        let mut cfg = k.scram(Mechanism::ScramSha512, tls);
        let wrong = "definitely-not-the-password";
        cfg.sasl.as_mut().unwrap().password = Secret::new(wrong);
        let user = k.user.clone();
        let e = run(move || async move { Client::connect(cfg).await.unwrap_err() });
        let text = e.to_string();
        assert!(matches!(e, ClientError::Authentication { .. }), "{text}");
        assert!(
            text.contains("SCRAM-SHA-512") && text.contains(&user),
            "{text}"
        );
        assert!(
            !text.contains(wrong),
            "the password is not in the error: {text}"
        );
        assert!(!format!("{e:?}").contains(wrong), "nor in its Debug form");
    }
}

#[test]
fn apache_wrong_ca_is_one_clear_error() {
    let Some(k) = ApacheKafka::from_env() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (key, ca) = (dir.path().join("other.key"), dir.path().join("other.pem"));
    let st = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=not-the-kafka-ca",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&ca)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let mut cfg = k.scram(Mechanism::ScramSha256, true);
    cfg.tls = TlsConfig {
        ca_file: Some(ca),
        ..TlsConfig::default()
    };
    let e = run(move || async move { Client::connect(cfg).await.unwrap_err() });
    let text = e.to_string();
    assert!(matches!(e, ClientError::Tls { .. }), "{text}");
    assert!(
        text.contains("TLS handshake failed") && text.contains("UnknownIssuer"),
        "{text}"
    );
}
