//! `kafscale restore`: restore a topic to a moment, and `restore verify` a
//! report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use kafscale_s3::{AnyStore, Credentials, S3Config, StoreConfig, parse_rfc3339_ms};

use super::report::{self, Report};
use super::{Catalog, Cut, Options, Outcome, Restorer, Tick, sign};
use crate::meta::embedded::FileKv;
use crate::meta::etcd::EtcdKv;
use crate::meta::{MetaClient, MetaError, MetaStore};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RestoreArgs {
    #[command(subcommand)]
    pub command: Option<RestoreCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum RestoreCommand {
    /// Check a report's signature and recompute its digests from the bucket;
    /// exit 1 on any difference.
    Verify(VerifyArgs),
    /// The restore test to schedule: restore to a temporary topic as of
    /// --at, verify it, write the (signed) report, remove the topic; exit 1
    /// when a check fails.
    Drill(DrillArgs),
}

#[derive(Args, Debug)]
pub struct DrillArgs {
    /// The topic to restore.
    #[arg(long)]
    pub topic: String,
    /// The moment: RFC 3339, or now-DURATION (now-90s, now-30m, now-1h, now-2d).
    #[arg(long, default_value = "now-1h")]
    pub at: String,
    /// Where the JSON report goes (default: drill-{topic}-{UTC time}.json;
    /// an HTML page beside it).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Sign the report with this Ed25519 key (PKCS#8 PEM): REPORT.sig.
    #[arg(long)]
    pub sign_key: Option<PathBuf>,
    /// Who runs the drill, for the report (default: $USER).
    #[arg(long)]
    pub operator: Option<String>,
    /// Kafka bootstrap to read the temporary topic back through and delete
    /// it with (default: a broker the metadata lists).
    #[arg(long)]
    pub bootstrap: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `now-1h` and the like as milliseconds since the epoch; RFC 3339 as is.
pub fn parse_moment(s: &str, now_ms: i64) -> Result<i64, String> {
    let bad = || {
        format!(
            "{s:?} is neither RFC 3339 (2026-05-13T14:23:00Z) nor now-N followed by s, m, h or d (now-1h)"
        )
    };
    let Some(rest) = s.strip_prefix("now") else {
        return parse_rfc3339_ms(s).map_err(|_| bad());
    };
    if rest.is_empty() {
        return Ok(now_ms);
    }
    let n = rest.strip_prefix('-').ok_or_else(bad)?;
    let (digits, unit) = n.split_at(n.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let count: i64 = digits.parse().map_err(|_| bad())?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    count
        .checked_mul(unit_ms)
        .map(|d| now_ms - d)
        .ok_or_else(bad)
}

/// Where the log is: the same flags (and `KAFSCALE_*` variables) as the broker's.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// The embedded default's directory (objects and metadata).
    #[arg(long, env = "KAFSCALE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    #[arg(long, env = "KAFSCALE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "KAFSCALE_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    #[arg(long, env = "KAFSCALE_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    #[arg(long, env = "KAFSCALE_S3_NAMESPACE", default_value = "default")]
    pub s3_namespace: String,
    /// etcd endpoints, comma-separated; without them the embedded metadata
    /// in --data-dir (or, while its broker runs, that broker's REST API).
    #[arg(long, env = "KAFSCALE_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// The REST API of the broker holding the embedded metadata.
    #[arg(long, default_value = "http://127.0.0.1:9093")]
    pub http: String,
    /// Lock what the restore writes (copied and cut segments, indexes) as
    /// the broker locks its segments: the same flags and environment
    /// variables as `kafscale broker`, so a host set up for the broker
    /// restores locked. Start-up checks the bucket has object lock.
    #[arg(
        long,
        env = "KAFSCALE_S3_OBJECT_LOCK",
        value_enum,
        requires = "s3_retention"
    )]
    pub s3_object_lock: Option<crate::broker::config::LockMode>,
    /// How long each object the restore writes stays locked (`30d`).
    #[arg(long, env = "KAFSCALE_S3_RETENTION", requires = "s3_object_lock")]
    pub s3_retention: Option<crate::broker::config::Period>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The topic to restore.
    #[arg(long)]
    pub topic: Option<String>,
    /// Restore as of this moment (RFC 3339, e.g. 2026-05-13T14:23:00Z).
    #[arg(long, conflicts_with = "to_offset")]
    pub to: Option<String>,
    /// Cut by offset instead: PARTITION:OFFSET,... (each partition ends
    /// before its offset; partitions not named are restored whole).
    #[arg(long)]
    pub to_offset: Option<String>,
    /// Name of the restored topic (default: {topic}.restored-{UTC time}).
    #[arg(long = "as")]
    pub as_name: Option<String>,
    /// Print the plan (segments, bytes, cut per partition) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the JSON report here (canonical JSON) and an HTML page beside it.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Sign the report with this Ed25519 key (PKCS#8 PEM): REPORT.sig.
    #[arg(long, requires = "report")]
    pub sign_key: Option<PathBuf>,
    /// Who runs the restore, for the report (default: $USER).
    #[arg(long)]
    pub operator: Option<String>,
    /// Why, for the report (an incident number, "drill", ...).
    #[arg(long, default_value = "manual")]
    pub trigger: String,
    /// Kafka bootstrap to read the restored topic back through (default: a
    /// broker the metadata lists).
    #[arg(long)]
    pub bootstrap: Option<String>,
    /// The metadata store is lost: rebuild each partition's log from the
    /// bucket (every segment verified; the last one of each partition is
    /// reported unconfirmed). The restored topic is still created in the
    /// metadata store the flags name (a new etcd, or a new --data-dir).
    #[arg(long)]
    pub from_bucket: bool,
    /// Also give the restored topic the committed offsets of the consumer
    /// groups this regular expression matches (`^orders-.*$`), as they
    /// stood at --to (now, with --to-offset), at most the cut; replayed
    /// from the brokers' offset history in the bucket.
    #[arg(long)]
    pub groups: Option<String>,
    /// Copy whole segments without reading them, serve the restored topic,
    /// then verify and digest what was copied (the time until consumers can
    /// read grows with the number of segments, not their bytes; a segment
    /// that fails verification then fails the report after the topic is
    /// served).
    #[arg(long, conflicts_with_all = ["from_bucket", "target_bootstrap", "dry_run"])]
    pub serve_first: bool,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Into another Kafka cluster: its bootstrap, topic and security settings
/// (as a mirror source's, with `--target-` in front).
#[derive(Args, Debug, Default)]
pub struct TargetArgs {
    /// HOST:PORT of the target cluster's brokers, comma-separated: restore
    /// into it instead of into a new topic of the spine.
    #[arg(
        long,
        value_delimiter = ',',
        requires = "target_topic",
        conflicts_with = "as_name"
    )]
    pub target_bootstrap: Vec<String>,
    /// The topic there (created with the source's partition count if
    /// missing; an existing one must be empty, or hold what an interrupted
    /// run of the same restore wrote, which it resumes).
    #[arg(long, requires = "target_bootstrap")]
    pub target_topic: Option<String>,
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    #[arg(long, default_value = "PLAINTEXT")]
    pub target_security_protocol: String,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long)]
    pub target_sasl_mechanism: Option<String>,
    #[arg(long)]
    pub target_sasl_username: Option<String>,
    /// Environment variable holding the password.
    #[arg(long, conflicts_with = "target_sasl_password_file")]
    pub target_sasl_password_env: Option<String>,
    /// File holding the password (one line).
    #[arg(long)]
    pub target_sasl_password_file: Option<String>,
    /// PEM CA certificates to trust.
    #[arg(long)]
    pub target_ssl_ca: Option<String>,
    /// PEM client certificate chain and key for mutual TLS.
    #[arg(long)]
    pub target_ssl_cert: Option<String>,
    #[arg(long)]
    pub target_ssl_key: Option<String>,
}

