//! The Barman subcommands as the CLI runs them: validated parameters in, a report on stdout
//! (data) or stderr (logs), an [`Exit`] out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::basesync::{base_sync, queue_add};
use super::conf::{BarmanConf, ServerDirs};
use super::fullsync::{FullSyncOptions, full_sync, remote_backups};
use super::remote::Remote;
use super::restore::{RestoreOptions, base_restore, wal_restore};
use super::walsync::wal_sync;
use crate::config::Config;
use crate::error::{Error, Exit, Result};
use crate::transfer::Transfer;
use crate::units::human_bytes;

/// The Barman request the CLI parsed.
#[derive(Debug, Clone)]
pub enum Request {
    /// `base-sync`.
    BaseSync,
    /// `wal-sync SERVER|--all [--full]`.
    WalSync {
        /// Servers to sync (empty with `all`).
        server: Option<String>,
        /// Every configured server.
        all: bool,
        /// Full reconcile.
        full: bool,
    },
    /// `base-ls SERVER`.
    BaseLs {
        /// Server.
        server: String,
        /// JSON output.
        json: bool,
    },
    /// `full-sync SERVER`.
    FullSync {
        /// Server.
        server: String,
        /// Options.
        opts: FullSyncOptions,
    },
    /// `base-restore SERVER ID DEST`.
    BaseRestore {
        /// Server.
        server: String,
        /// Backup id.
        id: String,
        /// Destination data directory.
        dest: PathBuf,
        /// Options.
        opts: RestoreOptions,
    },
    /// `wal-restore SERVER NAME DEST`.
    WalRestore {
        /// Server.
        server: String,
        /// WAL file name (`%f`).
        name: String,
        /// Destination path (`%p`).
        dest: PathBuf,
    },
}

/// `queue-add`: runs without a runtime or a store, in milliseconds. As a retry hook, every
/// failure exits 62 (ABORT_CONTINUE) so Barman is never blocked; `full-sync` catches any backup
/// that was not queued.
pub fn queue_add_main(load: impl FnOnce() -> Result<Config>) -> Exit {
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("BARMAN_"))
        .collect();
    // As a retry hook every refusal must be 62 (ABORT_CONTINUE), or Barman retries forever.
    let retry_hook = env.get("BARMAN_RETRY").is_some_and(|v| v == "1")
        || env
            .get("BARMAN_HOOK")
            .is_some_and(|h| h.ends_with("_retry_script"));
    let result = load().and_then(|cfg| {
        let mut last = None;
        // A queue directory that is briefly unwritable gets three tries over ~2 s.
        for attempt in 0..3 {
            match queue_add(&cfg.barman.queue_dir, &env) {
                Ok(q) => return Ok(q),
                Err(e @ (Error::Usage(_) | Error::Config(_))) => return Err(e),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(300 << attempt));
        }
        Err(last.unwrap_or(Error::Failed("queue-add failed".into())))
    });
    match result {
        Ok(q) => {
            tracing::info!("queued backup {} ({:?})", q.backup_id, q.state);
            Exit::Success
        }
        Err(e) => {
            eprintln!("barmans3 queue-add: {}", e.one_line());
            if retry_hook {
                Exit::HookAbortContinue
            } else {
                e.exit()
            }
        }
    }
}

fn server_dirs(cfg: &Config, server: &str) -> Result<ServerDirs> {
    BarmanConf::load(&cfg.barman.config)?.server(server)
}

