//! Adapts a glommio (futures-io) stream to hyper 1's IO traits, for the S3
//! client and the metrics endpoint, without copying body bytes.
//!
//! - Writes are vectored: hyper then queues body chunks as they are instead of
//!   flattening them into its own buffer (which copied every uploaded byte).
//!   On a plain socket one `sendmsg` sends hyper's whole queue.
//! - Reads on a plain socket land directly in hyper's (uninitialised) read
//!   buffer through `recv`. Safe code could only fill it through `put_slice`,
//!   so without a socket (TLS) reads go through a scratch buffer (one copy).
//!
//! Both try the socket without blocking first and fall back to glommio's own
//! `poll_read`/`poll_write` when it is not ready; those register the wakeup
//! and, having tried the socket themselves again, cannot lose one.

use std::io;
use std::io::IoSlice;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_lite::{AsyncRead, AsyncWrite};

/// Most buffers handed to one `sendmsg`.
const MAX_IOVECS: usize = 64;

/// A stream that may expose its socket for direct `recv`/`sendmsg`.
pub trait RawSocket {
    /// The socket, when bytes written to it go to the peer as they are
    /// (not through TLS).
    fn raw_socket(&self) -> Option<RawFd>;
}

impl RawSocket for glommio::net::TcpStream {
    fn raw_socket(&self) -> Option<RawFd> {
        use std::os::fd::AsRawFd;
        Some(self.as_raw_fd())
    }
}

pub struct HyperIo<S> {
    inner: S,
    scratch: Box<[u8]>,
}

impl<S> std::fmt::Debug for HyperIo<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperIo").finish_non_exhaustive()
    }
}

impl<S> HyperIo<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            scratch: vec![0; 64 * 1024].into_boxed_slice(),
        }
    }
}

/// `Some(n)` bytes received (0 at end of stream), `None` when the socket
/// has nothing yet.
fn try_recv(fd: RawFd, buf: &mut [std::mem::MaybeUninit<u8>]) -> Option<io::Result<usize>> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration
    // of the call; the kernel writes at most that many.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    would_block_is_none(n)
}

/// Receives at most `max` bytes into the spare capacity of `buf` (not
/// initialised first) and grows its length by what arrived: `None` when the
/// socket has nothing yet.
pub fn try_recv_buf(fd: RawFd, buf: &mut bytes::BytesMut, max: usize) -> Option<io::Result<usize>> {
    let spare = buf.spare_capacity_mut();
    let room = spare.len().min(max);
    let result = try_recv(fd, &mut spare[..room]);
    if let Some(Ok(n)) = result {
        // SAFETY: recv initialised the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
    }
    result
}

/// Sends as many of `bufs` as the socket takes now; `None` when it takes none.
fn try_send_vectored(fd: RawFd, bufs: &[IoSlice<'_>]) -> Option<io::Result<usize>> {
    let bufs = &bufs[..bufs.len().min(MAX_IOVECS)];
    // SAFETY: `msghdr` is plain data; all-zero is its empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec (std guarantees this on Unix);
    // sendmsg only reads through the pointer.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len() as _;
    // SAFETY: `msg` points at `bufs.len()` valid iovecs that outlive the call.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    would_block_is_none(n)
}

fn would_block_is_none(n: isize) -> Option<io::Result<usize>> {
    if n >= 0 {
        return Some(Ok(n as usize));
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        // The fallback through glommio tries again and waits if need be.
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => None,
        _ => Some(Err(e)),
    }
}

impl<S: AsyncRead + RawSocket + Unpin> hyper::rt::Read for HyperIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(fd) = this.inner.raw_socket() {
            // SAFETY: only written to (by the kernel), never read or
            // de-initialised here.
            let unfilled = unsafe { buf.as_mut() };
            if let Some(result) = try_recv(fd, unfilled) {
                let n = result?;
                // SAFETY: recv initialised the first `n` bytes.
                unsafe { buf.advance(n) };
                return Poll::Ready(Ok(()));
            }
        }
        let want = buf.remaining().min(this.scratch.len());
        let n = ready!(Pin::new(&mut this.inner).poll_read(cx, &mut this.scratch[..want]))?;
        buf.put_slice(&this.scratch[..n]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + RawSocket + Unpin> hyper::rt::Write for HyperIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(fd) = this.inner.raw_socket()
            && let Some(result) = try_send_vectored(fd, bufs)
        {
            return Poll::Ready(result);
        }
        // Not writable now (or TLS): one buffer through the stream, which
        // registers for writability when the socket is full.
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectored_send_and_direct_recv_on_a_socket_pair() {
        use std::os::fd::AsRawFd;
        use std::os::unix::net::UnixStream;
        let (a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut out = [std::mem::MaybeUninit::<u8>::uninit(); 16];
        assert!(
            try_recv(b.as_raw_fd(), &mut out).is_none(),
            "empty: not ready"
        );
        let sent = try_send_vectored(
            a.as_raw_fd(),
            &[
                IoSlice::new(b"head "),
                IoSlice::new(b""),
                IoSlice::new(b"body"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(sent, 9);
        let n = try_recv(b.as_raw_fd(), &mut out).unwrap().unwrap();
        // SAFETY: recv initialised the first n bytes.
        let got: Vec<u8> = out[..n]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        assert_eq!(got, b"head body");
        drop(b);
        let err = try_send_vectored(a.as_raw_fd(), &[IoSlice::new(b"x")]).unwrap();
        assert!(err.is_err(), "peer gone: an error, no SIGPIPE");
    }
}