impl TargetArgs {
    fn target(&self) -> anyhow::Result<Option<super::KafkaTarget>> {
        let Some(topic) = self.target_topic.clone() else {
            return Ok(None);
        };
        if !crate::broker::shard::valid_topic_name(&topic) {
            bail!("--target-topic {topic:?} is not a Kafka topic name");
        }
        let spec = crate::mirror::spec::SourceSpec {
            name: "target".into(),
            bootstrap: self.target_bootstrap.clone(),
            security_protocol: self.target_security_protocol.clone(),
            sasl_mechanism: self.target_sasl_mechanism.clone(),
            sasl_username: self.target_sasl_username.clone(),
            sasl_password_env: self.target_sasl_password_env.clone(),
            sasl_password_file: self.target_sasl_password_file.clone(),
            ssl_ca: self.target_ssl_ca.clone(),
            ssl_cert: self.target_ssl_cert.clone(),
            ssl_key: self.target_ssl_key.clone(),
            created_ms: 0,
        };
        let config = spec
            .client_config_as("the target cluster (--target-*)", "kafscale-restore")
            .map_err(|e| anyhow!("{e}"))?;
        Ok(Some(super::KafkaTarget { config, topic }))
    }
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The report (its signature is REPORT.sig).
    pub report: PathBuf,
    /// The signer's Ed25519 public key (PEM); without it the signature is
    /// checked against the key it names (integrity, not authenticity).
    #[arg(long)]
    pub public_key: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(RestoreCommand::Verify(v)) => verify(v),
        Some(RestoreCommand::Drill(d)) => drill(d),
        None => restore(args.run, false),
    }
}

