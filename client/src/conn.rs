//! One connection to one broker: TLS and SASL at open, ApiVersions
//! negotiation, then pipelined requests matched to their answers by
//! correlation id.
//!
//! ```text
//! call() ──encode──> write lock ──frame──> socket ──> broker
//!    ^                                                  │
//!    └── oneshot <── pending[corr] <── reader task <────┘
//! ```
//!
//! Single-threaded invariants: a connection lives on one glommio executor;
//! its stream sits in a `RefCell` borrowed only inside one `poll` (never
//! across an await), so the reader task and the writers share it without
//! locks. Writers take the async write lock for a whole frame, so frames
//! never interleave, and hold it across a SASL re-authentication so that no
//! other request is sent meanwhile (KIP-368).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::channel::oneshot;
use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::TlsConnector;
use kafscale_codec::frame::FrameDecoder;
use kafscale_codec::kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafscale_codec::kafka_protocol::protocol::{Decodable, Request, StrBytes};
use kafscale_shard::{RawSocket, Stream, within};

use crate::buffers::{FrameBuffers, LARGE_FRAME};
use crate::config::{Mechanism, SaslConfig};
use crate::error::{Api, ClientError, KafkaCode, Result};
use crate::sasl::{self, Scram, ScramHash};

/// Bytes asked of the socket per read when no large frame is pending.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes of large response frames a connection keeps to reuse their buffers.
const LENT_FRAMES_CAP: usize = 64 * 1024 * 1024;

/// The newest version of each API this client speaks (and the oldest it
/// will use). The version sent is the highest both sides support.
const SPOKEN: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 9),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::FindCoordinator, 1, 4),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

fn spoken(api: ApiKey) -> Option<(i16, i16)> {
    SPOKEN
        .iter()
        .find(|(k, _, _)| *k == api)
        .map(|&(_, lo, hi)| (lo, hi))
}

type Answer = std::result::Result<Bytes, String>;

struct Shared {
    stream: RefCell<Stream>,
    pending: RefCell<HashMap<i32, oneshot::Sender<Answer>>>,
    /// Why the connection ended, once it has.
    dead: RefCell<Option<String>>,
}

impl Shared {
    fn fail_all(&self, reason: String) {
        for (_, tx) in self.pending.borrow_mut().drain() {
            let _ = tx.send(Err(reason.clone()));
        }
        *self.dead.borrow_mut() = Some(reason);
    }
}

/// Re-authentication state (KIP-368).
struct Auth {
    sasl: SaslConfig,
    /// When to authenticate again, if the broker set a session lifetime.
    due: Cell<Option<Instant>>,
    /// The session lifetime the broker announced last (KIP-368).
    lifetime: Cell<Option<Duration>>,
    /// Logins on this connection after the first.
    reauthentications: Cell<u32>,
}

pub struct Connection {
    addr: String,
    shared: Rc<Shared>,
    write_lock: futures::lock::Mutex<()>,
    next_corr: Cell<i32>,
    versions: HashMap<i16, (i16, i16)>,
    client_id: String,
    request_timeout: Duration,
    auth: Option<Auth>,
    _reader: glommio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .field("dead", &self.shared.dead.borrow())
            .finish_non_exhaustive()
    }
}

/// What [`Connection::open`] needs besides the address.
#[derive(Clone)]
pub(crate) struct OpenOptions<'a> {
    pub tls: Option<(&'a TlsConnector, &'a str)>,
    pub sasl: Option<&'a SaslConfig>,
    pub client_id: &'a str,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_response_bytes: usize,
}

