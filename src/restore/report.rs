//! The evidence a restore leaves: a JSON report in canonical form (RFC 8785)
//! with an HTML rendering beside it, and the content digest both sides of a
//! restore are checked with.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use kafscale_codec::records::Record;
use kafscale_s3::format_unix_ms;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The report's format name; `restore verify` refuses others.
pub const FORMAT: &str = "kafscale-restore-report/1";

/// SHA-256 over a partition's records in offset order. Each record adds:
/// offset (i64 BE), timestamp (i64 BE), key and value (i32 BE length, -1
/// for null, then the bytes), header count (i32 BE) and each header's key
/// and value the same way. Control batches add nothing. `docs/restore.md`
/// spells it out so anyone can recompute it.
///
/// [`ContentDigest::without_offsets`] leaves the offset out: a restore into
/// another Kafka cluster cannot keep offsets, only order.
#[derive(Debug, Clone)]
pub struct ContentDigest {
    hash: Sha256,
    records: u64,
    offsets: bool,
}

impl Default for ContentDigest {
    fn default() -> Self {
        Self {
            hash: Sha256::new(),
            records: 0,
            offsets: true,
        }
    }
}

impl ContentDigest {
    pub fn without_offsets() -> Self {
        Self {
            offsets: false,
            ..Self::default()
        }
    }

    pub fn add(&mut self, r: &Record) {
        let h = &mut self.hash;
        if self.offsets {
            h.update(r.offset.to_be_bytes());
        }
        h.update(r.timestamp.to_be_bytes());
        let mut bytes = |b: Option<&[u8]>| match b {
            Some(b) => {
                h.update((b.len() as i32).to_be_bytes());
                h.update(b);
            }
            None => h.update((-1i32).to_be_bytes()),
        };
        bytes(r.key.as_deref());
        bytes(r.value.as_deref());
        h.update((r.headers.len() as i32).to_be_bytes());
        for hd in &r.headers {
            h.update((hd.key.len() as i32).to_be_bytes());
            h.update(&hd.key);
            match &hd.value {
                Some(v) => {
                    h.update((v.len() as i32).to_be_bytes());
                    h.update(v);
                }
                None => h.update((-1i32).to_be_bytes()),
            }
        }
        self.records += 1;
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    /// `sha256:` and the hex digest.
    pub fn finish(self) -> String {
        format!("sha256:{}", hex(&self.hash.finalize()))
    }
}

/// The topic's digest: SHA-256 over each partition's number (u32 BE) and
/// digest text, in partition order.
pub fn topic_digest<'a>(partitions: impl IntoIterator<Item = (u32, &'a str)>) -> String {
    let mut h = Sha256::new();
    for (p, d) in partitions {
        h.update(p.to_be_bytes());
        h.update(d.as_bytes());
    }
    format!("sha256:{}", hex(&h.finalize()))
}

pub fn hex(b: &[u8]) -> String {
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub version: String,
    pub commit: String,
}

