//! The point-in-time recovery window the bucket can actually serve: from the end of the oldest
//! backup whose WAL (begin to end) is all there and readable, to the last segment a recovery
//! from a usable backup replays before it meets a gap or a damaged file, following timeline
//! switches whose history file is there. A pure function over names, unit-tested.

use std::collections::BTreeSet;

use serde::Serialize;

use super::chain::{Archive, backup_lacks, position};
use crate::barman::recover::timeline::Begin;

/// A backup as the window sees it: its id and WAL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// Backup id.
    pub id: String,
    /// Its begin_wal.
    pub begin: String,
    /// Its end_wal.
    pub end: String,
}

/// What a recovery can reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Window {
    /// The oldest backup a recovery can start from.
    pub oldest_backup: String,
    /// Its end_wal: the earliest point a recovery reaches consistency.
    pub from_wal: String,
    /// The newest backup a recovery can start from.
    pub newest_backup: String,
    /// The last segment a recovery replays without a gap.
    pub to_wal: String,
    /// Backups whose WAL from begin to end is not all there and readable.
    pub unusable: Vec<String>,
}

/// The window, or `None` when no backup can be recovered. `backups` oldest first; `a` without
/// the files found damaged; `chains` the timelines' history chains.
pub fn window(a: &Archive, chains: &[Vec<Begin>], backups: &[Span]) -> Option<Window> {
    let mut w: Option<Window> = None;
    let mut best: Option<(u64, u32)> = None;
    let mut unusable = Vec::new();
    for b in backups {
        let end = position(&b.end, a.seg_size());
        let usable = position(&b.begin, a.seg_size()).is_some()
            && end.is_some()
            && backup_lacks(a, &b.begin, &b.end).is_empty();
        let Some((tli, n)) = end.filter(|_| usable) else {
            unusable.push(b.id.clone());
            continue;
        };
        let (rt, rn) = reach(a, chains, tli, n);
        let w = w.get_or_insert_with(|| Window {
            oldest_backup: b.id.clone(),
            from_wal: b.end.clone(),
            newest_backup: b.id.clone(),
            to_wal: b.end.clone(),
            unusable: Vec::new(),
        });
        w.newest_backup = b.id.clone();
        if best.is_none_or(|x| (rn, rt) > x) {
            best = Some((rn, rt));
            w.to_wal = a.name(rt, rn);
        }
    }
    w.map(|mut w| {
        w.unusable = unusable;
        w
    })
}

/// The last segment replayed from segment `from` of timeline `tli` (present) without a gap:
/// along `tli`, or along a later timeline that branches from it where its parent still reaches
/// the switch (the furthest of them).
fn reach(a: &Archive, chains: &[Vec<Begin>], tli: u32, from: u64) -> (u32, u64) {
    let last = a.run_end(tli, from + 1).unwrap_or(from);
    let mut best = (tli, last);
    let mut seen = BTreeSet::new();
    for pair in chains.iter().flat_map(|c| c.windows(2)) {
        let (parent, child) = (&pair[0], &pair[1]);
        let switch = child.lsn / a.seg_size();
        if parent.tli != tli || child.tli <= tli || !seen.insert(child.tli) {
            continue;
        }
        // The child's first segment holds the switch and the parent's bytes before it.
        if switch >= from
            && last + 1 >= switch
            && a.has_history(child.tli)
            && a.stored(child.tli, switch).is_some()
        {
            let (ct, cn) = reach(a, chains, child.tli, switch);
            if (cn, ct) > (best.1, best.0) {
                best = (ct, cn);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::barman::recover::timeline;

    const SEG: u64 = 16 << 20;

    fn name(tli: u32, n: u64) -> String {
        timeline::segment_name(tli, n, SEG)
    }

    fn span(id: &str, begin: (u32, u64), end: (u32, u64)) -> Span {
        Span {
            id: id.into(),
            begin: name(begin.0, begin.1),
            end: name(end.0, end.1),
        }
    }

    fn archive(segs: &[(u32, std::ops::RangeInclusive<u64>)], histories: &[u32]) -> Archive {
        let mut a = Archive::new(SEG);
        for (t, r) in segs {
            for n in r.clone() {
                a.add(&name(*t, n));
            }
        }
        for h in histories {
            a.add(&format!("{h:08X}.history"));
        }
        a
    }

    #[test]
    fn the_window_ends_at_the_first_gap_or_damaged_segment() {
        let backups = [span("B1", (1, 2), (1, 3)), span("B2", (1, 10), (1, 11))];
        // Whole: from B1's end to the newest segment.
        let a = archive(&[(1, 2..=20)], &[]);
        let w = window(&a, &[], &backups).expect("window");
        assert_eq!(
            (w.from_wal.as_str(), w.to_wal.as_str()),
            (&*name(1, 3), &*name(1, 20))
        );
        assert_eq!(
            (w.oldest_backup.as_str(), w.newest_backup.as_str()),
            ("B1", "B2")
        );
        // One damaged segment after the newest backup's end: the window stops before it.
        let mut a = archive(&[(1, 2..=20)], &[]);
        a.forget(&name(1, 15));
        let w = window(&a, &[], &backups).expect("window");
        assert_eq!(w.to_wal, name(1, 14));
        // A gap inside B1's chain: B1 is unusable, the window starts at B2's end.
        let mut a = archive(&[(1, 2..=20)], &[]);
        a.forget(&name(1, 3));
        let w = window(&a, &[], &backups).expect("window");
        assert_eq!(
            (w.from_wal.clone(), w.unusable.clone()),
            (name(1, 11), vec!["B1".into()])
        );
        // Nothing usable: no window.
        let a = archive(&[(1, 2..=2)], &[]);
        assert_eq!(window(&a, &[], &backups), None);
    }

    #[test]
    fn the_window_follows_a_timeline_switch_with_its_history() {
        let backups = [span("B1", (1, 2), (1, 3))];
        // Timeline 2 branches inside segment 8: timeline 1 up to 7, timeline 2 from 8.
        let chains = vec![vec![
            Begin { tli: 1, lsn: 0 },
            Begin {
                tli: 2,
                lsn: 8 * SEG + 100,
            },
        ]];
        let a = archive(&[(1, 2..=8), (2, 8..=12)], &[2]);
        assert_eq!(
            window(&a, &chains, &backups).expect("w").to_wal,
            name(2, 12)
        );
        // Without timeline 2's history file, recovery cannot follow it.
        let a = archive(&[(1, 2..=8), (2, 8..=12)], &[]);
        assert_eq!(window(&a, &chains, &backups).expect("w").to_wal, name(1, 8));
        // Timeline 1 stops short of the switch: timeline 2 cannot be reached.
        let a = archive(&[(1, 2..=5), (2, 8..=12)], &[2]);
        assert_eq!(window(&a, &chains, &backups).expect("w").to_wal, name(1, 5));
    }
}
