//! `base-restore --layout barman-cloud`: a backup barman-cloud-backup wrote, rebuilt from the
//! bucket alone. Every archive part streams from the bucket (ranged GETs in parallel, the
//! stored object's size and checksum verified as it streams) through its decoder into the same
//! tar extraction our own tar backups use, so the same rules hold: no entry outside its root,
//! no link (the `pg_tblspc/<oid>` links are made by the restore to the tablespaces' new homes),
//! no device, FIFO or hard link; `global/pg_control` lands under a temporary name that only the
//! very last step renames. A failure removes what the restore wrote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::list::{backup_info, objects};
use super::{Part, archives, tablespace_oids};
use crate::barman::recover::restore::plan::{Archive, PG_CONTROL, normalize, place_tablespaces};
use crate::barman::recover::restore::tar::{Extracted, PG_CONTROL_PENDING, restore_archive};
use crate::barman::recover::restore::{
    Claimed, RestoreOptions, Restored, link_and_close, recovery,
};
use crate::barman::server::Server;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::transfer::bounded;

/// Archive parts restored at once (each one's download is itself parallel).
const PARTS_AT_ONCE: usize = 4;

/// Restores barman-cloud backup `id` into `dest` (absent or empty).
pub async fn base_restore(
    srv: &Server,
    id: &str,
    dest: &Path,
    opts: &RestoreOptions,
) -> Result<Restored> {
    let bi = backup_info(srv, id).await?.ok_or_else(|| {
        Error::Failed(format!(
            "backup {id} is not complete in the bucket ({} is missing); see base-ls --layout barman-cloud",
            srv.remote.backup_key(id, crate::barman::remote::INFO)
        ))
    })?;
    if bi.status() != "DONE" {
        return Err(Error::Failed(format!(
            "backup {id} has status {:?} in its backup.info, not DONE: it cannot be restored",
            bi.status()
        )));
    }
    if bi.get("snapshots_info").is_some() {
        return Err(Error::Failed(format!(
            "backup {id} is a snapshot backup: its data lives in cloud disk snapshots, not in the bucket"
        )));
    }
    if let Some(parent) = bi.get("parent_backup_id") {
        return Err(Error::Failed(format!(
            "backup {id} is an incremental backup of {parent}: barman-cloud buckets hold no block-level increments barmans3 can combine; restore a full backup"
        )));
    }
    let oids = tablespace_oids(bi.get("tablespaces"));
    let found = archives(id, &objects(srv, id).await?, &oids)?;
    let dest = normalize(dest);
    let homes = place_tablespaces(id, &dest, &oids, &opts.tablespaces)?;
    let mut claimed = Claimed::default();
    claimed.claim(&dest)?;
    for dir in homes.values() {
        claimed.claim(dir)?;
    }
    let result = write(srv, found, &dest, &homes, opts).await;
    if result.is_err() {
        // Only what this restore wrote is there: leave the destinations as they were, so a
        // half-restored directory can never be started and the restore can simply be rerun.
        claimed.undo();
    }
    result
}

async fn write(
    srv: &Server,
    found: super::Archives,
    dest: &Path,
    homes: &BTreeMap<String, PathBuf>,
    opts: &RestoreOptions,
) -> Result<Restored> {
    for dir in std::iter::once(dest).chain(homes.values().map(PathBuf::as_path)) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    let barrier =
        fsutil::FsBarrier::open(std::iter::once(dest).chain(homes.values().map(PathBuf::as_path)))?;
    let jobs: Vec<(Part, PathBuf)> = found
        .into_values()
        .flatten()
        .filter_map(|p| {
            let root = match &p.oid {
                None => dest.to_path_buf(),
                Some(oid) => homes.get(oid)?.clone(),
            };
            Some((p, root))
        })
        .collect();
    srv.t.progress().add_work(
        jobs.len() as u64,
        jobs.iter().map(|(p, _)| p.size).sum::<u64>(),
    );
    let parts = bounded(jobs, PARTS_AT_ONCE, |(p, root)| {
        let t = srv.t.clone();
        async move {
            let a = Archive {
                path: p.key.clone(),
                oid: p.oid.clone(),
                codec: p.codec,
                encrypted: false,
                size: p.size,
                crc32c: None,
            };
            restore_archive(&t, &p.key, &a, root, None).await
        }
    })
    .await?;
    let mut all = Extracted::default();
    for x in parts {
        all.files += x.files;
        all.bytes += x.bytes;
        all.dirs.extend(x.dirs);
        all.narrowed += x.narrowed;
    }
    let pending = dest.join(PG_CONTROL_PENDING);
    if !pending.exists() {
        return Err(Error::Failed(format!(
            "the backup's data archive holds no {PG_CONTROL}: not a backup PostgreSQL can start from"
        )));
    }
    crate::barman::recover::restore::modes::report("the backup", all.narrowed);
    let links: Vec<(PathBuf, PathBuf)> = homes
        .iter()
        .map(|(oid, home)| (dest.join("pg_tblspc").join(oid), home.clone()))
        .collect();
    let mut modes = all.dirs;
    modes.push((dest.to_path_buf(), 0o700));
    modes.extend(homes.values().map(|h| (h.clone(), 0o700)));
    link_and_close(&links, modes)?;
    if let Some(cmd) = &opts.restore_command {
        recovery::write(dest, cmd)?;
    }
    // Everything written so far reaches the disk before pg_control makes it startable.
    barrier.sync()?;
    // Last: pg_control, the file without which PostgreSQL will not start.
    fsutil::rename_durable(&pending, &dest.join(PG_CONTROL))?;
    Ok(Restored {
        files: all.files,
        bytes: all.bytes,
        tablespaces: homes.clone(),
        notes: Vec::new(),
    })
}
