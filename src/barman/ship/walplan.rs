//! Which WAL files `wal-sync` sends: a pure function of the local archive, the bucket's listing
//! and the ledger of files already known to be in the bucket with the same content, so every
//! rule is unit-tested without a server.
//!
//! - absent from the bucket: upload;
//! - in the bucket with another size: a conflict, never overwritten; except a smaller object
//!   this store's ledger says we shipped from this file (a writer that closed it early and
//!   wrote on): once its bytes are shown to be a prefix of the file's, it is shipped again;
//! - in the bucket with the same size: settled only if the ledger knows this very file (size
//!   and modification time) to be there and the listing shows the ETag the ledger recorded
//!   (another ETag: the object was replaced); otherwise its content is compared (same size is
//!   not same content: every WAL segment is 16 MiB). A ledger entry from before ETags were
//!   kept, or a store whose listing gives none, settles by size and modification time as
//!   before; the listed ETag is then adopted into the ledger;
//! - before the listing's start: settled by earlier runs, not looked at.

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use super::present::Listed;
use super::state::{Known, Ledger};

/// A local WAL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalWal {
    /// Path relative to `wals/` (`<hash>/<name>` or `<name>.history`).
    pub rel: String,
    /// Absolute path.
    pub path: PathBuf,
    /// Bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
}

impl LocalWal {
    /// The hash directory the file lives in (`""` for history files at the top of `wals/`).
    pub fn hash_dir(&self) -> &str {
        self.rel.rsplit_once('/').map_or("", |(d, _)| d)
    }

    /// The file's name.
    pub fn name(&self) -> &str {
        self.rel
            .rsplit_once('/')
            .map_or(self.rel.as_str(), |(_, n)| n)
    }

    /// Whether the ledger knows this very file as the object listed with `etag`: `Some(true)`
    /// when it does and the ledger lacks that ETag, `Some(false)` when the ledger has it.
    fn known_in(&self, ledger: &Ledger, etag: Option<&str>) -> Option<bool> {
        let k = ledger.get(self.name())?;
        if k.size != self.size || k.mtime_ns != self.mtime_ns {
            return None;
        }
        match (k.etag.as_deref(), etag.filter(|e| !e.is_empty())) {
            (Some(known), Some(listed)) if known != listed => None,
            (None, Some(_)) => Some(true),
            _ => Some(false),
        }
    }

    /// Whether the ledger says this host sent this file, unchanged since, as the object now
    /// listed with `etag` (both ETags known and equal).
    fn sent_as(&self, ledger: &Ledger, etag: Option<&str>) -> bool {
        ledger.get(self.name()).is_some_and(|k| {
            k.size == self.size
                && k.mtime_ns == self.mtime_ns
                && matches!((k.etag.as_deref(), etag), (Some(a), Some(b)) if !a.is_empty() && a == b)
        })
    }

    /// The ledger entry for this file with content `crc32c` in an object with `etag`.
    pub fn known(&self, crc32c: u32, etag: Option<String>) -> Known {
        Known {
            size: self.size,
            mtime_ns: self.mtime_ns,
            crc32c,
            etag: etag.filter(|e| !e.is_empty()),
        }
    }
}

/// What to do with the local files of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalPlan {
    /// Absent from the bucket.
    pub upload: Vec<LocalWal>,
    /// In the bucket with the same size, not known: compare the content.
    pub verify: Vec<LocalWal>,
    /// In the bucket with another size: `rel: N bytes here, M in the bucket`.
    pub conflicts: Vec<String>,
    /// In the bucket smaller than here, and what is there is what we shipped from this file
    /// before it grew: shipped again once the object is shown to be a prefix of the file.
    pub regrown: Vec<Regrown>,
    /// Known to be in the bucket with the same content.
    pub settled: usize,
    /// Settled files whose ledger entry lacks the ETag the listing shows: the ETag to record.
    pub adopt: Vec<(LocalWal, String)>,
}

/// A file that grew after we shipped part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regrown {
    /// The file as it is now.
    pub file: LocalWal,
    /// What the ledger says we shipped (the object's size, and the CRC32C of its bytes).
    pub shipped: Known,
}

impl Regrown {
    /// Whether the object may be replaced by the file: the first `shipped.size` bytes of the
    /// file have the CRC32C we shipped (`prefix_crc`) and the object in the bucket holds them
    /// (`object_matches`): the object is a prefix of the file, nothing in it is lost.
    pub fn replaceable(&self, prefix_crc: u32, object_matches: bool) -> bool {
        self.shipped.size < self.file.size && prefix_crc == self.shipped.crc32c && object_matches
    }

