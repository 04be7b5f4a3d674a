//! Where plaintext bytes land in an age object: pure arithmetic over the STREAM layout, shared by
//! sealing (ciphertext lengths, the bytes of each multipart part) and opening (which chunks a
//! ranged read needs, the plaintext length of a stored object).
//!
//! An object is `preamble` (header and 16-byte nonce, `payload_start` bytes) followed by chunks
//! of [`CHUNK`] plaintext bytes, each sealed into `CHUNK + TAG` bytes; the last chunk holds 1 to
//! [`CHUNK`] bytes, or none when the whole plaintext is empty.

use std::ops::Range;

/// Plaintext bytes per chunk.
pub const CHUNK: u64 = 64 * 1024;
/// Poly1305 tag bytes per chunk.
pub const TAG: u64 = 16;
/// Bytes of one full sealed chunk.
pub const SEALED_CHUNK: u64 = CHUNK + TAG;

/// Chunks a plaintext of `plain_len` bytes is sealed into (at least one: an empty plaintext is
/// one empty final chunk).
pub fn chunk_count(plain_len: u64) -> u64 {
    plain_len.div_ceil(CHUNK).max(1)
}

/// The fewest bytes before an age payload: the version line (22), the MAC line (48) and the
/// nonce (16); a real header also holds at least one recipient stanza.
pub const MIN_PREAMBLE: u64 = 22 + 48 + 16;

/// Whether an object of `stored_len` bytes can be an age object of `plain_len` plaintext bytes:
/// its preamble would be no shorter than [`MIN_PREAMBLE`] and no longer than a header we accept
/// (`MAX_HEADER_LEN` and the nonce). Pure arithmetic on a listed size, for callers that decide
/// from a listing without reading the header; the header's recipients can change the length,
/// so an exact match is never required.
pub fn could_hold(stored_len: u64, plain_len: u64) -> bool {
    let payload = plain_len.saturating_add(TAG.saturating_mul(chunk_count(plain_len)));
    let max = super::MAX_HEADER_LEN as u64 + 16;
    stored_len
        .checked_sub(payload)
        .is_some_and(|pre| (MIN_PREAMBLE..=max).contains(&pre))
}

/// The geometry of one object: where its payload starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    payload_start: u64,
}

/// The stored bytes a plaintext range needs, and how to cut the plaintext out of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSpan {
    /// The chunks to read and open.
    pub chunks: Range<u64>,
    /// Their bytes in the stored object (for a ranged GET: `bytes=start-(end-1)`).
    pub bytes: Range<u64>,
    /// Whether the last of them is the object's final chunk (opened with the final flag).
    pub ends_object: bool,
    /// Plaintext bytes to drop from the front of the first chunk.
    pub skip: u64,
    /// Plaintext bytes to keep after that.
    pub take: u64,
}

impl Layout {
    /// The layout of an object whose header and nonce take `payload_start` bytes.
    pub fn new(payload_start: u64) -> Self {
        Layout { payload_start }
    }

    /// Bytes before the first chunk (header and nonce).
    pub fn payload_start(&self) -> u64 {
        self.payload_start
    }

    /// The stored length of a plaintext of `plain_len` bytes.
    pub fn sealed_len(&self, plain_len: u64) -> u64 {
        self.payload_start
            .saturating_add(plain_len)
            .saturating_add(TAG.saturating_mul(chunk_count(plain_len)))
    }

    /// The plaintext length of a stored object of `sealed_len` bytes, or `None` when no age
    /// object has that length (shorter than one tag, a final chunk shorter than its tag, or an
    /// empty final chunk after others): the object was truncated or extended.
    pub fn plain_len(&self, sealed_len: u64) -> Option<u64> {
        let payload = sealed_len.checked_sub(self.payload_start)?;
        if payload < TAG {
            return None;
        }
        let chunks = payload.div_ceil(SEALED_CHUNK);
        let last = payload - (chunks - 1) * SEALED_CHUNK;
        if last < TAG || (last == TAG && chunks > 1) {
            return None;
        }
        Some(payload - chunks * TAG)
    }

    /// Where chunk `index` starts in the stored object.
    pub fn chunk_offset(&self, index: u64) -> u64 {
        self.payload_start
            .saturating_add(index.saturating_mul(SEALED_CHUNK))
    }

