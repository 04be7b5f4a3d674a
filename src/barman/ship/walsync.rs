//! `wal-sync`: ships Barman's WAL archive (`wals/`) to the bucket.
//!
//! Cost grows with the new WALs, not the archive: the state remembers the oldest hash directory
//! not yet known to be complete remotely (the window). A run scans only the local hash
//! directories from the window on and lists the bucket with `start_after` at the window's
//! start, normally one request. A full reconcile (first run against a store, `--full`, or
//! every `wal_reconcile_every`) scans and lists everything, a step of hash directories at a
//! time ([`super::walscan`]). Which files go is decided by
//! [`super::walplan`]: a file in the bucket with the same size counts only once its content
//! was compared (or it was uploaded from this very file); other content is an error, never
//! overwritten, except an object we shipped from a file that then grew, once it is shown to be
//! the file's prefix. Each file is looked at again after its upload: one that changed meanwhile
//! is left for the next run (`--follow` looks again once it has settled). State and ledger are kept per store ([`super::state`]). One run per server at
//! a time (lock file).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use std::os::unix::fs::MetadataExt;

use super::state::{Ledger, LocalState, WalState};
use super::walplan::{self, LocalWal};
pub use super::walscan::scan_local;
use super::walscan::{Step, Survey, survey};
use crate::barman::conf::ServerDirs;
use crate::barman::server::Server;
use crate::clock::now;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lockfile::try_lock_file;
use crate::store::ObjectKind;
use crate::store::PutOptions;
use crate::transfer::{Transfer, Uploaded, bounded};

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalReport {
    /// WAL files uploaded.
    pub uploaded: usize,
    /// Bytes uploaded.
    pub bytes: u64,
    /// Local files compared with the bucket.
    pub checked: usize,
    /// Whether this run was a full reconcile.
    pub full: bool,
    /// Files left for a later run because they may still be being written (`--follow`), or
    /// changed while they were being shipped.
    pub deferred: usize,
    /// Modification time of the newest file uploaded (ns since the epoch), for lag figures.
    pub newest_mtime_ns: Option<i128>,
}

/// Which absent files a run may ship: all (cron), or only those a predicate calls settled
/// (`--follow`, see [`super::walplan::settled`]).
pub type Ready<'a> = Option<&'a (dyn Fn(&LocalWal) -> bool + Sync)>;

/// Syncs one server's WAL archive. Takes the server's wal-sync lock (busy ⇒ [`Error::Busy`]).
pub async fn wal_sync(
    cfg: &Config,
    t: &Transfer,
    dirs: &ServerDirs,
    full: bool,
    ready: Ready<'_>,
) -> Result<WalReport> {
    let st = LocalState::new(cfg);
    st.ensure()?;
    let _lock = try_lock_file(
        &st.wal_lock(&dirs.name),
        &format!("wal-sync for server {}", dirs.name),
    )?;
    if st.wal_state(&dirs.name).window.is_none() {
        // Nothing recorded for this store: what any earlier ledger says cannot be trusted.
        st.forget_ledgers(&dirs.name)?;
    }
    let s = survey(cfg, dirs, &st, full)?;
    let srv = Server::new(t, cfg.location.prefix(), &dirs.name);
    let mut listed = false;
    let result = ship(&srv, &st, s, ready, &mut listed).await;
    if let Err(e) = &result
        && listed
        && !matches!(e, Error::Interrupted)
    {
        // Remembered for status and check: a wal-sync that keeps failing must not look quiet.
        // (A run that could not even list the bucket attempted nothing and records nothing.)
        let mut state = st.wal_state(&dirs.name);
        state.last_error = Some(e.one_line());
        st.save_wal_state(&dirs.name, state)?;
    }
    result
}

/// What the steps of a run add up to.
#[derive(Debug, Default)]
struct Shipped {
    uploaded: usize,
    bytes: u64,
    checked: usize,
    newest_mtime_ns: Option<i128>,
    /// The first conflicts (at most five), and how many there were.
    conflicts: Vec<String>,
    conflict_count: usize,
    deferred: Vec<LocalWal>,
}

