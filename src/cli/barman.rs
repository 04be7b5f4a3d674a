//! The Barman commands' conversion into a [`BarmanAction`]: backup ids and WAL names checked,
//! tablespace maps built, before anything runs.

use std::path::PathBuf;

use super::Command;
use super::invocation::{BarmanAction, Servers};
use crate::barman::ship::follow::FollowOptions;
use crate::barman::ship::fullsync::FullSyncOptions;
use crate::error::{Error, Result};

pub(super) fn barman_action(c: Command) -> Result<BarmanAction> {
    Ok(match c {
        Command::BaseSync => BarmanAction::BaseSync,
        Command::WalSync {
            server,
            all,
            full,
            follow,
            poll,
        } => BarmanAction::WalSync {
            servers: servers(server, all),
            full,
            follow: follow.then(|| FollowOptions {
                poll,
                ..FollowOptions::default()
            }),
        },
        Command::BaseLs { server, layout, .. } => BarmanAction::BaseLs {
            server,
            layout: bucket_layout(&layout),
        },
        Command::WalPrefetch {
            server,
            spool,
            layout,
            ..
        } => BarmanAction::WalPrefetch {
            server,
            spool,
            layout: bucket_layout(&layout),
        },
        Command::Replicate {
            to,
            server,
            all,
            since,
            prune,
            force,
        } => replicate_action(to, servers(server, all), since, prune, force)?,
        Command::CatalogRestore {
            server,
            backups,
            wals_since,
            layout,
            ..
        } => catalog_action(server, backups, wals_since, layout)?,
        Command::FullSync {
            server,
            all,
            no_delete,
            dry_run,
            force,
        } => BarmanAction::FullSync {
            servers: servers(server, all),
            opts: FullSyncOptions {
                no_delete,
                dry_run,
                force,
            },
        },
        c @ Command::BaseRestore { .. } => base_restore_action(c)?,
        Command::Drill(a) => a.validate()?,
        Command::WalRestore {
            server,
            wal_name,
            dest,
            layout,
            ..
        } => wal_restore_action(server, wal_name, dest, &layout)?,
        other => {
            return Err(Error::Usage(format!("{other:?} is not a Barman command")));
        }
    })
}

fn wal_restore_action(
    server: String,
    name: String,
    dest: PathBuf,
    layout: &str,
) -> Result<BarmanAction> {
    if crate::barman::wal::relative_path(&name).is_none() {
        return Err(Error::Usage(format!(
            "{name:?} is not a WAL file name (segment, .partial, .backup or .history)"
        )));
    }
    Ok(BarmanAction::WalRestore {
        server,
        name,
        dest,
        layout: bucket_layout(layout),
    })
}

/// One server, or every server (`--all`, or no server named).
fn servers(server: Option<String>, all: bool) -> Servers {
    match (server, all) {
        (Some(s), false) => Servers::One(s),
        _ => Servers::All,
    }
}

fn replicate_action(
    to: String,
    servers: Servers,
    since: Option<String>,
    prune: bool,
    force: bool,
) -> Result<BarmanAction> {
    if !crate::config::valid_store_name(&to) {
        return Err(Error::Usage(format!(
            "--to {to:?}: name a store of the config's stores: (letters, digits, - and _)"
        )));
    }
    Ok(BarmanAction::Replicate {
        to,
        servers,
        opts: crate::barman::replica::ReplicateOptions {
            since: since.map(backup_id_arg).transpose()?,
            prune,
            force,
        },
    })
}

fn base_restore_action(c: Command) -> Result<BarmanAction> {
    let Command::BaseRestore {
        server,
        backup_id,
        dest,
        tablespaces,
        recovery,
        recovery_config,
        request_restore,
        layout,
        ..
    } = c
    else {
        return Err(Error::Usage(format!("{c:?} is not base-restore")));
    };
    Ok(BarmanAction::BaseRestore {
        layout: bucket_layout(&layout),
        request_restore,
        recovery_config,
        id: backup_id_arg(backup_id)?,
        tablespaces: parse_tablespaces(&tablespaces)?,
        server,
        dest,
        recovery,
    })
}

/// `--layout`'s value (clap allows only the two names).
pub(super) fn bucket_layout(name: &str) -> crate::barman::remote::BucketLayout {
    use crate::barman::remote::BucketLayout;
    match name {
        "barman-cloud" => BucketLayout::BarmanCloud,
        _ => BucketLayout::Barmans3,
    }
}

/// Why `catalog-restore --layout barman-cloud` is refused. Barman 3.18 and later keeps no local
/// copy of cloud backups and no xlog.db for cloud WALs (it refuses rebuild-xlogdb for them); an
/// inactive server whose directories are the bucket's URL loads the catalog from the bucket
/// (`BackupManager._load_backups_from_cloud`), so a rebuilt directory would serve nothing.
pub(super) const CLOUD_CATALOG: &str = "catalog-restore --layout barman-cloud: Barman (3.18 and later) reads a barman-cloud bucket's catalog itself and keeps none on disk, so there is no server directory to rebuild; configure the server with basebackups_directory and wals_directory set to the bucket's URL and active = false, or restore with barmans3 base-restore --layout barman-cloud";

fn catalog_action(
    server: String,
    backups: Vec<String>,
    wals_since: Option<String>,
    layout: Option<String>,
) -> Result<BarmanAction> {
    use crate::barman::recover::catalog::{CatalogOptions, InfoLayout};
    if layout.as_deref() == Some("barman-cloud") {
        return Err(Error::Usage(CLOUD_CATALOG.into()));
    }
    for id in &backups {
        backup_id_arg(id.clone())?;
    }
    Ok(BarmanAction::CatalogRestore {
        server,
        opts: CatalogOptions {
            backups,
            wals_since,
            layout: layout.map(|l| match l.as_str() {
                "base" => InfoLayout::Base,
                _ => InfoLayout::Meta,
            }),
        },
    })
}

fn backup_id_arg(id: String) -> Result<String> {
    if crate::barman::info::is_backup_id(&id) {
        Ok(id)
    } else {
        Err(Error::Usage(format!(
            "invalid backup id {id:?}: expected YYYYMMDDTHHMMSS (see base-ls)"
        )))
    }
}

/// Parses `OID=DIR` tablespace mappings.
fn parse_tablespaces(specs: &[String]) -> Result<std::collections::BTreeMap<String, PathBuf>> {
    specs
        .iter()
        .map(|s| {
            let (oid, dir) = s.split_once('=').ok_or_else(|| {
                Error::Usage(format!("--tablespace {s:?}: use OID=DIRECTORY"))
            })?;
            if oid.is_empty() || !oid.bytes().all(|b| b.is_ascii_digit()) || dir.is_empty() {
                return Err(Error::Usage(format!(
                    "--tablespace {s:?}: use OID=DIRECTORY (the oid is the directory name in the backup)"
                )));
            }
            Ok((oid.to_string(), PathBuf::from(dir)))
        })
        .collect()
}
