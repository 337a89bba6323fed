//! `kafscale segments inspect`: a segment's header, batches and footer, with
//! a verdict for each check, and for an S3 object its user metadata checked
//! against the segment itself.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafscale_codec::batch::{Batches, Compression};
use kafscale_codec::kfs::{self, FOOTER_LEN, HEADER_LEN, SegmentHeader, SegmentReader};
use kafscale_s3::format_unix_ms;
use serde::Serialize;

use crate::meta::keys::object_meta;

#[derive(Debug, Serialize)]
pub struct BatchReport {
    pub position: usize,
    pub base_offset: i64,
    pub last_offset: i64,
    pub records: i32,
    pub codec: String,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub bytes: usize,
    pub crc_ok: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub source: String,
    pub size: usize,
    pub version: u16,
    pub flags: u16,
    pub base_offset: i64,
    pub message_count: i32,
    pub created_ms: i64,
    pub batches: Vec<BatchReport>,
    pub footer_crc: Option<u32>,
    pub footer_last_offset: Option<i64>,
    /// The object's S3 user metadata (names without `x-amz-meta-`), for
    /// s3:// targets.
    pub object_metadata: Option<BTreeMap<String, String>>,
    /// For s3:// targets: the object lock of the version read (`COMPLIANCE
    /// until 2026-12-31T00:00:00Z`, or `none`) and its version id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_version: Option<String>,
    /// `None` when every check passed; else the first problem, in words.
    pub error: Option<String>,
}

/// Inspects `data` (and the object's S3 user metadata, if given). Header
/// problems end the report early; everything else is reported as far as it
/// can be read, with the first error in `error`.
pub fn inspect(
    source: &str,
    data: Bytes,
    metadata: Option<BTreeMap<String, String>>,
) -> Result<Report, String> {
    let header: SegmentHeader = kfs::parse_header(&data).map_err(|e| format!("{source}: {e}"))?;
    let mut report = Report {
        source: source.to_owned(),
        size: data.len(),
        version: header.version,
        flags: header.flags,
        base_offset: header.base_offset,
        message_count: header.message_count,
        created_ms: header.created_ms,
        batches: Vec::new(),
        footer_crc: None,
        footer_last_offset: None,
        object_metadata: None,
        object_lock: None,
        object_version: None,
        error: None,
    };
    let footer = kfs::parse_footer(&data);
    let body_end = match &footer {
        Ok(f) => {
            report.footer_crc = Some(f.body_crc);
            report.footer_last_offset = Some(f.last_offset);
            data.len() - FOOTER_LEN
        }
        Err(_) => data.len(),
    };
    for batch in Batches::starting_at(data.slice(HEADER_LEN.min(body_end)..body_end), HEADER_LEN) {
        let Ok(b) = batch else { break };
        let position = HEADER_LEN + report.batches.iter().map(|b| b.bytes).sum::<usize>();
        report.batches.push(BatchReport {
            position,
            base_offset: b.base_offset(),
            last_offset: b.last_offset(),
            records: b.record_count(),
            codec: b.compression().map_or_else(
                |bits| format!("reserved({bits})"),
                |c: Compression| c.to_string(),
            ),
            base_timestamp: b.base_timestamp(),
            max_timestamp: b.max_timestamp(),
            producer_id: b.producer_id(),
            bytes: b.len(),
            crc_ok: b.validate().is_ok(),
        });
    }
    if let Err(e) = SegmentReader::open(data) {
        report.error = Some(e.to_string());
    }
    if let Some(m) = metadata {
        if report.error.is_none() {
            report.error = metadata_disagreement(&report, &m);
        }
        report.object_metadata = Some(m);
    }
    Ok(report)
}

