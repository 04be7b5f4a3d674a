//! `base-restore`: rebuild a data directory (and its tablespaces) from the bucket alone, every
//! byte verified. The plan ([`plan`]) decides everything before a byte is written; then the
//! files of a plain backup download in parallel, or the archives of a tar backup stream into
//! place ([`tar`]); then the recovery settings ([`recovery`]); `global/pg_control` comes last.
//!
//! A restore that fails removes what it wrote and leaves the destinations as they were, so a
//! half-restored directory is never started. A restore killed outright leaves no
//! `global/pg_control`, which PostgreSQL refuses to start without.

pub mod archived;
pub mod chain;
pub mod combined;
pub mod incremental;
pub mod modes;
pub mod plan;
pub mod recovery;
pub mod tar;
mod writer;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::barman::info::BackupInfo;
use crate::barman::manifest::Manifest;
use crate::barman::remote::{INFO, MANIFEST};
use crate::barman::server::Server;
use crate::codec::Decryption;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::transfer::{Expect, Transfer, bounded};
use plan::{FileJob, Layout, PG_CONTROL, Plan};

/// Options of `base-restore`.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Where each tablespace goes (oid → directory); default `<DEST>_tblspc/<oid>`.
    pub tablespaces: BTreeMap<String, PathBuf>,
    /// `restore_command` to write with `recovery.signal` (None: leave recovery to the user).
    pub restore_command: Option<String>,
    /// pg_combinebackup for incremental backups (None: look for it).
    pub pg_combinebackup: Option<PathBuf>,
    /// Where an incremental chain is staged (None: beside DEST).
    pub staging: Option<PathBuf>,
    /// `--request-restore DAYS`: ask for archived objects to be restored first.
    pub request_restore: Option<u32>,
    /// How archives Barman encrypted (`encryption = gpg`) are decrypted.
    pub decrypt: Option<Decryption>,
}

/// What a restore produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// Files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Tablespace oid → directory.
    pub tablespaces: BTreeMap<String, PathBuf>,
    /// Notes for the operator.
    pub notes: Vec<String>,
}

async fn fetch_small(t: &Transfer, key: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    t.download_to(key, &mut buf, Expect::default()).await?;
    Ok(buf)
}

/// Reads a backup's backup.info and manifest; the backup must be complete (backup.info
/// present) and of a kind a single restore can rebuild.
pub async fn manifest(srv: &Server, id: &str) -> Result<(BackupInfo, Manifest)> {
    let Server { t, remote, .. } = srv;
    let info_key = remote.backup_key(id, INFO);
    let info = match fetch_small(t, &info_key).await {
        Ok(b) => BackupInfo::parse(&String::from_utf8_lossy(&b)),
        Err(Error::NotFound { .. }) => {
            return Err(Error::Failed(format!(
                "backup {id} is not complete in the bucket ({info_key} is missing); see base-ls"
            )));
        }
        Err(e) => return Err(e),
    };
    if info.get("mode").is_some_and(|m| m.starts_with("snapshot")) {
        return Err(Error::Failed(format!(
            "backup {id} is a snapshot backup: its data lives in cloud disk snapshots, not in the bucket"
        )));
    }
    let key = remote.backup_key(id, MANIFEST);
    let bytes = fetch_small(t, &key).await?;
    let m = Manifest::parse(&bytes, &key)?;
    if m.backup_id != id {
        return Err(Error::Failed(format!(
            "{key} describes backup {}, not {id}",
            m.backup_id
        )));
    }
    Ok((info, m))
}