impl Shipped {
    fn conflict(&mut self, line: String) {
        self.conflict_count += 1;
        if self.conflicts.len() < 5 {
            self.conflicts.push(line);
        }
    }
}

/// Ships every step, then records the state and moves the window when nothing differs.
/// `listed` turns true once the bucket answered a first listing: a run that could not list
/// it at all (a wrong bucket or key) attempted nothing.
async fn ship(
    srv: &Server,
    st: &LocalState,
    mut s: Survey,
    ready: Ready<'_>,
    listed: &mut bool,
) -> Result<WalReport> {
    let mut done = Shipped::default();
    while let Some(step) = s.step(&srv.t, st, &srv.name).await? {
        *listed = true;
        ship_step(srv, st, step, ready, &mut done).await?;
    }
    tracing::debug!(
        "wal-sync {}: {} local file(s), {} uploaded, {} deferred{}",
        srv.name,
        done.checked,
        done.uploaded,
        done.deferred.len(),
        if s.full { " (full reconcile)" } else { "" }
    );
    if done.conflict_count > 0 {
        return Err(conflict(&srv.name, done.conflict_count, &done.conflicts));
    }
    st.save_wal_state(
        &srv.name,
        WalState {
            window: walplan::window_keeping(&s.hash_dirs, s.window, &done.deferred),
            last_full: if s.full { now() } else { s.state.last_full },
            last_success: now(),
            ..WalState::default()
        },
    )?;
    Ok(WalReport {
        uploaded: done.uploaded,
        bytes: done.bytes,
        checked: done.checked,
        full: s.full,
        deferred: done.deferred.len(),
        newest_mtime_ns: done.newest_mtime_ns,
    })
}

/// Compares what the step's plan says to compare, uploads what it says to upload, and records
/// what is now known in the step's ledgers.
async fn ship_step(
    srv: &Server,
    st: &LocalState,
    step: Step,
    ready: Ready<'_>,
    done: &mut Shipped,
) -> Result<()> {
    let Step {
        local,
        mut ledgers,
        plan: p,
    } = step;
    done.checked += local;
    for c in p.conflicts {
        done.conflict(c);
    }
    let mut changed = BTreeSet::new();
    for (f, etag) in p.adopt {
        if let Some(k) = ledgers
            .get_mut(f.hash_dir())
            .and_then(|l| l.get_mut(f.name()))
        {
            k.etag = Some(etag);
            changed.insert(f.hash_dir().to_string());
        }
    }
    for (f, crc, etag) in compare(srv, p.verify).await? {
        match crc {
            Some(crc) => remember(&mut ledgers, &mut changed, &f, f.size, crc, etag),
            None => done.conflict(format!("{}: same size, other content in the bucket", f.rel)),
        }
    }
    let (regrown, later): (Vec<_>, Vec<_>) = p
        .regrown
        .into_iter()
        .partition(|g| ready.is_none_or(|r| r(&g.file)));
    done.deferred.extend(later.into_iter().map(|g| g.file));
    let (mut upload, later): (Vec<_>, Vec<_>) = p
        .upload
        .into_iter()
        .partition(|f| ready.is_none_or(|r| r(f)));
    done.deferred.extend(later);
    for g in regrown {
        match prove_prefix(srv, g).await? {
            Ok(f) => upload.push(f),
            Err(c) => done.conflict(c),
        }
    }
    let uploads = send(srv, upload).await?;
    record_uploads(
        &srv.name,
        &uploads,
        &mut ledgers,
        &mut changed,
        &mut done.deferred,
    );
    for dir in &changed {
        st.save_ledger(&srv.name, dir, &ledgers[dir])?;
    }
    done.uploaded += uploads.len();
    done.bytes += uploads.iter().map(|(_, u)| u.size).sum::<u64>();
    done.newest_mtime_ns = done
        .newest_mtime_ns
        .max(uploads.iter().map(|(f, _)| f.mtime_ns).max());
    Ok(())
}

