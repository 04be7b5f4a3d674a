//! The decisions of a sync, as pure functions over plain data: whether a file must be sent,
//! which remote keys have no local file any more, and whether deleting them is allowed now.
//! Everything that can lose data or skip a changed file is here, under table tests.
//!
//! A file is unchanged when the object holds its size and the modification time we stored in
//! the object's metadata when we uploaded it (a HEAD, no read of the file); `--checksum`, or an
//! object another tool wrote without that metadata, compares content instead. Deletions follow
//! `full-sync`'s rules: never from an empty source, never after any failure (an unread
//! directory or a failed upload leaves the local side unknown), never a key uploaded in this
//! run, and no more than `--max-deletes` without `--force`.
//!
//! With client-side encryption an object is an age file: its listed size is the ciphertext's,
//! never the file's ([`Stored::Sealed`]), so sizes only rule out what cannot hold the file and
//! the stamp in the metadata (or the record's ETag) decides; content is compared as plaintext.
//! An object of exactly the file's size is then a plaintext one, written before encryption was
//! turned on, and is sent again encrypted, as an encrypted one is sent again in clear when
//! encryption is turned off: the bucket comes to hold what the configuration says.

use std::collections::{BTreeSet, HashSet};

use super::local::Stamp;
use crate::store::ObjectMeta;

/// User metadata: the source file's modification time (`SECONDS.NANOSECONDS`).
pub const META_MTIME: &str = "barmans3-mtime";
/// User metadata: the source file's size in bytes.
pub const META_SIZE: &str = "barmans3-size";

/// How files are compared with objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compare {
    /// Size and the modification time stored in the object's metadata.
    #[default]
    SizeMtime,
    /// Size and content (CRC32C or the object's own checksum).
    Checksum,
}

/// How an object's stored size relates to the size of the file it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stored {
    /// The same (no client-side encryption).
    #[default]
    Plain,
    /// An age object: the file's size, the header and a tag per chunk.
    Sealed,
}

impl Stored {
    /// Whether an object of `stored` bytes can hold a file of `file` bytes.
    pub fn holds(self, stored: u64, file: u64) -> bool {
        match self {
            Stored::Plain => stored == file,
            Stored::Sealed => crate::crypt::could_hold(stored, file),
        }
    }
}

/// What the bucket listing said about a key before any per-object request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// The prefix was listed: the object's size, or `None` when it is absent.
    Listed(Option<u64>),
    /// Not listed (change lists): a HEAD tells.
    Unknown,
}

/// The next step for a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it.
    Upload,
    /// The object already holds it.
    Unchanged,
    /// HEAD the object, then decide with [`by_metadata`].
    Head,
    /// Compare the file's content with the object's checksum (reads the file, not the object
    /// when the object carries a checksum we can recompute).
    CompareContent,
}

/// The metadata an upload stores so the next run can compare without reading the file.
pub fn metadata_for(stamp: &Stamp) -> std::collections::BTreeMap<String, String> {
    [
        (META_MTIME.to_string(), stamp.mtime_text()),
        (META_SIZE.to_string(), stamp.size.to_string()),
    ]
    .into_iter()
    .collect()
}

/// The decision the listing allows: absent, or of a size that cannot hold the file, means send.
pub fn by_listing(stamp: &Stamp, known: Known, stored: Stored) -> Verdict {
    match known {
        Known::Listed(None) => Verdict::Upload,
        Known::Listed(Some(size)) if !stored.holds(size, stamp.size) => Verdict::Upload,
        _ => Verdict::Head,
    }
}

/// What this host last sent for a file, from the sync record: the stamp the file had and the
/// ETag the object got. Only files whose object carries that stamp in its metadata (sent by us,
/// or found so by a HEAD) are recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sent {
    /// Bytes.
    pub size: u64,
    /// [`Stamp::mtime_text`], as stored in the object's metadata.
    pub mtime: String,
    /// The object's ETag.
    pub etag: String,
}

impl Sent {
    /// The record of a file with this stamp whose object has this ETag.
    pub fn new(stamp: &Stamp, etag: Option<&str>) -> Option<Sent> {
        Some(Sent {
            size: stamp.size,
            mtime: stamp.mtime_text(),
            etag: etag.filter(|e| !e.is_empty())?.to_string(),
        })
    }
}

