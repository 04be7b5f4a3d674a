//! Metrics for monitoring systems: `status --prometheus FILE` renders the status, and what the
//! last runs recorded, as a node_exporter textfile (Prometheus text exposition format).
//!
//! A base-sync or wal-sync that ends without error, and a `verify` that could check everything,
//! leave a small record in the state directory ([`record_run`], [`record_verify`]): `status`
//! itself moves no data, so the bytes and requests of "the last run" can only come from there.
//! A failed run records nothing (it leaves the disk as it was); failures show in the queue's
//! error count, `barmans3_server_problem` and the last-success times. Records are per store,
//! like the WAL state: a run against another bucket says nothing about this one.
//!
//! Every value is a gauge: the last run's bytes and requests describe that run and start again
//! with the next, so they are not Prometheus counters and carry no `_total` suffix.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::admin::Status;
use super::verify::Report;
use crate::barman::ship::state::store_id;
use crate::clock::now;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::transfer::StatsSnapshot;

/// What the last base-sync or wal-sync that ended without error moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The store it ran against.
    pub store: String,
    /// `base-sync` or `wal-sync`.
    pub command: String,
    /// When it ended (seconds since the epoch).
    pub finished_at: u64,
    /// Requests by type.
    pub requests: BTreeMap<String, u64>,
    /// Body bytes sent.
    pub bytes_up: u64,
    /// Body bytes received.
    pub bytes_down: u64,
    /// Bytes the store copied server-side.
    pub bytes_copied: u64,
    /// Requests repeated after a retryable failure.
    pub retries: u64,
    /// How long it ran.
    pub elapsed_ms: u64,
}

/// What the last `verify` or `verify-wal` of a server found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRecord {
    /// The store it checked.
    pub store: String,
    /// Server.
    pub server: String,
    /// `backups` or `wal`.
    pub check: String,
    /// When it ended (seconds since the epoch).
    pub finished_at: u64,
    /// HEAD only.
    pub quick: bool,
    /// Problems found.
    pub problems: u64,
}

fn runs_dir(cfg: &Config) -> PathBuf {
    cfg.state.dir.join("runs")
}

fn verify_dir(cfg: &Config) -> PathBuf {
    cfg.state.dir.join("verify")
}

/// A server name as a file name: `[A-Za-z0-9._-]` kept, anything else `%XX`.
fn file_name(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn save<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let json = serde_json::to_vec(value).map_err(|e| Error::Failed(format!("encode: {e}")))?;
    fsutil::write_atomic(&dir.join(format!("{name}.json")), &json)
}

/// Every readable record in `dir` (an unreadable one is skipped: metrics never fail a status).
fn load_all<T: DeserializeOwned>(dir: &Path) -> Vec<T> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// Records a run of `command` that ended without error, with the engine's counters.
pub fn record_run(cfg: &Config, command: &str, s: &StatsSnapshot) -> Result<()> {
    let rec = RunRecord {
        store: store_id(cfg),
        command: command.to_string(),
        finished_at: now(),
        requests: s
            .requests
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        bytes_up: s.bytes_up,
        bytes_down: s.bytes_down,
        bytes_copied: s.bytes_copied,
        retries: s.retries,
        elapsed_ms: s.elapsed_ms,
    };
    save(&runs_dir(cfg), &file_name(command), &rec)
}

/// Records what a verification found.
pub fn record_verify(cfg: &Config, r: &Report) -> Result<()> {
    let rec = VerifyRecord {
        store: store_id(cfg),
        server: r.server.clone(),
        check: r.check.to_string(),
        finished_at: now(),
        quick: r.quick,
        problems: r.problem_count(),
    };
    // A quick verify has its own record: it must not stand in for the full one.
    let name = format!(
        "{}.{}{}",
        file_name(&r.server),
        r.check,
        if r.quick { ".quick" } else { "" }
    );
    save(&verify_dir(cfg), &name, &rec)
}

/// The last run of each command against the configured store.
pub fn last_runs(cfg: &Config) -> Vec<RunRecord> {
    let store = store_id(cfg);
    load_all::<RunRecord>(&runs_dir(cfg))
        .into_iter()
        .filter(|r| r.store == store)
        .collect()
}

/// The last verification of each server and check against the configured store.
pub fn last_verifies(cfg: &Config) -> Vec<VerifyRecord> {
    let store = store_id(cfg);
    load_all::<VerifyRecord>(&verify_dir(cfg))
        .into_iter()
        .filter(|r| r.store == store)
        .collect()
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family being written: HELP and TYPE once, then its samples.
struct Families(String);

impl Families {
    fn family<V: std::fmt::Display>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'static str, String)>, V)>,
    ) {
        let mut lines = String::new();
        for (labels, value) in samples {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            if labels.is_empty() {
                lines.push_str(&format!("{name} {value}\n"));
            } else {
                lines.push_str(&format!("{name}{{{}}} {value}\n", labels.join(",")));
            }
        }
        if !lines.is_empty() {
            self.0.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{lines}"
            ));
        }
    }
}

fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// The textfile: the status (bucket, queue, per-server WAL shipping, last good syncs), the last
/// runs and the last verifications. Times are seconds since the epoch, 0 for "never".
pub fn render(s: &Status, runs: &[RunRecord], verifies: &[VerifyRecord]) -> String {
    let mut f = Families(String::new());
    let server = |name: &str| vec![("server", name.to_string())];
    f.family(
        "barmans3_bucket_reachable",
        "1 if the bucket answered a listing, else 0.",
        [(vec![], u8::from(s.bucket.reachable))],
    );
    let q = s.queue;
    f.family(
        "barmans3_queue_tasks",
        "Base-backup queue tasks by state.",
        [
            ("run", q.run),
            ("running", q.running),
            ("done", q.done),
            ("error", q.error),
        ]
        .map(|(st, n)| (vec![("state", st.to_string())], n)),
    );
    f.family(
        "barmans3_base_sync_last_success_timestamp_seconds",
        "When the last base-sync without failures ended (0: never).",
        [(vec![], s.last_base_sync_at.unwrap_or(0))],
    );
    let r = &s.replicas;
    let replica = |x: &crate::barman::replica::ReplicaView| {
        vec![("server", x.server.clone()), ("store", x.store.clone())]
    };
    f.family(
        "barmans3_replica_lag_seconds",
        "Age of the oldest object of the main store not on the replica yet (0: none).",
        r.iter().map(|x| (replica(x), x.lag.seconds)),
    );
    f.family(
        "barmans3_replica_lag_bytes",
        "Bytes of the main store not on the replica yet.",
        r.iter().map(|x| (replica(x), x.lag.bytes)),
    );
    f.family(
        "barmans3_replica_reachable",
        "1 if the replica answered its listings, else 0.",
        r.iter().map(|x| (replica(x), u8::from(x.error.is_none()))),
    );
    let v = &s.servers;
    f.family(
        "barmans3_wal_pending_files",
        "Local WAL files not in the bucket yet.",
        v.iter().map(|x| (server(&x.server), x.pending)),
    );
    f.family(
        "barmans3_wal_lag_seconds",
        "Age of the oldest WAL file not in the bucket yet (0: none pending).",
        v.iter()
            .map(|x| (server(&x.server), x.pending_age_s.unwrap_or(0))),
    );
    f.family(
        "barmans3_wal_sync_last_success_timestamp_seconds",
        "When the last wal-sync without error ended (0: never).",
        v.iter()
            .map(|x| (server(&x.server), x.last_wal_sync_at.unwrap_or(0))),
    );
    f.family(
        "barmans3_server_problem",
        "1 if the server's WAL shipping has a problem (last wal-sync failed, unreadable directory).",
        v.iter()
            .map(|x| (server(&x.server), u8::from(x.problem.is_some()))),
    );
    render_runs(&mut f, runs);
    render_verifies(&mut f, verifies);
    render_drills(&mut f, s);
    render_cloud(&mut f, s);
    f.0
}

/// The servers of a barman-cloud bucket known here by their drills: what the bucket holds, so
/// a CloudNativePG cluster that stopped backing up shows as an ageing timestamp.
fn render_cloud(f: &mut Families, s: &Status) {
    let listed = || s.cloud.iter().filter(|c| c.error.is_none());
    let server =
        |c: &crate::barman::cloud::summary::CloudSummary| vec![("server", c.server.clone())];
    f.family(
        "barmans3_cloud_backups",
        "Backups the barman-cloud bucket holds for the server.",
        listed().map(|c| (server(c), c.backups)),
    );
    f.family(
        "barmans3_cloud_newest_backup_end_timestamp_seconds",
        "When the newest DONE backup of the server in the barman-cloud bucket ended.",
        listed().filter_map(|c| Some((server(c), c.newest_done.as_ref()?.end_at?))),
    );
}

