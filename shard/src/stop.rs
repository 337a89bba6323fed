//! A stop request raised by a plain thread (the signal handler) and awaited
//! inside glommio executors.
//!
//! glommio's channels need an executor on both ends, so each listener gets
//! one end of a Unix socket pair instead: the sender writes a byte to every
//! pair, each executor's read completes through io_uring like any socket
//! read. No polling, and nothing to wake when no stop ever comes.

use std::io::{self, Write};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::net::UnixStream;

use futures_lite::AsyncReadExt;

/// Raises the stop for every listener. Dropping it also stops them.
#[derive(Debug)]
pub struct StopSender {
    ends: Vec<UnixStream>,
}

/// One executor's end; [`StopListener::wait`] completes on stop.
#[derive(Debug)]
pub struct StopListener {
    end: UnixStream,
}

/// A sender and `n` listeners, one for each executor.
pub fn stop_channel(n: usize) -> io::Result<(StopSender, Vec<StopListener>)> {
    let mut ends = Vec::with_capacity(n);
    let mut listeners = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = UnixStream::pair()?;
        ends.push(tx);
        listeners.push(StopListener { end: rx });
    }
    Ok((StopSender { ends }, listeners))
}

impl StopSender {
    /// How many listeners it stops.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Tells every listener to stop. A listener that is gone (its executor
    /// ended) is skipped; any other failure is returned after trying them all.
    pub fn stop(&self) -> io::Result<()> {
        let mut failed = None;
        for end in &self.ends {
            match (&*end).write_all(&[1]) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                Err(e) => failed = Some(e),
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

impl StopListener {
    /// Completes when the stop is raised or its sender is dropped. Must be
    /// awaited on a glommio executor.
    pub async fn wait(self) {
        // SAFETY: `into_raw_fd` hands over the descriptor we own; glommio's
        // stream takes ownership and closes it when dropped.
        let mut end = unsafe { glommio::net::UnixStream::from_raw_fd(self.end.into_raw_fd()) };
        let mut byte = [0u8; 1];
        // A byte, end of stream (sender dropped) or an error all mean stop.
        let _ignored = end.read(&mut byte).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_executor_sees_the_stop_raised_from_another_thread() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        crate::raise_memlock_limit();
        let (sender, listeners) = stop_channel(2).unwrap();
        let mut listeners: Vec<Option<StopListener>> = listeners.into_iter().map(Some).collect();
        let raised = Arc::new(AtomicBool::new(false));
        let flag = raised.clone();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            flag.store(true, Ordering::SeqCst);
            sender.stop().unwrap();
            sender
        });
        let woke_after_stop = crate::spawn_shards(2, false, |id| {
            let listener = listeners[id.0].take().unwrap();
            let raised = raised.clone();
            move || async move {
                listener.wait().await;
                raised.load(Ordering::SeqCst)
            }
        })
        .unwrap();
        assert_eq!(
            woke_after_stop,
            [true, true],
            "a listener woke before the stop"
        );
        // Stopping again, after the listeners are gone, is not an error.
        stopper.join().unwrap().stop().unwrap();
    }

    #[test]
    fn dropping_the_sender_stops_too() {
        crate::raise_memlock_limit();
        let (sender, mut listeners) = stop_channel(1).unwrap();
        let listener = listeners.pop().unwrap();
        drop(sender);
        crate::block_on(move || listener.wait()).unwrap();
    }
}
