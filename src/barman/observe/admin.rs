//! Operator views and actions: `status` (queue, running tasks, WAL lag, last syncs), `check`
//! (the same as a monitoring plugin: 0 OK, 1 WARNING, 2 CRITICAL) and queue administration
//! (`queue ls|retry|prune`).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;

use crate::barman::conf::BarmanConf;
use crate::barman::drill::record::{self, DrillRecord};
use crate::barman::remote::Remote;
use crate::barman::ship::queue::{Queue, State};
use crate::barman::ship::state::LocalState;
use crate::barman::ship::walsync::scan_local;
use crate::barman::wal::{self, WalKind};
use crate::clock::now;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::ListRequest;
use crate::transfer::Transfer;

pub use super::judge::{Thresholds, judge};

/// One task as `status` and `queue ls` show it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    /// Backup id.
    pub backup_id: String,
    /// Server.
    pub server: String,
    /// State.
    pub state: State,
    /// Seconds since it was queued.
    pub age_s: u64,
    /// Sync attempts.
    pub attempts: u32,
    /// pid of the run working it, and whether that process is alive.
    pub pid: Option<(u32, bool)>,
    /// Last error.
    pub last_error: Option<String>,
    /// Whether the task file could not be read.
    pub damaged: bool,
}

/// WAL shipping of one server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerView {
    /// Server.
    pub server: String,
    /// Newest WAL segment in Barman's archive.
    pub newest_local: Option<String>,
    /// Newest WAL segment in the bucket.
    pub newest_remote: Option<String>,
    /// Local WAL files not in the bucket yet.
    pub pending: usize,
    /// Seconds the oldest pending WAL has waited.
    pub pending_age_s: Option<u64>,
    /// Seconds since the last successful wal-sync.
    pub last_wal_sync_age_s: Option<u64>,
    /// When the last successful wal-sync ended (seconds since the epoch).
    pub last_wal_sync_at: Option<u64>,
    /// Why the view is incomplete (unreadable directory).
    pub problem: Option<String>,
    /// The `wal-sync --follow` serving this server, if one ran.
    pub follower: Option<FollowerView>,
    /// Backups DONE in Barman longer than `barman.hook_grace` and not complete in the bucket
    /// (their hook failed; only full-sync would upload them): (id, seconds since DONE).
    pub unsynced: Vec<(String, u64)>,
}

/// A `wal-sync --follow` as `status` and `check` see it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FollowerView {
    /// Its process id.
    pub pid: u32,
    /// Whether that process is alive.
    pub alive: bool,
    /// Seconds since its last cycle.
    pub last_cycle_age_s: u64,
    /// WAL files it shipped since it started.
    pub shipped: u64,
    /// Milliseconds from the last shipped file's modification to its verified upload.
    pub last_lag_ms: Option<u64>,
}

/// How many tasks are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    /// `.run`.
    pub run: usize,
    /// `.running`.
    pub running: usize,
    /// `.done`.
    pub done: usize,
    /// `.error`.
    pub error: usize,
}

impl QueueCounts {
    /// Counts one task in `state`.
    pub fn add(&mut self, state: State) {
        match state {
            State::Run => self.run += 1,
            State::Running => self.running += 1,
            State::Done => self.done += 1,
            State::Error => self.error += 1,
        }
    }
}

/// Everything `status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Tasks by state.
    pub queue: QueueCounts,
    /// Tasks not done (run, running, error).
    pub tasks: Vec<TaskView>,
    /// Per-server WAL view.
    pub servers: Vec<ServerView>,
    /// Seconds since the last base-sync without failures.
    pub last_base_sync_age_s: Option<u64>,
    /// When the last base-sync without failures ended (seconds since the epoch).
    pub last_base_sync_at: Option<u64>,
    /// Whether the bucket answered a listing.
    pub bucket: BucketView,
    /// Each server's replicas (`stores:`), filled by the caller that can open them.
    pub replicas: Vec<crate::barman::replica::ReplicaView>,
    /// The last drill of each configured server that has one (this store's).
    pub drills: Vec<DrillRecord>,
    /// Servers Barman's configuration does not name, drilled here from a barman-cloud bucket:
    /// the backups that bucket holds.
    pub cloud: Vec<crate::barman::cloud::summary::CloudSummary>,
    /// The last Object Lock proof of this store, when a lock is configured and one ran.
    pub lock_proof: Option<super::lockcheck::LockProofRecord>,
}

