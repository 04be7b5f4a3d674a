//! `base-ls` (backups in the bucket) and `full-sync` (every DONE backup and every WAL, then the
//! conservative remote deletion of what Barman deleted locally).

use std::collections::BTreeSet;

use serde::Serialize;

use super::backup::{NotNow, upload_backup};
use super::conf::ServerDirs;
use super::info::{self, BackupInfo};
use super::remote::{INFO, MANIFEST, Remote};
use super::wal::{self, WalKind};
use super::walsync::{WalReport, wal_sync};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::ListRequest;
use crate::transfer::{Expect, Transfer};

/// One backup as the bucket holds it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RemoteBackup {
    /// Backup id.
    pub id: String,
    /// Status from the uploaded backup.info (empty when missing).
    pub status: String,
    /// `begin_time`.
    pub begin_time: Option<String>,
    /// `end_time`.
    pub end_time: Option<String>,
    /// `size` (bytes of the backup as Barman counted it).
    pub size: Option<u64>,
    /// First WAL needed.
    pub begin_wal: Option<String>,
    /// Last WAL needed.
    pub end_wal: Option<String>,
    /// Timeline.
    pub timeline: Option<String>,
    /// Manifest and backup.info both present.
    pub complete: bool,
}

/// Lists the server's backups in the bucket, oldest first.
pub async fn remote_backups(t: &Transfer, remote: &Remote) -> Result<Vec<RemoteBackup>> {
    let base = remote.base_prefix();
    let req = ListRequest {
        prefix: base.clone(),
        delimiter: Some("/".into()),
        ..Default::default()
    };
    let mut ids = Vec::new();
    t.list_pages(&req, |_, prefixes| {
        ids.extend(
            prefixes
                .iter()
                .filter_map(|p| p.strip_prefix(&base)?.strip_suffix('/'))
                .filter(|id| info::is_backup_id(id))
                .map(str::to_string),
        );
        true
    })
    .await?;
    let mut out = Vec::new();
    for id in ids {
        let info_key = remote.backup_key(&id, INFO);
        // One GET (which heads the object itself); a missing backup.info means incomplete.
        let mut buf = Vec::new();
        let bi = match t.download_to(&info_key, &mut buf, Expect::default()).await {
            Ok(_) => Some(BackupInfo::parse(&String::from_utf8_lossy(&buf))),
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let manifest = t
            .head_opt(&remote.backup_key(&id, MANIFEST))
            .await?
            .is_some();
        let bi_ref = bi.as_ref();
        let field = |k: &str| bi_ref.and_then(|b| b.get(k)).map(str::to_string);
        out.push(RemoteBackup {
            status: bi_ref.map(|b| b.status().to_string()).unwrap_or_default(),
            begin_time: field("begin_time"),
            end_time: field("end_time"),
            size: bi_ref.and_then(BackupInfo::size),
            begin_wal: field("begin_wal"),
            end_wal: field("end_wal"),
            timeline: field("timeline"),
            complete: manifest && bi.is_some(),
            id,
        });
    }
    Ok(out)
}

/// Options of `full-sync`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FullSyncOptions {
    /// Upload only; never delete.
    pub no_delete: bool,
    /// Print the deletion plan, delete nothing.
    pub dry_run: bool,
    /// Allow more deletions than `max_deletes`.
    pub force: bool,
}

/// What `full-sync` did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, Default)]
pub struct FullSyncReport {
    /// Backups uploaded.
    pub uploaded_backups: Vec<String>,
    /// Backups still waiting (not DONE) or skipped for now, with the reason.
    pub skipped: Vec<String>,
    /// The WAL sync.
    pub wal: WalReport,
    /// Remote backups deleted (or planned).
    pub deleted_backups: Vec<String>,
    /// Remote WAL objects deleted (or planned).
    pub deleted_wals: Vec<String>,
}

