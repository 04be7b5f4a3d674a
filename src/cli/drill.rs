//! `drill`'s arguments and their conversion into [`DrillOptions`]: the backup id, the target
//! and the statements checked before anything runs.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::invocation::BarmanAction;
use crate::barman::drill::{DrillOptions, Target};
use crate::error::{Error, Result};

/// Prove that a backup restores from the bucket alone: restore it into a scratch directory,
/// recover it with wal-restore, start it on a private port, check it, report, remove it
///
/// The newest complete backup by default. PostgreSQL runs with the binaries of the backup's
/// major version (barman.pg_bindir, or found as for pg_combinebackup) on 127.0.0.1 and a socket
/// inside DEST, archive_mode off; settings of the restored configuration that reach outside
/// (archive_command, primary_conninfo, libraries not installed, files of the source host) are
/// commented out and listed. Checks: a connection, every database's size, each --query,
/// pg_amcheck --heapallindexed on every database (when installed), pg_checksums on the stopped
/// copy (when the cluster has data checksums). Replay must reach the end of the archive: a WAL missing or damaged
/// in the middle fails the drill, naming it. PostgreSQL is always stopped and DEST removed (on
/// failure, timeout and SIGTERM too) unless --keep. Run it as the PostgreSQL user.
///
/// Exit status: 0 every step passed; 1 a step failed (named on one line); 2 bad input, binaries
/// not found, or not enough free space at DEST (nothing written); 130 interrupted.
#[derive(Debug, Clone, Args)]
pub struct DrillArgs {
    /// Barman server name
    server: String,
    /// The backup to restore: an id (see base-ls) or "latest"
    #[arg(long, value_name = "ID|latest", default_value = "latest")]
    backup: String,
    /// Recover to this time (recovery_target_time) instead of the end of the archive
    #[arg(long, value_name = "TIME", conflicts_with_all = ["target_lsn", "to_end"])]
    target_time: Option<String>,
    /// Recover to this LSN (recovery_target_lsn)
    #[arg(long, value_name = "LSN", conflicts_with = "to_end")]
    target_lsn: Option<String>,
    /// Recover to the end of the archive (the default)
    #[arg(long)]
    to_end: bool,
    /// Scratch directory, new or empty [default: a new directory in $TMPDIR]
    #[arg(long, value_name = "DIR")]
    dest: Option<PathBuf>,
    /// Keep DEST afterwards (PostgreSQL is stopped all the same)
    #[arg(long)]
    keep: bool,
    /// A statement that must succeed; its first value is reported (repeatable)
    #[arg(long = "query", value_name = "SQL")]
    queries: Vec<String>,
    /// The database the --query statements run in
    #[arg(long, value_name = "NAME", default_value = "postgres")]
    dbname: String,
    /// Give up (and clean up) after this long
    #[arg(long, value_name = "DURATION", default_value = "6h", value_parser = super::parse_age)]
    timeout: Duration,
    /// Skip pg_amcheck (run by default on every database when the binaries include it)
    #[arg(long)]
    no_amcheck: bool,
    /// Also write the result as a node_exporter textfile (barmans3_drill_*)
    #[arg(long, value_name = "FILE")]
    prometheus: Option<PathBuf>,
    /// Who wrote the bucket: barmans3 (base-sync, wal-sync), or barman-cloud
    /// (barman-cloud-backup and barman-cloud-wal-archive, Barman's S3 backend, CloudNativePG),
    /// which barmans3 reads and never writes
    #[arg(long, value_name = "LAYOUT", value_parser = ["barmans3", "barman-cloud"], default_value = "barmans3")]
    layout: String,
}

impl DrillArgs {
    /// The validated request.
    pub fn validate(self) -> Result<BarmanAction> {
        let backup = match self.backup.as_str() {
            "latest" => None,
            id if crate::barman::info::is_backup_id(id) => Some(id.to_string()),
            id => {
                return Err(Error::Usage(format!(
                    "--backup {id:?}: expected YYYYMMDDTHHMMSS (see base-ls) or latest"
                )));
            }
        };
        let target = match (self.target_time, self.target_lsn) {
            (Some(t), _) => Target::Time(t),
            (None, Some(l)) => {
                if crate::barman::drill::decide::parse_lsn(&l).is_none() {
                    return Err(Error::Usage(format!(
                        "--target-lsn {l:?}: expected an LSN such as 0/3000060"
                    )));
                }
                Target::Lsn(l)
            }
            (None, None) => Target::End,
        };
        if let Some(q) = self.queries.iter().find(|q| q.trim().is_empty()) {
            return Err(Error::Usage(format!("--query {q:?}: empty statement")));
        }
        if self.timeout.is_zero() {
            return Err(Error::Usage("--timeout must be longer than 0s".into()));
        }
        Ok(BarmanAction::Drill {
            server: self.server,
            opts: DrillOptions {
                backup,
                target,
                dest: self.dest,
                keep: self.keep,
                queries: self.queries,
                dbname: self.dbname,
                timeout: self.timeout,
                amcheck: !self.no_amcheck,
                layout: super::barman::bucket_layout(&self.layout),
            },
            prometheus: self.prometheus,
        })
    }
}