/// The decision the record allows where the listing said "same size" ([`Verdict::Head`]):
/// unchanged when the file still has the stamp it was recorded with and the listed object
/// still has the recorded ETag (the object is the one that carries that stamp in its metadata,
/// which is what a HEAD would have checked); anything else, or `--checksum`, asks the object.
pub fn by_record(
    stamp: &Stamp,
    listed_etag: Option<&str>,
    sent: Option<&Sent>,
    compare: Compare,
) -> Verdict {
    match (listed_etag, sent) {
        (Some(etag), Some(s))
            if compare == Compare::SizeMtime
                && s.size == stamp.size
                && s.mtime == stamp.mtime_text()
                && s.etag == etag =>
        {
            Verdict::Unchanged
        }
        _ => Verdict::Head,
    }
}

/// The decision after a HEAD (`None`: no such object).
pub fn by_metadata(
    stamp: &Stamp,
    head: Option<&ObjectMeta>,
    compare: Compare,
    stored: Stored,
) -> Verdict {
    let Some(meta) = head else {
        return Verdict::Upload;
    };
    if !stored.holds(meta.size, stamp.size) {
        return Verdict::Upload;
    }
    if compare == Compare::Checksum {
        return Verdict::CompareContent;
    }
    match (meta.metadata.get(META_MTIME), meta.metadata.get(META_SIZE)) {
        (Some(m), Some(s)) if *m == stamp.mtime_text() && *s == stamp.size.to_string() => {
            Verdict::Unchanged
        }
        (Some(_), _) | (_, Some(_)) => Verdict::Upload,
        // Written by another tool (an earlier `aws s3 sync`): the content decides.
        (None, None) => Verdict::CompareContent,
    }
}

/// What the local side holds, by relative path: directories, and everything else that exists
/// (files, links, special and archived files).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalIndex {
    /// Directories.
    pub dirs: HashSet<String>,
    /// Non-directories.
    pub others: HashSet<String>,
}

/// The remote relative keys with nothing local behind them. A key ending in `/` (a folder
/// marker) stays while the directory exists; a plain key stays while a non-directory of that
/// name exists (a file, but also a link or archived file we did not send).
pub fn orphans(remote: &[String], local: &LocalIndex) -> Vec<String> {
    remote
        .iter()
        .filter(|rel| match rel.strip_suffix('/') {
            _ if rel.is_empty() => false, // the marker of KEY_PREFIX itself
            Some("") => false,
            Some(dir) => !local.dirs.contains(dir),
            None => !local.others.contains(rel.as_str()),
        })
        .cloned()
        .collect()
}

/// The state a deletion decision depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard {
    /// SRC_DIR has no entries at all.
    pub source_empty: bool,
    /// Failed files, unreadable directories, unmappable names, missing listed paths.
    pub failures: usize,
    /// At most this many keys without `force`.
    pub max_deletes: usize,
    /// `--force`.
    pub force: bool,
}

/// Why nothing is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// SRC_DIR is empty: an unmounted filesystem looks exactly like this.
    EmptySource,
    /// Something failed: the local side is not fully known.
    Failures(usize),
    /// More keys than `--max-deletes`; they are listed for `--dry-run`.
    TooMany {
        /// The keys that would go.
        keys: Vec<String>,
        /// The cap.
        max: usize,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::EmptySource => write!(
                f,
                "refusing to delete: SRC_DIR is empty (an unmounted filesystem?)"
            ),
            Refusal::Failures(n) => write!(
                f,
                "refusing to delete: {n} paths failed or are missing, so the source is not fully known; fix them and run again"
            ),
            Refusal::TooMany { keys, max } => write!(
                f,
                "refusing to delete {} keys (more than --max-deletes {max}); check with --dry-run, then run with --force or a higher --max-deletes",
                keys.len()
            ),
        }
    }
}

