//! Hot paths of the codec: validating produced batches and sealing segments.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kafscale_bench::batch_of;
use kafscale_codec::batch::{Batches, RecordBatch};
use kafscale_codec::kfs::SegmentWriter;

const MIB: usize = 1024 * 1024;

fn batch_validate(c: &mut Criterion) {
    let raw = batch_of(MIB, 1024);
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    g.bench_function("parse+crc32c 1MiB", |b| {
        b.iter(|| {
            let batch = RecordBatch::parse(black_box(raw.clone())).unwrap();
            batch.validate().unwrap();
            black_box(batch.last_offset())
        })
    });
    let blob: Bytes = (0..8)
        .flat_map(|_| raw.iter().copied())
        .collect::<Vec<u8>>()
        .into();
    g.throughput(Throughput::Bytes(blob.len() as u64));
    g.bench_function("split+validate 8x1MiB", |b| {
        b.iter(|| {
            Batches::new(black_box(blob.clone()))
                .validated()
                .map(|r| r.unwrap().record_count())
                .sum::<i32>()
        })
    });
    g.finish();
}

fn segment_seal(c: &mut Criterion) {
    let batch = RecordBatch::parse(batch_of(MIB, 1024)).unwrap();
    let n = 8;
    let total = (batch.len() * n) as u64;
    let mut g = c.benchmark_group("segment");
    g.throughput(Throughput::Bytes(total));
    g.bench_function("append+seal 8x1MiB", |b| {
        b.iter(|| {
            let mut w = SegmentWriter::with_capacity(0, batch.len() * n);
            for _ in 0..n {
                w.append(black_box(&batch)).unwrap();
            }
            black_box(w.seal(0).unwrap().segment.len())
        })
    });
    // The produce path: check every batch's CRC, then copy it in...
    g.bench_function("validate, then append 8x1MiB", |b| {
        b.iter(|| {
            let mut w = SegmentWriter::with_capacity(0, batch.len() * n);
            for _ in 0..n {
                black_box(&batch).validate().unwrap();
                w.append(black_box(&batch)).unwrap();
            }
            black_box(w.seal(0).unwrap().segment.len())
        })
    });
    // ...or check it while copying (one pass over the bytes).
    let eight: Vec<RecordBatch> = (0..n).map(|_| batch.clone()).collect();
    g.bench_function("append_verifying 8x1MiB", |b| {
        b.iter(|| {
            let mut w = SegmentWriter::with_capacity(0, batch.len() * n);
            w.append_verifying(black_box(&eight)).unwrap();
            black_box(w.seal(0).unwrap().segment.len())
        })
    });
    // The floor: copying the same bytes into a fresh buffer.
    g.bench_function("memcpy baseline 8x1MiB", |b| {
        b.iter(|| {
            let mut v = Vec::with_capacity(batch.len() * n + 48);
            for _ in 0..n {
                v.extend_from_slice(black_box(batch.as_bytes()));
            }
            black_box(v.len())
        })
    });
    g.finish();
}

/// Extending a segment's body CRC by one 1 MiB batch: the crc32c crate's
/// combine (zlib's matrix method) next to ours (multiply by x^(8n)).
fn crc_combine(c: &mut Criterion) {
    let len = MIB - 21;
    let mut g = c.benchmark_group("crc32c_combine 1MiB");
    g.bench_function("crc32c crate", |b| {
        b.iter(|| crc32c::crc32c_combine(black_box(0x1234_5678), black_box(0x9abc_def0), len))
    });
    g.bench_function("kafscale_codec::crc", |b| {
        b.iter(|| {
            kafscale_codec::crc::crc32c_combine(black_box(0x1234_5678), black_box(0x9abc_def0), len)
        })
    });
    g.finish();
}

/// What the produce path adds per batch to know its records are what its
/// header says (`RecordBatch::check_records`): a walk of the record
/// framing, after a streamed decompression for compressed batches. 1 MiB of
/// 1 KiB JSON-like records (about 4x compressible); throughput is of the
/// batch as produced (compressed), as the broker receives it.
fn record_check(c: &mut Criterion) {
    use kafscale_codec::batch::{BatchBuilder, Compression};
    let mut g = c.benchmark_group("check_records 1MiB of 1KiB records");
    for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
        let mut b = BatchBuilder::new(0, 1_778_682_180_000).compression(codec);
        let mut i = 0u64;
        while b.records_len() < MIB - 1100 {
            let v = format!(
                "{{\"order\":{i},\"customer\":\"c-{}\",\"items\":[{}],\"note\":\"{}\"}}",
                i % 977,
                (0..20)
                    .map(|k| format!(
                        "{{\"sku\":\"s-{}\",\"qty\":{}}}",
                        (i * 31 + k) % 5003,
                        k % 7
                    ))
                    .collect::<Vec<_>>()
                    .join(","),
                "x".repeat((i % 300) as usize)
            );
            b.push(
                Some(format!("k{}", i % 100).as_bytes()),
                Some(v.as_bytes()),
                &[],
            );
            i += 1;
        }
        let batch = RecordBatch::parse(b.finish()).unwrap();
        g.throughput(Throughput::Bytes(batch.len() as u64));
        g.bench_function(format!("{codec} ({} bytes)", batch.len()), |bch| {
            bch.iter(|| black_box(&batch).check_records().unwrap())
        });
        g.bench_function(format!("{codec}: crc32c for comparison"), |bch| {
            bch.iter(|| black_box(&batch).validate().unwrap())
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    batch_validate,
    segment_seal,
    crc_combine,
    record_check
);
criterion_main!(benches);
