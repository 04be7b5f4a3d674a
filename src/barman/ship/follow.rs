//! `wal-sync --follow`: ships each WAL file as soon as Barman has finished writing it, and keeps
//! running. inotify (through `notify`) says when something changed in a server's `wals/`; every
//! change, and every `poll` interval without one, runs the same [`wal_sync`] as cron mode (same
//! lock, taken per cycle so a cron run can interleave; same plan, verification, conflict rules
//! and state). A file is shipped once its writer closed it or renamed it into place, or once it
//! has been quiet for `settle` ([`walplan::settled`]), never half-written. Failures are retried
//! with a growing pause, never ending the run; SIGTERM ends it cleanly.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RenameMode};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::state::LocalState;
use super::walplan::{self, LocalWal};
use super::walsync::wal_sync;
use crate::barman::conf::ServerDirs;
use crate::clock::now;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::transfer::Transfer;

/// How `--follow` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowOptions {
    /// Look for new files this often even without an event (events can be missed: NFS,
    /// inotify queue overflow).
    pub poll: Duration,
    /// A file no writer announced is shipped after this long without a change.
    pub settle: Duration,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            poll: Duration::from_secs(60),
            settle: Duration::from_secs(2),
        }
    }
}

/// Files announced finished, kept until the next cycle; beyond this many, new ones wait to
/// settle instead (the set stays bounded whatever the WAL rate).
const MAX_ANNOUNCED: usize = 100_000;

/// One followed server, shared with the watcher thread.
#[derive(Debug)]
struct Watched {
    dirs: ServerDirs,
    /// Something changed since the last cycle.
    dirty: AtomicBool,
    /// Files whose writer closed them or renamed them into place.
    announced: Mutex<HashSet<PathBuf>>,
    /// Wakes the server's loop; a wake-up while it is busy is kept for its next wait.
    wake: Notify,
}

impl Watched {
    fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// What `status` shows of a running follower (`follow.json` beside the server's WAL state).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Process id.
    pub pid: u32,
    /// When it started (seconds since the epoch).
    pub started: u64,
    /// When its last cycle ended.
    pub last_cycle: u64,
    /// WAL files shipped since it started.
    pub shipped: u64,
    /// Milliseconds from the last shipped file's modification to its verified upload.
    pub last_lag_ms: Option<u64>,
    /// The last cycle's error, if it failed.
    pub last_error: Option<String>,
}

/// Where a server's heartbeat lives.
pub fn heartbeat_path(cfg: &Config, server: &str) -> PathBuf {
    LocalState::new(cfg).heartbeat_path(server)
}

/// Writes a server's heartbeat. Best effort: `status` reads it, shipping does not.
fn write_heartbeat(cfg: &Config, server: &str, beat: &Heartbeat) {
    let path = heartbeat_path(cfg, server);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = fsutil::write_atomic(&path, &serde_json::to_vec(beat).unwrap_or_default());
}

