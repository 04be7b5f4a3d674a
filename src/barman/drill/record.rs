//! The last drill of each server, kept in the state directory so `status`, `check` and the
//! status textfile show it: a drill proves a restore only while it is recent and passed.
//! A failed drill keeps the time of the last good one, so its age keeps counting. Records are
//! per store, like the WAL state: a drill of another bucket says nothing about this one.
//!
//! [`judge`] is the pure rule `check` applies: a failed last drill is CRITICAL (the newest
//! backup did not restore), a last good drill older than `barman.drill_max_age` is a WARNING.
//! A server never drilled has no record and no note: drills are opt-in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::DrillReport;
use crate::error::{CheckLevel, Error, Result};

/// What the last drill of a server proved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// The store it restored from.
    pub store: String,
    /// Server.
    pub server: String,
    /// The backup it restored.
    pub backup_id: Option<String>,
    /// Whether every step passed.
    pub success: bool,
    /// When it ended (seconds since the epoch).
    pub finished_at: u64,
    /// The step that failed.
    pub failed_step: Option<String>,
    /// Why, in one line.
    pub error: Option<String>,
    /// Wall time of the drill (its RTO when it passed).
    pub total_seconds: f64,
    /// Commit time of the last transaction replayed (seconds since the epoch).
    pub restorable_up_to_epoch: Option<f64>,
    /// When the last drill that passed ended (this one's time when it passed).
    pub last_success_at: Option<u64>,
    /// Who wrote the bucket the drill read (`barman-cloud`; absent: barmans3, and records
    /// written before the field existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
}

/// The directory of the records under `state.dir`.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("drill")
}

/// One file per server and store: a drill against a replica (`--store`) must not replace the
/// main store's record.
fn path(state_dir: &Path, store: &str, server: &str) -> PathBuf {
    let safe: String = server
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let store = crate::checksum::crc32c(store.as_bytes());
    dir(state_dir).join(format!("{safe}-{store:08x}.json"))
}

/// Records `r`, carrying the last success over from the previous record of the same store.
pub fn save(state_dir: &Path, store: &str, r: &DrillReport) -> Result<()> {
    let previous = load(state_dir, store, &r.server);
    let rec = DrillRecord {
        store: store.to_string(),
        server: r.server.clone(),
        backup_id: r.backup_id.clone(),
        success: r.success,
        finished_at: r.finished_at,
        failed_step: r.failed_step.clone(),
        error: r.error.clone(),
        total_seconds: r.total_seconds,
        restorable_up_to_epoch: r.restorable_up_to_epoch,
        last_success_at: if r.success {
            Some(r.finished_at)
        } else {
            previous.and_then(|p| p.last_success_at)
        },
        layout: (!r.layout.is_empty()
            && r.layout != crate::barman::remote::BucketLayout::Barmans3.name())
        .then(|| r.layout.clone()),
    };
    let d = dir(state_dir);
    std::fs::create_dir_all(&d).map_err(|e| Error::io(format!("create {}", d.display()), e))?;
    let json = serde_json::to_vec(&rec).map_err(|e| Error::Failed(format!("encode: {e}")))?;
    // Group-readable: the drill runs as the PostgreSQL user, status and check as barman.
    crate::fsutil::replace_with(&path(state_dir, store, &r.server), |tmp| {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(tmp)?;
        f.write_all(&json)?;
        f.sync_all()
    })
}

/// The last drill of `server` against `store`, if one was recorded (an unreadable record is
/// none: a status never fails on it).
pub fn load(state_dir: &Path, store: &str, server: &str) -> Option<DrillRecord> {
    let bytes = std::fs::read(path(state_dir, store, server)).ok()?;
    serde_json::from_slice::<DrillRecord>(&bytes)
        .ok()
        .filter(|r| r.store == store && r.server == server)
}

/// The records of `store` for servers not in `known`: drills of servers Barman's configuration
/// does not name (a bucket barman-cloud or CloudNativePG writes), which `status`, `check` and
/// the metrics show all the same. Unreadable records are skipped, as [`load`] skips them.
pub fn others(state_dir: &Path, store: &str, known: &[String]) -> Vec<DrillRecord> {
    let Ok(entries) = std::fs::read_dir(dir(state_dir)) else {
        return Vec::new();
    };
    let mut out: Vec<DrillRecord> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| {
            let rec: DrillRecord = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            // The file must be the one `load` would read for that record.
            (rec.store == store
                && !known.contains(&rec.server)
                && e.path() == path(state_dir, store, &rec.server))
            .then_some(rec)
        })
        .collect();
    out.sort_by(|a, b| a.server.cmp(&b.server));
    out
}

/// What `check` says of a server's last drill at `now`: nothing when it passed recently.
pub fn judge(r: &DrillRecord, now: u64, max_age: Duration) -> Option<(CheckLevel, String)> {
    let ago = |t: u64| rough(now.saturating_sub(t));
    let last_good = r
        .last_success_at
        .map_or("never".to_string(), |t| format!("{} ago", ago(t)));
    if !r.success {
        return Some((
            CheckLevel::Critical,
            format!(
                "{}: the last drill ({} ago, backup {}) FAILED at {}: {}; last good drill {last_good}",
                r.server,
                ago(r.finished_at),
                r.backup_id.as_deref().unwrap_or("-"),
                r.failed_step.as_deref().unwrap_or("?"),
                r.error.as_deref().unwrap_or("?"),
            ),
        ));
    }
    let age = now.saturating_sub(r.last_success_at.unwrap_or(r.finished_at));
    (age > max_age.as_secs()).then(|| {
        (
            CheckLevel::Warning,
            format!(
                "{}: the last good drill is {last_good}, older than barman.drill_max_age {}",
                r.server,
                crate::units::human_duration(max_age)
            ),
        )
    })
}

