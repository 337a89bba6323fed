//! Sans-io codecs for kafscale: bytes in, values out, no runtime.
//!
//! Data flows through this crate in the broker's order:
//!
//! ```text
//! socket bytes --frame--> one request frame (Bytes)
//!              --header--> RequestHeader + body (Bytes, shares the frame)
//!              --batch---> RecordBatch views over the produce records (no copy)
//!              --kfs-----> SegmentWriter: header + batches + footer, plus .index
//! ```
//!
//! Every decoder takes `Bytes` (or `&[u8]`) and returns either a value, `Ok(None)`
//! for "need more input", or a typed error that says where and what was wrong.
//! Nothing here panics on any input; the fuzz targets in `codec/fuzz` check that.
//!
//! ```
//! use bytes::Bytes;
//! use kafscale_codec::batch::{BatchBuilder, RecordBatch};
//! use kafscale_codec::kfs::{SegmentReader, SegmentWriter};
//!
//! let mut builder = BatchBuilder::new(0, 1_700_000_000_000);
//! builder.push(Some(b"key"), Some(b"value"), &[]);
//! let batch = RecordBatch::parse(builder.finish()).unwrap();
//! batch.validate().unwrap();
//!
//! let mut writer = SegmentWriter::new(42);
//! writer.append(&batch).unwrap();
//! let sealed = writer.seal(1_700_000_000_500).unwrap();
//! let segment = SegmentReader::open(sealed.segment.to_bytes()).unwrap();
//! assert_eq!(segment.base_offset(), 42);
//! assert_eq!(segment.last_offset(), 42);
//! ```

pub mod batch;
pub mod crc;
pub mod fetch;
pub mod frame;
pub mod header;
pub mod index;
pub mod kfs;
pub mod produce;
pub mod records;
mod wire;
mod wire_out;

pub use kafka_protocol;
