//! What the prefetcher does next, decided over plain data (pure, unit-tested): the segments
//! PostgreSQL will ask for after the one it asks for now, each on the timeline it will read it
//! from; which of them to start fetching within the count and byte bounds (a fetch in flight
//! counts as a whole segment); how far ahead to look as the spool runs dry; when to try a
//! failed name again; which spooled files are still wanted; when to stop.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::barman::recover::timeline::{self, Begin};
use crate::barman::wal;

/// The most segments the prefetcher ever looks ahead, whatever the byte budget allows.
pub const MAX_DEPTH: usize = 256;
/// The prefetcher exits when PostgreSQL has asked for nothing this long and nothing is in
/// flight (a standby asks every `wal_retrieve_retry_interval`, 5 s by default, and keeps it).
pub const IDLE_EXIT: Duration = Duration::from_secs(30);
/// A name found missing is tried again after this long: it may be shipped any moment.
pub const MISSING_RETRY: Duration = Duration::from_secs(2);
/// The longest wait before a name that failed for a transient reason is tried again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The names of the `k` segments after `want`, each on the timeline PostgreSQL will read it
/// from, for segments of `seg` bytes.
pub fn next_names(want: &str, k: usize, seg: u64, chain: &[Begin]) -> Vec<String> {
    let Some(n) = wal::segment_number(want, (1u64 << 32) / seg) else {
        return Vec::new();
    };
    let tli = wal::timeline(want).unwrap_or(1);
    (1..=k as u64)
        .map(|i| {
            let t = timeline::timeline_for(n + i, seg, chain)
                .unwrap_or(tli)
                .max(tli);
            timeline::segment_name(t, n + i, seg)
        })
        .collect()
}

/// What the prefetcher knows when it decides what to start.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The names PostgreSQL will ask for next, in order ([`next_names`]).
    pub ahead: Vec<String>,
    /// Names spooled and ready.
    pub spooled: BTreeSet<String>,
    /// Bytes the spooled files hold.
    pub spooled_bytes: u64,
    /// Names being fetched.
    pub inflight: BTreeSet<String>,
    /// Names not to try now (missing moments ago, failed, refused).
    pub held: BTreeSet<String>,
    /// Names the bucket listing says are not there.
    pub absent: BTreeSet<String>,
    /// Bytes per segment.
    pub seg_size: u64,
    /// Bytes the spool may hold, counting a segment for each fetch in flight.
    pub budget: u64,
}

impl Plan {
    /// What to start now, in the order PostgreSQL will want it: the names ahead that are not
    /// spooled, in flight, held back or absent, while the spooled bytes and a segment for each
    /// fetch in flight (those started here included) stay within the budget.
    pub fn to_start(&self) -> Vec<String> {
        let mut committed = self
            .spooled_bytes
            .saturating_add(self.seg_size.saturating_mul(self.inflight.len() as u64));
        let mut out = Vec::new();
        for name in &self.ahead {
            let skip = self.spooled.contains(name)
                || self.inflight.contains(name)
                || self.held.contains(name)
                || self.absent.contains(name);
            if skip {
                continue;
            }
            if committed.saturating_add(self.seg_size) > self.budget {
                break;
            }
            committed += self.seg_size;
            out.push(name.clone());
        }
        out
    }
}

/// How far ahead to look after a request: doubled when PostgreSQL asked for a segment the
/// spool did not have ready (it ran dry), up to what the byte budget can hold (and
/// [`MAX_DEPTH`]), never below the configured depth.
pub fn next_depth(
    depth: usize,
    ran_dry: bool,
    configured: usize,
    seg_size: u64,
    budget: u64,
) -> usize {
    let fits = usize::try_from(budget / seg_size.max(1)).unwrap_or(MAX_DEPTH);
    let cap = fits.min(MAX_DEPTH).max(configured);
    if ran_dry {
        depth.saturating_mul(2).clamp(configured, cap)
    } else {
        depth.clamp(configured, cap)
    }
}

/// Why a fetch did not spool its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Not in the bucket (yet).
    Missing,
    /// The store or the disk failed after the engine's retries.
    Transient,
    /// The object is not what its name says (it does not decode, or decodes to other bytes,
    /// or too many of them): asking again would fetch the same thing.
    Refused,
}

/// When a name whose fetch failed `attempts` times (this one included) may be tried again:
/// a missing one soon, a transient failure after a backoff doubling from 2 s to a minute, a
/// refused object never by this prefetcher (the restore_command's own fetch reports it).
pub fn retry_after(f: Failure, attempts: u32) -> Option<Duration> {
    match f {
        Failure::Missing => Some(MISSING_RETRY),
        Failure::Transient => {
            let doubled = MISSING_RETRY.saturating_mul(1 << attempts.saturating_sub(1).min(16));
            Some(doubled.min(MAX_BACKOFF))
        }
        Failure::Refused => None,
    }
}

/// Whether a spooled segment is still wanted: the one PostgreSQL asks for now (it may be
/// being taken) or one it will ask for.
pub fn keep(name: &str, want: &str, ahead: &[String]) -> bool {
    name == want || ahead.iter().any(|a| a == name)
}

/// Whether the prefetcher's work is over: no request for [`IDLE_EXIT`] and nothing in flight.
pub fn idle(since_request: Duration, inflight: usize) -> bool {
    inflight == 0 && since_request >= IDLE_EXIT
}

