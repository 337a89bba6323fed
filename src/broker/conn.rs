//! One Kafka connection: frames in, responses out, in request order.
//!
//! The reader reserves a frame's size from the shard's memory budget before
//! reading its body (when the budget is spent it stops reading, and the client
//! slows down; frames under 64 KiB never wait), reads the body into one
//! buffer within `--frame-read-timeout-ms` (a stalled sender loses its
//! connection and its reservation), and starts a task per request. A produce request's buffer is split into its records pieces,
//! which the owning partitions append (large ones without a copy). The writer
//! awaits those tasks in order, so clients can pipeline (librdkafka keeps up
//! to 5 produce requests in flight) while responses still go back in the
//! order Kafka promises.
//!
//! On a TLS listener the handshake comes first (within the frame deadline);
//! on a SASL listener the reader itself answers SaslHandshake and
//! SaslAuthenticate, one at a time, and serves nothing but ApiVersions
//! until the client has authenticated (`sasl`).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::{Bytes, BytesMut};
use futures::channel::oneshot;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use kafscale_codec::frame::FrameDecoder;
use kafscale_codec::header::parse_request_header;
use kafscale_codec::kafka_protocol::messages::ApiKey;

use kafscale_shard::within;

use super::api;
use super::listeners::{ListenerCtx, Protocol};
use super::pool::MIN_POOLED;
use super::sasl::{MAX_UNAUTHENTICATED_FRAME, Route, Session};
use super::shard::{ProduceInFlight, Reservation, Shard};

/// Requests of one connection being handled at once.
const MAX_IN_FLIGHT: usize = 32;

/// What a handler answers.
pub enum Reply {
    /// A response frame, as chunks written in order.
    Frame(Vec<Bytes>),
    /// No response (produce with acks=0).
    Nothing,
    /// Close the connection (Kafka's answer to unknown APIs and versions).
    Close(String),
    /// A response, then close (a failed authentication).
    FrameThenClose(Vec<Bytes>, String),
    /// A response with what it keeps until it has been written.
    Held(Vec<Bytes>, Held),
}

/// What an answer keeps until the connection has written it: its room in
/// the shard's memory budget.
pub struct Held {
    _room: Reservation,
}

impl Held {
    pub fn new(room: Reservation) -> Self {
        Self { _room: room }
    }
}

/// The most written to a socket under one deadline: a client that takes
/// nothing of an answer for `--frame-read-timeout-ms` loses its connection,
/// however large the answer.
const WRITE_PIECE: usize = 1 << 20;

/// Why an answer was not written.
enum Unwritten {
    Failed,
    Stalled,
}

/// Writes an answer's chunks, each piece within `stall`.
async fn write_answer(
    wr: &mut (impl futures::io::AsyncWrite + Unpin),
    chunks: &[Bytes],
    stall: std::time::Duration,
) -> Result<(), Unwritten> {
    for piece in chunks.iter().flat_map(|c| c.chunks(WRITE_PIECE)) {
        match within(stall, wr.write_all(piece)).await {
            Some(Ok(())) => {}
            Some(Err(_)) => return Err(Unwritten::Failed),
            None => return Err(Unwritten::Stalled),
        }
    }
    Ok(())
}

/// Who sent a request: the listener it came in on (which endpoints it is
/// told), the principal it authenticated as and its address as ACLs name
/// hosts.
#[derive(Debug, Clone)]
pub struct Caller {
    pub listener: Protocol,
    pub principal: Rc<str>,
    pub host: Rc<str>,
}

impl Caller {
    /// Writes what this caller did (or tried) to the audit trail.
    pub fn audit(&self, action: &str, target: &str, outcome: &str) {
        crate::audit::record(&crate::audit::Event {
            principal: &self.principal,
            host: &self.host,
            action,
            target,
            outcome,
        });
    }
}

/// An answer that is ready now, in the writer's queue like any other.
fn ready(reply: Reply) -> glommio::Task<Reply> {
    glommio::spawn_local(async move { reply })
}

/// Fills `buf` from the socket. When a read leaves part of the frame
/// missing, the kernel is asked to wake this reader only once the rest is
/// there (up to the cap) rather than on every arriving piece; the mark goes
/// back to 1 for the next frame's length prefix. A frame that arrives whole
/// costs no extra system call.
async fn read_body(
    rd: &mut (impl futures::io::AsyncRead + Unpin),
    lowat: Option<&kafscale_shard::RecvLowat>,
    buf: &mut [u8],
) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        if filled > 0
            && let Some(lowat) = lowat
        {
            // A failed setsockopt only costs wakeups.
            let _ignored = lowat.set(buf.len() - filled);
        }
        match rd.read(&mut buf[filled..]).await? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => filled += n,
        }
    }
    if let Some(lowat) = lowat {
        let _ignored = lowat.set(1);
    }
    Ok(())
}

