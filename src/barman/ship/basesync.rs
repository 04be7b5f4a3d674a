//! `queue-add` (Barman's post-backup hook: record a task, never upload) and `base-sync` (work
//! the queue `.run → .running → .done | .error`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::backup::{NotNow, check_eligible, upload_backup};
use super::queue::{Queue, State, Task};
use super::state::LocalState;
use crate::barman::conf::{BarmanConf, ServerDirs};
use crate::barman::remote::{INFO, MANIFEST};
use crate::barman::server::Server;
use crate::clock::now;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::transfer::Transfer;

/// Whether the hook environment says Barman runs us as a `*_retry_script` (whose every refusal
/// must exit 62, or Barman retries it forever).
pub fn retry_hook() -> bool {
    std::env::var("BARMAN_RETRY").is_ok_and(|v| v == "1")
        || std::env::var("BARMAN_HOOK").is_ok_and(|h| h.ends_with("_retry_script"))
}

/// What `queue-add` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Backup id.
    pub backup_id: String,
    /// State the task was written in.
    pub state: State,
}

/// Validates the hook environment and writes `<queue>/<id>.run` (or `.error` for a backup
/// Barman reports FAILED), replacing any earlier task of the same id.
pub fn queue_add(queue_dir: &Path, env: &BTreeMap<String, String>) -> Result<Queued> {
    let get = |k: &str| env.get(k).map(String::as_str).unwrap_or("");
    let (phase, hook) = (get("BARMAN_PHASE"), get("BARMAN_HOOK"));
    if phase != "post" || !matches!(hook, "backup_script" | "backup_retry_script") {
        return Err(Error::Usage(format!(
            "queue-add runs as Barman's post_backup_script or post_backup_retry_script; got BARMAN_PHASE={phase:?} BARMAN_HOOK={hook:?}"
        )));
    }
    let id = get("BARMAN_BACKUP_ID");
    if !crate::barman::info::is_backup_id(id) {
        return Err(Error::Usage(format!(
            "BARMAN_BACKUP_ID={id:?} is missing or not a Barman backup id (YYYYMMDDTHHMMSS)"
        )));
    }
    let server = get("BARMAN_SERVER");
    if server.is_empty() || server.contains('/') {
        return Err(Error::Usage(format!(
            "BARMAN_SERVER={server:?} is missing or invalid"
        )));
    }
    let failed = get("BARMAN_STATUS") == "FAILED";
    let task = Task {
        backup_id: id.to_string(),
        server: server.to_string(),
        backup_dir: get("BARMAN_BACKUP_DIR").to_string(),
        hook_env: env
            .iter()
            .filter(|(k, _)| k.starts_with("BARMAN_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        enqueued_at: now(),
        last_error: failed
            .then(|| format!("Barman reported the backup FAILED: {}", get("BARMAN_ERROR"))),
        ..Task::default()
    };
    let state = if failed { State::Error } else { State::Run };
    Queue::open(queue_dir)?.save(&task, state)?;
    Ok(Queued {
        backup_id: id.to_string(),
        state,
    })
}

/// Counts of one `base-sync` run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Tasks uploaded and moved to `.done`.
    pub done: usize,
    /// Tasks left in `.run` to retry later (waiting for WALs, lock busy).
    pub waiting: usize,
    /// Tasks that failed this run (moved to `.error`, or transient failures left in `.run`).
    pub failed: usize,
    /// Bytes uploaded.
    pub bytes: u64,
    /// Files the bucket already held with the same bytes (tasks of backups sent before).
    pub already_there: usize,
    /// One line per failed task.
    pub errors: Vec<String>,
}

/// Works every `.run` task, oldest first. One base-sync per queue at a time (the queue lock);
/// holding it, any `.running` task belongs to a run that died and goes back to `.run`.
pub async fn base_sync(cfg: &Config, t: &Transfer) -> Result<SyncReport> {
    let queue = Queue::open(&cfg.state.queue_dir)?;
    let _lock = queue.lock()?;
    let mut report = SyncReport::default();
    let mut confs: BTreeMap<PathBuf, BarmanConf> = BTreeMap::new();
    for entry in queue.tasks()? {
        if let Some(why) = &entry.damaged {
            if matches!(entry.state, State::Run | State::Running) {
                tracing::error!("{}: {why}; set aside", entry.task.backup_id);
                queue.set_aside(&entry)?;
                report.failed += 1;
                report
                    .errors
                    .push(format!("{}: unreadable task file", entry.task.backup_id));
            }
            continue;
        }
        match entry.state {
            State::Running => tracing::warn!(
                "{}: a previous run stopped while uploading; retrying",
                entry.task.backup_id
            ),
            State::Run => {}
            State::Done | State::Error => continue,
        }
        // The task names the Barman config its hook ran under; the main one otherwise.
        let conf_path = entry
            .task
            .hook_env
            .get("BARMAN_CONFIGURATION")
            .filter(|p| !p.is_empty())
            .map_or_else(|| cfg.barman.config.clone(), PathBuf::from);
        if !confs.contains_key(&conf_path) {
            confs.insert(conf_path.clone(), BarmanConf::load(&conf_path)?);
        }
        let dirs = confs[&conf_path].server(&entry.task.server)?;
        tracing::debug!(
            "task {} of server {} (attempt {}, Barman config {})",
            entry.task.backup_id,
            entry.task.server,
            entry.task.attempts + 1,
            conf_path.display()
        );
        work_task(cfg, t, &queue, &dirs, entry.task, &mut report).await?;
    }
    if report.failed == 0 {
        LocalState::new(cfg).record_base_sync()?;
    }
    Ok(report)
}

/// Decides one task and, when its backup is ready, uploads it under Barman's lock.
async fn work_task(
    cfg: &Config,
    t: &Transfer,
    queue: &Queue,
    dirs: &ServerDirs,
    mut task: Task,
    report: &mut SyncReport,
) -> Result<()> {
    if task.hook_status() == "FAILED" {
        task.last_error = Some("Barman reported the backup FAILED".into());
        queue.save(&task, State::Error)?;
        report.failed += 1;
        return Ok(());
    }
    let srv = Server::new(t, cfg.location.prefix(), &task.server);
    let id = task.backup_id.clone();
    let parent_done = match parent_complete(&srv, dirs, &id).await {
        Ok(p) => p,
        Err(e) => return settle(queue, &mut task, e.into(), report),
    };
    // Decide before taking the task: a backup still waiting for WALs is not touched.
    if let Err(why) = check_eligible(
        dirs,
        &id,
        task.enqueued_at,
        cfg.barman.wait_for_wals_max,
        parent_done,
    ) {
        return settle(queue, &mut task, why, report);
    }
    task.attempts += 1;
    task.last_attempt_at = Some(now());
    task.pid = Some(std::process::id());
    queue.save(&task, State::Running)?;
    let started = std::time::Instant::now();
    match upload_backup(&srv, dirs, &id, cfg).await {
        Ok(up) => {
            tracing::info!(
                "{} {id}: uploaded {} files, {}; copied {} unchanged files, {} server-side; {} files, {} already there; in {:.1?}",
                task.server,
                up.files,
                crate::units::human_bytes(up.bytes),
                up.copied_files,
                crate::units::human_bytes(up.copied_bytes),
                up.present_files,
                crate::units::human_bytes(up.present_bytes),
                started.elapsed()
            );
            task.last_error = None;
            task.uploaded_bytes = Some(up.bytes);
            task.pid = None;
            queue.save(&task, State::Done)?;
            report.done += 1;
            report.bytes += up.bytes;
            report.already_there += up.present_files;
            Ok(())
        }
        Err(why) => settle(queue, &mut task, why, report),
    }
}

/// For an incremental backup (PostgreSQL 17+), whether its parent is complete in the bucket: a
/// child is worthless without its chain, so it is uploaded only after its parent. `None` for a
/// backup that has no parent.
async fn parent_complete(srv: &Server, dirs: &ServerDirs, id: &str) -> Result<Option<bool>> {
    let parent = crate::barman::info::locate(dirs, id)
        .and_then(|p| crate::barman::info::read(&p).ok())
        .and_then(|b| b.get("parent_backup_id").map(str::to_string));
    let Some(parent) = parent else {
        return Ok(None);
    };
    let Server { t, remote, .. } = srv;
    let info = t.head_opt(&remote.backup_key(&parent, INFO)).await?;
    let manifest = t.head_opt(&remote.backup_key(&parent, MANIFEST)).await?;
    Ok(Some(info.is_some() && manifest.is_some()))
}

/// Records why a task did not finish and puts it where it belongs.
fn settle(queue: &Queue, task: &mut Task, why: NotNow, report: &mut SyncReport) -> Result<()> {
    task.pid = None;
    match why {
        NotNow::Interrupted => {
            task.last_error = Some("interrupted".into());
            queue.save(task, State::Run)?;
            Err(Error::Interrupted)
        }
        NotNow::Never(msg) => {
            tracing::error!("{}: {msg}", task.backup_id);
            report.errors.push(format!("{}: {msg}", task.backup_id));
            task.last_error = Some(msg);
            report.failed += 1;
            queue.save(task, State::Error)
        }
        NotNow::Retry(msg) => {
            tracing::error!("{}: {msg} (will retry)", task.backup_id);
            report.errors.push(format!("{}: {msg}", task.backup_id));
            report.failed += 1;
            task.last_error = Some(msg);
            queue.save(task, State::Run)
        }
        NotNow::Wait(msg) => {
            tracing::info!("{}: {msg}", task.backup_id);
            report.waiting += 1;
            task.last_error = Some(msg);
            queue.save(task, State::Run)
        }
    }
}
