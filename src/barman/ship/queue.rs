//! The persistent base-backup queue: one file per backup id, its state in the suffix
//! (`.run → .running → .done | .error`). Every change goes through [`Queue::save`], which writes
//! the new file atomically and then removes the other states of the id, so a crash leaves at
//! worst two copies of a task, and [`Queue::tasks`] keeps the most advanced one.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting to be worked.
    Run,
    /// Being worked (or abandoned by a crashed run).
    Running,
    /// Uploaded and verified.
    Done,
    /// Failed permanently; `last_error` says why.
    Error,
}

impl State {
    /// All states, least advanced first.
    pub const ALL: [State; 4] = [State::Run, State::Running, State::Done, State::Error];

    /// File suffix without the dot.
    pub fn suffix(self) -> &'static str {
        match self {
            State::Run => "run",
            State::Running => "running",
            State::Done => "done",
            State::Error => "error",
        }
    }
}

/// One queued backup: what the hook saw, and what the syncs did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Barman backup id.
    pub backup_id: String,
    /// Barman server.
    pub server: String,
    /// `BARMAN_BACKUP_DIR`.
    #[serde(default)]
    pub backup_dir: String,
    /// Every `BARMAN_*` variable the hook saw.
    #[serde(default)]
    pub hook_env: BTreeMap<String, String>,
    /// When the task was queued (seconds since the epoch).
    #[serde(default)]
    pub enqueued_at: u64,
    /// Sync attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Last attempt (seconds since the epoch).
    #[serde(default)]
    pub last_attempt_at: Option<u64>,
    /// Why the last attempt did not finish, or why the task is in `.error`.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Bytes uploaded by the successful attempt.
    #[serde(default)]
    pub uploaded_bytes: Option<u64>,
    /// pid of the run working it (for `status`).
    #[serde(default)]
    pub pid: Option<u32>,
}

impl Task {
    /// The hook's `BARMAN_STATUS`.
    pub fn hook_status(&self) -> &str {
        self.hook_env
            .get("BARMAN_STATUS")
            .map_or("", String::as_str)
    }

    /// Parses a task file: JSON, or a legacy BarmanS3 file of `NAME="value"` lines (read as
    /// data, never executed).
    pub fn parse(text: &str, file: &Path) -> Result<Task> {
        let bad = |why: String| Error::Failed(format!("task file {}: {why}", file.display()));
        if text.trim_start().starts_with('{') {
            return serde_json::from_str(text).map_err(|e| bad(e.to_string()));
        }
        let mut env = crate::config::legacy::shell_vars(text);
        env.retain(|k, _| k.starts_with("BARMAN_"));
        let get = |k: &str| env.get(k).cloned().unwrap_or_default();
        let task = Task {
            backup_id: get("BARMAN_BACKUP_ID"),
            server: get("BARMAN_SERVER"),
            backup_dir: get("BARMAN_BACKUP_DIR"),
            hook_env: env.clone(),
            ..Task::default()
        };
        if task.backup_id.is_empty() || task.server.is_empty() {
            return Err(bad(
                "neither JSON nor a BarmanS3 task with BARMAN_BACKUP_ID and BARMAN_SERVER".into(),
            ));
        }
        Ok(task)
    }
}

/// A task file as found on disk.
#[derive(Debug, Clone)]
pub struct TaskFile {
    /// The task (for a damaged file: its id from the file name, and the reason).
    pub task: Task,
    /// Its state.
    pub state: State,
    /// Why the file could not be read, when it could not (truncated, not a task).
    pub damaged: Option<String>,
}

/// The queue directory.
#[derive(Debug, Clone)]
pub struct Queue {
    dir: PathBuf,
}

