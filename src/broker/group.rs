//! Consumer group coordination, classic protocol, on the group's owner shard.
//!
//! ```text
//! Empty --join--> PreparingRebalance --all joined | rebalance timeout-->
//! CompletingRebalance --leader's SyncGroup--> Stable --join/leave/expiry--> PreparingRebalance
//! ```
//!
//! JoinGroup requests wait (no REBALANCE_IN_PROGRESS loop) until every known
//! member has rejoined or the rebalance timeout passes; then all of them are
//! answered at once, the leader with every member's metadata. SyncGroup hands
//! out exactly the assignment the leader computed, so any client-side
//! assignor works. A member whose heartbeats stop for its session timeout is
//! removed. Single-threaded: a group lives on one shard only.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;

use super::errors::ErrorCode;
use crate::meta::{GroupMeta, MetaClient};

/// Delay before the first rebalance of an empty group, so members starting
/// together land in one generation (Kafka: group.initial.rebalance.delay.ms).
const INITIAL_REBALANCE_DELAY: Duration = Duration::from_millis(1000);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    last_seen: Instant,
    rejoined: bool,
}

impl Member {
    /// This member's metadata for `protocol` (empty if it does not offer it).
    pub fn metadata(&self, protocol: Option<&str>) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| Some(n.as_str()) == protocol)
            .map(|(_, b)| b.clone())
            .unwrap_or_default()
    }
}

/// What a JoinGroup gets back.
#[derive(Debug, Clone, Default)]
pub struct Joined {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// (member id, instance id, metadata): only for the leader.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member first gets MEMBER_ID_REQUIRED and its id.
    pub require_known_id: bool,
}

pub struct Group {
    pub id: String,
    pub state: State,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    join_waiters: HashMap<String, oneshot::Sender<Joined>>,
    /// Ids handed out with MEMBER_ID_REQUIRED, accepted on the next join.
    pending_ids: std::collections::HashSet<String>,
    sync_waiters: HashMap<String, oneshot::Sender<Result<Bytes, ErrorCode>>>,
    /// Identifies the current rebalance, so a stale timer does nothing.
    round: u64,
    meta: MetaClient,
}

pub type GroupRef = Rc<RefCell<Group>>;

impl Group {
    pub fn new(id: String, stored: Option<GroupMeta>, meta: MetaClient) -> GroupRef {
        let stored = stored.unwrap_or_default();
        Rc::new(RefCell::new(Self {
            id,
            state: State::Empty,
            generation: stored.generation,
            protocol_type: stored.protocol_type,
            protocol: stored.protocol,
            leader: None,
            members: BTreeMap::new(),
            join_waiters: HashMap::new(),
            pending_ids: Default::default(),
            sync_waiters: HashMap::new(),
            round: 0,
            meta,
        }))
    }

    /// Checks member and generation for SyncGroup, Heartbeat, OffsetCommit.
    pub fn check(&self, member_id: &str, generation: i32) -> Result<(), ErrorCode> {
        if !self.members.contains_key(member_id) {
            return Err(ErrorCode::UNKNOWN_MEMBER_ID);
        }
        if generation != self.generation {
            return Err(ErrorCode::ILLEGAL_GENERATION);
        }
        Ok(())
    }

    fn begin_rebalance(group: &GroupRef, reason: &str) {
        let (round, delay) = {
            let mut g = group.borrow_mut();
            if g.state == State::PreparingRebalance {
                return;
            }
            let delay = if g.state == State::Empty {
                INITIAL_REBALANCE_DELAY
            } else {
                g.members
                    .values()
                    .map(|m| m.rebalance_timeout)
                    .max()
                    .unwrap_or(INITIAL_REBALANCE_DELAY)
            };
            tracing::info!(group = %g.id, state = g.state.name(), generation = g.generation,
                reason, wait_ms = delay.as_millis() as u64, "preparing to rebalance");
            g.state = State::PreparingRebalance;
            g.round += 1;
            for m in g.members.values_mut() {
                m.rejoined = false;
            }
            // Members still waiting for an old assignment must rejoin.
            for (_, w) in g.sync_waiters.drain() {
                let _ignored = w.send(Err(ErrorCode::REBALANCE_IN_PROGRESS));
            }
            (g.round, delay)
        };
        let g = group.clone();
        glommio::spawn_local(async move {
            glommio::timer::sleep(delay).await;
            if g.borrow().round == round && g.borrow().state == State::PreparingRebalance {
                let missing: Vec<String> = {
                    let g = g.borrow();
                    g.members
                        .values()
                        .filter(|m| !m.rejoined && !g.join_waiters.contains_key(&m.id))
                        .map(|m| m.id.clone())
                        .collect()
                };
                if !missing.is_empty() {
                    tracing::info!(group = %g.borrow().id, ?missing,
                        "rebalance timeout: members that did not rejoin are removed");
                }
                Self::complete_join(&g);
            }
        })
        .detach();
    }