impl Connection {
    /// Connects, runs TLS, negotiates API versions and authenticates.
    pub(crate) async fn open(
        addr: &str,
        socket: SocketAddr,
        opts: OpenOptions<'_>,
    ) -> Result<Self> {
        let stream = within(opts.connect_timeout, Stream::connect(socket, opts.tls))
            .await
            .ok_or_else(|| ClientError::Connect {
                addr: addr.to_owned(),
                reason: format!("no connection within {:?}", opts.connect_timeout),
            })?
            .map_err(|e| match e {
                kafscale_shard::ConnectError::Tls(e) => ClientError::Tls {
                    addr: addr.to_owned(),
                    reason: e.to_string(),
                },
                e => ClientError::Connect {
                    addr: addr.to_owned(),
                    reason: e.to_string(),
                },
            })?;
        let shared = Rc::new(Shared {
            stream: RefCell::new(stream),
            pending: RefCell::default(),
            dead: RefCell::default(),
        });
        let reader = glommio::spawn_local(read_loop(
            shared.clone(),
            FrameDecoder::new(opts.max_response_bytes),
        ))
        .detach();
        let mut conn = Self {
            addr: addr.to_owned(),
            shared,
            write_lock: futures::lock::Mutex::new(()),
            next_corr: Cell::new(1),
            versions: HashMap::new(),
            client_id: opts.client_id.to_owned(),
            request_timeout: opts.request_timeout,
            auth: opts.sasl.map(|s| Auth {
                sasl: s.clone(),
                due: Cell::new(None),
                lifetime: Cell::new(None),
                reauthentications: Cell::new(0),
            }),
            _reader: reader,
        };
        let setup = async {
            conn.versions = conn.negotiate_versions().await?;
            if conn.auth.is_some() {
                let _guard = conn.write_lock.lock().await;
                conn.authenticate_locked().await?;
            }
            Ok::<_, ClientError>(())
        };
        match within(opts.connect_timeout, setup).await {
            // TLS 1.3 servers refuse a client certificate (or its absence)
            // after the client's side of the handshake is done: the refusal
            // arrives as an alert on the first read.
            Some(Err(ClientError::ConnectionLost { reason, .. }))
                if opts.tls.is_some() && reason.contains("alert") =>
            {
                return Err(ClientError::Tls {
                    addr: addr.to_owned(),
                    reason: format!("the broker ended the session after the handshake: {reason}"),
                });
            }
            Some(r) => r?,
            None => {
                return Err(ClientError::Connect {
                    addr: addr.to_owned(),
                    reason: format!(
                        "connected, but version negotiation and authentication did not finish within {:?}",
                        opts.connect_timeout
                    ),
                });
            }
        }
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection has ended (the broker closed it, or an error).
    pub fn is_dead(&self) -> bool {
        self.shared.dead.borrow().is_some()
    }

    /// The SASL session lifetime the broker announced (KIP-368), if any.
    pub fn session_lifetime(&self) -> Option<Duration> {
        self.auth.as_ref().and_then(|a| a.lifetime.get())
    }

    /// How many times this connection logged in again before its session
    /// ran out.
    pub fn reauthentications(&self) -> u32 {
        self.auth.as_ref().map_or(0, |a| a.reauthentications.get())
    }

    /// The broker's version range for an API, if it serves it.
    pub fn broker_versions(&self, api: ApiKey) -> Option<(i16, i16)> {
        self.versions.get(&(api as i16)).copied()
    }

    /// The version to send: the highest both sides support.
    pub fn version(&self, api: ApiKey) -> Result<i16> {
        let ours = spoken(api).unwrap_or((0, -1));
        let theirs = self.broker_versions(api);
        match theirs {
            Some((lo, hi)) if lo.max(ours.0) <= hi.min(ours.1) => Ok(hi.min(ours.1)),
            _ => Err(ClientError::UnsupportedVersion {
                addr: self.addr.clone(),
                api: Api(api),
                ours,
                theirs,
            }),
        }
    }

    /// Sends `req` at the negotiated version and decodes the answer.
    pub async fn call<R: Request>(&self, req: &R) -> Result<R::Response> {
        let api = api_key::<R>();
        let version = self.version(api)?;
        self.call_at(req, version, Duration::ZERO).await
    }

    /// As [`Connection::call`] at a given version; `extra_wait` lengthens the
    /// timeout by what the broker may legitimately wait (a fetch's max wait).
    pub async fn call_at<R: Request>(
        &self,
        req: &R,
        version: i16,
        extra_wait: Duration,
    ) -> Result<R::Response> {
        let api = api_key::<R>();
        let mut body = self.call_raw(req, version, extra_wait).await?;
        R::Response::decode(&mut body, version).map_err(|e| self.protocol(api, version, e))
    }

    /// Sends `req` and returns the answer's body (after the response header)
    /// as a slice of the frame it arrived in.
    pub async fn call_raw<R: Request>(
        &self,
        req: &R,
        version: i16,
        extra_wait: Duration,
    ) -> Result<Bytes> {
        let api = api_key::<R>();
        let frame = self.encode(req, api, version)?;
        let guard = self.write_lock.lock().await;
        self.reauthenticate_if_due().await?;
        let rx = self.send_locked(api, version, frame, true).await?;
        drop(guard);
        self.receive(api, version, rx, extra_wait).await
    }

    /// Sends a request whose answer does not come (Produce with acks 0).
    pub async fn send_only<R: Request>(&self, req: &R, version: i16) -> Result<()> {
        let api = api_key::<R>();
        let frame = self.encode(req, api, version)?;
        let _guard = self.write_lock.lock().await;
        self.reauthenticate_if_due().await?;
        // Nothing answers: the receiver is dropped at once.
        drop(self.send_locked(api, version, frame, false).await?);
        Ok(())
    }

    fn encode<R: Request>(&self, req: &R, api: ApiKey, version: i16) -> Result<(i32, BytesMut)> {
        let corr = self.next_corr.get();
        self.next_corr.set(corr.wrapping_add(1).max(1));
        let mut out = BytesMut::with_capacity(256);
        out.put_i32(0);
        out.put_i16(api as i16);
        out.put_i16(version);
        out.put_i32(corr);
        out.put_i16(self.client_id.len() as i16);
        out.put_slice(self.client_id.as_bytes());
        if api.request_header_version(version) >= 2 {
            out.put_u8(0); // no tagged fields
        }
        req.encode(&mut out, version)
            .map_err(|e| ClientError::Protocol {
                addr: self.addr.clone(),
                api: Api(api),
                version,
                reason: format!("request cannot be encoded: {e}"),
            })?;
        let len = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        Ok((corr, out))
    }

    /// Writes one frame; the caller holds the write lock.
    async fn send_locked(
        &self,
        api: ApiKey,
        _version: i16,
        (corr, frame): (i32, BytesMut),
        expect_answer: bool,
    ) -> Result<oneshot::Receiver<Answer>> {
        if let Some(reason) = self.shared.dead.borrow().clone() {
            return Err(self.lost(api, reason));
        }
        let (tx, rx) = oneshot::channel();
        if expect_answer {
            self.shared.pending.borrow_mut().insert(corr, tx);
        }
        if let Err(e) = write_all(&self.shared, &frame).await {
            self.shared.pending.borrow_mut().remove(&corr);
            let reason = e.to_string();
            self.shared.fail_all(reason.clone());
            return Err(self.lost(api, reason));
        }
        Ok(rx)
    }

    async fn receive(
        &self,
        api: ApiKey,
        version: i16,
        rx: oneshot::Receiver<Answer>,
        extra_wait: Duration,
    ) -> Result<Bytes> {
        let timeout = self.request_timeout + extra_wait;
        let frame = match within(timeout, rx).await {
            None => {
                return Err(ClientError::Timeout {
                    addr: self.addr.clone(),
                    api: Api(api),
                    timeout,
                });
            }
            Some(Err(_canceled)) => return Err(self.lost(api, "connection dropped".into())),
            Some(Ok(Err(reason))) => return Err(self.lost(api, reason)),
            Some(Ok(Ok(frame))) => frame,
        };
        skip_response_header(frame, api.response_header_version(version))
            .map_err(|reason| self.protocol(api, version, reason))
    }

    async fn negotiate_versions(&self) -> Result<HashMap<i16, (i16, i16)>> {
        let mut req = ApiVersionsRequest::default();
        req.client_software_name = StrBytes::from_static_str("kafscale-client");
        req.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
        let version = 3;
        let frame = self.encode(&req, ApiKey::ApiVersions, version)?;
        let rx = {
            let _guard = self.write_lock.lock().await;
            self.send_locked(ApiKey::ApiVersions, version, frame, true)
                .await?
        };
        let body = self
            .receive(ApiKey::ApiVersions, version, rx, Duration::ZERO)
            .await?;
        let mut b = body.clone();
        let mut resp = ApiVersionsResponse::decode(&mut b, version);
        // A broker without v3 answers in v0 with UNSUPPORTED_VERSION and
        // its ranges, which is all we need.
        if resp
            .as_ref()
            .map_or(true, |r| r.error_code == KafkaCode::UNSUPPORTED_VERSION.0)
        {
            let mut b = body;
            resp = ApiVersionsResponse::decode(&mut b, 0);
        }
        let resp = resp.map_err(|e| self.protocol(ApiKey::ApiVersions, version, e))?;
        if resp.error_code != 0 {
            return Err(self.kafka(ApiKey::ApiVersions, None, resp.error_code, None));
        }
        Ok(resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect())
    }

    async fn reauthenticate_if_due(&self) -> Result<()> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        if auth.due.get().is_some_and(|due| Instant::now() >= due) {
            tracing::debug!(broker = %self.addr, "re-authenticating before the session lifetime ends");
            self.authenticate_locked().await?;
            auth.reauthentications.set(auth.reauthentications.get() + 1);
        }
        Ok(())
    }

