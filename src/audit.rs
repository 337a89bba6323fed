//! The audit trail: every state-changing action (topics, ACLs, users,
//! groups, tokens, mirror jobs, restores) and every failed sign-in, as one
//! JSON object per line on the log, under the target `kafscale::audit`,
//! which logs at info whatever the level of the rest (`KAFSCALE_LOG` adds
//! to `warn,kafscale::audit=info`). In a broker the same lines also become
//! records of the read-only topic `__kafscale_audit` (see
//! `broker::internal_topics`), kept for it here until it takes them.
//!
//! ```text
//! {"time":"2026-12-03T15:41:26.850Z","principal":"User:alice","host":"10.0.0.7",
//!  "action":"CreateAcls","target":"(pattern=...)","outcome":"ok"}
//! ```

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};

use serde::Serialize;

/// Lines waiting for the audit topic. Refusals and failures (a flood of
/// wrong passwords, anonymous REST calls) are kept apart from actions that
/// succeeded, each at most [`KEPT_MAX`]: when full the oldest of the same
/// kind is dropped (and counted; the log still has it), so no flood of
/// refusals can push a change out of the trail.
static KEPT: OnceLock<Mutex<Kept>> = OnceLock::new();
const KEPT_MAX: usize = 50_000;

#[derive(Default)]
struct Kept {
    /// (sequence, line): the sequence orders the two kinds for [`take`].
    done: VecDeque<Entry>,
    refused: VecDeque<Entry>,
    next: u64,
    dropped: u64,
}

/// A kept line: its sequence number, whether its action succeeded, the line.
type Entry = (u64, bool, String);

impl Kept {
    fn push(&mut self, entry: Entry, front: bool) {
        let q = if entry.1 {
            &mut self.done
        } else {
            &mut self.refused
        };
        if front {
            q.push_front(entry);
        } else {
            q.push_back(entry);
        }
        if q.len() > KEPT_MAX {
            q.pop_front();
            self.dropped += 1;
        }
    }

    fn pop_oldest(&mut self) -> Option<Entry> {
        let q = match (self.done.front(), self.refused.front()) {
            (Some(d), Some(r)) if r.0 < d.0 => &mut self.refused,
            (Some(_), _) => &mut self.done,
            (None, Some(_)) => &mut self.refused,
            (None, None) => return None,
        };
        q.pop_front()
    }
}

/// From now on, lines are also kept for [`take`].
pub fn keep_for_topic() {
    KEPT.get_or_init(Mutex::default);
}

fn kept() -> Option<std::sync::MutexGuard<'static, Kept>> {
    KEPT.get()
        .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Lines [`take`] gave out, to be given back in their places if they could
/// not be written.
#[derive(Debug)]
pub struct Taken(Vec<Entry>);

impl Taken {
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(_, _, l)| l.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Up to `max` kept lines, oldest first, and how many were dropped since
/// the last call.
pub fn take(max: usize) -> (Taken, u64) {
    let Some(mut k) = kept() else {
        return (Taken(Vec::new()), 0);
    };
    let lines = std::iter::from_fn(|| k.pop_oldest()).take(max).collect();
    (Taken(lines), std::mem::take(&mut k.dropped))
}

/// Puts back lines [`take`] gave that could not be written, ahead of newer.
pub fn give_back(taken: Taken) {
    if let Some(mut k) = kept() {
        for entry in taken.0.into_iter().rev() {
            k.push(entry, true);
        }
    }
}

/// The brokers' topic of the trail (see `broker::internal_topics`).
pub use crate::internal::AUDIT as TOPIC;

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

/// Longest target or outcome a line keeps: they may hold what a client
/// sent (a topic or group name), and a flood of refused requests with huge
/// names must not fill memory or the trail's topic.
const FIELD_MAX: usize = 512;

/// `s` cut at [`FIELD_MAX`] bytes (on a character boundary), saying how
/// much was left out.
fn bounded(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= FIELD_MAX {
        return s.into();
    }
    let mut end = FIELD_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes more)", &s[..end], s.len() - end).into()
}

/// Writes `event` to the audit trail.
pub fn record(event: &Event<'_>) {
    let (target, outcome) = (bounded(event.target), bounded(event.outcome));
    let event = &Event {
        target: &target,
        outcome: &outcome,
        principal: event.principal,
        host: event.host,
        action: event.action,
    };
    let line = Line {
        time: kafscale_s3::format_unix_ms(crate::meta::store::now_ms()),
        event,
    };
    match serde_json::to_string(&line) {
        Ok(json) => {
            tracing::info!(target: TARGET, "{json}");
            if let Some(mut k) = kept() {
                let seq = k.next;
                k.next += 1;
                k.push((seq, event.outcome == "ok", json), false);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_fields_are_cut_on_a_character_boundary() {
        assert_eq!(bounded("orders"), "orders");
        let long = "é".repeat(400); // 800 bytes
        let cut = bounded(&long);
        assert!(cut.starts_with(&"é".repeat(256)), "{cut}");
        assert!(cut.ends_with("... (288 bytes more)"), "{cut}");
    }

    fn line(seq: u64, ok: bool) -> Entry {
        (seq, ok, format!("line {seq}"))
    }

    #[test]
    fn a_flood_of_refusals_pushes_out_only_refusals_and_order_is_kept() {
        let mut k = Kept::default();
        k.push(line(0, true), false);
        for seq in 1..=(KEPT_MAX as u64 + 10) {
            k.push(line(seq, false), false);
        }
        k.push(line(KEPT_MAX as u64 + 11, true), false);
        assert_eq!(k.dropped, 10);
        assert_eq!(k.done.len(), 2, "both changes kept");
        let first: Vec<u64> = std::iter::from_fn(|| k.pop_oldest())
            .take(3)
            .map(|e| e.0)
            .collect();
        assert_eq!(first, [0, 11, 12], "oldest first across both kinds");
        // Given back in front, in their places.
        k.push(line(12, false), true);
        k.push(line(11, false), true);
        k.push(line(0, true), true);
        assert_eq!(k.pop_oldest().map(|e| e.0), Some(0));
        assert_eq!(k.pop_oldest().map(|e| e.0), Some(11));
        let last = std::iter::from_fn(|| k.pop_oldest()).last().unwrap();
        assert_eq!(last.0, KEPT_MAX as u64 + 11);
    }
}
