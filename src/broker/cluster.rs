//! Several brokers, one bucket, one etcd: who is alive and who owns what.
//!
//! ```text
//! etcd  brokers/{id}           BrokerInfo   bound to the broker's lease
//!       owners/{topic}/{p}     Owner        bound to the owner's lease
//!       coordinators/{group}   Owner        bound to the coordinator's lease
//! ```
//!
//! Each broker holds one lease (`--lease-ttl-secs`, default 10) and renews it
//! from the `kafscale-cluster` thread. A partition (or group) belongs to the
//! live broker it hashes to (rendezvous hashing over the live set), which
//! claims it on first use; a claim bumps the partition's epoch in the same
//! etcd transaction, and every segment commit compares that epoch, so a
//! broker that lost its lease (crashed, paused, cut off) can never commit
//! again. When a broker joins, owners hand over the partitions that now hash
//! elsewhere; when one dies, its keys expire with its lease and the
//! survivors claim its partitions on the next request. Nothing is copied:
//! the log is in S3 and the state in etcd.
//!
//! With the embedded metadata store there is one broker, which owns
//! everything and never asks etcd.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::anyhow;

use super::errors::ErrorCode;
use crate::meta::store::now_ms;
use crate::meta::{BrokerInfo, MetaClient, MetaError, Owner, PartitionState};

/// What this broker knows about the cluster.
pub struct Cluster {
    pub me: BrokerInfo,
    /// `None` with the embedded metadata store.
    leased: Option<Leased>,
}

struct Leased {
    meta: MetaClient,
    ttl: Duration,
    lease: AtomicI64,
    /// Bumped whenever the lease was lost and a new one granted: claims made
    /// under an older generation are void.
    generation: AtomicU64,
    /// Until when (ms since the epoch) the lease surely holds: the send time
    /// of the last successful renewal plus the TTL.
    valid_until_ms: AtomicI64,
    view: RwLock<Arc<View>>,
    /// Groups this broker coordinates, with the generation of the claim.
    groups: Mutex<HashMap<String, u64>>,
}

/// The live brokers and owners, refreshed every second.
#[derive(Debug, Default)]
pub struct View {
    pub brokers: Vec<BrokerInfo>,
    /// topic -> partition -> owner.
    pub owners: HashMap<String, HashMap<u32, Owner>>,
    pub coordinators: HashMap<String, i32>,
}

/// A partition claimed by this broker: valid while the lease it was made
/// under holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub owner: Owner,
    generation: u64,
}

/// "lease N, T s left" for the registration of broker `id`, for messages.
fn holder_lease(meta: &MetaClient, id: i32) -> String {
    match meta.call_blocking(move |m| m.broker_lease(id)) {
        Ok(Some((lease, ttl))) if ttl >= 0 => format!("lease {lease:x}, {ttl} s left"),
        Ok(Some((lease, _))) => format!("lease {lease:x}, expired but not yet deleted"),
        Ok(None) => "no lease (gone now, or registered without one)".into(),
        Err(e) => format!("lease unknown: {e}"),
    }
}

impl Cluster {
    /// One broker owning everything (embedded metadata).
    pub fn single(me: BrokerInfo) -> Self {
        Self { me, leased: None }
    }