/// Whether PostgreSQL ran ahead of the spool: it asks for a segment the last plan had ahead
/// and expected in the bucket (neither held back nor absent from the listing), and it is not
/// ready. A standby asking again for the segment that does not exist yet is not.
pub fn ran_dry(want: &str, last: &Plan, spooled: &BTreeSet<String>) -> bool {
    last.ahead.iter().any(|p| p == want)
        && !spooled.contains(want)
        && !last.held.contains(want)
        && !last.absent.contains(want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::barman::recover::timeline::chain;

    const SEG: u64 = 16 << 20;

    #[test]
    fn prefetch_follows_a_timeline_switch() {
        let c = chain(2, "1\t0/7000098\tno recovery target specified\n");
        assert_eq!(
            next_names("000000010000000000000005", 3, SEG, &c),
            vec![
                "000000010000000000000006",
                "000000020000000000000007",
                "000000020000000000000008"
            ]
        );
        let flat = [Begin { tli: 1, lsn: 0 }];
        assert_eq!(
            next_names("0000000100000000000000FF", 1, SEG, &flat),
            vec!["000000010000000100000000"]
        );
        // 1 MiB segments: 4096 to a log file.
        assert_eq!(
            next_names("0000000100000000000000FF", 1, 1 << 20, &flat),
            vec!["000000010000000000000100"]
        );
    }

    fn names(from: u64, n: u64) -> Vec<String> {
        (from..from + n)
            .map(|i| format!("{:08X}{:08X}{:08X}", 1, 0, i))
            .collect()
    }

    fn set(v: &[String]) -> BTreeSet<String> {
        v.iter().cloned().collect()
    }

    #[test]
    fn what_is_in_flight_counts_against_the_byte_budget() {
        // 32 MiB of spool and 16 ahead: two segments at most, spooled or in flight.
        let ahead = names(2, 16);
        let plan = Plan {
            ahead: ahead.clone(),
            seg_size: SEG,
            budget: 32 << 20,
            ..Plan::default()
        };
        assert_eq!(plan.to_start(), names(2, 2));
        let busy = Plan {
            inflight: set(&names(2, 1)),
            ..plan.clone()
        };
        assert_eq!(busy.to_start(), names(3, 1));
        let full = Plan {
            spooled: set(&names(2, 1)),
            spooled_bytes: SEG,
            inflight: set(&names(3, 1)),
            ..plan.clone()
        };
        assert!(full.to_start().is_empty());
        // A budget smaller than a segment starts nothing: the direct fetch still works.
        let tiny = Plan {
            budget: SEG - 1,
            ..plan
        };
        assert!(tiny.to_start().is_empty());
    }

    #[test]
    fn held_absent_and_spooled_names_are_skipped_in_order() {
        let ahead = names(2, 6);
        let plan = Plan {
            ahead: ahead.clone(),
            spooled: set(&ahead[0..1]),
            spooled_bytes: SEG,
            held: set(&ahead[1..2]),
            absent: set(&ahead[3..4]),
            seg_size: SEG,
            budget: 1 << 30,
            ..Plan::default()
        };
        assert_eq!(
            plan.to_start(),
            vec![ahead[2].clone(), ahead[4].clone(), ahead[5].clone()]
        );
    }

    #[test]
    fn depth_grows_while_the_spool_runs_dry_within_the_budget() {
        let gib = 1 << 30;
        assert_eq!(next_depth(8, false, 8, SEG, gib), 8);
        assert_eq!(next_depth(8, true, 8, SEG, gib), 16);
        assert_eq!(next_depth(48, true, 8, SEG, gib), 64);
        assert_eq!(next_depth(64, true, 8, SEG, gib), 64);
        // 1 MiB segments: the budget would allow 1024, the depth stops at MAX_DEPTH.
        assert_eq!(next_depth(200, true, 8, 1 << 20, gib), MAX_DEPTH);
        // Never below what is configured, even when the budget is smaller.
        assert_eq!(next_depth(4, true, 8, SEG, 32 << 20), 8);
    }

    #[test]
    fn a_refused_object_is_not_fetched_again_in_a_loop() {
        assert_eq!(retry_after(Failure::Refused, 1), None);
        assert_eq!(retry_after(Failure::Missing, 9), Some(MISSING_RETRY));
        assert_eq!(
            retry_after(Failure::Transient, 1),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(Failure::Transient, 3),
            Some(Duration::from_secs(8))
        );
        assert_eq!(retry_after(Failure::Transient, 40), Some(MAX_BACKOFF));
    }

    #[test]
    fn what_is_kept_and_when_to_stop() {
        let ahead = names(6, 2);
        assert!(keep(
            "000000010000000000000005",
            "000000010000000000000005",
            &ahead
        ));
        assert!(keep(
            "000000010000000000000007",
            "000000010000000000000005",
            &ahead
        ));
        assert!(!keep(
            "000000010000000000000004",
            "000000010000000000000005",
            &ahead
        ));
        assert!(!keep(
            "000000010000000000000009",
            "000000010000000000000005",
            &ahead
        ));
        assert!(!idle(Duration::from_secs(5), 0));
        assert!(!idle(IDLE_EXIT, 1));
        assert!(idle(IDLE_EXIT, 0));
        let planned = names(5, 4);
        let last = Plan {
            ahead: planned.clone(),
            held: set(&planned[2..3]),
            absent: set(&planned[3..4]),
            ..Plan::default()
        };
        assert!(ran_dry(&planned[1], &last, &BTreeSet::new()));
        assert!(!ran_dry(&planned[1], &last, &set(&planned[1..2])));
        assert!(!ran_dry(
            "000000010000000000000042",
            &last,
            &BTreeSet::new()
        ));
        // Found missing or absent from the listing: the end of the archive, not a dry spool.
        assert!(!ran_dry(&planned[2], &last, &BTreeSet::new()));
        assert!(!ran_dry(&planned[3], &last, &BTreeSet::new()));
    }
}
