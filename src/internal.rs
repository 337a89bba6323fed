//! The brokers' own topics: the audit trail (`crate::audit`) and the
//! history of consumer group offsets (`crate::offset_history`). The
//! brokers create them at start-up, marked with the topic config
//! [`INTERNAL`]; clients may read them but not produce to them, create,
//! grow or delete them (`broker::internal_topics` appends to them).

/// The audit trail's topic.
pub const AUDIT: &str = "__kafscale_audit";
/// The consumer group offset history's topic.
pub const OFFSETS: &str = "__kafscale_offsets";
/// The topic config that marks a topic as the brokers' own; its value says
/// which (`audit`, `offsets`).
pub const INTERNAL: &str = "kafscale.internal";

/// What the internal topic `name` is, in words; None for any other name.
pub fn what(name: &str) -> Option<&'static str> {
    match name {
        AUDIT => Some("the brokers' audit trail"),
        OFFSETS => Some("the brokers' history of consumer group offsets"),
        _ => None,
    }
}

/// What the brokers' topic `name` is, in words (for a topic marked
/// [`INTERNAL`] under a name this build does not know: "the brokers' own").
pub fn describe(name: &str) -> &'static str {
    what(name).unwrap_or("the brokers' own")
}

/// Refuses what only the brokers may do to their topics: create one
/// (without the marker), grow it or delete it. Checked in the metadata
/// store, so no path (Kafka APIs, mirror jobs, restores) gets past it.
pub fn guard(name: &str, marked: bool, action: &str) -> Result<(), crate::meta::MetaError> {
    match what(name) {
        Some(by) if !marked => Err(crate::meta::MetaError::InUse {
            what: format!("topic {name} ({action})"),
            by: by.into(),
        }),
        _ => Ok(()),
    }
}