/// The bucket as `status` saw it (`--json`: `{"reachable": bool, "error": string|null}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BucketView {
    /// Whether a listing of the prefix was answered.
    pub reachable: bool,
    /// Why not, in one line.
    pub error: Option<String>,
}

impl BucketView {
    /// A bucket that answered.
    pub fn reachable() -> BucketView {
        BucketView {
            reachable: true,
            error: None,
        }
    }
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether `pid` is still a follower: after a `kill -9` the number may belong to another
/// process by now.
fn follower_alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let has = |a: &[u8]| c.split(|&b| b == 0).any(|arg| arg == a);
        has(b"wal-sync") && has(b"--follow")
    })
}

/// Queue entries as views.
pub fn queue_views(cfg: &Config) -> Result<Vec<TaskView>> {
    let q = Queue::open(&cfg.state.queue_dir)?;
    Ok(q.tasks()?
        .into_iter()
        .map(|e| TaskView {
            age_s: now().saturating_sub(e.task.enqueued_at),
            pid: e.task.pid.map(|p| (p, alive(p))),
            backup_id: e.task.backup_id,
            server: e.task.server,
            state: e.state,
            attempts: e.task.attempts,
            last_error: e.task.last_error,
            damaged: e.damaged.is_some(),
        })
        .collect())
}

fn follower_view(cfg: &Config, server: &str) -> Option<FollowerView> {
    crate::barman::ship::follow::heartbeat(cfg, server).map(|h| FollowerView {
        pid: h.pid,
        alive: follower_alive(h.pid),
        last_cycle_age_s: now().saturating_sub(h.last_cycle),
        shipped: h.shipped,
        last_lag_ms: h.last_lag_ms,
    })
}

/// The names (relative to the server's WAL prefix) of the WAL objects in the bucket past the
/// window the last wal-sync recorded.
async fn remote_wal_names(
    t: &Transfer,
    cfg: &Config,
    name: &str,
    window: Option<&str>,
) -> crate::error::Result<BTreeSet<String>> {
    let remote = Remote::new(cfg.location.prefix(), name);
    let prefix = remote.wals_prefix();
    let req = ListRequest {
        prefix: prefix.clone(),
        start_after: window.map(|w| format!("{prefix}{w}")),
        ..Default::default()
    };
    let mut remote_names = BTreeSet::new();
    t.list_pages(&req, |objs, _| {
        remote_names.extend(
            objs.iter()
                .filter_map(|o| o.key.strip_prefix(&prefix).map(str::to_string)),
        );
        true
    })
    .await?;
    Ok(remote_names)
}

/// One server's view; without a store (the bucket did not answer) only its local facts.
async fn server_view(
    cfg: &Config,
    t: Option<&Transfer>,
    conf: &BarmanConf,
    name: &str,
) -> ServerView {
    let st = LocalState::new(cfg).wal_state(name);
    let mut v = ServerView {
        server: name.to_string(),
        newest_local: None,
        newest_remote: None,
        pending: 0,
        pending_age_s: None,
        last_wal_sync_age_s: (st.last_success > 0).then(|| now().saturating_sub(st.last_success)),
        last_wal_sync_at: (st.last_success > 0).then_some(st.last_success),
        problem: st
            .last_error
            .as_ref()
            .map(|e| format!("last wal-sync failed: {e}")),
        follower: follower_view(cfg, name),
        unsynced: Vec::new(),
    };
    let dirs = match conf.server(name) {
        Ok(d) => d,
        Err(e) => {
            v.problem = Some(e.one_line());
            return v;
        }
    };
    let (local, _) = match scan_local(&dirs.wals_dir, st.window.as_deref()) {
        Ok(x) => x,
        Err(e) => {
            v.problem = Some(e.one_line());
            return v;
        }
    };
    let segment = |rel: &&String| {
        let n = rel.rsplit('/').next().unwrap_or("");
        wal::classify(n) == Some(WalKind::Segment)
    };
    v.newest_local = local
        .iter()
        .map(|f| &f.rel)
        .filter(segment)
        .max()
        .map(|r| r[17..].to_string());
    let Some(t) = t else {
        return v;
    };
    let remote_names = match remote_wal_names(t, cfg, name, st.window.as_deref()).await {
        Ok(n) => n,
        Err(e) => {
            v.problem = Some(e.one_line());
            return v;
        }
    };
    v.newest_remote = remote_names
        .iter()
        .filter(segment)
        .max()
        .map(|r| r[17..].to_string());
    let mut oldest: Option<u64> = None;
    for f in &local {
        if remote_names.contains(&f.rel) {
            continue;
        }
        v.pending += 1;
        let mtime = u64::try_from(f.mtime_ns / 1_000_000_000).unwrap_or(0);
        oldest = Some(oldest.map_or(mtime, |o| o.min(mtime)));
    }
    v.pending_age_s = oldest.map(|o| now().saturating_sub(o));
    match unsynced_backups(cfg, t, &dirs).await {
        Ok(u) => v.unsynced = u,
        Err(e) => v.problem = Some(e.one_line()),
    }
    v
}

