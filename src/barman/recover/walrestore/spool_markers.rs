//! The markers a `restore_command` call leaves in the spool for the prefetcher and for the
//! next call: what PostgreSQL asked for last (`.want`), what was found absent (`.missing`) and
//! the cluster being recovered (`.cluster`). Only `.missing` answers a request, so it is the one
//! that must never be read half-written.

use std::time::SystemTime;

use rustix::fs::OFlags;

use super::super::Expected;
use super::{CLUSTER, MISSING, MISSING_TTL, Spool, WANT};
use crate::barman::wal::{self, WalKind};
use crate::error::{Error, Result};

impl Spool {
    /// Records that PostgreSQL now asks for `name` (and, by the file's mtime, when). Written
    /// over the last name in place, and cut only when that was longer: on ext4, truncating a
    /// file to nothing makes its close start writing it back, 0.1 ms of every call instead of
    /// 3 µs. A reader racing the write may meet a mix of two names; the prefetcher only plans
    /// a tick from it, and nothing is served or answered by it (unlike `.missing`).
    pub fn want(&self, name: &str) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.open_at(WANT, OFlags::WRONLY | OFlags::CREATE)
            .and_then(|f| {
                f.write_all_at(name.as_bytes(), 0)?;
                if f.metadata()?.len() > name.len() as u64 {
                    f.set_len(name.len() as u64)?;
                }
                Ok(())
            })
            .map_err(|e| Error::io(format!("write {}", self.dir.join(WANT).display()), e))
    }

    /// The segment PostgreSQL asked for last, and when.
    pub fn wanted(&self) -> Option<(String, SystemTime)> {
        let (name, at) = self.read_marker(WANT)?;
        (wal::classify(&name) == Some(WalKind::Segment)).then_some((name, at))
    }

    /// Remembers that `name` is not in the bucket, for [`MISSING_TTL`].
    pub fn remember_missing(&self, name: &str) {
        let _ = self.write_marker(MISSING, name);
    }

    /// Whether `name` was found missing moments ago.
    pub fn recently_missing(&self, name: &str) -> bool {
        self.read_marker(MISSING)
            .is_some_and(|(n, at)| n == name && at.elapsed().is_ok_and(|age| age < MISSING_TTL))
    }

    /// What the spool knows of the cluster being recovered.
    pub fn expected(&self) -> Expected {
        let Some((text, _)) = self.read_marker(CLUSTER) else {
            return Expected::default();
        };
        let field = |key: &str| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
        };
        Expected {
            system: field("system"),
            seg_size: field("seg_size"),
        }
    }

    /// Records what is known of the cluster; a change of cluster empties the spool first.
    pub fn set_expected(&self, e: Expected) -> Result<()> {
        let old = self.expected();
        if old == e {
            return Ok(());
        }
        let changed = |a: Option<u64>, b: Option<u64>| a.is_some() && b.is_some() && a != b;
        if changed(old.system, e.system) || changed(old.seg_size, e.seg_size) {
            for entry in self.entries() {
                self.remove(&entry.file);
            }
        }
        let text = |v: Option<u64>| v.map_or_else(|| "none".to_string(), |v| v.to_string());
        self.write_marker(
            CLUSTER,
            &format!("system={} seg_size={}\n", text(e.system), text(e.seg_size)),
        )
    }
}
