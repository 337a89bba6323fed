//! One shard's state and the routing of work to partition owners.
//!
//! Single-threaded invariants (everything here lives on one glommio executor):
//! - `logs` holds only partitions this shard owns; only this shard appends to
//!   them, so no locks guard a partition log.
//! - Work for a partition owned elsewhere travels as a `Job` over the bounded
//!   mesh channel to its owner and the answer comes back on a oneshot. At
//!   most `MESH_JOBS_RUNNING` of them run at once on a shard; past that the
//!   shard stops taking jobs off the mesh, whose channels fill, and senders
//!   wait: the bound holds for work, not only for queued jobs.
//! - `budget` bounds request bytes held in memory: a connection reserves a
//!   frame's size before reading its body, and waits when the budget is spent.
//! - Once `draining` is set (the broker is stopping) it stays set: no append
//!   starts after it, so the flusher can empty every open segment and each
//!   produce request still in flight gets its answer.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use futures::channel::oneshot;
use glommio::channels::channel_mesh::Senders;
use glommio::sync::Semaphore;
use kafscale_codec::index::Index;
use kafscale_codec::kfs::SegmentBytes;
use kafscale_s3::{AnyStore, ObjectStore};

use super::answers::{AnswerRoom, Shares};
use super::cluster::Cluster;
use super::config::BrokerArgs;
use super::errors::ErrorCode;
use super::group::{Group, GroupRef};
use super::metrics::Metrics;
use super::partition::PartitionLog;
use super::pool::BufferPool;
use crate::meta::{MetaClient, MetaError, TopicMeta};

/// (topic, partition).
type PartitionKey = (String, u32);

/// How many jobs from other shards run at once on one shard.
pub const MESH_JOBS_RUNNING: u64 = 1024;

/// Runs the jobs arriving on `jobs`, at most `running.available()` at once
/// (all streams of a shard share one `running`) unless `bounded` says a job
/// waits on others: the stream is read on only once the job in hand has a
/// place, so a flood waits in the bounded mesh channel (and then in its
/// senders) instead of running all at once.
pub async fn run_jobs<J, Fut>(
    mut jobs: impl futures::Stream<Item = J> + Unpin,
    running: Rc<Semaphore>,
    bounded: impl Fn(&J) -> bool,
    run: impl Fn(J) -> Fut,
) where
    Fut: Future<Output = ()> + 'static,
{
    use futures::StreamExt;
    while let Some(job) = jobs.next().await {
        let place = if bounded(&job) {
            match running.acquire_static_permit(1).await {
                Ok(place) => Some(place),
                Err(_) => return,
            }
        } else {
            None
        };
        let work = run(job);
        glommio::spawn_local(async move {
            work.await;
            drop(place);
        })
        .detach();
    }
}

/// Work sent to another shard: runs there, with that shard's state.
pub type Work = Box<dyn FnOnce(Rc<Shard>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

pub struct Job {
    pub work: Work,
    /// Waits on other jobs (a group member's JoinGroup or SyncGroup waits
    /// for the rest of its group): it runs outside the bound on running
    /// jobs, or a full bound of waiting members would keep out the very
    /// jobs that complete them, and with them every produce and fetch.
    pub waits: bool,
}

pub struct Shard {
    pub id: usize,
    pub count: usize,
    pub args: Arc<BrokerArgs>,
    pub store: AnyStore,
    pub meta: MetaClient,
    pub cluster: Arc<Cluster>,
    pub metrics: Arc<Metrics>,
    /// Connections held, in all and per client address (all shards).
    pub connections: Arc<super::limits::ConnectionLimits>,
    pub authorizer: Arc<super::authorizer::Authorizer>,
    senders: Senders<Job>,
    topics: RefCell<HashMap<String, TopicMeta>>,
    logs: RefCell<HashMap<(String, u32), Rc<PartitionLog>>>,
    /// Partitions being loaded, with the callers waiting for them.
    loading: RefCell<HashMap<PartitionKey, Vec<oneshot::Sender<()>>>>,
    groups: RefCell<HashMap<String, GroupRef>>,
    budget: Rc<Semaphore>,
    budget_bytes: u64,
    /// What each client address holds of `budget` in request frames.
    frame_shares: Shares,
    /// Fetch answers read and not yet written to their clients.
    pub answers: AnswerRoom,
    pub cache: RefCell<SegmentCache>,
    pub pool: Rc<BufferPool>,
    flush_wake: glommio::channels::local_channel::LocalSender<()>,
    draining: Cell<bool>,
    /// Produce requests read but not yet answered on this shard's connections.
    produce_in_flight: Rc<Cell<usize>>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").field("id", &self.id).finish()
    }
}

