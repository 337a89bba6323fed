//! Who may do what: Kafka's ACLs (`--authorizer acl`), kept in the metadata
//! store and held by every broker in memory.
//!
//! Each broker loads the bindings at start-up (it does not serve before it
//! has them) and, with etcd, reads them again every second, so a change made
//! through one broker holds on the others within about a second, as Kafka's
//! brokers follow their metadata log. The broker that made a change holds
//! it before it answers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::anyhow;

use super::conn::Caller;
use crate::auth::acl::{Acl, AclSet, Operation, ResourceType};
use crate::meta::MetaClient;

/// How often a clustered broker reads the bindings again.
const REFRESH: Duration = Duration::from_secs(1);

/// The same denial (principal, address, operation, resource) is written to
/// the audit trail at most once per this long: a client retrying a refused
/// request every few milliseconds must not flood it.
const DENIAL_AGAIN_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Authorizer {
    /// Without `--authorizer acl` everyone may do everything, as in Kafka
    /// without an authorizer.
    enabled: bool,
    super_users: HashSet<String>,
    acls: RwLock<Arc<AclSet>>,
    /// When each denial was last written to the audit trail.
    denials: Mutex<HashMap<String, Instant>>,
}

impl Authorizer {
    /// With `enabled`, the bindings now in the metadata store; `super_users`
    /// as Kafka's super.users (`User:a;User:b`).
    pub fn load(enabled: bool, super_users: &str, meta: &MetaClient) -> anyhow::Result<Self> {
        let super_users = super_users
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                if s.split_once(':').is_some_and(|(k, n)| !k.is_empty() && !n.is_empty()) {
                    Ok(s.to_owned())
                } else {
                    Err(anyhow!(
                        "--super-users: {s:?} is not a principal (write User:NAME; separate several with ';')"
                    ))
                }
            })
            .collect::<anyhow::Result<HashSet<_>>>()?;
        let me = Self {
            enabled,
            super_users,
            acls: RwLock::default(),
            denials: Mutex::default(),
        };
        if enabled {
            let acls = meta
                .call_blocking(|m| m.acls())
                .map_err(|e| anyhow!("cannot read the ACLs from the metadata store: {e}"))?;
            me.replace(acls);
        }
        Ok(me)
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn is_super_user(&self, principal: &str) -> bool {
        self.super_users.contains(principal)
    }

    /// Whether `caller` may do `op` on the resource `(kind, name)`.
    pub fn allows(&self, caller: &Caller, op: Operation, kind: ResourceType, name: &str) -> bool {
        !self.enabled
            || self.is_super_user(&caller.principal)
            || self
                .set()
                .allows(&caller.principal, &caller.host, op, kind, name)
    }

    /// As [`Authorizer::allows`], for a request that asked for it (not a
    /// listing filtered by it): a denial is written to the audit trail, as
    /// Kafka's authorizer logs what it denies.
    pub fn authorize(
        &self,
        caller: &Caller,
        op: Operation,
        kind: ResourceType,
        name: &str,
    ) -> bool {
        let allowed = self.allows(caller, op, kind, name);
        if !allowed {
            self.denied(caller, op, kind, name);
        }
        allowed
    }

    /// [`Authorizer::authorize`] on the cluster.
    pub fn authorize_cluster(&self, caller: &Caller, op: Operation) -> bool {
        self.authorize(
            caller,
            op,
            ResourceType::Cluster,
            crate::auth::acl::CLUSTER_NAME,
        )
    }

    /// Writes a denial to the audit trail (at most once per
    /// [`DENIAL_AGAIN_AFTER`] for the same one).
    pub fn denied(&self, caller: &Caller, op: Operation, kind: ResourceType, name: &str) {
        let key = format!("{}|{}|{op}|{kind}|{name}", caller.principal, caller.host);
        {
            let mut seen = self.denials.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if seen
                .get(&key)
                .is_some_and(|at| now.duration_since(*at) < DENIAL_AGAIN_AFTER)
            {
                return;
            }
            if seen.len() >= 10_000 {
                seen.retain(|_, at| now.duration_since(*at) < DENIAL_AGAIN_AFTER);
            }
            seen.insert(key, now);
        }
        let target = match kind {
            ResourceType::Cluster => "CLUSTER".to_owned(),
            _ => format!("{kind} {name}"),
        };
        caller.audit(
            "Authorize",
            &target,
            &format!("refused: {op} is not allowed"),
        );
    }

    /// Whether `caller` may do `op` on the cluster.
    pub fn allows_cluster(&self, caller: &Caller, op: Operation) -> bool {
        self.allows(
            caller,
            op,
            ResourceType::Cluster,
            crate::auth::acl::CLUSTER_NAME,
        )
    }

    /// Whether `caller` may do `op` on some resource of type `kind`.
    pub fn allows_some(&self, caller: &Caller, op: Operation, kind: ResourceType) -> bool {
        !self.enabled
            || self.is_super_user(&caller.principal)
            || self
                .set()
                .allows_some(&caller.principal, &caller.host, op, kind)
    }

    /// Kafka's authorized-operations bitmask of `(kind, name)` for `caller`:
    /// bit `1 << code` of each operation of the type it may do (all of them
    /// without `--authorizer acl`).
    pub fn authorized_operations(&self, caller: &Caller, kind: ResourceType, name: &str) -> i32 {
        kind.operations()
            .iter()
            .filter(|&&op| self.allows(caller, op, kind, name))
            .fold(0, |bits, op| bits | 1 << op.code())
    }

    /// The bindings held now.
    pub fn set(&self) -> Arc<AclSet> {
        self.acls.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, acls: Vec<Acl>) {
        let set = Arc::new(AclSet::new(acls));
        *self.acls.write().unwrap_or_else(|e| e.into_inner()) = set;
    }

    /// Reads the bindings again every second, on a thread of its own (the
    /// metadata client blocks), for as long as the broker runs.
    pub fn follow(self: &Arc<Self>, meta: MetaClient) -> anyhow::Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let me = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("kafscale-acls".into())
            .spawn(move || {
                let mut failing = false;
                loop {
                    std::thread::sleep(REFRESH);
                    let Some(held) = me.upgrade() else { return };
                    // Read and replaced on the metadata thread, so no
                    // change this broker makes meanwhile is undone.
                    let read = meta.call_blocking(move |m| {
                        let mut acls = m.acls()?;
                        acls.sort();
                        acls.dedup();
                        if acls.as_slice() != held.set().all() {
                            held.replace(acls);
                        }
                        Ok(())
                    });
                    match read {
                        Ok(()) => {
                            if failing {
                                tracing::info!("ACLs read from the metadata store again");
                            }
                            failing = false;
                        }
                        Err(e) => {
                            if !failing {
                                tracing::warn!(error = %e, "cannot read the ACLs from the metadata store; keeping those held");
                            }
                            failing = true;
                        }
                    }
                }
            })?;
        Ok(())
    }
}