/// With `--s3-object-lock` the bucket must have object lock, as the
/// broker checks at start-up: else the restore would stop at its first
/// write.
async fn check_object_lock(store: &AnyStore) -> anyhow::Result<()> {
    if let AnyStore::S3(s) = store
        && s.config().object_lock.is_some()
        && !s
            .object_lock_enabled()
            .await
            .map_err(|e| anyhow::anyhow!("cannot use the S3 bucket: {e}"))?
    {
        bail!(
            "bucket {} has no object lock, so --s3-object-lock cannot lock what the restore writes",
            s.bucket()
        );
    }
    Ok(())
}

impl StoreArgs {
    fn store_config(&self) -> anyhow::Result<StoreConfig> {
        match (&self.s3_endpoint, &self.s3_bucket) {
            (Some(endpoint), Some(bucket)) => {
                let creds = Credentials::from_env().context("S3 credentials")?;
                let mut cfg = S3Config::new(endpoint, bucket.clone(), creds)?;
                cfg.region = self.s3_region.clone();
                cfg.object_lock =
                    crate::broker::config::object_lock(self.s3_object_lock, self.s3_retention)?;
                Ok(StoreConfig::S3(Box::new(cfg)))
            }
            (None, None) => {
                if self.s3_object_lock.is_some() {
                    bail!(
                        "--s3-object-lock (or KAFSCALE_S3_OBJECT_LOCK) locks S3 objects, but this restore writes to the local directory {}",
                        self.data_dir.display()
                    );
                }
                let dir = self.data_dir.join("objects");
                if !dir.is_dir() {
                    bail!(
                        "{} holds no segments (is --data-dir the broker's?)",
                        dir.display()
                    );
                }
                Ok(StoreConfig::Local(dir))
            }
            _ => bail!("--s3-endpoint and --s3-bucket go together"),
        }
    }

