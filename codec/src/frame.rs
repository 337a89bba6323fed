//! Kafka framing: every request and response is a 4-byte big-endian length
//! followed by that many bytes.
//!
//! ```text
//! +----------------+---------------------------+
//! | length (i32 BE)| length bytes: header+body |
//! +----------------+---------------------------+
//! ```
//!
//! A partial frame is `Ok(None)` ("need more"). The length is checked against the
//! configured maximum as soon as its 4 bytes arrive, so an oversized frame is
//! refused before any of its body is buffered.

use bytes::{Buf, Bytes, BytesMut};

/// Kafka's default `socket.request.max.bytes` is 100 MiB; ours too.
pub const DEFAULT_MAX_FRAME: usize = 100 * 1024 * 1024;

/// Why a frame was refused. The connection should be closed after either.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("frame length {length} is negative")]
    NegativeLength { length: i32 },
}

/// Splits length-prefixed frames off a receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameDecoder {
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame }
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// The body length of the next frame once its prefix is buffered, checked
    /// against the maximum. Callers reserve this much memory before reading on.
    pub fn peek_len(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = buf.get(..4) else {
            return Ok(None);
        };
        let length = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let size = usize::try_from(length).map_err(|_| FrameError::NegativeLength { length })?;
        if size > self.max_frame {
            return Err(FrameError::TooLarge {
                size,
                max: self.max_frame,
            });
        }
        Ok(Some(size))
    }

    /// Splits one whole frame (without its length prefix) off the front of `buf`.
    /// The returned `Bytes` shares `buf`'s allocation: no copy.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(size) = self.peek_len(buf)? else {
            return Ok(None);
        };
        if buf.len() < 4 + size {
            buf.reserve(4 + size - buf.len());
            return Ok(None);
        }
        buf.advance(4);
        Ok(Some(buf.split_to(size).freeze()))
    }
}

/// Writes a frame's length prefix in front of a body encoded after it.
/// Use as: `let at = begin_frame(&mut out); ...encode...; end_frame(&mut out, at);`
pub fn begin_frame(out: &mut BytesMut) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    at
}

/// Completes the frame started at `at` with `extra` bytes that will follow
/// separately (for example record data sent from its own buffer without a copy).
pub fn end_frame(out: &mut BytesMut, at: usize, extra: usize) {
    let len = (out.len() - at - 4 + extra) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_frames_need_more() {
        let d = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&[0u8, 0, 0][..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&[5, 1, 2]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&[3, 4, 5, 0, 0]);
        assert_eq!(
            d.decode(&mut buf).unwrap().unwrap().as_ref(),
            &[1, 2, 3, 4, 5]
        );
        assert_eq!(&buf[..], &[0, 0]);
    }

    #[test]
    fn oversized_frames_are_refused_from_the_prefix_alone() {
        let d = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&2000i32.to_be_bytes()[..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(FrameError::TooLarge {
                size: 2000,
                max: 1024
            })
        );
        let mut buf = BytesMut::from(&(-1i32).to_be_bytes()[..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(FrameError::NegativeLength { length: -1 })
        );
    }

    #[test]
    fn frame_prefix_is_written_after_the_body() {
        let mut out = BytesMut::new();
        let at = begin_frame(&mut out);
        out.extend_from_slice(b"abc");
        end_frame(&mut out, at, 10);
        assert_eq!(&out[..4], &13i32.to_be_bytes());
    }
}
