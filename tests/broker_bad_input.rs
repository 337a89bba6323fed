//! Misbehaving clients against the real broker binary: every bad input gets
//! Kafka's answer or a closed connection, nothing is appended, and everyone
//! else keeps being served.

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::{Broker, call, closed, connect, read_frame, send_raw, start};

use bytes::{BufMut, Bytes, BytesMut};
use kafscale_codec::batch::{BatchBuilder, Compression};
use kafscale_codec::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use kafscale_codec::kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, CreateTopicsRequest, FetchRequest, FetchResponse, ProduceRequest,
    ProduceResponse, TopicName,
};
use kafscale_codec::kafka_protocol::protocol::{Decodable, StrBytes};

fn create_topic(b: &Broker, name: &str, partitions: i32) {
    let mut t =
        kafscale_codec::kafka_protocol::messages::create_topics_request::CreatableTopic::default();
    t.name = TopicName(StrBytes::from_string(name.into()));
    t.num_partitions = partitions;
    t.replication_factor = 1;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 5000;
    call(&mut connect(b), ApiKey::CreateTopics, 5, &req).expect("create topic");
}

fn produce(s: &mut TcpStream, topic: &str, parts: Vec<(i32, Bytes)>) -> Option<ProduceResponse> {
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_string(topic.into()));
    t.partition_data = parts
        .into_iter()
        .map(|(i, r)| {
            let mut p = PartitionProduceData::default();
            p.index = i;
            p.records = Some(r);
            p
        })
        .collect();
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 10_000;
    req.topic_data = vec![t];
    let mut body = call(s, ApiKey::Produce, 7, &req)?;
    Some(ProduceResponse::decode(&mut body, 7).unwrap())
}

fn batch(values: &[&str]) -> Bytes {
    let mut b = BatchBuilder::new(0, 1_778_682_180_000);
    for v in values {
        b.push(None, Some(v.as_bytes()), &[]);
    }
    b.finish()
}

fn api_versions_ok(b: &Broker) {
    let req = kafscale_codec::kafka_protocol::messages::ApiVersionsRequest::default();
    let mut body =
        call(&mut connect(b), ApiKey::ApiVersions, 2, &req).expect("broker still serves");
    let resp = ApiVersionsResponse::decode(&mut body, 2).unwrap();
    assert_eq!(resp.error_code, 0);
}

#[test]
fn oversized_and_garbage_frames_close_only_that_connection() {
    let b = start();
    let mut bystander = connect(&b);

    // A frame over --max-frame-bytes is refused from its length alone.
    let mut s = connect(&b);
    s.write_all(&(2 * 1024 * 1024i32).to_be_bytes()).unwrap();
    assert!(closed(&mut s));

    // A negative length.
    let mut s = connect(&b);
    s.write_all(&(-5i32).to_be_bytes()).unwrap();
    assert!(closed(&mut s));

    // A frame too short to hold a request header.
    let mut s = connect(&b);
    send_raw(&mut s, &[0, 18]).unwrap();
    assert!(closed(&mut s));

    // A known API with a body that is not what it claims to be.
    let mut s = connect(&b);
    let mut junk = vec![0u8, 0, 0, 7, 0, 0, 0, 1, 0, 0];
    junk.extend_from_slice(&[0xff; 40]);
    send_raw(&mut s, &junk).unwrap();
    assert!(closed(&mut s));

    // An unknown API key.
    let mut s = connect(&b);
    send_raw(&mut s, &[0x03, 0xe7, 0, 0, 0, 0, 0, 1, 0, 0]).unwrap();
    assert!(closed(&mut s));

    // The connection opened before all that still works.
    let req = kafscale_codec::kafka_protocol::messages::ApiVersionsRequest::default();
    assert!(call(&mut bystander, ApiKey::ApiVersions, 0, &req).is_some());
    api_versions_ok(&b);
}

