//! Starting pinned executors.

use std::future::Future;

use glommio::{LocalExecutorBuilder, Placement};

/// Index of a shard (and of the core it is pinned to, when pinned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "could not start executor {name}: {reason} (glommio needs io_uring and enough locked memory)"
    )]
    Start { name: String, reason: String },
    #[error("executor {name} panicked")]
    Panicked { name: String },
}

/// Runs `fut` to completion on a fresh, unpinned glommio executor on a new
/// thread. For CLI commands and tests that need the S3 client once.
pub fn block_on<T, F, Fut>(f: F) -> Result<T, RuntimeError>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let name = "kafscale-local".to_owned();
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name(&name)
        .spawn(f)
        .map_err(|e| RuntimeError::Start {
            name: name.clone(),
            reason: e.to_string(),
        })?;
    handle.join().map_err(|_| RuntimeError::Panicked { name })
}

/// Starts `count` executors named `shard-N`, pinned to cores 0..count when
/// `pin` is set. `make(ShardId)` runs here, once per shard, and returns what
/// that shard's thread runs. Waits for all of them to finish.
pub fn spawn_shards<T, G, Fut>(
    count: usize,
    pin: bool,
    mut make: impl FnMut(ShardId) -> G,
) -> Result<Vec<T>, RuntimeError>
where
    T: Send + 'static,
    G: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let mut handles = Vec::with_capacity(count);
    for i in 0..count {
        let name = ShardId(i).to_string();
        let placement = if pin {
            Placement::Fixed(i)
        } else {
            Placement::Unbound
        };
        let handle = LocalExecutorBuilder::new(placement)
            .name(&name)
            .spawn(make(ShardId(i)))
            .map_err(|e| RuntimeError::Start {
                name: name.clone(),
                reason: e.to_string(),
            })?;
        handles.push((name, handle));
    }
    handles
        .into_iter()
        .map(|(name, h)| h.join().map_err(|_| RuntimeError::Panicked { name }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_run_on_their_own_executors() {
        crate::raise_memlock_limit();
        let out = spawn_shards(2, false, |id| {
            move || async move {
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                (id, std::thread::current().name().map(str::to_owned))
            }
        })
        .unwrap();
        // glommio appends its executor id to the thread name.
        assert_eq!(out[0].0, ShardId(0));
        assert!(
            out[0]
                .1
                .as_deref()
                .is_some_and(|n| n.starts_with("shard-0")),
            "{out:?}"
        );
        assert_eq!(out[1].0, ShardId(1));
        assert_eq!(block_on(|| async { 7 }).unwrap(), 7);
    }
}