/// Records each upload in the ledgers; a file that changed while it was shipped is deferred,
/// to be looked at again.
fn record_uploads(
    server: &str,
    uploads: &[(LocalWal, Uploaded)],
    ledgers: &mut BTreeMap<String, Ledger>,
    changed: &mut BTreeSet<String>,
    deferred: &mut Vec<LocalWal>,
) {
    for (f, u) in uploads {
        tracing::debug!("wal-sync {}: {} uploaded ({} bytes)", server, f.rel, u.size);
        // The ledger pairs the scanned mtime with the size and CRC32C of the bytes sent: the
        // entry settles the file only while it stays so, and it proves which prefix is ours
        // if the file grows.
        remember(ledgers, changed, f, u.size, u.crc32c, u.etag.clone());
        if !unchanged_since_scan(f, u.size) {
            tracing::warn!(
                "{}: changed while it was shipped ({} bytes when listed, {} sent); it is looked at again",
                f.rel,
                f.size,
                u.size
            );
            deferred.push(f.clone());
        }
    }
}

/// One file compared: the CRC32C of the content when the object holds it, and the ETag of the
/// object that was compared.
type Compared = (LocalWal, Option<u32>, Option<String>);

/// Compares each file with its object.
async fn compare(srv: &Server, files: Vec<LocalWal>) -> Result<Vec<Compared>> {
    bounded(files, srv.t.file_workers(), |f| {
        let (t, key) = (srv.t.clone(), srv.remote.wal_key(&f.rel));
        async move {
            let (crc, etag) = t.same_as_local_etag(&key, &f.path).await?;
            Ok((f, crc, etag))
        }
    })
    .await
}

/// Uploads each file to its key.
async fn send(srv: &Server, files: Vec<LocalWal>) -> Result<Vec<(LocalWal, Uploaded)>> {
    srv.t
        .progress()
        .add_work(files.len() as u64, files.iter().map(|f| f.size).sum());
    bounded(files, srv.t.file_workers(), |f| {
        let (t, key) = (srv.t.clone(), srv.remote.wal_key(&f.rel));
        async move {
            let opts = PutOptions::of(ObjectKind::Wal);
            t.upload_file_with(&f.path, &key, None, &opts)
                .await
                .map(|u| (f, u))
        }
    })
    .await
}

/// The error of `count` WAL files that differ from their objects (never overwritten), naming
/// the first five.
fn conflict(server: &str, count: usize, first: &[String]) -> Error {
    Error::Failed(format!(
        "server {server}: {count} WAL file(s) differ from the bucket and were not overwritten: {}{}",
        first[..first.len().min(5)].join("; "),
        if count > 5 { "; ..." } else { "" }
    ))
}

/// What a wal-sync would send now, without sending or recording anything (`full-sync
/// --dry-run`): files absent from the bucket, and those whose content would be compared.
pub async fn pending_wals(cfg: &Config, t: &Transfer, dirs: &ServerDirs) -> Result<WalReport> {
    let st = LocalState::new(cfg);
    let mut s = survey(cfg, dirs, &st, false)?;
    let mut r = WalReport {
        full: s.full,
        ..WalReport::default()
    };
    while let Some(step) = s.step(t, &st, &dirs.name).await? {
        let p = step.plan;
        if let Some(c) = p.conflicts.first() {
            return Err(Error::Failed(format!(
                "server {}: {} WAL file(s) differ from the bucket, first: {c}",
                dirs.name,
                p.conflicts.len()
            )));
        }
        // A file that grew after we shipped its start would go again (once proven).
        r.uploaded += p.upload.len() + p.regrown.len();
        r.bytes += p.upload.iter().map(|f| f.size).sum::<u64>()
            + p.regrown.iter().map(|g| g.file.size).sum::<u64>();
        r.checked += step.local;
    }
    Ok(r)
}