/// A produce request being handled; see [`Shard::produce_started`].
pub struct ProduceInFlight(Rc<Cell<usize>>);

impl Drop for ProduceInFlight {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Request frames below this size never wait for the memory budget.
pub const SMALL_FRAME: u64 = 64 * 1024;

/// Bytes reserved from a shard's memory budget (and, for a fetch answer,
/// from its client address's share of it), returned on drop.
pub struct Reservation {
    budget: Rc<Semaphore>,
    share: Option<Rc<Semaphore>>,
    units: u64,
    /// Held with this one, and given back with it (a request frame's
    /// share of its address, whose units may differ).
    with: Option<Box<Reservation>>,
}

impl Reservation {
    /// `units` already acquired from `budget` and `share`.
    pub fn of(budget: Rc<Semaphore>, share: Option<Rc<Semaphore>>, units: u64) -> Self {
        Self {
            budget,
            share,
            units,
            with: None,
        }
    }

    /// Holds `other` as long as this one.
    pub fn also(&mut self, other: Reservation) {
        self.with = Some(Box::new(other));
    }

    pub fn units(&self) -> u64 {
        self.units
    }

    pub fn share(&self) -> Option<&Rc<Semaphore>> {
        self.share.as_ref()
    }

    /// Counts `units` more, already acquired from the same semaphores.
    pub fn add(&mut self, units: u64) {
        self.units += units;
    }

    fn give_back(&self, units: u64) {
        self.budget.signal(units);
        if let Some(share) = &self.share {
            share.signal(units);
        }
    }

    /// Gives back all but `units` (at least one stays reserved).
    pub fn shrink(&mut self, units: u64) {
        let keep = units.clamp(1, self.units.max(1));
        if keep < self.units {
            self.give_back(self.units - keep);
            self.units = keep;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.give_back(self.units);
    }
}

impl Shard {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        count: usize,
        args: Arc<BrokerArgs>,
        store: AnyStore,
        meta: MetaClient,
        cluster: Arc<Cluster>,
        metrics: Arc<Metrics>,
        connections: Arc<super::limits::ConnectionLimits>,
        authorizer: Arc<super::authorizer::Authorizer>,
        senders: Senders<Job>,
        flush_wake: glommio::channels::local_channel::LocalSender<()>,
    ) -> Self {
        let budget_bytes = (args.produce_budget() / count as u64).max(4 * 1024 * 1024);
        let cache_bytes = (args.fetch_cache().0 / count as u64) as usize;
        let answers_bytes = (args.fetch_answer_budget() / count as u64).max(1 << 20);
        // Idle pooled buffers: an eighth of the budget, at most 64 MiB in all.
        let pool = Rc::new(
            BufferPool::new((args.memory_budget.0 / 8).min(64 << 20) as usize / count)
                .with_metrics(metrics.clone()),
        );
        Self {
            id,
            count,
            args,
            store,
            meta,
            cluster,
            metrics,
            connections,
            authorizer,
            senders,
            topics: RefCell::default(),
            logs: RefCell::default(),
            loading: RefCell::default(),
            groups: RefCell::default(),
            budget: Rc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
            frame_shares: Shares::new((budget_bytes / 2).max(1)),
            answers: AnswerRoom::new(answers_bytes),
            cache: RefCell::new(SegmentCache::new(cache_bytes, pool.clone())),
            pool,
            flush_wake,
            draining: Cell::new(false),
            produce_in_flight: Rc::default(),
        }
    }

