//! The spool of prefetched WAL segments ([`super::prefetch`]): one directory per server and
//! store, files that appear only whole (temp + rename) and only after the checks of a direct
//! fetch, served by a rename once they are checked again, and never when stale (older than
//! [`MAX_AGE`]), behind the segment PostgreSQL asked for, of another cluster, or damaged.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::barman::wal::{self, WalKind};
use crate::error::{Error, Result};
use crate::fsutil;

/// A spooled file older than this is discarded, never served.
pub const MAX_AGE: Duration = Duration::from_secs(600);
/// The prefetcher exits after this long without a new request.
pub(super) const IDLE_EXIT: Duration = Duration::from_secs(30);
/// How long a "not in the bucket" answer is remembered.
pub(super) const MISSING_TTL: Duration = Duration::from_secs(2);

pub(super) const LOCK: &str = ".prefetch.lock";
const WANT: &str = ".want";
const IDENTITY: &str = ".identity";
/// What `.identity` holds when the bucket has no identity.json.
const NO_IDENTITY: &str = "none";
const LOG: &str = ".prefetch.log";
const SEG_SIZE: &str = ".segsize";
/// The segment size PostgreSQL uses unless initdb was told otherwise.
pub(super) const DEFAULT_SEG: u64 = 16 << 20;

/// The spool of one server and store.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

/// Prefetch settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depth {
    /// Segments fetched ahead of the one PostgreSQL asked for.
    pub segments: usize,
    /// Bytes the spool may hold.
    pub bytes: u64,
}

impl Spool {
    /// The spool for a `wal-restore` writing to `dest`, if prefetching applies: `dest` is
    /// recovery's `RECOVERYXLOG`. `base` is the configured spool directory, else `.barmans3-spool`
    /// beside `dest` (in `pg_wal`, on the same filesystem, so serving is a rename).
    pub fn for_request(
        base: Option<&Path>,
        server: &str,
        store_id: &str,
        dest: &Path,
    ) -> Option<Spool> {
        if dest.file_name()? != "RECOVERYXLOG" {
            return None;
        }
        let base = match base {
            Some(b) => b.to_path_buf(),
            None => fsutil::parent_dir(dest).join(".barmans3-spool"),
        };
        let tag = format!("{:08x}", crate::checksum::crc32c(store_id.as_bytes()));
        Some(Spool {
            dir: std::path::absolute(base.join(format!("{server}-{tag}"))).ok()?,
        })
    }

    /// The spool at a directory (the prefetcher's side).
    pub fn at(dir: PathBuf) -> Spool {
        Spool { dir }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn ensure(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io(format!("create spool {}", self.dir.display()), e))
    }

    /// Records that PostgreSQL now wants `name`, and drops what lies behind it on its
    /// timeline (PostgreSQL never asks backwards within one recovery).
    pub fn want(&self, name: &str) -> Result<()> {
        self.ensure()?;
        fsutil::write_atomic(&self.dir.join(WANT), name.as_bytes())?;
        for (entry, _) in self.entries() {
            if wal::timeline(&entry) == wal::timeline(name) && wal::compare(&entry, name).is_lt() {
                let _ = std::fs::remove_file(self.dir.join(&entry));
            }
        }
        Ok(())
    }