    /// SaslHandshake v1, then SaslAuthenticate rounds; the caller holds the
    /// write lock (or nothing else can send yet).
    async fn authenticate_locked(&self) -> Result<()> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        let sasl = &auth.sasl;
        let mut hs = SaslHandshakeRequest::default();
        hs.mechanism = StrBytes::from_static_str(sasl.mechanism.name());
        let r = self.exchange_locked(&hs, 1).await?;
        if r.error_code != 0 {
            let enabled: Vec<&str> = r.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(self.auth_failed(
                sasl,
                format!(
                    "{}; the broker offers {}",
                    KafkaCode(r.error_code),
                    if enabled.is_empty() {
                        "no mechanism".to_owned()
                    } else {
                        enabled.join(", ")
                    }
                ),
            ));
        }
        let lifetime_ms = match sasl.mechanism {
            Mechanism::Plain => {
                let msg = sasl::plain_message(&sasl.username, sasl.password.expose());
                self.sasl_round(sasl, msg).await?.1
            }
            Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
                let hash = ScramHash::of(sasl.mechanism)
                    .unwrap_or_else(|| unreachable!("SCRAM mechanisms have a hash"));
                let scram = Scram::new(hash, &sasl.username, Scram::random_nonce());
                let (server_first, _) = self.sasl_round(sasl, scram.client_first()).await?;
                let first = scram
                    .parse_server_first(&server_first)
                    .map_err(|e| self.auth_failed(sasl, e.to_string()))?;
                // PBKDF2 runs off the executor: thousands of HMAC rounds.
                let (password, salt, iterations) = (
                    sasl.password.expose().as_bytes().to_vec(),
                    first.salt.clone(),
                    first.iterations,
                );
                let salted = glommio::executor()
                    .spawn_blocking(move || hash.salted_password(&password, &salt, iterations))
                    .await;
                let fin = scram.client_final(&first, &salted);
                let (server_final, lifetime) = self.sasl_round(sasl, fin.message.clone()).await?;
                fin.verify_server_final(&server_final)
                    .map_err(|e| self.auth_failed(sasl, e.to_string()))?;
                lifetime
            }
        };
        auth.lifetime
            .set((lifetime_ms > 0).then(|| Duration::from_millis(lifetime_ms as u64)));
        auth.due.set((lifetime_ms > 0).then(|| {
            // As Kafka's clients do: at 85-95% of the lifetime, jittered.
            let share = 0.85 + rand::random::<f64>() * 0.10;
            Instant::now() + Duration::from_millis((lifetime_ms as f64 * share) as u64)
        }));
        Ok(())
    }

    /// One SaslAuthenticate round: the server's bytes and session lifetime.
    async fn sasl_round(&self, sasl: &SaslConfig, bytes: Vec<u8>) -> Result<(Bytes, i64)> {
        let mut req = SaslAuthenticateRequest::default();
        req.auth_bytes = Bytes::from(bytes);
        let version = self.version(ApiKey::SaslAuthenticate)?;
        let r = self.exchange_locked(&req, version).await?;
        if r.error_code != 0 {
            let message = r
                .error_message
                .as_ref()
                .map(|m| m.to_string())
                .filter(|m| !m.is_empty());
            return Err(self.auth_failed(
                sasl,
                match message {
                    Some(m) => format!("{}: {m}", KafkaCode(r.error_code)),
                    None => KafkaCode(r.error_code).to_string(),
                },
            ));
        }
        Ok((r.auth_bytes, r.session_lifetime_ms))
    }

    /// Request and answer while the caller holds the write lock.
    async fn exchange_locked<R: Request>(&self, req: &R, version: i16) -> Result<R::Response> {
        let api = api_key::<R>();
        let frame = self.encode(req, api, version)?;
        let rx = self.send_locked(api, version, frame, true).await?;
        let mut body = self.receive(api, version, rx, Duration::ZERO).await?;
        R::Response::decode(&mut body, version).map_err(|e| self.protocol(api, version, e))
    }

    fn auth_failed(&self, sasl: &SaslConfig, message: String) -> ClientError {
        ClientError::Authentication {
            addr: self.addr.clone(),
            mechanism: sasl.mechanism.name(),
            user: sasl.username.clone(),
            message,
        }
    }

    fn lost(&self, api: ApiKey, reason: String) -> ClientError {
        ClientError::ConnectionLost {
            addr: self.addr.clone(),
            api: Api(api),
            reason,
        }
    }

    pub(crate) fn protocol(
        &self,
        api: ApiKey,
        version: i16,
        reason: impl std::fmt::Display,
    ) -> ClientError {
        ClientError::Protocol {
            addr: self.addr.clone(),
            api: Api(api),
            version,
            reason: reason.to_string(),
        }
    }

    pub(crate) fn kafka(
        &self,
        api: ApiKey,
        resource: Option<String>,
        code: i16,
        message: Option<&StrBytes>,
    ) -> ClientError {
        ClientError::Kafka {
            addr: self.addr.clone(),
            api: Api(api),
            resource,
            code: KafkaCode(code),
            message: message.map(|m| m.to_string()),
        }
    }
}

