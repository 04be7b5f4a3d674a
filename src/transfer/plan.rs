//! Part sizing and part layouts: how an object is cut into parts on upload, and how a download
//! recovers the same boundaries to verify a composite checksum.
//!
//! Known sizes use `max(configured, ceil(size / 10 000))` (floor 5 MiB). Streams of unknown
//! length double their part size every [`GROWTH_EVERY`] parts (capped at 5 GiB), so 10 000 parts
//! of a 5 MiB start cover more than 5 TiB. The layout is recorded in the object's metadata so a
//! reader can cut the same parts again.
//!
//! A stream's parts are sized for memory, not for the object: the object a stream becomes does
//! not depend on its part sizes, so the first part is the run's memory budget split over the
//! parts in flight (never more than the configured part size), and as parts grow fewer of them
//! are in flight, so a stream holds at most `max(budget, one part)` whatever its length.

use crate::store::ByteRange;
pub use crate::store::limits::MAX_PARTS;
use crate::store::limits::{MAX_PART_SIZE, MIN_PART_SIZE};

/// Streams double their part size after this many parts.
pub const GROWTH_EVERY: u64 = 900;
/// Metadata key recording the layout (`<first part size>:<growth interval or 0>`).
pub const LAYOUT_META: &str = "barmans3-layout";

/// Default memory budget of a stream's parts in flight (`s3.stream_memory`).
pub const STREAM_MEMORY: u64 = 128 << 20;

/// First part size of a stream: the configured part size, but no more than the memory budget
/// split over `concurrency` parts (rounded down to whole MiB), and at least S3's 5 MiB floor.
pub fn stream_first_part(configured: u64, budget: u64, concurrency: usize) -> u64 {
    let share = budget / concurrency.max(1) as u64;
    let share = share - share % (1 << 20);
    configured.min(share).clamp(MIN_PART_SIZE, MAX_PART_SIZE)
}

/// Part size of a file uploaded sealed. Its parts are sealed in memory, so they are sized as a
/// stream's are (the memory budget shared by the parts in flight) rather than by the configured
/// part size, raised like any known size to stay within S3's part count, and made of whole
/// 64 KiB chunks so each part seals on its own.
pub fn sealed_part_size(size: u64, configured: u64, budget: u64, concurrency: usize) -> u64 {
    part_size_for(size, stream_first_part(configured, budget, concurrency))
        .next_multiple_of(crate::crypt::CHUNK)
}

/// How many parts of `part_size` bytes a stream may hold at once (the part being filled
/// included): as many as the budget holds, at least one, at most `concurrency`.
pub fn stream_parts_in_flight(budget: u64, part_size: u64, concurrency: usize) -> usize {
    let fit = budget / part_size.max(1);
    (fit.min(concurrency.max(1) as u64) as usize).max(1)
}

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

