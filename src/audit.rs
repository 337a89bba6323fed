//! The audit trail: every state-changing action (topics, ACLs, users,
//! groups) and every failed sign-in, as one JSON object per line on the
//! log, under the target `kafscale::audit`, which logs at info whatever
//! the level of the rest (`KAFSCALE_LOG` adds to `warn,kafscale::audit=info`).
//!
//! ```text
//! {"time":"2026-12-03T15:41:26.850Z","principal":"User:alice","host":"10.0.0.7",
//!  "action":"CreateAcls","target":"(pattern=...)","outcome":"ok"}
//! ```

use serde::Serialize;

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
        Ok(json) => tracing::info!(target: TARGET, "{json}"),
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
