//! The spool of prefetched WAL segments: one directory per recovery (server, store and the
//! data directory's `pg_wal`, so two recoveries never share one), created 0700 by the user
//! recovery runs as and refused, in one line, when someone else owns it or others can write to
//! it. Everything in it is opened relative to the directory as it was checked (no path is
//! looked up twice), without following links, and must be a regular file of ours.
//!
//! A spooled segment is written from bytes whose CRC-32C was taken as they came from the
//! bucket and decoded and checked as a direct fetch checks them, and is named with that
//! CRC-32C only when whole (`<segment>.<crc32c>`). A call serves it when it is our own regular
//! file younger than [`MAX_AGE`] whose first page names it and this cluster and whose size is
//! the cluster's segment size, and nobody else can write here. Spool files are not fsynced
//! (PostgreSQL asks again after a crash), so a crash of the machine can tear them: a spool the
//! prefetcher did not fill during this boot ([`Spool::claim_boot`]) has each segment read back
//! whole at the call and matched against its name, and a torn file never passes. During the
//! boot that wrote them the files are what the page cache was given (a write error at close on
//! a network filesystem, or a volume rolled back under a running system, is not looked for), and
//! reading each one back at every call would put 16 MiB of reading and checksumming on the
//! path PostgreSQL waits on. A spool on another filesystem than `%p` is copied, and proven
//! whole on the way.
//!
//! Every name a spool holds, in one place:
//!
//! | name | written by | meaning |
//! |---|---|---|
//! | `<segment>.<crc32c>` | prefetcher | a fetched, decoded and checked segment, whole; moved to `%p` when served |
//! | `.fetch-<segment>` | prefetcher | a segment being fetched; renamed to `<segment>.<crc32c>` when whole, removed when the fetch fails |
//! | `.want` | restore_command | the segment PostgreSQL asked for last; its mtime is the time of the last request (the prefetcher's idle clock) |
//! | `.missing` | restore_command | the file last found absent from the bucket, trusted for [`MISSING_TTL`] |
//! | `.cluster` | restore_command | the system identifier and segment size of the cluster being recovered |
//! | `.boot` | prefetcher | the boot during which it filled the spool (the kernel's boot id) |
//! | `.prefetch.lock` | prefetcher | locked while a prefetcher runs: one per spool |
//! | `.prefetch.log` | restore_command | the running prefetcher's log (its stderr), started afresh with each prefetcher |
//!
//! Anything else (what older versions wrote, a killed prefetcher's `.fetch-` files) is removed
//! by the next prefetcher; an idle prefetcher removes the whole spool when it exits (and the
//! default `.barmans3-spool` above it when that is empty), so a recovered cluster keeps none.
//! A request that meets a spool removed under it is served directly ([`Spool::removed`]).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, Mode, OFlags};

use super::Expected;
use super::decode::{SEGMENT_HEAD, check_segment_head, is_system};
use crate::barman::wal::{self, WalKind};
use crate::error::{Error, Result};

/// A spooled file older than this is discarded, never served.
pub const MAX_AGE: Duration = Duration::from_secs(600);
/// How long a "not in the bucket" answer is trusted.
pub const MISSING_TTL: Duration = Duration::from_secs(2);

const WANT: &str = ".want";
const MISSING: &str = ".missing";
const CLUSTER: &str = ".cluster";
const LOCK: &str = ".prefetch.lock";
const LOG: &str = ".prefetch.log";
const BOOT: &str = ".boot";
const FETCH: &str = ".fetch-";
/// How long after a prefetcher was started it counts as running even before it holds the lock.
const STARTING: Duration = Duration::from_secs(2);
/// The most of a marker file read.
const MARKER_MAX: u64 = 256;

/// The spool of one recovery, open.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    fd: Arc<OwnedFd>,
    uid: u32,
}

/// A spooled segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The segment's name.
    pub name: String,
    /// The file's name in the spool (`<segment>.<crc32c>`).
    pub file: String,
    /// The CRC-32C of its content, as the prefetcher recorded it.
    pub crc: u32,
    /// Its length.
    pub len: u64,
    /// Its age.
    pub age: Duration,
}

