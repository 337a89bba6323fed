//! `kafscale-perf`: a load generator that speaks the Kafka protocol through
//! kafscale's codec, usable against any Kafka-compatible broker.
//!
//! ```text
//! kafscale-perf produce --bootstrap 127.0.0.1:9092 --topic t --partitions 8 \
//!     --record-size 1024 --batch-size 1MiB --acks -1 --total-bytes 2GiB --connections 4
//! kafscale-perf consume --bootstrap 127.0.0.1:9092 --topic t --server-pid $(pidof kafscale)
//! kafscale-perf fetch-raw --bootstrap 127.0.0.1:9092 --topic t
//! ```

mod client;
mod fetch_raw;
mod server;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use kafscale_codec::batch::{BatchBuilder, Batches, Compression};
use kafscale_codec::kafka_protocol::messages::ApiKey;
use serde::Serialize;

use client::{Conn, FETCH_V, PRODUCE_V};

#[derive(Parser, Debug)]
#[command(
    name = "kafscale-perf",
    version,
    about = "Kafka load generator: throughput, latency, server CPU and memory"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Produce records as fast as allowed and measure throughput and latency.
    Produce(ProduceArgs),
    /// Read a topic from the earliest offset and measure throughput.
    Consume(ConsumeArgs),
    /// Read a topic's raw record batches with kafscale-client (no
    /// decompression) and measure throughput and CPU per GiB.
    FetchRaw(fetch_raw::FetchRawArgs),
}

#[derive(Args, Debug, Clone)]
struct Common {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long)]
    topic: String,
    /// Sample this process's CPU time and peak RSS during the run.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug, Clone)]
struct ProduceArgs {
    #[command(flatten)]
    common: Common,
    /// Partitions (the topic is created with this many if it does not exist).
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Producer connections, each with its own partitions.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Bytes of records per batch (one batch per produce request).
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    batch_size: u64,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 5)]
    in_flight: usize,
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    acks: i16,
    /// Stop after this many record bytes (default 1GiB) ...
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    total_bytes: u64,
    /// ... or after this many seconds, whichever comes first.
    #[arg(long)]
    duration: Option<f64>,
    /// Record bytes per second, all connections together.
    #[arg(long, value_parser = parse_size)]
    rate: Option<u64>,
    /// Batch compression: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = parse_codec)]
    compression: Compression,
}

fn parse_codec(s: &str) -> Result<Compression, String> {
    Ok(match s {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => {
            return Err(format!(
                "unknown compression {other:?} (none, gzip, snappy, lz4, zstd)"
            ));
        }
    })
}

#[derive(Args, Debug, Clone)]
struct ConsumeArgs {
    #[command(flatten)]
    common: Common,
    /// Bytes per fetch per partition.
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    fetch_size: u64,
    /// Records expected (the run fails if it reads a different number).
    #[arg(long)]
    expect_records: Option<u64>,
}

pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..split]
        .parse()
        .map_err(|_| format!("{s:?} is not a size"))?;
    let mult = match s[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        u => return Err(format!("unknown unit {u:?}")),
    };
    Ok(n * mult)
}

#[derive(Serialize, Debug)]
struct Report {
    mode: &'static str,
    topic: String,
    records: u64,
    bytes: u64,
    seconds: f64,
    mib_per_s: f64,
    records_per_s: f64,
    latency_ms: Option<Latency>,
    server_cpu_seconds: Option<f64>,
    server_cpu_seconds_per_gb: Option<f64>,
    server_peak_rss_mib: Option<f64>,
}

#[derive(Serialize, Debug)]
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Report {
    fn new(
        mode: &'static str,
        topic: &str,
        records: u64,
        bytes: u64,
        seconds: f64,
        h: &Histogram<u64>,
        usage: Option<server::Usage>,
    ) -> Self {
        Self {
            mode,
            topic: topic.to_owned(),
            records,
            bytes,
            seconds,
            mib_per_s: bytes as f64 / 1048576.0 / seconds,
            records_per_s: records as f64 / seconds,
            latency_ms: latency(h),
            server_cpu_seconds: usage.as_ref().map(|u| u.cpu_seconds),
            server_cpu_seconds_per_gb: usage.as_ref().map(|u| u.cpu_seconds / (bytes as f64 / 1e9)),
            server_peak_rss_mib: usage.as_ref().map(|u| u.peak_rss as f64 / 1048576.0),
        }
    }
}

