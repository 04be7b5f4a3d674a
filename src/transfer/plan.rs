//! Part sizing and part layouts: how an object is cut into parts on upload, and how a download
//! recovers the same boundaries to verify a composite checksum.
//!
//! Known sizes use `max(configured, ceil(size / 10 000))` (floor 5 MiB). Streams of unknown
//! length double their part size every [`GROWTH_EVERY`] parts (capped at 5 GiB), so 10 000 parts
//! of a 5 MiB start cover more than 5 TiB. The layout is recorded in the object's metadata so a
//! reader can cut the same parts again.

use crate::store::ByteRange;
pub use crate::store::limits::MAX_PARTS;
use crate::store::limits::{MAX_PART_SIZE, MIN_PART_SIZE};

/// Streams double their part size after this many parts.
pub const GROWTH_EVERY: u64 = 900;
/// Metadata key recording the layout (`<first part size>:<growth interval or 0>`).
pub const LAYOUT_META: &str = "barmans3-layout";

/// Part size for an object of known size.
pub fn part_size_for(size: u64, configured: u64) -> u64 {
    configured
        .max(size.div_ceil(MAX_PARTS))
        .clamp(MIN_PART_SIZE, MAX_PART_SIZE)
}

/// Size of the 0-based part `index` of a layout.
pub fn part_size_at(first: u64, growth_every: u64, index: u64) -> u64 {
    if growth_every == 0 {
        return first;
    }
    let doublings = (index / growth_every).min(20) as u32;
    first
        .saturating_mul(1u64 << doublings)
        .min(MAX_PART_SIZE)
        .max(first)
}

/// The parts of an object of `size` bytes under a layout. A zero-byte object has no parts.
pub fn layout(size: u64, first: u64, growth_every: u64) -> Vec<ByteRange> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while start < size {
        let len = part_size_at(first, growth_every, i).max(1);
        let end = (start + len).min(size);
        out.push(ByteRange { start, end });
        start = end;
        i += 1;
    }
    out
}

/// Encodes a layout for [`LAYOUT_META`].
pub fn encode_layout(first: u64, growth_every: u64) -> String {
    format!("{first}:{growth_every}")
}

/// Decodes [`LAYOUT_META`].
pub fn decode_layout(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once(':')?;
    let first: u64 = a.parse().ok()?;
    (first > 0).then_some(())?;
    Some((first, b.parse().ok()?))
}

/// Cuts each range into pieces of at most `max` bytes, remembering which range each came from.
pub fn split(ranges: &[ByteRange], max: u64) -> Vec<(usize, ByteRange)> {
    let max = max.max(1);
    let mut out = Vec::new();
    for (i, r) in ranges.iter().enumerate() {
        let mut s = r.start;
        while s < r.end {
            // `max` may be u64::MAX (one piece per range): saturate rather than wrap.
            let e = s.saturating_add(max).min(r.end);
            out.push((i, ByteRange { start: s, end: e }));
            s = e;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_size_parts_respect_floor_and_limit() {
        assert_eq!(part_size_for(1, 1), MIN_PART_SIZE);
        assert_eq!(part_size_for(100 << 20, 8 << 20), 8 << 20);
        let huge = 4u64 << 40;
        let p = part_size_for(huge, 8 << 20);
        assert!(huge.div_ceil(p) <= MAX_PARTS);
    }

    #[test]
    fn streams_cover_five_tib_in_ten_thousand_parts() {
        let total: u64 = (0..MAX_PARTS)
            .map(|i| part_size_at(MIN_PART_SIZE, GROWTH_EVERY, i))
            .sum();
        assert!(total >= 5u64 << 40, "{total}");
        assert!(
            (0..MAX_PARTS).all(|i| part_size_at(MIN_PART_SIZE, GROWTH_EVERY, i) <= MAX_PART_SIZE)
        );
    }

    #[test]
    fn layout_covers_exactly() {
        assert!(layout(0, 5, 0).is_empty());
        let l = layout(23, 5, 2);
        let lens: Vec<_> = l.iter().map(|r| r.len()).collect();
        assert_eq!(lens, [5, 5, 10, 3]);
        assert_eq!(decode_layout(&encode_layout(5, 900)), Some((5, 900)));
        assert_eq!(decode_layout("0:1"), None);
    }

    #[test]
    fn split_keeps_origin() {
        let l = layout(12, 5, 0);
        let s = split(&l, 3);
        assert_eq!(s.len(), 5, "5 → 3+2, 5 → 3+2, 2 → 2");
        assert_eq!(s[2].0, 1);
        assert_eq!(s.iter().map(|(_, r)| r.len()).sum::<u64>(), 12);
    }

    #[test]
    fn an_unbounded_split_keeps_each_range_whole() {
        // The parts of an object uploaded with Content-MD5 are fetched one GET each.
        let l = layout(12, 5, 0);
        let s = split(&l, u64::MAX);
        let want: Vec<(usize, ByteRange)> = l.iter().copied().enumerate().collect();
        assert_eq!(s, want);
    }
}
