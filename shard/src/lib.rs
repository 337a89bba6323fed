//! Thread-per-core runtime for kafscale on glommio.
//!
//! Each shard is one glommio executor pinned to one core, named `shard-N`. A
//! shard's state lives in `Rc`/`RefCell` and is touched only by that thread;
//! shards talk over bounded channels. Anything that would block an executor
//! (etcd's tokio client, fsync of the embedded store) runs on its own thread.
//!
//! glommio drives io_uring, whose rings live in locked memory on older kernels;
//! [`raise_memlock_limit`] lifts `RLIMIT_MEMLOCK` at start-up where allowed.

#![allow(unsafe_code)] // setrlimit, from_raw_fd, mallopt, sigwait, socket calls and ioctls; each use carries a SAFETY line.

mod alloc;
mod hyper_io;
mod listen;
mod lowat;
mod memlock;
mod outq;
mod runtime;
mod signals;
mod stop;
mod stream;
mod within;

pub use alloc::{reclaim, tune_allocator};
pub use hyper_io::{HyperIo, RawSocket, try_recv_buf};
pub use listen::listen;
pub use lowat::RecvLowat;
pub use memlock::{MemlockStatus, raise_memlock_limit};
pub use outq::{shutdown, unacked_bytes};
pub use runtime::{RuntimeError, ShardId, block_on, spawn_shards};
pub use signals::on_signals;
pub use stop::{StopListener, StopSender, stop_channel};
pub use stream::{ConnectError, Stream};
pub use within::within;

/// A connected loopback TCP pair (client, server), for the socket tests.
#[cfg(test)]
fn tcp_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}
