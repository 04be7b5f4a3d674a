//! Which WAL files a backup, or the whole archive, needs and the bucket lacks: pure functions
//! over names, unit-tested with tables.
//!
//! A segment is named `TTTTTTTT LLLLLLLL SSSSSSSS` (timeline, log, segment within the log, hex);
//! a log holds 4 GiB, so its segment field runs from 0 to `4 GiB / segment size - 1` (00..FF
//! with the default 16 MiB). Positions are counted as segment numbers (`log × per_log + seg`).
//! A closed `.partial` stands for its segment, as `wal-restore` serves it for a missing one.
//!
//! Across timeline switches the archive is checked as recovery reads it: a timeline begins at
//! the segment holding its switch point (its history file says where), its parent must reach
//! the segment before that, and every timeline after the first needs its `<TLI>.history`
//! (PostgreSQL probes them one by one to find the newest timeline).

use std::collections::{BTreeMap, BTreeSet};

use super::runs::Runs;
use crate::barman::recover::timeline::{self, Begin};
use crate::barman::wal::{self, WalKind};

/// PostgreSQL's default WAL segment size (Barman's `xlog_segment_size` when backup.info says
/// nothing).
pub const DEFAULT_SEG_SIZE: u64 = 16 << 20;

/// What the WAL archive in the bucket holds, in memory that grows with its gaps and odd names,
/// not with its size: per timeline the runs of segments present ([`Runs`]), and the stored
/// name only where it is not the segment's own (a `.partial` alone, lower-case hex).
#[derive(Debug, Clone)]
pub struct Archive {
    seg_size: u64,
    /// Timeline → the segment numbers present (as a segment or a partial).
    segments: BTreeMap<u32, Runs>,
    /// Stored names other than [`Archive::name`] of their position (a full segment preferred
    /// to its partial).
    odd: BTreeMap<(u32, u64), String>,
    histories: BTreeSet<u32>,
    misfits: Vec<String>,
}

/// Something the archive lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lack {
    /// Segments `first..=last` of timeline `tli` are absent.
    Segments {
        /// Timeline.
        tli: u32,
        /// First missing segment number.
        first: u64,
        /// Last missing segment number.
        last: u64,
    },
    /// `<tli>.history` is absent.
    History {
        /// Timeline.
        tli: u32,
    },
    /// A segment name whose segment field does not fit the segment size.
    Misfit {
        /// The name.
        name: String,
    },
}

/// Where a segment name sits: timeline and segment number, or `None` when it does not fit
/// `seg_size` (a segment field beyond the last segment of a log).
pub fn position(name: &str, seg_size: u64) -> Option<(u32, u64)> {
    let per_log = (1u64 << 32) / seg_size;
    let seg = u64::from_str_radix(name.get(16..24)?, 16).ok()?;
    if seg >= per_log {
        return None;
    }
    Some((wal::timeline(name)?, wal::segment_number(name, per_log)?))
}

impl Archive {
    /// An empty archive of segments of `seg_size` bytes.
    pub fn new(seg_size: u64) -> Self {
        Archive {
            seg_size,
            segments: BTreeMap::new(),
            odd: BTreeMap::new(),
            histories: BTreeSet::new(),
            misfits: Vec::new(),
        }
    }

    /// The segment size the names are read with.
    pub fn seg_size(&self) -> u64 {
        self.seg_size
    }

    /// Records a file name found in `wals/` (other names are ignored), in any order: the
    /// archive is the same whichever page of a listing a name came on, and a name seen twice
    /// counts once.
    pub fn add(&mut self, name: &str) {
        let kind = wal::classify(name);
        match kind {
            Some(WalKind::History) => {
                if let Some(t) = wal::timeline(name) {
                    self.histories.insert(t);
                }
            }
            Some(WalKind::Segment | WalKind::Partial) => match position(name, self.seg_size) {
                Some((tli, n)) => {
                    let runs = self.segments.entry(tli).or_default();
                    let present = runs.contains(n);
                    if kind == Some(WalKind::Segment) {
                        runs.insert(n);
                        if name == self.name(tli, n) {
                            self.odd.remove(&(tli, n));
                        } else {
                            self.odd.insert((tli, n), name.to_string());
                        }
                    } else if !present {
                        runs.insert(n);
                        self.odd.insert((tli, n), name.to_string());
                    }
                }
                None => self.misfits.push(name.to_string()),
            },
            _ => {}
        }
    }

