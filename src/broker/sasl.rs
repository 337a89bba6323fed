//! SASL on a connection, in Kafka's order (KIP-43, KIP-152, KIP-368):
//!
//! ```text
//! [ApiVersions]  SaslHandshake(mechanism)  SaslAuthenticate(token)...  requests
//!                  v0: the tokens follow as bare length-prefixed frames
//!                  v1: each token rides in a SaslAuthenticate request
//! ... session lifetime passes: SaslHandshake + SaslAuthenticate again (same
//!     mechanism and user) or the next request closes the connection
//! ```
//!
//! Before authentication only ApiVersions, SaslHandshake and
//! SaslAuthenticate are served; anything else closes the connection. A
//! failed authentication answers SASL_AUTHENTICATION_FAILED with Kafka's
//! generic message (the reason goes to the broker's log, never to the
//! client, and never a password) and closes. The reader handles these
//! requests itself, one at a time, so the session's state has one owner.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};

use super::api::{decode, respond, str_bytes};
use super::conn::Reply;
use super::errors::ErrorCode;
use super::shard::Shard;
use crate::auth::hasher::Hasher;
use crate::auth::scram::{self, Challenge};
use crate::auth::{ScramMechanism, plain};
use kafscale_codec::header::RequestHeader;

/// Largest frame accepted before a connection has authenticated (Kafka's
/// `sasl.server.max.receive.size`): no stranger reserves 100 MiB.
pub const MAX_UNAUTHENTICATED_FRAME: usize = 512 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    Scram(ScramMechanism),
}

impl SaslMechanism {
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("PLAIN") {
            return Some(Self::Plain);
        }
        ScramMechanism::parse(s).map(Self::Scram)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::Scram(m) => m.name(),
        }
    }
}

/// The SASL settings of the broker's SASL listeners.
#[derive(Debug)]
pub struct SaslSettings {
    pub mechanisms: Vec<SaslMechanism>,
    /// `--sasl-session-lifetime-ms`; `None` for sessions without an end.
    pub session_lifetime: Option<Duration>,
    pub hasher: Hasher,
}

impl SaslSettings {
    pub fn new(mechanisms: &[String], lifetime_ms: u64, hasher: Hasher) -> anyhow::Result<Self> {
        let mut out = Vec::new();
        for m in mechanisms {
            let m = SaslMechanism::parse(m.trim()).ok_or_else(|| {
                anyhow::anyhow!(
                    "--sasl-mechanisms: {m:?} is none of SCRAM-SHA-512, SCRAM-SHA-256, PLAIN"
                )
            })?;
            if !out.contains(&m) {
                out.push(m);
            }
        }
        if out.is_empty() {
            anyhow::bail!("--sasl-mechanisms is empty, but a SASL listener needs one");
        }
        Ok(Self {
            mechanisms: out,
            session_lifetime: (lifetime_ms > 0).then(|| Duration::from_millis(lifetime_ms)),
            hasher,
        })
    }
}

/// What the reader does with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// The usual way: a task of its own.
    Serve,
    /// SaslHandshake or SaslAuthenticate: [`Session::handle`], in line.
    Sasl,
    /// Not allowed now: the connection closes, for this reason.
    Refuse(String),
}

enum Step {
    /// Expecting SaslHandshake.
    Start,
    /// Expecting the first token of `mechanism`; `raw` after a v0 handshake.
    Chosen {
        mechanism: SaslMechanism,
        raw: bool,
    },
    /// Expecting SCRAM's client-final message.
    ScramFinal {
        mechanism: ScramMechanism,
        raw: bool,
        challenge: Box<Challenge>,
    },
    Authenticated,
}

/// The SASL state of one connection.
pub struct Session {
    settings: Arc<SaslSettings>,
    step: Step,
    /// The authenticated user (kept while re-authenticating).
    user: Option<String>,
    mechanism: Option<SaslMechanism>,
    expires: Option<Instant>,
    peer: String,
}

/// Why an exchange failed, for the log.
struct Failure {
    reason: String,
}

impl Session {
    pub fn new(settings: Arc<SaslSettings>, peer: String) -> Self {
        Self {
            settings,
            step: Step::Start,
            user: None,
            mechanism: None,
            expires: None,
            peer,
        }
    }

    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn authenticated(&self) -> bool {
        self.user.is_some()
    }

    /// After a v0 handshake the next frame is a bare token, not a request.
    pub fn expects_raw_token(&self) -> bool {
        matches!(
            self.step,
            Step::Chosen { raw: true, .. } | Step::ScramFinal { raw: true, .. }
        )
    }

    pub fn route(&self, api: Option<ApiKey>) -> Route {
        match api {
            Some(ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) => Route::Sasl,
            Some(ApiKey::ApiVersions) => Route::Serve,
            _ if self.user.is_none() => Route::Refuse(format!(
                "{} before SASL authentication",
                api.map_or_else(|| "an unknown request".to_owned(), |a| format!("{a:?}"))
            )),
            _ if self.expires.is_some_and(|t| Instant::now() >= t) => Route::Refuse(
                "the SASL session ended and the client did not re-authenticate".into(),
            ),
            _ => Route::Serve,
        }
    }

