//! Object versions and per-version Object Lock, in our own types: what a versioned bucket
//! keeps of a key (every version and delete marker), and the requests that read, delete or
//! re-lock one version. Two capabilities use them: [`super::Versions`] (reads as of a time,
//! and the lock proof's DELETE) and the per-version half of [`super::Retention`].
//!
//! [`as_of`] is the one decision here: which version of each key a bucket showed at a time.
//! It is pure, because reading the wrong version restores the wrong bytes.

use std::time::SystemTime;

use super::ObjectMeta;
use super::s3::LockMode;

/// Whether a bucket keeps old versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versioning {
    /// Every overwrite and delete keeps the previous version.
    Enabled,
    /// Versioning was on once: old versions are kept, new writes replace the null version.
    Suspended,
    /// Never enabled: there is nothing older to read.
    Off,
    /// The store answered in a form that could not be read (moto names the answer's root
    /// element differently): judged by the versions listed instead.
    Unknown,
}

/// One entry of a version listing: a version of a key, or a delete marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// Full key.
    pub key: String,
    /// The store's version id (`null` for what was written before versioning).
    pub version_id: String,
    /// When this version (or delete marker) was written.
    pub last_modified: Option<SystemTime>,
    /// Size in bytes (0 for a delete marker).
    pub size: u64,
    /// ETag without quotes, if known.
    pub etag: Option<String>,
    /// A delete marker: the key was deleted at `last_modified`.
    pub delete_marker: bool,
}

/// Where a version listing goes on: the last key and version id of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMarker {
    /// Key marker.
    pub key: String,
    /// Version id marker.
    pub version_id: String,
}

/// One page of a version listing: keys in order, each key's versions newest first.
#[derive(Debug, Clone, Default)]
pub struct VersionPage {
    /// Versions and delete markers.
    pub versions: Vec<ObjectVersion>,
    /// Where the next page starts, `None` when this was the last.
    pub next: Option<VersionMarker>,
}

/// An Object Lock retention on one object version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockSpec {
    /// Governance or compliance.
    pub mode: LockMode,
    /// The version cannot be deleted or overwritten before this.
    pub until: SystemTime,
}

/// A key as the bucket showed it at a time: its listing entry and the version to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionAsOf {
    /// Key, size, ETag and modification time of that version.
    pub meta: ObjectMeta,
    /// The version id to read it by.
    pub version_id: String,
}

/// The keys a bucket held at `time`, sorted by key: for each key, its newest entry written at
/// or before `time`, unless that entry is a delete marker. An entry without a date is never
/// chosen (nothing says it existed then). Entries of a key need not be adjacent or ordered:
/// the newest is found by date, and of two with the same date (S3 dates have whole seconds)
/// the one listed first, which S3 lists newest first.
pub fn as_of(entries: &[ObjectVersion], time: SystemTime) -> Vec<VersionAsOf> {
    let mut fold = AsOfFold::new(time);
    fold.add(entries.iter().cloned());
    fold.finish()
}

/// [`as_of`] a listing page at a time: only each key's chosen entry is kept, never the whole
/// history, so a prefix with many overwritten versions costs memory per key, not per version.
#[derive(Debug)]
pub struct AsOfFold {
    time: SystemTime,
    best: std::collections::BTreeMap<String, ObjectVersion>,
    seen: usize,
    only_null: bool,
}

impl AsOfFold {
    /// An empty fold for the bucket as it was at `time`.
    pub fn new(time: SystemTime) -> Self {
        AsOfFold {
            time,
            best: Default::default(),
            seen: 0,
            only_null: true,
        }
    }

    /// Takes the next entries of the listing, in the order listed.
    pub fn add(&mut self, entries: impl IntoIterator<Item = ObjectVersion>) {
        for e in entries {
            self.seen += 1;
            self.only_null &= e.version_id == "null" && !e.delete_marker;
            let Some(t) = e.last_modified.filter(|t| *t <= self.time) else {
                continue;
            };
            match self.best.get(e.key.as_str()) {
                Some(b) if b.last_modified.is_some_and(|bt| bt >= t) => {}
                _ => {
                    self.best.insert(e.key.clone(), e);
                }
            }
        }
    }

    /// Whether every entry taken carried the null version and none was a delete marker (and
    /// there was at least one): the listing of a bucket that never had versioning on.
    pub fn looks_unversioned(&self) -> bool {
        self.seen > 0 && self.only_null
    }