    /// Whether the broker is stopping: appends are refused and every open
    /// segment is due.
    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    /// Counts a produce request as in flight until the guard is dropped
    /// (after its response is written, or the connection is gone).
    pub fn produce_started(&self) -> ProduceInFlight {
        self.produce_in_flight.set(self.produce_in_flight.get() + 1);
        ProduceInFlight(self.produce_in_flight.clone())
    }

    /// Stops taking produce requests, flushes every open segment and waits
    /// until each produce request this shard's connections read is answered.
    /// Returns the produce requests still unanswered after `timeout` (0 when
    /// drained; those not answered were never acknowledged).
    pub async fn drain(&self, timeout: std::time::Duration) -> usize {
        self.begin_draining();
        let deadline = std::time::Instant::now() + timeout;
        // Only while stopping: a short poll instead of one more wake-up path
        // through every answer.
        while self.produce_in_flight.get() > 0 && std::time::Instant::now() < deadline {
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        }
        self.produce_in_flight.get()
    }

    /// Stops taking requests (connections read no more) and has the
    /// flusher seal every open segment; [`Shard::drain`] then waits for
    /// the produce requests in flight.
    pub fn begin_draining(&self) {
        self.draining.set(true);
        self.metrics
            .draining
            .store(1, std::sync::atomic::Ordering::Relaxed);
        self.wake_flusher();
    }

    /// A request frame's reservation. Frames under [`SMALL_FRAME`] never
    /// wait: when the budget is spent (large frames of slow or stalled
    /// clients hold it) they go ahead unreserved, so ApiVersions, Metadata
    /// and small produce requests are never starved by large ones. Their
    /// overrun is bounded by connections x in-flight requests x 64 KiB.
    /// Larger frames of one client address wait until their address holds
    /// less than half of the budget in frames (at most one frame is past
    /// that half, counted whole against the budget), so an address with
    /// many slow or stalled connections cannot take all of it.
    pub async fn reserve_frame(&self, host: &Rc<str>, bytes: u64) -> Reservation {
        if bytes >= SMALL_FRAME {
            // The address's share first (its frames wait while it holds
            // half of the budget, so others find room), then the budget as
            // any reservation: a frame larger than the share still counts
            // whole against the budget.
            let share = self.frame_shares.hold(host, bytes).await;
            let mut r = self.reserve(bytes).await;
            r.also(share);
            return r;
        }
        let units = bytes.max(1);
        let units = if self.budget.try_acquire(units).unwrap_or(false) {
            units
        } else {
            0
        };
        Reservation::of(self.budget.clone(), None, units)
    }

    /// Waits until `bytes` fit in the budget and reserves them. A request larger
    /// than the whole budget reserves the whole budget (it is still served, alone).
    pub async fn reserve(&self, bytes: u64) -> Reservation {
        let units = bytes.clamp(1, self.budget_bytes);
        // The semaphore is never closed, so acquire cannot fail.
        let _ignored = self.budget.acquire(units).await;
        Reservation::of(self.budget.clone(), None, units)
    }

    pub fn wake_flusher(&self) {
        // A full channel means a wake-up is already pending.
        let _ignored = self.flush_wake.try_send(());
    }

    /// The shard that owns a partition.
    pub fn owner_of(&self, topic: &str, partition: u32) -> usize {
        let h = u64::from(crc32c::crc32c(topic.as_bytes())) + u64::from(partition);
        (h % self.count as u64) as usize
    }

    /// Runs `f` on the partition's owner shard and returns its result.
    pub async fn on_owner<T, F, Fut>(
        self: &Rc<Self>,
        topic: &str,
        partition: u32,
        f: F,
    ) -> Result<T, ErrorCode>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let owner = self.owner_of(topic, partition);
        self.on_shard(owner, f).await
    }

