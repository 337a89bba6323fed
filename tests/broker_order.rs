//! Requests pipelined on one connection are applied in the order sent.

mod common;

use std::io::Write;

use bytes::Bytes;
use common::{connect, read_frame, start};
use kafscale_codec::batch::BatchBuilder;
use kafscale_codec::kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafscale_codec::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use kafscale_codec::kafka_protocol::messages::*;
use kafscale_codec::kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

fn frame<T: Encodable>(api: ApiKey, version: i16, corr: i32, req: &T) -> Vec<u8> {
    let mut body = bytes::BytesMut::new();
    use bytes::BufMut;
    body.put_i16(api as i16);
    body.put_i16(version);
    body.put_i32(corr);
    body.put_i16(-1);
    req.encode(&mut body, version).unwrap();
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn produce(topic: &str, records: Bytes) -> ProduceRequest {
    let mut p = PartitionProduceData::default();
    p.index = 0;
    p.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_string(topic.into()));
    t.partition_data = vec![p];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 30_000;
    req.topic_data = vec![t];
    req
}

#[test]
fn a_big_produce_followed_by_a_small_one_keeps_its_place() {
    let b = start();
    let mut c = connect(&b);
    let mut t = CreatableTopic::default();
    t.name = TopicName(StrBytes::from_string("order".into()));
    t.num_partitions = 1;
    t.replication_factor = 1;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    c.write_all(&frame(ApiKey::CreateTopics, 4, 1, &req))
        .unwrap();
    read_frame(&mut c).unwrap();

    for round in 0..5 {
        let mut big = BatchBuilder::new(0, 1);
        big.push(None, Some(&vec![7u8; 900 * 1024]), &[]);
        let mut small = BatchBuilder::new(0, 1);
        small.push(None, Some(b"small"), &[]);
        // Both sent before either answer is read.
        let mut wire = frame(ApiKey::Produce, 7, 10, &produce("order", big.finish()));
        wire.extend(frame(
            ApiKey::Produce,
            7,
            11,
            &produce("order", small.finish()),
        ));
        c.write_all(&wire).unwrap();
        let mut offsets = Vec::new();
        for want in [10, 11] {
            let resp = read_frame(&mut c).unwrap();
            assert_eq!(&resp[..4], &i32::to_be_bytes(want));
            let mut body = resp.slice(4..);
            let r = ProduceResponse::decode(&mut body, 7).unwrap();
            let p = &r.responses[0].partition_responses[0];
            assert_eq!(p.error_code, 0);
            offsets.push(p.base_offset);
        }
        assert_eq!(
            offsets,
            vec![2 * round, 2 * round + 1],
            "the small record overtook the big one"
        );
    }
}