fn latency(h: &Histogram<u64>) -> Option<Latency> {
    (!h.is_empty()).then(|| Latency {
        p50: h.value_at_quantile(0.5) as f64 / 1000.0,
        p99: h.value_at_quantile(0.99) as f64 / 1000.0,
        p999: h.value_at_quantile(0.999) as f64 / 1000.0,
        max: h.max() as f64 / 1000.0,
    })
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Produce(a) => produce(a),
        Cmd::Consume(a) => consume(a),
        Cmd::FetchRaw(a) => fetch_raw::fetch_raw(a),
    };
    if let Err(e) = result {
        eprintln!("kafscale-perf: {e:#}");
        std::process::exit(1);
    }
}

fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    println!(
        "{} {}: {} records, {:.1} MiB in {:.2} s",
        report.mode,
        report.topic,
        report.records,
        report.bytes as f64 / 1048576.0,
        report.seconds
    );
    println!(
        "  throughput   {:.1} MiB/s, {:.0} records/s",
        report.mib_per_s, report.records_per_s
    );
    if let Some(l) = &report.latency_ms {
        println!(
            "  latency ms   p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            l.p50, l.p99, l.p999, l.max
        );
    }
    if let (Some(cpu), Some(per_gb), Some(rss)) = (
        report.server_cpu_seconds,
        report.server_cpu_seconds_per_gb,
        report.server_peak_rss_mib,
    ) {
        println!("  server       {cpu:.2} CPU-s, {per_gb:.2} CPU-s/GB, peak RSS {rss:.0} MiB");
    }
    Ok(())
}

/// A pool of random (incompressible, non-repeating) payloads.
fn payload_pool(size: usize) -> Vec<u8> {
    let mut v = vec![0u8; size];
    let mut x: u64 = rand::random::<u64>() | 1;
    for c in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
    v
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Builds one batch of `n` records, values sliced from the pool at `at`.
fn build_batch(
    pool: &[u8],
    at: &mut usize,
    n: usize,
    record_size: usize,
    codec: Compression,
) -> Bytes {
    let mut b = BatchBuilder::new(0, now_ms()).compression(codec);
    for _ in 0..n {
        if *at + record_size > pool.len() {
            *at = (*at * 7 + 13) % (pool.len() - record_size);
        }
        b.push(None, Some(&pool[*at..*at + record_size]), &[]);
        *at += record_size;
    }
    b.finish()
}

fn produce(a: ProduceArgs) -> anyhow::Result<()> {
    let mut admin = Conn::connect(&a.common.bootstrap)?;
    let partitions = admin.ensure_topic(&a.common.topic, a.partitions)?;
    let per_batch = ((a.batch_size as usize) / (a.record_size + 8)).max(1);
    let sampler = a
        .common
        .server_pid
        .map(server::Sampler::start)
        .transpose()?;
    let sent_bytes = Arc::new(AtomicU64::new(0));
    let sent_records = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1,
        600_000_000,
        3,
    )?));
    let started = Instant::now();
    let deadline = a.duration.map(|d| started + Duration::from_secs_f64(d));
    let connections = a.connections.max(1).min(partitions as usize);
    let pool = Arc::new(payload_pool(64 * 1024 * 1024));
    let progress = !a.common.json;

    let mut threads = Vec::new();
    for c in 0..connections {
        let a = a.clone();
        let (sent_bytes, sent_records, hist, pool) = (
            sent_bytes.clone(),
            sent_records.clone(),
            hist.clone(),
            pool.clone(),
        );
        let mine: Vec<i32> = (0..partitions)
            .filter(|p| *p as usize % connections == c)
            .collect();
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let mut conn = Conn::connect(&a.common.bootstrap)?;
            let mut at = (c * 7919 * 1024) % (pool.len() / 2);
            let mut pending: std::collections::VecDeque<(i32, Instant, u64, u64)> =
                Default::default();
            let mut next_partition = 0usize;
            let mut local = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
            loop {
                let done = sent_bytes.load(Ordering::Relaxed) >= a.total_bytes
                    || deadline.is_some_and(|d| Instant::now() >= d);
                if !done && pending.len() < a.in_flight {
                    if let Some(rate) = a.rate {
                        let allowed = rate as f64 * started.elapsed().as_secs_f64();
                        if sent_bytes.load(Ordering::Relaxed) as f64 > allowed {
                            std::thread::sleep(Duration::from_millis(1));
                            continue;
                        }
                    }
                    let batch =
                        build_batch(&pool, &mut at, per_batch, a.record_size, a.compression);
                    let p = mine[next_partition % mine.len()];
                    next_partition += 1;
                    let corr = conn.send(
                        ApiKey::Produce,
                        PRODUCE_V,
                        &client::produce_request(&a.common.topic, p, a.acks, batch),
                    )?;
                    let bytes = (per_batch * a.record_size) as u64;
                    sent_bytes.fetch_add(bytes, Ordering::Relaxed);
                    if a.acks == 0 {
                        sent_records.fetch_add(per_batch as u64, Ordering::Relaxed);
                        continue;
                    }
                    pending.push_back((corr, Instant::now(), bytes, per_batch as u64));
                    continue;
                }
                let Some((corr, sent_at, _, records)) = pending.pop_front() else {
                    break;
                };
                let (got, body) = conn.recv(ApiKey::Produce, PRODUCE_V)?;
                if got != corr {
                    bail!("response out of order: {got} for {corr}");
                }
                client::check_produce(body)?;
                local.record(sent_at.elapsed().as_micros() as u64).ok();
                sent_records.fetch_add(records, Ordering::Relaxed);
            }
            hist.lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .add(&local)?;
            Ok(())
        }));
    }
    let mut last = Instant::now();
    while threads.iter().any(|t| !t.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        if progress && last.elapsed() >= Duration::from_secs(2) {
            last = Instant::now();
            let b = sent_bytes.load(Ordering::Relaxed);
            eprintln!(
                "  ... {:.0} MiB sent, {:.1} MiB/s",
                b as f64 / 1048576.0,
                b as f64 / 1048576.0 / started.elapsed().as_secs_f64()
            );
        }
    }
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("producer thread panicked"))??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let usage = sampler.map(server::Sampler::finish);
    let bytes = sent_bytes.load(Ordering::Relaxed);
    let records = sent_records.load(Ordering::Relaxed);
    let h = hist.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let report = Report::new(
        "produce",
        &a.common.topic,
        records,
        bytes,
        seconds,
        &h,
        usage,
    );
    print(&report, a.common.json)
}