/// Waits (at most 2 s) until the peer has acknowledged everything written
/// to the socket.
async fn wait_acknowledged(fd: std::os::fd::RawFd) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while kafscale_shard::unacked_bytes(fd).is_ok_and(|n| n > 0)
        && std::time::Instant::now() < deadline
    {
        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
    }
}

pub async fn serve(shard: Rc<Shard>, stream: TcpStream, listener: Rc<ListenerCtx>) {
    let peer_addr = stream.peer_addr().ok();
    let peer = peer_addr.map_or_else(|| "?".into(), |a| a.to_string());
    let host: Rc<str> = peer_addr
        .map_or_else(String::new, |a| crate::auth::acl::host_of(a.ip()))
        .into();
    // Over a limit: closed at once, before anything is read or reserved.
    let _place = match peer_addr.map(|a| shard.connections.admit(a.ip())) {
        Some(Ok(place)) => Some(place),
        Some(Err(refused)) => {
            let n = shard.metrics.connections_refused.fetch_add(1, Relaxed) + 1;
            // A flood of them must not flood the log too.
            if n <= 10 || n.is_power_of_two() {
                tracing::warn!(%peer, refused_so_far = n, "closing connection: {refused}");
            }
            return;
        }
        None => None,
    };
    let _ignored = stream.set_nodelay(true);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    shard.metrics.connections_total.fetch_add(1, Relaxed);
    shard.metrics.connections_open.fetch_add(1, Relaxed);
    match &listener.tls {
        None => {
            let lowat = kafscale_shard::RecvLowat::new(fd);
            let caller = Caller {
                listener: listener.protocol,
                principal: crate::auth::ANONYMOUS.into(),
                host,
            };
            serve_stream(&shard, stream, &listener, &peer, fd, Some(lowat), caller).await;
        }
        Some(acceptor) => {
            // The deadline covers the handshake: a client that connects and
            // says nothing holds no place for long.
            let timeout = shard.args.frame_read_timeout();
            match within(timeout, acceptor.acceptor().accept(stream)).await {
                // The receive mark counts socket bytes, which are not the
                // bytes TLS hands us: a mark could wait for data already
                // read. TLS connections go without it.
                Some(Ok(tls)) => match certificate_principal(&listener, &tls) {
                    Ok(principal) => {
                        let caller = Caller {
                            listener: listener.protocol,
                            principal,
                            host,
                        };
                        serve_stream(&shard, tls, &listener, &peer, fd, None, caller).await
                    }
                    Err(why) => {
                        shard.metrics.tls_failures.fetch_add(1, Relaxed);
                        tracing::warn!(%peer, "closing connection: {why}");
                        crate::audit::record(&crate::audit::Event {
                            principal: crate::auth::ANONYMOUS,
                            host: &host,
                            action: "Authenticate",
                            target: &format!("{} listener (mTLS)", listener.protocol),
                            outcome: &format!("refused: {why}"),
                        });
                    }
                },
                Some(Err(e)) => {
                    shard.metrics.tls_failures.fetch_add(1, Relaxed);
                    tracing::info!(%peer, error = %e, "closing connection: TLS handshake failed");
                }
                None => {
                    shard.metrics.tls_failures.fetch_add(1, Relaxed);
                    tracing::info!(%peer, "closing connection: no TLS handshake within {timeout:?}");
                }
            }
        }
    }
    shard.metrics.connections_open.fetch_sub(1, Relaxed);
}

/// The principal of a TLS client: its certificate's subject, mapped by
/// `--ssl-principal-mapping-rules`, or `User:ANONYMOUS` without one (a
/// SASL_SSL client names itself through SASL later). A certificate whose
/// subject cannot be read or that no rule maps is refused, as in Kafka.
fn certificate_principal<S>(
    listener: &ListenerCtx,
    tls: &futures_rustls::server::TlsStream<S>,
) -> Result<Rc<str>, String> {
    let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
        return Ok(crate::auth::ANONYMOUS.into());
    };
    let subject = crate::auth::x500::subject_rfc2253(cert)
        .map_err(|e| format!("cannot read the client certificate's subject: {e}"))?;
    let name = listener.principal_rules.apply(&subject).ok_or_else(|| {
        format!("no --ssl-principal-mapping-rules rule maps the client certificate's subject {subject:?}")
    })?;
    if name.is_empty() {
        return Err(format!(
            "--ssl-principal-mapping-rules map the client certificate's subject {subject:?} to an empty name"
        ));
    }
    tracing::debug!(subject = %subject, principal = %name, "TLS client certificate");
    Ok(crate::auth::user_principal(&name).into())
}