impl Tool {
    pub fn this() -> Self {
        Self {
            name: "kafscale".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            commit: env!("KAFSCALE_COMMIT").into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceEvidence {
    /// Where the segments are: `s3://bucket at endpoint` or a directory.
    pub store: String,
    pub namespace: String,
    pub topic: String,
    pub topic_id: String,
    /// Where the committed segment list came from (`etcd`, `embedded`,
    /// `broker REST at ...`).
    pub catalog: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEvidence {
    /// The requested time, RFC 3339, for a cut by time.
    pub to: Option<String>,
    pub to_ms: Option<i64>,
    /// Partition -> cut offset, for a cut by offset.
    pub to_offsets: Option<BTreeMap<String, i64>>,
    /// The rule, in words.
    pub rule: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetAt {
    pub offset: i64,
    pub timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionEvidence {
    pub partition: u32,
    /// The original partition's log start and high watermark when read.
    pub source_log_start: i64,
    pub source_high_watermark: i64,
    /// The restored partition ends before this offset (its high watermark).
    pub cut_offset: i64,
    pub last_kept: Option<OffsetAt>,
    pub first_excluded: Option<OffsetAt>,
    /// Records after the cut whose timestamp is not later than the
    /// requested time (out-of-order CreateTime), and the first of them.
    pub late_records: u64,
    pub late_offsets: Vec<i64>,
    /// Batches the cut fell inside, written anew.
    pub split_batches: u32,
    /// Transactions open at the cut, (producer id, first offset): excluded
    /// from the restored read_committed view as if aborted.
    pub open_transactions: Vec<(i64, i64)>,
    /// Records (not control records) in [log start, cut), read from the
    /// source segments, and their digest.
    pub expected_records: u64,
    pub source_digest: String,
    /// The same, read back from the target.
    pub restored_records: Option<u64>,
    pub target_digest: Option<String>,
    /// The restored segments' object keys, in offset order.
    pub target_segments: Vec<String>,
    /// With the log rebuilt from the bucket alone: the last segment, which
    /// may hold records that were never acknowledged.
    pub unconfirmed_last_segment: Option<String>,
    /// Restored into another Kafka cluster: what was produced there
    /// (`restored_records` and `target_digest` are then its read-back,
    /// digested without offsets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaPartitionEvidence>,
}

/// One partition restored into another Kafka cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaPartitionEvidence {
    /// The committed records of [log start, cut) in order (what a
    /// read_committed consumer of the restored log sees), digested without
    /// offsets, from the source segments.
    pub records: u64,
    pub digest: String,
    /// Batches this run produced.
    pub produced_batches: u64,
    /// Records an interrupted earlier run had already produced (checked to
    /// be this restore's first records; not produced again).
    pub resumed_after: u64,
    /// The target partition's offsets holding the restore: [start, end).
    pub target_start: i64,
    pub target_end: i64,
    /// Transactions left out, (producer id, first offset, last offset):
    /// aborted ones, and those open at the cut.
    pub excluded_transactions: Vec<(i64, i64, i64)>,
}

/// `--groups`: consumer group offsets set on the restored topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupsEvidence {
    /// The `--groups` regular expression.
    pub pattern: String,
    /// The history was replayed up to this moment (T; now for a cut by
    /// offset), RFC 3339.
    pub as_of: String,
    /// The history's earliest record (RFC 3339), if it has any: before it,
    /// where groups stood is not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_from: Option<String>,
    /// Offset history records read (of every group), from how many
    /// segments of `__kafscale_offsets` (listed in `objects`).
    pub history_records: u64,
    pub history_segments: u64,
    pub offsets: Vec<GroupOffsetEvidence>,
}

/// One group's offset on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffsetEvidence {
    pub group: String,
    pub partition: u32,
    /// The offset the group had committed on the original topic at the
    /// moment, and when it committed it (RFC 3339).
    pub committed_offset: i64,
    pub committed_at: String,
    /// What the restored topic got: the committed offset, at most the cut
    /// (into Kafka: the target's offset of the first record at or after
    /// it).
    pub restored_offset: i64,
    /// The committed offset was past the cut.
    pub clamped: bool,
    /// What the target answered when asked for it afterwards.
    pub read_back: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEvidence {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub lock_mode: Option<String>,
    pub lock_retain_until: Option<String>,
    /// The S3 version read, in a versioned bucket (object lock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// The segment's footer CRC32C and every batch CRC were checked.
    pub crc_verified: bool,
    /// `copied` (whole, server-side), `cut` (read, written anew up to the
    /// cut), `scanned` (after the cut, read for late records), `produced`
    /// (into Kafka) or `offset history` (replayed for `--groups`).
    pub use_: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetEvidence {
    /// `spine`, or `kafka` (another Kafka cluster).
    pub kind: String,
    pub topic: String,
    pub store: String,
    /// How the restored records were read back for the digest.
    pub read_back: String,
    /// A drill's topic, removed after it was verified (its objects are
    /// gone; `restore verify` recomputes the source side only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub temporary: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    pub start: String,
    pub end: String,
    pub ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
    /// Controls the check gives evidence for (it supports them; whether they
    /// are met is the auditor's call).
    pub supports: Vec<String>,
}

/// Everything a restore did and found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub format: String,
    pub tool: Tool,
    pub operator: String,
    pub trigger: String,
    pub source: SourceEvidence,
    pub request: RequestEvidence,
    pub target: TargetEvidence,
    pub partitions: Vec<PartitionEvidence>,
    pub objects: Vec<ObjectEvidence>,
    pub expected_records: u64,
    pub restored_records: Option<u64>,
    pub source_digest: String,
    pub target_digest: Option<String>,
    pub phases: Vec<Phase>,
    /// From the restore's start to the restored topic read back, ms.
    pub rto_ms: i64,
    /// From the restore's start until the restored topic was served (its
    /// consumers could read it), ms; with `--serve-first`, before its
    /// copied segments were verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_ms: Option<i64>,
    pub checks: Vec<Check>,
    pub passed: bool,
    /// With `--groups`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<GroupsEvidence>,
}

impl Report {
    /// The canonical JSON of RFC 8785 for this report: keys sorted, no
    /// whitespace, serde_json's string escapes (which are RFC 8785's).
    /// Holds only strings, integers, booleans and null, whose canonical
    /// forms need no number formatting, and ASCII keys, where sorting by
    /// UTF-16 code units and by bytes agree.
    pub fn canonical_json(&self) -> Vec<u8> {
        // Value's maps are BTreeMaps (serde_json without preserve_order):
        // serialising one writes its keys sorted.
        let v = serde_json::to_value(self).unwrap_or_default();
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// A page for people: the same facts, as tables.
    pub fn to_html(&self) -> String {
        let e = html_escape;
        let mut h = String::new();
        let verdict = if self.passed { "PASSED" } else { "FAILED" };
        let _ = write!(
            h,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Restore of {t}: {verdict}</title>\
             <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}\
             td,th{{border:1px solid #999;padding:2px 6px;text-align:left}}.ok{{color:#070}}.bad{{color:#b00}}</style></head><body>\
             <h1>Restore of {t} into {target}: <span class=\"{cls}\">{verdict}</span></h1>",
            t = e(&self.source.topic),
            target = e(&self.target.topic),
            cls = if self.passed { "ok" } else { "bad" },
        );
        let rows = [
            ("Rule", self.request.rule.clone()),
            ("Operator", self.operator.clone()),
            ("Trigger", self.trigger.clone()),
            (
                "Source",
                format!("{} namespace {}", self.source.store, self.source.namespace),
            ),
            ("Segment list from", self.source.catalog.clone()),
            ("Read back", self.target.read_back.clone()),
            (
                "Records expected / restored",
                format!(
                    "{} / {}",
                    self.expected_records,
                    self.restored_records.map_or("-".into(), |n| n.to_string())
                ),
            ),
            ("Source digest", self.source_digest.clone()),
            (
                "Target digest",
                self.target_digest.clone().unwrap_or_else(|| "-".into()),
            ),
            ("RTO", format!("{} ms", self.rto_ms)),
            (
                "Served after",
                self.served_ms.map_or("-".into(), |ms| format!("{ms} ms")),
            ),
            (
                "Tool",
                format!(
                    "{} {} ({})",
                    self.tool.name, self.tool.version, self.tool.commit
                ),
            ),
        ];
        h.push_str("<table>");
        for (k, v) in rows {
            let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", e(k), e(&v));
        }
        h.push_str("</table><h2>Checks</h2><table><tr><th>Check</th><th>Result</th><th>Detail</th><th>Supports</th></tr>");
        for c in &self.checks {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
                e(&c.name),
                if c.passed { "ok" } else { "bad" },
                if c.passed { "pass" } else { "FAIL" },
                e(&c.detail),
                e(&c.supports.join("; "))
            );
        }
        h.push_str("</table><h2>Partitions</h2><table><tr><th>Partition</th><th>Cut offset</th><th>Last kept</th><th>First excluded</th><th>Late records</th><th>Split batches</th><th>Open transactions</th><th>Records</th><th>Digest matches</th></tr>");
        let at = |a: &Option<OffsetAt>| {
            a.as_ref().map_or("-".into(), |a| {
                format!("{} at {}", a.offset, format_unix_ms(a.timestamp))
            })
        };
        for p in &self.partitions {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td></tr>",
                p.partition,
                p.cut_offset,
                e(&at(&p.last_kept)),
                e(&at(&p.first_excluded)),
                p.late_records,
                p.split_batches,
                p.open_transactions.len(),
                p.expected_records,
                p.restored_records.map_or("-".into(), |n| n.to_string()),
                match &p.target_digest {
                    Some(d) if *d == p.source_digest => "yes",
                    Some(_) => "NO",
                    None => "-",
                }
            );
        }
        if let Some(g) = &self.groups {
            let _ = write!(
                h,
                "</table><h2>Consumer group offsets</h2><p>Groups matching <code>{}</code> as of {}, replayed from {} records in {} segments of the offset history.</p>\
                 <table><tr><th>Group</th><th>Partition</th><th>Committed</th><th>Committed at</th><th>Restored</th><th>Clamped to the cut</th><th>Read back</th></tr>",
                e(&g.pattern),
                e(&g.as_of),
                g.history_records,
                g.history_segments
            );
            for o in &g.offsets {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    e(&o.group),
                    o.partition,
                    o.committed_offset,
                    e(&o.committed_at),
                    o.restored_offset,
                    if o.clamped { "yes" } else { "no" },
                    o.read_back.map_or("-".into(), |n| n.to_string())
                );
            }
        }
        h.push_str("</table><h2>Phases</h2><table><tr><th>Phase</th><th>Start</th><th>End</th><th>ms</th></tr>");
        for ph in &self.phases {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e(&ph.name),
                e(&ph.start),
                e(&ph.end),
                ph.ms
            );
        }
        h.push_str("</table><h2>Source objects</h2><table><tr><th>Key</th><th>Size</th><th>ETag</th><th>Lock</th><th>CRC verified</th><th>Use</th></tr>");
        for o in &self.objects {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e(&o.key),
                o.size,
                e(&o.etag),
                e(&match (&o.lock_mode, &o.lock_retain_until) {
                    (Some(m), Some(u)) => format!("{m} until {u}"),
                    (Some(m), None) => m.clone(),
                    _ => "none".into(),
                }),
                if o.crc_verified { "yes" } else { "no" },
                e(&o.use_)
            );
        }
        h.push_str("</table></body></html>\n");
        h
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafscale_codec::records::Header;

    #[test]
    fn the_digest_covers_every_field_and_null_differs_from_empty() {
        let rec = |key: Option<&'static [u8]>, hv: Option<&'static [u8]>| Record {
            offset: 7,
            timestamp: 1_000,
            key: key.map(Bytes::from_static),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![Header {
                key: Bytes::from_static(b"h"),
                value: hv.map(Bytes::from_static),
            }],
        };
        let digest = |r: &Record| {
            let mut d = ContentDigest::default();
            d.add(r);
            d.finish()
        };
        let base = digest(&rec(Some(b"k"), Some(b"x")));
        assert!(
            base.starts_with("sha256:") && base.len() == 7 + 64,
            "{base}"
        );
        assert_ne!(base, digest(&rec(None, Some(b"x"))));
        assert_ne!(
            digest(&rec(Some(b""), Some(b"x"))),
            digest(&rec(None, Some(b"x")))
        );
        assert_ne!(base, digest(&rec(Some(b"k"), None)));
        let mut later = rec(Some(b"k"), Some(b"x"));
        later.timestamp += 1;
        assert_ne!(base, digest(&later));
        assert_eq!(base, digest(&rec(Some(b"k"), Some(b"x"))));
    }

    #[test]
    fn canonical_json_has_sorted_keys_and_no_whitespace() {
        #[derive(Serialize)]
        struct T {
            zeta: i64,
            alpha: &'static str,
            mid: Option<bool>,
        }
        let v = serde_json::to_value(T {
            zeta: -3,
            alpha: "a\u{1}\"é/",
            mid: None,
        })
        .unwrap();
        let out = String::from_utf8(serde_json::to_vec(&v).unwrap()).unwrap();
        // RFC 8785: sorted keys, control characters as \u00xx (lowercase),
        // '/' and non-ASCII as they are.
        assert_eq!(out, r#"{"alpha":"a\u0001\"é/","mid":null,"zeta":-3}"#);
    }
}