/// Runs a Barman request; prints its report. `json` selects machine output where it applies.
pub async fn run(cfg: &Config, t: &Transfer, req: Request) -> Result<Exit> {
    match req {
        Request::BaseSync => {
            let r = base_sync(cfg, t).await?;
            eprintln!(
                "barmans3 base-sync: {} done, {} waiting, {} failed, {} uploaded",
                r.done,
                r.waiting,
                r.failed,
                human_bytes(r.bytes)
            );
            if r.failed > 0 {
                return Err(Error::Failed(format!(
                    "{} task(s) failed: {}",
                    r.failed,
                    r.errors.join("; ")
                )));
            }
        }
        Request::WalSync { server, all, full } => {
            let conf = BarmanConf::load(&cfg.barman.config)?;
            let servers = if all {
                conf.servers()
            } else {
                server.into_iter().collect()
            };
            let mut failures = Vec::new();
            for s in servers {
                let dirs = conf.server(&s)?;
                match wal_sync(cfg, t, &dirs, full).await {
                    Ok(r) => eprintln!(
                        "barmans3 wal-sync {s}: {} uploaded ({}), {} checked{}",
                        r.uploaded,
                        human_bytes(r.bytes),
                        r.checked,
                        if r.full { ", full reconcile" } else { "" }
                    ),
                    Err(e @ (Error::Busy(_) | Error::Interrupted)) if !all => return Err(e),
                    Err(Error::Interrupted) => return Err(Error::Interrupted),
                    Err(e) => {
                        tracing::error!("wal-sync {s}: {}", e.one_line());
                        failures.push(format!("{s}: {}", e.one_line()));
                    }
                }
            }
            if !failures.is_empty() {
                return Err(Error::Failed(failures.join("; ")));
            }
        }
        Request::BaseLs { server, json } => {
            let remote = Remote::new(cfg.location.prefix(), &server);
            let list = remote_backups(t, &remote).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
            } else {
                println!(
                    "{:<16} {:<17} {:<32} {:<32} {:>10}  {:<49} COMPLETE",
                    "ID", "STATUS", "BEGIN", "END", "SIZE", "WAL RANGE"
                );
                for b in list {
                    let range = match (&b.begin_wal, &b.end_wal) {
                        (Some(a), Some(z)) => format!("{a}-{z}"),
                        _ => "-".into(),
                    };
                    println!(
                        "{:<16} {:<17} {:<32} {:<32} {:>10}  {:<49} {}",
                        b.id,
                        if b.status.is_empty() { "-" } else { &b.status },
                        b.begin_time.as_deref().unwrap_or("-"),
                        b.end_time.as_deref().unwrap_or("-"),
                        b.size.map_or("-".into(), human_bytes),
                        range,
                        if b.complete { "yes" } else { "no" }
                    );
                }
            }
        }
        Request::FullSync { server, opts } => {
            let dirs = server_dirs(cfg, &server)?;
            let r = full_sync(cfg, t, &dirs, opts).await?;
            let verb = if opts.dry_run {
                "would delete"
            } else {
                "deleted"
            };
            eprintln!(
                "barmans3 full-sync {server}: {} backup(s) uploaded, {} WAL(s) uploaded, {verb} {} backup(s) and {} WAL object(s){}",
                r.uploaded_backups.len(),
                r.wal.uploaded,
                r.deleted_backups.len(),
                r.deleted_wals.len(),
                if r.skipped.is_empty() {
                    String::new()
                } else {
                    format!("; skipped: {}", r.skipped.join(", "))
                }
            );
            if opts.dry_run {
                for id in &r.deleted_backups {
                    println!("delete backup {id}");
                }
                for k in &r.deleted_wals {
                    println!("delete {k}");
                }
            }
        }
        Request::BaseRestore {
            server,
            id,
            dest,
            opts,
        } => {
            let remote = Remote::new(cfg.location.prefix(), &server);
            let r = base_restore(t, &remote, &id, &dest, &opts).await?;
            eprintln!(
                "barmans3 base-restore {server} {id}: {} files, {} verified into {}",
                r.files,
                human_bytes(r.bytes),
                dest.display()
            );
            for (oid, dir) in &r.tablespaces {
                eprintln!("  tablespace {oid} -> {}", dir.display());
            }
        }
        Request::WalRestore { server, name, dest } => {
            let remote = Remote::new(cfg.location.prefix(), &server);
            match wal_restore(t, &remote, &name, &dest).await {
                Ok(n) => tracing::info!("{name}: {n} bytes to {}", dest.display()),
                // PostgreSQL asks for files that may not exist (the next timeline's history,
                // the end of the archive): a quiet non-zero exit is the answer.
                Err(Error::NotFound { .. }) => {
                    tracing::debug!("{name}: not in the bucket");
                    return Ok(Exit::Failed);
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Exit::Success)
}

/// Parses `OID=DIR` tablespace mappings.
pub fn parse_tablespaces(specs: &[String]) -> Result<BTreeMap<String, PathBuf>> {
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
            Ok((oid.to_string(), Path::new(dir).to_path_buf()))
        })
        .collect()
}
