//! `fetch-raw`: reads a topic from its earliest to its latest offsets with
//! kafscale-client's raw fetch (batches as slices of the response frames,
//! neither decompressed nor split into records) and reports throughput and
//! this process's CPU per GiB: the mirror's read path, measured alone.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use kafscale_client::{
    Client, ClientConfig, FetchOptions, FetchSpec, Mechanism, OffsetSpec, Secret, TlsConfig,
};
use serde::Serialize;

use crate::server::cpu_seconds;

/// SASL and TLS of the connections (produce, consume and fetch-raw).
#[derive(Args, Debug, Clone, Default)]
pub struct SecurityArgs {
    /// SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512); the password
    /// comes from the KAFSCALE_PERF_SASL_PASSWORD environment variable.
    #[arg(long)]
    sasl_mechanism: Option<String>,
    #[arg(long)]
    sasl_username: Option<String>,
    /// CA file for TLS (turns TLS on).
    #[arg(long)]
    ssl_ca: Option<std::path::PathBuf>,
}

impl SecurityArgs {
    pub fn apply(&self, mut config: ClientConfig) -> anyhow::Result<ClientConfig> {
        if let Some(m) = &self.sasl_mechanism {
            let password = std::env::var("KAFSCALE_PERF_SASL_PASSWORD")
                .context("--sasl-mechanism needs KAFSCALE_PERF_SASL_PASSWORD")?;
            let user = self
                .sasl_username
                .as_deref()
                .context("--sasl-mechanism needs --sasl-username")?;
            config = config.with_sasl(Mechanism::parse(m)?, user, Secret::new(password));
        }
        if let Some(ca) = &self.ssl_ca {
            config = config.with_tls(TlsConfig {
                ca_file: Some(ca.clone()),
                ..TlsConfig::default()
            });
        }
        Ok(config)
    }
}

#[derive(Args, Debug, Clone)]
pub struct FetchRawArgs {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long)]
    topic: String,
    /// Bytes per partition per fetch.
    #[arg(long, default_value = "1MiB", value_parser = crate::parse_size)]
    fetch_size: u64,
    /// Check every batch's CRC32C (librdkafka's check.crcs, off there by
    /// default; the broker's append path checks each CRC anyway).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    verify_crc: bool,
    #[command(flatten)]
    security: SecurityArgs,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Debug)]
struct FetchReport {
    mode: &'static str,
    topic: String,
    partitions: usize,
    batches: u64,
    records: u64,
    bytes: u64,
    seconds: f64,
    mib_per_s: f64,
    cpu_seconds: f64,
    cpu_seconds_per_gib: f64,
}

pub fn fetch_raw(a: FetchRawArgs) -> anyhow::Result<()> {
    let config = a
        .security
        .apply(ClientConfig::new(&a.bootstrap).with_client_id("kafscale-perf"))?;
    kafscale_shard::raise_memlock_limit();
    // The broker's allocator settings (src/broker.rs), where the mirror reads.
    kafscale_shard::tune_allocator(8 << 20, 32 << 20);
    let args = a.clone();
    let report = kafscale_shard::block_on(move || async move { run(config, &args).await })
        .map_err(|e| anyhow::anyhow!("{e}"))??;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "fetch-raw {}: {} partitions, {} batches, {} records, {:.1} MiB in {:.2} s: {:.1} MiB/s, {:.2} CPU-s ({:.3} CPU-s/GiB)",
            report.topic,
            report.partitions,
            report.batches,
            report.records,
            report.bytes as f64 / (1 << 20) as f64,
            report.seconds,
            report.mib_per_s,
            report.cpu_seconds,
            report.cpu_seconds_per_gib
        );
    }
    Ok(())
}

async fn run(config: ClientConfig, a: &FetchRawArgs) -> anyhow::Result<FetchReport> {
    let client = Client::connect(config).await?;
    let meta = client.metadata(&[&a.topic]).await?;
    let topic = meta
        .topic(&a.topic)
        .with_context(|| format!("no topic {}", a.topic))?;
    if !topic.error.is_none() {
        bail!("topic {}: {}", a.topic, topic.error);
    }
    let parts: Vec<i32> = topic.partitions.iter().map(|p| p.partition).collect();
    let start = client
        .list_offsets(&a.topic, &parts, OffsetSpec::Earliest)
        .await?;
    let end = client
        .list_offsets(&a.topic, &parts, OffsetSpec::Latest)
        .await?;
    let mut specs: Vec<FetchSpec> = start
        .iter()
        .map(|o| {
            let mut s = FetchSpec::new(&a.topic, o.partition, o.offset);
            s.max_bytes = a.fetch_size.min(i32::MAX as u64) as i32;
            s
        })
        .collect();
    let ends: Vec<i64> = end.iter().map(|o| o.offset).collect();
    let opts = FetchOptions {
        max_wait: Duration::from_millis(100),
        max_bytes: i32::MAX,
        verify_crc: a.verify_crc,
        ..FetchOptions::default()
    };
    let pid = std::process::id();
    let cpu0 = cpu_seconds(pid).unwrap_or(0.0);
    let t0 = Instant::now();
    let (mut bytes, mut batches, mut records) = (0u64, 0u64, 0u64);
    loop {
        let todo: Vec<usize> = (0..specs.len())
            .filter(|&i| specs[i].offset < ends[i])
            .collect();
        if todo.is_empty() {
            break;
        }
        let round: Vec<FetchSpec> = todo.iter().map(|&i| specs[i].clone()).collect();
        let results = client.fetch(&round, &opts).await;
        for (&i, r) in todo.iter().zip(results) {
            let f = r?;
            for b in &f.batches {
                bytes += b.len() as u64;
                batches += 1;
                records += b.record_count() as u64;
            }
            specs[i].offset = f.next_offset;
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu0;
    let gib = bytes as f64 / (1u64 << 30) as f64;
    Ok(FetchReport {
        mode: "fetch-raw",
        topic: a.topic.clone(),
        partitions: parts.len(),
        batches,
        records,
        bytes,
        seconds,
        mib_per_s: bytes as f64 / (1 << 20) as f64 / seconds,
        cpu_seconds: cpu,
        cpu_seconds_per_gib: if gib > 0.0 { cpu / gib } else { 0.0 },
    })
}
