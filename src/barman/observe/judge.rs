//! `check`'s judgement of a status: each task, server, replica and drill weighed against the
//! thresholds; the worst level and the one-line plugin output with perfdata.

use std::time::Duration;

use super::admin::{ServerView, Status, TaskView, rough_age};
use crate::barman::drill::record;
use crate::barman::ship::queue::State;
use crate::clock::now;
use crate::error::CheckLevel;
use crate::units::human_duration;

/// Thresholds of `check`.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Oldest pending WAL older than this: WARNING.
    pub wal_warning: Duration,
    /// Oldest pending WAL older than this: CRITICAL.
    pub wal_critical: Duration,
    /// A `.running` task whose process is gone, or older than this: CRITICAL.
    pub stuck: Duration,
    /// A replica further behind than this: WARNING (`barman.replica_max_lag`).
    pub replica_max_lag: Duration,
}

/// Judges a status: the worst level and the one-line plugin output with perfdata.
/// `drill_max_age` is `barman.drill_max_age`.
pub fn judge(s: &Status, th: Thresholds, drill_max_age: Duration) -> (CheckLevel, String) {
    let mut notes = Notes::default();
    if let Some(e) = &s.bucket.error {
        notes.raise(CheckLevel::Critical, format!("bucket unreachable: {e}"));
    }
    for t in &s.tasks {
        judge_task(t, th, &mut notes);
    }
    for v in &s.servers {
        judge_server(v, th, &mut notes);
    }
    for r in &s.replicas {
        if let Some(note) = crate::barman::replica::judge(r, th.replica_max_lag) {
            notes.raise(CheckLevel::Warning, note);
        }
    }
    for (level, note) in s
        .drills
        .iter()
        .filter_map(|d| record::judge(d, now(), drill_max_age))
    {
        notes.raise(level, note);
    }
    let mut proof_ok = None;
    if let Some(r) = &s.lock_proof {
        match super::lockcheck::judge(r, now()) {
            (CheckLevel::Ok, line) => proof_ok = Some(line),
            (level, line) => notes.raise(level, line),
        }
    }
    let summary = if notes.lines.is_empty() {
        format!(
            "queue {} run, {} running, {} done, {} error; {} server(s) shipping{}",
            s.queue.run,
            s.queue.running,
            s.queue.done,
            s.queue.error,
            s.servers.len(),
            proof_ok.map_or(String::new(), |l| format!("; {l}"))
        )
    } else {
        notes.lines.join("; ")
    };
    let mut perf = format!(
        "queue_run={} queue_running={} queue_error={}",
        s.queue.run, s.queue.running, s.queue.error
    );
    for v in &s.servers {
        perf.push_str(&format!(
            " wal_pending_{}={} wal_pending_age_{}={}s",
            v.server,
            v.pending,
            v.server,
            v.pending_age_s.unwrap_or(0)
        ));
    }
    let word = notes.level.word();
    (notes.level, format!("BARMANS3 {word} - {summary} | {perf}"))
}

/// The worst level seen and why.
#[derive(Debug, Default)]
struct Notes {
    level: CheckLevel,
    lines: Vec<String>,
}

impl Notes {
    fn raise(&mut self, level: CheckLevel, note: String) {
        self.level = self.level.max(level);
        self.lines.push(note);
    }
}

fn judge_task(t: &TaskView, th: Thresholds, notes: &mut Notes) {
    let why = || t.last_error.as_deref().unwrap_or("?");
    if t.damaged {
        notes.raise(
            CheckLevel::Warning,
            format!("task {} unreadable: {}", t.backup_id, why()),
        );
        return;
    }
    match t.state {
        State::Error => notes.raise(
            CheckLevel::Warning,
            format!("task {} in .error: {}", t.backup_id, why()),
        ),
        State::Running if t.pid.is_some_and(|(_, alive)| !alive) => notes.raise(
            CheckLevel::Critical,
            format!(
                "task {} stuck in .running (its process is gone)",
                t.backup_id
            ),
        ),
        State::Running if t.age_s > th.stuck.as_secs() => notes.raise(
            CheckLevel::Critical,
            format!(
                "task {} running for {}",
                t.backup_id,
                human_duration(Duration::from_secs(t.age_s))
            ),
        ),
        _ => {}
    }
}

fn judge_server(v: &ServerView, th: Thresholds, notes: &mut Notes) {
    if let Some(p) = &v.problem {
        notes.raise(CheckLevel::Critical, format!("{}: {p}", v.server));
    }
    if let Some(f) = v.follower.as_ref().filter(|f| !f.alive) {
        // It removes its heartbeat when stopped; one left behind means it died.
        notes.raise(
            CheckLevel::Warning,
            format!(
                "{}: no wal-sync --follow runs, where pid {} ran (started again, or barmans3 status --forget-follower {}, the warning goes)",
                v.server, f.pid, v.server
            ),
        );
    }
    for (id, age) in &v.unsynced {
        notes.raise(
            CheckLevel::Warning,
            format!(
                "{}: backup {id} DONE in Barman for {} and not in the bucket (its hook did not queue it? barmans3 full-sync {} --no-delete uploads it)",
                v.server,
                rough_age(*age),
                v.server
            ),
        );
    }
    if let Some(age) = v.pending_age_s {
        let d = Duration::from_secs(age);
        let note = format!(
            "{}: {} WAL(s) not shipped, oldest {}",
            v.server,
            v.pending,
            human_duration(d)
        );
        if d > th.wal_critical {
            notes.raise(CheckLevel::Critical, note);
        } else if d > th.wal_warning {
            notes.raise(CheckLevel::Warning, note);
        }
    }
}