    /// Ends the join phase: members that did not rejoin are dropped, a new
    /// generation starts, and every waiting JoinGroup is answered.
    fn complete_join(group: &GroupRef) {
        let mut g = group.borrow_mut();
        let waiting: Vec<String> = g.join_waiters.keys().cloned().collect();
        g.members.retain(|id, m| m.rejoined || waiting.contains(id));
        g.generation += 1;
        if g.members.is_empty() {
            g.state = State::Empty;
            g.protocol = None;
            g.leader = None;
            g.persist();
            return;
        }
        // The first protocol (in the leader's order) every member supports.
        let leader = match &g.leader {
            Some(l) if g.members.contains_key(l) => l.clone(),
            _ => g.members.keys().next().cloned().unwrap_or_default(),
        };
        let candidates: Vec<String> = g.members[&leader]
            .protocols
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        let protocol = candidates.into_iter().find(|p| {
            g.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == p))
        });
        tracing::info!(group = %g.id, generation = g.generation, members = g.members.len(),
            %leader, protocol = protocol.as_deref().unwrap_or("-"), "joined: new generation");
        g.leader = Some(leader.clone());
        g.protocol = protocol.clone();
        g.state = State::CompletingRebalance;
        g.round += 1;
        let members: Vec<(String, Option<String>, Bytes)> = g
            .members
            .values()
            .map(|m| {
                let meta = m.metadata(protocol.as_deref());
                (m.id.clone(), m.instance_id.clone(), meta)
            })
            .collect();
        let base = Joined {
            error: 0,
            generation: g.generation,
            protocol_type: g.protocol_type.clone(),
            protocol,
            leader: leader.clone(),
            ..Joined::default()
        };
        for (id, waiter) in g.join_waiters.drain() {
            let mut j = base.clone();
            j.member_id = id.clone();
            if id == leader {
                j.members = members.clone();
            }
            let _ignored = waiter.send(j);
        }
        for m in g.members.values_mut() {
            m.last_seen = Instant::now();
        }
        g.persist();
    }

    fn persist(&self) {
        let meta = GroupMeta {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
        };
        let (client, id) = (self.meta.clone(), self.id.clone());
        glommio::spawn_local(async move {
            if let Err(e) = client.call(move |m| m.put_group_meta(&id, &meta)).await {
                tracing::warn!(error = %e, "cannot store group metadata");
            }
        })
        .detach();
    }

    pub async fn join(group: &GroupRef, req: JoinRequest) -> Joined {
        let fail = |error: ErrorCode, member_id: String| Joined {
            error: error.code(),
            member_id,
            ..Joined::default()
        };
        let member_id = {
            let mut g = group.borrow_mut();
            if g.protocol_type
                .as_ref()
                .is_some_and(|t| *t != req.protocol_type)
                && !g.members.is_empty()
            {
                return fail(ErrorCode::INCONSISTENT_GROUP_PROTOCOL, req.member_id);
            }
            if req.member_id.is_empty() {
                let known = req.instance_id.as_ref().and_then(|i| {
                    g.members
                        .values()
                        .find(|m| m.instance_id.as_ref() == Some(i))
                });
                let id = match known {
                    Some(m) => m.id.clone(),
                    None => format!(
                        "{}-{}",
                        req.client_id,
                        uuid::Uuid::from_u128(rand::random::<u128>()).simple()
                    ),
                };
                if req.require_known_id && !g.members.contains_key(&id) {
                    g.pending_ids.insert(id.clone());
                    return fail(ErrorCode::MEMBER_ID_REQUIRED, id);
                }
                id
            } else if g.members.contains_key(&req.member_id)
                || g.pending_ids.remove(&req.member_id)
                || req.instance_id.is_some()
            {
                req.member_id.clone()
            } else {
                return fail(ErrorCode::UNKNOWN_MEMBER_ID, req.member_id);
            }
        };
        // Kafka's shortcut: a known follower rejoining a stable group with
        // unchanged protocols gets the current generation back without a
        // rebalance (clients rejoin more often than they change anything).
        {
            let g = group.borrow();
            if let Some(m) = g.members.get(&member_id)
                && g.state == State::Stable
                && g.leader.as_deref() != Some(member_id.as_str())
                && m.protocols == req.protocols
            {
                return Joined {
                    error: 0,
                    generation: g.generation,
                    protocol_type: g.protocol_type.clone(),
                    protocol: g.protocol.clone(),
                    leader: g.leader.clone().unwrap_or_default(),
                    member_id,
                    members: Vec::new(),
                };
            }
        }
        Self::begin_rebalance(group, &format!("{member_id} joined"));
        let rx = {
            let mut g = group.borrow_mut();
            g.protocol_type = Some(req.protocol_type.clone());
            let member = g
                .members
                .entry(member_id.clone())
                .or_insert_with(|| Member {
                    id: member_id.clone(),
                    instance_id: req.instance_id.clone(),
                    client_id: req.client_id.clone(),
                    client_host: req.client_host.clone(),
                    session_timeout: req.session_timeout,
                    rebalance_timeout: req.rebalance_timeout,
                    protocols: Vec::new(),
                    assignment: Bytes::new(),
                    last_seen: Instant::now(),
                    rejoined: false,
                });
            member.protocols = req.protocols;
            member.session_timeout = req.session_timeout;
            member.rebalance_timeout = req.rebalance_timeout;
            member.last_seen = Instant::now();
            member.rejoined = true;
            let (tx, rx) = oneshot::channel();
            // A duplicate join from the same member: the newer request wins.
            g.join_waiters.insert(member_id.clone(), tx);
            rx
        };
        // Everyone known has rejoined: no need to wait for the timeout. The
        // very first rebalance of a group waits for the initial delay instead,
        // so members starting together share one generation.
        let ready = {
            let g = group.borrow();
            g.generation > 0
                && g.state == State::PreparingRebalance
                && g.members.values().all(|m| m.rejoined)
        };
        if ready {
            Self::complete_join(group);
        }
        rx.await
            .unwrap_or_else(|_| fail(ErrorCode::REBALANCE_IN_PROGRESS, member_id))
    }

    pub async fn sync(
        group: &GroupRef,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Bytes, ErrorCode> {
        let rx = {
            let mut g = group.borrow_mut();
            g.check(member_id, generation)?;
            match g.state {
                State::PreparingRebalance | State::Empty => {
                    return Err(ErrorCode::REBALANCE_IN_PROGRESS);
                }
                State::Stable => return Ok(g.members[member_id].assignment.clone()),
                State::CompletingRebalance => {}
            }
            if g.leader.as_deref() == Some(member_id) {
                let given: HashMap<String, Bytes> = assignments.into_iter().collect();
                for m in g.members.values_mut() {
                    m.assignment = given.get(&m.id).cloned().unwrap_or_default();
                }
                g.state = State::Stable;
                tracing::info!(group = %g.id, generation = g.generation, "stable: leader's assignment handed out");
                let waiters: Vec<_> = g.sync_waiters.drain().collect();
                for (id, w) in waiters {
                    let a = g
                        .members
                        .get(&id)
                        .map(|m| m.assignment.clone())
                        .unwrap_or_default();
                    let _ignored = w.send(Ok(a));
                }
                return Ok(g.members[member_id].assignment.clone());
            }
            let (tx, rx) = oneshot::channel();
            g.sync_waiters.insert(member_id.to_owned(), tx);
            rx
        };
        rx.await.unwrap_or(Err(ErrorCode::REBALANCE_IN_PROGRESS))
    }

    pub fn heartbeat(group: &GroupRef, member_id: &str, generation: i32) -> ErrorCode {
        let mut g = group.borrow_mut();
        if let Err(e) = g.check(member_id, generation) {
            return e;
        }
        if let Some(m) = g.members.get_mut(member_id) {
            m.last_seen = Instant::now();
        }
        match g.state {
            State::PreparingRebalance => ErrorCode::REBALANCE_IN_PROGRESS,
            _ => ErrorCode::NONE,
        }
    }

    /// Removes members (LeaveGroup or session expiry) and rebalances the rest.
    pub fn remove(group: &GroupRef, member_ids: &[String]) -> Vec<ErrorCode> {
        let results: Vec<ErrorCode> = {
            let mut g = group.borrow_mut();
            member_ids
                .iter()
                .map(|id| {
                    if g.members.remove(id).is_some() {
                        g.join_waiters.remove(id);
                        g.sync_waiters.remove(id);
                        ErrorCode::NONE
                    } else {
                        ErrorCode::UNKNOWN_MEMBER_ID
                    }
                })
                .collect()
        };
        if results.contains(&ErrorCode::NONE) {
            let empty = group.borrow().members.is_empty();
            if empty {
                // As Kafka: the rebalance that follows has nobody to wait
                // for, so it ends at once in a new, empty generation without
                // a protocol (DescribeGroups then shows none).
                let mut g = group.borrow_mut();
                g.state = State::Empty;
                g.leader = None;
                g.protocol = None;
                g.generation += 1;
                g.round += 1;
                g.persist();
            } else {
                Self::begin_rebalance(group, "members left");
                // Everyone left may already be waiting in JoinGroup.
                let ready = group.borrow().members.values().all(|m| m.rejoined);
                if ready {
                    Self::complete_join(group);
                }
            }
        }
        results
    }

    /// Members whose session ran out (not counting those waiting in JoinGroup).
    pub fn expired(&self, now: Instant) -> Vec<String> {
        self.members
            .values()
            .filter(|m| {
                !self.join_waiters.contains_key(&m.id)
                    && now.duration_since(m.last_seen) > m.session_timeout
            })
            .map(|m| m.id.clone())
            .collect()
    }
}

/// Expires members of one group until it is dropped from the shard.
pub async fn reaper(group: std::rc::Weak<RefCell<Group>>) {
    loop {
        glommio::timer::sleep(Duration::from_millis(500)).await;
        let Some(g) = group.upgrade() else { return };
        let expired = g.borrow().expired(Instant::now());
        if !expired.is_empty() {
            tracing::info!(group = %g.borrow().id, members = ?expired, "session timeout: removing members");
            Group::remove(&g, &expired);
        }
    }
}