    /// Registers this broker in etcd under a new lease and starts renewing
    /// it. With `id` given, waits for a previous holder of
    /// that id to expire (up to three TTLs); without, takes the lowest free id.
    pub fn join(
        meta: MetaClient,
        mut me: BrokerInfo,
        id: Option<i32>,
        ttl: Duration,
    ) -> anyhow::Result<Arc<Self>> {
        let ttl_secs = ttl.as_secs().max(1) as i64;
        let mut lease = meta.call_blocking(move |m| m.grant_lease(ttl_secs))?;
        let mut sent = now_ms();
        match id {
            Some(id) => {
                me.id = id;
                let wait = 3 * ttl + Duration::from_secs(5);
                let deadline = std::time::Instant::now() + wait;
                loop {
                    let info = me.clone();
                    match meta.call_blocking(move |m| m.register_broker(&info, lease)) {
                        Ok(()) => break,
                        Err(MetaError::BrokerIdTaken { .. })
                            if std::time::Instant::now() < deadline =>
                        {
                            let holder = holder_lease(&meta, id);
                            tracing::warn!(
                                broker_id = id,
                                holder = %holder,
                                "broker id is still registered (a previous run's lease has not expired yet); waiting"
                            );
                            std::thread::sleep(Duration::from_millis(500));
                            // The wait can outlast our own lease (a restart
                            // right after kill -9 waits about one TTL): keep
                            // it alive, or take a new one if it lapsed.
                            let renew_from = now_ms();
                            if meta.call_blocking(move |m| m.keep_alive(lease))? {
                                sent = renew_from;
                            } else {
                                lease = meta.call_blocking(move |m| m.grant_lease(ttl_secs))?;
                                sent = now_ms();
                            }
                        }
                        Err(e @ MetaError::BrokerIdTaken { .. }) => {
                            let holder = holder_lease(&meta, id);
                            return Err(anyhow!(
                                "cannot register broker {id}: {e} (still held after {}s: {holder})",
                                wait.as_secs()
                            ));
                        }
                        Err(e) => return Err(anyhow!("cannot register broker {id}: {e}")),
                    }
                }
            }
            None => {
                let info = me.clone();
                me.id = meta.call_blocking(move |m| m.register_any_broker(info, lease))?;
            }
        }
        let cluster = Arc::new(Self {
            me,
            leased: Some(Leased {
                meta,
                ttl,
                lease: AtomicI64::new(lease),
                generation: AtomicU64::new(0),
                valid_until_ms: AtomicI64::new(sent + ttl.as_millis() as i64),
                view: RwLock::default(),
                groups: Mutex::default(),
            }),
        });
        cluster.refresh()?;
        let c = cluster.clone();
        std::thread::Builder::new()
            .name("kafscale-cluster".into())
            .spawn(move || c.run())?;
        Ok(cluster)
    }

    pub fn id(&self) -> i32 {
        self.me.id
    }

    pub fn is_clustered(&self) -> bool {
        self.leased.is_some()
    }

    fn view(&self) -> Option<Arc<View>> {
        let l = self.leased.as_ref()?;
        Some(
            l.view
                .read()
                .map_or_else(|e| e.into_inner().clone(), |v| v.clone()),
        )
    }

    /// Live brokers (this one alone when not clustered).
    pub fn brokers(&self) -> Vec<BrokerInfo> {
        match self.view() {
            Some(v) if !v.brokers.is_empty() => v.brokers.clone(),
            _ => vec![self.me.clone()],
        }
    }

    /// For each partition of a topic, the broker clients should send its
    /// requests to and its leader epoch (-1 when nobody has claimed it yet).
    /// One look at the view for the whole topic.
    pub fn leaders(&self, topic: &str, partitions: u32) -> Vec<(i32, i32)> {
        let Some(view) = self.view() else {
            return vec![(self.me.id, 0); partitions as usize];
        };
        let owners = view.owners.get(topic);
        (0..partitions)
            .map(|p| match owners.and_then(|o| o.get(&p)) {
                Some(o) => (o.broker, o.epoch as i32),
                None => (
                    preferred(&view, &partition_key(topic, p)).unwrap_or(self.me.id),
                    -1,
                ),
            })
            .collect()
    }

    /// The broker a partition's requests go to.
    fn leader_of(&self, topic: &str, partition: u32) -> i32 {
        let view = self.view();
        let owner = view
            .as_ref()
            .and_then(|v| v.owners.get(topic)?.get(&partition));
        match (owner, &view) {
            (Some(o), _) => o.broker,
            (None, Some(v)) => preferred(v, &partition_key(topic, partition)).unwrap_or(self.me.id),
            (None, None) => self.me.id,
        }
    }

    /// The broker coordinating a group.
    pub fn coordinator_of(&self, group: &str) -> i32 {
        let Some(view) = self.view() else {
            return self.me.id;
        };
        match view.coordinators.get(group) {
            Some(b) => *b,
            None => preferred(&view, &group_key(group)).unwrap_or(self.me.id),
        }
    }

    /// Whether this broker should own the partition now (its hash points here).
    pub fn prefers_me(&self, topic: &str, partition: u32) -> bool {
        self.view()
            .and_then(|v| preferred(&v, &partition_key(topic, partition)))
            .is_none_or(|b| b == self.me.id)
    }

    /// Whether this broker is the one (of the live ones) a piece of
    /// cluster-wide work named `key` hashes to, e.g. one job's group sync.
    pub fn prefers_me_for(&self, key: &str) -> bool {
        self.view()
            .and_then(|v| preferred(&v, &format!("w/{key}")))
            .is_none_or(|b| b == self.me.id)
    }

    /// True while a claim can still be used to append: same lease generation
    /// and the lease surely not expired. Always true when not clustered.
    pub fn holds(&self, claim: Option<&Claim>) -> bool {
        match (&self.leased, claim) {
            (None, _) => true,
            (Some(l), Some(c)) => {
                c.generation == l.generation.load(Ordering::Acquire)
                    && now_ms() < l.valid_until_ms.load(Ordering::Acquire)
            }
            (Some(_), None) => false,
        }
    }