    /// The conflict line when it may not be replaced.
    pub fn conflict(&self) -> String {
        format!(
            "{}: {} bytes here, {} in the bucket, which are not the start of this file",
            self.file.rel, self.file.size, self.shipped.size
        )
    }
}

/// Decides each local file. `remote` maps `rel` to what the bucket lists; `ledgers` maps a
/// hash directory to what is known of it; files whose `rel` sorts at or before `start_after`
/// were not listed and are left alone.
pub fn plan(
    local: &[LocalWal],
    remote: &BTreeMap<String, Listed>,
    ledgers: &BTreeMap<String, Ledger>,
    start_after: Option<&str>,
) -> WalPlan {
    let mut p = WalPlan::default();
    let empty = Ledger::new();
    for f in local {
        if start_after.is_some_and(|sa| f.rel.as_str() <= sa) {
            continue;
        }
        let ledger = ledgers.get(f.hash_dir()).unwrap_or(&empty);
        let Some(listed) = remote.get(&f.rel) else {
            p.upload.push(f.clone());
            continue;
        };
        let s = listed.size;
        if s != f.size && f.sent_as(ledger, listed.etag.as_deref()) {
            // Encrypted: the object is larger than the file, and the very one this host sent
            // (the ETag it recorded, the file unchanged since).
            p.settled += 1;
        } else if s < f.size && ledger.get(f.name()).is_some_and(|k| k.size == s) {
            p.regrown.push(Regrown {
                file: f.clone(),
                shipped: ledger[f.name()].clone(),
            });
        } else if s != f.size {
            p.conflicts.push(format!(
                "{}: {} bytes here, {s} in the bucket",
                f.rel, f.size
            ));
        } else {
            match f.known_in(ledger, listed.etag.as_deref()) {
                Some(adopt) => {
                    p.settled += 1;
                    if let (true, Some(e)) = (adopt, &listed.etag) {
                        p.adopt.push((f.clone(), e.clone()));
                    }
                }
                None => p.verify.push(f.clone()),
            }
        }
    }
    p
}

/// The new listing window: hash directories before the second-newest are complete in the
/// bucket once a run succeeded; the newest two stay in the window, because late `.backup` and
/// `.partial` files land in the previous one.
pub fn next_window(hash_dirs: &[String], old: Option<String>) -> Option<String> {
    match hash_dirs.len() {
        0 => old,
        1 => Some(hash_dirs[0].clone()),
        n => Some(hash_dirs[n - 2].clone()),
    }
}

/// Whether a file absent from the bucket may be shipped now by `wal-sync --follow`, which
/// reacts within milliseconds: its writer announced it finished (closed it, or renamed it into
/// place, as Barman does), or it has not been modified for `settle_ns`. A file still being
/// written (a copy across filesystems) waits, so the bucket never gets half of it.
pub fn settled(f: &LocalWal, announced: bool, now_ns: i128, settle_ns: i128) -> bool {
    announced || now_ns.saturating_sub(f.mtime_ns) >= settle_ns
}

