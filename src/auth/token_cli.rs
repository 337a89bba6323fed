//! `kafscale tokens ...`: bearer tokens of the REST API, through any
//! broker's REST API (`--http`), with an admin token (see
//! [`crate::rest_client::cli_token`] for where the CLI finds it).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use hyper::Method;

use crate::rest_client::Http;

#[derive(Args, Debug)]
pub struct TokensArgs {
    /// Any broker's HTTP address (its --metrics-listen).
    #[arg(
        long,
        global = true,
        env = "KAFSCALE_HTTP",
        default_value = "http://127.0.0.1:9093"
    )]
    pub http: String,
    #[command(subcommand)]
    pub command: TokensCommand,
}

#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    /// Makes a token and prints it (once: only its hash is kept).
    Add {
        /// 1 to 64 of A-Z, a-z, 0-9, '-' and '_'.
        name: String,
        /// viewer (read), operator (also mirror jobs and restores) or admin
        /// (also users and tokens).
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
    },
    /// Lists tokens (names, roles, when made; never secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Removes a token: requests with it are refused from then on.
    Remove { name: String },
}

#[derive(serde::Deserialize, serde::Serialize)]
struct Listed {
    name: String,
    role: String,
    created_ms: i64,
}

pub fn run(args: TokensArgs) -> anyhow::Result<ExitCode> {
    let api = Http::parse(&args.http)?;
    match args.command {
        TokensCommand::Add { name, role } => {
            let body = serde_json::json!({ "name": name, "role": role });
            let made: serde_json::Value = api.call(Method::POST, "/v1/tokens", Some(&body))?;
            // The token alone on stdout, for `$(kafscale tokens add ...)`.
            println!("{}", made["token"].as_str().unwrap_or_default());
            eprintln!("token {name} ({role}) made; it is shown only this once");
        }
        TokensCommand::List { json } => {
            let tokens: Vec<Listed> = api.call(Method::GET, "/v1/tokens", None::<&()>)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                println!("{:<32} {:<10} CREATED", "NAME", "ROLE");
                for t in tokens {
                    let made = kafscale_s3::format_unix_ms(t.created_ms);
                    println!("{:<32} {:<10} {made}", t.name, t.role);
                }
            }
        }
        TokensCommand::Remove { name } => {
            let _: serde_json::Value =
                api.call(Method::DELETE, &format!("/v1/tokens/{name}"), None::<&()>)?;
            println!("token {name}: removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}
