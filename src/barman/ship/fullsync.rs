//! `base-ls` (backups in the bucket) and `full-sync` (every DONE backup and every WAL, then the
//! conservative remote deletion of what Barman deleted locally).

use std::collections::BTreeSet;

use serde::Serialize;

use super::backup::{NotNow, check_eligible, upload_backup};
use super::locks;
use super::retention::{self, Held};
use super::walsync::{WalReport, pending_wals, wal_sync};
use crate::barman::conf::ServerDirs;
use crate::barman::info::{self, BackupInfo};
use crate::barman::remote::{INFO, MANIFEST};
use crate::barman::server::Server;
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
    /// The backup this one is an increment of (PostgreSQL 17+), if any.
    pub parent: Option<String>,
    /// Its own manifest and backup.info both present (its chain aside: see [`chain_gap`]).
    pub complete: bool,
}

impl RemoteBackup {
    /// A backup of the given status and chain with no other facts: the tables of the pure
    /// decisions over backups are written with it.
    #[cfg(test)]
    pub(crate) fn sketch(id: &str, status: &str, complete: bool, parent: Option<&str>) -> Self {
        RemoteBackup {
            id: id.into(),
            status: status.into(),
            begin_time: None,
            end_time: None,
            size: None,
            begin_wal: None,
            end_wal: None,
            timeline: None,
            parent: parent.map(str::to_string),
            complete,
        }
    }
}

/// The first backup of `id`'s chain (itself, or a parent of an incremental backup) that is
/// missing from `list` or not complete there; `None` when the whole chain is complete. A
/// backup is complete only when its whole chain is.
pub fn chain_gap(list: &[RemoteBackup], id: &str) -> Option<String> {
    let mut cur = Some(id.to_string());
    let mut seen = BTreeSet::new();
    while let Some(at) = cur {
        match list.iter().find(|b| b.id == at) {
            Some(b) if b.complete && seen.insert(at.clone()) => cur = b.parent.clone(),
            _ => return Some(at),
        }
    }
    None
}

/// The listing `base-ls` shows: each backup with `complete` meaning complete with its whole
/// chain, and the first backup of the chain that is not (when one is not).
pub fn listing(list: Vec<RemoteBackup>) -> Vec<(RemoteBackup, Option<String>)> {
    let gaps: Vec<Option<String>> = list.iter().map(|b| chain_gap(&list, &b.id)).collect();
    list.into_iter()
        .zip(gaps)
        .map(|(mut b, gap)| {
            b.complete = gap.is_none();
            (b, gap)
        })
        .collect()
}

/// Lists the server's backups in the bucket, oldest first.
pub async fn remote_backups(srv: &Server) -> Result<Vec<RemoteBackup>> {
    let Server { t, remote, .. } = srv;
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
            parent: field("parent_backup_id"),
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
    /// Print what would be uploaded and deleted; change nothing.
    pub dry_run: bool,
    /// Allow more deletions than `max_deletes`.
    pub force: bool,
}

/// What `full-sync` did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, Default)]
pub struct FullSyncReport {
    /// Backups uploaded (or to upload).
    pub uploaded_backups: Vec<String>,
    /// Backups still waiting (not DONE) or skipped for now, with the reason.
    pub skipped: Vec<String>,
    /// The WAL sync (with `--dry-run`: how many would be uploaded).
    pub wal: WalReport,
    /// Remote backups deleted (or planned).
    pub deleted_backups: Vec<String>,
    /// Remote WAL objects deleted (or planned).
    pub deleted_wals: Vec<String>,
    /// Remote backups Barman deleted that are kept, with the reason.
    pub spared: Vec<String>,
    /// Backups and WAL objects Object Lock keeps for now: "… retained until …".
    pub retained: Vec<String>,
}