/// The keys to delete, sorted, without duplicates and without any key uploaded in this run, or
/// why none may be.
pub fn plan_deletes(
    candidates: impl IntoIterator<Item = String>,
    uploaded: &HashSet<String>,
    g: Guard,
) -> Result<Vec<String>, Refusal> {
    if g.source_empty {
        return Err(Refusal::EmptySource);
    }
    if g.failures > 0 {
        return Err(Refusal::Failures(g.failures));
    }
    let keys: Vec<String> = candidates
        .into_iter()
        .filter(|k| !uploaded.contains(k))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if keys.len() > g.max_deletes && !g.force {
        return Err(Refusal::TooMany {
            keys,
            max: g.max_deletes,
        });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(size: u64, mtime_ns: i128) -> Stamp {
        Stamp {
            size,
            mtime_ns,
            ctime_ns: 0,
            ino: (1, 1),
        }
    }
    fn object(size: u64, meta: &[(&str, &str)]) -> ObjectMeta {
        let mut o = ObjectMeta::listed("k", size);
        o.metadata = meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        o
    }

    #[test]
    fn the_listing_decides_absent_and_resized_objects() {
        use Verdict::*;
        let s = stamp(10, 5);
        let cases = [
            (Known::Listed(None), Upload),
            (Known::Listed(Some(9)), Upload),
            (Known::Listed(Some(10)), Head),
            (Known::Unknown, Head),
        ];
        for (known, want) in cases {
            assert_eq!(by_listing(&s, known, Stored::Plain), want, "{known:?}");
        }
    }

    /// Encrypted: the listed size is the ciphertext's. An object that could hold the file asks
    /// the record or a HEAD; one of the file's own size is a plaintext object (sent again,
    /// encrypted); one too small or too large for the file is sent.
    #[test]
    fn with_encryption_the_listed_size_only_rules_out() {
        use Verdict::*;
        let s = stamp(10, 5);
        let sealed = crate::crypt::Layout::new(200).sealed_len(10);
        let cases = [
            (Known::Listed(None), Upload),
            (Known::Listed(Some(sealed)), Head),
            (Known::Listed(Some(10)), Upload),
            (Known::Listed(Some(9)), Upload),
            (Known::Listed(Some(sealed + 70_000)), Upload),
            (Known::Unknown, Head),
        ];
        for (known, want) in cases {
            assert_eq!(by_listing(&s, known, Stored::Sealed), want, "{known:?}");
        }
        // Turning encryption off sends an encrypted object again in clear.
        assert_eq!(
            by_listing(&s, Known::Listed(Some(sealed)), Stored::Plain),
            Upload
        );
    }

    /// Encrypted, after a HEAD: the stamp in the metadata decides as without encryption, once
    /// the stored size can hold the file; `--checksum` and another tool's object compare
    /// (plaintext) content.
    #[test]
    fn with_encryption_metadata_decides_what_the_size_cannot() {
        use Verdict::*;
        let s = stamp(10, 1_700_000_000_000_000_001);
        let m = s.mtime_text();
        let sealed = crate::crypt::Layout::new(200).sealed_len(10);
        let ours = [(META_MTIME, m.as_str()), (META_SIZE, "10")];
        let touched = [(META_MTIME, "1700000000.000000002"), (META_SIZE, "10")];
        let cases: Vec<(ObjectMeta, Compare, Verdict)> = vec![
            (object(sealed, &ours), Compare::SizeMtime, Unchanged),
            (object(sealed, &touched), Compare::SizeMtime, Upload),
            (
                object(sealed, &[(META_MTIME, &m), (META_SIZE, "11")]),
                Compare::SizeMtime,
                Upload,
            ),
            (object(sealed, &ours), Compare::Checksum, CompareContent),
            (object(sealed, &[]), Compare::SizeMtime, CompareContent),
            // The file's own size: a plaintext object, even with our stamp.
            (object(10, &ours), Compare::SizeMtime, Upload),
            (object(10, &[]), Compare::Checksum, Upload),
            (object(sealed + 70_000, &ours), Compare::SizeMtime, Upload),
        ];
        for (head, compare, want) in cases {
            assert_eq!(
                by_metadata(&s, Some(&head), compare, Stored::Sealed),
                want,
                "{head:?} {compare:?}"
            );
        }
        assert_eq!(
            by_metadata(&s, None, Compare::SizeMtime, Stored::Sealed),
            Upload
        );
    }

    #[test]
    fn the_record_spares_a_head_only_for_the_same_stamp_and_etag() {
        use Verdict::*;
        let s = stamp(10, 1_700_000_000_000_000_001);
        let sent = Sent::new(&s, Some("e1")).expect("etag");
        let touched = stamp(10, 1_700_000_000_000_000_002);
        let resized = stamp(11, 1_700_000_000_000_000_001);
        let cases = [
            (&s, Some("e1"), Some(&sent), Compare::SizeMtime, Unchanged),
            // The object was replaced (another ETag), or the listing gave none.
            (&s, Some("e2"), Some(&sent), Compare::SizeMtime, Head),
            (&s, None, Some(&sent), Compare::SizeMtime, Head),
            // The file was touched (same size, another mtime) or resized.
            (&touched, Some("e1"), Some(&sent), Compare::SizeMtime, Head),
            (&resized, Some("e1"), Some(&sent), Compare::SizeMtime, Head),
            // Never recorded, or the content is to be compared.
            (&s, Some("e1"), None, Compare::SizeMtime, Head),
            (&s, Some("e1"), Some(&sent), Compare::Checksum, Head),
        ];
        for (st, etag, rec, compare, want) in cases {
            assert_eq!(by_record(st, etag, rec, compare), want, "{etag:?} {rec:?}");
        }
        assert_eq!(Sent::new(&s, Some("")), None);
        assert_eq!(Sent::new(&s, None), None);
    }

    #[test]
    fn metadata_decides_without_reading_the_file() {
        use Verdict::*;
        let s = stamp(10, 1_700_000_000_000_000_001);
        let m = s.mtime_text();
        let cases: Vec<(Option<ObjectMeta>, Compare, Verdict)> = vec![
            (None, Compare::SizeMtime, Upload),
            (
                Some(object(10, &[(META_MTIME, &m), (META_SIZE, "10")])),
                Compare::SizeMtime,
                Unchanged,
            ),
            // One nanosecond later is a change (a touch -d of the same second too).
            (
                Some(object(
                    10,
                    &[(META_MTIME, "1700000000.000000002"), (META_SIZE, "10")],
                )),
                Compare::SizeMtime,
                Upload,
            ),
            (
                Some(object(10, &[(META_MTIME, &m), (META_SIZE, "11")])),
                Compare::SizeMtime,
                Upload,
            ),
            (
                Some(object(10, &[(META_MTIME, &m)])),
                Compare::SizeMtime,
                Upload,
            ),
            (
                Some(object(11, &[(META_MTIME, &m), (META_SIZE, "10")])),
                Compare::SizeMtime,
                Upload,
            ),
            // Another tool's object: compare bytes rather than send them again.
            (Some(object(10, &[])), Compare::SizeMtime, CompareContent),
            (
                Some(object(10, &[(META_MTIME, &m), (META_SIZE, "10")])),
                Compare::Checksum,
                CompareContent,
            ),
            (Some(object(3, &[])), Compare::Checksum, Upload),
        ];
        for (head, compare, want) in cases {
            assert_eq!(
                by_metadata(&s, head.as_ref(), compare, Stored::Plain),
                want,
                "{head:?} {compare:?}"
            );
        }
        assert_eq!(metadata_for(&s)[META_MTIME], m);
    }

    #[test]
    fn orphans_are_keys_without_a_local_entry_of_their_kind() {
        let local = LocalIndex {
            dirs: ["d", "d/e"].iter().map(|s| s.to_string()).collect(),
            others: ["f", "d/g", "link", "archived"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let remote: Vec<String> = [
            "f", "d/g", "link", "archived", "gone", "d/gone", "d", "d/e/", "x/", "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // "d" was a file and is a directory now: the file is gone.
        assert_eq!(orphans(&remote, &local), ["gone", "d/gone", "d", "x/"]);
    }

    #[test]
    fn deletions_follow_full_syncs_refusal_rules() {
        let up: HashSet<String> = ["p/new".to_string()].into();
        let cands = || ["p/b", "p/a", "p/new", "p/a"].map(String::from);
        let g = |source_empty, failures, max_deletes, force| Guard {
            source_empty,
            failures,
            max_deletes,
            force,
        };
        let ab = Ok(vec!["p/a".to_string(), "p/b".to_string()]);
        let too_many = Err(Refusal::TooMany {
            keys: vec!["p/a".into(), "p/b".into()],
            max: 1,
        });
        let cases = [
            (g(false, 0, 1000, false), ab.clone()),
            (g(true, 0, 1000, true), Err(Refusal::EmptySource)),
            (g(false, 2, 1000, true), Err(Refusal::Failures(2))),
            (g(false, 0, 2, false), ab.clone()),
            (g(false, 0, 1, false), too_many),
            (g(false, 0, 1, true), ab.clone()),
            (
                g(false, 0, 0, false),
                Err(Refusal::TooMany {
                    keys: vec!["p/a".into(), "p/b".into()],
                    max: 0,
                }),
            ),
        ];
        for (guard, want) in cases {
            assert_eq!(plan_deletes(cands(), &up, guard), want, "{guard:?}");
        }
        // Nothing to delete is never a refusal for the cap.
        assert_eq!(
            plan_deletes(Vec::new(), &up, g(false, 0, 0, false)),
            Ok(vec![])
        );
    }
}
