//! How much of what was written to a TCP socket the peer has not yet
//! acknowledged (`SIOCOUTQ`), and ending a socket another task reads.
//!
//! A process that exits closes its sockets; when a socket still has unread
//! input, Linux answers with a reset and throws away what it had not sent
//! yet. A broker that stops waits until this is 0 for the answers it
//! promised, so none of them is lost that way.

use std::io;
use std::os::fd::RawFd;

/// Bytes written to the TCP socket `fd` and not yet acknowledged by the peer.
pub fn unacked_bytes(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one c_int to the pointer, which is valid.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}

/// Shuts both directions of the TCP socket `fd` down: a task blocked
/// reading it wakes to end-of-file, and the peer sees the connection end,
/// while the socket itself stays open until its owner drops it.
pub fn shutdown(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown takes no pointers; a stale fd only makes it fail.
    let rc = unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    #[test]
    fn shutdown_ends_both_directions() {
        let (mut client, server) = crate::tcp_pair();
        shutdown(server.as_raw_fd()).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(client.read(&mut buf).unwrap(), 0, "the peer sees the end");
        assert_eq!(
            (&server).read(&mut buf).unwrap(),
            0,
            "a reader sees the end"
        );
    }

    #[test]
    fn counts_until_the_peer_acknowledges() {
        let (mut client, mut server) = crate::tcp_pair();
        server.write_all(&[7u8; 1000]).unwrap();
        // Loopback acknowledges at once, but not necessarily before we look.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while unacked_bytes(server.as_raw_fd()).unwrap() > 0 {
            assert!(std::time::Instant::now() < deadline, "never acknowledged");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut buf = [0u8; 1000];
        client.read_exact(&mut buf).unwrap();
        assert!(unacked_bytes(-1).is_err(), "a bad descriptor is an error");
    }
}