    pub async fn on_shard<T, F, Fut>(self: &Rc<Self>, shard: usize, f: F) -> Result<T, ErrorCode>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        self.run_on(shard, f, false).await
    }

    /// [`Shard::on_shard`] for work that waits on other jobs of the owner
    /// (see [`Job::waits`]).
    pub async fn on_shard_waiting<T, F, Fut>(
        self: &Rc<Self>,
        shard: usize,
        f: F,
    ) -> Result<T, ErrorCode>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        self.run_on(shard, f, true).await
    }

    /// Runs `f` here when this is `shard`, else as a [`Job`] sent there.
    async fn run_on<T, F, Fut>(
        self: &Rc<Self>,
        shard: usize,
        f: F,
        waits: bool,
    ) -> Result<T, ErrorCode>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        if shard == self.id {
            return Ok(f(self.clone()).await);
        }
        let (tx, rx) = oneshot::channel();
        let job = Job {
            work: Box::new(move |s| {
                Box::pin(async move {
                    let _ignored = tx.send(f(s).await);
                })
            }),
            waits,
        };
        if self.senders.send_to(shard, job).await.is_err() {
            return Err(ErrorCode::UNKNOWN_SERVER_ERROR);
        }
        rx.await.map_err(|_| ErrorCode::UNKNOWN_SERVER_ERROR)
    }

    /// Runs `f` on every shard (including this one), in parallel.
    pub async fn on_all<F, Fut>(self: &Rc<Self>, f: F)
    where
        F: Fn(Rc<Shard>) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let all = (0..self.count).map(|i| {
            let f = f.clone();
            self.on_shard(i, f)
        });
        futures::future::join_all(all).await;
    }

    // ---- topics ----

    /// The topic, from this shard's cache or the metadata store.
    pub async fn topic(&self, name: &str) -> Result<Option<TopicMeta>, MetaError> {
        if let Some(t) = self.topics.borrow().get(name) {
            return Ok(Some(t.clone()));
        }
        let t = self.meta.topic(name).await?;
        if let Some(t) = &t {
            self.topics.borrow_mut().insert(name.to_owned(), t.clone());
        }
        Ok(t)
    }

    /// The topic, created with the default partition count if it is missing
    /// and auto-creation is on.
    pub async fn topic_or_create(
        &self,
        name: &str,
        allow_create: bool,
    ) -> Result<Option<TopicMeta>, MetaError> {
        Ok(self.topic_or_create_made(name, allow_create).await?.0)
    }

    /// [`Self::topic_or_create`], and whether this call created the topic
    /// (of clients racing to auto-create one, exactly one did).
    pub async fn topic_or_create_made(
        &self,
        name: &str,
        allow_create: bool,
    ) -> Result<(Option<TopicMeta>, bool), MetaError> {
        if let Some(t) = self.topic(name).await? {
            return Ok((Some(t), false));
        }
        // The brokers' own topics' names are theirs (see internal_topics).
        if !(allow_create
            && self.args.auto_create_topics
            && valid_topic_name(name)
            && crate::internal::what(name).is_none())
        {
            return Ok((None, false));
        }
        match self
            .meta
            .create_topic(name, self.args.default_partitions)
            .await
        {
            Ok(t) => {
                tracing::info!(
                    topic = name,
                    partitions = t.partitions,
                    "auto-created topic"
                );
                self.topics.borrow_mut().insert(name.to_owned(), t.clone());
                Ok((Some(t), true))
            }
            Err(MetaError::TopicExists { .. }) => Ok((self.topic(name).await?, false)),
            Err(e) => Err(e),
        }
    }

    pub async fn topic_by_id(&self, id: &str) -> Result<Option<TopicMeta>, MetaError> {
        if let Some(t) = self.topics.borrow().values().find(|t| t.id == id) {
            return Ok(Some(t.clone()));
        }
        let all = self.meta.topics().await?;
        let found = all.into_iter().find(|t| t.id == id);
        if let Some(t) = &found {
            self.topics.borrow_mut().insert(t.name.clone(), t.clone());
        }
        Ok(found)
    }

    /// Drops the cached topic so the next use reads it again (partitions added).
    pub fn refresh_topic(&self, name: &str) {
        self.topics.borrow_mut().remove(name);
    }

    /// Forgets a topic (deleted or changed elsewhere): cache, logs, segments.
    pub fn forget_topic(&self, name: &str) {
        self.topics.borrow_mut().remove(name);
        let doomed: Vec<_> = self
            .logs
            .borrow()
            .keys()
            .filter(|(t, _)| t == name)
            .cloned()
            .collect();
        for key in doomed {
            if let Some(log) = self.logs.borrow_mut().remove(&key) {
                log.fail_pending(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
            }
        }
        self.cache.borrow_mut().forget_topic(name);
    }

    // ---- partition logs (owner shard only) ----

    /// The log of a partition this shard owns, loaded from metadata (and, in
    /// a cluster, claimed) on first use. NOT_LEADER_OR_FOLLOWER when another
    /// broker owns it or this broker's lease cannot be trusted right now.
    pub async fn log(&self, topic: &str, partition: u32) -> Result<Rc<PartitionLog>, ErrorCode> {
        let key = (topic.to_owned(), partition);
        // One load per partition at a time: later callers wait for it and
        // look again (a failed load leaves the next caller to try).
        loop {
            let cached = self.logs.borrow().get(&key).cloned();
            if let Some(log) = cached {
                if self.cluster.holds(log.claim.as_ref()) {
                    return Ok(log);
                }
                if !self.cluster.is_void(log.claim.as_ref()) {
                    // Same lease, but not renewed in time: wait for etcd.
                    return Err(ErrorCode::NOT_LEADER_OR_FOLLOWER);
                }
                // The lease this claim was made under is gone: start over.
                self.drop_log(&log);
                continue;
            }
            let waiting = match self.loading.borrow_mut().entry(key.clone()) {
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    let (tx, rx) = oneshot::channel();
                    e.get_mut().push(tx);
                    Some(rx)
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(Vec::new());
                    None
                }
            };
            match waiting {
                Some(rx) => {
                    let _ignored = rx.await;
                }
                None => break,
            }
        }
        let _loading = LoadingGuard {
            shard: self,
            key: key.clone(),
        };
        self.load_log(topic, partition, key).await
    }

    async fn load_log(
        &self,
        topic: &str,
        partition: u32,
        key: (String, u32),
    ) -> Result<Rc<PartitionLog>, ErrorCode> {
        let meta = match self.topic(topic).await {
            Ok(Some(t)) => t,
            Ok(None) => return Err(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION),
            Err(e) => return Err(ErrorCode::from(&e)),
        };
        if partition >= meta.partitions {
            // The cache may be stale after CreatePartitions elsewhere.
            self.topics.borrow_mut().remove(topic);
            match self.topic(topic).await {
                Ok(Some(t)) if partition < t.partitions => {}
                _ => return Err(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION),
            }
        }
        let (state, claim) = self
            .cluster
            .claim_partition(&self.meta, topic, partition)
            .await?;
        let segments = self
            .meta
            .segments(topic, partition)
            .await
            .map_err(|e| ErrorCode::from(&e))?;
        let log = Rc::new(PartitionLog::new(
            topic.to_owned(),
            partition,
            state,
            segments,
            claim,
        ));
        self.recover(&log).await;
        Ok(self.logs.borrow_mut().entry(key).or_insert(log).clone())
    }

    /// On first load of a partition: report objects uploaded but never
    /// committed (a crash between upload and commit) and rebuild producer
    /// state from the last committed segments.
    async fn recover(&self, log: &PartitionLog) {
        let prefix = format!(
            "{}/{}/{}/",
            self.store_namespace(),
            log.topic,
            log.partition
        );
        let hw = log.high_watermark();
        match self.store.list(&prefix).await {
            Ok(entries) => {
                let orphans: Vec<&str> = entries
                    .iter()
                    .map(|e| e.key.as_str())
                    .filter(|k| {
                        let base = k
                            .rsplit('-')
                            .next()
                            .and_then(|t| t.split('.').next())
                            .and_then(|n| n.parse::<i64>().ok());
                        base.is_some_and(|b| b >= hw)
                    })
                    .collect();
                if !orphans.is_empty() {
                    tracing::warn!(topic = %log.topic, partition = log.partition, count = orphans.len(), keys = ?orphans,
                        "orphan segment objects (uploaded, never committed) are ignored; they are replaced when the partition writes at their offsets");
                    self.metrics
                        .orphans_found
                        .fetch_add(orphans.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::warn!(prefix, error = %e, "cannot list segment objects to look for orphans")
            }
        }
        let segments = log.segments();
        let recent = &segments[segments.len().saturating_sub(2)..];
        let mut batches = Vec::new();
        for seg in recent {
            let (kfs, _) = crate::meta::keys::segment_object(
                self.store_namespace(),
                &log.topic,
                log.partition,
                seg.base_offset,
            );
            match self.store.get_version(&kfs, seg.kfs_version()).await {
                Ok(obj) => match kafscale_codec::kfs::SegmentReader::open(obj.body) {
                    Ok(r) => batches.extend(r.batches()),
                    Err(e) => {
                        tracing::error!(key = %kfs, error = %e, "committed segment is corrupt")
                    }
                },
                Err(e) => {
                    tracing::warn!(key = %kfs, error = %e, "cannot read segment to restore producer state")
                }
            }
        }
        log.restore_producers(&batches);
    }

    // ---- consumer groups (owner shard only) ----

    /// The shard that coordinates a group.
    pub fn group_owner(&self, group: &str) -> usize {
        (crc32c::crc32c(group.as_bytes()) as usize) % self.count
    }

    /// The group's state on its owner shard, created (with its stored
    /// generation) on first use.
    pub async fn group(&self, name: &str) -> GroupRef {
        if let Some(g) = self.groups.borrow().get(name) {
            return g.clone();
        }
        let n = name.to_owned();
        let stored = self.meta.call(move |m| m.group_meta(&n)).await.unwrap_or_else(|e| {
            tracing::warn!(group = name, error = %e, "cannot read group metadata; starting at generation 0");
            None
        });
        let g = self
            .groups
            .borrow_mut()
            .entry(name.to_owned())
            .or_insert_with(|| Group::new(name.to_owned(), stored, self.meta.clone()))
            .clone();
        glommio::spawn_local(super::group::reaper(Rc::downgrade(&g))).detach();
        g
    }

    pub fn existing_group(&self, name: &str) -> Option<GroupRef> {
        self.groups.borrow().get(name).cloned()
    }

    pub fn group_names(&self) -> Vec<String> {
        self.groups.borrow().keys().cloned().collect()
    }

    pub fn drop_group(&self, name: &str) {
        self.groups.borrow_mut().remove(name);
    }

    /// Forgets a partition this shard no longer owns; its pending appends
    /// are refused so producers go to the new owner.
    pub fn drop_log(&self, log: &Rc<PartitionLog>) {
        let key = (log.topic.clone(), log.partition);
        let mut logs = self.logs.borrow_mut();
        if logs.get(&key).is_some_and(|l| Rc::ptr_eq(l, log)) {
            logs.remove(&key);
            drop(logs);
            log.fail_pending(ErrorCode::NOT_LEADER_OR_FOLLOWER);
            tracing::info!(topic = %log.topic, partition = log.partition, "gave up ownership");
        }
    }

    pub fn owned_logs(&self) -> Vec<Rc<PartitionLog>> {
        self.logs.borrow().values().cloned().collect()
    }
}

/// Marks a partition as being loaded; on drop (done, failed or cancelled)
/// wakes whoever waited for the load.
struct LoadingGuard<'a> {
    shard: &'a Shard,
    key: (String, u32),
}

