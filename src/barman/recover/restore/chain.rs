//! Restoring a PostgreSQL 17+ incremental backup: alone it is useless, so the whole chain (the
//! full backup and every increment up to the one asked for) is restored from the bucket into
//! staging (`barman.restore_staging_dir`, else beside DEST), each verified like any restore,
//! then combined by pg_combinebackup, as Barman does: the oldest backup first, the tablespaces
//! of the newest mapped to their new homes. pg_combinebackup and the emptiness of DEST are
//! checked before anything is downloaded. The combined directory is built hidden inside DEST,
//! checked against the backup_manifest pg_combinebackup wrote ([`super::combined`]), and only
//! then moved into place, pg_control last; staging is removed either way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

use super::{Claimed, RestoreOptions, Restored, manifest, recovery, restore_one};
use crate::barman::info::BackupInfo;
use crate::barman::manifest::Manifest;
use crate::barman::server::Server;
use crate::codec::Decryption;
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

/// Where a chain is rebuilt: each backup restored under `stage` (in
/// `barman.restore_staging_dir` when set, else hidden beside DEST), combined by
/// pg_combinebackup into `out`, a hidden directory inside DEST, whose entries then move up
/// into DEST, `global` (with pg_control) last. Nothing is created beside DEST but DEST itself,
/// so a restore into an empty DEST under a parent the user cannot write works as a plain one.
struct Places {
    dest: PathBuf,
    stage: PathBuf,
    out: PathBuf,
}

/// The hidden directory inside DEST that pg_combinebackup writes.
const COMBINING: &str = ".barmans3-combining";

impl Places {
    fn new(dest: &Path, staging: Option<&Path>) -> Places {
        let dest: PathBuf = dest.components().collect();
        let name = dest
            .file_name()
            .map_or_else(|| "restore".into(), |n| n.to_string_lossy().into_owned());
        let stage = match staging {
            Some(dir) => dir.join(format!(".{name}.barmans3-chain")),
            None => fsutil::parent_dir(&dest).join(format!(".{name}.barmans3-chain")),
        };
        Places {
            stage,
            out: dest.join(COMBINING),
            dest,
        }
    }

    /// Removes what an earlier, interrupted restore left in staging, then makes the staging
    /// directory anew, 0700: in a shared staging directory nobody else may own or write it.
    fn clear(&self) -> Result<()> {
        if std::fs::symlink_metadata(&self.stage).is_ok() {
            std::fs::remove_dir_all(&self.stage).map_err(|e| {
                Error::io(format!("remove the leftover {}", self.stage.display()), e)
            })?;
        }
        if let Some(parent) = self.stage.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.stage)
            .map_err(|e| Error::io(format!("create {}", self.stage.display()), e))
    }

    /// Removes the work directories, whatever became of the restore.
    fn remove_work(&self) {
        let _ = std::fs::remove_dir_all(&self.stage);
        let _ = std::fs::remove_dir_all(&self.out);
    }
}

/// Refuses a destination that exists and is not an empty directory, before anything is
/// downloaded.
fn must_be_empty(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_none()) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::Usage(format!(
            "{} is not empty; restore into a new or empty directory",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("list {}", dir.display()), e)),
    }
}