    /// True when the claim belongs to an older lease: the log must be dropped.
    pub fn is_void(&self, claim: Option<&Claim>) -> bool {
        match (&self.leased, claim) {
            (Some(l), Some(c)) => c.generation != l.generation.load(Ordering::Acquire),
            _ => false,
        }
    }

    /// Takes ownership of a partition for this broker, returning its state.
    /// NOT_LEADER_OR_FOLLOWER when another broker owns it or should.
    pub async fn claim_partition(
        &self,
        meta: &MetaClient,
        topic: &str,
        partition: u32,
    ) -> Result<(PartitionState, Option<Claim>), ErrorCode> {
        let Some(l) = &self.leased else {
            let state = meta.partition_state(topic, partition).await;
            return state.map(|s| (s, None)).map_err(|e| ErrorCode::from(&e));
        };
        if self.leader_of(topic, partition) != self.me.id {
            return Err(ErrorCode::NOT_LEADER_OR_FOLLOWER);
        }
        let generation = l.generation.load(Ordering::Acquire);
        let lease = l.lease.load(Ordering::Acquire);
        if now_ms() >= l.valid_until_ms.load(Ordering::Acquire) {
            return Err(ErrorCode::NOT_LEADER_OR_FOLLOWER);
        }
        let (t, me) = (topic.to_owned(), self.me.id);
        match meta
            .call(move |m| m.claim_partition(&t, partition, me, lease))
            .await
        {
            Ok(state) => {
                tracing::info!(topic, partition, epoch = state.epoch, "took ownership");
                Ok((
                    state,
                    Some(Claim {
                        owner: Owner {
                            broker: me,
                            lease,
                            epoch: state.epoch,
                        },
                        generation,
                    }),
                ))
            }
            Err(e) => Err(ErrorCode::from(&e)),
        }
    }

    /// Hands a partition back (it now hashes to another live broker).
    pub async fn release_partition(
        &self,
        meta: &MetaClient,
        topic: &str,
        partition: u32,
        claim: &Claim,
    ) {
        let (t, owner) = (topic.to_owned(), claim.owner);
        match meta
            .call(move |m| m.release_partition(&t, partition, &owner))
            .await
        {
            Ok(()) => tracing::info!(topic, partition, "handed ownership over"),
            Err(e) => tracing::warn!(topic, partition, error = %e, "could not release ownership"),
        }
    }

    /// Makes sure this broker coordinates `group`: NONE, or NOT_COORDINATOR
    /// when another broker does (or should).
    pub async fn coordinate(&self, group: &str) -> ErrorCode {
        let Some(l) = &self.leased else {
            return ErrorCode::NONE;
        };
        let generation = l.generation.load(Ordering::Acquire);
        let claimed = l
            .groups
            .lock()
            .map(|g| g.get(group) == Some(&generation))
            .unwrap_or(false);
        if claimed {
            return ErrorCode::NONE;
        }
        if self.coordinator_of(group) != self.me.id {
            return ErrorCode::NOT_COORDINATOR;
        }
        let lease = l.lease.load(Ordering::Acquire);
        let (g, me) = (group.to_owned(), self.me.id);
        match l
            .meta
            .call(move |m| m.claim_coordinator(&g, me, lease))
            .await
        {
            Ok(()) => {
                if let Ok(mut groups) = l.groups.lock() {
                    groups.insert(group.to_owned(), generation);
                }
                tracing::info!(group, "coordinating group");
                ErrorCode::NONE
            }
            Err(MetaError::OwnedBy { .. }) => ErrorCode::NOT_COORDINATOR,
            Err(e) => {
                tracing::warn!(group, error = %e, "cannot claim group coordination");
                ErrorCode::COORDINATOR_NOT_AVAILABLE
            }
        }
    }

    /// Ends this broker's lease: its registration, partitions and groups go
    /// to the others now. Used on SIGTERM, just before the process exits.
    pub fn leave(&self) {
        let Some(l) = &self.leased else {
            return;
        };
        l.valid_until_ms.store(0, Ordering::Release);
        let lease = l.lease.load(Ordering::Acquire);
        match l.meta.call_blocking(move |m| m.revoke_lease(lease)) {
            Ok(()) => tracing::info!(broker_id = self.me.id, "left the cluster"),
            Err(e) => {
                tracing::warn!(error = %e, "could not end the lease; it expires after its TTL")
            }
        }
    }