/// The last drill of each server as the state records it. Named apart from the drill's own
/// textfile (`barmans3_drill_*`): node_exporter refuses a series two files both carry.
fn render_drills(f: &mut Families, s: &Status) {
    let d = &s.drills;
    let server = |r: &crate::barman::drill::record::DrillRecord| vec![("server", r.server.clone())];
    f.family(
        "barmans3_last_drill_success",
        "1 if the last drill of the server restored, replayed and passed its checks.",
        d.iter().map(|r| (server(r), u8::from(r.success))),
    );
    f.family(
        "barmans3_last_drill_timestamp_seconds",
        "When the last drill of the server ended.",
        d.iter().map(|r| (server(r), r.finished_at)),
    );
    f.family(
        "barmans3_last_drill_success_timestamp_seconds",
        "When the last drill of the server that passed ended (0: never).",
        d.iter()
            .map(|r| (server(r), r.last_success_at.unwrap_or(0))),
    );
    f.family(
        "barmans3_last_drill_rto_seconds",
        "Wall time of the last drill of the server, when it passed.",
        d.iter()
            .filter(|r| r.success)
            .map(|r| (server(r), r.total_seconds)),
    );
}

fn render_runs(f: &mut Families, runs: &[RunRecord]) {
    let cmd = |r: &RunRecord| vec![("command", r.command.clone())];
    f.family(
        "barmans3_last_run_timestamp_seconds",
        "When the last run of the command that ended without error ended.",
        runs.iter().map(|r| (cmd(r), r.finished_at)),
    );
    f.family(
        "barmans3_last_run_duration_seconds",
        "How long the last good run of the command took.",
        runs.iter().map(|r| (cmd(r), secs(r.elapsed_ms))),
    );
    f.family(
        "barmans3_last_run_requests",
        "Store requests of the last good run of the command, by S3 operation.",
        runs.iter().flat_map(|r| {
            r.requests.iter().map(|(op, n)| {
                let mut l = cmd(r);
                l.push(("op", op.clone()));
                (l, *n)
            })
        }),
    );
    f.family(
        "barmans3_last_run_bytes",
        "Body bytes of the last good run of the command: sent (up), received (down), copied by the store (copied).",
        runs.iter().flat_map(|r| {
            [("up", r.bytes_up), ("down", r.bytes_down), ("copied", r.bytes_copied)].map(
                |(d, n)| {
                    let mut l = cmd(r);
                    l.push(("direction", d.to_string()));
                    (l, n)
                },
            )
        }),
    );
    f.family(
        "barmans3_last_run_retries",
        "Requests the last good run of the command repeated after a retryable failure.",
        runs.iter().map(|r| (cmd(r), r.retries)),
    );
}

fn render_verifies(f: &mut Families, verifies: &[VerifyRecord]) {
    let labels = |r: &VerifyRecord| {
        vec![
            ("server", r.server.clone()),
            ("check", r.check.clone()),
            ("mode", if r.quick { "quick" } else { "full" }.to_string()),
        ]
    };
    f.family(
        "barmans3_verify_last_timestamp_seconds",
        "When the last verify (check=backups) or verify-wal (check=wal) of the server ended; mode=quick for verify --quick, full otherwise.",
        verifies.iter().map(|r| (labels(r), r.finished_at)),
    );
    f.family(
        "barmans3_verify_problems",
        "Problems the last verify (check=backups) or verify-wal (check=wal) found (0: all verified).",
        verifies.iter().map(|r| (labels(r), r.problems)),
    );
}

