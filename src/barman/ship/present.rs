//! Which files of a backup are already in the bucket, decided from one listing of the backup's
//! prefix: a rerun of `base-sync` for a backup whose files went up before (a task queued again,
//! a run that failed or died before backup.info) sends only what is missing or different.
//!
//! The decision ([`decide`]) is pure: absent or of another size means send; listed with the
//! ETag this host recorded when it sent the file, while the file still has the size,
//! modification and change time it had then, means unchanged (the CRC32C the manifest needs
//! comes from the record); anything else is compared by content (a HEAD and a read of the local
//! file), and sent when that is not conclusive. The record ([`BaseRecord`]) is a cache, never an
//! authority: missing, unreadable or of another backup it only costs comparisons.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Format version of a record file.
const VERSION: u32 = 1;

/// What this host sent for one file of a backup: the file's stamp then, and what the object got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// Bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Change time, nanoseconds since the epoch.
    pub ctime_ns: i128,
    /// The object's ETag.
    pub etag: String,
    /// CRC32C of the bytes.
    pub crc32c: u32,
}

/// A local file as the scan saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// Bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Change time, nanoseconds since the epoch.
    pub ctime_ns: i128,
}

/// What the listing of the backup's prefix said about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Bytes.
    pub size: u64,
    /// ETag, when the store gave one.
    pub etag: Option<String>,
}

/// The next step for a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Present {
    /// Not there, or not the same: send it (or copy it from the previous backup).
    Send,
    /// The object holds the file's bytes, whose CRC32C is this.
    Unchanged(u32),
    /// The same size, nothing recorded that proves the content: compare it.
    Compare,
}

/// Decides one file from the listing and the record.
pub fn decide(local: &Local, listed: Option<&Listed>, row: Option<&Row>) -> Present {
    let Some(listed) = listed else {
        return Present::Send;
    };
    if listed.size != local.size {
        return Present::Send;
    }
    match (listed.etag.as_deref(), row) {
        (Some(etag), Some(r))
            if !etag.is_empty()
                && r.etag == etag
                && r.size == local.size
                && r.mtime_ns == local.mtime_ns
                && r.ctime_ns == local.ctime_ns =>
        {
            Present::Unchanged(r.crc32c)
        }
        _ => Present::Compare,
    }
}

/// The record of what this host sent of one backup to one store, by key tail.
#[derive(Debug, Default)]
pub struct BaseRecord {
    path: PathBuf,
    backup: String,
    /// Rows by path relative to the backup directory.
    pub rows: HashMap<String, Row>,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    backup: String,
    rows: HashMap<String, Row>,
}

impl BaseRecord {
    /// The record at `path` for backup `backup` (`server/id`); empty when there is none or it
    /// cannot be used.
    pub fn load(path: &Path, backup: &str) -> BaseRecord {
        let mut r = BaseRecord {
            path: path.to_path_buf(),
            backup: backup.to_string(),
            rows: HashMap::new(),
        };
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return r,
            Err(e) => {
                tracing::warn!("base-sync record {}: {e}; comparing", path.display());
                return r;
            }
        };
        match serde_json::from_slice::<OnDisk>(&text) {
            Ok(d) if d.version == VERSION && d.backup == backup => r.rows = d.rows,
            _ => tracing::warn!(
                "base-sync record {}: unreadable or of another backup; comparing",
                path.display()
            ),
        }
        r
    }

    /// Replaces the file with `rows` (through the atomic helper).
    pub fn save(&self, rows: HashMap<String, Row>) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        let d = OnDisk {
            version: VERSION,
            backup: self.backup.clone(),
            rows,
        };
        let text = serde_json::to_vec(&d)
            .map_err(|e| Error::Failed(format!("base-sync record: cannot encode: {e}")))?;
        crate::fsutil::write_atomic(&self.path, &text)
    }
}

/// Removes the records of backups Barman no longer has (`keep`: the ids it has) from `dir`,
/// the records of one server in one store. Best effort: a record left behind only takes room.
pub fn prune(dir: &Path, keep: &std::collections::BTreeSet<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix(".json")
            && !keep.contains(id)
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Local = Local {
        size: 10,
        mtime_ns: 100,
        ctime_ns: 200,
    };

    fn row(etag: &str) -> Row {
        Row {
            size: 10,
            mtime_ns: 100,
            ctime_ns: 200,
            etag: etag.into(),
            crc32c: 7,
        }
    }

    fn listed(size: u64, etag: Option<&str>) -> Listed {
        Listed {
            size,
            etag: etag.map(str::to_string),
        }
    }

    /// (case, listed, row, local) → decision.
    type Case = (&'static str, Option<Listed>, Option<Row>, Local, Present);

    #[test]
    fn only_a_recorded_etag_and_stamp_skip_the_comparison() {
        let touched = Local { mtime_ns: 101, ..L };
        let rewritten = Local { ctime_ns: 201, ..L };
        let grown = Local { size: 11, ..L };
        let cases: Vec<Case> = vec![
            ("absent", None, Some(row("e")), L, Present::Send),
            (
                "another size in the bucket",
                Some(listed(9, Some("e"))),
                Some(row("e")),
                L,
                Present::Send,
            ),
            (
                "recorded, same ETag, same stamp",
                Some(listed(10, Some("e"))),
                Some(row("e")),
                L,
                Present::Unchanged(7),
            ),
            (
                "another writer replaced the object",
                Some(listed(10, Some("f"))),
                Some(row("e")),
                L,
                Present::Compare,
            ),
            (
                "no ETag listed",
                Some(listed(10, None)),
                Some(row("e")),
                L,
                Present::Compare,
            ),
            (
                "empty ETags prove nothing",
                Some(listed(10, Some(""))),
                Some(row("")),
                L,
                Present::Compare,
            ),
            (
                "nothing recorded",
                Some(listed(10, Some("e"))),
                None,
                L,
                Present::Compare,
            ),
            (
                "file touched since",
                Some(listed(10, Some("e"))),
                Some(row("e")),
                touched,
                Present::Compare,
            ),
            (
                "file rewritten in place (ctime)",
                Some(listed(10, Some("e"))),
                Some(row("e")),
                rewritten,
                Present::Compare,
            ),
            (
                "file grew",
                Some(listed(10, Some("e"))),
                Some(row("e")),
                grown,
                Present::Send,
            ),
        ];
        for (name, l, r, local, want) in cases {
            assert_eq!(decide(&local, l.as_ref(), r.as_ref()), want, "{name}");
        }
    }

    #[test]
    fn a_record_is_read_back_only_for_its_backup_and_pruned_with_it() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("pg").join("20261101T010000.json");
        assert!(BaseRecord::load(&p, "pg/20261101T010000").rows.is_empty());
        let r = BaseRecord::load(&p, "pg/20261101T010000");
        r.save(HashMap::from([("data/a".to_string(), row("e"))]))
            .expect("save");
        let back = BaseRecord::load(&p, "pg/20261101T010000");
        assert_eq!(back.rows["data/a"], row("e"));
        assert!(
            BaseRecord::load(&p, "other/20261101T010000")
                .rows
                .is_empty()
        );
        std::fs::write(&p, b"{").expect("corrupt");
        assert!(BaseRecord::load(&p, "pg/20261101T010000").rows.is_empty());
        let keep = std::collections::BTreeSet::from(["20261102T010000".to_string()]);
        prune(&d.path().join("pg"), &keep);
        assert!(!p.exists(), "a deleted backup's record goes");
    }
}