#[test]
fn unsupported_api_versions_version_gets_kafkas_answer() {
    let b = start();
    let mut s = connect(&b);
    // ApiVersions v99: answered as v0 with UNSUPPORTED_VERSION and our ranges.
    let mut body = BytesMut::new();
    body.put_i16(ApiKey::ApiVersions as i16);
    body.put_i16(99);
    body.put_i32(7);
    body.put_i16(-1);
    body.put_u8(0);
    send_raw(&mut s, &body).unwrap();
    let mut resp = read_frame(&mut s).unwrap().slice(4..);
    let r = ApiVersionsResponse::decode(&mut resp, 0).unwrap();
    assert_eq!(r.error_code, 35);
    assert!(
        r.api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::Produce as i16 && k.max_version >= 9)
    );

    // Produce v2 (message format 0/1 era) is not served: the connection closes.
    let mut s = connect(&b);
    send_raw(
        &mut s,
        &[0, 0, 0, 2, 0, 0, 0, 9, 0xff, 0xff, 0, 1, 0, 0, 0, 0, 0, 0],
    )
    .unwrap();
    assert!(closed(&mut s));
}

/// A batch whose record count and offset range disagree (one record claiming
/// 2^31 - 1 offsets; no records), CRC valid, is refused with INVALID_RECORD
/// as Kafka does, and the log's end does not move.
#[test]
fn a_batch_claiming_more_offsets_than_records_is_invalid_record() {
    let b = start();
    create_topic(&b, "claims", 1);
    let mut s = connect(&b);
    let mut claims = batch(&["one"]).to_vec();
    claims[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
    let crc = crc32c::crc32c(&claims[21..]);
    claims[17..21].copy_from_slice(&crc.to_be_bytes());
    let mut no_records = batch(&["x"]).to_vec();
    no_records[57..61].copy_from_slice(&0i32.to_be_bytes());
    no_records[23..27].copy_from_slice(&0i32.to_be_bytes());
    let crc = crc32c::crc32c(&no_records[21..]);
    no_records[17..21].copy_from_slice(&crc.to_be_bytes());
    // Header count and offset range agree, the CRC is right, but the
    // batch holds one record, not 2^31 - 1: plain and zstd.
    let consistent = |b: Bytes| {
        let mut v = b.to_vec();
        v[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        v[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&v[21..]);
        v[17..21].copy_from_slice(&crc.to_be_bytes());
        v
    };
    let plain = consistent(batch(&["one"]));
    let mut z = BatchBuilder::new(0, 1_778_682_180_000).compression(Compression::Zstd);
    z.push(None, Some(b"one"), &[]);
    let zstd = consistent(z.finish());
    for bad in [claims, no_records, plain, zstd] {
        let r = produce(&mut s, "claims", vec![(0, Bytes::from(bad))]).unwrap();
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 87, "INVALID_RECORD");
    }
    let r = produce(&mut s, "claims", vec![(0, batch(&["a", "b"]))]).unwrap();
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(
        (p.error_code, p.base_offset),
        (0, 0),
        "the log's end did not move"
    );
    let r = produce(&mut s, "claims", vec![(0, batch(&["c"]))]).unwrap();
    assert_eq!(r.responses[0].partition_responses[0].base_offset, 2);
}

#[test]
fn corrupt_batches_get_corrupt_message_and_nothing_is_appended() {
    let b = start();
    create_topic(&b, "bad-input", 3);
    let mut s = connect(&b);

    let good = batch(&["a", "b"]);
    let mut bad_crc = batch(&["x"]).to_vec();
    let n = bad_crc.len();
    bad_crc[n - 1] ^= 0xff;
    let mut magic1 = batch(&["y"]).to_vec();
    magic1[16] = 1;
    let mut truncated = batch(&["z", "z"]).to_vec();
    truncated.truncate(truncated.len() - 3);

    // Partition 1 gets a good batch followed by a corrupt one: all or nothing.
    let mut good_then_bad = good.to_vec();
    good_then_bad.extend_from_slice(&bad_crc);
    let r = produce(
        &mut s,
        "bad-input",
        vec![
            (0, good.clone()),
            (1, Bytes::from(good_then_bad)),
            (2, Bytes::from(magic1)),
        ],
    )
    .unwrap();
    let codes: Vec<(i32, i16, i64)> = r.responses[0]
        .partition_responses
        .iter()
        .map(|p| (p.index, p.error_code, p.base_offset))
        .collect();
    assert_eq!(codes, vec![(0, 0, 0), (1, 2, -1), (2, 2, -1)]);

    let r = produce(
        &mut s,
        "bad-input",
        vec![(1, Bytes::from(truncated)), (7, good.clone())],
    )
    .unwrap();
    let codes: Vec<(i32, i16)> = r.responses[0]
        .partition_responses
        .iter()
        .map(|p| (p.index, p.error_code))
        .collect();
    assert_eq!(
        codes,
        vec![(1, 2), (7, 3)],
        "truncated batch; partition that does not exist"
    );

    let r = produce(&mut s, "no-such-topic", vec![(0, good.clone())]).unwrap();
    assert_eq!(r.responses[0].partition_responses[0].error_code, 3);

    // Partitions 1 and 2 are still empty; a good batch lands at offset 0.
    let r = produce(&mut s, "bad-input", vec![(1, good.clone()), (2, good)]).unwrap();
    let offs: Vec<(i16, i64)> = r.responses[0]
        .partition_responses
        .iter()
        .map(|p| (p.error_code, p.base_offset))
        .collect();
    assert_eq!(offs, vec![(0, 0), (0, 0)]);

    // Fetch beyond the end: OFFSET_OUT_OF_RANGE; at the end: empty, no error.
    let mut fp = kafscale_codec::kafka_protocol::messages::fetch_request::FetchPartition::default();
    fp.partition = 0;
    fp.fetch_offset = 5;
    fp.partition_max_bytes = 1 << 20;
    let mut ft = kafscale_codec::kafka_protocol::messages::fetch_request::FetchTopic::default();
    ft.topic = TopicName(StrBytes::from_string("bad-input".into()));
    ft.partitions = vec![fp.clone()];
    let mut req = FetchRequest::default();
    req.max_bytes = 1 << 20;
    req.topics = vec![ft.clone()];
    let mut body = call(&mut s, ApiKey::Fetch, 11, &req).unwrap();
    let r = FetchResponse::decode(&mut body, 11).unwrap();
    assert_eq!(r.responses[0].partitions[0].error_code, 1);
    fp.fetch_offset = 2;
    ft.partitions = vec![fp];
    req.topics = vec![ft];
    let mut body = call(&mut s, ApiKey::Fetch, 11, &req).unwrap();
    let r = FetchResponse::decode(&mut body, 11).unwrap();
    let p = &r.responses[0].partitions[0];
    assert_eq!((p.error_code, p.high_watermark), (0, 2));
    assert!(p.records.as_ref().is_none_or(|r| r.is_empty()));
}

#[test]
fn a_corrupt_idempotent_batch_does_not_advance_the_producer() {
    let b = start();
    create_topic(&b, "bad-idem", 1);
    let mut s = connect(&b);
    let idem = |seq: i32, values: &[&str]| {
        let mut bb = BatchBuilder::new(0, 1_778_682_180_000).idempotent(4242, 0, seq);
        for v in values {
            bb.push(None, Some(v.as_bytes()), &[]);
        }
        bb.finish()
    };
    let code = |s: &mut TcpStream, records: Bytes| {
        let r = produce(s, "bad-idem", vec![(0, records)]).unwrap();
        let p = &r.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    };
    assert_eq!(code(&mut s, idem(0, &["a", "b"])), (0, 0));
    // Sequence 2 with a flipped record byte: CORRUPT_MESSAGE (2), and the
    // producer's last sequence stays at 1.
    let mut bad = idem(2, &["c"]).to_vec();
    let n = bad.len();
    bad[n - 1] ^= 0x01;
    assert_eq!(code(&mut s, Bytes::from(bad)).0, 2);
    // The intact batch with sequence 2 is in order and lands at offset 2;
    // had the corrupt one advanced the producer, this would be a sequence
    // error or a duplicate.
    assert_eq!(code(&mut s, idem(2, &["c"])), (0, 2));
    // Its retry is a duplicate, answered with the same offset.
    assert_eq!(code(&mut s, idem(2, &["c"])), (0, 2));
}

/// Records of 64 KiB and more that are most of their request are kept in
/// the segment where they arrived (their offsets written into the request's
/// own buffer): the same all or nothing as copies, and they read back intact
/// at the offsets assigned. One partition per request, all about one size,
/// so every frame is mostly records whatever buffer the pool hands out.
#[test]
fn large_batches_kept_in_place_are_all_or_nothing_and_read_back_intact() {
    let b = start();
    create_topic(&b, "big-input", 3);
    let mut s = connect(&b);
    let big = |tag: &str, n: usize| {
        let mut bb = BatchBuilder::new(0, 1_778_682_180_000);
        let value = tag.repeat(1000);
        for _ in 0..n {
            bb.push(None, Some(value.as_bytes()), &[]);
        }
        bb.finish()
    };
    let a = big("a", 100);
    assert!(a.len() >= 64 * 1024, "large enough to be kept in place");
    let mut bad = big("c", 50).to_vec();
    let n = bad.len();
    bad[n - 1] ^= 0x01;
    let mut good_then_bad = big("b", 50).to_vec();
    good_then_bad.extend_from_slice(&bad);
    let code = |s: &mut TcpStream, p: i32, records: Bytes| {
        let r = produce(s, "big-input", vec![(p, records)]).unwrap();
        let p = &r.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    };
    assert_eq!(code(&mut s, 1, Bytes::from(good_then_bad)), (2, -1));
    assert_eq!(code(&mut s, 0, a.clone()), (0, 0));
    assert_eq!(code(&mut s, 2, batch(&["small"])), (0, 0));
    assert_eq!(code(&mut s, 0, a.clone()), (0, 100));
    assert_eq!(
        code(&mut s, 1, big("b", 100)),
        (0, 0),
        "nothing of the corrupt request"
    );

    let mut fp = kafscale_codec::kafka_protocol::messages::fetch_request::FetchPartition::default();
    fp.partition = 0;
    fp.partition_max_bytes = 1 << 20;
    let mut ft = kafscale_codec::kafka_protocol::messages::fetch_request::FetchTopic::default();
    ft.topic = TopicName(StrBytes::from_string("big-input".into()));
    ft.partitions = vec![fp];
    let mut req = FetchRequest::default();
    req.max_bytes = 1 << 20;
    req.topics = vec![ft];
    let mut body = call(&mut s, ApiKey::Fetch, 11, &req).unwrap();
    let r = FetchResponse::decode(&mut body, 11).unwrap();
    let p = &r.responses[0].partitions[0];
    assert_eq!((p.error_code, p.high_watermark), (0, 200));
    let records = p.records.clone().expect("records");
    let batches: Vec<_> = kafscale_codec::batch::Batches::new(records)
        .validated()
        .collect::<Result<_, _>>()
        .expect("intact batches");
    let offsets: Vec<i64> = batches.iter().map(|b| b.base_offset()).collect();
    assert_eq!(offsets, [0, 100]);
    for got in &batches {
        // Everything but the baseOffset is byte for byte what was sent.
        assert_eq!(got.as_bytes()[8..], a[8..]);
    }
}

/// A connection to the broker from a given loopback address.
fn connect_from(b: &Broker, from: &str) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: std::net::SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    let broker: std::net::SocketAddr = format!("127.0.0.1:{}", b.port).parse().unwrap();
    socket.connect(&broker.into()).unwrap();
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    s
}