impl Spool {
    /// Where the spool of a `wal-restore` writing to `dest` is, if prefetching applies: `dest`
    /// is recovery's `RECOVERYXLOG` (never pg_rewind's paths). `base` is the configured spool
    /// directory, else `.barmans3-spool` in `pg_wal` (the same filesystem: serving is a rename).
    /// The name is the server's and a digest of the server, the store and the real `pg_wal`.
    pub fn path_for(
        base: Option<&Path>,
        server: &str,
        store_id: &str,
        dest: &Path,
    ) -> Option<PathBuf> {
        if dest.file_name()? != "RECOVERYXLOG" {
            return None;
        }
        let wal_dir = std::path::absolute(crate::fsutil::parent_dir(dest)).ok()?;
        let real = std::fs::canonicalize(&wal_dir).unwrap_or_else(|_| wal_dir.clone());
        let base = match base {
            Some(b) => std::path::absolute(b).ok()?,
            None => wal_dir.join(".barmans3-spool"),
        };
        use std::os::unix::ffi::OsStrExt;
        let key = [
            store_id.as_bytes(),
            server.as_bytes(),
            real.as_os_str().as_bytes(),
        ]
        .join(&0u8);
        let tag = crate::checksum::hex(&crate::checksum::md5(&key)[..8]);
        let safe: String = server
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Some(base.join(format!("{safe}-{tag}")))
    }