/// An age in whole days, hours or minutes (the largest unit it reaches).
pub fn rough(s: u64) -> String {
    match s {
        86400.. => format!("{}d", s / 86400),
        3600.. => format!("{}h", s / 3600),
        _ => format!("{}m", s / 60),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DAY: u64 = 86400;

    fn report(success: bool, at: u64) -> DrillReport {
        DrillReport {
            server: "pg/1".into(),
            backup_id: Some("20260101T000000".into()),
            success,
            finished_at: at,
            failed_step: (!success).then(|| "replay the WAL".into()),
            error: (!success).then(|| "WAL 000000010000000000000005 is missing".into()),
            total_seconds: 25.0,
            ..Default::default()
        }
    }

    #[test]
    fn a_failed_drill_keeps_the_last_success_and_records_are_per_store() {
        let d = tempfile::tempdir().unwrap();
        save(d.path(), "s3 a", &report(true, 10 * DAY)).unwrap();
        save(d.path(), "s3 a", &report(false, 11 * DAY)).unwrap();
        let r = load(d.path(), "s3 a", "pg/1").unwrap();
        assert!(!r.success);
        assert_eq!(r.last_success_at, Some(10 * DAY));
        assert_eq!(r.failed_step.as_deref(), Some("replay the WAL"));
        assert!(load(d.path(), "s3 b", "pg/1").is_none(), "another store");
        assert!(load(d.path(), "s3 a", "pg").is_none(), "another server");
        // A failure against another store does not inherit this store's success.
        save(d.path(), "s3 b", &report(false, 12 * DAY)).unwrap();
        assert_eq!(
            load(d.path(), "s3 b", "pg/1").unwrap().last_success_at,
            None
        );
        // A drill against another store (a replica) leaves this store's record as it was.
        let a = load(d.path(), "s3 a", "pg/1").expect("the first store's record is kept");
        assert!(!a.success && a.last_success_at == Some(10 * DAY), "{a:?}");
    }

    #[test]
    fn drills_of_servers_barman_does_not_name_are_found_for_their_store_only() {
        let d = tempfile::tempdir().unwrap();
        let cloud = DrillReport {
            server: "cnpg-main".into(),
            layout: "barman-cloud".into(),
            ..report(true, 10 * DAY)
        };
        save(d.path(), "s3 a", &cloud).unwrap();
        save(d.path(), "s3 a", &report(true, 10 * DAY)).unwrap();
        save(d.path(), "s3 b", &report(true, 10 * DAY)).unwrap();
        // A record copied under another server's file name is not that server's.
        std::fs::copy(
            path(d.path(), "s3 a", "cnpg-main"),
            path(d.path(), "s3 a", "elsewhere"),
        )
        .unwrap();
        let known = ["pg/1".to_string()];
        let found = others(d.path(), "s3 a", &known);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].server, "cnpg-main");
        assert_eq!(found[0].layout.as_deref(), Some("barman-cloud"));
        assert!(others(d.path(), "s3 b", &known).is_empty());
        let ours = load(d.path(), "s3 a", "pg/1").unwrap();
        assert_eq!(ours.layout, None, "our own layout is not named");
        assert!(others(&d.path().join("none"), "s3 a", &known).is_empty());
    }

    #[test]
    fn check_warns_on_an_old_good_drill_and_is_critical_on_a_failed_one() {
        let max = Duration::from_secs(8 * DAY);
        let d = tempfile::tempdir().unwrap();
        let st = "file /b";
        save(d.path(), st, &report(true, 100 * DAY)).unwrap();
        let ok = load(d.path(), st, "pg/1").unwrap();
        let rows = [
            // (now, level, fragment)
            (100 * DAY + 3600, None, ""),
            (108 * DAY, None, ""),
            (
                108 * DAY + 1,
                Some(CheckLevel::Warning),
                "last good drill is 8d",
            ),
        ];
        for (now, level, fragment) in rows {
            let got = judge(&ok, now, max);
            assert_eq!(got.as_ref().map(|g| g.0), level, "at {now}: {got:?}");
            if let Some((_, line)) = got {
                assert!(
                    line.contains(fragment) && line.contains("drill_max_age 8d"),
                    "{line}"
                );
            }
        }
        save(d.path(), st, &report(false, 101 * DAY)).unwrap();
        let failed = load(d.path(), st, "pg/1").unwrap();
        let (level, line) = judge(&failed, 101 * DAY + 60, max).unwrap();
        assert_eq!(level, CheckLevel::Critical);
        assert!(
            line.contains("FAILED at replay the WAL: WAL 000000010000000000000005 is missing")
                && line.contains("last good drill 1d"),
            "{line}"
        );
        let never = DrillRecord {
            last_success_at: None,
            ..failed
        };
        let (_, line) = judge(&never, 101 * DAY, max).unwrap();
        assert!(line.contains("last good drill never"), "{line}");
    }
}