    /// The stored name of segment `n` of timeline `tli` (the segment, else its partial).
    pub fn stored(&self, tli: u32, n: u64) -> Option<String> {
        if !self.segments.get(&tli)?.contains(n) {
            return None;
        }
        Some(match self.odd.get(&(tli, n)) {
            Some(s) => s.clone(),
            None => self.name(tli, n),
        })
    }

    /// The last segment of the unbroken run of timeline `tli` that holds segment `n`.
    pub fn run_end(&self, tli: u32, n: u64) -> Option<u64> {
        self.segments.get(&tli)?.run_end(n)
    }

    /// Drops a stored file found unreadable or damaged: recovery cannot use it.
    pub fn forget(&mut self, name: &str) {
        if let Some((tli, n)) = position(name, self.seg_size)
            && self.stored(tli, n).is_some_and(|x| x == name)
            && let Some(s) = self.segments.get_mut(&tli)
        {
            s.remove(n);
            self.odd.remove(&(tli, n));
        }
    }

    /// Whether `<tli>.history` is there.
    pub fn has_history(&self, tli: u32) -> bool {
        self.histories.contains(&tli)
    }

    /// Timelines that have a history file.
    pub fn histories(&self) -> impl Iterator<Item = u32> + '_ {
        self.histories.iter().copied()
    }

    /// The name of segment `n` of timeline `tli`.
    pub fn name(&self, tli: u32, n: u64) -> String {
        timeline::segment_name(tli, n, self.seg_size)
    }

    /// How many runs of segments and odd names the archive holds: what it costs in memory.
    pub fn entries(&self) -> usize {
        self.segments.values().map(Runs::len).sum::<usize>() + self.odd.len()
    }

    fn oldest(&self) -> Option<u64> {
        self.segments.values().filter_map(Runs::first).min()
    }
}

fn segment_lacks(a: &Archive, tli: u32, first: u64, last: u64) -> Vec<Lack> {
    let gaps = match a.segments.get(&tli) {
        Some(r) => r.gaps(first, last),
        None if first <= last => vec![(first, last)],
        None => Vec::new(),
    };
    gaps.into_iter()
        .map(|(first, last)| Lack::Segments { tli, first, last })
        .collect()
}

/// What the archive lacks for one backup: every segment from `begin` to `end`, and the history
/// file of its timeline after the first. Names that are not segments are refused by the caller.
pub fn backup_lacks(a: &Archive, begin: &str, end: &str) -> Vec<Lack> {
    let (Some((bt, b)), Some((et, e))) = (position(begin, a.seg_size), position(end, a.seg_size))
    else {
        return [begin, end]
            .iter()
            .filter(|n| position(n, a.seg_size).is_none())
            .map(|n| Lack::Misfit {
                name: n.to_string(),
            })
            .collect();
    };
    let mut out = Vec::new();
    if bt == et {
        out.extend(segment_lacks(a, bt, b, e));
    } else if e > 0 {
        // A backup does not span a timeline switch in practice; should one, its last segment is
        // on the new timeline and everything before it on the old one.
        out.extend(segment_lacks(a, bt, b, e - 1));
        out.extend(segment_lacks(a, et, e, e));
    }
    for t in [bt, et] {
        if t > 1 && !a.has_history(t) && !out.contains(&Lack::History { tli: t }) {
            out.push(Lack::History { tli: t });
        }
    }
    out
}