    /// Handles SaslHandshake or SaslAuthenticate.
    pub async fn handle(&mut self, shard: &Shard, header: &RequestHeader, body: Bytes) -> Reply {
        let result = if header.api_key == ApiKey::SaslHandshake as i16 {
            self.handshake(shard, header, body)
        } else {
            self.authenticate(shard, header, body).await
        };
        result.unwrap_or_else(|why| Reply::Close(format!("SASL: {why}")))
    }

    fn handshake(
        &mut self,
        shard: &Shard,
        header: &RequestHeader,
        body: Bytes,
    ) -> Result<Reply, String> {
        let req: SaslHandshakeRequest = decode(body, header.api_version)?;
        let asked = req.mechanism.as_str();
        let enabled = &self.settings.mechanisms;
        let mut resp = SaslHandshakeResponse::default()
            .with_mechanisms(enabled.iter().map(|m| str_bytes(m.name())).collect());
        let chosen = SaslMechanism::parse(asked).filter(|m| enabled.contains(m));
        let reauth = matches!(self.step, Step::Authenticated);
        let fail = |code: ErrorCode, why: String| -> Result<Reply, String> {
            shard.metrics.sasl_failures.fetch_add(1, Relaxed);
            tracing::warn!(peer = %self.peer, mechanism = asked, "SASL handshake refused: {why}");
            let resp = resp.clone().with_error_code(code.code());
            Ok(close_after(respond(header, &resp)?, why))
        };
        if !matches!(self.step, Step::Start | Step::Authenticated) {
            return fail(
                ErrorCode::ILLEGAL_SASL_STATE,
                "SaslHandshake in the middle of an authentication".into(),
            );
        }
        let Some(mechanism) = chosen else {
            return fail(
                ErrorCode::UNSUPPORTED_SASL_MECHANISM,
                format!(
                    "mechanism {asked:?} is not enabled (enabled: {})",
                    enabled
                        .iter()
                        .map(|m| m.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        };
        if reauth && self.mechanism != Some(mechanism) {
            return fail(
                ErrorCode::ILLEGAL_SASL_STATE,
                format!("re-authentication must keep the mechanism, not switch to {asked}"),
            );
        }
        let raw = header.api_version == 0;
        if reauth && raw {
            return fail(
                ErrorCode::ILLEGAL_SASL_STATE,
                "re-authentication needs SaslHandshake v1".into(),
            );
        }
        self.step = Step::Chosen { mechanism, raw };
        resp.error_code = 0;
        respond(header, &resp)
    }

    async fn authenticate(
        &mut self,
        shard: &Shard,
        header: &RequestHeader,
        body: Bytes,
    ) -> Result<Reply, String> {
        let req: SaslAuthenticateRequest = decode(body, header.api_version)?;
        if !matches!(
            self.step,
            Step::Chosen { raw: false, .. } | Step::ScramFinal { raw: false, .. }
        ) {
            shard.metrics.sasl_failures.fetch_add(1, Relaxed);
            let resp = SaslAuthenticateResponse::default()
                .with_error_code(ErrorCode::ILLEGAL_SASL_STATE.code())
                .with_error_message(Some(str_bytes(
                    "SaslAuthenticate is only valid after a SaslHandshake v1",
                )));
            return Ok(close_after(
                respond(header, &resp)?,
                "SaslAuthenticate out of order".into(),
            ));
        }
        let mechanism = self.step_mechanism();
        match self.step_token(shard, &req.auth_bytes).await {
            Ok(token) => {
                let mut resp = SaslAuthenticateResponse::default().with_auth_bytes(token.into());
                if matches!(self.step, Step::Authenticated) {
                    resp.session_lifetime_ms = self
                        .settings
                        .session_lifetime
                        .map_or(0, |d| d.as_millis() as i64);
                }
                respond(header, &resp)
            }
            Err(f) => {
                let resp = SaslAuthenticateResponse::default()
                    .with_error_code(ErrorCode::SASL_AUTHENTICATION_FAILED.code())
                    .with_error_message(Some(str_bytes(&generic_message(mechanism))));
                Ok(close_after(respond(header, &resp)?, f.reason))
            }
        }
    }

    /// A bare token after a v0 handshake; answered with a bare token, and
    /// a failure closes the connection (v0 has no way to say why).
    pub async fn raw_token(&mut self, shard: &Shard, token: &[u8]) -> Reply {
        match self.step_token(shard, token).await {
            Ok(answer) => {
                let mut out = BytesMut::with_capacity(4 + answer.len());
                out.put_u32(answer.len() as u32);
                out.put_slice(&answer);
                Reply::Frame(vec![out.freeze()])
            }
            Err(f) => Reply::Close(format!("SASL: {}", f.reason)),
        }
    }

    fn step_mechanism(&self) -> &'static str {
        match &self.step {
            Step::Chosen { mechanism, .. } => mechanism.name(),
            Step::ScramFinal { mechanism, .. } => mechanism.name(),
            _ => "",
        }
    }

    /// One token of the exchange; the answer token, or why it failed (the
    /// connection closes then).
    async fn step_token(&mut self, shard: &Shard, token: &[u8]) -> Result<Vec<u8>, Failure> {
        let mechanism = self.step_mechanism();
        let step = std::mem::replace(&mut self.step, Step::Start);
        let outcome = self.step_inner(shard, step, token).await;
        match &outcome {
            Ok(_) if matches!(self.step, Step::Authenticated) => {
                shard.metrics.sasl_authentications.fetch_add(1, Relaxed);
            }
            Ok(_) => {}
            Err(f) => {
                shard.metrics.sasl_failures.fetch_add(1, Relaxed);
                tracing::warn!(peer = %self.peer, "SASL authentication failed: {}", f.reason);
                crate::audit::record(&crate::audit::Event {
                    principal: crate::auth::ANONYMOUS,
                    // The address, as the other audit lines (and ACLs)
                    // name hosts; the port is in the warning above.
                    host: self
                        .peer
                        .parse::<std::net::SocketAddr>()
                        .map(|a| crate::auth::acl::host_of(a.ip()))
                        .as_deref()
                        .unwrap_or(&self.peer),
                    action: "SaslAuthenticate",
                    target: mechanism,
                    outcome: &format!("failed: {}", f.reason),
                });
            }
        }
        outcome
    }

    async fn step_inner(
        &mut self,
        shard: &Shard,
        step: Step,
        token: &[u8],
    ) -> Result<Vec<u8>, Failure> {
        let fail = |reason: String| Failure { reason };
        match step {
            Step::Chosen {
                mechanism: SaslMechanism::Plain,
                ..
            } => {
                let msg = plain::parse(token).map_err(|e| fail(format!("PLAIN: {e}")))?;
                let user = msg.user.clone();
                let mut verdict = None;
                for m in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
                    let Some(keys) = self.lookup(shard, &user, m).await? else {
                        continue;
                    };
                    let patience = shard.args.frame_read_timeout();
                    verdict = Some(
                        self.settings
                            .hasher
                            .check_password(m.hash(), keys, msg.password, patience)
                            .await
                            .ok_or_else(|| {
                                fail(format!(
                                    "PLAIN for user {user:?}: the password checks are queued beyond capacity"
                                ))
                            })?,
                    );
                    break;
                }
                match verdict {
                    Some(true) => {
                        self.establish(user, SaslMechanism::Plain)?;
                        Ok(Vec::new())
                    }
                    Some(false) => Err(fail(format!("PLAIN: wrong password for user {user:?}"))),
                    None => Err(fail(format!("PLAIN: unknown user {user:?}"))),
                }
            }
            Step::Chosen {
                mechanism: SaslMechanism::Scram(m),
                raw,
            } => {
                let first =
                    scram::parse_client_first(token).map_err(|e| fail(format!("{m}: {e}")))?;
                let keys = self.lookup(shard, &first.user, m).await?;
                let (challenge, answer) = first.answer(m.hash(), keys);
                self.step = Step::ScramFinal {
                    mechanism: m,
                    raw,
                    challenge: Box::new(challenge),
                };
                Ok(answer)
            }
            Step::ScramFinal {
                mechanism,
                challenge,
                ..
            } => {
                let who = challenge.user().to_owned();
                let (user, answer) = challenge
                    .finish(token)
                    .map_err(|e| fail(format!("{mechanism} for user {who:?}: {e}")))?;
                self.establish(user, SaslMechanism::Scram(mechanism))?;
                Ok(answer)
            }
            Step::Start | Step::Authenticated => Err(fail("a token before SaslHandshake".into())),
        }
    }

    async fn lookup(
        &self,
        shard: &Shard,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<Option<crate::auth::credential::Keys>, Failure> {
        let name = user.to_owned();
        let cred = shard
            .meta
            .call(move |s| s.scram_credential(&name, mechanism))
            .await
            .map_err(|e| Failure {
                reason: format!("cannot read the credentials of user {user:?}: {e}"),
            })?;
        cred.map(|c| c.keys()).transpose().map_err(|e| Failure {
            reason: format!("user {user:?}: {e}"),
        })
    }

    fn establish(&mut self, user: String, mechanism: SaslMechanism) -> Result<(), Failure> {
        if let Some(previous) = &self.user
            && *previous != user
        {
            return Err(Failure {
                reason: format!(
                    "re-authentication as user {user:?} on a connection of user {previous:?}"
                ),
            });
        }
        tracing::debug!(peer = %self.peer, user = %user, mechanism = mechanism.name(), "SASL authenticated");
        self.user = Some(user);
        self.mechanism = Some(mechanism);
        self.expires = self.settings.session_lifetime.map(|d| Instant::now() + d);
        self.step = Step::Authenticated;
        Ok(())
    }
}

/// Kafka's message for a failed authentication: the same for a wrong
/// password and an unknown user.
fn generic_message(mechanism: &str) -> String {
    format!(
        "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
    )
}

/// A response, then the connection closes.
fn close_after(reply: Reply, why: String) -> Reply {
    match reply {
        Reply::Frame(chunks) => Reply::FrameThenClose(chunks, why),
        other => other,
    }
}