/// An age in whole hours (minutes below one hour).
pub fn rough_age(s: u64) -> String {
    if s >= 3600 {
        format!("{}h", s / 3600)
    } else {
        format!("{}m", s / 60)
    }
}

/// Barman's DONE backups (backup.info unchanged for `barman.hook_grace`) that are not complete
/// in the bucket.
async fn unsynced_backups(
    cfg: &Config,
    t: &Transfer,
    dirs: &crate::barman::conf::ServerDirs,
) -> Result<Vec<(String, u64)>> {
    use crate::barman::info;
    let grace = cfg.barman.hook_grace.as_secs();
    let mut due = Vec::new();
    for id in info::local_backup_ids(dirs).unwrap_or_default() {
        let Some(path) = info::locate(dirs, &id) else {
            continue;
        };
        let age = std::fs::metadata(&path)
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|m| m.elapsed().ok())
            .map_or(0, |d| d.as_secs());
        if age > grace && info::read(&path).is_ok_and(|i| i.status() == "DONE") {
            due.push((id, age));
        }
    }
    if due.is_empty() {
        return Ok(due);
    }
    let srv = crate::barman::server::Server::new(t, cfg.location.prefix(), &dirs.name);
    let complete: BTreeSet<String> = crate::barman::ship::fullsync::remote_backups(&srv)
        .await?
        .into_iter()
        .filter(|b| b.complete)
        .map(|b| b.id)
        .collect();
    due.retain(|(id, _)| !complete.contains(id));
    Ok(due)
}

/// Gathers the status: queue, tasks, every configured server, bucket reachability.
pub async fn status(cfg: &Config, t: &Transfer) -> Result<Status> {
    let views = queue_views(cfg)?;
    let mut queue = QueueCounts::default();
    for v in &views {
        queue.add(v.state);
    }
    let tasks = views
        .into_iter()
        .filter(|v| v.state != State::Done)
        .collect();
    let req = ListRequest {
        prefix: cfg.location.prefix().to_string(),
        max_keys: Some(1),
        ..Default::default()
    };
    let bucket = match t.list_pages(&req, |_, _| false).await {
        Ok(()) => BucketView::reachable(),
        Err(e) => BucketView {
            reachable: false,
            error: Some(e.one_line()),
        },
    };
    // The local facts stand without the bucket: only what is pending needs it.
    let conf = BarmanConf::load(&cfg.barman.config)?;
    let mut servers = Vec::new();
    let store = crate::barman::ship::state::store_id(cfg);
    let mut drills = Vec::new();
    let names = conf.servers();
    for name in &names {
        servers.push(server_view(cfg, bucket.reachable.then_some(t), &conf, name).await);
        drills.extend(record::load(&cfg.state.dir, &store, name));
    }
    // Servers only drilled here (a barman-cloud bucket): their drills count all the same, and
    // the bucket says what backups they have.
    let others = record::others(&cfg.state.dir, &store, &names);
    let cloud = match bucket.reachable {
        true => cloud_summaries(cfg, t, &others).await,
        false => Vec::new(),
    };
    drills.extend(others);
    let last_base_sync_at = LocalState::new(cfg).last_base_sync();
    let last_base_sync_age_s = last_base_sync_at.map(|t| now().saturating_sub(t));
    Ok(Status {
        queue,
        tasks,
        servers,
        last_base_sync_age_s,
        last_base_sync_at,
        bucket,
        replicas: Vec::new(),
        drills,
        cloud,
        lock_proof: cfg
            .s3
            .object_lock
            .and_then(|_| super::lockcheck::load(&cfg.state.dir, &store)),
    })
}

