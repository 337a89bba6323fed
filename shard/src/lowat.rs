//! Fewer wakeups per large request: `SO_RCVLOWAT`.
//!
//! A 1 MiB produce request arrives over loopback in many pieces, and by
//! default every piece makes the socket readable: the executor wakes, reads
//! what is there, goes back to sleep (each sleep costs glommio a
//! `membarrier`, an IPI to every core). With the low-water mark set to the
//! bytes still missing from the frame, the kernel wakes the reader once they
//! are all there (or the socket buffer is under pressure).
//!
//! The mark must never exceed what the peer is sure to send, or a poll would
//! wait forever: after a read that left part of a frame missing, set it to
//! that missing part, and back to 1 before waiting for the next frame.
//! Lowering it wakes a pending poll at once (`tcp_set_rcvlowat` signals
//! readiness).

use std::cell::Cell;
use std::io;
use std::os::fd::RawFd;

/// The highest mark used; the kernel grows the receive buffer to about twice
/// the mark, so this also caps what one connection can park in the kernel.
pub const MAX_RECV_LOWAT: usize = 512 * 1024;

/// The low-water mark of one socket, set only when it changes.
#[derive(Debug)]
pub struct RecvLowat {
    fd: RawFd,
    current: Cell<usize>,
}

impl RecvLowat {
    /// For a socket whose mark is the default (1).
    pub fn new(fd: RawFd) -> Self {
        Self {
            fd,
            current: Cell::new(1),
        }
    }

    /// Wake the reader once `bytes` (at least 1, at most
    /// [`MAX_RECV_LOWAT`]) are waiting.
    pub fn set(&self, bytes: usize) -> io::Result<()> {
        let bytes = bytes.clamp(1, MAX_RECV_LOWAT);
        if bytes == self.current.get() {
            return Ok(());
        }
        let value = bytes as libc::c_int;
        // SAFETY: `value` is a c_int that outlives the call, and its size is
        // passed; the kernel only reads it.
        let rc = unsafe {
            libc::setsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.current.set(bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    #[test]
    fn mark_is_set_and_lowered_on_a_tcp_socket() {
        let (mut client, mut server) = crate::tcp_pair();
        let fd = server.as_raw_fd();
        let lowat = RecvLowat::new(fd);
        lowat.set(8).unwrap();
        let read_mark = || {
            let mut v: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: v and len are valid for writes of their sizes.
            let rc = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVLOWAT,
                    (&mut v as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            assert_eq!(rc, 0);
            v
        };
        assert_eq!(read_mark(), 8);
        // Fewer bytes than the mark: poll does not report the socket readable.
        client.write_all(b"abc").unwrap();
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 100) }, 0, "below the mark");
        lowat.set(0).unwrap();
        assert_eq!(read_mark(), 1, "clamped to 1");
        // SAFETY: one valid pollfd.
        assert_eq!(
            unsafe { libc::poll(&mut pfd, 1, 1000) },
            1,
            "readable after lowering"
        );
        let mut buf = [0u8; 3];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"abc");
        lowat.set(10 << 20).unwrap();
        assert_eq!(read_mark() as usize, MAX_RECV_LOWAT, "capped");
    }
}