/// The first S3 metadata value that differs from what the segment says
/// (metadata a tool would filter by; names absent from `m` are not checked:
/// other writers of the format need not set them).
fn metadata_disagreement(r: &Report, m: &BTreeMap<String, String>) -> Option<String> {
    let min_ts = r.batches.iter().map(|b| b.base_timestamp).min();
    let max_ts = r.batches.iter().map(|b| b.max_timestamp).max();
    let expected = [
        (object_meta::BASE_OFFSET, Some(r.base_offset)),
        (object_meta::LAST_OFFSET, r.footer_last_offset),
        (object_meta::MESSAGE_COUNT, Some(i64::from(r.message_count))),
        (object_meta::CREATED_MS, Some(r.created_ms)),
        (object_meta::MIN_TIMESTAMP, min_ts),
        (object_meta::MAX_TIMESTAMP, max_ts),
    ];
    expected.into_iter().find_map(|(name, want)| {
        let got = m.get(name)?;
        let want = want?;
        (got.parse::<i64>().ok() != Some(want))
            .then(|| format!("S3 metadata x-amz-meta-{name} is {got:?}, the segment says {want}"))
    })
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "segment  {} ({} bytes)", self.source, self.size)?;
        writeln!(
            f,
            "header   version {}  flags {}  base offset {}  messages {}  created {}",
            self.version,
            self.flags,
            self.base_offset,
            self.message_count,
            format_unix_ms(self.created_ms)
        )?;
        writeln!(
            f,
            "{:>10} {:>12} {:>12} {:>8} {:>7} {:>26} {:>26} {:>10} {:>9} crc",
            "position",
            "base",
            "last",
            "records",
            "codec",
            "base timestamp",
            "max timestamp",
            "producer",
            "bytes",
        )?;
        for b in &self.batches {
            writeln!(
                f,
                "{:>10} {:>12} {:>12} {:>8} {:>7} {:>26} {:>26} {:>10} {:>9} {}",
                b.position,
                b.base_offset,
                b.last_offset,
                b.records,
                b.codec,
                format_unix_ms(b.base_timestamp),
                format_unix_ms(b.max_timestamp),
                b.producer_id,
                b.bytes,
                if b.crc_ok { "ok" } else { "BAD" }
            )?;
        }
        match (self.footer_crc, self.footer_last_offset) {
            (Some(crc), Some(last)) => {
                writeln!(f, "footer   body crc32c {crc:#010x}  last offset {last}")?
            }
            _ => writeln!(f, "footer   missing or damaged")?,
        }
        if let Some(m) = &self.object_metadata {
            let pairs: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let shown = if pairs.is_empty() {
                "(none)".to_owned()
            } else {
                pairs.join("  ")
            };
            writeln!(f, "s3 meta  {shown}")?;
        }
        if let Some(lock) = &self.object_lock {
            match &self.object_version {
                Some(v) => writeln!(f, "s3 lock  {lock} (version {v})")?,
                None => writeln!(f, "s3 lock  {lock}")?,
            }
        }
        match &self.error {
            None => write!(
                f,
                "verdict  ok: {} batches, every check passed",
                self.batches.len()
            ),
            Some(e) => write!(f, "verdict  CORRUPT: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafscale_codec::batch::{BatchBuilder, RecordBatch};
    use kafscale_codec::kfs::SegmentWriter;

    #[test]
    fn reports_batches_and_flags_corruption() {
        let mut w = SegmentWriter::new(10);
        for _ in 0..3 {
            let mut b = BatchBuilder::new(0, 1_778_682_180_000);
            b.push(None, Some(b"v"), &[]);
            w.append(&RecordBatch::parse(b.finish()).unwrap()).unwrap();
        }
        let seg = w.seal(1_778_682_180_500).unwrap().segment.to_bytes();
        let ok = inspect("x.kfs", seg.clone(), None).unwrap();
        assert_eq!(ok.error, None);
        assert_eq!(ok.batches.len(), 3);
        assert_eq!(ok.batches[2].base_offset, 12);
        assert!(ok.to_string().contains("2026-05-13T14:23:00.500Z"), "{ok}");

        let mut bad = seg.to_vec();
        bad[HEADER_LEN + 65] ^= 1;
        let r = inspect("x.kfs", Bytes::from(bad), None).unwrap();
        assert!(!r.batches[0].crc_ok && r.batches[1].crc_ok);
        assert!(
            r.error.as_deref().unwrap().contains("CRC32C"),
            "{:?}",
            r.error
        );

        let err = inspect("x.kfs", Bytes::from_static(b"nope"), None).unwrap_err();
        assert!(err.contains("shorter than header"), "{err}");
    }

    #[test]
    fn s3_metadata_is_checked_against_the_segment() {
        let mut w = SegmentWriter::new(10);
        for ts in [1_000, 3_000] {
            let mut b = BatchBuilder::new(0, ts);
            b.push(None, Some(b"v"), &[]);
            w.append(&RecordBatch::parse(b.finish()).unwrap()).unwrap();
        }
        let seg = w.seal(5_000).unwrap().segment.to_bytes();
        let meta = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let right = meta(&[
            ("base-offset", "10"),
            ("last-offset", "11"),
            ("message-count", "2"),
            ("created-ms", "5000"),
            ("min-timestamp", "1000"),
            ("max-timestamp", "3000"),
            ("something-else", "x"),
        ]);
        let r = inspect("s3://b/x.kfs", seg.clone(), Some(right)).unwrap();
        assert_eq!(r.error, None);
        assert!(r.to_string().contains("s3 meta  base-offset=10"), "{r}");
        // Absent names are not a problem (other writers need not set them).
        let r = inspect("s3://b/x.kfs", seg.clone(), Some(BTreeMap::new())).unwrap();
        assert_eq!(r.error, None);
        assert!(r.to_string().contains("s3 meta  (none)"), "{r}");
        let wrong = meta(&[("base-offset", "10"), ("max-timestamp", "2999")]);
        let r = inspect("s3://b/x.kfs", seg, Some(wrong)).unwrap();
        assert_eq!(
            r.error.as_deref(),
            Some("S3 metadata x-amz-meta-max-timestamp is \"2999\", the segment says 3000")
        );
    }
}
