//! A glommio TCP stream, plain or under rustls: the one client-side stream
//! of the tree (the S3 client and the Kafka client both connect through it).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use futures_rustls::pki_types::ServerName;
use glommio::net::TcpStream;

/// A connected stream: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect: {0}")]
    Tcp(String),
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
}

impl Stream {
    /// Connects to `addr` with TCP_NODELAY; with `tls`, runs the TLS
    /// handshake for `server_name` (which the certificate must match).
    pub async fn connect(
        addr: SocketAddr,
        tls: Option<(&TlsConnector, &str)>,
    ) -> Result<Self, ConnectError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| ConnectError::Tcp(e.to_string()))?;
        tcp.set_nodelay(true)
            .map_err(|e| ConnectError::Tcp(e.to_string()))?;
        match tls {
            None => Ok(Self::Plain(tcp)),
            Some((connector, host)) => {
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|_| ConnectError::ServerName(host.to_owned()))?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(ConnectError::Tls)?;
                Ok(Self::Tls(Box::new(tls)))
            }
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }
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
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
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

impl crate::RawSocket for Stream {
    fn raw_socket(&self) -> Option<std::os::fd::RawFd> {
        match self {
            Self::Plain(s) => s.raw_socket(),
            Self::Tls(_) => None,
        }
    }
}
