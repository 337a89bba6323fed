//! The hasher thread: PLAIN password checks (PBKDF2, milliseconds each) run
//! here, behind a bounded channel, so a shard never blocks on them and a
//! flood of logins waits its turn instead of taking every core.

use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError, bounded};
use futures::channel::oneshot;
use kafscale_client::sasl::ScramHash;

use super::credential::Keys;
use super::plain::password_matches;

type Job = Box<dyn FnOnce() + Send>;

/// Checks that may wait at once; beyond, callers wait (up to a deadline).
const QUEUE: usize = 256;

#[derive(Debug, Clone)]
pub struct Hasher {
    tx: Sender<Job>,
}

impl Hasher {
    pub fn spawn() -> std::io::Result<Self> {
        let (tx, rx) = bounded::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("kafscale-hasher".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job();
                }
            })?;
        Ok(Self { tx })
    }

    /// Whether `password` matches `keys`; `None` when the hasher stayed
    /// full for `patience` (the login fails and the client retries).
    pub async fn check_password(
        &self,
        hash: ScramHash,
        keys: Keys,
        password: String,
        patience: Duration,
    ) -> Option<bool> {
        let (tx, rx) = oneshot::channel();
        let mut job: Job = Box::new(move || {
            let _ignored = tx.send(password_matches(hash, &keys, &password));
        });
        let deadline = Instant::now() + patience;
        loop {
            match self.tx.try_send(job) {
                Ok(()) => break,
                Err(TrySendError::Full(j)) if Instant::now() < deadline => {
                    job = j;
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
                Err(_) => return None,
            }
        }
        rx.await.ok()
    }
}
