//! Broker-wide counters, exported in Prometheus text format on /metrics.
//! Relaxed atomics: each shard adds, the HTTP handler reads.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Buckets per power of two: about 4.4% apart.
const PER_OCTAVE: f64 = 16.0;
const BUCKETS: usize = 512;

/// A lock-free latency histogram: buckets at sixteenth powers of two of a
/// microsecond (about 4.4% apart), from 1 us to over an hour.
#[derive(Debug)]
pub struct Latency {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Latency {
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().max(1) as f64;
        let i = ((us.log2() * PER_OCTAVE).ceil() as usize).min(BUCKETS - 1);
        self.buckets[i].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(us as u64, Relaxed);
    }

    /// Upper bound of the bucket holding quantile `q`, in seconds.
    pub fn quantile(&self, q: f64) -> f64 {
        let total = self.count.load(Relaxed);
        if total == 0 {
            return 0.0;
        }
        let want = (q * total as f64).ceil() as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Relaxed);
            if seen >= want {
                return 2f64.powf(i as f64 / PER_OCTAVE) / 1e6;
            }
        }
        2f64.powf((BUCKETS - 1) as f64 / PER_OCTAVE) / 1e6
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} summary");
        for q in [0.5, 0.9, 0.99, 0.999] {
            let _ = writeln!(out, "{name}{{quantile=\"{q}\"}} {:.6}", self.quantile(q));
        }
        let _ = writeln!(
            out,
            "{name}_sum {:.6}",
            self.sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {}", self.count.load(Relaxed));
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub segment_put: Latency,
    pub commit: Latency,
    pub flush: Latency,
    /// How long a segment that fell due by age waited for the flusher.
    pub flush_lateness: Latency,
    /// A produce request in the broker: from its frame being read to its
    /// response being ready (acks=1/-1).
    pub produce: Latency,
    pub connections_total: AtomicU64,
    pub connections_open: AtomicU64,
    /// Connections closed at once for a connection limit.
    pub connections_refused: AtomicU64,
    /// SASL authentications (and re-authentications) that succeeded, and
    /// those that failed (wrong credentials, bad messages, wrong order).
    pub sasl_authentications: AtomicU64,
    pub sasl_failures: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_failures: AtomicU64,
    /// Connections closed because their client took nothing of an answer
    /// within --frame-read-timeout-ms.
    pub answers_unread: AtomicU64,
    pub requests_total: AtomicU64,
    pub produce_records_bytes: AtomicU64,
    pub produce_errors: AtomicU64,
    pub fetch_bytes: AtomicU64,
    pub segments_committed: AtomicU64,
    pub segment_bytes_committed: AtomicU64,
    pub flush_micros_total: AtomicU64,
    pub flushes: AtomicU64,
    pub upload_bytes: AtomicU64,
    pub upload_errors: AtomicU64,
    pub commit_errors: AtomicU64,
    pub store_read_bytes: AtomicU64,
    pub bad_frames: AtomicU64,
    pub orphans_found: AtomicU64,
    /// Large buffers (>= 64 KiB: request frames, arenas) taken from a
    /// shard's pool, and those that had to be allocated.
    pub buffers_reused: AtomicU64,
    pub buffers_allocated: AtomicU64,
    /// 1 once the broker is draining to stop (SIGTERM).
    pub draining: AtomicU64,
    /// Mirror jobs' runners on this broker.
    pub mirror: super::mirror::MirrorRegistry,
}

impl Metrics {
    pub fn record_flush(&self, segments: usize, bytes: usize, took: Duration) {
        self.segments_committed.fetch_add(segments as u64, Relaxed);
        self.segment_bytes_committed
            .fetch_add(bytes as u64, Relaxed);
        self.flushes.fetch_add(1, Relaxed);
        self.flush_micros_total
            .fetch_add(took.as_micros() as u64, Relaxed);
        self.flush.record(took);
    }

    pub fn add_upload(&self, bytes: usize) {
        self.upload_bytes.fetch_add(bytes as u64, Relaxed);
    }

