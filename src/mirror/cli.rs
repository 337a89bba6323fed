//! `kafscale mirror ...`: manages sources and jobs through any broker's
//! REST API (`--http`), so the CLI and `curl` do exactly the same.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use hyper::Method;

use crate::rest_client::Http;

use super::{JobSpec, JobStatus, Mapping, OnGap, SourceSpec};

#[derive(Args, Debug)]
pub struct MirrorArgs {
    /// Any broker's HTTP address (its --metrics-listen).
    #[arg(
        long,
        global = true,
        env = "KAFSCALE_HTTP",
        default_value = "http://127.0.0.1:9093"
    )]
    pub http: String,
    #[command(subcommand)]
    pub command: MirrorCommand,
}

#[derive(Subcommand, Debug)]
pub enum MirrorCommand {
    /// Source clusters the spine copies from.
    Sources {
        #[command(subcommand)]
        command: SourcesCommand,
    },
    /// Mirror jobs: which topics of a source are copied, and how.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum SourcesCommand {
    /// Adds a source cluster (a read-only credential is enough).
    Add(Box<SourceAdd>),
    /// Lists the sources.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Removes a source no job uses.
    Remove { name: String },
}

#[derive(Args, Debug)]
pub struct SourceAdd {
    pub name: String,
    /// HOST:PORT of its brokers, comma-separated.
    #[arg(long, required = true, value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    #[arg(long, default_value = "PLAINTEXT")]
    pub security_protocol: String,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long)]
    pub sasl_mechanism: Option<String>,
    #[arg(long)]
    pub sasl_username: Option<String>,
    /// Environment variable each broker reads the password from.
    #[arg(long, conflicts_with = "sasl_password_file")]
    pub sasl_password_env: Option<String>,
    /// File each broker reads the password from.
    #[arg(long)]
    pub sasl_password_file: Option<String>,
    /// PEM CA certificates to trust (on each broker).
    #[arg(long)]
    pub ssl_ca: Option<String>,
    /// PEM client certificate chain for mutual TLS (on each broker).
    #[arg(long)]
    pub ssl_cert: Option<String>,
    #[arg(long)]
    pub ssl_key: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MappingKind {
    SameName,
    Prefix,
    Regex,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GapAction {
    Continue,
    Stop,
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// Adds a job: the matching topics of the source are copied, offsets 1:1.
    Add(Box<JobAdd>),
    /// Lists the jobs with their state and lag.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Per partition: source high watermark, mirrored offset, lag, state.
    Status {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Stops copying (the copies stay read-only).
    Pause { name: String },
    /// Copies again; also restarts partitions a gap or an error stopped.
    Resume { name: String },
    /// Removes the job; its copies stay and become writable.
    Remove { name: String },
}

#[derive(Args, Debug)]
pub struct JobAdd {
    pub name: String,
    #[arg(long)]
    pub source: String,
    /// Regular expressions of source topics, comma-separated, each matching
    /// whole names ("orders.*,payments.*").
    #[arg(long, required = true)]
    pub topics: String,
    /// Regular expressions of topics to leave out ("_confluent.*,__.*").
    #[arg(long)]
    pub exclude: Option<String>,
    /// How target topics are named.
    #[arg(long, value_enum, default_value = "same-name")]
    pub mapping: MappingKind,
    /// With --mapping prefix: prepended to each source topic name.
    #[arg(long, required_if_eq("mapping", "prefix"))]
    pub prefix: Option<String>,
    /// With --mapping regex: matched against whole source topic names.
    #[arg(long, required_if_eq("mapping", "regex"))]
    pub pattern: Option<String>,
    /// With --mapping regex: the target name ($1, ${name}: the pattern's groups).
    #[arg(long, required_if_eq("mapping", "regex"))]
    pub replacement: Option<String>,
    /// Source consumer groups (regular expression) whose committed offsets are copied.
    #[arg(long)]
    pub groups: Option<String>,
    /// When source retention deleted records not yet copied.
    #[arg(long, value_enum, default_value = "continue")]
    pub on_gap: GapAction,
    /// Create it paused.
    #[arg(long)]
    pub paused: bool,
}

/// Splits a comma-separated list of regular expressions, leaving commas
/// inside `{...}`, `(...)` and `[...]` alone (`a{1,3}`).
pub fn split_patterns(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    let mut escaped = false;
    for c in s.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '{' | '(' | '[' => depth += 1,
            '}' | ')' | ']' => depth -= 1,
            ',' if depth <= 0 => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current);
    out.into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

pub fn run(args: MirrorArgs) -> anyhow::Result<ExitCode> {
    let api = Http::parse(&args.http)?;
    match args.command {
        MirrorCommand::Sources { command } => sources(&api, command),
        MirrorCommand::Jobs { command } => jobs(&api, command),
    }
}

fn sources(api: &Http, command: SourcesCommand) -> anyhow::Result<ExitCode> {
    match command {
        SourcesCommand::Add(a) => {
            let spec = SourceSpec {
                name: a.name,
                bootstrap: a.bootstrap,
                security_protocol: a.security_protocol,
                sasl_mechanism: a.sasl_mechanism,
                sasl_username: a.sasl_username,
                sasl_password_env: a.sasl_password_env,
                sasl_password_file: a.sasl_password_file,
                ssl_ca: a.ssl_ca,
                ssl_cert: a.ssl_cert,
                ssl_key: a.ssl_key,
                created_ms: 0,
            };
            let s: SourceSpec = api.call(Method::POST, "/v1/mirror/sources", Some(&spec))?;
            println!(
                "added source {} ({} via {})",
                s.name,
                s.bootstrap.join(","),
                s.security_protocol
            );
        }
        SourcesCommand::List { json } => {
            let list: Vec<SourceSpec> = api.call(Method::GET, "/v1/mirror/sources", None::<&()>)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<24} {:<16} {:<16} BOOTSTRAP", "NAME", "PROTOCOL", "USER");
                for s in list {
                    println!(
                        "{:<24} {:<16} {:<16} {}",
                        s.name,
                        s.security_protocol,
                        s.sasl_username.as_deref().unwrap_or("-"),
                        s.bootstrap.join(",")
                    );
                }
            }
        }
        SourcesCommand::Remove { name } => {
            let _: serde_json::Value = api.call(
                Method::DELETE,
                &format!("/v1/mirror/sources/{name}"),
                None::<&()>,
            )?;
            println!("removed source {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn jobs(api: &Http, command: JobsCommand) -> anyhow::Result<ExitCode> {
    match command {
        JobsCommand::Add(a) => {
            let mapping = match a.mapping {
                MappingKind::SameName => Mapping::SameName,
                MappingKind::Prefix => Mapping::Prefix {
                    prefix: a.prefix.unwrap_or_default(),
                },
                MappingKind::Regex => Mapping::Regex {
                    pattern: a.pattern.unwrap_or_default(),
                    replacement: a.replacement.unwrap_or_default(),
                },
            };
            let spec = JobSpec {
                name: a.name,
                source: a.source,
                topics: split_patterns(&a.topics),
                exclude: a.exclude.as_deref().map(split_patterns).unwrap_or_default(),
                mapping,
                groups: a.groups,
                on_gap: match a.on_gap {
                    GapAction::Continue => OnGap::Continue,
                    GapAction::Stop => OnGap::Stop,
                },
                paused: a.paused,
                resumed_ms: 0,
                created_ms: 0,
            };
            let j: JobSpec = api.call(Method::POST, "/v1/mirror/jobs", Some(&spec))?;
            println!(
                "added job {} copying {} from source {}{}",
                j.name,
                j.topics.join(","),
                j.source,
                if j.paused { " (paused)" } else { "" }
            );
        }
        JobsCommand::List { json } => {
            let list: Vec<serde_json::Value> =
                api.call(Method::GET, "/v1/mirror/jobs", None::<&()>)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<24} {:<16} {:<10} {:>10} {:>12}  TOPICS",
                    "NAME", "SOURCE", "STATE", "PARTITIONS", "LAG"
                );
                for j in list {
                    let s = |k: &str| j.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_owned();
                    let n = |k: &str| j.get(k).and_then(|v| v.as_i64()).unwrap_or(0);
                    let topics: Vec<&str> = j
                        .get("topics")
                        .and_then(|t| t.as_array())
                        .map(|a| a.iter().filter_map(|t| t.as_str()).collect())
                        .unwrap_or_default();
                    println!(
                        "{:<24} {:<16} {:<10} {:>10} {:>12}  {}",
                        s("name"),
                        s("source"),
                        s("state"),
                        n("partitions"),
                        n("lag_records"),
                        topics.join(",")
                    );
                }
            }
        }
        JobsCommand::Status { name, json } => {
            let path = format!("/v1/mirror/jobs/{name}/status");
            if json {
                let v: serde_json::Value = api.call(Method::GET, &path, None::<&()>)?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let s: JobStatus = api.call(Method::GET, &path, None::<&()>)?;
                print!("{}", status_table(&s));
            }
        }
        JobsCommand::Pause { name } => {
            let _: JobSpec = api.call(
                Method::POST,
                &format!("/v1/mirror/jobs/{name}/pause"),
                None::<&()>,
            )?;
            println!("paused job {name}");
        }
        JobsCommand::Resume { name } => {
            let _: JobSpec = api.call(
                Method::POST,
                &format!("/v1/mirror/jobs/{name}/resume"),
                None::<&()>,
            )?;
            println!("resumed job {name}");
        }
        JobsCommand::Remove { name } => {
            let v: serde_json::Value = api.call(
                Method::DELETE,
                &format!("/v1/mirror/jobs/{name}"),
                None::<&()>,
            )?;
            let topics = v
                .get("topics")
                .and_then(|t| t.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            println!("removed job {name}; its copies stay and are now writable: {topics}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `jobs status` for a terminal.
pub fn status_table(s: &JobStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "job {} from source {}: {} (source {}), lag {} records, {} partitions",
        s.job,
        s.source,
        s.state,
        s.source_connection,
        s.lag_records,
        s.partitions.len()
    );
    for e in &s.errors {
        let _ = writeln!(out, "  error: {e}");
    }
    for g in &s.gaps {
        let _ = writeln!(
            out,
            "  gap: {}-{} offsets [{}, {}) deleted at the source before they were copied",
            g.source_topic, g.partition, g.from, g.to
        );
    }
    if s.partitions.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:<28} {:>5} {:<28} {:>12} {:>12} {:>10} {:>8}  {:<18} ERROR",
        "SOURCE", "PART", "TARGET", "SOURCE-HW", "MIRRORED", "LAG", "LAG-S", "STATE"
    );
    for p in &s.partitions {
        let _ = writeln!(
            out,
            "{:<28} {:>5} {:<28} {:>12} {:>12} {:>10} {:>8.1}  {:<18} {}",
            p.source_topic,
            p.partition,
            p.target_topic,
            p.source_high_watermark,
            p.mirrored_next_offset,
            p.lag_records,
            p.lag_seconds,
            p.state.as_str(),
            p.last_error.as_deref().unwrap_or("")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_lists_split_at_top_level_commas() {
        assert_eq!(
            split_patterns("orders.*, payments.*"),
            ["orders.*", "payments.*"]
        );
        assert_eq!(
            split_patterns("a{1,3},(b|c),[x,y]"),
            ["a{1,3}", "(b|c)", "[x,y]"]
        );
        assert_eq!(split_patterns(r"a\,b,c"), [r"a\,b", "c"]);
        assert!(split_patterns(" , ").is_empty());
    }
}