/// Replaces `path` atomically with `text`, readable by everyone (node_exporter runs as its own
/// user): a temp file in the same directory (not `*.prom`, so the collector never reads it
/// half-written), fsynced, renamed, directory fsynced.
pub fn write_textfile(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = fsutil::temp_path_for(path);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| {
            // Whatever the umask: the collector must be able to read it.
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(format!("write {}", tmp.display()), e));
    }
    fsutil::persist(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::barman::drill::record::DrillRecord;
    use crate::barman::observe::admin::{QueueCounts, ServerView};

    fn view(name: &str, pending: usize, age: Option<u64>) -> ServerView {
        ServerView {
            server: name.into(),
            newest_local: None,
            newest_remote: None,
            pending,
            pending_age_s: age,
            last_wal_sync_age_s: Some(5),
            last_wal_sync_at: Some(1_700_000_000),
            problem: None,
            follower: None,
            unsynced: vec![],
        }
    }

    fn status() -> Status {
        Status {
            queue: QueueCounts {
                run: 1,
                running: 0,
                done: 4,
                error: 2,
            },
            tasks: vec![],
            servers: vec![view("pg", 3, Some(120)), view("we\"ird\\", 0, None)],
            last_base_sync_age_s: None,
            last_base_sync_at: None,
            bucket: crate::barman::observe::admin::BucketView::reachable(),
            replicas: vec![crate::barman::replica::ReplicaView {
                server: "pg".into(),
                store: "offsite".into(),
                lag: crate::barman::replica::plan::Lag {
                    objects: 2,
                    bytes: 100,
                    seconds: 60,
                },
                error: None,
            }],
            drills: vec![DrillRecord {
                store: "s".into(),
                server: "pg".into(),
                backup_id: Some("20260101T000000".into()),
                success: false,
                finished_at: 1_700_000_200,
                failed_step: Some("run --query".into()),
                error: Some("no such table".into()),
                total_seconds: 30.0,
                restorable_up_to_epoch: None,
                last_success_at: Some(1_699_000_000),
                layout: None,
            }],
            cloud: vec![
                crate::barman::cloud::summary::CloudSummary {
                    server: "cnpg".into(),
                    backups: 3,
                    newest_done: Some(crate::barman::cloud::summary::NewestDone {
                        id: "20261204T030000".into(),
                        end_time: Some("2026-12-04 02:10:00+00:00".into()),
                        end_at: Some(1_796_350_200),
                    }),
                    error: None,
                },
                crate::barman::cloud::summary::CloudSummary {
                    server: "gone".into(),
                    error: Some("access denied".into()),
                    ..Default::default()
                },
            ],
            lock_proof: None,
        }
    }

    #[test]
    fn the_textfile_is_valid_exposition_format() {
        let run = RunRecord {
            store: "s".into(),
            command: "base-sync".into(),
            finished_at: 1_700_000_100,
            requests: BTreeMap::from([("put".into(), 7), ("head".into(), 2)]),
            bytes_up: 4096,
            bytes_down: 0,
            bytes_copied: 0,
            retries: 1,
            elapsed_ms: 2_050,
        };
        let text = render(&status(), &[run], &[]);
        for want in [
            "# TYPE barmans3_wal_lag_seconds gauge\n",
            "barmans3_wal_lag_seconds{server=\"pg\"} 120\n",
            "barmans3_wal_lag_seconds{server=\"we\\\"ird\\\\\"} 0\n",
            "barmans3_queue_tasks{state=\"error\"} 2\n",
            "barmans3_base_sync_last_success_timestamp_seconds 0\n",
            "barmans3_last_run_duration_seconds{command=\"base-sync\"} 2.050\n",
            "barmans3_last_run_requests{command=\"base-sync\",op=\"put\"} 7\n",
            "barmans3_last_run_bytes{command=\"base-sync\",direction=\"up\"} 4096\n",
            "barmans3_last_drill_success{server=\"pg\"} 0\n",
            "barmans3_last_drill_timestamp_seconds{server=\"pg\"} 1700000200\n",
            "barmans3_last_drill_success_timestamp_seconds{server=\"pg\"} 1699000000\n",
            "barmans3_cloud_backups{server=\"cnpg\"} 3\n",
            "barmans3_cloud_newest_backup_end_timestamp_seconds{server=\"cnpg\"} 1796350200\n",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        // Families without samples are left out entirely: a failed drill has no RTO.
        assert!(!text.contains("barmans3_verify_problems"));
        assert!(!text.contains("barmans3_last_drill_rto_seconds"));
        // A server the bucket could not list has no figures rather than a false 0.
        assert!(!text.contains("server=\"gone\""));
        // Each family's HELP and TYPE come once, right before its samples.
        let mut seen = std::collections::BTreeSet::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().expect("name").to_string();
                assert!(seen.insert(current.clone()), "{current} twice");
            } else if !line.starts_with("# HELP ") {
                assert!(line.starts_with(&current), "{line} outside its family");
                assert!(!line.contains("_total"), "gauges only: {line}");
            }
        }
    }

    #[test]
    fn records_belong_to_their_store() {
        let d = tempfile::tempdir().expect("tmp");
        let mut a = Config::for_location(crate::store::Location::Local {
            root: "/srv/a".into(),
        });
        a.state.dir = d.path().to_path_buf();
        let mut b = a.clone();
        b.location = crate::store::Location::Local {
            root: "/srv/b".into(),
        };
        record_run(&a, "wal-sync", &StatsSnapshot::default()).expect("record");
        assert_eq!(last_runs(&a).len(), 1);
        assert!(last_runs(&b).is_empty());
        let r = Report {
            server: "a/b".into(),
            check: "wal",
            ..Report::default()
        };
        record_verify(&a, &r).expect("record");
        assert_eq!(last_verifies(&a)[0].server, "a/b");
        assert!(d.path().join("verify/a%2Fb.wal.json").exists());
    }

    #[test]
    fn the_textfile_is_replaced_whole_and_world_readable() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("barmans3.prom");
        write_textfile(&p, "a 1\n").expect("write");
        write_textfile(&p, "a 2\n").expect("write");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "a 2\n");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert_eq!(std::fs::read_dir(d.path()).expect("ls").count(), 1);
    }
}