/// Uploads every local DONE backup missing from the bucket, syncs WALs, then deletes remote
/// backups and WALs Barman no longer has, under the rules of the spec: never from an empty or
/// unlistable local directory, always keeping `min_remote_backups` DONE backups and the newest,
/// WALs only before the oldest remaining backup, capped unless `force`.
pub async fn full_sync(
    cfg: &Config,
    t: &Transfer,
    dirs: &ServerDirs,
    opts: FullSyncOptions,
) -> Result<FullSyncReport> {
    let remote = Remote::new(cfg.location.prefix(), &dirs.name);
    let mut report = FullSyncReport::default();
    let local = info::local_backup_ids(dirs).map_err(|e| {
        Error::Failed(format!(
            "cannot list {}: {e}; nothing was uploaded or deleted",
            dirs.base_dir.display()
        ))
    })?;
    let before = remote_backups(t, &remote).await?;
    let complete: BTreeSet<&str> = before
        .iter()
        .filter(|b| b.complete)
        .map(|b| b.id.as_str())
        .collect();
    let journals = super::state::LocalState::new(cfg).journal_dir();
    for id in &local {
        if complete.contains(id.as_str()) {
            continue;
        }
        let status = info::locate(dirs, id)
            .and_then(|p| info::read(&p).ok())
            .map(|b| b.status().to_string())
            .unwrap_or_default();
        if status != "DONE" {
            report.skipped.push(format!("{id}: status {status:?}"));
            continue;
        }
        match upload_backup(t, &remote, dirs, id, &journals).await {
            Ok(_) => report.uploaded_backups.push(id.clone()),
            Err(NotNow::Interrupted) => return Err(Error::Interrupted),
            Err(NotNow::Wait(m)) => report.skipped.push(format!("{id}: {m}")),
            Err(NotNow::Retry(m) | NotNow::Never(m)) => {
                return Err(Error::Failed(format!("backup {id}: {m}")));
            }
        }
    }
    report.wal = wal_sync(cfg, t, dirs, false).await?;
    if opts.no_delete {
        return Ok(report);
    }
    if local.is_empty() {
        return Err(Error::Failed(format!(
            "refusing to delete anything: no local backups in {} (wrong barman_home, unmounted disk, or a new server?); uploads done, run with --no-delete to skip deletion",
            dirs.base_dir.display()
        )));
    }
    plan_and_delete(cfg, t, dirs, &remote, &local, opts, &mut report).await?;
    Ok(report)
}

async fn plan_and_delete(
    cfg: &Config,
    t: &Transfer,
    dirs: &ServerDirs,
    remote: &Remote,
    local: &[String],
    opts: FullSyncOptions,
    report: &mut FullSyncReport,
) -> Result<()> {
    let remote_list = remote_backups(t, remote).await?;
    let newest = remote_list.iter().map(|b| b.id.clone()).max();
    let local: BTreeSet<&str> = local.iter().map(String::as_str).collect();
    // Candidates: gone locally and older than the newest remote backup, oldest first.
    let mut doomed: Vec<&RemoteBackup> = remote_list
        .iter()
        .filter(|b| !local.contains(b.id.as_str()) && Some(&b.id) < newest.as_ref())
        .collect();
    let done_total = remote_list
        .iter()
        .filter(|b| b.complete && b.status == "DONE")
        .count();
    let min_keep = cfg.barman.min_remote_backups;
    while done_total
        - doomed
            .iter()
            .filter(|b| b.complete && b.status == "DONE")
            .count()
        < min_keep
    {
        // Spare the newest candidate that still counts as a DONE backup.
        match doomed
            .iter()
            .rposition(|b| b.complete && b.status == "DONE")
        {
            Some(i) => {
                doomed.remove(i);
            }
            None => break,
        }
    }
    if doomed.len() > cfg.barman.max_deletes && !opts.force && !opts.dry_run {
        return Err(Error::Failed(format!(
            "full-sync would delete {} remote backups of server {} (more than max_deletes = {}): {}; check with --dry-run, then run with --force",
            doomed.len(),
            dirs.name,
            cfg.barman.max_deletes,
            doomed
                .iter()
                .map(|b| b.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let doomed_ids: BTreeSet<&str> = doomed.iter().map(|b| b.id.as_str()).collect();
    // WALs: only before the begin_wal of the oldest remaining complete DONE backup.
    let oldest_kept = remote_list
        .iter()
        .filter(|b| !doomed_ids.contains(b.id.as_str()) && b.complete && b.status == "DONE")
        .filter_map(|b| b.begin_wal.clone())
        .min_by(|a, b| wal::compare(a, b));
    let mut wal_keys = Vec::new();
    if let Some(begin) = &oldest_kept {
        let (tli, begin_seg) = (
            wal::timeline(begin).unwrap_or(0),
            wal::segment_number(begin, 256).unwrap_or(0),
        );
        let prefix = remote.wals_prefix();
        let req = ListRequest {
            prefix: prefix.clone(),
            ..Default::default()
        };
        let objs = t.list_all(&req).await?;
        for o in objs {
            let Some(rel) = o.key.strip_prefix(&prefix) else {
                continue;
            };
            let name = rel.rsplit('/').next().unwrap_or(rel);
            let old = match wal::classify(name) {
                None | Some(WalKind::History) => false,
                Some(_) => {
                    wal::timeline(name).is_some_and(|x| x <= tli)
                        && wal::segment_number(name, 256).is_some_and(|s| s < begin_seg)
                }
            };
            if old && !dirs.wals_dir.join(rel).exists() {
                wal_keys.push(o.key);
            }
        }
    }
    report.deleted_backups = doomed.iter().map(|b| b.id.clone()).collect();
    report.deleted_wals = wal_keys.clone();
    if opts.dry_run {
        return Ok(());
    }
    for id in &report.deleted_backups {
        // backup.info first: from then on the backup reads as incomplete, never as valid.
        t.delete_keys(&[remote.backup_key(id, INFO)]).await?;
        let n = t.delete_prefix(&remote.backup_prefix(id)).await?;
        tracing::info!(
            "{}: deleted remote backup {id} ({} objects)",
            dirs.name,
            n + 1
        );
    }
    t.delete_keys(&wal_keys).await?;
    Ok(())
}
