//! The shards' handle on the metadata thread.
//!
//! The store (etcd's tokio client, or the embedded log with its fsyncs) runs
//! on one dedicated thread. Shards send it closures over a bounded
//! crossbeam channel and await the answer on a oneshot, so no executor ever
//! blocks. A full channel is backpressure: the caller gets [`MetaError::Busy`].

use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError, bounded};
use futures::channel::oneshot;

use super::MetaError;
use super::store::MetaStore;
use super::types::{PartitionState, SegmentCommit, SegmentRecord, TopicMeta};

type Job = Box<dyn FnOnce(&mut MetaStore) + Send>;

/// Requests that may wait for the metadata thread at once.
pub const QUEUE_CAPACITY: usize = 1024;

/// Cheap to clone; `Send`, so every shard gets one.
#[derive(Clone, Debug)]
pub struct MetaClient {
    tx: Sender<Job>,
}

/// Owns the metadata thread; dropping every client (and this) stops it.
#[derive(Debug)]
pub struct MetaThread {
    handle: Option<JoinHandle<()>>,
}

impl MetaThread {
    /// Waits for the thread to finish (after all clients are dropped).
    pub fn join(mut self) {
        if let Some(h) = self.handle.take() {
            let _ignored = h.join();
        }
    }
}

impl MetaClient {
    /// Starts the metadata thread around a store built by `open` on that
    /// thread (the etcd client must live on the thread of its runtime).
    pub fn spawn(
        open: impl FnOnce() -> Result<MetaStore, MetaError> + Send + 'static,
    ) -> Result<(Self, MetaThread), MetaError> {
        Self::spawn_named("kafscale-meta", open)
    }

    /// As [`MetaClient::spawn`], naming the thread (a second store of the
    /// same etcd, e.g. for lease renewals that must not queue behind commits).
    pub fn spawn_named(
        name: &str,
        open: impl FnOnce() -> Result<MetaStore, MetaError> + Send + 'static,
    ) -> Result<(Self, MetaThread), MetaError> {
        let (tx, rx) = bounded::<Job>(QUEUE_CAPACITY);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut store = match open() {
                    Ok(s) => {
                        let _ignored = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ignored = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = rx.recv() {
                    job(&mut store);
                }
            })
            .map_err(|e| MetaError::Io {
                path: format!("{name} thread"),
                source: e,
            })?;
        ready_rx.recv().map_err(|_| MetaError::Closed)??;
        Ok((
            Self { tx },
            MetaThread {
                handle: Some(handle),
            },
        ))
    }

    /// Runs `f` on the metadata thread and awaits its result.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut MetaStore) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            // The caller may have given up waiting; nothing to do then.
            let _ignored = tx.send(f(store));
        });
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => MetaError::Busy,
            TrySendError::Disconnected(_) => MetaError::Closed,
        })?;
        rx.await.map_err(|_| MetaError::Closed)?
    }

    /// As [`MetaClient::call`], blocking the current thread. Not for executors.
    pub fn call_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut MetaStore) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        futures::executor::block_on(self.call(f))
    }

    pub async fn create_topic(&self, name: &str, partitions: u32) -> Result<TopicMeta, MetaError> {
        let name = name.to_owned();
        self.call(move |s| s.create_topic(&name, partitions, Default::default()))
            .await
    }

    pub async fn topic(&self, name: &str) -> Result<Option<TopicMeta>, MetaError> {
        let name = name.to_owned();
        self.call(move |s| s.topic(&name)).await
    }

    pub async fn topics(&self) -> Result<Vec<TopicMeta>, MetaError> {
        self.call(|s| s.topics()).await
    }

    pub async fn partition_state(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<PartitionState, MetaError> {
        let topic = topic.to_owned();
        self.call(move |s| s.partition_state(&topic, partition))
            .await
    }

    pub async fn segments(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Vec<SegmentRecord>, MetaError> {
        let topic = topic.to_owned();
        self.call(move |s| s.segments(&topic, partition)).await
    }

    pub async fn commit(
        &self,
        commits: Vec<SegmentCommit>,
    ) -> Result<Vec<PartitionState>, MetaError> {
        self.call(move |s| s.commit(&commits)).await
    }
}