impl Drop for LoadingGuard<'_> {
    fn drop(&mut self) {
        let waiters = self
            .shard
            .loading
            .borrow_mut()
            .remove(&self.key)
            .unwrap_or_default();
        for w in waiters {
            let _ignored = w.send(());
        }
    }
}

/// Kafka's rule: 1-249 characters of `[a-zA-Z0-9._-]`, not "." or "..".
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Recently sealed segments kept for fetches, oldest evicted first.
pub struct SegmentCache {
    cap: usize,
    pool: Rc<BufferPool>,
    used: usize,
    order: VecDeque<(String, u32, i64)>,
    segments: HashMap<(String, u32, i64), CachedSegment>,
    indexes: HashMap<(String, u32, i64), Rc<Index>>,
}

#[derive(Clone)]
pub struct CachedSegment {
    pub data: SegmentBytes,
    pub index: Rc<Index>,
}

impl SegmentCache {
    fn new(cap: usize, pool: Rc<BufferPool>) -> Self {
        Self {
            cap,
            pool,
            used: 0,
            order: VecDeque::new(),
            segments: HashMap::new(),
            indexes: HashMap::new(),
        }
    }

    pub fn insert(&mut self, topic: &str, partition: u32, base: i64, seg: CachedSegment) {
        if seg.data.held() > self.cap {
            return;
        }
        let key = (topic.to_owned(), partition, base);
        self.used += seg.data.held();
        self.indexes.insert(key.clone(), seg.index.clone());
        if let Some(old) = self.segments.insert(key.clone(), seg) {
            self.used -= old.data.held();
        } else {
            self.order.push_back(key);
        }
        while self.used > self.cap {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(s) = self.segments.remove(&old) {
                self.used -= s.data.held();
                // Buffers go back to the pool unless a fetch still sends them.
                for piece in s.data.into_pieces() {
                    self.pool.give(piece);
                }
            }
        }
        if self.indexes.len() > 100_000 {
            self.indexes.clear();
        }
    }

