//! `kafscale-perf`: a load generator that speaks the Kafka protocol through
//! kafscale-client on one glommio executor, usable against any
//! Kafka-compatible broker.
//!
//! ```text
//! kafscale-perf produce --bootstrap 127.0.0.1:9092 --topic t --partitions 8 \
//!     --record-size 1024 --batch-size 1MiB --acks -1 --total-bytes 2GiB --connections 4
//! kafscale-perf consume --bootstrap 127.0.0.1:9092 --topic t --server-pid $(pidof kafscale)
//! kafscale-perf fetch-raw --bootstrap 127.0.0.1:9092 --topic t
//! ```

mod fetch_raw;
mod server;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use kafscale_client::{Acks, Client, ClientConfig, FetchOptions, FetchSpec, NewTopic, OffsetSpec};
use kafscale_codec::batch::{BatchBuilder, Compression};
use serde::Serialize;

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
    #[command(flatten)]
    security: fetch_raw::SecurityArgs,
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

/// Runs `f` on one glommio executor with the client's memory settings.
fn on_executor<T, F, Fut>(f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>> + 'static,
{
    kafscale_shard::raise_memlock_limit();
    kafscale_shard::block_on(f).map_err(|e| anyhow::anyhow!("{e}"))?
}

fn client_config(common: &Common) -> anyhow::Result<ClientConfig> {
    common
        .security
        .apply(ClientConfig::new(&common.bootstrap).with_client_id("kafscale-perf"))
}

/// Partition count of a topic, creating it with `partitions` if missing.
async fn ensure_topic(client: &Client, topic: &str, partitions: i32) -> anyhow::Result<i32> {
    client
        .ensure_topic(&NewTopic::new(topic, partitions))
        .await?;
    let m = client.metadata(&[topic]).await?;
    let t = m.topic(topic).context("no topic in metadata")?;
    Ok(t.partitions.len() as i32)
}

fn produce(a: ProduceArgs) -> anyhow::Result<()> {
    let sampler = a
        .common
        .server_pid
        .map(server::Sampler::start)
        .transpose()?;
    let args = a.clone();
    let (records, bytes, seconds, hist) = on_executor(move || produce_run(args))?;
    let usage = sampler.map(server::Sampler::finish);
    let report = Report::new(
        "produce",
        &a.common.topic,
        records,
        bytes,
        seconds,
        &hist,
        usage,
    );
    print(&report, a.common.json)
}

struct Totals {
    bytes: Cell<u64>,
    records: Cell<u64>,
    hist: RefCell<Histogram<u64>>,
}

async fn produce_run(a: ProduceArgs) -> anyhow::Result<(u64, u64, f64, Histogram<u64>)> {
    let admin = Client::connect(client_config(&a.common)?).await?;
    let partitions = ensure_topic(&admin, &a.common.topic, a.partitions).await?;
    let per_batch = ((a.batch_size as usize) / (a.record_size + 8)).max(1);
    let totals = Rc::new(Totals {
        bytes: Cell::new(0),
        records: Cell::new(0),
        hist: RefCell::new(Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?),
    });
    let started = Instant::now();
    let deadline = a.duration.map(|d| started + Duration::from_secs_f64(d));
    let connections = a.connections.max(1).min(partitions as usize);
    let pool = Rc::new(payload_pool(64 * 1024 * 1024));
    let acks = match a.acks {
        0 => Acks::None,
        1 => Acks::Leader,
        _ => Acks::All,
    };
    let done = Rc::new(Cell::new(false));
    if !a.common.json {
        let (totals, done) = (totals.clone(), done.clone());
        glommio::spawn_local(async move {
            while !done.get() {
                glommio::timer::sleep(Duration::from_secs(2)).await;
                let b = totals.bytes.get();
                eprintln!(
                    "  ... {:.0} MiB sent, {:.1} MiB/s",
                    b as f64 / 1048576.0,
                    b as f64 / 1048576.0 / started.elapsed().as_secs_f64()
                );
            }
        })
        .detach();
    }
    let mut workers = Vec::new();
    for c in 0..connections {
        // A client per connection, as separate producers would have.
        let client = Client::connect(client_config(&a.common)?).await?;
        let mine: Rc<Vec<i32>> = Rc::new(
            (0..partitions)
                .filter(|p| *p as usize % connections == c)
                .collect(),
        );
        let next = Rc::new(Cell::new(0usize));
        let at = Rc::new(Cell::new((c * 7919 * 1024) % (pool.len() / 2)));
        for _ in 0..a.in_flight.max(1) {
            let (client, mine, next, at, pool, totals, a) = (
                client.clone(),
                mine.clone(),
                next.clone(),
                at.clone(),
                pool.clone(),
                totals.clone(),
                a.clone(),
            );
            workers.push(glommio::spawn_local(async move {
                loop {
                    if totals.bytes.get() >= a.total_bytes
                        || deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        return Ok::<_, anyhow::Error>(());
                    }
                    if let Some(rate) = a.rate {
                        let allowed = rate as f64 * started.elapsed().as_secs_f64();
                        if totals.bytes.get() as f64 > allowed {
                            glommio::timer::sleep(Duration::from_millis(1)).await;
                            continue;
                        }
                    }
                    let mut pos = at.get();
                    let batch =
                        build_batch(&pool, &mut pos, per_batch, a.record_size, a.compression);
                    at.set(pos);
                    let p = mine[next.get() % mine.len()];
                    next.set(next.get() + 1);
                    let bytes = (per_batch * a.record_size) as u64;
                    totals.bytes.set(totals.bytes.get() + bytes);
                    let sent_at = Instant::now();
                    client
                        .produce_raw(&a.common.topic, p, batch, acks)
                        .await
                        .with_context(|| format!("produce to partition {p}"))?;
                    if acks != Acks::None {
                        totals
                            .hist
                            .borrow_mut()
                            .record(sent_at.elapsed().as_micros() as u64)
                            .ok();
                    }
                    totals.records.set(totals.records.get() + per_batch as u64);
                }
            }));
        }
    }
    let mut result = Ok(());
    for w in workers {
        if let Err(e) = w.await {
            result = Err(e);
        }
    }
    done.set(true);
    result?;
    let seconds = started.elapsed().as_secs_f64();
    let hist = totals.hist.borrow().clone();
    Ok((totals.records.get(), totals.bytes.get(), seconds, hist))
}