/// Uploads every local DONE backup missing from the bucket, syncs WALs, then deletes remote
/// backups and WALs Barman no longer has, under the rules of [`retention`]: never from an empty
/// or unlistable local directory. With `dry_run` nothing is uploaded or deleted: the report
/// says what would be.
pub async fn full_sync(
    cfg: &Config,
    t: &Transfer,
    dirs: &ServerDirs,
    opts: FullSyncOptions,
) -> Result<FullSyncReport> {
    let srv = Server::new(t, cfg.location.prefix(), &dirs.name);
    let local = info::local_backup_ids(dirs).map_err(|e| {
        Error::Failed(format!(
            "cannot list {}: {e}; nothing was uploaded or deleted",
            dirs.base_dir.display()
        ))
    })?;
    let before = remote_backups(&srv).await?;
    let mut report = upload_missing(cfg, &srv, dirs, &local, &before, opts.dry_run).await?;
    report.wal = if opts.dry_run {
        pending_wals(cfg, t, dirs).await?
    } else {
        wal_sync(cfg, t, dirs, false, None).await?
    };
    if opts.no_delete {
        return Ok(report);
    }
    if local.is_empty() {
        return Err(Error::Failed(format!(
            "refusing to delete anything: no local backups in {} (wrong barman_home, unmounted disk, or a new server?); uploads done, run with --no-delete to skip deletion",
            dirs.base_dir.display()
        )));
    }
    let held = if opts.dry_run {
        // What this run would have uploaded counts as there.
        would_hold(dirs, &before, &report.uploaded_backups)
    } else {
        remote_backups(&srv).await?.iter().map(held).collect()
    };
    let objects = wal_objects(&srv).await?;
    let basis = Basis {
        held: &held,
        local: local_state(dirs, local),
        objects: &objects,
        rules: retention::Rules {
            min_keep: cfg.barman.min_remote_backups,
            max_deletes: cfg.barman.max_deletes,
            force: opts.force || opts.dry_run,
        },
        locked: cfg.s3.object_lock.is_some() || t.object_lock_status().await?.is_some(),
    };
    let local_wal = |rel: &str| dirs.wals_dir.join(rel).exists();
    plan_deletions(&srv, basis, local_wal, &mut report).await?;
    if !opts.dry_run {
        delete(&srv, &report).await?;
    }
    Ok(report)
}

/// What full-sync (and `replicate --prune`) plans its deletions from.
pub(crate) struct Basis<'a> {
    /// The backups in the bucket (with `--dry-run`, as they would be after its uploads).
    pub held: &'a [Held],
    /// The backups that are still wanted (Barman's; for a replica, the main store's).
    pub local: retention::Local,
    /// Every remote WAL object: (key, path relative to `wals/`).
    pub objects: &'a [(String, String)],
    /// The limits of the run.
    pub rules: retention::Rules,
    /// Object Lock is set here or on the bucket: planned deletions are checked against it.
    pub locked: bool,
}

/// Plans what full-sync deletes into `report`: [`retention::plan`], and with Object Lock every
/// planned deletion checked against the objects' retention: a retained backup stays whole,
/// planned again as if Barman still had it so the WALs it needs stay too; retained WAL objects
/// stay. All are reported.
/// `local_wal` says whether a WAL path (relative to `wals/`) is still wanted.
pub(crate) async fn plan_deletions(
    srv: &Server,
    mut basis: Basis<'_>,
    local_wal: impl Fn(&str) -> bool,
    report: &mut FullSyncReport,
) -> Result<()> {
    let plan = loop {
        let plan = retention::plan(
            basis.held,
            &basis.local,
            basis.objects,
            &local_wal,
            basis.rules,
        )
        .map_err(|e| Error::Failed(format!("server {}: {e}", srv.name)))?;
        if !basis.locked {
            break plan;
        }
        let kept = locks::retained_backups(srv, &plan.backups).await?;
        if kept.is_empty() {
            break plan;
        }
        for (id, until) in kept {
            report
                .retained
                .push(format!("backup {id} retained until {}", locks::when(until)));
            basis.local.ids.insert(id);
        }
    };
    report.deleted_backups = plan.backups;
    report.spared = plan.spared;
    report.deleted_wals = if basis.locked {
        let dates = locks::retain_dates(&srv.t, plan.wals).await?;
        let (free, kept) = locks::split(dates, std::time::SystemTime::now());
        if let Some(last) = kept.iter().map(|(_, u)| *u).max() {
            report.retained.push(format!(
                "{} WAL object(s) retained until {} at the latest",
                kept.len(),
                locks::when(last)
            ));
        }
        free
    } else {
        plan.wals
    };
    Ok(())
}