/// Decodes [`LAYOUT_META`] of an object of `size` stored bytes. The value comes from the
/// bucket: one that would cut the object into more than [`MAX_PARTS`] parts (S3 never makes
/// such an object) is refused before any range is built, so a hostile `1:0` on a large object
/// cannot make a download plan billions of ranges.
pub fn decode_layout(s: &str, size: u64) -> Option<(u64, u64)> {
    let (a, b) = s.split_once(':')?;
    let first: u64 = a.parse().ok()?;
    (first > 0).then_some(())?;
    let growth: u64 = b.parse().ok()?;
    let (mut start, mut index) = (0u64, 0u64);
    while start < size {
        if index >= MAX_PARTS {
            return None;
        }
        start = start.saturating_add(part_size_at(first, growth, index));
        index += 1;
    }
    Some((first, growth))
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
    #[test]
    fn sealed_parts_share_the_memory_budget_and_grow_only_for_the_part_count() {
        use super::*;
        let chunk = crate::crypt::CHUNK;
        // Defaults: 128 MiB over 8 parts in flight.
        assert_eq!(sealed_part_size(2 << 30, 64 << 20, 128 << 20, 8), 16 << 20);
        assert_eq!(sealed_part_size(0, 64 << 20, 128 << 20, 8), 16 << 20);
        // Never above the configured part size, never below S3's floor.
        assert_eq!(sealed_part_size(1 << 30, 8 << 20, 1 << 30, 4), 8 << 20);
        assert_eq!(
            sealed_part_size(1 << 30, 64 << 20, 16 << 20, 16),
            MIN_PART_SIZE
        );
        // A terabyte still fits in 10 000 parts, in whole chunks.
        let big = sealed_part_size(1 << 40, 64 << 20, 128 << 20, 8);
        assert!(
            big * MAX_PARTS >= 1 << 40 && big.is_multiple_of(chunk),
            "{big}"
        );
        assert!(big < (1 << 40) / MAX_PARTS + chunk);
    }

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
    fn stream_parts_start_at_the_budget_share_not_the_configured_size() {
        // The gpbackup plugin's defaults: 500 MB parts, six in flight, 128 MiB budget.
        let first = stream_first_part(500_000_000, STREAM_MEMORY, 6);
        assert_eq!(first, 21 << 20);
        assert_eq!(stream_parts_in_flight(STREAM_MEMORY, first, 6), 6);
        // A smaller configured part size is kept.
        assert_eq!(stream_first_part(8 << 20, STREAM_MEMORY, 4), 8 << 20);
        // A budget too small for the parts in flight still sends parts S3 accepts.
        assert_eq!(stream_first_part(64 << 20, 16 << 20, 8), MIN_PART_SIZE);
        assert_eq!(stream_parts_in_flight(16 << 20, MIN_PART_SIZE, 8), 3);
        assert_eq!(stream_parts_in_flight(0, MIN_PART_SIZE, 8), 1);
        assert_eq!(stream_parts_in_flight(1 << 40, MIN_PART_SIZE, 0), 1);
    }

    #[test]
    fn any_stream_schedule_reaches_five_tib_in_bounded_memory() {
        for (configured, budget, conc) in [
            (500_000_000, STREAM_MEMORY, 6),
            (64 << 20, STREAM_MEMORY, 8),
            (5 << 20, 5 << 20, 1),
            (5 << 30, 1 << 30, 256),
            (64 << 20, 16 << 20, 64),
        ] {
            let first = stream_first_part(configured, budget, conc);
            let mut total = 0u64;
            for i in 0..MAX_PARTS {
                let size = part_size_at(first, GROWTH_EVERY, i);
                assert!((MIN_PART_SIZE..=MAX_PART_SIZE).contains(&size));
                let held = size * stream_parts_in_flight(budget, size, conc) as u64;
                assert!(held <= budget.max(size), "{configured} {budget} {conc} {i}");
                total += size;
            }
            assert!(total >= 5u64 << 40, "{configured} {budget} {conc}: {total}");
        }
        // With the plugin's defaults, the first 100 GiB of a stream stay within the budget.
        let first = stream_first_part(500_000_000, STREAM_MEMORY, 6);
        let mut total = 0u64;
        for i in 0.. {
            let size = part_size_at(first, GROWTH_EVERY, i);
            let held = size * stream_parts_in_flight(STREAM_MEMORY, size, 6) as u64;
            assert!(held <= STREAM_MEMORY, "part {i}: {held}");
            total += size;
            if total > 100 << 30 {
                break;
            }
        }
    }

    #[test]
    fn layout_covers_exactly() {
        assert!(layout(0, 5, 0).is_empty());
        let l = layout(23, 5, 2);
        let lens: Vec<_> = l.iter().map(|r| r.len()).collect();
        assert_eq!(lens, [5, 5, 10, 3]);
        assert_eq!(decode_layout(&encode_layout(5, 900), 100), Some((5, 900)));
        assert_eq!(decode_layout("0:1", 100), None);
        // The bucket's word: no layout of more parts than S3 makes.
        assert_eq!(decode_layout("1:0", MAX_PARTS), Some((1, 0)));
        assert_eq!(decode_layout("1:0", MAX_PARTS + 1), None);
        assert_eq!(decode_layout("1:0", 10 << 30), None);
        assert_eq!(
            decode_layout("5242880:900", 100 << 30),
            Some((5 << 20, 900))
        );
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
