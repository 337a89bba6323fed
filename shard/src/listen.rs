//! Listening sockets shared by every shard.

use std::io;
use std::net::SocketAddr;
use std::os::unix::io::{FromRawFd, IntoRawFd};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `addr` with `SO_REUSEPORT` (every shard listens on the same port and
/// the kernel spreads connections) and `SO_REUSEADDR` (a restarted broker can
/// bind while old connections sit in TIME_WAIT; glommio's own `bind` does not
/// set it). Call on the executor that will accept.
pub fn listen(addr: SocketAddr) -> io::Result<glommio::net::TcpListener> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    // SAFETY: the fd comes from a socket we own and release here; glommio's
    // listener takes sole ownership of it.
    Ok(unsafe { glommio::net::TcpListener::from_raw_fd(sock.into_raw_fd()) })
}
