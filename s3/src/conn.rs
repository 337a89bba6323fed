//! Connections: glommio `TcpStream` (optionally under rustls) adapted to
//! hyper 1's IO traits, and a small keep-alive pool per client.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use futures_rustls::pki_types::ServerName;
use futures_rustls::rustls;
use glommio::net::TcpStream;
use hyper::client::conn::http1::{self, SendRequest};

use crate::body::Chunks;

pub(crate) type Sender = SendRequest<Chunks>;

/// A plain or TLS stream.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_close(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

impl kafscale_shard::RawSocket for Stream {
    fn raw_socket(&self) -> Option<std::os::fd::RawFd> {
        match self {
            Self::Plain(s) => s.raw_socket(),
            Self::Tls(_) => None,
        }
    }
}

pub(crate) type HyperIo = kafscale_shard::HyperIo<Stream>;

pub(crate) fn tls_connector() -> TlsConnector {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    match config {
        Ok(config) => TlsConnector::from(Arc::new(config)),
        // The ring provider supports the default versions; this cannot fail.
        Err(e) => unreachable!("rustls default configuration refused: {e}"),
    }
}

/// Opens a new HTTP/1.1 connection and spawns its driver on this executor.
pub(crate) async fn connect(
    addr: SocketAddr,
    tls: Option<(&TlsConnector, &str)>,
) -> io::Result<Sender> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
    tcp.set_nodelay(true)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let stream = match tls {
        None => Stream::Plain(tcp),
        Some((connector, host)) => {
            let name = ServerName::try_from(host.to_owned()).map_err(io::Error::other)?;
            Stream::Tls(Box::new(connector.connect(name, tcp).await?))
        }
    };
    let (sender, conn) = http1::Builder::new()
        .handshake(HyperIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    glommio::spawn_local(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "S3 connection closed");
        }
    })
    .detach();
    Ok(sender)
}

/// Idle keep-alive connections of one client.
#[derive(Default)]
pub(crate) struct Pool {
    idle: RefCell<Vec<Sender>>,
}

impl Pool {
    /// An idle connection that is still open, if any.
    pub(crate) fn take(&self) -> Option<Sender> {
        let mut idle = self.idle.borrow_mut();
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    pub(crate) fn put(&self, sender: Sender, max_idle: usize) {
        let mut idle = self.idle.borrow_mut();
        if !sender.is_closed() && idle.len() < max_idle {
            idle.push(sender);
        }
    }
}
