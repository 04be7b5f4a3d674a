//! Restoring a PostgreSQL 17+ incremental backup: alone it is useless, so the whole chain (the
//! full backup and every increment up to the one asked for) is restored from the bucket into a
//! staging directory beside DEST, each verified like any restore, then combined by
//! pg_combinebackup, as Barman does: the oldest backup first, the tablespaces of the newest
//! mapped to their new homes. The combined directory is built under a temporary name and
//! renamed into DEST only once pg_combinebackup succeeded; staging is removed either way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Claimed, RestoreOptions, Restored, manifest, recovery, restore_one};
use crate::barman::info::BackupInfo;
use crate::barman::server::Server;
use crate::error::{Error, Result};
use crate::fsutil;

/// The backups of `leaf`'s chain, oldest (the full backup) first, each with its backup.info.
async fn chain_of(srv: &Server, leaf: &str, info: BackupInfo) -> Result<Vec<(String, BackupInfo)>> {
    let mut chain = vec![(leaf.to_string(), info)];
    while let Some(parent) = chain
        .last()
        .and_then(|(_, i)| i.get("parent_backup_id"))
        .map(str::to_string)
    {
        if chain.len() > 1000 || chain.iter().any(|(id, _)| *id == parent) {
            return Err(Error::Failed(format!(
                "backup {leaf}: the chain of parents loops at {parent}"
            )));
        }
        let (info, _) = manifest(srv, &parent).await.map_err(|e| {
            Error::Failed(format!(
                "backup {leaf} is incremental, and its chain needs {parent}: {}",
                e.one_line()
            ))
        })?;
        chain.push((parent, info));
    }
    chain.reverse();
    Ok(chain)
}

/// Where a chain is rebuilt: each backup restored under `stage`, combined into `out`, which
/// then becomes `dest`. Both work directories are hidden beside DEST.
struct Places {
    dest: PathBuf,
    stage: PathBuf,
    out: PathBuf,
}

impl Places {
    fn beside(dest: &Path) -> Places {
        let dest: PathBuf = dest.components().collect();
        let parent = fsutil::parent_dir(&dest).to_path_buf();
        let name = dest
            .file_name()
            .map_or_else(|| "restore".into(), |n| n.to_string_lossy().into_owned());
        Places {
            stage: parent.join(format!(".{name}.barmans3-chain")),
            out: parent.join(format!(".{name}.barmans3-combining")),
            dest,
        }
    }

    /// Removes what an earlier, interrupted restore left in the work directories.
    fn clear(&self) -> Result<()> {
        for dir in [&self.stage, &self.out] {
            if dir.exists() {
                std::fs::remove_dir_all(dir)
                    .map_err(|e| Error::io(format!("remove the leftover {}", dir.display()), e))?;
            }
        }
        Ok(())
    }

    /// Removes the work directories, whatever became of the restore.
    fn remove_work(&self) {
        let _ = std::fs::remove_dir_all(&self.stage);
        let _ = std::fs::remove_dir_all(&self.out);
    }
}

/// Restores incremental backup `leaf` (whose backup.info is `info`) into `dest`.
pub async fn restore(
    srv: &Server,
    leaf: &str,
    info: BackupInfo,
    dest: &Path,
    opts: &RestoreOptions,
) -> Result<Restored> {
    let combine = pg_combinebackup(&opts.pg_combinebackup, &info)?;
    let chain = chain_of(srv, leaf, info).await?;
    let places = Places::beside(dest);
    places.clear()?;
    let result = stage_and_combine(srv, &chain, &places, &combine, opts).await;
    places.remove_work();
    result
}

/// A data directory restored in staging, with its tablespaces (oid → staged home).
type Staged = (PathBuf, BTreeMap<String, PathBuf>);

/// Restores each backup of the chain into `stage/<id>`: the staged directories, oldest first,
/// and the files and bytes written.
async fn stage_chain(
    srv: &Server,
    chain: &[(String, BackupInfo)],
    stage: &Path,
) -> Result<(Vec<Staged>, usize, u64)> {
    let mut staged = Vec::new();
    let mut files = 0;
    let mut bytes = 0;
    for (id, _) in chain {
        let (_, m) = manifest(srv, id).await?;
        let dir = stage.join(id);
        // Each backup's tablespaces beside it in staging (the plan's default homes).
        let r = restore_one(srv, &m, &dir.join("data"), &RestoreOptions::default()).await?;
        files += r.files;
        bytes += r.bytes;
        staged.push((dir.join("data"), r.tablespaces));
    }
    Ok((staged, files, bytes))
}

