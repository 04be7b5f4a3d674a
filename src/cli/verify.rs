//! The `verify` and `verify-wal` command lines and their validation into a [`VerifyRequest`].

use clap::Args;

use crate::barman::observe::verify::VerifyRequest;
use crate::error::{Error, Result};

/// Re-read a server's backups in the bucket and check them against their manifests (cron)
///
/// Without IDs, every complete backup of SERVER in the bucket is checked. Each file the
/// backup's barmans3.manifest lists is read back whole and its size and CRC32C compared with
/// the manifest (directories and symbolic links live in the manifest alone), and the WAL files
/// the backup needs, begin_wal to end_wal of its backup.info, must be in the bucket: each is
/// read and checked against the checksum the store keeps with it, as is the history file of a
/// backup on a later timeline. Reads run in parallel within s3.concurrency; the time and
/// the bytes downloaded grow with the size of the backups.
///
/// --quick sends one HEAD per file instead: it finds missing and truncated files and compares
/// the CRC32C the store keeps where the object has a full-object one (multipart objects carry a
/// composite checksum, so only their size is compared; the run says how many). It cannot find
/// a file whose bytes changed in place behind the store's back; a full verify does.
///
/// Each WAL segment read must also belong to the backup's database system (the systemid of its
/// backup.info, not the bucket's identity: after a pg_upgrade the bucket holds both systems'
/// WAL); one stored encrypted or with a custom compression is only counted as not compared.
///
/// stdout: one line per problem, KIND KEY: DETAIL, with KIND one of missing, size, checksum,
/// unreadable, manifest, incomplete, wal-missing, history-missing, wal-name, wal-system (--json: one JSON
/// object with the problems and the run's counters). Exit status: 0, everything checked is as
/// recorded; 1, a problem was found, or the store failed and the check could not finish; 2,
/// bad arguments or configuration; 130, interrupted.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Barman server name
    pub server: String,
    /// Backup ids to check (see base-ls) [default: every complete backup of the server]
    #[arg(value_name = "ID")]
    pub backup_ids: Vec<String>,
    /// HEAD each object instead of reading it: size, and the store's CRC32C where it keeps a
    /// full-object one; WAL files by listing only
    #[arg(long)]
    pub quick: bool,
    /// Check the bucket as it was at TIME (RFC 3339, e.g. 2026-11-30T12:00:00Z): each key's
    /// newest version not newer than TIME (a versioned bucket only)
    #[arg(long, value_name = "TIME", value_parser = super::parse_as_of)]
    pub as_of: Option<std::time::SystemTime>,
    /// Who wrote the bucket: barmans3, or barman-cloud (barman-cloud-backup, Barman's S3
    /// backend, CloudNativePG): each archive read back through its decoder and tar, the data
    /// archive holding global/pg_control, the WAL from begin_wal to end_wal and the history file
    #[arg(long, value_name = "LAYOUT", value_parser = ["barmans3", "barman-cloud"], default_value = "barmans3")]
    pub layout: String,
}

/// Check a server's WAL archive in the bucket: no missing segment, no missing history file
/// (cron); with --read, every WAL object read back
///
/// Lists the server's WAL archive in the bucket and checks that every segment is there from the
/// oldest complete backup's begin_wal (without backups: the oldest segment) up to the newest
/// segment of each timeline, and up to each backup's end_wal. Timeline switches are followed as
/// recovery reads them: a new timeline begins at the segment holding its switch point, which
/// its history file gives, and every timeline after the first needs its history file. A closed
/// .partial segment counts for its segment. Segment names are read with the segment size of the
/// oldest backup's backup.info (xlog_segment_size; 16 MiB when it gives none).
///
/// Every WAL object is then checked by one HEAD: it is there, and it carries a full-object
/// CRC32C a read is verified against (the run says how many do not). --read reads every object
/// back instead, verified against the checksum the store keeps with it: it finds a segment
/// damaged at rest, which nothing else reads until a recovery needs it (weekly, see README).
///
/// stderr ends with the recovery window the bucket can serve: from the end of the oldest backup
/// whose WAL is all there and readable, to the last segment a recovery replays before the first
/// missing or damaged one (following timeline switches whose history file is there).
///
/// Costs one listing request per 1000 objects, one read per history file, and one HEAD per WAL
/// object (--read: one read each, the archive's size downloaded). stdout and exit status as for
/// verify: one line per problem (a run of missing segments is one line).
#[derive(Debug, Clone, Args)]
pub struct VerifyWalArgs {
    /// Barman server name
    pub server: String,
    /// Read every WAL object back, verified against its stored checksum
    #[arg(long)]
    pub read: bool,
}

impl VerifyArgs {
    /// Checks the backup ids.
    pub fn validate(self) -> Result<VerifyRequest> {
        for id in &self.backup_ids {
            if !crate::barman::info::is_backup_id(id) {
                return Err(Error::Usage(format!(
                    "invalid backup id {id:?}: expected YYYYMMDDTHHMMSS (see base-ls)"
                )));
            }
        }
        Ok(VerifyRequest::Backups {
            server: self.server,
            ids: self.backup_ids,
            quick: self.quick,
            layout: match self.layout.as_str() {
                "barman-cloud" => crate::barman::remote::BucketLayout::BarmanCloud,
                _ => crate::barman::remote::BucketLayout::Barmans3,
            },
        })
    }
}

impl VerifyWalArgs {
    /// The request.
    pub fn validate(self) -> VerifyRequest {
        VerifyRequest::Wal {
            server: self.server,
            read: self.read,
        }
    }
}