    pub fn get(&self, topic: &str, partition: u32, base: i64) -> Option<CachedSegment> {
        self.segments
            .get(&(topic.to_owned(), partition, base))
            .cloned()
    }

    pub fn index(&self, topic: &str, partition: u32, base: i64) -> Option<Rc<Index>> {
        self.indexes
            .get(&(topic.to_owned(), partition, base))
            .cloned()
    }

    pub fn insert_index(&mut self, topic: &str, partition: u32, base: i64, index: Rc<Index>) {
        if self.indexes.len() > 100_000 {
            self.indexes.clear();
        }
        self.indexes
            .insert((topic.to_owned(), partition, base), index);
    }

    fn forget_topic(&mut self, topic: &str) {
        self.segments.retain(|k, _| k.0 != topic);
        self.indexes.retain(|k, _| k.0 != topic);
        self.order.retain(|k| k.0 != topic);
        self.used = self.segments.values().map(|s| s.data.held()).sum();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Duration;

    use glommio::sync::Semaphore;

    use super::run_jobs;

    /// Ten jobs that wait for a signal arrive at once: with four places,
    /// four run and the rest wait unstarted until places free up; job 4
    /// waits on others (a group join) and starts at once, outside the bound.
    #[test]
    fn no_more_jobs_run_than_there_are_places() {
        kafscale_shard::raise_memlock_limit();
        kafscale_shard::block_on(|| async {
            let (started, running, most) = (
                Rc::new(Cell::new(0u32)),
                Rc::new(Cell::new(0u32)),
                Rc::new(Cell::new(0u32)),
            );
            let release = Rc::new(Semaphore::new(0));
            let (s, r, m, go) = (
                started.clone(),
                running.clone(),
                most.clone(),
                release.clone(),
            );
            glommio::spawn_local(run_jobs(
                futures::stream::iter(0..10u32),
                Rc::new(Semaphore::new(4)),
                |&job| job != 4,
                move |job| {
                    s.set(s.get() + 1);
                    let bounded = job != 4;
                    if bounded {
                        r.set(r.get() + 1);
                        m.set(m.get().max(r.get()));
                    }
                    let (r, go) = (r.clone(), go.clone());
                    async move {
                        let _ = go.acquire(1).await;
                        if bounded {
                            r.set(r.get() - 1);
                        }
                    }
                },
            ))
            .detach();
            glommio::timer::sleep(Duration::from_millis(50)).await;
            assert_eq!(started.get(), 5, "four places, and the waiting job 4");
            release.signal(3);
            glommio::timer::sleep(Duration::from_millis(50)).await;
            assert_eq!(started.get(), 8, "three finished, three more started");
            release.signal(7);
            glommio::timer::sleep(Duration::from_millis(50)).await;
            assert_eq!((started.get(), running.get()), (10, 0));
            assert_eq!(most.get(), 4, "never more than four bounded jobs at once");
        })
        .unwrap();
    }
}