fn consume(a: ConsumeArgs) -> anyhow::Result<()> {
    let mut admin = Conn::connect(&a.common.bootstrap)?;
    let partitions = admin.ensure_topic(&a.common.topic, 1)?;
    let ends = admin.latest_offsets(&a.common.topic, partitions)?;
    let sampler = a
        .common
        .server_pid
        .map(server::Sampler::start)
        .transpose()?;
    let started = Instant::now();
    let bytes = Arc::new(AtomicU64::new(0));
    let records = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1,
        3_600_000_000,
        3,
    )?));
    let mut threads = Vec::new();
    for (p, end) in ends.into_iter().enumerate() {
        let a = a.clone();
        let (bytes, records, hist) = (bytes.clone(), records.clone(), hist.clone());
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let mut conn = Conn::connect(&a.common.bootstrap)?;
            let mut offset = 0i64;
            let mut local = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
            while offset < end {
                let req =
                    client::fetch_request(&a.common.topic, p as i32, offset, a.fetch_size as i32);
                conn.send(ApiKey::Fetch, FETCH_V, &req)?;
                let (_, body) = conn.recv(ApiKey::Fetch, FETCH_V)?;
                let (code, _, data) = client::parse_fetch(body)?;
                if code != 0 {
                    bail!("fetch partition {p} at {offset}: error code {code}");
                }
                let now = now_ms();
                for batch in Batches::new(data).allow_partial_tail() {
                    let batch = batch.context("bad batch in fetch response")?;
                    if batch.last_offset() < offset {
                        continue;
                    }
                    batch.validate().context("batch CRC")?;
                    offset = batch.last_offset() + 1;
                    records.fetch_add(batch.record_count() as u64, Ordering::Relaxed);
                    bytes.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    local
                        .record(((now - batch.max_timestamp()).max(0) as u64) * 1000)
                        .ok();
                }
            }
            hist.lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .add(&local)?;
            Ok(())
        }));
    }
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("consumer thread panicked"))??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let usage = sampler.map(server::Sampler::finish);
    let (bytes, records) = (
        bytes.load(Ordering::Relaxed),
        records.load(Ordering::Relaxed),
    );
    if let Some(want) = a.expect_records
        && want != records
    {
        bail!("read {records} records, expected {want}");
    }
    let h = hist.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let report = Report::new(
        "consume",
        &a.common.topic,
        records,
        bytes,
        seconds,
        &h,
        usage,
    );
    print(&report, a.common.json)
}