    /// The catalog: etcd; else the embedded store, or its broker's REST API
    /// while a broker holds it.
    /// With `new_ok`, an embedded store that does not exist yet is made.
    fn catalog(
        &self,
        new_ok: bool,
    ) -> anyhow::Result<(Catalog, Option<crate::meta::client::MetaThread>)> {
        let ns = self.s3_namespace.clone();
        if !self.etcd_endpoints.is_empty() {
            let eps = self.etcd_endpoints.clone();
            let label = format!("etcd at {}", eps.join(","));
            let (meta, thread) =
                MetaClient::spawn(move || Ok(MetaStore::new(Box::new(EtcdKv::connect(&eps)?), ns)))
                    .map_err(|e| anyhow!("cannot open the metadata store: {e}"))?;
            return Ok((Catalog::Direct { meta, label }, Some(thread)));
        }
        let dir = self.data_dir.join("meta");
        if new_ok {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        if !dir.is_dir() {
            bail!(
                "{} holds no metadata (is --data-dir the broker's? with etcd, pass --etcd-endpoints)",
                dir.display()
            );
        }
        let label = format!("embedded metadata in {}", dir.display());
        match MetaClient::spawn(move || Ok(MetaStore::new(Box::new(FileKv::open(&dir)?), ns))) {
            Ok((meta, thread)) => Ok((Catalog::Direct { meta, label }, Some(thread))),
            Err(MetaError::Io { path, .. }) if path.ends_with("meta.lock") => {
                let target = self
                    .http
                    .strip_prefix("http://")
                    .ok_or_else(|| anyhow!("--http {}: expected http://HOST:PORT", self.http))?
                    .trim_end_matches('/')
                    .to_owned();
                let token = crate::rest_client::cli_token(Some(&self.data_dir), &target)?;
                Ok((Catalog::Rest { target, token }, None))
            }
            Err(e) => Err(anyhow!("cannot open the metadata store: {e}")),
        }
    }
}

/// Progress on stderr: plain lines, and on a terminal a bar of segments and
/// bytes read with an ETA, redrawn in place.
struct Bar {
    terminal: bool,
    started: std::time::Instant,
    state: std::cell::Cell<(usize, u64, usize, u64)>,
    drawn: std::cell::Cell<bool>,
}

impl Bar {
    fn new() -> Self {
        use std::io::IsTerminal;
        Self {
            terminal: std::io::stderr().is_terminal(),
            started: std::time::Instant::now(),
            state: Default::default(),
            drawn: Default::default(),
        }
    }

    fn line(&self, line: &str) {
        self.clear();
        eprintln!("restore: {line}");
        self.draw();
    }

    fn tick(&self, t: Tick) {
        let (mut n, mut b, mut total_n, mut total_b) = self.state.get();
        match t {
            Tick::Planned { segments, bytes } => (total_n, total_b) = (segments, bytes),
            Tick::Segment { bytes } => (n, b) = (n + 1, b + bytes),
        }
        self.state.set((n, b, total_n.max(n), total_b.max(b)));
        self.draw();
    }

    fn draw(&self) {
        let (n, b, total_n, total_b) = self.state.get();
        if !self.terminal || total_n == 0 {
            return;
        }
        let secs = self.started.elapsed().as_secs_f64();
        let eta = if b > 0 {
            format!("{:.0} s", secs * (total_b - b) as f64 / b as f64)
        } else {
            "-".into()
        };
        let width = 30;
        let filled = (width * b.min(total_b) as usize) / (total_b.max(1) as usize);
        eprint!(
            "\r[{}{}] {n}/{total_n} segments, {} / {} MiB, ETA {eta}   ",
            "#".repeat(filled),
            " ".repeat(width - filled),
            b >> 20,
            total_b >> 20
        );
        self.drawn.set(true);
    }

    fn clear(&self) {
        if self.drawn.replace(false) {
            eprint!("\r\x1b[2K");
        }
    }