fn api_key<R: Request>() -> ApiKey {
    ApiKey::try_from(R::KEY)
        .unwrap_or_else(|_| unreachable!("kafka-protocol request types have known keys"))
}

/// The body of a response frame after its header (correlation id, and for
/// header v1 the tagged fields).
fn skip_response_header(
    mut frame: Bytes,
    header_version: i16,
) -> std::result::Result<Bytes, String> {
    if frame.len() < 4 {
        return Err("response shorter than its correlation id".into());
    }
    frame.advance(4);
    if header_version >= 1 {
        let count = read_uvarint(&mut frame)?;
        for _ in 0..count {
            let _tag = read_uvarint(&mut frame)?;
            let size = read_uvarint(&mut frame)? as usize;
            if frame.len() < size {
                return Err("tagged field runs past the frame".into());
            }
            frame.advance(size);
        }
    }
    Ok(frame)
}

fn read_uvarint(b: &mut Bytes) -> std::result::Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..35).step_by(7) {
        let Some(&byte) = b.first() else {
            return Err("header ends inside a varint".into());
        };
        b.advance(1);
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint longer than 5 bytes".into())
}

/// Reads frames until the stream ends, handing each to its caller.
async fn read_loop(shared: Rc<Shared>, decoder: FrameDecoder) {
    let reason = match read_frames(&shared, &decoder).await {
        Ok(()) => "the broker closed the connection".to_owned(),
        Err(reason) => reason,
    };
    tracing::debug!(%reason, "Kafka connection ended");
    shared.fail_all(reason);
}