/// Restores backup `id` into `dest` (absent or empty), verifying every file's size and CRC32C.
/// An incremental backup (PostgreSQL 17+) is restored with its whole chain and combined by
/// pg_combinebackup ([`chain`]).
pub async fn base_restore(
    srv: &Server,
    id: &str,
    dest: &Path,
    opts: &RestoreOptions,
) -> Result<Restored> {
    let (info, m) = manifest(srv, id).await?;
    if let Some(days) = opts.request_restore {
        let keys = archived::keys_of_chain(srv, id).await?;
        let a = archived::ensure_readable(&srv.t, keys, days).await?;
        if a != archived::Archived::default() {
            return Err(archived::waiting(id, &a));
        }
    }
    if info.get("parent_backup_id").is_some() {
        return chain::restore(srv, id, (info, m), dest, opts).await;
    }
    incremental::refuse_if_incremental(srv, &m).await?;
    restore_one(srv, &m, dest, opts).await
}

/// Restores one backup whose manifest is `m`.
async fn restore_one(
    srv: &Server,
    m: &Manifest,
    dest: &Path,
    opts: &RestoreOptions,
) -> Result<Restored> {
    let id = m.backup_id.as_str();
    let plan = plan::plan(m, dest, &opts.tablespaces)?;
    if plan.encrypted() {
        // Before anything is written: a restore that cannot decrypt fails with nothing to undo.
        let d = opts.decrypt.as_ref();
        d.ok_or_else(|| tar::encrypted_without_key(&format!("backup {id}")))?
            .ready()?;
    }
    let mut claimed = Claimed::default();
    claimed.claim(&plan.dest)?;
    for dir in plan.tablespaces.values() {
        claimed.claim(dir)?;
    }
    let result = write(srv, id, &plan, opts).await;
    if result.is_err() {
        // Only what this restore wrote is there: leave the destinations as they were, so a
        // half-restored directory can never be started and the restore can simply be rerun.
        claimed.undo();
    }
    result
}

async fn write(srv: &Server, id: &str, p: &Plan, opts: &RestoreOptions) -> Result<Restored> {
    for dir in std::iter::once(&p.dest)
        .chain(p.tablespaces.values())
        .chain(p.dirs.iter().map(|(d, _)| d))
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    let barrier = fsutil::FsBarrier::open(
        std::iter::once(p.dest.as_path()).chain(p.tablespaces.values().map(PathBuf::as_path)),
    )?;
    // pg_control of a plain backup is held back for the very end.
    let mut files = p.files.clone();
    let last = files
        .last()
        .filter(|j| j.to == p.dest.join(PG_CONTROL))
        .cloned();
    if last.is_some() {
        files.pop();
    }
    let (mut count, mut bytes, mut narrowed) = (0, 0, p.narrowed);
    let mut modes = p.dirs.clone();
    if let Layout::Tar { base, tablespaces } = &p.layout {
        let roots = tar::roots(base, tablespaces, &p.dest, &p.tablespaces);
        let x = tar::write(srv, id, roots, opts.decrypt.as_ref()).await?;
        count += x.files;
        bytes += x.bytes;
        narrowed += x.narrowed;
        modes.extend(x.dirs);
    }
    modes::report(&format!("backup {id}"), narrowed);
    srv.t.progress().add_work(
        files.len() as u64 + u64::from(last.is_some()),
        files.iter().chain(&last).map(|j| j.size).sum(),
    );
    let done = download(srv, id, files, Sync::AtBarrier).await?;
    count += done.len();
    bytes += done.iter().sum::<u64>();
    link_and_close(&p.links, modes)?;
    if let Some(cmd) = &opts.restore_command {
        recovery::write(&p.dest, cmd)?;
    }
    // Everything written so far reaches the disk before pg_control makes it startable.
    barrier.sync()?;
    // Last: pg_control, the file without which PostgreSQL will not start.
    match (&p.layout, last) {
        (Layout::Plain, Some(job)) => {
            bytes += download(srv, id, vec![job], Sync::Each)
                .await?
                .iter()
                .sum::<u64>();
            count += 1;
        }
        (Layout::Tar { .. }, _) => fsutil::rename_durable(
            &p.dest.join(tar::PG_CONTROL_PENDING),
            &p.dest.join(PG_CONTROL),
        )?,
        (Layout::Plain, None) => {}
    }
    for must in ["PG_VERSION", PG_CONTROL] {
        if !p.dest.join(must).is_file() {
            return Err(Error::Failed(format!(
                "backup {id} restored without {must}: {} would not be a startable data directory",
                p.dest.display()
            )));
        }
    }
    Ok(Restored {
        files: count,
        bytes,
        tablespaces: p.tablespaces.clone(),
        notes: p.notes.clone(),
    })
}