fn serves(s: &mut TcpStream) -> bool {
    let req = kafscale_codec::kafka_protocol::messages::ApiVersionsRequest::default();
    call(s, ApiKey::ApiVersions, 2, &req).is_some_and(|mut body| {
        ApiVersionsResponse::decode(&mut body, 2)
            .unwrap()
            .error_code
            == 0
    })
}

#[test]
fn connections_over_the_limits_are_closed_at_once_and_places_come_back() {
    let b = common::start_with(&["--max-connections", "4", "--max-connections-per-ip", "3"]);
    // The start-up probe's connection must have been accepted (it may wait
    // in the accept queue after the harness saw the port answer) and have
    // given its place back.
    let counts = || {
        (
            common::metric(b.metrics_port, "kafscale_connections_total"),
            common::metric(b.metrics_port, "kafscale_connections_open"),
        )
    };
    for _ in 0..100 {
        if matches!(counts(), (Some(1..), Some(0))) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        matches!(counts(), (Some(1..), Some(0))),
        "the probe's connection still open before the test: {:?}",
        counts()
    );
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect_from(&b, "127.0.0.1")).collect();
    for s in &mut held {
        assert!(serves(s), "a connection within the limits");
    }
    // One address holds its three places: its fourth is closed unread.
    let mut fourth = connect_from(&b, "127.0.0.1");
    assert!(closed(&mut fourth), "over --max-connections-per-ip");
    // Another address still gets the broker's last place...
    let mut other = connect_from(&b, "127.0.0.2");
    assert!(serves(&mut other));
    // ...and then the broker is full for everyone.
    let mut fifth = connect_from(&b, "127.0.0.3");
    assert!(closed(&mut fifth), "over --max-connections");
    for s in &mut held {
        assert!(serves(s), "connections already held keep being served");
    }
    // A closed connection gives its place back.
    drop(held.pop());
    let mut again = None;
    for _ in 0..100 {
        let mut s = connect_from(&b, "127.0.0.1");
        if serves(&mut s) {
            again = Some(s);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(again.is_some(), "the place was not given back");
    let refused = common::metric(b.metrics_port, "kafscale_connections_refused_total")
        .expect("kafscale_connections_refused_total");
    assert!(refused >= 2, "{refused} refused");
}

/// A broker's resident memory.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// A Fetch (v11) of every partition of `topic` from offset 0.
fn fetch_from_start(topic: &str, partitions: i32, max_bytes: i32) -> FetchRequest {
    let mut ft = kafscale_codec::kafka_protocol::messages::fetch_request::FetchTopic::default();
    ft.topic = TopicName(StrBytes::from_string(topic.into()));
    ft.partitions = (0..partitions)
        .map(|i| {
            let mut fp =
                kafscale_codec::kafka_protocol::messages::fetch_request::FetchPartition::default();
            fp.partition = i;
            fp.fetch_offset = 0;
            fp.partition_max_bytes = max_bytes;
            fp
        })
        .collect();
    let mut req = FetchRequest::default();
    req.max_bytes = max_bytes;
    req.max_wait_ms = 100;
    req.topics = vec![ft];
    req
}

#[test]
fn answers_clients_never_read_stay_inside_the_memory_budget_and_are_given_up() {
    let b = common::start_with(&[
        "--memory-budget",
        "64MiB",
        "--fetch-cache-bytes",
        "4MiB",
        "--segment-bytes",
        "1MiB",
        "--fetch-max-bytes",
        "8MiB",
        "--frame-read-timeout-ms",
        "1000",
    ]);
    create_topic(&b, "unread", 4);
    // 30 MiB of incompressible values, far more than the fetch cache keeps:
    // fetches from offset 0 read them back from the store.
    let mut s = connect(&b);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    for _ in 0..40 {
        let parts = (0..4)
            .map(|p| {
                let mut bb = BatchBuilder::new(0, 1_778_682_180_000);
                for _ in 0..3 {
                    bb.push(None, Some(&noise(64 * 1024)), &[]);
                }
                (p, bb.finish())
            })
            .collect();
        let r = produce(&mut s, "unread", parts).unwrap_or_else(|| panic!("produce: {}", b.log()));
        for p in &r.responses[0].partition_responses {
            assert_eq!(p.error_code, 0);
        }
    }
    let before = rss(b.pid());

    // 24 consumers that ask and ask and never read an answer: each has 8
    // fetches of 8 MiB in flight.
    let req = fetch_from_start("unread", 4, 8 << 20);
    let mut body = BytesMut::new();
    body.put_i16(ApiKey::Fetch as i16);
    body.put_i16(11);
    body.put_i32(1);
    body.put_i16(-1);
    kafscale_codec::kafka_protocol::protocol::Encodable::encode(&req, &mut body, 11).unwrap();
    let hostile: Vec<TcpStream> = (0..24)
        .map(|_| {
            let mut h = connect(&b);
            for _ in 0..8 {
                send_raw(&mut h, &body).unwrap();
            }
            h
        })
        .collect();
    let mut peak = 0;
    for _ in 0..40 {
        peak = peak.max(rss(b.pid()));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // A client elsewhere that reads gets the whole of partition 0
    // meanwhile: one address holds at most half of the room.
    let mut reader = connect_from(&b, "127.0.0.2");
    let mut next = 0;
    let mut answers = 0;
    while next < 120 {
        let mut req = fetch_from_start("unread", 1, 8 << 20);
        req.topics[0].partitions[0].fetch_offset = next;
        let mut body = call(&mut reader, ApiKey::Fetch, 11, &req)
            .unwrap_or_else(|| panic!("a reading consumer is answered: {}", b.log()));
        let r = FetchResponse::decode(&mut body, 11).unwrap();
        let p = &r.responses[0].partitions[0];
        assert_eq!((p.error_code, p.high_watermark), (0, 120));
        let records = p.records.clone().unwrap_or_default();
        for batch in kafscale_codec::batch::Batches::new(records) {
            let batch = batch.unwrap();
            assert_eq!(batch.base_offset(), next, "offsets in order, none skipped");
            next = batch.last_offset() + 1;
        }
        answers += 1;
        assert!(answers < 1000, "the reader makes no progress");
    }
    for _ in 0..40 {
        peak = peak.max(rss(b.pid()));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "unread answers took {} MiB beyond the {} MiB held before them (--memory-budget 64MiB)",
        grown >> 20,
        before >> 20
    );

    // A connection whose answer is not read for the frame deadline is
    // closed, and gives back what it held.
    drop((s, reader));
    let open = || common::metric(b.metrics_port, "kafscale_connections_open").unwrap_or(0);
    for _ in 0..600 {
        if open() == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(open(), 0, "connections still open");
    assert!(
        b.log().contains("read nothing of its answer"),
        "the log names why the connections were closed"
    );
    assert_eq!(
        common::metric(b.metrics_port, "kafscale_connections_unread_closed_total"),
        Some(24)
    );
    drop(hostile);
}

#[test]
fn fetches_pipelined_on_one_connection_are_all_answered_in_order_within_a_small_budget() {
    // 16 MiB: 4 MiB of answer room, 2 MiB per shard, 1 MiB per address.
    let b = common::start_with(&["--memory-budget", "16MiB", "--fetch-max-bytes", "8MiB"]);
    create_topic(&b, "piped", 4);
    create_topic(&b, "quiet", 1);
    let mut s = connect(&b);
    for _ in 0..8 {
        let parts = (0..4)
            .map(|p| {
                let mut bb = BatchBuilder::new(0, 1_778_682_180_000);
                for i in 0..3 {
                    bb.push(None, Some(&vec![p as u8 + i; 64 * 1024]), &[]);
                }
                (p, bb.finish())
            })
            .collect();
        let r = produce(&mut s, "piped", parts).expect("produce");
        assert!(
            r.responses[0]
                .partition_responses
                .iter()
                .all(|p| p.error_code == 0)
        );
    }
    // Long polls on a topic with nothing in it, each followed by fetches
    // of partitions with more than the room: all sent before any is read.
    let encode = |req: &FetchRequest, corr: i32| {
        let mut body = BytesMut::new();
        body.put_i16(ApiKey::Fetch as i16);
        body.put_i16(11);
        body.put_i32(corr);
        body.put_i16(-1);
        kafscale_codec::kafka_protocol::protocol::Encodable::encode(req, &mut body, 11).unwrap();
        body
    };
    let mut sent = Vec::new();
    for round in 0..4 {
        let mut quiet = fetch_from_start("quiet", 1, 8 << 20);
        quiet.max_wait_ms = 1000;
        quiet.min_bytes = 1;
        sent.push((None, encode(&quiet, 100 + round)));
        for p in 0..4 {
            // Small asks: several hold room at once while a long poll waits.
            let mut req = fetch_from_start("piped", 4, 256 << 10);
            req.topics[0].partitions = vec![req.topics[0].partitions[p as usize].clone()];
            sent.push((Some(p), encode(&req, 200 + round * 4 + p)));
        }
    }
    for (_, body) in &sent {
        send_raw(&mut s, body).unwrap();
    }
    for (i, (partition, body)) in sent.iter().enumerate() {
        let mut frame = read_frame(&mut s)
            .unwrap_or_else(|| panic!("answer {i} of {} never came: {}", sent.len(), b.log()));
        assert_eq!(frame[..4], body[4..8], "answers in request order");
        let _correlation = frame.split_to(4);
        let r = FetchResponse::decode(&mut frame, 11).unwrap();
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let records = p.records.as_ref().map_or(0, |r| r.len());
        match partition {
            Some(_) => {
                assert_eq!(p.high_watermark, 24);
                assert!(records > 0, "answer {i} has records");
            }
            None => assert_eq!((p.high_watermark, records), (0, 0)),
        }
    }
}

#[test]
fn clients_racing_to_auto_create_a_topic_leave_one_creation_in_the_audit_trail() {
    let b = start();
    for round in 0..5 {
        let name = format!("raced-{round}");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let mut s = connect(&b);
                let (barrier, name) = (barrier.clone(), name.clone());
                std::thread::spawn(move || {
                    let mut t = kafscale_codec::kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
                    t.name = Some(TopicName(StrBytes::from_string(name)));
                    let mut req = kafscale_codec::kafka_protocol::messages::MetadataRequest::default();
                    req.topics = Some(vec![t]);
                    req.allow_auto_topic_creation = true;
                    barrier.wait();
                    call(&mut s, ApiKey::Metadata, 9, &req).expect("metadata");
                })
            })
            .collect();
        for r in racers {
            r.join().unwrap();
        }
        let made = format!("\"target\":\"topic {name}, 1 partitions (auto-created by Metadata)\"");
        let log = b.log();
        assert_eq!(log.matches(&made).count(), 1, "{log}");
    }
}

#[test]
fn partitions_behind_idle_ones_and_batches_over_the_partition_limit_are_still_fetched() {
    // 16 MiB: 1 MiB of answer room per client address on a shard.
    let b = common::start_with(&["--memory-budget", "16MiB"]);
    create_topic(&b, "mostly-idle", 12);
    let mut s = connect(&b);
    let mut bb = BatchBuilder::new(0, 1_778_682_180_000);
    for i in 0..3u8 {
        bb.push(None, Some(&vec![i; 64 * 1024]), &[]);
    }
    let r = produce(&mut s, "mostly-idle", vec![(11, bb.finish())]).expect("produce");
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    let mut fetch = |partition_max: i32| {
        let mut req = fetch_from_start("mostly-idle", 12, partition_max);
        req.max_bytes = 8 << 20;
        req.max_wait_ms = 200;
        let mut body = call(&mut s, ApiKey::Fetch, 11, &req).expect("fetch");
        let r = FetchResponse::decode(&mut body, 11).unwrap();
        let p = r.responses[0]
            .partitions
            .iter()
            .find(|p| p.partition_index == 11)
            .unwrap()
            .clone();
        (p.high_watermark, p.records.map_or(0, |r| r.len()))
    };
    // Eleven idle partitions first take the whole room in request order;
    // the one with records is read with what they left unused.
    let (hw, bytes) = fetch(1 << 20);
    assert_eq!(hw, 3);
    assert!(bytes > 192 * 1024, "{bytes} bytes");
    // Its batch is larger than the partition limit: as the first partition
    // with records, it sends that batch whole (Kafka's rule).
    let (hw, bytes) = fetch(16 * 1024);
    assert_eq!(hw, 3);
    assert!(bytes > 192 * 1024, "{bytes} bytes");
}

/// One client address whose connections announce large frames and stall
/// holds at most half of a shard's frame budget: a large produce from
/// another address is served at once, not after the stalled frames' read
/// deadline.
#[test]
fn stalled_large_frames_of_one_address_leave_room_for_others() {
    use std::io::Write;
    use std::time::Duration;
    let b = common::start_with(&[
        "--frame-read-timeout-ms",
        "20000",
        "--memory-budget",
        "16MiB",
    ]);
    create_topic(&b, "roomy", 1);
    // 40 connections from 127.0.0.1, 1 MiB announced, 10 bytes sent: far
    // more than both shards' frame budgets (4 MiB each).
    let mut stalled = Vec::new();
    for _ in 0..40 {
        let mut s = connect_from(&b, "127.0.0.1");
        let mut head = (1i32 << 20).to_be_bytes().to_vec();
        head.extend_from_slice(&[0u8; 10]);
        s.write_all(&head).unwrap();
        stalled.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    // A 512 KiB batch (a frame over the 64 KiB that never waits) from
    // 127.0.0.2, on a few connections so both shards take one.
    let value = vec![7u8; 512 * 1024];
    let mut bb = BatchBuilder::new(0, 1_778_682_180_000);
    bb.push(None, Some(&value), &[]);
    let big = bb.finish();
    for _ in 0..4 {
        let mut other = connect_from(&b, "127.0.0.2");
        other
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let started = std::time::Instant::now();
        let r = produce(&mut other, "roomy", vec![(0, big.clone())]).expect("answered");
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "another address waited {:?} behind stalled frames",
            started.elapsed()
        );
    }
    drop(stalled);
}
