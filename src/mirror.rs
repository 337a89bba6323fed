//! The mirror: source clusters and the jobs that copy their topics into the
//! spine, offsets 1:1.
//!
//! ```text
//! kafscale mirror ... (cli) --HTTP--> /v1/mirror/... (broker REST, any broker)
//!                                        '-> metadata store: mirror/sources, mirror/jobs
//! every shard of every broker: supervisor (polls jobs) -> runner per job
//!     runner: discovery (source metadata -> target topics), then fetch rounds
//!     for the target partitions this shard owns:
//!       fetch at the log's own next offset -> append_at_offsets -> flusher
//! ```
//!
//! The spine's log is the checkpoint: a runner always fetches from the next
//! offset of the partition's log (appended or committed), so a crash, a
//! failed flush or a move to another broker resumes exactly where the copy
//! ends, and nothing is fetched twice into it.
//!
//! This module holds what the CLI, the REST API and the runners share: the
//! stored specs ([`spec`]), and the CLI ([`cli`]). The runners are in
//! `broker::mirror`, the REST API in `broker::rest`.

pub mod cli;
pub mod spec;
pub mod status;

pub use spec::{CompiledJob, JobSpec, Mapping, OnGap, SourceSpec};
pub use status::{Gap, JobReport, JobStatus, PartitionReport, PartitionState};

/// Topic configuration keys that make a topic a read-only mirror copy.
pub mod topic_config {
    /// The job copying into the topic; while set, produce is refused.
    pub const JOB: &str = "kafscale.mirror.job";
    /// The source (cluster) name and topic the copy is of.
    pub const SOURCE: &str = "kafscale.mirror.source";
    pub const SOURCE_TOPIC: &str = "kafscale.mirror.source.topic";
}