/// Creates the plan's links, then gives every directory its mode, deepest first, so a
/// directory is closed only after everything below it was written.
pub(crate) fn link_and_close(
    links: &[(PathBuf, PathBuf)],
    mut modes: Vec<(PathBuf, u32)>,
) -> Result<()> {
    for (link, to) in links {
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
        }
        std::os::unix::fs::symlink(to, link)
            .map_err(|err| Error::io(format!("symlink {}", link.display()), err))?;
    }
    modes.sort_by(|a, b| b.0.cmp(&a.0));
    for (dir, mode) in &modes {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| Error::io(format!("chmod {}", dir.display()), e))?;
    }
    Ok(())
}

/// When the files [`download`] writes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sync {
    /// At the barrier after them (one `syncfs` for the whole restore).
    AtBarrier,
    /// Each before the download returns (pg_control, written after the barrier).
    Each,
}

/// Downloads files in parallel, each verified against its manifest entry, with its mode.
async fn download(srv: &Server, id: &str, jobs: Vec<FileJob>, sync: Sync) -> Result<Vec<u64>> {
    bounded(jobs, srv.t.file_workers(), |job| {
        let t = srv.t.clone();
        let key = srv.remote.backup_key(id, &job.rel);
        async move {
            if let Some(parent) = job.to.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
            }
            let expect = Expect {
                size: Some(job.size),
                crc32c: job.crc32c,
            };
            match sync {
                Sync::AtBarrier => t.download_file_unsynced(&key, &job.to, expect).await?,
                Sync::Each => t.download_file(&key, &job.to, expect).await?,
            };
            std::fs::set_permissions(&job.to, std::fs::Permissions::from_mode(job.mode))
                .map_err(|e| Error::io(format!("chmod {}", job.to.display()), e))?;
            Ok(job.size)
        }
    })
    .await
}

/// Destination directories a restore may write into, each absent or empty beforehand.
#[derive(Debug, Default)]
pub(crate) struct Claimed(Vec<(PathBuf, Option<PathBuf>)>);

impl Claimed {
    /// Refuses a non-empty `dir`; remembers what to remove on failure (its contents when it
    /// exists, else the topmost missing ancestor the restore will create).
    pub(crate) fn claim(&mut self, dir: &Path) -> Result<()> {
        if dir.exists() {
            let mut entries = std::fs::read_dir(dir)
                .map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
            if entries.next().is_some() {
                return Err(Error::Usage(format!(
                    "{} is not empty; restore into a new or empty directory",
                    dir.display()
                )));
            }
            self.0.push((dir.to_path_buf(), None));
        } else {
            let mut top = dir.to_path_buf();
            while let Some(parent) = top.parent().filter(|p| !p.as_os_str().is_empty()) {
                if parent.exists() {
                    break;
                }
                top = parent.to_path_buf();
            }
            self.0.push((dir.to_path_buf(), Some(top)));
        }
        Ok(())
    }

    pub(crate) fn undo(&self) {
        for (dir, created) in self.0.iter().rev() {
            let gone = match created {
                Some(top) => remove_all(top),
                None => std::fs::read_dir(dir).and_then(|mut entries| {
                    entries.try_for_each(|e| e.and_then(|e| remove_all(&e.path())))
                }),
            };
            match gone {
                Ok(()) => tracing::warn!("removed the incomplete restore from {}", dir.display()),
                Err(e) => tracing::error!(
                    "could not remove the incomplete restore from {}: {e}; delete it before starting PostgreSQL",
                    dir.display()
                ),
            }
        }
    }
}

fn remove_all(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