/// Reads a server's heartbeat, if a follower wrote one.
pub fn heartbeat(cfg: &Config, server: &str) -> Option<Heartbeat> {
    std::fs::read(heartbeat_path(cfg, server))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// When a server's next cycle is due, and how its last ones went.
#[derive(Debug)]
struct Schedule {
    next_poll: Instant,
    retry_at: Option<Instant>,
    failures: u32,
    beat: Heartbeat,
}

/// Follows the WAL archives of `servers` until SIGTERM/SIGINT, each server in a loop of its
/// own, side by side: one server's long upload, reconcile or retries do not delay another's
/// WALs. Requests stay bounded by the transfer's one concurrency limit, which they share.
pub async fn follow(
    cfg: &Config,
    t: &Transfer,
    servers: Vec<ServerDirs>,
    opts: FollowOptions,
) -> Result<()> {
    let watched: Arc<Vec<Watched>> = Arc::new(
        servers
            .into_iter()
            .map(|dirs| Watched {
                dirs,
                dirty: AtomicBool::new(true),
                announced: Mutex::new(HashSet::new()),
                wake: Notify::new(),
            })
            .collect(),
    );
    let _watcher = watch(&watched)?;
    LocalState::new(cfg).ensure()?;
    tracing::info!(
        "following {} server(s): {}",
        watched.len(),
        watched
            .iter()
            .map(|w| w.dirs.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let result = run_loops(cfg, t, &watched, opts).await;
    for w in watched.iter() {
        let _ = std::fs::remove_file(heartbeat_path(cfg, &w.dirs.name));
    }
    match result {
        Err(Error::Interrupted) | Ok(()) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn run_loops(
    cfg: &Config,
    t: &Transfer,
    watched: &Arc<Vec<Watched>>,
    opts: FollowOptions,
) -> Result<()> {
    let (cfg, started) = (Arc::new(cfg.clone()), now());
    let mut loops = JoinSet::new();
    for i in 0..watched.len() {
        let (cfg, t, watched) = (cfg.clone(), t.clone(), watched.clone());
        loops.spawn(async move { server_loop(&cfg, &t, &watched[i], opts, started).await });
    }
    let mut result = Ok(());
    while let Some(done) = loops.join_next().await {
        let done =
            done.unwrap_or_else(|e| Err(Error::Failed(format!("a follower loop failed: {e}"))));
        if let (Err(e), Ok(())) = (done, &result) {
            // The others stop too: a follower that silently lost a server would be worse.
            t.cancel_flag().cancel();
            result = Err(e);
        }
    }
    result
}

/// One server's cycles until SIGTERM: on its events, every `poll`, and when a retry or a
/// deferred file is due.
async fn server_loop(
    cfg: &Config,
    t: &Transfer,
    w: &Watched,
    opts: FollowOptions,
    started: u64,
) -> Result<()> {
    let cancel = t.cancel_flag().clone();
    let mut s = Schedule {
        next_poll: Instant::now(),
        retry_at: None,
        failures: 0,
        beat: Heartbeat {
            pid: std::process::id(),
            started,
            ..Heartbeat::default()
        },
    };
    loop {
        let now = Instant::now();
        let due = w.dirty.swap(false, Ordering::SeqCst)
            || now >= s.next_poll
            || s.retry_at.is_some_and(|r| now >= r);
        if due {
            cycle(cfg, t, w, &mut s, opts).await?;
            write_heartbeat(cfg, &w.dirs.name, &s.beat);
        }
        let next = s.retry_at.map_or(s.next_poll, |r| r.min(s.next_poll));
        tokio::select! {
            _ = w.wake.notified() => {}
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = cancel.cancelled() => return Ok(()),
        }
    }
}

/// One wal-sync of a followed server; errors other than a signal are logged and retried.
async fn cycle(
    cfg: &Config,
    t: &Transfer,
    w: &Watched,
    s: &mut Schedule,
    opts: FollowOptions,
) -> Result<()> {
    let announced = std::mem::take(&mut *w.announced.lock().unwrap_or_else(|e| e.into_inner()));
    let now_ns = ns(SystemTime::now());
    let settle_ns = opts.settle.as_nanos() as i128;
    let ready = |f: &LocalWal| walplan::settled(f, announced.contains(&f.path), now_ns, settle_ns);
    let started = Instant::now();
    let result = wal_sync(cfg, t, &w.dirs, false, Some(&ready)).await;
    s.next_poll = Instant::now() + opts.poll;
    s.retry_at = None;
    s.beat.last_cycle = now();
    match result {
        Ok(r) => {
            s.failures = 0;
            s.beat.last_error = None;
            if r.uploaded > 0 {
                s.beat.shipped += r.uploaded as u64;
                let lag = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as i128)
                    .unwrap_or(0)
                    .saturating_sub(r.newest_mtime_ns.unwrap_or(now_ns));
                s.beat.last_lag_ms = u64::try_from(lag / 1_000_000).ok();
                tracing::info!(
                    "wal-sync {}: shipped {} file(s) in {:.0?}",
                    w.dirs.name,
                    r.uploaded,
                    started.elapsed()
                );
            }
            if r.deferred > 0 {
                // Not announced and still fresh: look again once they can have settled.
                s.retry_at = Some(Instant::now() + opts.settle);
            }
        }
        Err(Error::Interrupted) => return Err(Error::Interrupted),
        Err(Error::Busy(_)) => s.retry_at = Some(Instant::now() + Duration::from_secs(1)),
        Err(e) => {
            s.failures += 1;
            let pause = Duration::from_secs(1 << s.failures.min(6)).min(opts.poll);
            tracing::error!(
                "wal-sync {}: {} (retrying in {pause:?})",
                w.dirs.name,
                e.one_line()
            );
            s.beat.last_error = Some(e.one_line());
            s.retry_at = Some(Instant::now() + pause);
        }
    }
    Ok(())
}

fn ns(t: SystemTime) -> i128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// Starts the inotify watcher over every server's `wals/` (recursive: new hash directories
/// are watched as they appear). Its callback only marks servers dirty and records announced
/// files: the work happens in the cycles.
fn watch(watched: &Arc<Vec<Watched>>) -> Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let w2 = watched.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        match res {
            Ok(ev) => on_event(&w2, &ev),
            // An error from inotify (overflow and the like): look at everything.
            Err(_) => w2.iter().for_each(Watched::mark_dirty),
        }
    })
    .map_err(|e| Error::Failed(format!("cannot start watching WAL directories: {e}")))?;
    for w in watched.iter() {
        watcher
            .watch(&w.dirs.wals_dir, notify::RecursiveMode::Recursive)
            .map_err(|e| {
                Error::Failed(format!(
                    "cannot watch {} (server {}): {e}",
                    w.dirs.wals_dir.display(),
                    w.dirs.name
                ))
            })?;
    }
    Ok(watcher)
}

/// Whether an event announces a file finished (its writer closed it, or it was renamed into
/// place), merely changes something (a new file or directory), or is of no interest.
fn classify(kind: &EventKind) -> Option<bool> {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(true),
        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => Some(true),
        EventKind::Create(CreateKind::File | CreateKind::Folder | CreateKind::Any) => Some(false),
        EventKind::Other => Some(false),
        _ => None,
    }
}

/// Records an event and wakes the server it concerns.
fn on_event(watched: &[Watched], ev: &notify::Event) {
    let Some(announces) = classify(&ev.kind) else {
        return;
    };
    if ev.need_rescan() || ev.paths.is_empty() {
        watched.iter().for_each(Watched::mark_dirty);
        return;
    }
    // A rename pair lists the source first; the destination is what appeared.
    let Some(path) = ev.paths.last() else {
        return;
    };
    let Some(w) = watched.iter().find(|w| path.starts_with(&w.dirs.wals_dir)) else {
        return;
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let is_wal = crate::barman::wal::classify(&name).is_some();
    if !is_wal && !path.is_dir() {
        return; // Barman's `.tmp` files and the like.
    }
    if announces && is_wal {
        let mut set = w.announced.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() < MAX_ANNOUNCED {
            set.insert(path.clone());
        }
    }
    w.mark_dirty();
}
