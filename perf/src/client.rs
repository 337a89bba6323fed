//! A minimal blocking Kafka client over our codec: enough to drive load.

use std::io::{Read, Write};
use std::net::TcpStream;

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use kafscale_codec::kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafscale_codec::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafscale_codec::kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsTopic,
};
use kafscale_codec::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use kafscale_codec::kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, FetchResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest,
    ProduceResponse, TopicName,
};
use kafscale_codec::kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

pub const PRODUCE_V: i16 = 7;
pub const FETCH_V: i16 = 11;

pub struct Conn {
    stream: TcpStream,
    next_corr: i32,
}

pub fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

impl Conn {
    pub fn connect(addr: &str) -> anyhow::Result<Self> {
        let stream =
            TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            next_corr: 1,
        })
    }

    /// Writes a request; returns its correlation id.
    pub fn send<T: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &T,
    ) -> anyhow::Result<i32> {
        let corr = self.next_corr;
        self.next_corr += 1;
        let mut body = BytesMut::with_capacity(128);
        body.put_i32(0);
        body.put_i16(api as i16);
        body.put_i16(version);
        body.put_i32(corr);
        body.put_i16(4);
        body.put_slice(b"perf");
        if api.request_header_version(version) >= 2 {
            body.put_u8(0);
        }
        req.encode(&mut body, version)
            .map_err(|e| anyhow::anyhow!("encode: {e}"))?;
        let len = (body.len() - 4) as i32;
        body[..4].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&body)?;
        Ok(corr)
    }

    /// Reads one response; returns (correlation id, body after the header).
    pub fn recv(&mut self, api: ApiKey, version: i16) -> anyhow::Result<(i32, Bytes)> {
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .context("broker closed the connection")?;
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut buf)?;
        let buf = Bytes::from(buf);
        let corr = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let skip = if api.response_header_version(version) >= 1 {
            5
        } else {
            4
        };
        Ok((corr, buf.slice(skip..)))
    }

    pub fn call<T: Encodable, R: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &T,
    ) -> anyhow::Result<R> {
        let corr = self.send(api, version, req)?;
        let (got, mut body) = self.recv(api, version)?;
        if got != corr {
            bail!("correlation id {got}, expected {corr}");
        }
        R::decode(&mut body, version).map_err(|e| anyhow::anyhow!("decode {api:?}: {e}"))
    }

    /// Partition count of a topic, creating it with `partitions` if missing.
    pub fn ensure_topic(&mut self, topic: &str, partitions: i32) -> anyhow::Result<i32> {
        let mut t = CreatableTopic::default();
        t.name = topic_name(topic);
        t.num_partitions = partitions;
        t.replication_factor = 1;
        let mut req = CreateTopicsRequest::default();
        req.topics = vec![t];
        req.timeout_ms = 30_000;
        let r: CreateTopicsResponse = self.call(ApiKey::CreateTopics, 5, &req)?;
        let code = r.topics.first().map_or(0, |t| t.error_code);
        if code != 0 && code != 36 {
            bail!("CreateTopics {topic}: error code {code}");
        }
        let mut mreq = MetadataRequest::default();
        let mut mt = kafscale_codec::kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
        mt.name = Some(topic_name(topic));
        mreq.topics = Some(vec![mt]);
        let m: MetadataResponse = self.call(ApiKey::Metadata, 9, &mreq)?;
        let t = m.topics.first().context("no topic in metadata")?;
        if t.error_code != 0 {
            bail!("Metadata {topic}: error code {}", t.error_code);
        }
        Ok(t.partitions.len() as i32)
    }

    pub fn latest_offsets(&mut self, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
        let mut t = ListOffsetsTopic::default();
        t.name = topic_name(topic);
        t.partitions = (0..partitions)
            .map(|p| {
                let mut lp = ListOffsetsPartition::default();
                lp.partition_index = p;
                lp.timestamp = -1;
                lp
            })
            .collect();
        let mut req = ListOffsetsRequest::default();
        req.topics = vec![t];
        let r: ListOffsetsResponse = self.call(ApiKey::ListOffsets, 5, &req)?;
        Ok(r.topics[0].partitions.iter().map(|p| p.offset).collect())
    }
}

pub fn produce_request(topic: &str, partition: i32, acks: i16, records: Bytes) -> ProduceRequest {
    let mut p = PartitionProduceData::default();
    p.index = partition;
    p.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = topic_name(topic);
    t.partition_data = vec![p];
    let mut req = ProduceRequest::default();
    req.acks = acks;
    req.timeout_ms = 60_000;
    req.topic_data = vec![t];
    req
}

pub fn check_produce(mut body: Bytes) -> anyhow::Result<()> {
    let r = ProduceResponse::decode(&mut body, PRODUCE_V)
        .map_err(|e| anyhow::anyhow!("decode produce: {e}"))?;
    for t in &r.responses {
        for p in &t.partition_responses {
            if p.error_code != 0 {
                bail!(
                    "produce to partition {} failed with error code {}",
                    p.index,
                    p.error_code
                );
            }
        }
    }
    Ok(())
}

pub fn fetch_request(topic: &str, partition: i32, offset: i64, max_bytes: i32) -> FetchRequest {
    let mut p = FetchPartition::default();
    p.partition = partition;
    p.fetch_offset = offset;
    p.partition_max_bytes = max_bytes;
    let mut t = FetchTopic::default();
    t.topic = topic_name(topic);
    t.partitions = vec![p];
    let mut req = FetchRequest::default();
    req.max_wait_ms = 500;
    req.min_bytes = 1;
    req.max_bytes = max_bytes;
    req.topics = vec![t];
    req
}

pub fn parse_fetch(mut body: Bytes) -> anyhow::Result<(i16, i64, Bytes)> {
    let r = FetchResponse::decode(&mut body, FETCH_V)
        .map_err(|e| anyhow::anyhow!("decode fetch: {e}"))?;
    let p = &r.responses[0].partitions[0];
    Ok((
        p.error_code,
        p.high_watermark,
        p.records.clone().unwrap_or_default(),
    ))
}
