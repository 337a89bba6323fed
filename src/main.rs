//! The `kafscale` command.

use std::process::ExitCode;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use kafscale_s3::{Credentials, ObjectStore, S3Client, S3Config};

#[derive(Parser, Debug)]
#[command(
    name = "kafscale",
    version,
    about = "Kafka-compatible streaming spine whose log lives in S3"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the Kafka-compatible broker (port 9092; metrics on 9093).
    Broker(Box<kafscale::broker::BrokerArgs>),
    /// Mirror other Kafka clusters into the spine (sources and jobs), through
    /// any broker's REST API.
    Mirror(kafscale::mirror::cli::MirrorArgs),
    /// Rebuild a topic as it was at a moment, from the bucket, with a
    /// verifiable report; `restore verify` checks a report.
    Restore(Box<kafscale::restore::cli::RestoreArgs>),
    /// SCRAM users of the SASL listeners, through any broker's REST API.
    Users(kafscale::auth::cli::UsersArgs),
    /// Bearer tokens of the REST API (roles viewer, operator, admin).
    Tokens(kafscale::auth::token_cli::TokensArgs),
    /// Work with .kfs segments.
    Segments {
        #[command(subcommand)]
        command: SegmentsCommand,
    },
}

#[derive(Subcommand, Debug)]
enum SegmentsCommand {
    /// Print a segment's header, batches and footer; exit 1 if it is corrupt.
    Inspect {
        /// A file path or s3://bucket/key.
        target: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        s3: S3Args,
    },
}

#[derive(Args, Debug, Clone)]
struct S3Args {
    /// S3 endpoint URL, for s3:// targets.
    #[arg(
        long,
        env = "KAFSCALE_S3_ENDPOINT",
        default_value = "https://s3.amazonaws.com"
    )]
    s3_endpoint: String,
    #[arg(long, env = "KAFSCALE_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(match std::env::var("KAFSCALE_LOG") {
                Ok(more) => format!("{},{more}", kafscale::audit::DEFAULT_FILTER),
                Err(_) => kafscale::audit::DEFAULT_FILTER.to_owned(),
            })
            .unwrap_or_else(|_| kafscale::audit::DEFAULT_FILTER.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    match run(cli, &matches) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kafscale: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Broker(args) => {
            let sub = matches.subcommand_matches("broker").unwrap_or(matches);
            kafscale::broker::run(args.with_file(sub)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Mirror(args) => kafscale::mirror::cli::run(args),
        Command::Restore(args) => kafscale::restore::cli::run(*args),
        Command::Users(args) => kafscale::auth::cli::run(args),
        Command::Tokens(args) => kafscale::auth::token_cli::run(args),
        Command::Segments {
            command: SegmentsCommand::Inspect { target, json, s3 },
        } => {
            let (data, meta) = read_target(&target, &s3)?;
            let metadata = meta.as_ref().map(|m| m.metadata.clone());
            let report = match kafscale::segments::inspect(&target, data, metadata) {
                Ok(mut r) => {
                    if let Some(m) = meta {
                        r.object_lock = Some(match (m.lock_mode, m.lock_retain_until) {
                            (Some(mode), Some(until)) => format!("{mode} until {until}"),
                            (Some(mode), None) => mode,
                            _ => "none".to_owned(),
                        });
                        r.object_version = m.version_id;
                    }
                    r
                }
                Err(e) => {
                    eprintln!("kafscale: {e}");
                    return Ok(ExitCode::from(1));
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            if let Some(e) = &report.error {
                eprintln!("kafscale: {target} is corrupt: {e}");
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The target's bytes, and what S3 says of it for s3:// targets.
type Target = (Bytes, Option<kafscale_s3::ObjectMeta>);

fn read_target(target: &str, s3: &S3Args) -> anyhow::Result<Target> {
    let Some(rest) = target.strip_prefix("s3://") else {
        return std::fs::read(target)
            .map(|b| (Bytes::from(b), None))
            .with_context(|| format!("cannot read {target}"));
    };
    let Some((bucket, key)) = rest.split_once('/') else {
        bail!("{target}: expected s3://bucket/key");
    };
    let mut config = S3Config::new(&s3.s3_endpoint, bucket, Credentials::from_env()?)?;
    config.region = s3.s3_region.clone();
    let key = key.to_owned();
    let object =
        kafscale_shard::block_on(move || async move { S3Client::new(config).get(&key).await })??;
    Ok((object.body, Some(object.meta)))
}