    pub(super) fn wanted(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join(WANT)).ok()
    }

    /// Spooled segments with their age; stale ones are removed on the way.
    pub(super) fn entries(&self) -> Vec<(String, Duration)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if wal::classify(&name) != Some(WalKind::Segment) {
                continue;
            }
            let age = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or(MAX_AGE);
            if age >= MAX_AGE {
                let _ = std::fs::remove_file(e.path());
            } else {
                out.push((name, age));
            }
        }
        out
    }

    /// Moves spooled `name` to `dest` if it is there, fresh, and still reads as that segment
    /// of this cluster; its size when served. A file that does not is removed, never served.
    pub fn take(&self, name: &str, dest: &Path) -> Result<Option<u64>> {
        let path = self.dir.join(name);
        if !self.entries().iter().any(|(n, _)| n == name) {
            return Ok(None);
        }
        // The first page proves which segment and cluster a file is; the prefetcher checked
        // the rest before the rename that made it visible.
        let head = read_head(&path, super::walrestore::SEGMENT_HEAD);
        let intact = head.as_ref().is_some_and(|(data, len)| {
            super::walrestore::check_segment_head(name, data, *len, false).is_ok()
                && super::walrestore::is_system(data, self.identity())
        });
        let Some((_, size)) = head.filter(|_| intact) else {
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        };
        match std::fs::rename(&path, dest) {
            Ok(()) => {
                fsutil::sync_dir(fsutil::parent_dir(dest))?;
                Ok(Some(size))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            // Another filesystem (a configured spool elsewhere): copy, atomically.
            Err(_) => {
                let bytes = std::fs::read(&path)
                    .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
                crate::directio::write_atomic(dest, &bytes)?;
                let _ = std::fs::remove_file(&path);
                Ok(Some(size))
            }
        }
    }

    /// Waits up to `patience` for `name` while the prefetcher is fetching it.
    pub async fn take_when_ready(
        &self,
        name: &str,
        dest: &Path,
        patience: Duration,
    ) -> Result<Option<u64>> {
        let started = Instant::now();
        loop {
            if let Some(n) = self.take(name, dest)? {
                return Ok(Some(n));
            }
            let inflight = self.dir.join(format!("{name}.inflight")).exists();
            if !inflight || !self.prefetcher_running() || started.elapsed() > patience {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether a prefetcher holds the spool's lock.
    pub fn prefetcher_running(&self) -> bool {
        match std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join(LOCK))
        {
            Ok(f) => match f.try_lock() {
                Ok(()) => false,
                Err(std::fs::TryLockError::WouldBlock) => true,
                Err(_) => false,
            },
            Err(_) => false,
        }
    }

    /// Starts a prefetcher unless one runs: `command` is this program with the arguments that
    /// reach the same config and store. It outlives this call on purpose (PostgreSQL runs one
    /// `restore_command` per segment); it holds the spool lock, exits when idle, and its output
    /// goes to the spool's log.
    pub fn start_prefetcher(&self, mut command: std::process::Command) -> Result<()> {
        if self.prefetcher_running() {
            return Ok(());
        }
        self.ensure()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(LOG))
            .map_err(|e| Error::io("open the prefetch log", e))?;
        use std::os::unix::process::CommandExt;
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io("start the WAL prefetcher", e))?;
        Ok(())
    }

    /// The cluster's system identifier as the spool last saw it in the bucket.
    pub fn identity(&self) -> Option<u64> {
        self.known_identity().flatten()
    }

    /// What the spool last saw in the bucket: `Some(None)` when the bucket had no identity
    /// (WALs shipped without a base backup), `None` when it has not looked yet. Remembering
    /// the absence spares every later restore_command call a request.
    pub fn known_identity(&self) -> Option<Option<u64>> {
        let text = std::fs::read_to_string(self.dir.join(IDENTITY)).ok()?;
        match text.trim() {
            NO_IDENTITY => Some(None),
            id => id.parse().ok().map(Some),
        }
    }

    /// Records the bucket's system identifier (or its absence); a change empties the spool
    /// first.
    pub fn set_identity(&self, system: Option<u64>) -> Result<()> {
        if self.known_identity().is_some_and(|old| old != system) {
            for (name, _) in self.entries() {
                let _ = std::fs::remove_file(self.dir.join(name));
            }
        }
        self.ensure()?;
        let text = system.map_or(NO_IDENTITY.to_string(), |s| s.to_string());
        fsutil::write_atomic(&self.dir.join(IDENTITY), text.as_bytes())
    }

    /// The cluster's segment size as the spool last learnt it (16 MiB until then).
    pub fn seg_size(&self) -> u64 {
        std::fs::read_to_string(self.dir.join(SEG_SIZE))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(DEFAULT_SEG)
    }

    /// Records the segment size a fetched segment showed.
    pub fn learn_seg_size(&self, size: Option<u64>) {
        if let Some(s) = size
            && s != self.seg_size()
        {
            let _ = fsutil::write_atomic(&self.dir.join(SEG_SIZE), s.to_string().as_bytes());
        }
    }

    /// Bytes of spooled segments.
    pub(super) fn held_bytes(&self) -> u64 {
        self.entries()
            .iter()
            .filter_map(|(n, _)| std::fs::metadata(self.dir.join(n)).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// The first `n` bytes of a file (fewer if it is shorter) and its length.
fn read_head(path: &Path, n: usize) -> Option<(Vec<u8>, u64)> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut head = Vec::with_capacity(n);
    f.take(n as u64).read_to_end(&mut head).ok()?;
    Some((head, len))
}

/// Remembers a "not in the bucket" answer for [`MISSING_TTL`], so repeated asks for the end
/// of the archive do not each cost a request.
pub fn remember_missing(spool: &Spool, name: &str) {
    let _ = std::fs::write(spool.dir.join(format!("{name}.missing")), b"");
}

/// Whether `name` was found missing moments ago.
pub fn recently_missing(spool: &Spool, name: &str) -> bool {
    std::fs::metadata(spool.dir.join(format!("{name}.missing")))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < MISSING_TTL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_recoverys_own_file_uses_the_spool() {
        let a = Spool::for_request(None, "pg", "s3 x", Path::new("/d/pg_wal/RECOVERYXLOG"));
        assert!(
            a.expect("spool")
                .dir()
                .starts_with("/d/pg_wal/.barmans3-spool")
        );
        assert!(
            Spool::for_request(
                None,
                "pg",
                "s3 x",
                Path::new("/tmp/rewind/000000010000000000000005")
            )
            .is_none()
        );
        // Another server or store: another directory.
        let b = Spool::for_request(None, "pg2", "s3 x", Path::new("/d/pg_wal/RECOVERYXLOG"));
        let c = Spool::for_request(None, "pg", "s3 y", Path::new("/d/pg_wal/RECOVERYXLOG"));
        let a = Spool::for_request(None, "pg", "s3 x", Path::new("/d/pg_wal/RECOVERYXLOG"));
        assert_ne!(a.as_ref().map(Spool::dir), b.as_ref().map(Spool::dir));
        assert_ne!(a.as_ref().map(Spool::dir), c.as_ref().map(Spool::dir));
    }

    #[test]
    fn stale_or_passed_entries_are_never_served() {
        let d = tempfile::tempdir().expect("tmp");
        let spool = Spool::at(d.path().join("spool"));
        spool.ensure().expect("ensure");
        let seg = |n: &str| crate::barman::recover::walrestore::tests::segment(n, 1 << 20);
        for n in ["000000010000000000000004", "000000010000000000000006"] {
            std::fs::write(spool.dir().join(n), seg(n)).expect("w");
        }
        spool.want("000000010000000000000005").expect("want");
        let dest = d.path().join("RECOVERYXLOG");
        assert_eq!(
            spool.take("000000010000000000000004", &dest).expect("take"),
            None
        );
        assert_eq!(
            spool.take("000000010000000000000006", &dest).expect("take"),
            Some(1 << 20)
        );
        // A damaged entry is discarded.
        let bad = spool.dir().join("000000010000000000000009");
        std::fs::write(&bad, b"x").expect("w");
        assert_eq!(
            spool.take("000000010000000000000009", &dest).expect("take"),
            None
        );
        assert!(!bad.exists());
        // So is one whose header is right but whose length is not (only the head is read).
        let short = spool.dir().join("000000010000000000000008");
        std::fs::write(&short, &seg("000000010000000000000008")[..(1 << 20) - 1]).expect("w");
        assert_eq!(
            spool.take("000000010000000000000008", &dest).expect("take"),
            None
        );
        assert!(!short.exists());
        // An old entry is discarded.
        let old = spool.dir().join("000000010000000000000007");
        std::fs::write(&old, seg("000000010000000000000007")).expect("w");
        let f = std::fs::File::options()
            .write(true)
            .open(&old)
            .expect("open");
        f.set_modified(std::time::SystemTime::now() - MAX_AGE - Duration::from_secs(1))
            .expect("age");
        assert_eq!(
            spool.take("000000010000000000000007", &dest).expect("take"),
            None
        );
        assert!(!old.exists());
        // Another cluster's identity empties the spool.
        std::fs::write(
            spool.dir().join("000000010000000000000008"),
            seg("000000010000000000000008"),
        )
        .expect("w");
        spool.set_identity(Some(1)).expect("id");
        spool.set_identity(Some(2)).expect("id");
        assert_eq!(
            spool.take("000000010000000000000008", &dest).expect("take"),
            None
        );
        // A bucket without identity is remembered as such, and an identity appearing later
        // is a change like any other.
        let seg9 = spool.dir().join("000000010000000000000009");
        spool.set_identity(None).expect("id");
        assert_eq!(spool.known_identity(), Some(None));
        std::fs::write(&seg9, seg("000000010000000000000009")).expect("w");
        spool.set_identity(Some(3)).expect("id");
        assert_eq!(spool.known_identity(), Some(Some(3)));
        assert!(!seg9.exists());
    }
}