/// Bytes read through the scratch buffer once the socket has woken us: a
/// probe, since the rest is then received straight into the frame buffer.
const WAKE_PROBE: usize = 512;

async fn read_frames(shared: &Shared, decoder: &FrameDecoder) -> std::result::Result<(), String> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut scratch = vec![0u8; READ_CHUNK];
    let mut frames = FrameBuffers::new(LENT_FRAMES_CAP);
    loop {
        let size = decoder.peek_len(&buf).map_err(|e| e.to_string())?;
        match size {
            // A large frame under way gets a buffer of its own, read to its end.
            Some(size) if size >= LARGE_FRAME && buf.len() < 4 + size => {
                let mut frame = frames.take(size);
                frame.extend_from_slice(&buf[4..]);
                buf.clear();
                while frame.len() < size {
                    let need = size - frame.len();
                    if !receive(shared, &mut frame, need, &mut scratch).await? {
                        return Ok(());
                    }
                }
                let frame = frame.freeze();
                frames.lend(&frame);
                deliver(shared, frame)?;
            }
            _ => match decoder.decode(&mut buf).map_err(|e| e.to_string())? {
                Some(frame) => deliver(shared, frame)?,
                None => {
                    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                        buf.reserve(READ_CHUNK);
                    }
                    if !receive(shared, &mut buf, READ_CHUNK, &mut scratch).await? {
                        return Ok(());
                    }
                }
            },
        }
    }
}

