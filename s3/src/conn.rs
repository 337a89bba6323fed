//! Connections: the shard's TCP/TLS stream adapted to hyper 1's IO traits,
//! and a small keep-alive pool per client.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_rustls::TlsConnector;
use futures_rustls::rustls;
use hyper::client::conn::http1::{self, SendRequest};

use crate::body::Chunks;

pub(crate) type Sender = SendRequest<Chunks>;

pub(crate) use kafscale_shard::Stream;

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
    let stream = Stream::connect(addr, tls).await.map_err(|e| match e {
        kafscale_shard::ConnectError::Tls(e) => e,
        e => io::Error::other(e.to_string()),
    })?;
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