/// What the whole archive lacks from segment `start` (the oldest backup's first WAL; `None`:
/// the oldest segment in the bucket) up to the newest segment of each timeline, or further
/// when a backup (`ends`: timeline and last segment of each backup) or a timeline switch
/// (`chains`: every history file's chain) says more is needed.
pub fn archive_lacks(
    a: &Archive,
    start: Option<u64>,
    ends: &[(u32, u64)],
    chains: &[Vec<Begin>],
) -> Vec<Lack> {
    // Where each timeline begins, and how far each parent must reach for its children.
    let mut begins: BTreeMap<u32, u64> = BTreeMap::from([(1, 0)]);
    let mut reach: BTreeMap<u32, u64> = BTreeMap::new();
    for chain in chains {
        if let Some(first) = chain.first() {
            begins.entry(first.tli).or_insert(0);
        }
        for w in chain.windows(2) {
            let switch = w[1].lsn / a.seg_size;
            begins.entry(w[1].tli).or_insert(switch);
            if let Some(last) = switch.checked_sub(1) {
                let r = reach.entry(w[0].tli).or_insert(last);
                *r = (*r).max(last);
            }
        }
    }
    for &(t, e) in ends {
        let r = reach.entry(t).or_insert(e);
        *r = (*r).max(e);
    }
    let mut tlis: BTreeSet<u32> = a.segments.keys().copied().collect();
    tlis.extend(reach.keys().copied());
    tlis.extend(chains.iter().flatten().map(|b| b.tli));
    let mut out: Vec<Lack> = a
        .misfits
        .iter()
        .map(|n| Lack::Misfit { name: n.clone() })
        .collect();
    out.extend(
        tlis.iter()
            .filter(|&&t| t > 1 && !a.has_history(t))
            .map(|&tli| Lack::History { tli }),
    );
    let Some(lower) = start.or_else(|| a.oldest()) else {
        return out;
    };
    for &t in &tlis {
        let present = a.segments.get(&t);
        // A timeline whose switch point no history file gives is checked from its own first
        // segment (its missing history is reported above).
        let Some(begin) = begins
            .get(&t)
            .copied()
            .or_else(|| present.and_then(Runs::first))
        else {
            continue;
        };
        let newest = present.and_then(Runs::last);
        let Some(last) = newest.max(reach.get(&t).copied()) else {
            continue;
        };
        let first = lower.max(begin);
        if first <= last {
            out.extend(segment_lacks(a, t, first, last));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn name(tli: u32, n: u64) -> String {
        timeline::segment_name(tli, n, SEG)
    }

    fn archive(names: &[String]) -> Archive {
        let mut a = Archive::new(SEG);
        for n in names {
            a.add(n);
        }
        a
    }

    fn run(tli: u32, first: u64, last: u64) -> Lack {
        Lack::Segments { tli, first, last }
    }

    #[test]
    fn names_map_to_positions_by_segment_size() {
        // 16 MiB: 256 segments per log, 00..FF.
        assert_eq!(position("0000000100000001000000FF", SEG), Some((1, 511)));
        assert_eq!(position("000000010000000100000100", SEG), None);
        // 1 MiB: 4096 segments per log, so ...00000100 is valid and segment 256.
        assert_eq!(
            position("000000010000000000000100", 1 << 20),
            Some((1, 256))
        );
        // 64 MiB: 64 per log; ...0000003F is the last segment of a log.
        assert_eq!(
            position("00000002000000000000003F", 64 << 20),
            Some((2, 63))
        );
        assert_eq!(position("000000020000000000000040", 64 << 20), None);
        // The log boundary: FF then the next log's 00 are neighbours.
        assert_eq!(name(1, 255), "0000000100000000000000FF");
        assert_eq!(name(1, 256), "000000010000000100000000");
    }

    #[test]
    fn a_backups_chain_needs_every_segment_and_its_history() {
        let full: Vec<String> = (3..=6).map(|n| name(1, n)).collect();
        let cases: Vec<(Vec<String>, &str, &str, Vec<Lack>)> = vec![
            (
                full.clone(),
                "000000010000000000000003",
                "000000010000000000000006",
                vec![],
            ),
            (
                full.iter().filter(|n| !n.ends_with('4')).cloned().collect(),
                "000000010000000000000003",
                "000000010000000000000006",
                vec![run(1, 4, 4)],
            ),
            // Begin and end both missing: two runs.
            (
                vec![name(1, 4), name(1, 5)],
                "000000010000000000000003",
                "000000010000000000000006",
                vec![run(1, 3, 3), run(1, 6, 6)],
            ),
            // A closed partial stands for its segment.
            (
                vec![name(1, 3), format!("{}.partial", name(1, 4))],
                "000000010000000000000003",
                "000000010000000000000004",
                vec![],
            ),
            // Across a log boundary (FF then the next log).
            (
                vec![name(1, 255), name(1, 256)],
                "0000000100000000000000FF",
                "000000010000000100000000",
                vec![],
            ),
            // Timeline 2 without its history file.
            (
                vec![name(2, 9)],
                "000000020000000000000009",
                "000000020000000000000009",
                vec![Lack::History { tli: 2 }],
            ),
            (
                vec![name(2, 9), "00000002.history".into()],
                "000000020000000000000009",
                "000000020000000000000009",
                vec![],
            ),
        ];
        for (names, b, e, want) in cases {
            assert_eq!(backup_lacks(&archive(&names), b, e), want, "{names:?}");
        }
    }

    #[test]
    fn the_whole_archive_is_checked_across_timeline_switches() {
        // Timeline 1 up to segment 5; the switch to 2 inside segment 5 (0/5000098): timeline 2
        // begins with its own segment 5; timeline 1's segment 5 is not needed.
        let chain2 = timeline::chain(2, "1\t0/5000098\tno recovery target\n");
        let mut names: Vec<String> = (2..=4).map(|n| name(1, n)).collect();
        names.extend((5..=8).map(|n| name(2, n)));
        names.push("00000002.history".into());
        let a = archive(&names);
        assert_eq!(
            archive_lacks(&a, Some(2), &[], std::slice::from_ref(&chain2)),
            vec![]
        );
        // The oldest backup's first WAL decides where checking starts.
        assert_eq!(
            archive_lacks(&a, Some(1), &[], std::slice::from_ref(&chain2)),
            vec![run(1, 1, 1)]
        );
        // Without the history file: reported, and timeline 2 is checked from its first segment.
        let no_hist: Vec<String> = names
            .iter()
            .filter(|n| !n.ends_with(".history"))
            .cloned()
            .collect();
        assert_eq!(
            archive_lacks(&archive(&no_hist), Some(2), &[], &[]),
            vec![Lack::History { tli: 2 }]
        );
        // A gap on the new timeline, and the parent stopping short of the switch.
        let holes: Vec<String> = names
            .iter()
            .filter(|n| **n != name(2, 7) && **n != name(1, 4))
            .cloned()
            .collect();
        assert_eq!(
            archive_lacks(
                &archive(&holes),
                Some(2),
                &[],
                std::slice::from_ref(&chain2)
            ),
            vec![run(1, 4, 4), run(2, 7, 7)]
        );
        // A backup whose last WAL is past the newest segment in the bucket.
        assert_eq!(
            archive_lacks(&a, Some(2), &[(2, 10)], std::slice::from_ref(&chain2)),
            vec![run(2, 9, 10)]
        );
        // A switch exactly at a segment boundary (0/6000000): the parent must reach segment 5.
        let at_boundary = timeline::chain(2, "1\t0/6000000\tx\n");
        let mut b: Vec<String> = (2..=4).map(|n| name(1, n)).collect();
        b.extend((6..=7).map(|n| name(2, n)));
        b.push("00000002.history".into());
        assert_eq!(
            archive_lacks(&archive(&b), Some(2), &[], &[at_boundary]),
            vec![run(1, 5, 5)]
        );
    }

    #[test]
    fn every_later_timeline_of_a_chain_needs_its_history() {
        // Timeline 3's history names 1 and 2; 2.history is gone.
        let chain3 = timeline::chain(3, "1\t0/3000000\ta\n2\t0/5000000\tb\n");
        let mut names: Vec<String> = (1..=2).map(|n| name(1, n)).collect();
        names.extend((3..=4).map(|n| name(2, n)));
        names.extend((5..=6).map(|n| name(3, n)));
        names.push("00000003.history".into());
        assert_eq!(
            archive_lacks(&archive(&names), Some(1), &[], &[chain3]),
            vec![Lack::History { tli: 2 }]
        );
    }

    #[test]
    fn an_archive_without_backups_starts_at_its_oldest_segment() {
        let a = archive(&[name(1, 40), name(1, 41), name(1, 43)]);
        assert_eq!(archive_lacks(&a, None, &[], &[]), vec![run(1, 42, 42)]);
        assert_eq!(archive_lacks(&archive(&[]), None, &[], &[]), vec![]);
        // Names that do not fit the segment size are reported, not guessed at.
        let odd = archive(&["000000010000000000000100".to_string()]);
        assert_eq!(
            archive_lacks(&odd, None, &[], &[]),
            vec![Lack::Misfit {
                name: "000000010000000000000100".into()
            }]
        );
    }

    /// A listing as pages: the archive and what it lacks are the same wherever the pages end.
    fn paged(pages: &[&[String]]) -> Archive {
        let mut a = Archive::new(SEG);
        for page in pages {
            for n in *page {
                a.add(n);
            }
        }
        a
    }

    #[test]
    fn a_gap_spanning_two_pages_is_one_run_and_a_wal_stored_twice_counts_once() {
        // Timeline 1: 1..=10, then 14..=20; segment 10 is stored as itself and as its partial
        // (the partial sorts right after it).
        let mut names: Vec<String> = (1..=10).map(|n| name(1, n)).collect();
        names.push(format!("{}.partial", name(1, 10)));
        names.extend((14..=20).map(|n| name(1, n)));
        let whole = archive(&names);
        let want = vec![run(1, 11, 13)];
        assert_eq!(archive_lacks(&whole, Some(1), &[], &[]), want);
        // The gap opens on one page and closes on the next; the partial starts a page.
        let at_gap = names.iter().position(|n| *n == name(1, 14)).expect("14");
        let at_partial = at_gap - 1;
        for cut in [at_gap, at_partial] {
            let a = paged(&[&names[..cut], &names[cut..]]);
            assert_eq!(archive_lacks(&a, Some(1), &[], &[]), want, "cut at {cut}");
            // The full segment is preferred to its partial, whichever page each came on.
            assert_eq!(a.stored(1, 10), Some(name(1, 10)));
        }
        // Every page size gives the same answer, and the partial listed alone stands for its
        // segment until the segment itself shows up.
        for size in 1..=names.len() {
            let pages: Vec<&[String]> = names.chunks(size).collect();
            assert_eq!(archive_lacks(&paged(&pages), Some(1), &[], &[]), want);
        }
        let reversed: Vec<String> = names.iter().rev().cloned().collect();
        assert_eq!(archive(&reversed).stored(1, 10), Some(name(1, 10)));
        let partial_only = archive(&[format!("{}.partial", name(1, 10))]);
        assert_eq!(
            partial_only.stored(1, 10),
            Some(format!("{}.partial", name(1, 10)))
        );
    }

    #[test]
    fn the_archive_holds_runs_not_names() {
        let mut a = Archive::new(SEG);
        for n in 0..100_000 {
            a.add(&name(1, n));
        }
        assert_eq!(a.entries(), 1, "a hundred thousand segments without a gap");
        a.add(&name(1, 100_005));
        a.add(&format!("{}.partial", name(1, 200_000)));
        assert_eq!(a.entries(), 4, "two runs more and the partial's name");
        assert_eq!(
            archive_lacks(&a, None, &[], &[]),
            vec![run(1, 100_000, 100_004), run(1, 100_006, 199_999)]
        );
        // A segment found damaged is dropped from its run.
        a.forget(&name(1, 500));
        assert_eq!(a.stored(1, 500), None);
        assert_eq!(a.run_end(1, 0), Some(499));
        assert_eq!(a.run_end(1, 501), Some(99_999));
        // Forgetting a partial that is not what is stored leaves the segment alone.
        a.forget(&format!("{}.partial", name(1, 7)));
        assert_eq!(a.stored(1, 7), Some(name(1, 7)));
    }
}