    pub fn add_store_read(&self, bytes: usize) {
        self.store_read_bytes.fetch_add(bytes as u64, Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let rows: [(&str, &str, &str, &AtomicU64); 24] = [
            (
                "kafscale_orphan_objects_total",
                "counter",
                "Segment objects found uploaded but never committed.",
                &self.orphans_found,
            ),
            (
                "kafscale_connections_total",
                "counter",
                "Kafka connections accepted.",
                &self.connections_total,
            ),
            (
                "kafscale_connections_open",
                "gauge",
                "Kafka connections open.",
                &self.connections_open,
            ),
            (
                "kafscale_connections_refused_total",
                "counter",
                "Kafka connections closed at once: over --max-connections or --max-connections-per-ip.",
                &self.connections_refused,
            ),
            (
                "kafscale_sasl_authentications_total",
                "counter",
                "SASL authentications and re-authentications that succeeded.",
                &self.sasl_authentications,
            ),
            (
                "kafscale_sasl_failures_total",
                "counter",
                "SASL authentications that failed: wrong credentials, unknown mechanism, requests out of order.",
                &self.sasl_failures,
            ),
            (
                "kafscale_tls_failures_total",
                "counter",
                "TLS handshakes that failed or did not finish within --frame-read-timeout-ms.",
                &self.tls_failures,
            ),
            (
                "kafscale_connections_unread_closed_total",
                "counter",
                "Kafka connections closed because the client took nothing of an answer within --frame-read-timeout-ms.",
                &self.answers_unread,
            ),
            (
                "kafscale_draining",
                "gauge",
                "1 while the broker drains to stop: produce refused, open segments flushed.",
                &self.draining,
            ),
            (
                "kafscale_requests_total",
                "counter",
                "Kafka requests received.",
                &self.requests_total,
            ),
            (
                "kafscale_produce_bytes_total",
                "counter",
                "Record batch bytes accepted by produce.",
                &self.produce_records_bytes,
            ),
            (
                "kafscale_produce_errors_total",
                "counter",
                "Produce partitions answered with an error.",
                &self.produce_errors,
            ),
            (
                "kafscale_fetch_bytes_total",
                "counter",
                "Record batch bytes returned by fetch.",
                &self.fetch_bytes,
            ),
            (
                "kafscale_segments_committed_total",
                "counter",
                "Segments uploaded and committed.",
                &self.segments_committed,
            ),
            (
                "kafscale_segment_bytes_committed_total",
                "counter",
                "Bytes of committed segments.",
                &self.segment_bytes_committed,
            ),
            (
                "kafscale_flushes_total",
                "counter",
                "Group-commit flushes.",
                &self.flushes,
            ),
            (
                "kafscale_flush_seconds_total",
                "counter",
                "Time spent in flushes (upload + commit), microseconds.",
                &self.flush_micros_total,
            ),
            (
                "kafscale_upload_bytes_total",
                "counter",
                "Bytes written to the object store.",
                &self.upload_bytes,
            ),
            (
                "kafscale_upload_errors_total",
                "counter",
                "Failed segment uploads.",
                &self.upload_errors,
            ),
            (
                "kafscale_commit_errors_total",
                "counter",
                "Failed metadata commits.",
                &self.commit_errors,
            ),
            (
                "kafscale_store_read_bytes_total",
                "counter",
                "Bytes read from the object store for fetches.",
                &self.store_read_bytes,
            ),
            (
                "kafscale_bad_frames_total",
                "counter",
                "Connections closed for malformed or oversized frames.",
                &self.bad_frames,
            ),
            (
                "kafscale_buffers_reused_total",
                "counter",
                "Large buffers (request frames, segment arenas) reused from a shard's pool.",
                &self.buffers_reused,
            ),
            (
                "kafscale_buffers_allocated_total",
                "counter",
                "Large buffers the pool could not supply (newly allocated).",
                &self.buffers_allocated,
            ),
        ];
        for (name, kind, help, v) in rows {
            let value = v.load(Relaxed);
            if name == "kafscale_flush_seconds_total" {
                let _ = writeln!(
                    out,
                    "# HELP {name} Time spent in flushes (upload + commit).\n# TYPE {name} {kind}\n{name} {}",
                    value as f64 / 1e6
                );
            } else {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
                );
            }
        }
        self.segment_put.render(
            &mut out,
            "kafscale_segment_put_seconds",
            "Object store PUT of one .kfs segment (with retries).",
        );
        self.commit.render(
            &mut out,
            "kafscale_commit_seconds",
            "Metadata commit of one flush.",
        );
        self.flush.render(
            &mut out,
            "kafscale_flush_seconds",
            "One flush: uploads plus commit.",
        );
        self.flush_lateness.render(
            &mut out,
            "kafscale_flush_lateness_seconds",
            "How long a segment due by age waited past its deadline to be sealed.",
        );
        self.produce.render(
            &mut out,
            "kafscale_produce_seconds",
            "A produce request (acks=1/-1) from its frame being read to its response being ready.",
        );
        self.mirror.render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_one_bucket_of_the_truth() {
        let h = Latency::default();
        assert_eq!(h.quantile(0.99), 0.0, "empty");
        // 1..=1000 ms, once each: the true p50 is 500 ms, p99 990 ms.
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        for (q, truth) in [(0.5, 0.500), (0.9, 0.900), (0.99, 0.990)] {
            let got = h.quantile(q);
            // An upper bound, at most one bucket (2^(1/16), 4.4%) above.
            assert!(got >= truth, "p{q}: {got} < {truth}");
            assert!(
                got <= truth * 2f64.powf(1.0 / PER_OCTAVE) * 1.0001,
                "p{q}: {got} vs {truth}"
            );
        }
        // Beyond the last bucket: clamped, not out of bounds.
        h.record(Duration::from_secs(100 * 3600));
        assert!(h.quantile(1.0) > 3600.0);
    }
}