/// Records that the bucket holds `size` bytes of `f` with CRC32C `crc` in an object with `etag`.
fn remember(
    ledgers: &mut BTreeMap<String, Ledger>,
    changed: &mut BTreeSet<String>,
    f: &LocalWal,
    size: u64,
    crc: u32,
    etag: Option<String>,
) {
    let mut known = f.known(crc, etag);
    known.size = size;
    ledgers
        .entry(f.hash_dir().to_string())
        .or_default()
        .insert(f.name().to_string(), known);
    changed.insert(f.hash_dir().to_string());
}

/// Whether `f` is still as scanned, and `sent` bytes of it went: a writer that closed the file
/// early (a hand copy, NFS) and wrote on has made what we shipped a prefix.
fn unchanged_since_scan(f: &LocalWal, sent: u64) -> bool {
    sent == f.size
        && std::fs::symlink_metadata(&f.path).is_ok_and(|m| {
            m.len() == f.size
                && i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()) == f.mtime_ns
        })
}

/// A file that grew after we shipped its start: to ship again (`Ok`) once its object is proven
/// to be that start, else the conflict line.
async fn prove_prefix(
    srv: &Server,
    g: walplan::Regrown,
) -> Result<std::result::Result<LocalWal, String>> {
    if !prefix_shipped(srv, &g).await? {
        return Ok(Err(g.conflict()));
    }
    tracing::info!(
        "{}: grew to {} bytes after its first {} were shipped; shipping it again",
        g.file.rel,
        g.file.size,
        g.shipped.size
    );
    Ok(Ok(g.file))
}

/// Whether the object of a file that grew holds exactly the start of the file: the file's first
/// bytes have the CRC32C we shipped, and the object's bytes match them.
async fn prefix_shipped(srv: &Server, g: &walplan::Regrown) -> Result<bool> {
    let (path, len) = (g.file.path.clone(), g.shipped.size);
    let crc = tokio::task::spawn_blocking(move || prefix_crc(&path, len))
        .await
        .map_err(|e| Error::Failed(format!("read task failed: {e}")))??;
    if !g.replaceable(crc, true) {
        return Ok(false);
    }
    let expect = crate::transfer::Expect {
        size: Some(len),
        crc32c: Some(crc),
    };
    let key = srv.remote.wal_key(&g.file.rel);
    let same = match srv
        .t
        .download_to(&key, &mut tokio::io::sink(), expect)
        .await
    {
        Ok(_) => true,
        Err(Error::Checksum { .. }) => false,
        Err(e) => return Err(e),
    };
    Ok(g.replaceable(crc, same))
}

/// The CRC32C of the first `len` bytes of `path`.
fn prefix_crc(path: &Path, len: u64) -> Result<u32> {
    use std::io::Read;
    let f =
        std::fs::File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let (mut r, mut crc, mut buf) = (f.take(len), 0u32, vec![0u8; 1 << 20]);
    loop {
        let n = r
            .read(&mut buf)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        if n == 0 {
            return Ok(crc);
        }
        crc = crate::checksum::crc32c_append(crc, &buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::barman::ship::walscan::local_wal;
    use std::io::Write;

    #[test]
    fn a_file_written_on_after_its_scan_is_not_settled_by_its_upload() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("000000010000000000000003");
        std::fs::write(&path, vec![7u8; 1000]).expect("write");
        let f = local_wal(
            "0000000100000000/000000010000000000000003".into(),
            path.clone(),
        )
        .expect("stat");
        assert!(unchanged_since_scan(&f, 1000));
        assert!(
            !unchanged_since_scan(&f, 999),
            "fewer bytes sent than scanned"
        );
        let crc = prefix_crc(&path, 1000).expect("crc");
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("reopen");
        w.write_all(&[8u8; 24]).expect("append");
        drop(w);
        assert!(!unchanged_since_scan(&f, 1000), "written on after the scan");
        // The first 1000 bytes are what was shipped: the prefix the ledger proves.
        assert_eq!(prefix_crc(&path, 1000).expect("crc"), crc);
        assert_eq!(
            prefix_crc(&path, 1000).expect("crc"),
            crate::checksum::crc32c(&[7u8; 1000])
        );
        assert_ne!(prefix_crc(&path, 1024).expect("crc"), crc);
    }
}
