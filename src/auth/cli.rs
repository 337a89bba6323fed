//! `kafscale users ...`: SCRAM users of the SASL listeners, through any
//! broker's REST API (`--http`). `add` derives the keys here, so the
//! password never leaves this process.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use hyper::Method;

use super::credential::{DEFAULT_ITERATIONS, UserSummary};
use super::{ScramCredential, ScramMechanism};
use crate::rest_client::Http;

#[derive(Args, Debug)]
pub struct UsersArgs {
    /// Any broker's HTTP address (its --metrics-listen).
    #[arg(
        long,
        global = true,
        env = "KAFSCALE_HTTP",
        default_value = "http://127.0.0.1:9093"
    )]
    pub http: String,
    #[command(subcommand)]
    pub command: UsersCommand,
}

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Adds a user, or replaces its credentials.
    Add {
        name: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512; repeat for both (default: both).
        /// PLAIN logins are checked against these too.
        #[arg(long = "mechanism")]
        mechanisms: Vec<String>,
        /// PBKDF2 iterations (4096 to 16384).
        #[arg(long, default_value_t = DEFAULT_ITERATIONS)]
        iterations: u32,
        /// Read the password from the first line of standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Lists users and their mechanisms.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Removes a user (or one mechanism's credential with --mechanism).
    Remove {
        name: String,
        #[arg(long)]
        mechanism: Option<String>,
    },
}

pub fn run(args: UsersArgs) -> anyhow::Result<ExitCode> {
    let api = Http::parse(&args.http)?;
    match args.command {
        UsersCommand::Add {
            name,
            mechanisms,
            iterations,
            password_stdin: _,
        } => {
            let mechanisms = if mechanisms.is_empty() {
                ScramMechanism::ALL.to_vec()
            } else {
                mechanisms
                    .iter()
                    .map(|m| parse_mechanism(m))
                    .collect::<anyhow::Result<_>>()?
            };
            let password = read_password()?;
            let credentials = mechanisms
                .iter()
                .map(|&m| ScramCredential::from_password(m, &password, iterations))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("--iterations: {e}"))?;
            let body = serde_json::json!({ "name": name, "credentials": credentials });
            let _: serde_json::Value = api.call(Method::POST, "/v1/users", Some(&body))?;
            let names: Vec<&str> = mechanisms.iter().map(|m| m.name()).collect();
            println!("user {name}: {} stored", names.join(", "));
        }
        UsersCommand::List { json } => {
            let users: Vec<UserSummary> = api.call(Method::GET, "/v1/users", None::<&()>)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                println!("{:<32} MECHANISMS", "NAME");
                for u in users {
                    let m: Vec<String> = u
                        .credentials
                        .iter()
                        .map(|c| format!("{} ({} iterations)", c.mechanism, c.iterations))
                        .collect();
                    println!("{:<32} {}", u.name, m.join(", "));
                }
            }
        }
        UsersCommand::Remove { name, mechanism } => {
            let mut path = format!("/v1/users/{}", escape(&name));
            if let Some(m) = mechanism {
                path.push('/');
                path.push_str(parse_mechanism(&m)?.name());
            }
            let _: serde_json::Value = api.call(Method::DELETE, &path, None::<&()>)?;
            println!("user {name}: removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_mechanism(m: &str) -> anyhow::Result<ScramMechanism> {
    ScramMechanism::parse(m)
        .with_context(|| format!("--mechanism {m:?} is neither SCRAM-SHA-256 nor SCRAM-SHA-512"))
}

/// The first line of standard input, without its line end.
fn read_password() -> anyhow::Result<String> {
    let mut input = String::new();
    std::io::stdin()
        .take(64 * 1024)
        .read_to_string(&mut input)
        .context("cannot read the password from standard input")?;
    let line = input.lines().next().unwrap_or_default();
    if line.is_empty() {
        bail!("--password-stdin: standard input holds no password");
    }
    Ok(line.to_owned())
}

fn escape(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}
