//! A set of segment numbers kept as runs of consecutive numbers, so an archive of a million
//! segments without a gap is one entry: what `verify-wal` holds of the listing grows with the
//! gaps it finds, not with the archive. Insertion in any order merges runs, so the set does not
//! depend on where the listing's pages end.

use std::collections::BTreeMap;

/// Disjoint, non-adjacent runs: first number → last number (inclusive).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runs {
    runs: BTreeMap<u64, u64>,
}

impl Runs {
    /// The run holding `n`, as (first, last).
    fn run_of(&self, n: u64) -> Option<(u64, u64)> {
        let (&f, &l) = self.runs.range(..=n).next_back()?;
        (l >= n).then_some((f, l))
    }

    /// Whether `n` is in the set.
    pub fn contains(&self, n: u64) -> bool {
        self.run_of(n).is_some()
    }

    /// Adds `n`, merging it with the runs it touches.
    pub fn insert(&mut self, n: u64) {
        if self.contains(n) {
            return;
        }
        let mut first = n;
        let mut last = n;
        if let Some((f, l)) = n.checked_sub(1).and_then(|p| self.run_of(p)) {
            self.runs.remove(&f);
            first = f;
            last = last.max(l);
        }
        if let Some(next) = n.checked_add(1)
            && let Some(l) = self.runs.remove(&next)
        {
            last = l;
        }
        self.runs.insert(first, last);
    }

    /// Removes `n`, splitting its run.
    pub fn remove(&mut self, n: u64) {
        let Some((f, l)) = self.run_of(n) else {
            return;
        };
        self.runs.remove(&f);
        if f < n {
            self.runs.insert(f, n - 1);
        }
        if n < l {
            self.runs.insert(n + 1, l);
        }
    }

    /// The smallest number in the set.
    pub fn first(&self) -> Option<u64> {
        self.runs.keys().next().copied()
    }

    /// The largest number in the set.
    pub fn last(&self) -> Option<u64> {
        self.runs.values().next_back().copied()
    }

    /// The last number of the run holding `n`.
    pub fn run_end(&self, n: u64) -> Option<u64> {
        self.run_of(n).map(|(_, l)| l)
    }

    /// How many runs the set holds (what it costs in memory).
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The missing runs of `first..=last`.
    pub fn gaps(&self, first: u64, last: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        if first > last {
            return out;
        }
        let mut next = first;
        // The run holding `first` (starting before it), then every run starting inside.
        let before = self.run_of(first).into_iter();
        let inside = self
            .runs
            .range(first..=last)
            .map(|(&f, &l)| (f, l))
            .filter(|&(f, _)| f > first);
        for (f, l) in before.chain(inside) {
            if f > next {
                out.push((next, f - 1));
            }
            if l >= last {
                return out;
            }
            next = next.max(l + 1);
        }
        out.push((next, last));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(ns: &[u64]) -> Runs {
        let mut r = Runs::default();
        for &n in ns {
            r.insert(n);
        }
        r
    }

    #[test]
    fn consecutive_numbers_in_any_order_are_one_run() {
        let mut r = Runs::default();
        for n in (0..100_000).rev().step_by(2).chain((0..100_000).step_by(2)) {
            r.insert(n);
        }
        assert_eq!(r.len(), 1);
        assert_eq!((r.first(), r.last()), (Some(0), Some(99_999)));
        // A repeat changes nothing.
        r.insert(500);
        assert_eq!(r.len(), 1);
        // Filling the hole between two runs merges them.
        let mut r = of(&[1, 2, 4, 5]);
        assert_eq!(r.len(), 2);
        r.insert(3);
        assert_eq!(r, of(&[1, 2, 3, 4, 5]));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn removing_splits_a_run() {
        let mut r = of(&[1, 2, 3, 4, 5]);
        r.remove(3);
        assert_eq!(r, of(&[1, 2, 4, 5]));
        r.remove(1);
        r.remove(5);
        r.remove(9);
        assert_eq!(r, of(&[2, 4]));
        assert_eq!((r.run_end(2), r.run_end(3)), (Some(2), None));
    }

    #[test]
    fn gaps_are_the_missing_runs_of_a_range() {
        let r = of(&[3, 4, 5, 9, 10, 20]);
        assert_eq!(r.gaps(1, 25), [(1, 2), (6, 8), (11, 19), (21, 25)]);
        assert_eq!(r.gaps(4, 10), [(6, 8)]);
        assert_eq!(r.gaps(4, 5), []);
        assert_eq!(r.gaps(6, 8), [(6, 8)]);
        assert_eq!(r.gaps(10, 12), [(11, 12)]);
        assert_eq!(r.gaps(5, 4), []);
        assert_eq!(Runs::default().gaps(0, 2), [(0, 2)]);
        assert_eq!(r.run_end(9), Some(10));
    }
}
