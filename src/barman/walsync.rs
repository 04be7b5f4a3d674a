//! `wal-sync`: ships Barman's WAL archive (`wals/`) to the bucket.
//!
//! Cost grows with the new WALs, not the archive: a state file remembers the oldest hash
//! directory not yet known to be complete remotely (the window). A run scans only the local
//! hash directories from the window on and lists the bucket with `start_after` at the window's
//! start, normally one request. A full reconcile (first run, `--full`, or every
//! `wal_reconcile_every`) scans and lists everything. A remote WAL with the same name and other
//! content is an error, never overwritten. One run per server at a time (lock file).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::conf::ServerDirs;
use super::queue::{now, try_lock_file};
use super::remote::Remote;
use super::wal::{self, WalKind};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::store::ListRequest;
use crate::transfer::{Transfer, bounded};

/// Per-server sync state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WalState {
    /// Hash directories before this one are complete in the bucket.
    pub window: Option<String>,
    /// Last full reconcile (seconds since the epoch).
    pub last_full: u64,
    /// Last run that finished without error (seconds since the epoch).
    #[serde(default)]
    pub last_success: u64,
}

impl WalState {
    /// The recorded state of a server (default when none).
    pub fn load(cfg: &Config, server: &str) -> Self {
        std::fs::read(state_path(cfg, server))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
}

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
}

fn state_path(cfg: &Config, server: &str) -> PathBuf {
    cfg.barman.state_dir.join(format!("{server}.wal-sync.json"))
}

fn is_hash_dir(name: &str) -> bool {
    name.len() == 16 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Local WAL files (relative path → absolute path) in hash directories ≥ `from` (all when
/// `None`), plus top-level history files. Also returns the hash directories seen, sorted.
pub fn scan_local(
    wals: &Path,
    from: Option<&str>,
) -> Result<(BTreeMap<String, PathBuf>, Vec<String>)> {
    let mut files = BTreeMap::new();
    let mut dirs = Vec::new();
    let rd = std::fs::read_dir(wals)
        .map_err(|e| Error::io(format!("list WAL directory {}", wals.display()), e))?;
    for e in rd {
        let e = e.map_err(|e| Error::io(format!("list {}", wals.display()), e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let ft = e
            .file_type()
            .map_err(|err| Error::io(format!("stat {}", e.path().display()), err))?;
        if ft.is_dir() && is_hash_dir(&name) {
            dirs.push(name);
        } else if ft.is_file() && wal::classify(&name) == Some(WalKind::History) {
            files.insert(name, e.path());
        }
    }
    dirs.sort();
    for d in dirs.iter().filter(|d| from.is_none_or(|f| d.as_str() >= f)) {
        let path = wals.join(d);
        let rd = std::fs::read_dir(&path)
            .map_err(|e| Error::io(format!("list {}", path.display()), e))?;
        for e in rd {
            let e = e.map_err(|e| Error::io(format!("list {}", path.display()), e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if wal::classify(&name).is_some_and(|k| k != WalKind::History)
                && e.file_type().is_ok_and(|t| t.is_file())
            {
                files.insert(format!("{d}/{name}"), e.path());
            }
        }
    }
    Ok((files, dirs))
}

/// Syncs one server's WAL archive. Takes the server's wal-sync lock (busy ⇒ [`Error::Busy`]).
pub async fn wal_sync(
    cfg: &Config,
    t: &Transfer,
    dirs: &ServerDirs,
    full: bool,
) -> Result<WalReport> {
    std::fs::create_dir_all(&cfg.barman.state_dir).map_err(|e| {
        Error::io(
            format!("create state directory {}", cfg.barman.state_dir.display()),
            e,
        )
    })?;
    let _lock = try_lock_file(
        &cfg.barman
            .state_dir
            .join(format!("{}.wal-sync.lock", dirs.name)),
        &format!("wal-sync for server {}", dirs.name),
    )?;
    let spath = state_path(cfg, &dirs.name);
    let state = WalState::load(cfg, &dirs.name);
    let full = full
        || state.window.is_none()
        || now().saturating_sub(state.last_full) > cfg.barman.wal_reconcile_every.as_secs();
    let window = if full { None } else { state.window.clone() };
    let (local, hash_dirs) = scan_local(&dirs.wals_dir, window.as_deref())?;

    let remote = Remote::new(cfg.location.prefix(), &dirs.name);
    let prefix = remote.wals_prefix();
    let start_after = window.as_ref().map(|w| format!("{prefix}{w}"));
    let mut remote_sizes: BTreeMap<String, u64> = BTreeMap::new();
    let req = ListRequest {
        prefix: prefix.clone(),
        start_after: start_after.clone(),
        ..Default::default()
    };
    t.list_pages(&req, |objs, _| {
        for o in objs {
            if let Some(rel) = o.key.strip_prefix(&prefix) {
                remote_sizes.insert(rel.to_string(), o.size);
            }
        }
        true
    })
    .await?;

    let mut conflicts = Vec::new();
    let mut todo = Vec::new();
    for (rel, path) in &local {
        // Files sorting before the listing's start were settled by earlier runs.
        if let Some(sa) = &start_after
            && format!("{prefix}{rel}").as_str() <= sa.as_str()
        {
            continue;
        }
        let size = std::fs::symlink_metadata(path)
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
            .len();
        match remote_sizes.get(rel) {
            Some(&s) if s == size => {}
            Some(&s) => conflicts.push(format!("{rel}: {size} bytes here, {s} in the bucket")),
            None => todo.push((rel.clone(), path.clone(), size)),
        }
    }
    let checked = local.len();
    let pending: u64 = todo.iter().map(|j| j.2).sum();
    t.progress().add_work(todo.len() as u64, pending);
    let uploads = bounded(todo, t.file_workers(), |(rel, path, _)| {
        let (t, key) = (t.clone(), remote.wal_key(&rel));
        async move { t.upload_file(&path, &key, None).await.map(|u| u.size) }
    })
    .await?;
    let report = WalReport {
        uploaded: uploads.len(),
        bytes: uploads.iter().sum(),
        checked,
        full,
    };
    if !conflicts.is_empty() {
        return Err(Error::Failed(format!(
            "server {}: {} WAL file(s) differ from the bucket and were not overwritten, first: {}",
            dirs.name,
            conflicts.len(),
            conflicts[0]
        )));
    }
    // Everything before the second-newest hash directory is now known complete remotely; keep
    // the newest two in the window (late .backup/.partial files land in the previous one).
    let new_window = match hash_dirs.len() {
        0 => window,
        1 => Some(hash_dirs[0].clone()),
        n => Some(hash_dirs[n - 2].clone()),
    };
    let new_state = WalState {
        window: new_window,
        last_full: if full { now() } else { state.last_full },
        last_success: now(),
    };
    let json =
        serde_json::to_vec(&new_state).map_err(|e| Error::Failed(format!("encode state: {e}")))?;
    fsutil::write_atomic(&spath, &json)?;
    Ok(report)
}