/// What Barman holds: every backup id, and the newest DONE one.
fn local_state(dirs: &ServerDirs, ids: Vec<String>) -> retention::Local {
    let newest_done = ids
        .iter()
        .rev()
        .find(|id| {
            info::locate(dirs, id)
                .and_then(|p| info::read(&p).ok())
                .is_some_and(|b| b.status() == "DONE")
        })
        .cloned();
    retention::Local {
        ids: ids.into_iter().collect(),
        newest_done,
    }
}

/// Uploads every local DONE backup not complete in the bucket (with `dry_run`, only lists
/// those the real run would upload now: a backup Barman holds busy is skipped by both).
async fn upload_missing(
    cfg: &Config,
    srv: &Server,
    dirs: &ServerDirs,
    local: &[String],
    before: &[RemoteBackup],
    dry_run: bool,
) -> Result<FullSyncReport> {
    let mut report = FullSyncReport::default();
    let complete: BTreeSet<&str> = before
        .iter()
        .filter(|b| b.complete)
        .map(|b| b.id.as_str())
        .collect();
    for id in local.iter().filter(|id| !complete.contains(id.as_str())) {
        let status = info::locate(dirs, id)
            .and_then(|p| info::read(&p).ok())
            .map(|b| b.status().to_string())
            .unwrap_or_default();
        if status != "DONE" {
            report.skipped.push(format!("{id}: status {status:?}"));
            continue;
        }
        if dry_run {
            match would_upload(dirs, id) {
                Ok(()) => report.uploaded_backups.push(id.clone()),
                Err(NotNow::Interrupted) => return Err(Error::Interrupted),
                Err(NotNow::Wait(m)) => report.skipped.push(format!("{id}: {m}")),
                Err(NotNow::Retry(m) | NotNow::Never(m)) => {
                    return Err(Error::Failed(format!("backup {id}: {m}")));
                }
            }
            continue;
        }
        match upload_backup(srv, dirs, id, cfg).await {
            Ok(_) => report.uploaded_backups.push(id.clone()),
            Err(NotNow::Interrupted) => return Err(Error::Interrupted),
            Err(NotNow::Wait(m)) => report.skipped.push(format!("{id}: {m}")),
            Err(NotNow::Retry(m) | NotNow::Never(m)) => {
                return Err(Error::Failed(format!("backup {id}: {m}")));
            }
        }
    }
    Ok(report)
}

/// What [`upload_backup`] checks before it sends a byte: Barman's lock on the backup is free
/// (taken and let go at once) and the backup is eligible.
fn would_upload(dirs: &ServerDirs, id: &str) -> std::result::Result<(), NotNow> {
    let _lock = match crate::lockfile::try_lock_file(
        &dirs.backup_lock(id),
        "Barman operation on this backup",
    ) {
        Ok(l) => l,
        Err(Error::Busy(m)) => return Err(NotNow::Wait(m)),
        Err(e) => return Err(e.into()),
    };
    check_eligible(
        dirs,
        id,
        crate::clock::now(),
        std::time::Duration::MAX,
        None,
    )
    .map(|_| ())
}

