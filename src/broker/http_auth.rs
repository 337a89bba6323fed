//! Who may use the HTTP port: bearer tokens (`Authorization: Bearer
//! NAME.SECRET`, see [`crate::auth::token`]) checked against the metadata
//! store on every request, and the role each request needs.
//!
//! ```text
//! /metrics, /healthz, /v1/openapi.json   open (the first two need viewer
//!                                        with --http-auth-all)
//! GET  /v1/...                           viewer
//! POST, DELETE /v1/users..., /v1/tokens...   admin
//! POST, DELETE /v1/... (mirror, restore)     operator
//! ```
//!
//! Every request that changes something, and every refusal, is in the
//! audit trail with the token's name (`Token:NAME`) as the principal.

use hyper::{Method, StatusCode};

use crate::auth::token::{self, Role};
use crate::meta::MetaClient;

/// How the HTTP port is guarded.
#[derive(Clone, Debug)]
pub struct Gate {
    /// `--http-auth token` (the default); `none` lets anyone do anything.
    pub tokens: bool,
    /// `--http-auth-all`: /metrics and /healthz need a token too.
    pub all: bool,
    pub meta: MetaClient,
}

/// Who made a request: `Token:NAME`, or `HTTP:ANONYMOUS` without a token.
pub const ANONYMOUS: &str = "HTTP:ANONYMOUS";

/// The role `method path` needs, if any.
pub fn needs(method: &Method, path: &str, all: bool) -> Option<Role> {
    match path {
        "/metrics" | "/healthz" => all.then_some(Role::Viewer),
        "/v1/openapi.json" => None,
        p if p.starts_with("/v1/") => Some(if method == Method::GET {
            Role::Viewer
        } else if p.starts_with("/v1/users") || p.starts_with("/v1/tokens") {
            Role::Admin
        } else {
            Role::Operator
        }),
        _ => None,
    }
}

/// A refusal: the status and the sentence for the body.
pub type Refusal = (StatusCode, String);

/// A refused request: who asked (as far as known) and why not.
#[derive(Debug)]
pub struct Refused {
    pub principal: String,
    pub status: StatusCode,
    pub why: String,
}

impl Gate {
    /// The principal of a request that may go on, or why not.
    pub async fn check(
        &self,
        method: &Method,
        path: &str,
        authorization: Option<&str>,
    ) -> Result<String, Refused> {
        let presented = authorization.and_then(|h| {
            let (scheme, rest) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
        });
        let who = match (presented, self.tokens) {
            (_, false) | (None, _) => None,
            (Some(t), true) => Some(self.lookup(t).await.map_err(|(status, why)| Refused {
                principal: ANONYMOUS.to_owned(),
                status,
                why,
            })?),
        };
        let principal = who
            .as_ref()
            .map_or_else(|| ANONYMOUS.to_owned(), |(n, _)| format!("Token:{n}"));
        let Some(needed) = needs(method, path, self.all).filter(|_| self.tokens) else {
            return Ok(principal);
        };
        match who {
            None => Err(Refused {
                principal,
                status: StatusCode::UNAUTHORIZED,
                why: format!(
                    "{method} {path} needs a bearer token with the {needed} role (Authorization: Bearer NAME.SECRET; `kafscale tokens add`)"
                ),
            }),
            Some((name, role)) if role < needed => Err(Refused {
                principal,
                status: StatusCode::FORBIDDEN,
                why: format!("token {name:?} has the {role} role; {method} {path} needs {needed}"),
            }),
            Some(_) => Ok(principal),
        }
    }

    /// The token's name and role; a token that is malformed, unknown or
    /// has the wrong secret is refused alike.
    async fn lookup(&self, presented: &str) -> Result<(String, Role), Refusal> {
        let invalid = || (StatusCode::UNAUTHORIZED, "invalid bearer token".to_owned());
        let (name, secret) = token::split(presented).ok_or_else(invalid)?;
        let n = name.to_owned();
        let stored = self
            .meta
            .call(move |m| m.token(&n))
            .await
            .map_err(|e| {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot check the bearer token: {e}"),
                )
            })?
            .ok_or_else(invalid)?;
        if !token::matches(&stored, secret) {
            return Err(invalid());
        }
        Ok((stored.name, stored.role))
    }
}

/// Registers the admin token of `--http-token-file` (made and written
/// there, mode 0600, when the file does not exist) and a fresh viewer
/// token `broker-{id}` this broker asks its peers with; returns the latter
/// and the file. Nothing with `--http-auth none`.
pub fn bootstrap(
    args: &super::BrokerArgs,
    meta: &MetaClient,
    broker_id: i32,
) -> anyhow::Result<Option<(String, std::path::PathBuf)>> {
    use anyhow::{Context, anyhow};
    use std::io::Write as _;
    if args.http_auth != "token" {
        return Ok(None);
    }
    let now = crate::meta::store::now_ms();
    let file = args
        .http_token_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join(crate::rest_client::TOKEN_FILE));
    let admin = match std::fs::read_to_string(&file) {
        Ok(text) => {
            let (name, secret) = token::split(&text).ok_or_else(|| {
                anyhow!(
                    "{} does not hold a token (NAME.SECRET); remove it to have a new one made",
                    file.display()
                )
            })?;
            token::stored(name, Role::Admin, secret, now)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (text, stored) = token::generate(&format!("admin-{broker_id}"), Role::Admin, now)
                .map_err(|e| anyhow!(e))?;
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode_0600()
                .open(&file)
                .with_context(|| format!("cannot write the admin token to {}", file.display()))?;
            writeln!(f, "{text}")
                .and_then(|()| f.sync_all())
                .with_context(|| format!("cannot write the admin token to {}", file.display()))?;
            stored
        }
        Err(e) => return Err(anyhow!("cannot read {}: {e}", file.display())),
    };
    let (peer, peer_stored) = token::generate(&format!("broker-{broker_id}"), Role::Viewer, now)
        .map_err(|e| anyhow!(e))?;
    meta.call_blocking(move |m| {
        m.put_token(&admin)?;
        m.put_token(&peer_stored)
    })
    .map_err(|e| anyhow!("cannot register the REST API's tokens: {e}"))?;
    Ok(Some((peer, file)))
}

/// Files only their owner reads.
trait Private {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Private for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_the_method_and_the_resource() {
        assert_eq!(needs(&Method::GET, "/metrics", false), None);
        assert_eq!(needs(&Method::GET, "/metrics", true), Some(Role::Viewer));
        assert_eq!(needs(&Method::GET, "/v1/openapi.json", true), None);
        assert_eq!(needs(&Method::GET, "/v1/users", false), Some(Role::Viewer));
        assert_eq!(needs(&Method::POST, "/v1/users", false), Some(Role::Admin));
        assert_eq!(
            needs(&Method::DELETE, "/v1/tokens/x", false),
            Some(Role::Admin)
        );
        assert_eq!(
            needs(&Method::POST, "/v1/mirror/jobs", false),
            Some(Role::Operator)
        );
        assert_eq!(
            needs(&Method::POST, "/v1/restore/topics", false),
            Some(Role::Operator)
        );
    }
}