async fn serve_stream<S>(
    shard: &Rc<Shard>,
    stream: S,
    listener: &ListenerCtx,
    peer: &str,
    fd: std::os::fd::RawFd,
    lowat: Option<kafscale_shard::RecvLowat>,
    mut caller: Caller,
) where
    S: futures::io::AsyncRead + futures::io::AsyncWrite + Unpin + 'static,
{
    let (mut rd, mut wr) = stream.split();
    let mut session = listener
        .sasl
        .as_ref()
        .map(|settings| Session::new(settings.clone(), peer.to_owned()));
    // Each request's task, with a produce request's in-flight mark, which
    // is dropped once its answer is written.
    let (tx, rx) = local_channel::new_bounded::<(glommio::Task<Reply>, Option<ProduceInFlight>)>(
        MAX_IN_FLIGHT,
    );

    // Set by the writer when the connection is done for (write failed, or
    // Kafka's answer is to close it): the reader stops.
    let done = Rc::new(Cell::new(false));
    let writer_done = done.clone();
    let writer_shard = shard.clone();
    let writer_peer = peer.to_owned();
    let stall = shard.args.frame_read_timeout();
    let writer = glommio::spawn_local(async move {
        while let Some((task, in_flight)) = rx.recv().await {
            if writer_done.get() {
                // Dropping the task cancels it and releases its mark; the
                // queue keeps draining, so the reader never waits for room.
                continue;
            }
            let (chunks, held, close) = match task.await {
                Reply::Frame(chunks) => (chunks, None, None),
                Reply::Held(chunks, held) => (chunks, Some(held), None),
                Reply::FrameThenClose(chunks, why) => (chunks, None, Some(why)),
                Reply::Close(why) => (Vec::new(), None, Some(why)),
                Reply::Nothing => continue,
            };
            match write_answer(&mut wr, &chunks, stall).await {
                Ok(()) => {}
                Err(Unwritten::Failed) => writer_done.set(true),
                Err(Unwritten::Stalled) => {
                    let n = writer_shard.metrics.answers_unread.fetch_add(1, Relaxed) + 1;
                    // A flood of them must not flood the log too.
                    if n <= 10 || n.is_power_of_two() {
                        let peer = &writer_peer;
                        tracing::warn!(%peer, closed_so_far = n, "closing connection: the client read nothing of its answer within {stall:?}");
                    }
                    writer_done.set(true);
                    // The reader may be waiting for a request that never
                    // comes: it wakes to the end of the socket.
                    let _ignored = kafscale_shard::shutdown(fd);
                }
            }
            // What the answer held goes back once it is written (or never
            // will be).
            drop(held);
            if let Some(why) = close {
                tracing::info!(%why, "closing connection");
                let _ignored = wr.flush().await;
                let _ignored = wr.close().await;
                writer_done.set(true);
            } else if in_flight.is_some() && writer_shard.draining() && !writer_done.get() {
                // Stopping: the answer counts as given once the peer has
                // it, not when the kernel has it (exit resets sockets that
                // have unread input, dropping unsent data).
                wait_acknowledged(fd).await;
            }
            drop(in_flight);
        }
        if !writer_done.get() {
            let _ignored = wr.close().await;
        }
    });

    let decoder = FrameDecoder::new(shard.args.max_frame_bytes.0 as usize);
    let frame_timeout = shard.args.frame_read_timeout();
    let mut first_frame = true;
    let mut last_produce: Option<oneshot::Receiver<()>> = None;
    let mut last_fetch: Option<oneshot::Receiver<()>> = None;
    let fetches = Rc::new(Cell::new(0u64));
    loop {
        if shard.draining() || done.get() {
            // Stopping: answer what was read, take nothing more. Or the
            // writer gave up on this connection.
            break;
        }
        let mut prefix = [0u8; 4];
        // A new connection must start talking within the frame deadline;
        // between requests it may stay idle.
        let read = rd.read_exact(&mut prefix);
        let got = if first_frame {
            match within(frame_timeout, read).await {
                Some(r) => r,
                None => {
                    tracing::info!(%peer, "closing connection: nothing received within {frame_timeout:?} of connecting");
                    break;
                }
            }
        } else {
            read.await
        };
        first_frame = false;
        if got.is_err() {
            break; // closed by the client
        }
        let len = match decoder.peek_len(&prefix) {
            Ok(Some(len)) => len,
            Ok(None) => break,
            Err(e) => {
                shard.metrics.bad_frames.fetch_add(1, Relaxed);
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
        };
        if session.as_ref().is_some_and(|s| !s.authenticated()) && len > MAX_UNAUTHENTICATED_FRAME {
            shard.metrics.bad_frames.fetch_add(1, Relaxed);
            tracing::warn!(%peer, bytes = len, "closing connection: a frame over {MAX_UNAUTHENTICATED_FRAME} bytes before SASL authentication");
            break;
        }
        let reservation = shard.reserve_frame(&caller.host, len as u64).await;
        let mut frame = if len >= MIN_POOLED {
            shard.pool.take(len)
        } else {
            BytesMut::with_capacity(len)
        };
        frame.resize(len, 0);
        // The body must follow its length within the deadline: a client
        // that announces a frame and stalls gives its reservation back.
        match within(
            frame_timeout,
            read_body(&mut rd, lowat.as_ref(), &mut frame),
        )
        .await
        {
            Some(Ok(())) => {}
            Some(Err(_)) => break,
            None => {
                shard.metrics.bad_frames.fetch_add(1, Relaxed);
                tracing::warn!(%peer, bytes = len, "closing connection: a request frame did not arrive within {frame_timeout:?}");
                break;
            }
        }
        if let Some(sess) = session.as_mut()
            && sess.expects_raw_token()
        {
            // After a v0 handshake: a bare SASL token, answered in kind.
            let reply = sess.raw_token(shard, &frame).await;
            drop(reservation);
            let close = matches!(reply, Reply::Close(_));
            if sess.authenticated() {
                caller.principal =
                    crate::auth::user_principal(sess.user().unwrap_or_default()).into();
            }
            if tx.send((ready(reply), None)).await.is_err() || close {
                break;
            }
            continue;
        }
        let (header, body_at) = match parse_request_header(&frame) {
            Ok(x) => x,
            Err(e) => {
                shard.metrics.bad_frames.fetch_add(1, Relaxed);
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
        };
        if let Some(sess) = session.as_mut() {
            match sess.route(header.api()) {
                Route::Serve => {}
                Route::Sasl => {
                    let body = frame.freeze().slice(body_at..);
                    let reply = sess.handle(shard, &header, body).await;
                    drop(reservation);
                    let close = matches!(reply, Reply::Close(_) | Reply::FrameThenClose(..));
                    if let Some(user) = sess.user() {
                        caller.principal = crate::auth::user_principal(user).into();
                    }
                    if tx.send((ready(reply), None)).await.is_err() || close {
                        break;
                    }
                    continue;
                }
                Route::Refuse(why) => {
                    shard.metrics.sasl_failures.fetch_add(1, Relaxed);
                    tracing::warn!(%peer, "closing connection: {why}");
                    break;
                }
            }
        }
        // Produce records become pieces of the frame that segments can keep;
        // `recycle` is what returns the buffer to the pool once every piece
        // is gone.
        let (body, recycle) = match api::produce::carve(frame, &header, body_at) {
            Ok((carved, rest)) => (api::Body::Produce(carved), rest.freeze()),
            Err(frame) => {
                let frame = frame.freeze();
                (api::Body::Raw(frame.slice(body_at..)), frame)
            }
        };
        shard.metrics.requests_total.fetch_add(1, Relaxed);
        // Produce requests append in the order they arrived on this
        // connection, and its fetches reserve room in that order.
        let place = if header.api_key == ApiKey::Produce as i16 {
            let (appended, next) = oneshot::channel();
            api::Place::Produce(api::produce::Order {
                after: last_produce.replace(next),
                appended,
            })
        } else if header.api_key == ApiKey::Fetch as i16 {
            let (reserved, next) = oneshot::channel();
            fetches.set(fetches.get() + 1);
            api::Place::Fetch(api::fetch::Turn {
                after: last_fetch.replace(next),
                reserved,
                seq: fetches.get(),
                latest: fetches.clone(),
            })
        } else {
            api::Place::Any
        };
        let in_flight = matches!(place, api::Place::Produce(_)).then(|| shard.produce_started());
        let s = shard.clone();
        let c = caller.clone();
        let task = glommio::spawn_local(async move {
            let reply = api::handle(s.clone(), c, header, body, reservation, place).await;
            // Every slice of the frame is gone once the request is answered.
            s.pool.give(recycle);
            reply
        });
        if tx.send((task, in_flight)).await.is_err() {
            break; // writer gone
        }
    }
    drop(tx);
    writer.await;
}