/// The bucket as it would be after uploading `uploaded`.
fn would_hold(dirs: &ServerDirs, before: &[RemoteBackup], uploaded: &[String]) -> Vec<Held> {
    let mut held: Vec<Held> = before
        .iter()
        .filter(|b| !uploaded.contains(&b.id))
        .map(held)
        .collect();
    for id in uploaded {
        let bi = info::locate(dirs, id).and_then(|p| info::read(&p).ok());
        held.push(Held {
            id: id.clone(),
            complete: true,
            status: "DONE".into(),
            begin_wal: bi.as_ref().and_then(|b| b.begin_wal().map(str::to_string)),
            parent: bi.and_then(|b| b.get("parent_backup_id").map(str::to_string)),
        });
    }
    held.sort_by(|a, b| a.id.cmp(&b.id));
    held
}

/// Every remote WAL object: (key, path relative to `wals/`).
pub(crate) async fn wal_objects(srv: &Server) -> Result<Vec<(String, String)>> {
    let prefix = srv.remote.wals_prefix();
    Ok(srv
        .t
        .list_all(&ListRequest {
            prefix: prefix.clone(),
            ..Default::default()
        })
        .await?
        .into_iter()
        .filter_map(|o| {
            let rel = o.key.strip_prefix(&prefix)?.to_string();
            Some((o.key, rel))
        })
        .collect())
}

/// Carries out the deletions of a plan.
pub(crate) async fn delete(srv: &Server, r: &FullSyncReport) -> Result<()> {
    let Server { t, remote, name } = srv;
    for id in &r.deleted_backups {
        // backup.info first: from then on the backup reads as incomplete, never as valid.
        t.delete_keys(&[remote.backup_key(id, INFO)]).await?;
        let n = t.delete_prefix(&remote.backup_prefix(id)).await?;
        tracing::info!("{name}: deleted remote backup {id} ({} objects)", n + 1);
    }
    t.delete_keys(&r.deleted_wals).await
}

/// A listed backup as the retention planner sees it.
pub(crate) fn held(b: &RemoteBackup) -> Held {
    Held {
        id: b.id.clone(),
        complete: b.complete,
        status: b.status.clone(),
        begin_wal: b.begin_wal.clone(),
        parent: b.parent.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rb(id: &str, complete: bool, parent: Option<&str>) -> RemoteBackup {
        RemoteBackup::sketch(id, "DONE", complete, parent)
    }

    /// (case, list, id) → the first backup of the chain that is not complete.
    #[test]
    fn a_backup_is_complete_only_with_its_whole_chain() {
        let cases: Vec<(&str, Vec<RemoteBackup>, &str, Option<&str>)> = vec![
            ("a full backup", vec![rb("A", true, None)], "A", None),
            (
                "itself incomplete",
                vec![rb("A", false, None)],
                "A",
                Some("A"),
            ),
            (
                "an incremental with its parent",
                vec![rb("A", true, None), rb("B", true, Some("A"))],
                "B",
                None,
            ),
            (
                "the parent is gone from the bucket",
                vec![rb("B", true, Some("A"))],
                "B",
                Some("A"),
            ),
            (
                "the grandparent is incomplete",
                vec![
                    rb("A", false, None),
                    rb("B", true, Some("A")),
                    rb("C", true, Some("B")),
                ],
                "C",
                Some("A"),
            ),
            (
                "a loop of parents",
                vec![rb("A", true, Some("B")), rb("B", true, Some("A"))],
                "B",
                Some("B"),
            ),
        ];
        for (name, list, id, want) in cases {
            assert_eq!(chain_gap(&list, id).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn base_ls_says_not_complete_for_an_orphan() {
        let list = listing(vec![rb("B", true, Some("A")), rb("C", true, None)]);
        assert!(!list[0].0.complete, "{list:?}");
        assert_eq!(list[0].1.as_deref(), Some("A"));
        assert!(list[1].0.complete && list[1].1.is_none(), "{list:?}");
    }
}