    /// The keys as of the time, sorted by key.
    pub fn finish(self) -> Vec<VersionAsOf> {
        self.best
            .into_values()
            .filter(|e| !e.delete_marker)
            .map(|e| {
                let mut meta = ObjectMeta::listed(&e.key, e.size);
                meta.etag = e.etag;
                meta.last_modified = e.last_modified;
                VersionAsOf {
                    meta,
                    version_id: e.version_id,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn v(key: &str, id: &str, t: u64, size: u64) -> ObjectVersion {
        ObjectVersion {
            key: key.into(),
            version_id: id.into(),
            last_modified: Some(at(t)),
            size,
            etag: Some(format!("e-{id}")),
            delete_marker: false,
        }
    }

    fn marker(key: &str, id: &str, t: u64) -> ObjectVersion {
        ObjectVersion {
            delete_marker: true,
            size: 0,
            etag: None,
            ..v(key, id, t, 0)
        }
    }

    fn ids(view: &[VersionAsOf]) -> Vec<(&str, &str)> {
        view.iter()
            .map(|e| (e.meta.key.as_str(), e.version_id.as_str()))
            .collect()
    }

    #[test]
    fn each_key_reads_its_newest_version_not_newer_than_the_time() {
        // As S3 lists them: keys in order, versions newest first.
        let entries = [
            v("a", "a3", 300, 3),
            v("a", "a2", 200, 2),
            v("a", "a1", 100, 1),
            marker("b", "b2", 250),
            v("b", "b1", 150, 5),
            v("c", "c1", 210, 7),
        ];
        assert_eq!(ids(&as_of(&entries, at(200))), [("a", "a2"), ("b", "b1")]);
        assert_eq!(as_of(&entries, at(200))[0].meta.size, 2);
        // Deleted at 250: gone at 260, there at 249.
        assert_eq!(ids(&as_of(&entries, at(260))), [("a", "a2"), ("c", "c1")]);
        assert_eq!(ids(&as_of(&entries, at(300))), [("a", "a3"), ("c", "c1")]);
        assert_eq!(
            ids(&as_of(&entries, at(249))),
            [("a", "a2"), ("b", "b1"), ("c", "c1")]
        );
        // Before anything was written, nothing.
        assert!(as_of(&entries, at(99)).is_empty());
        // Exactly at a version's date, that version.
        assert_eq!(ids(&as_of(&entries, at(100))), [("a", "a1")]);
    }

    #[test]
    fn a_key_recreated_after_a_delete_marker_reads_again() {
        let entries = [
            v("k", "k3", 300, 3),
            marker("k", "k2", 200),
            v("k", "k1", 100, 1),
        ];
        assert!(as_of(&entries, at(250)).is_empty());
        assert_eq!(ids(&as_of(&entries, at(300))), [("k", "k3")]);
    }

    #[test]
    fn same_second_versions_take_the_one_listed_first_and_order_does_not_matter() {
        let entries = [v("k", "new", 100, 2), v("k", "old", 100, 1)];
        assert_eq!(ids(&as_of(&entries, at(100))), [("k", "new")]);
        // Listed out of order by date: still the newest by date.
        let shuffled = [
            v("k", "k1", 100, 1),
            v("j", "j1", 50, 1),
            v("k", "k2", 200, 2),
        ];
        assert_eq!(ids(&as_of(&shuffled, at(500))), [("j", "j1"), ("k", "k2")]);
    }

    #[test]
    fn an_entry_without_a_date_is_never_chosen() {
        let mut undated = v("k", "k2", 0, 2);
        undated.last_modified = None;
        let entries = [undated, v("k", "k1", 100, 1)];
        assert_eq!(ids(&as_of(&entries, at(1000))), [("k", "k1")]);
    }

    #[test]
    fn folding_page_by_page_chooses_what_the_whole_listing_does() {
        let entries = [
            v("a", "a3", 300, 3),
            v("a", "a2", 200, 2),
            marker("b", "b2", 250),
            v("b", "b1", 100, 1),
            v("c", "c2", 100, 5),
            v("c", "c1", 100, 4),
        ];
        for cut in 0..=entries.len() {
            let mut fold = AsOfFold::new(at(260));
            fold.add(entries[..cut].to_vec());
            fold.add(entries[cut..].to_vec());
            assert_eq!(fold.finish(), as_of(&entries, at(260)), "cut at {cut}");
        }
        let mut nulls = AsOfFold::new(at(260));
        assert!(!nulls.looks_unversioned(), "nothing listed proves nothing");
        nulls.add([v("a", "null", 100, 1)]);
        assert!(nulls.looks_unversioned());
        nulls.add([marker("a", "null", 200)]);
        assert!(!nulls.looks_unversioned());
    }
}
