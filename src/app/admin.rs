//! Operator commands: `status` and `check` (rendered here from [`crate::barman::observe::admin`]'s
//! views) and the queue administration commands.

use std::sync::Arc;
use std::time::Duration;

use super::{bare_engine, load_config};
use crate::barman::observe::admin::{self, Status, Thresholds};
use crate::cli::invocation::{AdminAction, Options};
use crate::error::{CheckLevel, Exit, Result};
use crate::transfer::Cancel;
use crate::units::human_duration;

pub(super) async fn run(o: Options, action: AdminAction, cancel: Arc<Cancel>) -> Result<Exit> {
    let cfg = load_config(&o)?;
    // `-q` (cron): nothing on success.
    let quiet = o.verbosity == crate::logging::Verbosity::Quiet;
    if let AdminAction::QueueRetry(..)
    | AdminAction::QueuePrune(_)
    | AdminAction::ForgetFollower(_) = &action
    {
        let conf = crate::barman::conf::BarmanConf::load(&cfg.barman.config)?;
        crate::barman::conf::require_barman_user(&conf, "queue")?;
    }
    match action {
        AdminAction::QueueLs => queue_ls(&o, &cfg)?,
        AdminAction::QueueRetry(id, force) => {
            if !force {
                refuse_complete(&o, &cfg, &id, cancel).await?;
            }
            admin::queue_retry(&cfg, &id)?;
            if !quiet {
                eprintln!("barmans3: {id} queued again; the next base-sync works it");
            }
        }
        AdminAction::ForgetFollower(server) => {
            let pid = admin::forget_follower(&cfg, &server)?;
            if !quiet {
                eprintln!("barmans3: forgot the stopped follower of {server} (pid {pid})");
            }
        }
        AdminAction::QueuePrune(age) => {
            let n = admin::queue_prune(&cfg, age)?;
            if !quiet {
                eprintln!("barmans3: pruned {n} done task(s)");
            }
        }
        AdminAction::Status { prometheus } => {
            return status(&o, &cfg, prometheus.as_deref(), cancel).await;
        }
    }
    Ok(Exit::Success)
}