/// [`next_window`], held back to the hash directory of the oldest file left for a later run:
/// that directory is not complete in the bucket yet.
pub fn window_keeping(
    hash_dirs: &[String],
    old: Option<String>,
    deferred: &[LocalWal],
) -> Option<String> {
    let next = next_window(hash_dirs, old);
    match deferred
        .iter()
        .map(LocalWal::hash_dir)
        .filter(|d| !d.is_empty())
        .min()
    {
        Some(d) => Some(next.map_or(d.to_string(), |n| n.min(d.to_string()))),
        None => next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal(rel: &str, size: u64, mtime: i128) -> LocalWal {
        LocalWal {
            rel: rel.into(),
            path: PathBuf::from("/w").join(rel),
            size,
            mtime_ns: mtime,
        }
    }

    const A: &str = "0000000100000000/000000010000000000000001";
    const B: &str = "0000000100000000/000000010000000000000002";
    const H: &str = "00000002.history";

    fn ledger(entries: &[(&str, u64, i128)]) -> BTreeMap<String, Ledger> {
        let mut out: BTreeMap<String, Ledger> = BTreeMap::new();
        for (rel, size, mtime) in entries {
            let w = wal(rel, *size, *mtime);
            out.entry(w.hash_dir().to_string())
                .or_default()
                .insert(w.name().to_string(), w.known(0, None));
        }
        out
    }

    fn listed(size: u64, etag: Option<&str>) -> Listed {
        Listed {
            size,
            etag: etag.map(str::to_string),
        }
    }

    /// (ledger's ETag, listed ETag) → (verify, settled, adopted): a replaced object is
    /// compared; an entry without an ETag adopts the listed one; a listing without ETags (a
    /// file:// store) leaves size and modification time to decide.
    #[test]
    fn a_listed_etag_other_than_the_ledgers_means_the_object_was_replaced() {
        let s = 16 << 20;
        let cases = [
            (Some("a"), Some("a"), (0, 1, 0)),
            (Some("a"), Some("b"), (1, 0, 0)),
            (None, Some("b"), (0, 1, 1)),
            (Some("a"), None, (0, 1, 0)),
            (None, None, (0, 1, 0)),
            (Some("a"), Some(""), (0, 1, 0)),
        ];
        for (known, etag, want) in cases {
            let f = wal(A, s, 1);
            let ledgers = BTreeMap::from([(
                f.hash_dir().to_string(),
                Ledger::from([(f.name().to_string(), f.known(9, known.map(str::to_string)))]),
            )]);
            let remote = BTreeMap::from([(A.to_string(), listed(s, etag))]);
            let p = plan(&[f], &remote, &ledgers, None);
            assert_eq!(
                (p.verify.len(), p.settled, p.adopt.len()),
                want,
                "{known:?} {etag:?}"
            );
            if want.2 == 1 {
                assert_eq!(p.adopt[0].1, "b");
            }
        }
    }

    /// An encrypted WAL is listed larger than the file: settled only as the very object this
    /// host sent (its recorded ETag, the file unchanged); anything else is a conflict.
    #[test]
    fn a_larger_object_is_settled_only_as_the_one_this_host_sent() {
        let s = 16 << 20;
        let sealed = s + 4096;
        for (known, etag, mtime, settled) in [
            (Some("a"), Some("a"), 1, true),
            (Some("a"), Some("b"), 1, false),
            (None, Some("a"), 1, false),
            (Some("a"), None, 1, false),
            (Some("a"), Some("a"), 2, false),
        ] {
            let f = wal(A, s, 1);
            let ledgers = BTreeMap::from([(
                f.hash_dir().to_string(),
                Ledger::from([(f.name().to_string(), f.known(9, known.map(str::to_string)))]),
            )]);
            let now = wal(A, s, mtime);
            let remote = BTreeMap::from([(A.to_string(), listed(sealed, etag))]);
            let p = plan(&[now], &remote, &ledgers, None);
            assert_eq!(
                (p.settled, p.conflicts.len()),
                if settled { (1, 0) } else { (0, 1) },
                "{known:?} {etag:?} {mtime}"
            );
        }
    }

    /// (case, local, remote, ledger, start_after) → (upload, verify, conflicts, settled)
    #[test]
    fn each_rule_decides_as_documented() {
        type Case<'a> = (
            &'a str,
            Vec<LocalWal>,
            Vec<(&'a str, u64)>,
            Vec<(&'a str, u64, i128)>,
            Option<&'a str>,
            (usize, usize, usize, usize),
        );
        let s = 16 << 20;
        let cases: Vec<Case> = vec![
            (
                "absent: upload",
                vec![wal(A, s, 1)],
                vec![],
                vec![],
                None,
                (1, 0, 0, 0),
            ),
            (
                "same size, unknown: verify",
                vec![wal(A, s, 1)],
                vec![(A, s)],
                vec![],
                None,
                (0, 1, 0, 0),
            ),
            (
                "same size, known: settled",
                vec![wal(A, s, 1)],
                vec![(A, s)],
                vec![(A, s, 1)],
                None,
                (0, 0, 0, 1),
            ),
            (
                "known, but touched since: verify",
                vec![wal(A, s, 2)],
                vec![(A, s)],
                vec![(A, s, 1)],
                None,
                (0, 1, 0, 0),
            ),
            (
                "known with another size: verify",
                vec![wal(A, s, 1)],
                vec![(A, s)],
                vec![(A, 5, 1)],
                None,
                (0, 1, 0, 0),
            ),
            (
                "other size: conflict",
                vec![wal(A, s, 1)],
                vec![(A, 7)],
                vec![(A, s, 1)],
                None,
                (0, 0, 1, 0),
            ),
            (
                "before the window: left alone",
                vec![wal(A, s, 1), wal(B, s, 1)],
                vec![],
                vec![],
                Some(A),
                (1, 0, 0, 0),
            ),
            (
                "history files: same rules",
                vec![wal(H, 40, 1)],
                vec![(H, 40)],
                vec![],
                None,
                (0, 1, 0, 0),
            ),
            (
                "history known",
                vec![wal(H, 40, 1)],
                vec![(H, 40)],
                vec![(H, 40, 1)],
                None,
                (0, 0, 0, 1),
            ),
            (
                "remote only: nothing to do",
                vec![],
                vec![(A, s)],
                vec![],
                None,
                (0, 0, 0, 0),
            ),
            (
                "mixed",
                vec![wal(A, s, 1), wal(B, s, 1), wal(H, 9, 1)],
                vec![(A, s), (H, 10)],
                vec![(A, s, 1)],
                None,
                (1, 0, 1, 1),
            ),
        ];
        for (name, local, remote, known, sa, want) in cases {
            let remote: BTreeMap<String, Listed> = remote
                .into_iter()
                .map(|(k, v)| (k.to_string(), listed(v, None)))
                .collect();
            let p = plan(&local, &remote, &ledger(&known), sa);
            assert_eq!(
                (p.upload.len(), p.verify.len(), p.conflicts.len(), p.settled),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn a_file_that_grew_after_we_shipped_its_start_is_shipped_again_only_as_a_prefix() {
        let s = 16 << 20;
        let remote = |size| BTreeMap::from([(A.to_string(), listed(size, None))]);
        // Shipped at its first close with 8 MiB, then written on to 16 MiB.
        let p = plan(
            &[wal(A, s, 2)],
            &remote(8 << 20),
            &ledger(&[(A, 8 << 20, 1)]),
            None,
        );
        assert_eq!((p.regrown.len(), p.conflicts.len()), (1, 0), "{p:?}");
        let r = &p.regrown[0];
        assert_eq!(r.shipped.size, 8 << 20);
        assert!(r.replaceable(0, true), "our prefix, still in the bucket");
        assert!(!r.replaceable(1, true), "the file's start changed since");
        assert!(
            !r.replaceable(0, false),
            "the object is not what we shipped"
        );
        assert!(r.conflict().contains("not the start of this file"));
        // Not ours (no ledger entry, or one of another size), or bigger than the file: a
        // conflict as before.
        for (local, known) in [
            (s, vec![]),
            (s, vec![(A, 4 << 20, 1)]),
            (4 << 20, vec![(A, 8 << 20, 1)]),
        ] {
            let p = plan(&[wal(A, local, 2)], &remote(8 << 20), &ledger(&known), None);
            assert_eq!((p.regrown.len(), p.conflicts.len()), (0, 1), "{known:?}");
        }
    }

    #[test]
    fn follow_ships_announced_or_quiet_files_only() {
        let f = wal(A, 10, 1_000);
        assert!(settled(&f, true, 1_000, 2_000), "announced: at once");
        assert!(!settled(&f, false, 2_999, 2_000), "still fresh");
        assert!(settled(&f, false, 3_000, 2_000), "quiet long enough");
        assert!(
            !settled(&wal(A, 10, 5_000), false, 1_000, 2_000),
            "mtime ahead of the clock"
        );
    }

    #[test]
    fn a_deferred_file_holds_the_window_at_its_directory() {
        let d = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let dirs = d(&["0000000100000000", "0000000100000001", "0000000100000002"]);
        assert_eq!(
            window_keeping(&dirs, None, &[]),
            Some("0000000100000001".into())
        );
        let late = wal("0000000100000000/000000010000000000000009", 1, 0);
        assert_eq!(
            window_keeping(&dirs, None, &[late]),
            Some("0000000100000000".into())
        );
        let newest = wal("0000000100000002/000000010000000200000001", 1, 0);
        assert_eq!(
            window_keeping(&dirs, None, &[newest, wal(H, 1, 0)]),
            Some("0000000100000001".into()),
            "a deferred file after the window, or a history file, changes nothing"
        );
    }

    #[test]
    fn the_window_keeps_the_newest_two_directories() {
        let d = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(next_window(&d(&[]), Some("x".into())), Some("x".into()));
        assert_eq!(next_window(&d(&["a"]), None), Some("a".into()));
        assert_eq!(next_window(&d(&["a", "b", "c"]), None), Some("b".into()));
    }
}
