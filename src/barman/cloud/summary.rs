//! What `status`, `check`'s output and the metrics show of a server only a barman-cloud bucket
//! knows (a CloudNativePG cluster, a Barman server writing to S3 itself): how many backups the
//! bucket holds and the newest one Barman finished. One listing and at most [`INFOS_READ`]
//! backup.info reads per server, so a `status` stays cheap however many backups there are.

use serde::Serialize;

use super::list::backup_info;
use crate::barman::info::BackupInfo;
use crate::barman::server::Server;
use crate::error::Result;

/// backup.info files read, newest first, looking for a finished backup: a backup running now
/// (no backup.info yet) or one that failed does not hide the one before it.
pub const INFOS_READ: usize = 3;

/// One server of a barman-cloud bucket as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CloudSummary {
    /// Server (the bucket's directory name).
    pub server: String,
    /// Backup directories under the server's `base/`.
    pub backups: usize,
    /// The newest backup whose backup.info says DONE, among the newest [`INFOS_READ`].
    pub newest_done: Option<NewestDone>,
    /// Why the bucket could not tell, in one line.
    pub error: Option<String>,
}

/// The newest finished backup of a server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NewestDone {
    /// Backup id.
    pub id: String,
    /// `end_time` as backup.info has it.
    pub end_time: Option<String>,
    /// The same in seconds since the epoch, when it parses.
    pub end_at: Option<u64>,
}

/// The summary of the server `srv` names; a listing or read that fails is its `error`, never
/// the whole status's.
pub async fn summary(srv: &Server, server: &str) -> CloudSummary {
    let mut out = CloudSummary {
        server: server.to_string(),
        ..Default::default()
    };
    match gather(srv).await {
        Ok((n, newest)) => {
            out.backups = n;
            out.newest_done = newest;
        }
        Err(e) => out.error = Some(e.one_line()),
    }
    out
}

async fn gather(srv: &Server) -> Result<(usize, Option<NewestDone>)> {
    let mut ids = srv.backup_ids().await?;
    // Barman's backup ids are times (`YYYYMMDDTHHMMSS`): their order is the backups' order.
    ids.sort();
    let mut infos = Vec::with_capacity(INFOS_READ);
    for id in ids.iter().rev().take(INFOS_READ) {
        infos.push((id.clone(), backup_info(srv, id).await?));
    }
    Ok((ids.len(), newest_done(&infos)))
}

/// The first backup of `newest_first` whose backup.info says DONE.
pub fn newest_done(newest_first: &[(String, Option<BackupInfo>)]) -> Option<NewestDone> {
    newest_first.iter().find_map(|(id, bi)| {
        let bi = bi.as_ref().filter(|b| b.status() == "DONE")?;
        let end_time = bi.get("end_time").map(str::to_string);
        Some(NewestDone {
            id: id.clone(),
            end_at: end_time.as_deref().and_then(barman_time),
            end_time,
        })
    })
}

/// Seconds since the epoch of a time as Barman writes it in backup.info (Python's
/// `str(datetime)` with its offset: `2026-12-06 03:00:01.123456+00:00`).
pub fn barman_time(s: &str) -> Option<u64> {
    let t = chrono::DateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S%.f%:z").ok()?;
    u64::try_from(t.timestamp()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(text: &str) -> Option<BackupInfo> {
        Some(BackupInfo::parse(text))
    }

    #[test]
    fn the_newest_finished_backup_is_found_past_a_running_and_a_failed_one() {
        let infos = vec![
            ("20261206T030000".to_string(), None),
            ("20261205T030000".to_string(), info("status=FAILED\n")),
            (
                "20261204T030000".to_string(),
                info("status=DONE\nend_time=2026-12-04 03:10:00.250000+01:00\n"),
            ),
        ];
        let n = newest_done(&infos).expect("a DONE backup");
        assert_eq!(n.id, "20261204T030000");
        assert_eq!(n.end_at, Some(1_796_350_200));
        assert_eq!(newest_done(&infos[..2]), None);
        assert_eq!(newest_done(&[]), None);
    }

    #[test]
    fn barman_times_parse_with_and_without_fractions_and_nothing_else_does() {
        assert_eq!(barman_time("1970-01-01 00:01:40+00:00"), Some(100));
        assert_eq!(barman_time("1970-01-01 01:01:40.5+01:00"), Some(100));
        assert_eq!(barman_time("None"), None);
        assert_eq!(barman_time("1969-12-31 23:59:59+00:00"), None);
    }
}