/// Restores each backup of the chain into staging, combines them, and moves the result to
/// DEST with the recovery settings.
async fn stage_and_combine(
    srv: &Server,
    chain: &[(String, BackupInfo)],
    places: &Places,
    combine: &Path,
    opts: &RestoreOptions,
) -> Result<Restored> {
    let Places { dest, stage, out } = places;
    let (staged, files, bytes) = stage_chain(srv, chain, stage).await?;
    let leaf_tbs = staged
        .last()
        .map(|(_, tbs)| tbs.clone())
        .ok_or_else(|| Error::Failed("an empty chain of backups".into()))?;
    // Final homes: the operator's choice, else beside DEST as for any restore.
    let homes: Vec<(String, PathBuf, PathBuf)> = leaf_tbs
        .iter()
        .map(|(oid, staged_home)| {
            let home =
                opts.tablespaces.get(oid).cloned().unwrap_or_else(|| {
                    PathBuf::from(format!("{}_tblspc", dest.display())).join(oid)
                });
            (oid.clone(), staged_home.clone(), home)
        })
        .collect();
    let mut claimed = Claimed::default();
    claimed.claim(dest)?;
    for (_, _, home) in &homes {
        claimed.claim(home)?;
    }
    let combined = run_combine(combine, &staged, &homes, out).and_then(|()| {
        place(out, dest)?;
        if let Some(cmd) = &opts.restore_command {
            recovery::write(dest, cmd)?;
        }
        for must in ["PG_VERSION", super::plan::PG_CONTROL] {
            if !dest.join(must).is_file() {
                return Err(Error::Failed(format!(
                    "pg_combinebackup left no {must} in {}",
                    dest.display()
                )));
            }
        }
        Ok(())
    });
    if let Err(e) = combined {
        claimed.undo();
        return Err(e);
    }
    Ok(Restored {
        files,
        bytes,
        tablespaces: homes
            .into_iter()
            .map(|(oid, _, home)| (oid, home))
            .collect(),
        notes: vec![format!(
            "incremental chain of {} backups ({}) combined by {}",
            chain.len(),
            chain
                .iter()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>()
                .join(" → "),
            combine.display()
        )],
    })
}

/// Runs pg_combinebackup: oldest backup first, each tablespace of the newest mapped to its
/// new home.
fn run_combine(
    combine: &Path,
    staged: &[Staged],
    homes: &[(String, PathBuf, PathBuf)],
    out: &Path,
) -> Result<()> {
    let mut cmd = std::process::Command::new(combine);
    cmd.arg(format!("--output={}", out.display()));
    for (_, staged_home, home) in homes {
        cmd.arg(format!(
            "--tablespace-mapping={}={}",
            staged_home.display(),
            home.display()
        ));
    }
    cmd.args(staged.iter().map(|(data, _)| data));
    let done = cmd
        .output()
        .map_err(|e| Error::io(format!("run {}", combine.display()), e))?;
    if !done.status.success() {
        return Err(Error::Failed(format!(
            "{} failed ({}): {}",
            combine.display(),
            done.status,
            crate::error::one_line(&String::from_utf8_lossy(&done.stderr))
        )));
    }
    Ok(())
}

/// Moves the combined directory into DEST (absent, or empty: then replaced), durably.
fn place(out: &Path, dest: &Path) -> Result<()> {
    if dest.exists() {
        std::fs::remove_dir(dest)
            .map_err(|e| Error::io(format!("replace {}", dest.display()), e))?;
    }
    fsutil::rename_durable(out, dest)
}

/// The pg_combinebackup to use: the configured one, else the one of the backup's major version
/// in the usual places, else the first on PATH.
fn pg_combinebackup(configured: &Option<PathBuf>, info: &BackupInfo) -> Result<PathBuf> {
    if let Some(p) = configured {
        return Ok(p.clone());
    }
    let major = info
        .get("version")
        .and_then(|v| v.parse::<u32>().ok())
        .map(|v| v / 10000);
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(m) = major {
        candidates.push(PathBuf::from(format!(
            "/usr/lib/postgresql/{m}/bin/pg_combinebackup"
        )));
        candidates.push(PathBuf::from(format!(
            "/usr/pgsql-{m}/bin/pg_combinebackup"
        )));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("pg_combinebackup")));
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        Error::Config(format!(
            "pg_combinebackup{} is needed to restore an incremental backup and was not found: install PostgreSQL's server binaries or set barman.pg_combinebackup",
            major.map_or(String::new(), |m| format!(" (PostgreSQL {m})"))
        ))
    })
}
