//! `base-ls --layout barman-cloud`: the backups of a barman-cloud bucket, from each one's
//! backup.info and the listing of its archives (two requests per backup).

use serde::Serialize;

use super::{archives, compression_of, tablespace_oids};
use crate::barman::info::BackupInfo;
use crate::barman::remote::INFO;
use crate::barman::server::Server;
use crate::barman::ship::fullsync::RemoteBackup;
use crate::error::{Error, Result};
use crate::store::ListRequest;

/// One backup of a barman-cloud bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CloudBackup {
    /// Backup id.
    pub id: String,
    /// Barman's status (`DONE`, `FAILED`, ...; empty without backup.info).
    pub status: String,
    /// `begin_time`.
    pub begin_time: Option<String>,
    /// `end_time`.
    pub end_time: Option<String>,
    /// First WAL needed.
    pub begin_wal: Option<String>,
    /// Last WAL needed.
    pub end_wal: Option<String>,
    /// Bytes of PGDATA as Barman counted them.
    pub size: Option<u64>,
    /// The cluster's WAL segment size (`xlog_segment_size`).
    pub segment_size: Option<u64>,
    /// Bytes stored (every archive).
    pub stored: u64,
    /// Tablespace oids.
    pub tablespaces: Vec<String>,
    /// The archives' compression (`none` for plain tar).
    pub compression: String,
    /// Parts of the data archive.
    pub parts: usize,
    /// The backup this one is an increment of, if any.
    pub parent: Option<String>,
    /// backup.info present, status DONE and every archive there.
    pub complete: bool,
    /// Why it is not complete.
    pub problem: Option<String>,
}

impl CloudBackup {
    /// The facts the backup pickers of our own layout weigh (drill).
    pub fn as_remote(&self) -> RemoteBackup {
        RemoteBackup {
            id: self.id.clone(),
            status: self.status.clone(),
            begin_time: self.begin_time.clone(),
            end_time: self.end_time.clone(),
            size: self.size,
            begin_wal: self.begin_wal.clone(),
            end_wal: self.end_wal.clone(),
            timeline: None,
            parent: self.parent.clone(),
            complete: self.complete,
        }
    }
}

/// A backup's backup.info, `None` when it is not there (a backup still uploading, or failed).
pub async fn backup_info(srv: &Server, id: &str) -> Result<Option<BackupInfo>> {
    match srv
        .t
        .download_small(&srv.remote.backup_key(id, INFO), INFO_MAX)
        .await
    {
        Ok((b, _)) => Ok(Some(BackupInfo::parse(&String::from_utf8_lossy(&b)))),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The most of a backup.info read (a few kB; the backup_label and the copy statistics).
pub const INFO_MAX: u64 = 1 << 20;

/// Every object under a backup's prefix, with its size.
pub async fn objects(srv: &Server, id: &str) -> Result<Vec<(String, u64)>> {
    let req = ListRequest {
        prefix: srv.remote.backup_prefix(id),
        ..Default::default()
    };
    Ok(srv
        .t
        .list_all(&req)
        .await?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect())
}

/// Lists the server's backups, oldest first.
pub async fn backups(srv: &Server) -> Result<Vec<CloudBackup>> {
    let mut out = Vec::new();
    for id in srv.backup_ids().await? {
        let bi = backup_info(srv, &id).await?;
        let listed = objects(srv, &id).await?;
        out.push(describe(&id, bi.as_ref(), &listed));
    }
    Ok(out)
}

/// What backup.info and the listing say of one backup (pure).
pub fn describe(id: &str, bi: Option<&BackupInfo>, listed: &[(String, u64)]) -> CloudBackup {
    let field = |k: &str| bi.and_then(|b| b.get(k)).map(str::to_string);
    let oids = tablespace_oids(bi.and_then(|b| b.get("tablespaces")));
    let status = bi.map(|b| b.status().to_string()).unwrap_or_default();
    let found = archives(id, listed, &oids);
    let problem = match (&found, bi) {
        (_, None) => Some("no backup.info".to_string()),
        (_, Some(_)) if status != "DONE" => Some(format!("status {status}")),
        (_, Some(b)) if b.get("snapshots_info").is_some_and(|s| s != "None") => {
            Some("a snapshot backup (its data is in disk snapshots)".into())
        }
        (Err(e), _) => Some(e.to_string()),
        (Ok(_), _) => None,
    };
    let found = found.ok();
    CloudBackup {
        id: id.to_string(),
        status,
        begin_time: field("begin_time"),
        end_time: field("end_time"),
        begin_wal: field("begin_wal"),
        end_wal: field("end_wal"),
        size: bi.and_then(BackupInfo::size),
        segment_size: field("xlog_segment_size").and_then(|s| s.parse().ok()),
        stored: listed.iter().map(|(_, s)| s).sum(),
        tablespaces: oids,
        compression: found.as_ref().map_or("-", compression_of).to_string(),
        parts: found
            .as_ref()
            .and_then(|a| a.get(&None))
            .map_or(0, Vec::len),
        parent: field("parent_backup_id").filter(|p| p != "None"),
        complete: problem.is_none(),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_is_complete_only_when_done_and_whole() {
        let listed: Vec<(String, u64)> = ["backup.info", "data.tar.gz", "16385.tar.gz"]
            .iter()
            .map(|n| (format!("b/{n}"), 100))
            .collect();
        let done = BackupInfo::parse(
            "status=DONE\nbegin_wal=000000010000000000000004\ntablespaces=[('t', 16385, '/t')]\nsize=1000\n",
        );
        let b = describe("20260101T000000", Some(&done), &listed);
        assert!(b.complete, "{b:?}");
        assert_eq!(b.compression, "gzip");
        assert_eq!(b.tablespaces, vec!["16385".to_string()]);
        assert_eq!(b.stored, 300);
        let failed = BackupInfo::parse("status=FAILED\n");
        let b = describe("20260101T000000", Some(&failed), &listed);
        assert_eq!(b.problem.as_deref(), Some("status FAILED"));
        let b = describe("20260101T000000", None, &listed);
        assert!(!b.complete);
        // A tablespace archive missing.
        let b = describe("20260101T000000", Some(&done), &listed[..2]);
        assert!(b.problem.is_some_and(|p| p.contains("16385")));
    }
}