    /// The stored bytes of a multipart part that holds plaintext `plain` of an object of
    /// `plain_len` plaintext bytes. Parts seal independently only when they hold whole chunks:
    /// `plain.start` must be a multiple of [`CHUNK`], and so must `plain.end` unless it is the
    /// end of the plaintext. The first part also carries the preamble. `None` when the range is
    /// not such a part.
    pub fn sealed_part(&self, plain: Range<u64>, plain_len: u64) -> Option<Range<u64>> {
        let aligned = plain.start.is_multiple_of(CHUNK)
            && (plain.end.is_multiple_of(CHUNK) || plain.end == plain_len);
        if !aligned || plain.start > plain.end || plain.end > plain_len {
            return None;
        }
        let start = match plain.start {
            0 => 0,
            s => self.chunk_offset(s / CHUNK),
        };
        let end = if plain.end == plain_len {
            self.sealed_len(plain_len)
        } else {
            self.chunk_offset(plain.end / CHUNK)
        };
        Some(start..end)
    }

    /// The chunks and stored bytes that plaintext `plain` of an object of `plain_len` plaintext
    /// bytes needs. `None` for an empty range or one past the end.
    pub fn sealed_span(&self, plain: Range<u64>, plain_len: u64) -> Option<SealedSpan> {
        if plain.start >= plain.end || plain.end > plain_len {
            return None;
        }
        let first = plain.start / CHUNK;
        let last = (plain.end - 1) / CHUNK;
        let total = chunk_count(plain_len);
        let ends_object = last + 1 == total;
        let end = if ends_object {
            self.sealed_len(plain_len)
        } else {
            self.chunk_offset(last + 1)
        };
        Some(SealedSpan {
            chunks: first..last + 1,
            bytes: self.chunk_offset(first)..end,
            ends_object,
            skip: plain.start - first * CHUNK,
            take: plain.end - plain.start,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds the plaintext → stored mapping byte by byte, the slow and obvious way.
    fn naive_offset(s: u64, p: u64) -> u64 {
        s + (p / CHUNK) * SEALED_CHUNK + p % CHUNK
    }

    #[test]
    fn lengths_of_the_edge_sizes() {
        let l = Layout::new(200);
        let cases = [
            (0, 200 + 16),
            (1, 200 + 1 + 16),
            (CHUNK - 1, 200 + CHUNK - 1 + 16),
            (CHUNK, 200 + SEALED_CHUNK),
            (CHUNK + 1, 200 + SEALED_CHUNK + 1 + 16),
            (3 * CHUNK, 200 + 3 * SEALED_CHUNK),
        ];
        for (plain, sealed) in cases {
            assert_eq!(l.sealed_len(plain), sealed, "plain {plain}");
            assert_eq!(l.plain_len(sealed), Some(plain), "sealed {sealed}");
        }
    }

    #[test]
    fn a_listed_size_holds_a_plaintext_size_only_within_the_header_bounds() {
        let max = crate::crypt::MAX_HEADER_LEN as u64 + 16;
        let cases = [
            // (stored, plain, holds)
            (MIN_PREAMBLE + 16, 0, true),
            (MIN_PREAMBLE + 15, 0, false),
            (200 + 1 + 16, 1, true),
            (MIN_PREAMBLE + 16, 1, false),
            (10, 10, false), // a plaintext object of the file's size
            (200 + CHUNK + 16, CHUNK, true),
            (200 + CHUNK + 16 + 1 + 16, CHUNK + 1, true), // a second chunk, a second tag
            (MIN_PREAMBLE + CHUNK + 16, CHUNK + 1, false),
            (max + 10 + 16, 10, true),
            (max + 11 + 16, 10, false),
            (u64::MAX, 10, false),
        ];
        for (stored, plain, holds) in cases {
            assert_eq!(could_hold(stored, plain), holds, "{stored} {plain}");
        }
        // Whatever the header's length, what a sealer writes holds its plaintext.
        for pre in [MIN_PREAMBLE, 150, 4000, max] {
            for plain in [0, 1, CHUNK - 1, CHUNK, 5 * CHUNK + 3] {
                assert!(could_hold(Layout::new(pre).sealed_len(plain), plain));
            }
        }
    }

    #[test]
    fn impossible_stored_lengths_are_refused() {
        let l = Layout::new(100);
        // Shorter than the preamble, no tag, a final chunk shorter than its tag, or an empty
        // final chunk after a full one.
        for sealed in [
            0,
            99,
            100,
            115,
            100 + SEALED_CHUNK + 1,
            100 + SEALED_CHUNK + 15,
        ] {
            assert_eq!(l.plain_len(sealed), None, "sealed {sealed}");
        }
        assert_eq!(l.plain_len(100 + SEALED_CHUNK + 16), None);
        assert_eq!(l.plain_len(100 + 16), Some(0));
    }

    #[test]
    fn every_stored_length_maps_back_and_forth() {
        let l = Layout::new(57);
        for plain in (0..4 * CHUNK + 3)
            .step_by(4093)
            .chain([CHUNK * 7, CHUNK * 7 + 1])
        {
            let sealed = l.sealed_len(plain);
            assert_eq!(l.plain_len(sealed), Some(plain));
        }
    }

    #[test]
    fn spans_cover_exactly_the_chunks_a_range_touches() {
        let s = 211;
        let l = Layout::new(s);
        let plain_len = 5 * CHUNK + 1234;
        // A deterministic sweep of ranges: every start/length pair over a grid that hits chunk
        // boundaries from both sides.
        let points: Vec<u64> = (0..=6)
            .flat_map(|c| [c * CHUNK, c * CHUNK + 1, (c * CHUNK).saturating_sub(1)])
            .chain([plain_len - 1, plain_len, 777, 3 * CHUNK + 40_000])
            .filter(|&p| p <= plain_len)
            .collect();
        for &a in &points {
            for &b in &points {
                let span = l.sealed_span(a..b, plain_len);
                if a >= b {
                    assert!(span.is_none());
                    continue;
                }
                let span = span.expect("span");
                assert_eq!(span.chunks.start, a / CHUNK);
                assert_eq!(span.chunks.end, (b - 1) / CHUNK + 1);
                assert_eq!(span.bytes.start, l.chunk_offset(a / CHUNK));
                assert!(span.bytes.start <= naive_offset(s, a));
                assert!(span.bytes.end > naive_offset(s, b - 1));
                assert_eq!(span.ends_object, span.chunks.end == chunk_count(plain_len));
                if span.ends_object {
                    assert_eq!(span.bytes.end, l.sealed_len(plain_len));
                } else {
                    assert_eq!(
                        span.bytes.end - span.bytes.start,
                        (span.chunks.end - span.chunks.start) * SEALED_CHUNK
                    );
                }
                assert_eq!(span.skip, a % CHUNK);
                assert_eq!(span.take, b - a);
            }
        }
        assert!(l.sealed_span(0..plain_len + 1, plain_len).is_none());
    }

    #[test]
    fn random_ranges_map_as_the_byte_by_byte_model_says() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(0x5eed);
        for _ in 0..2000 {
            let s = rng.random_range(60..2000);
            let l = Layout::new(s);
            let plain_len = rng.random_range(1..9 * CHUNK);
            let a = rng.random_range(0..plain_len);
            let b = rng.random_range(a + 1..=plain_len);
            let span = l.sealed_span(a..b, plain_len).expect("span");
            // The span starts at a chunk boundary at or before byte a, ends at one at or after
            // byte b - 1 (or at the object's end), and holds whole chunks in between.
            let first = naive_offset(s, span.chunks.start * CHUNK);
            assert_eq!(span.bytes.start, first);
            assert!(first <= naive_offset(s, a) && naive_offset(s, a) < first + SEALED_CHUNK);
            assert!(span.bytes.end > naive_offset(s, b - 1));
            assert!(span.bytes.end <= l.sealed_len(plain_len));
            assert_eq!(span.skip + span.chunks.start * CHUNK, a);
            assert_eq!(span.take, b - a);
            let n = span.chunks.end - span.chunks.start;
            let len = span.bytes.end - span.bytes.start;
            assert!(len > (n - 1) * SEALED_CHUNK && len <= n * SEALED_CHUNK);
            assert_eq!(l.plain_len(l.sealed_len(plain_len)), Some(plain_len));
        }
    }

    #[test]
    fn parts_of_whole_chunks_tile_the_object() {
        let l = Layout::new(300);
        let part = 3 * CHUNK;
        for plain_len in [0, 1, part, part + 1, 4 * part, 4 * part - 5] {
            let mut next = 0;
            let mut start = 0;
            loop {
                let end = (start + part).min(plain_len);
                let r = l.sealed_part(start..end, plain_len).expect("aligned part");
                assert_eq!(r.start, next, "parts are contiguous");
                next = r.end;
                if end == plain_len {
                    break;
                }
                start = end;
            }
            assert_eq!(next, l.sealed_len(plain_len));
        }
        assert_eq!(l.sealed_part(1..CHUNK, 10 * CHUNK), None);
        assert_eq!(l.sealed_part(0..CHUNK + 1, 10 * CHUNK), None);
        assert_eq!(l.sealed_part(0..CHUNK, CHUNK - 1), None);
    }
}