impl Queue {
    /// Opens (and creates) the queue directory.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| match e.kind() {
            // Usually a directory that exists but is Barman's: say so, not "create".
            std::io::ErrorKind::PermissionDenied => Error::Config(format!(
                "cannot read queue directory {}: permission denied; run as Barman's user (sudo -u barman barmans3 …)",
                dir.display()
            )),
            _ => Error::io(format!("create queue directory {}", dir.display()), e),
        })?;
        Ok(Queue {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &str, state: State) -> PathBuf {
        self.dir.join(format!("{id}.{}", state.suffix()))
    }

    /// The one atomic state change: writes `task` as `<id>.<state>` (temp, fsync, rename), then
    /// removes the id's files in every other state.
    pub fn save(&self, task: &Task, state: State) -> Result<()> {
        if !crate::barman::info::is_backup_id(&task.backup_id) {
            return Err(Error::Usage(format!(
                "invalid backup id {:?}: expected YYYYMMDDTHHMMSS",
                task.backup_id
            )));
        }
        let json = serde_json::to_vec_pretty(task)
            .map_err(|e| Error::Failed(format!("encode task: {e}")))?;
        fsutil::write_atomic(&self.path(&task.backup_id, state), &json)?;
        for other in State::ALL.into_iter().filter(|s| *s != state) {
            let p = self.path(&task.backup_id, other);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("remove {}", p.display()), e)),
            }
        }
        fsutil::sync_dir(&self.dir)
    }

    /// Every task, one per id (the most advanced state wins if a crash left two), oldest id
    /// first. A file that cannot be read comes back marked damaged with the reason, so one bad
    /// file never hides the others; files that are not named after a backup id are ignored.
    pub fn tasks(&self) -> Result<Vec<TaskFile>> {
        let mut by_id: BTreeMap<String, TaskFile> = BTreeMap::new();
        let rd = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("list queue {}", self.dir.display()), e))?;
        for e in rd {
            let e = e.map_err(|e| Error::io("list queue", e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((id, suffix)) = name.rsplit_once('.') else {
                continue;
            };
            let Some(state) = State::ALL.into_iter().find(|s| s.suffix() == suffix) else {
                continue;
            };
            if !crate::barman::info::is_backup_id(id) {
                continue;
            }
            let path = e.path();
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| Error::io(format!("read {}", path.display()), e))
                .and_then(|text| Task::parse(&text, &path));
            let found = match parsed {
                Ok(mut task) => {
                    if task.backup_id.is_empty() {
                        task.backup_id = id.to_string();
                    }
                    TaskFile {
                        task,
                        state,
                        damaged: None,
                    }
                }
                Err(err) => {
                    let why = err.one_line();
                    TaskFile {
                        task: Task {
                            backup_id: id.to_string(),
                            last_error: Some(why.clone()),
                            ..Task::default()
                        },
                        state,
                        damaged: Some(why),
                    }
                }
            };
            let keep = by_id.get(id).is_none_or(|old| state > old.state);
            if keep {
                by_id.insert(id.to_string(), found);
            }
        }
        Ok(by_id.into_values().collect())
    }

    /// Puts a damaged task aside: its file is kept as `<id>.<state>.damaged` for a look, and
    /// the task goes to `.error` with the reason, so the queue goes on without it.
    pub fn set_aside(&self, f: &TaskFile) -> Result<()> {
        let path = self.path(&f.task.backup_id, f.state);
        let kept = self
            .dir
            .join(format!("{}.{}.damaged", f.task.backup_id, f.state.suffix()));
        std::fs::copy(&path, &kept)
            .map_err(|e| Error::io(format!("keep {}", path.display()), e))?;
        let mut task = f.task.clone();
        task.last_error = Some(format!(
            "unreadable task file ({}); kept as {}: queue the backup again (barmans3 full-sync SERVER --no-delete)",
            f.damaged.as_deref().unwrap_or("damaged"),
            kept.display()
        ));
        self.save(&task, State::Error)
    }

    /// Takes the queue's worker lock without waiting: one base-sync at a time per queue.
    pub fn lock(&self) -> Result<File> {
        crate::lockfile::try_lock_file(&self.dir.join(".base-sync.lock"), "base-sync")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> Task {
        Task {
            backup_id: id.into(),
            server: "pg".into(),
            ..Task::default()
        }
    }

    #[test]
    fn save_moves_a_task_between_states_atomically() {
        let dir = tempfile::tempdir().expect("tmp");
        let q = Queue::open(dir.path()).expect("queue");
        q.save(&task("20261121T220933"), State::Run).expect("run");
        q.save(&task("20261121T220933"), State::Running)
            .expect("running");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["20261121T220933.running"]);
        // A crash between write and cleanup leaves two files: the advanced one wins.
        std::fs::write(
            dir.path().join("20261121T220933.run"),
            "{\"backup_id\":\"20261121T220933\",\"server\":\"pg\"}",
        )
        .expect("w");
        let t = q.tasks().expect("tasks");
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].state, State::Running);
        assert!(q.save(&task("../../etc/passwd"), State::Run).is_err());
    }

    #[test]
    fn legacy_task_files_are_data() {
        let t = Task::parse(
            "BARMAN_BACKUP_DIR=\"/var/lib/barman/pg/base/20180101T000000\"\nBARMAN_BACKUP_ID=\"20180101T000000\"\nBARMAN_ERROR=\"\"$(rm -rf /)\"\nBARMAN_PHASE=\"post\"\nBARMAN_SERVER=\"pg\"\nBARMAN_STATUS=\"DONE\"\n",
            Path::new("x.run"),
        )
        .expect("legacy");
        assert_eq!(t.backup_id, "20180101T000000");
        assert_eq!(t.hook_status(), "DONE");
        assert_eq!(t.hook_env["BARMAN_ERROR"], "\"$(rm -rf /)");
        assert!(Task::parse("garbage", Path::new("x.run")).is_err());
    }
}