/// The backups of the servers drilled from a barman-cloud bucket (`others`: their drill
/// records, which name the layout).
async fn cloud_summaries(
    cfg: &Config,
    t: &Transfer,
    others: &[DrillRecord],
) -> Vec<crate::barman::cloud::summary::CloudSummary> {
    use crate::barman::remote::BucketLayout;
    let mut out = Vec::new();
    let cloud = BucketLayout::BarmanCloud.name();
    // The name came from a file in the state directory: used as a key part only when it is one
    // directory name.
    let usable = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains('/');
    for d in others
        .iter()
        .filter(|d| d.layout.as_deref() == Some(cloud) && usable(&d.server))
    {
        let srv = crate::barman::server::Server::new(t, cfg.location.prefix(), &d.server)
            .with_layout(BucketLayout::BarmanCloud);
        out.push(crate::barman::cloud::summary::summary(&srv, &d.server).await);
    }
    out
}

/// `status --forget-follower SERVER`: removes the heartbeat a follower left when it died, so
/// `check` stops warning. Refused while that follower runs, or when none is recorded.
pub fn forget_follower(cfg: &Config, server: &str) -> Result<u32> {
    let Some(h) = crate::barman::ship::follow::heartbeat(cfg, server) else {
        return Err(Error::Usage(format!(
            "no wal-sync --follow is recorded for server {server:?}"
        )));
    };
    if follower_alive(h.pid) {
        return Err(Error::Usage(format!(
            "the wal-sync --follow of {server} (pid {}) is running; stop it (systemctl stop barmans3-wal-follow) and it cleans up itself",
            h.pid
        )));
    }
    let path = crate::barman::ship::follow::heartbeat_path(cfg, server);
    std::fs::remove_file(&path).map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
    Ok(h.pid)
}

/// `queue retry ID`: an `.error` (or stuck `.run`) task goes back to `.run` for the next base-sync.
pub fn queue_retry(cfg: &Config, id: &str) -> Result<()> {
    let q = Queue::open(&cfg.state.queue_dir)?;
    let entry = q
        .tasks()?
        .into_iter()
        .find(|e| e.task.backup_id == id)
        .ok_or_else(|| {
            Error::Usage(format!(
                "no task for backup {id:?} in {}",
                q.dir().display()
            ))
        })?;
    if entry.state == State::Running {
        return Err(Error::Usage(format!(
            "task {id} is running; wait for it or for base-sync to recover it"
        )));
    }
    if let Some(why) = &entry.damaged {
        return Err(Error::Usage(format!(
            "task {id} cannot be retried: its file is unreadable ({why}); queue the backup again with barmans3 full-sync SERVER --no-delete"
        )));
    }
    let mut task = entry.task;
    task.last_error = None;
    task.enqueued_at = now();
    q.save(&task, State::Run)
}

/// `queue prune --older-than AGE`: deletes `.done` tasks queued longer ago than `age`.
pub fn queue_prune(cfg: &Config, age: Duration) -> Result<usize> {
    let q = Queue::open(&cfg.state.queue_dir)?;
    let mut n = 0;
    for e in q.tasks()? {
        if e.state == State::Done && now().saturating_sub(e.task.enqueued_at) >= age.as_secs() {
            let p = q.dir().join(format!("{}.done", e.task.backup_id));
            std::fs::remove_file(&p)
                .map_err(|err| Error::io(format!("remove {}", p.display()), err))?;
            n += 1;
        }
    }
    crate::fsutil::sync_dir(q.dir())?;
    Ok(n)
}
