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
        let needed = needs(method, path, self.all).filter(|_| self.tokens);
        let presented = authorization.and_then(|h| {
            let (scheme, rest) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
        });
        // Open routes never ask the store (a stale token or an etcd blip
        // must not fail a health probe).
        let who = match (presented, needed) {
            (_, None) | (None, _) => None,
            (Some(t), Some(_)) => Some(self.lookup(t).await.map_err(|(status, why)| Refused {
                principal: ANONYMOUS.to_owned(),
                status,
                why,
            })?),
        };
        let principal = who
            .as_ref()
            .map_or_else(|| ANONYMOUS.to_owned(), |(n, _)| format!("Token:{n}"));
        let Some(needed) = needed else {
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
    let mut made = false;
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
            made = true;
            stored
        }
        Err(e) => return Err(anyhow!("cannot read {}: {e}", file.display())),
    };
    let (peer, peer_stored) = token::generate(&format!("broker-{broker_id}"), Role::Viewer, now)
        .map_err(|e| anyhow!(e))?;
    // A token of the file's name already stored stays as it is: a removed
    // one is not brought back by a restart unless the file was made anew
    // (revoking the bootstrap token means removing it and its file).
    let name = admin.name.clone();
    let kept = meta
        .call_blocking(move |m| {
            let kept = match m.token(&admin.name)? {
                Some(t) if !made => Some(t.sha256 == admin.sha256),
                _ => {
                    m.put_token(&admin)?;
                    None
                }
            };
            m.put_token(&peer_stored)?;
            Ok(kept)
        })
        .map_err(|e| anyhow!("cannot register the REST API's tokens: {e}"))?;
    if kept == Some(false) {
        tracing::warn!(
            token = %name,
            file = %file.display(),
            "the metadata store holds another secret for this token name; the file's token is not accepted"
        );
    }
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
