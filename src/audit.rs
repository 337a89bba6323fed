//! The audit trail: every state-changing action (topics, ACLs, users,
//! groups, tokens, mirror jobs, restores) and every failed sign-in, as one
//! JSON object per line on the log, under the target `kafscale::audit`,
//! which logs at info whatever the level of the rest (`KAFSCALE_LOG` adds
//! to `warn,kafscale::audit=info`). In a broker the same lines also become
//! records of the read-only topic `__kafscale_audit` (see
//! `broker::audit_topic`), kept for it here until it takes them.
//!
//! ```text
//! {"time":"2026-12-03T15:41:26.850Z","principal":"User:alice","host":"10.0.0.7",
//!  "action":"CreateAcls","target":"(pattern=...)","outcome":"ok"}
//! ```

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};

use serde::Serialize;

/// Lines waiting for the audit topic, at most [`KEPT_MAX`]; beyond that
/// the oldest are dropped (and counted): the log still has them.
static KEPT: OnceLock<Mutex<Kept>> = OnceLock::new();
const KEPT_MAX: usize = 100_000;

#[derive(Default)]
struct Kept {
    lines: VecDeque<String>,
    dropped: u64,
}

/// From now on, lines are also kept for [`take`].
pub fn keep_for_topic() {
    KEPT.get_or_init(Mutex::default);
}

fn kept() -> Option<std::sync::MutexGuard<'static, Kept>> {
    KEPT.get()
        .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Up to `max` kept lines, oldest first, and how many were dropped since
/// the last call.
pub fn take(max: usize) -> (Vec<String>, u64) {
    let Some(mut k) = kept() else {
        return (Vec::new(), 0);
    };
    let n = k.lines.len().min(max);
    let lines = k.lines.drain(..n).collect();
    (lines, std::mem::take(&mut k.dropped))
}

/// Puts back lines [`take`] gave that could not be written, ahead of newer.
pub fn give_back(lines: Vec<String>) {
    if let Some(mut k) = kept() {
        for l in lines.into_iter().rev() {
            k.lines.push_front(l);
        }
        while k.lines.len() > KEPT_MAX {
            k.lines.pop_front();
            k.dropped += 1;
        }
    }
}

/// The brokers' topic of the trail (see `broker::audit_topic`).
pub const TOPIC: &str = "__kafscale_audit";
/// The topic config that marks it as theirs.
pub const INTERNAL: &str = "kafscale.internal";

/// Refuses what only the brokers may do to the trail's topic: create it
/// (without the marker), grow it or delete it. Checked in the metadata
/// store, so no path (Kafka APIs, mirror jobs, restores) gets past it.
pub fn guard(name: &str, marked: bool, what: &str) -> Result<(), crate::meta::MetaError> {
    if name == TOPIC && !marked {
        return Err(crate::meta::MetaError::InUse {
            what: format!("topic {TOPIC} ({what})"),
            by: "the brokers' audit trail".into(),
        });
    }
    Ok(())
}

/// The log target of audit records.
pub const TARGET: &str = "kafscale::audit";

/// What a tracing filter starts from: warnings, and the audit trail.
pub const DEFAULT_FILTER: &str = "warn,kafscale::audit=info";

#[derive(Debug, Serialize)]
pub struct Event<'a> {
    pub principal: &'a str,
    /// The client's address, as ACLs name hosts.
    pub host: &'a str,
    /// The Kafka API or CLI action, e.g. `CreateTopics`.
    pub action: &'a str,
    /// What it acted on, e.g. `topic orders`.
    pub target: &'a str,
    /// `ok`, or why it was refused or failed.
    pub outcome: &'a str,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    event: &'a Event<'a>,
}

/// Writes `event` to the audit trail.
pub fn record(event: &Event<'_>) {
    let line = Line {
        time: kafscale_s3::format_unix_ms(crate::meta::store::now_ms()),
        event,
    };
    match serde_json::to_string(&line) {
        Ok(json) => {
            tracing::info!(target: TARGET, "{json}");
            if let Some(mut k) = kept() {
                if k.lines.len() >= KEPT_MAX {
                    k.lines.pop_front();
                    k.dropped += 1;
                }
                k.lines.push_back(json);
            }
        }
        Err(e) => tracing::warn!(target: TARGET, error = %e, "cannot write an audit record"),
    }
}

/// Writes a successful action of `caller` on `target` to the audit trail.
pub fn ok(principal: &str, host: &str, action: &str, target: &str) {
    record(&Event {
        principal,
        host,
        action,
        target,
        outcome: "ok",
    });
}