    /// Opens the spool at `dir`, creating it (and its parents) 0700 when missing. One that is a
    /// link, not a directory, not this user's, or writable by others is refused: whoever made
    /// it could hand recovery their own files.
    pub fn open(dir: &Path) -> Result<Spool> {
        use std::os::unix::fs::DirBuilderExt;
        let mut mk = std::fs::DirBuilder::new();
        mk.recursive(true).mode(0o700);
        if let Some(parent) = dir.parent() {
            mk.create(parent).map_err(|e| {
                Error::io(
                    format!("create the WAL spool's directory {}", parent.display()),
                    e,
                )
            })?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(Error::io(
                    format!("create the WAL spool {}", dir.display()),
                    e,
                ));
            }
        }
        let fd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            refuse(
                dir,
                &format!("cannot be opened as a directory of its own ({e})"),
            )
        })?;
        let st = rustix::fs::fstat(&fd)
            .map_err(|e| Error::io(format!("stat {}", dir.display()), e.into()))?;
        let uid = rustix::process::geteuid().as_raw();
        if st.st_uid != uid {
            return Err(refuse(
                dir,
                &format!("belongs to uid {}, not to this user (uid {uid})", st.st_uid),
            ));
        }
        if st.st_mode & 0o022 != 0 {
            return Err(refuse(
                dir,
                &format!(
                    "is writable by other users (mode {:o})",
                    st.st_mode & 0o7777
                ),
            ));
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            fd: Arc::new(fd),
            uid,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn open_at(&self, name: &str, flags: OFlags) -> std::io::Result<File> {
        let fd = rustix::fs::openat(
            &*self.fd,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::from_raw_mode(0o600),
        )?;
        Ok(File::from(fd))
    }

    /// Opens one of our regular files for reading, with its metadata; anything else is refused.
    fn open_ours(&self, name: &str) -> std::io::Result<(File, rustix::fs::Stat)> {
        let f = self.open_at(name, OFlags::RDONLY)?;
        let st = rustix::fs::fstat(&f)?;
        let regular = rustix::fs::FileType::from_raw_mode(st.st_mode).is_file();
        if !regular || st.st_uid != self.uid || st.st_nlink != 1 || st.st_mode & 0o022 != 0 {
            return Err(std::io::Error::other(
                "not a regular file of this user's, or linked or writable elsewhere",
            ));
        }
        Ok((f, st))
    }

    /// A marker's text and mtime.
    fn read_marker(&self, name: &str) -> Option<(String, SystemTime)> {
        let (f, st) = self.open_ours(name).ok()?;
        let mut text = String::new();
        f.take(MARKER_MAX).read_to_string(&mut text).ok()?;
        Some((text, mtime(&st)))
    }

    /// Writes a marker in place: its readers take only whole, valid contents.
    fn write_marker(&self, name: &str, text: &str) -> Result<()> {
        self.open_at(name, OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| Error::io(format!("write {}", self.dir.join(name).display()), e))
    }

    fn remove(&self, name: &str) {
        let _ = rustix::fs::unlinkat(&*self.fd, name, AtFlags::empty());
    }

    /// The names in the spool directory.
    fn names(&self) -> Vec<String> {
        let Ok(dir) = rustix::fs::Dir::read_from(&*self.fd) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str().ok().map(str::to_string))
            .filter(|n| n != "." && n != "..")
            .collect()
    }

    /// The spooled segments, with their length and age.
    pub fn entries(&self) -> Vec<Entry> {
        self.names()
            .into_iter()
            .filter_map(|file| {
                let (name, crc) = parse_entry(&file)?;
                let st =
                    rustix::fs::statat(&*self.fd, file.as_str(), AtFlags::SYMLINK_NOFOLLOW).ok()?;
                Some(Entry {
                    name,
                    crc,
                    len: st.st_size as u64,
                    age: mtime(&st).elapsed().unwrap_or(MAX_AGE),
                    file,
                })
            })
            .collect()
    }

    /// How long ago the prefetcher began fetching `name` (its `.fetch-` file's mtime; zero for
    /// one in the future), if it is fetching it.
    pub fn fetch_age(&self, name: &str) -> Option<Duration> {
        let st = rustix::fs::statat(
            &*self.fd,
            format!("{FETCH}{name}"),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .ok()?;
        Some(mtime(&st).elapsed().unwrap_or_default())
    }

    /// Moves spooled `name` to `dest` if it is there and proves itself: our own regular file,
    /// younger than [`MAX_AGE`], its first page this segment's of this cluster, and, unless the
    /// spool was filled during this boot, its whole content the CRC-32C recorded when it was
    /// fetched. Its size when served; a file that does not prove itself is removed, never
    /// served.
    pub fn take(&self, name: &str, dest: &Path, expected: &Expected) -> Result<Option<u64>> {
        let prefix = format!("{name}.");
        let Some(file) = self
            .names()
            .into_iter()
            .find(|f| f.starts_with(&prefix) && parse_entry(f).is_some_and(|(n, _)| n == name))
        else {
            return Ok(None);
        };
        let discard = |why: String| {
            tracing::warn!(
                "{}: discarded, not served: {why}",
                self.dir.join(&file).display()
            );
            self.remove(&file);
            Ok(None)
        };
        let whole = !self.this_boot();
        let len = match self.prove(&file, name, expected, whole) {
            Ok(len) => len,
            Err(why) => return discard(why),
        };
        match rustix::fs::renameat(&*self.fd, file.as_str(), rustix::fs::CWD, dest) {
            // PostgreSQL reads the file at once and asks again after a crash: no fsync.
            Ok(()) => Ok(Some(len)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            // Another filesystem (a configured spool elsewhere): copy, atomically. The copy
            // reads every byte anyway, so the whole content is proven in every case.
            Err(rustix::io::Errno::XDEV) => {
                if !whole && let Err(why) = self.prove(&file, name, expected, true) {
                    return discard(why);
                }
                let (mut f, _) = self.open_ours(&file).map_err(|e| {
                    Error::io(format!("open {}", self.dir.join(&file).display()), e)
                })?;
                super::place(dest, |out| std::io::copy(&mut f, out).map(|_| ()))?;
                self.remove(&file);
                Ok(Some(len))
            }
            Err(e) => Err(Error::io(
                format!(
                    "move {} to {}",
                    self.dir.join(&file).display(),
                    dest.display()
                ),
                e.into(),
            )),
        }
    }

    /// Checks a spooled file, its whole content too when `whole`; its length when it is what
    /// it should be.
    fn prove(
        &self,
        file: &str,
        name: &str,
        expected: &Expected,
        whole: bool,
    ) -> std::result::Result<u64, String> {
        let (_, crc) = parse_entry(file).ok_or("not a spool entry name")?;
        let (mut f, st) = self.open_ours(file).map_err(|e| e.to_string())?;
        if mtime(&st).elapsed().map_or(true, |age| age >= MAX_AGE) {
            return Err(format!("older than {} s", MAX_AGE.as_secs()));
        }
        let len = if whole {
            let (sum, len) = crate::checksum::crc32c_of_file(&f).map_err(|e| e.to_string())?;
            if sum != crc {
                return Err(format!(
                    "its content is not what was fetched (CRC-32C {sum:08x}, recorded {crc:08x})"
                ));
            }
            len
        } else {
            st.st_size as u64
        };
        let mut head = Vec::with_capacity(SEGMENT_HEAD);
        (&mut f)
            .take(SEGMENT_HEAD as u64)
            .read_to_end(&mut head)
            .map_err(|e| e.to_string())?;
        check_segment_head(name, &head, len, false)?;
        if expected.seg_size.is_some_and(|s| s != len) {
            return Err(format!(
                "it holds {len} bytes, not this cluster's segment size"
            ));
        }
        if !is_system(&head, expected.system) {
            return Err("it belongs to another database system".into());
        }
        Ok(len)
    }

    /// Starts writing segment `name` into the spool; what [`Pending::finish`] makes visible.
    pub fn begin(&self, name: &str) -> Result<Pending> {
        let temp = format!("{FETCH}{name}");
        let create = || self.open_at(&temp, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL);
        let file = match create() {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                self.remove(&temp);
                create()
            }
            other => other,
        }
        .map_err(|e| Error::io(format!("create {}", self.dir.join(&temp).display()), e))?;
        Ok(Pending {
            spool: self.clone(),
            name: name.to_string(),
            file: Some(file),
        })
    }

    /// Removes what is not a marker or a wanted entry: `.fetch-` files but those of `fetching`,
    /// entries `keep` refuses or too old to serve, and names this version does not write.
    /// Returns the entries kept.
    pub fn sweep(
        &self,
        fetching: &dyn Fn(&str) -> bool,
        keep: &dyn Fn(&Entry) -> bool,
    ) -> Vec<Entry> {
        let mut entries = self.entries();
        entries.retain(|e| {
            let ok = e.age < MAX_AGE && keep(e);
            if !ok {
                self.remove(&e.file);
            }
            ok
        });
        for file in self.names() {
            let remove = match file.as_str() {
                WANT | MISSING | CLUSTER | LOCK | LOG | BOOT => false,
                f if f.starts_with(FETCH) => !fetching(&f[FETCH.len()..]),
                f => parse_entry(f).is_none(),
            };
            if remove {
                self.remove(&file);
            }
        }
        entries
    }

    /// Removes every segment and the `.missing` marker: what an idle prefetcher leaves behind.
    pub fn clear(&self) {
        let _ = self.sweep(&|_| false, &|_| false);
        self.remove(MISSING);
    }

    /// Removes the spool of an idle prefetcher (the caller holds the lock): every name it
    /// holds, then the directory, then the default `.barmans3-spool` above it; each `rmdir` fails
    /// harmlessly when a request wrote something meanwhile.
    pub fn retire(&self) {
        self.clear();
        for name in [WANT, CLUSTER, LOG, BOOT, LOCK] {
            self.remove(name);
        }
        if std::fs::remove_dir(&self.dir).is_ok()
            && let Some(parent) = self.dir.parent()
            && parent.file_name().is_some_and(|n| n == ".barmans3-spool")
        {
            let _ = std::fs::remove_dir(parent);
        }
    }

    /// Whether the directory was removed since it was opened (an idle prefetcher retired it).
    pub fn removed(&self) -> bool {
        rustix::fs::fstat(&*self.fd).is_ok_and(|st| st.st_nlink == 0)
    }

    /// Takes the prefetcher's lock; `None` when another prefetcher holds it.
    pub fn lock(&self) -> Result<Option<File>> {
        let f = self
            .open_at(LOCK, OFlags::RDWR | OFlags::CREATE)
            .map_err(|e| Error::io(format!("open lock {}", self.dir.join(LOCK).display()), e))?;
        match f.try_lock() {
            Ok(()) => Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(
                format!("lock {}", self.dir.join(LOCK).display()),
                e,
            )),
        }
    }

    /// Whether a prefetcher runs (holds the lock) or was started moments ago (the lock file's
    /// mtime is when the last one was started; a lock changes no mtime).
    pub fn prefetcher_running(&self) -> bool {
        let Ok(f) = self.open_at(LOCK, OFlags::RDWR) else {
            return false;
        };
        if matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)) {
            return true;
        }
        rustix::fs::fstat(&f).is_ok_and(|st| mtime(&st).elapsed().is_ok_and(|age| age < STARTING))
    }

    /// Starts a prefetcher unless one runs: `command` is the prefetcher as the application
    /// starts it. It outlives this call on purpose (PostgreSQL runs one `restore_command` per
    /// segment); it holds the spool's lock, exits when recovery stops asking, and its log is
    /// the spool's.
    pub fn start_prefetcher(&self, command: impl FnOnce() -> std::process::Command) -> Result<()> {
        if self.prefetcher_running() {
            return Ok(());
        }
        let mut command = command();
        let log = self
            .open_at(LOG, OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC)
            .map_err(|e| Error::io("open the prefetch log", e))?;
        // Starting: the next call does not start another while this one takes the lock.
        let _ = self
            .open_at(LOCK, OFlags::RDWR | OFlags::CREATE)
            .and_then(|f| f.set_modified(SystemTime::now()));
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
}

/// The segment and CRC-32C of a spool entry's file name.
fn parse_entry(file: &str) -> Option<(String, u32)> {
    let (name, crc) = file.split_once('.')?;
    let hex = crc.len() == 8
        && crc
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (hex && wal::classify(name) == Some(WalKind::Segment))
        .then(|| Some((name.to_string(), u32::from_str_radix(crc, 16).ok()?)))?
}

fn mtime(st: &rustix::fs::Stat) -> SystemTime {
    let secs = Duration::new(st.st_mtime.max(0) as u64, st.st_mtime_nsec as u32);
    SystemTime::UNIX_EPOCH + secs
}

fn refuse(dir: &Path, why: &str) -> Error {
    Error::Config(format!(
        "the WAL spool {} {why}: another user could feed recovery its own files through it; remove it, or set barman.wal_spool_dir to a directory only this user can write",
        dir.display()
    ))
}

#[path = "spool_boot.rs"]
mod boot;

#[path = "spool_markers.rs"]
mod markers;

#[path = "spool_pending.rs"]
mod pending;
pub use pending::Pending;

#[cfg(test)]
#[path = "spool_tests.rs"]
mod tests;