/// Restores incremental backup `leaf` (whose backup.info is `info` and manifest `m`) into
/// `dest`. pg_combinebackup and empty destinations are checked before a byte is downloaded.
pub async fn restore(
    srv: &Server,
    leaf: &str,
    (info, m): (BackupInfo, Manifest),
    dest: &Path,
    opts: &RestoreOptions,
) -> Result<Restored> {
    // The chain's metadata first (a few small reads: a missing parent is the first thing to
    // hear of), then the tool and the destinations, then the data.
    let combine = pg_combinebackup(&opts.pg_combinebackup, &info);
    let chain = chain_of(srv, leaf, info).await?;
    let combine = combine?;
    let planned = super::plan::plan(&m, dest, &opts.tablespaces)?;
    must_be_empty(&planned.dest)?;
    for home in planned.tablespaces.values() {
        must_be_empty(home)?;
    }
    let places = Places::new(dest, opts.staging.as_deref());
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
    decrypt: Option<&Decryption>,
) -> Result<(Vec<Staged>, usize, u64)> {
    // Each backup's tablespaces beside it in staging (the plan's default homes).
    let opts = RestoreOptions {
        decrypt: decrypt.cloned(),
        ..RestoreOptions::default()
    };
    let mut staged = Vec::new();
    let mut files = 0;
    let mut bytes = 0;
    for (id, _) in chain {
        let (_, m) = manifest(srv, id).await?;
        let dir = stage.join(id);
        let r = restore_one(srv, &m, &dir.join("data"), &opts).await?;
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
    let (staged, files, bytes) = stage_chain(srv, chain, stage, opts.decrypt.as_ref()).await?;
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
    let combined = (|| {
        std::fs::create_dir_all(dest)
            .map_err(|e| Error::io(format!("create {}", dest.display()), e))?;
        run_combine(combine, &staged, &homes, out)?;
        let checked = super::combined::check(out)?;
        tracing::info!(
            "the combined backup matches its backup_manifest: {} files{}",
            checked.files,
            if checked.size_only > 0 {
                format!(" ({} by size only: no CRC32C listed)", checked.size_only)
            } else {
                String::new()
            }
        );
        place(out, dest, opts.restore_command.as_deref())?;
        for must in ["PG_VERSION", super::plan::PG_CONTROL] {
            if !dest.join(must).is_file() {
                return Err(Error::Failed(format!(
                    "pg_combinebackup left no {must} in {}",
                    dest.display()
                )));
            }
        }
        Ok(())
    })();
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

/// Moves the combined directory's entries up into DEST, writes the recovery settings, and
/// moves `global` (with pg_control) last: a restore stopped on the way leaves no pg_control.
fn place(out: &Path, dest: &Path, restore_command: Option<&str>) -> Result<()> {
    let mut last = None;
    let entries =
        std::fs::read_dir(out).map_err(|e| Error::io(format!("list {}", out.display()), e))?;
    for e in entries {
        let e = e.map_err(|e| Error::io(format!("list {}", out.display()), e))?;
        if e.file_name() == "global" {
            last = Some(e.path());
            continue;
        }
        fsutil::rename_durable(&e.path(), &dest.join(e.file_name()))?;
    }
    if let Some(cmd) = restore_command {
        recovery::write(dest, cmd)?;
    }
    if let Some(global) = last {
        fsutil::rename_durable(&global, &dest.join("global"))?;
    }
    let mode = std::fs::metadata(out)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
        .unwrap_or(0o700);
    std::fs::remove_dir(out).map_err(|e| Error::io(format!("remove {}", out.display()), e))?;
    std::fs::set_permissions(
        dest,
        std::os::unix::fs::PermissionsExt::from_mode(super::modes::narrow(mode).0),
    )
    .map_err(|e| Error::io(format!("chmod {}", dest.display()), e))
}

/// The pg_combinebackup to use: the configured one, else the one of the backup's major version
/// in the usual places, else the first on PATH.
fn pg_combinebackup(configured: &Option<PathBuf>, info: &BackupInfo) -> Result<PathBuf> {
    if let Some(p) = configured {
        return match std::fs::metadata(p) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(p.clone()),
            _ => Err(Error::Config(format!(
                "barman.pg_combinebackup: {} is not an executable file; it is needed to restore an incremental backup (nothing was downloaded)",
                p.display()
            ))),
        };
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
            "pg_combinebackup{} is needed to restore an incremental backup and was not found (nothing was downloaded): install PostgreSQL's server binaries or set barman.pg_combinebackup",
            major.map_or(String::new(), |m| format!(" (PostgreSQL {m})"))
        ))
    })
}