    /// Renews the lease and refreshes the view, forever.
    fn run(self: Arc<Self>) {
        let Some(l) = &self.leased else {
            return;
        };
        let period = (l.ttl / 4).clamp(Duration::from_millis(200), Duration::from_secs(1));
        loop {
            std::thread::sleep(period);
            self.renew(l);
            if let Err(e) = self.refresh() {
                tracing::warn!(error = %e, "cannot refresh the cluster view");
            }
        }
    }

    fn renew(&self, l: &Leased) {
        let lease = l.lease.load(Ordering::Acquire);
        let sent = now_ms();
        match l.meta.call_blocking(move |m| m.keep_alive(lease)) {
            Ok(true) => {
                l.valid_until_ms
                    .store(sent + l.ttl.as_millis() as i64, Ordering::Release);
            }
            Ok(false) => {
                // Our keys are gone and others may own our partitions now.
                // Void every claim, then come back under a new lease.
                l.generation.fetch_add(1, Ordering::AcqRel);
                l.valid_until_ms.store(0, Ordering::Release);
                tracing::error!(
                    broker_id = self.me.id,
                    "lost the cluster lease (paused or cut off from etcd longer than the TTL); every partition is given up"
                );
                let ttl_secs = l.ttl.as_secs().max(1) as i64;
                let info = self.me.clone();
                let rejoined = l.meta.call_blocking(move |m| {
                    let lease = m.grant_lease(ttl_secs)?;
                    m.register_broker(&info, lease)?;
                    Ok(lease)
                });
                match rejoined {
                    Ok(lease) => {
                        l.lease.store(lease, Ordering::Release);
                        l.valid_until_ms
                            .store(sent + l.ttl.as_millis() as i64, Ordering::Release);
                        if let Ok(mut g) = l.groups.lock() {
                            g.clear();
                        }
                        tracing::info!(
                            broker_id = self.me.id,
                            "registered again under a new lease"
                        );
                    }
                    Err(e) => tracing::error!(error = %e, "cannot register again; retrying"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew the cluster lease"),
        }
    }

    fn refresh(&self) -> anyhow::Result<()> {
        let Some(l) = &self.leased else {
            return Ok(());
        };
        let view = l.meta.call_blocking(|m| {
            Ok(View {
                brokers: m.brokers()?,
                owners: m.owners()?.into_iter().fold(
                    HashMap::<String, HashMap<u32, Owner>>::new(),
                    |mut acc, (t, p, o)| {
                        acc.entry(t).or_default().insert(p, o);
                        acc
                    },
                ),
                coordinators: m
                    .coordinators()?
                    .into_iter()
                    .map(|(g, o)| (g, o.broker))
                    .collect(),
            })
        })?;
        let view = Arc::new(view);
        match l.view.write() {
            Ok(mut v) => *v = view,
            Err(e) => *e.into_inner() = view,
        }
        Ok(())
    }
}

fn partition_key(topic: &str, partition: u32) -> String {
    format!("p/{topic}/{partition}")
}

fn group_key(group: &str) -> String {
    format!("g/{group}")
}

/// Rendezvous (highest random weight) hashing: every broker computes the
/// same owner from the same live set, and when a broker joins or leaves
/// only the keys that hash to it move.
fn preferred(view: &View, key: &str) -> Option<i32> {
    view.brokers
        .iter()
        .max_by_key(|b| weight(key, b.id))
        .map(|b| b.id)
}

fn weight(key: &str, broker: i32) -> u64 {
    // FNV-1a, then a splitmix64 finaliser: stable across builds and hosts.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain(broker.to_be_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(ids: &[i32]) -> View {
        View {
            brokers: ids
                .iter()
                .map(|&id| BrokerInfo {
                    id,
                    host: "h".into(),
                    port: 1,
                    started_ms: 0,
                    http_port: 0,
                    listeners: vec![],
                })
                .collect(),
            ..View::default()
        }
    }

    #[test]
    fn rendezvous_spreads_partitions_and_moves_only_the_leavers() {
        let three = view(&[0, 1, 2]);
        let two = view(&[0, 2]);
        let mut counts = [0; 3];
        for p in 0..300 {
            let key = partition_key("orders", p);
            let before = preferred(&three, &key).unwrap();
            counts[before as usize] += 1;
            let after = preferred(&two, &key).unwrap();
            if before != 1 {
                assert_eq!(before, after, "partition {p} moved though its owner stayed");
            }
        }
        for c in counts {
            assert!((70..=130).contains(&c), "uneven spread: {counts:?}");
        }
        assert_eq!(preferred(&view(&[]), "x"), None);
    }
}