fn consume(a: ConsumeArgs) -> anyhow::Result<()> {
    let sampler = a
        .common
        .server_pid
        .map(server::Sampler::start)
        .transpose()?;
    let args = a.clone();
    let (records, bytes, seconds, hist) = on_executor(move || consume_run(args))?;
    let usage = sampler.map(server::Sampler::finish);
    if let Some(want) = a.expect_records
        && want != records
    {
        bail!("read {records} records, expected {want}");
    }
    let report = Report::new(
        "consume",
        &a.common.topic,
        records,
        bytes,
        seconds,
        &hist,
        usage,
    );
    print(&report, a.common.json)
}

async fn consume_run(a: ConsumeArgs) -> anyhow::Result<(u64, u64, f64, Histogram<u64>)> {
    let client = Client::connect(client_config(&a.common)?).await?;
    let partitions = ensure_topic(&client, &a.common.topic, 1).await?;
    let parts: Vec<i32> = (0..partitions).collect();
    let ends = client
        .list_offsets(&a.common.topic, &parts, OffsetSpec::Latest)
        .await?;
    let totals = Rc::new(Totals {
        bytes: Cell::new(0),
        records: Cell::new(0),
        hist: RefCell::new(Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?),
    });
    let started = Instant::now();
    let mut readers = Vec::new();
    for end in ends {
        let (client, totals, a) = (client.clone(), totals.clone(), a.clone());
        readers.push(glommio::spawn_local(async move {
            let mut spec = FetchSpec::new(&a.common.topic, end.partition, 0);
            spec.max_bytes = a.fetch_size.min(i32::MAX as u64) as i32;
            let opts = FetchOptions::default();
            while spec.offset < end.offset {
                let f = client
                    .fetch_partition(&spec, &opts)
                    .await
                    .with_context(|| {
                        format!("fetch partition {} at {}", spec.partition, spec.offset)
                    })?;
                let now = now_ms();
                for batch in &f.batches {
                    if batch.last_offset() < spec.offset {
                        continue;
                    }
                    totals
                        .records
                        .set(totals.records.get() + batch.record_count() as u64);
                    totals.bytes.set(totals.bytes.get() + batch.len() as u64);
                    totals
                        .hist
                        .borrow_mut()
                        .record(((now - batch.max_timestamp()).max(0) as u64) * 1000)
                        .ok();
                }
                spec.offset = f.next_offset;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for r in readers {
        r.await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let hist = totals.hist.borrow().clone();
    Ok((totals.records.get(), totals.bytes.get(), seconds, hist))
}