    fn finish(&self) {
        self.clear();
    }
}

fn drill(d: DrillArgs) -> anyhow::Result<ExitCode> {
    let now = crate::meta::store::now_ms();
    let at = parse_moment(&d.at, now).map_err(|e| anyhow!("--at: {e}"))?;
    let stamp: String = kafscale_s3::format_unix_ms(now)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(15)
        .chain(['Z'])
        .collect();
    let topic = d.topic;
    let run = RunArgs {
        topic: Some(topic.clone()),
        to: Some(kafscale_s3::format_unix_ms(at)),
        to_offset: None,
        as_name: Some(format!("{topic}.drill-{stamp}")),
        dry_run: false,
        report: Some(
            d.report
                .unwrap_or_else(|| PathBuf::from(format!("drill-{topic}-{stamp}.json"))),
        ),
        sign_key: d.sign_key,
        operator: d.operator,
        trigger: "drill".into(),
        bootstrap: d.bootstrap,
        from_bucket: false,
        groups: None,
        serve_first: false,
        target: TargetArgs::default(),
        store: d.store,
    };
    restore(run, true)
}

fn restore(args: RunArgs, temporary: bool) -> anyhow::Result<ExitCode> {
    let topic = args
        .topic
        .clone()
        .ok_or_else(|| anyhow!("--topic is required (the topic to restore)"))?;
    let cut = match (&args.to, &args.to_offset) {
        (Some(t), None) => Cut::Time(parse_rfc3339_ms(t).map_err(|e| anyhow!("--to: {e}"))?),
        (None, Some(o)) => Cut::parse_offsets(o).map_err(|e| anyhow!("--to-offset: {e}"))?,
        _ => bail!("say where to cut: --to TIME or --to-offset PARTITION:OFFSET,..."),
    };
    // Read the key before anything changes: a bad key must not leave a
    // restore without its signature.
    let signing = args
        .sign_key
        .as_deref()
        .map(sign::load_signing_key)
        .transpose()?;
    let now = crate::meta::store::now_ms();
    let target = args
        .as_name
        .clone()
        .unwrap_or_else(|| super::default_target(&topic, now));
    if !crate::broker::shard::valid_topic_name(&target) {
        bail!("--as {target:?} is not a Kafka topic name (at most 249 of a-z A-Z 0-9 . _ -)");
    }
    let kafka = args.target.target()?;
    let target = kafka.as_ref().map_or(target, |k| k.topic.clone());
    let groups = args
        .groups
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| anyhow!("--groups is not a regular expression: {e}"))?;
    let opts = Options {
        topic,
        cut,
        target,
        dry_run: args.dry_run,
        operator: args
            .operator
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "unknown".into()),
        trigger: args.trigger.clone(),
        bootstrap: args.bootstrap.clone(),
        from_bucket: args.from_bucket,
        kafka,
        temporary,
        groups,
        serve_first: args.serve_first,
    };
    let store_config = args.store.store_config()?;
    let (catalog, _thread) = args.store.catalog(args.from_bucket)?;
    let ns = args.store.s3_namespace.clone();
    // For the audit trail: a restore run here (not through a broker's REST
    // API) is recorded on this process's log, as the brokers record theirs.
    let audit = (!opts.dry_run).then(|| {
        (
            format!("User:{}", opts.operator),
            format!(
                "topic {} as {}, to {}",
                opts.topic,
                opts.target,
                match &opts.cut {
                    Cut::Time(t) => kafscale_s3::format_unix_ms(*t),
                    Cut::Offsets(m) => m
                        .iter()
                        .map(|(p, o)| format!("{p}:{o}"))
                        .collect::<Vec<_>>()
                        .join(","),
                }
            ),
        )
    });
    let outcome = kafscale_shard::block_on(move || async move {
        let store = store_config.build()?;
        check_object_lock(&store).await?;
        let bar = Bar::new();
        let progress = |line: &str| bar.line(line);
        let meter = |t: Tick| bar.tick(t);
        let r = Restorer {
            store: &store,
            catalog: &catalog,
            namespace: ns,
            progress: &progress,
            meter: &meter,
        };
        let result = r.run(&opts).await;
        bar.finish();
        result
    })?;
    let record = |outcome: &str| {
        if let Some((principal, target)) = &audit {
            crate::audit::record(&crate::audit::Event {
                principal,
                host: "local",
                action: "Restore",
                target,
                outcome,
            });
        }
    };
    if let Err(e) = &outcome {
        record(&format!("failed: {e:#}"));
    }
    let report = match outcome? {
        Outcome::Planned(lines) => {
            println!(
                "{:>9} {:>8} {:>14} {:>12} {:>14}  cut segment",
                "partition", "copied", "copied bytes", "cut offset", "high watermark"
            );
            for l in lines {
                println!(
                    "{:>9} {:>8} {:>14} {:>12} {:>14}  {}",
                    l.partition,
                    l.copied_segments,
                    l.copied_bytes,
                    l.cut_offset,
                    l.high_watermark,
                    l.cut_segment.as_deref().unwrap_or("-")
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        Outcome::Restored(r) => r,
    };
    if let Some(path) = &args.report
        && let Err(e) = write_report(path, &report, signing.as_ref())
    {
        record(&format!("failed: {e:#}"));
        return Err(e);
    }
    record(if report.passed {
        "ok"
    } else {
        "failed: a check of its report failed"
    });
    for c in &report.checks {
        eprintln!(
            "restore: check {}: {} ({})",
            c.name,
            if c.passed { "pass" } else { "FAIL" },
            c.detail
        );
    }
    println!(
        "{} restored as {}{}: {} partitions, {} records, digest {}, {}{}",
        report.source.topic,
        report.target.topic,
        if report.target.kind == "kafka" {
            format!(" on {}", report.target.store)
        } else {
            String::new()
        },
        report.partitions.len(),
        report.restored_records.unwrap_or(0),
        report
            .target_digest
            .as_deref()
            .unwrap_or(&report.source_digest),
        if report.passed {
            "every check passed"
        } else {
            "CHECKS FAILED"
        },
        args.report
            .as_ref()
            .map_or(String::new(), |p| format!("; report {}", p.display()))
    );
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The HTML page's path beside a report: `x.json` -> `x.html`, else `x.html` appended.
pub fn html_path(report: &Path) -> PathBuf {
    if report.extension().is_some_and(|e| e == "json") {
        report.with_extension("html")
    } else {
        let mut s = report.as_os_str().to_owned();
        s.push(".html");
        s.into()
    }
}

fn write_report(
    path: &Path,
    report: &Report,
    key: Option<&ed25519_dalek::SigningKey>,
) -> anyhow::Result<()> {
    let json = report.canonical_json();
    std::fs::write(path, &json).with_context(|| format!("cannot write {}", path.display()))?;
    let html = html_path(path);
    std::fs::write(&html, report.to_html())
        .with_context(|| format!("cannot write {}", html.display()))?;
    if let Some(key) = key {
        let sig = sign::sign(&json, key);
        let sig_path = sign::signature_path(path);
        std::fs::write(&sig_path, serde_json::to_vec_pretty(&sig)?)
            .with_context(|| format!("cannot write {}", sig_path.display()))?;
    }
    Ok(())
}

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let path = &args.report;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut problems: Vec<String> = Vec::new();
    let sig_path = sign::signature_path(path);
    let trusted = args
        .public_key
        .as_deref()
        .map(sign::load_public_key)
        .transpose()?;
    match std::fs::read(&sig_path) {
        Ok(raw) => match serde_json::from_slice::<sign::Signature>(&raw) {
            Ok(sig) => match sign::verify(&bytes, &sig, trusted.as_ref()) {
                Ok(id) if trusted.is_some() => println!("signature: valid, by {id}"),
                Ok(id) => println!(
                    "signature: valid, by {id} (not checked against a trusted key: pass --public-key)"
                ),
                Err(e) => problems.push(format!("signature: {e}")),
            },
            Err(e) => problems.push(format!("{} is not a signature: {e}", sig_path.display())),
        },
        Err(_) if trusted.is_some() => problems.push(format!(
            "no signature at {} to check against the public key",
            sig_path.display()
        )),
        Err(_) => println!("signature: none (the report is not signed)"),
    }
    let report: Report = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a restore report", path.display()))?;
    if report.format != report::FORMAT {
        bail!(
            "{} is a {:?} report; this verifies {:?}",
            path.display(),
            report.format,
            report::FORMAT
        );
    }
    let store_config = args.store.store_config()?;
    let ns = args.store.s3_namespace.clone();
    let found = kafscale_shard::block_on(move || async move {
        let store = store_config.build()?;
        recompute(&store, &ns, &report).await
    })??;
    problems.extend(found);
    if problems.is_empty() {
        println!(
            "{}: every digest recomputed from the bucket matches",
            path.display()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            println!("MISMATCH: {p}");
        }
        eprintln!(
            "kafscale: {} does not verify ({} problems)",
            path.display(),
            problems.len()
        );
        Ok(ExitCode::from(1))
    }
}

/// Recomputes each partition's source and target digests from the objects
/// the report names; returns what differs.
async fn recompute(
    store: &kafscale_s3::AnyStore,
    ns: &str,
    report: &Report,
) -> anyhow::Result<Vec<String>> {
    use kafscale_s3::ObjectStore;
    let mut problems = Vec::new();
    for o in &report.objects {
        match store.head_version(&o.key, o.version_id.as_deref()).await {
            Ok(m) if m.size != o.size || (!o.etag.is_empty() && m.etag != o.etag) => {
                problems.push(format!(
                    "object {} changed: size {} etag {:?}, the report says size {} etag {:?}",
                    o.key, m.size, m.etag, o.size, o.etag
                ));
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("object {}: {e}", o.key)),
        }
    }
    for p in &report.partitions {
        let prefix = format!("{ns}/{}/{}/", report.source.topic, p.partition);
        // Segment keys carry zero-padded base offsets: sorted is offset order.
        // With the versions read (a versioned bucket may hold newer ones).
        let sources: Vec<(String, Option<String>)> = report
            .objects
            .iter()
            .filter(|o| {
                o.key.starts_with(&prefix)
                    && o.key.ends_with(".kfs")
                    && (o.use_ == "copied" || o.use_ == "cut" || o.use_ == "produced")
            })
            .map(|o| (o.key.clone(), o.version_id.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_iter()
            .collect();
        let restored_start = if p.target_segments.is_empty() {
            p.cut_offset
        } else {
            p.source_log_start.min(p.cut_offset)
        };
        let checks = [
            (
                "source",
                sources.clone(),
                p.source_log_start,
                Some(&p.source_digest),
            ),
            (
                "restored",
                p.target_segments
                    .iter()
                    .map(|k| (k.clone(), None))
                    .collect(),
                restored_start,
                p.target_digest.as_ref(),
            ),
        ];
        if let Some(k) = &p.kafka {
            // Into Kafka: the committed records the target got, offsets
            // aside (the target itself is another cluster's).
            let plan = super::kafka::PartitionPlan {
                partition: p.partition,
                unread: Default::default(),
                source_segments: sources.iter().map(|(k, _)| k.clone()).collect(),
                versions: sources
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
                    .collect(),
                log_start: p.source_log_start,
                cut: p.cut_offset,
                excluded: k
                    .excluded_transactions
                    .iter()
                    .map(
                        |&(producer_id, first_offset, last_offset)| crate::meta::AbortedTxn {
                            producer_id,
                            first_offset,
                            last_offset,
                        },
                    )
                    .collect(),
                translate: Vec::new(),
            };
            match plan.digest(store).await {
                Ok((got, _)) if got == k.digest => {}
                Ok((got, _)) => problems.push(format!(
                    "partition {} produced-records digest is {got}, the report says {}",
                    p.partition, k.digest
                )),
                Err(e) => {
                    problems.push(format!("partition {} produced records: {e:#}", p.partition))
                }
            }
        }
        // Into Kafka the source side is the produced records (just checked);
        // a drill's topic is removed: no restored objects.
        let checks = if p.kafka.is_some() {
            &checks[..0]
        } else if report.target.temporary {
            &checks[..1]
        } else {
            &checks[..]
        };
        for (side, keys, start, want) in checks.iter().cloned() {
            let Some(want) = want else { continue };
            match super::digest_objects(store, &keys, start, p.cut_offset).await {
                Ok((got, _)) if &got == want => {}
                Ok((got, _)) => problems.push(format!(
                    "partition {} {side} digest is {got}, the report says {want}",
                    p.partition
                )),
                Err(e) => problems.push(format!("partition {} {side}: {e:#}", p.partition)),
            }
        }
    }
    if let Some(g) = &report.groups {
        problems.extend(recompute_groups(store, report, g).await?);
    }
    println!(
        "recomputed {} partitions of {} ({} objects) restored {} as {}",
        report.partitions.len(),
        report.source.topic,
        report.objects.len(),
        report.request.to.as_deref().unwrap_or(&report.request.rule),
        report.target.topic
    );
    Ok(problems)
}

/// Replays the offset history objects the report names as the restore
/// did; returns where the committed offsets differ from the report's.
async fn recompute_groups(
    store: &kafscale_s3::AnyStore,
    report: &Report,
    g: &report::GroupsEvidence,
) -> anyhow::Result<Vec<String>> {
    let pattern = regex::Regex::new(&g.pattern)
        .map_err(|e| anyhow!("the report's group pattern {:?}: {e}", g.pattern))?;
    let as_of = parse_rfc3339_ms(&g.as_of).map_err(|e| anyhow!("the report's as_of: {e}"))?;
    let mut replay = crate::offset_history::Replay::default();
    let mut problems = Vec::new();
    let mut records = 0u64;
    for o in report.objects.iter().filter(|o| o.use_ == "offset history") {
        let Some(partition) = super::groups::history_partition(&o.key) else {
            problems.push(format!("{} is not an object of the offset history", o.key));
            continue;
        };
        let seg = match super::read_segment(store, &o.key, o.version_id.as_deref()).await {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("{e:#}"));
                continue;
            }
        };
        match super::groups::replay_segment(
            &mut replay,
            partition,
            &o.key,
            &seg.reader,
            as_of,
            &report.source.topic,
            &pattern,
        ) {
            Ok(n) => records += n,
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    if records != g.history_records {
        problems.push(format!(
            "the offset history objects hold {records} records, the report says {}",
            g.history_records
        ));
    }
    let partitions = report.partitions.len() as u32;
    let got: Vec<(String, u32, i64, String)> = replay
        .offsets()
        .into_iter()
        .filter(|o| o.partition < partitions)
        .map(|o| {
            let at = kafscale_s3::format_unix_ms(o.committed_ms);
            (o.group, o.partition, o.offset, at)
        })
        .collect();
    let want: Vec<(String, u32, i64, String)> = g
        .offsets
        .iter()
        .map(|o| {
            let at = o.committed_at.clone();
            (o.group.clone(), o.partition, o.committed_offset, at)
        })
        .collect();
    if got != want {
        problems.push(format!(
            "group offsets replayed from the history differ from the report's: {} offsets, the report has {}{}",
            got.len(),
            want.len(),
            got.iter()
                .zip(&want)
                .find(|(a, b)| a != b)
                .map_or(String::new(), |(a, b)| format!(
                    "; first difference: {} partition {} at {} ({}), the report says {} partition {} at {} ({})",
                    a.0, a.1, a.2, a.3, b.0, b.1, b.2, b.3
                ))
        ));
    }
    Ok(problems)
}

#[cfg(test)]
mod moment_tests {
    use super::parse_moment;

    #[test]
    fn a_moment_is_rfc_3339_or_a_distance_back_from_now() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_moment("now", now), Ok(now));
        assert_eq!(parse_moment("now-90s", now), Ok(now - 90_000));
        assert_eq!(parse_moment("now-30m", now), Ok(now - 1_800_000));
        assert_eq!(parse_moment("now-1h", now), Ok(now - 3_600_000));
        assert_eq!(parse_moment("now-2d", now), Ok(now - 172_800_000));
        assert_eq!(
            parse_moment("2026-05-13T14:23:00Z", now),
            Ok(1_778_682_180_000)
        );
        for bad in [
            "now-",
            "now-1",
            "now-h",
            "now+1h",
            "now-1w",
            "now-99999999999999999d",
        ] {
            let e = parse_moment(bad, now).unwrap_err();
            assert!(e.contains("now-N"), "{bad}: {e}");
        }
    }
}