fn deliver(shared: &Shared, frame: Bytes) -> std::result::Result<(), String> {
    if frame.len() < 4 {
        return Err("a response frame shorter than its correlation id".to_owned());
    }
    let corr = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
    // An answer nobody waits for (its caller timed out) is dropped.
    if let Some(tx) = shared.pending.borrow_mut().remove(&corr) {
        let _ = tx.send(Ok(frame));
    }
    Ok(())
}

/// Appends at most `max` bytes from the stream to `buf`; false at the end
/// of the stream. On a plain socket bytes land in the buffer's spare
/// capacity directly; when nothing is ready (or under TLS) the stream is
/// polled with the scratch buffer, which registers the wake-up.
async fn receive(
    shared: &Shared,
    buf: &mut BytesMut,
    max: usize,
    scratch: &mut [u8],
) -> std::result::Result<bool, String> {
    if buf.capacity() == buf.len() {
        buf.reserve(max.min(READ_CHUNK));
    }
    let fd = shared.stream.borrow().raw_socket();
    if let Some(fd) = fd
        && let Some(result) = kafscale_shard::try_recv_buf(fd, buf, max)
    {
        return match result {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) => Err(e.to_string()),
        };
    }
    let want = if fd.is_some() {
        WAKE_PROBE
    } else {
        scratch.len()
    }
    .min(max);
    let n = futures::future::poll_fn(|cx| {
        let mut s = shared.stream.borrow_mut();
        Pin::new(&mut *s).poll_read(cx, &mut scratch[..want])
    })
    .await
    .map_err(|e| e.to_string())?;
    if n == 0 {
        return Ok(false);
    }
    buf.extend_from_slice(&scratch[..n]);
    Ok(true)
}

async fn write_all(shared: &Shared, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let n = futures::future::poll_fn(|cx| {
            let mut s = shared.stream.borrow_mut();
            Pin::new(&mut *s).poll_write(cx, data)
        })
        .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        data = &data[n..];
    }
    futures::future::poll_fn(|cx| {
        let mut s = shared.stream.borrow_mut();
        Pin::new(&mut *s).poll_flush(cx)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_header_v1_skips_tagged_fields() {
        let mut f = BytesMut::new();
        f.put_i32(7);
        f.put_u8(1); // one tagged field
        f.put_u8(3); // tag
        f.put_u8(2); // size
        f.put_slice(b"xy");
        f.put_slice(b"body");
        let body = skip_response_header(f.freeze(), 1).unwrap();
        assert_eq!(&body[..], b"body");
        let mut short = BytesMut::new();
        short.put_i32(7);
        short.put_u8(1);
        short.put_u8(3);
        short.put_u8(9);
        assert!(skip_response_header(short.freeze(), 1).is_err());
        assert!(skip_response_header(Bytes::from_static(b"ab"), 0).is_err());
    }

    #[test]
    fn every_spoken_api_is_in_kafka_protocol_range() {
        for &(api, lo, hi) in SPOKEN {
            let valid = api.valid_versions();
            assert!(lo <= hi && valid.min <= lo && hi <= valid.max, "{api:?}");
        }
    }
}