/// `queue ls`: the queue's tasks, a table or `--json`.
fn queue_ls(o: &Options, cfg: &crate::config::Config) -> Result<()> {
    let views = admin::queue_views(cfg)?;
    if o.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&views).unwrap_or_default()
        )?;
        return Ok(());
    }
    outln!(
        "{:<16} {:<8} {:<8} {:>9} {:>8}  LAST ERROR",
        "ID",
        "SERVER",
        "STATE",
        "AGE",
        "ATTEMPTS"
    )?;
    for v in views {
        outln!(
            "{:<16} {:<8} {:<8} {:>9} {:>8}  {}",
            v.backup_id,
            v.server,
            format!("{:?}", v.state).to_lowercase(),
            human_duration(Duration::from_secs(v.age_s)),
            v.attempts,
            v.last_error.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}

/// `status`: text, `--json` or a node_exporter textfile; exit 1 when the bucket cannot be
/// reached (the local facts are still reported).
async fn status(
    o: &Options,
    cfg: &crate::config::Config,
    prometheus: Option<&std::path::Path>,
    cancel: Arc<Cancel>,
) -> Result<Exit> {
    let t = bare_engine(o, cfg, cancel).await?;
    let mut s = admin::status(cfg, &t).await?;
    s.replicas = super::replicate::views(o, cfg, &t, &s).await;
    if let Some(path) = prometheus {
        use crate::barman::observe::metrics;
        let text = metrics::render(&s, &metrics::last_runs(cfg), &metrics::last_verifies(cfg));
        metrics::write_textfile(path, &text)?;
    } else if o.json {
        outln!("{}", serde_json::to_string_pretty(&s).unwrap_or_default())?;
    } else {
        out!("{}", render_status(&s))?;
    }
    // Local facts were reported; the run still fails so scripts and cron notice.
    if let Some(e) = &s.bucket.error {
        eprintln!("barmans3 status: the bucket cannot be reached: {e}");
        return Ok(Exit::Failed);
    }
    Ok(Exit::Success)
}

/// `queue retry` of a backup that is already complete in the bucket would upload it again:
/// refused without `--force`.
async fn refuse_complete(
    o: &Options,
    cfg: &crate::config::Config,
    id: &str,
    cancel: Arc<Cancel>,
) -> Result<()> {
    let Some(task) = admin::queue_views(cfg)?
        .into_iter()
        .find(|v| v.backup_id == id)
    else {
        return Ok(()); // queue_retry says the task is unknown
    };
    let t = bare_engine(o, cfg, cancel).await?;
    let srv = crate::barman::server::Server::new(&t, cfg.location.prefix(), &task.server);
    let listed = crate::barman::ship::fullsync::remote_backups(&srv).await?;
    if listed.iter().any(|b| b.id == id && b.complete) {
        return Err(crate::error::Error::Usage(format!(
            "backup {id} of server {} is already complete in the bucket (see base-ls {}); nothing to upload. queue retry --force uploads it again",
            task.server, task.server
        )));
    }
    Ok(())
}

/// `check`: always one line on stdout (with `--json`, one JSON object: `state`, `code`,
/// `output`) and a Nagios state, whatever happens. Anything that stops it from telling (a bad config, a store that does not answer within `timeout`) is
/// UNKNOWN, never silence.
pub(super) fn check(o: &Options, th: Thresholds, timeout: Duration) -> Exit {
    let judged = crate::runtime::block_on(|cancel| async move {
        let work = async {
            let cfg = load_config(o)?;
            let t = bare_engine(o, &cfg, cancel.clone()).await?;
            let mut s = admin::status(&cfg, &t).await?;
            s.replicas = super::replicate::views(o, &cfg, &t, &s).await;
            s.lock_proof = super::lockproof::daily(o, &cfg, cancel, s.lock_proof.take()).await;
            let th = Thresholds {
                replica_max_lag: cfg.barman.replica_max_lag,
                ..th
            };
            Ok(admin::judge(&s, th, cfg.barman.drill_max_age))
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Ok((
                CheckLevel::Unknown,
                format!(
                    "BARMANS3 UNKNOWN - no answer within {} (the store or the disks are too slow to tell)",
                    human_duration(timeout)
                ),
            )),
        }
    });
    let (level, line) = judged.unwrap_or_else(|e| {
        (
            CheckLevel::Unknown,
            format!("BARMANS3 UNKNOWN - {}", e.one_line()),
        )
    });
    let text = if o.json {
        // The same verdict for a monitoring system that reads JSON.
        serde_json::json!({
            "state": level.word(),
            "code": level as u8,
            "output": line,
        })
        .to_string()
    } else {
        line
    };
    match outln!("{text}") {
        Ok(()) | Err(crate::error::Error::StdoutClosed) => Exit::Check(level),
        Err(_) => Exit::Check(CheckLevel::Unknown),
    }
}

/// The drills of servers Barman's configuration does not name, and the lock proof's line.
fn unnamed_servers_and_lock(s: &Status) -> String {
    let mut out = String::new();
    // Servers Barman's configuration does not name, known here by their drills (a bucket
    // barman-cloud or CloudNativePG writes).
    for d in s
        .drills
        .iter()
        .filter(|d| !s.servers.iter().any(|v| v.server == d.server))
    {
        out.push_str(&format!(
            "server {} ({} bucket, not in Barman's configuration):\n{}",
            d.server,
            d.layout.as_deref().unwrap_or("barmans3"),
            drill_line(d)
        ));
        if let Some(c) = s.cloud.iter().find(|c| c.server == d.server) {
            out.push_str(&cloud_line(c));
        }
    }
    if let Some(r) = &s.lock_proof {
        let (_, line) = crate::barman::observe::lockcheck::judge(r, crate::clock::now());
        out.push_str(&format!("object lock: {line}\n"));
    }
    out
}

/// The backups a barman-cloud bucket holds for a server, as `status` shows them.
fn cloud_line(c: &crate::barman::cloud::summary::CloudSummary) -> String {
    if let Some(e) = &c.error {
        return format!("  backups in the bucket: unknown ({e})\n");
    }
    let newest = match &c.newest_done {
        None => "none DONE among the newest".to_string(),
        Some(n) => format!(
            "newest DONE {}{}",
            n.id,
            n.end_at.map_or(String::new(), |t| format!(
                ", ended {} ago",
                admin::rough_age(crate::clock::now().saturating_sub(t))
            ))
        ),
    };
    format!("  backups in the bucket: {}; {newest}\n", c.backups)
}

fn render_status(s: &Status) -> String {
    let age = |a: Option<u64>| {
        a.map_or("never".into(), |s| {
            format!("{} ago", human_duration(Duration::from_secs(s)))
        })
    };
    let mut out = format!(
        "bucket: {}\nqueue: {} run, {} running, {} done, {} error; last good base-sync {}\n",
        match &s.bucket.error {
            None => "reachable".to_string(),
            Some(e) => format!("UNREACHABLE: {e} (WALs pending: unknown)"),
        },
        s.queue.run,
        s.queue.running,
        s.queue.done,
        s.queue.error,
        age(s.last_base_sync_age_s)
    );
    for t in &s.tasks {
        out.push_str(&format!(
            "  task {} {} {:?} attempts={}{}{}\n",
            t.server,
            t.backup_id,
            t.state,
            t.attempts,
            t.pid.map_or(String::new(), |(p, alive)| format!(
                " pid={p}{}",
                if alive { "" } else { " (gone)" }
            )),
            t.last_error
                .as_ref()
                .map_or(String::new(), |e| format!(" error: {e}"))
        ));
    }
    for r in &s.replicas {
        out.push_str(&replica_line(r));
    }
    out.push_str(&unnamed_servers_and_lock(s));
    for v in &s.servers {
        out.push_str(&format!(
            "server {}: newest WAL here {}, in the bucket {}; {} pending{}; last good wal-sync {}{}\n",
            v.server,
            v.newest_local.as_deref().unwrap_or("-"),
            v.newest_remote.as_deref().unwrap_or("-"),
            if s.bucket.reachable {
                v.pending.to_string()
            } else {
                "?".into()
            },
            v.pending_age_s.map_or(String::new(), |a| format!(
                " (oldest {})",
                human_duration(Duration::from_secs(a))
            )),
            age(v.last_wal_sync_age_s),
            v.problem
                .as_ref()
                .map_or(String::new(), |p| format!("; PROBLEM: {p}"))
        ));
        out.push_str(&backup_notes(s, v));
        if let Some(f) = &v.follower {
            if !f.alive {
                out.push_str(&format!(
                    "  no follower runs: wal-sync --follow (pid {}) stopped without cleaning up; start it again, or: barmans3 status --forget-follower {}\n",
                    f.pid, v.server
                ));
            }
            out.push_str(&format!(
                "  following: pid {}{}, last cycle {} ago, {} shipped{}\n",
                f.pid,
                if f.alive { "" } else { " (gone)" },
                human_duration(Duration::from_secs(f.last_cycle_age_s)),
                f.shipped,
                f.last_lag_ms.map_or(String::new(), |l| format!(
                    ", last WAL in the bucket {l} ms after it was written"
                ))
            ));
        }
    }
    out
}

/// A replica's completeness, as `status` shows it.
fn replica_line(r: &crate::barman::replica::ReplicaView) -> String {
    format!(
        "replica {} of {}: {}\n",
        r.store,
        r.server,
        match &r.error {
            Some(e) => format!("UNREADABLE: {e}"),
            None if r.lag.objects == 0 => "up to date".to_string(),
            None => format!(
                "behind by {} object(s), {} bytes, oldest {}",
                r.lag.objects,
                r.lag.bytes,
                human_duration(Duration::from_secs(r.lag.seconds))
            ),
        }
    )
}

/// The last drill of a server, as `status` shows it.
fn drill_line(d: &crate::barman::drill::record::DrillRecord) -> String {
    use crate::barman::drill::record::rough;
    let now = crate::clock::now();
    let ago = |t: u64| format!("{} ago", rough(now.saturating_sub(t)));
    let backup = d.backup_id.as_deref().unwrap_or("-");
    if d.success {
        format!(
            "  last drill: OK {} (backup {backup}, RTO {:.0} s)\n",
            ago(d.finished_at),
            d.total_seconds
        )
    } else {
        format!(
            "  last drill: FAILED {} (backup {backup}) at {}: {}; last good drill {}\n",
            ago(d.finished_at),
            d.failed_step.as_deref().unwrap_or("?"),
            d.error.as_deref().unwrap_or("?"),
            d.last_success_at.map_or("never".into(), ago)
        )
    }
}

/// A server's last drill and its backups DONE in Barman but not in the bucket, as `status`
/// shows them.
fn backup_notes(s: &Status, v: &admin::ServerView) -> String {
    let mut out = String::new();
    if let Some(d) = s.drills.iter().find(|d| d.server == v.server) {
        out.push_str(&drill_line(d));
    }
    for (id, age) in &v.unsynced {
        out.push_str(&format!(
                "  backup {id}: DONE in Barman for {}, not in the bucket (barmans3 full-sync {} --no-delete)\n",
                admin::rough_age(*age),
                v.server
            ));
    }
    out
}
