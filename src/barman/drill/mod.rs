//! `drill`: prove from the bucket alone that a backup restores, and how long it takes. Picks the
//! backup ([`decide::pick_backup`]), checks free space, restores it with base-restore into a
//! scratch directory, recovers it with our own `wal-restore` as restore_command (so the same
//! prefetching path a real recovery takes), on a private port and socket with every setting that
//! could reach outside commented out ([`decide::neutralise`]), waits for promotion, checks that
//! replay reached the end of the archive, runs the checks and measures each phase.
//!
//! Whatever happens (failure, timeout, SIGTERM) PostgreSQL is stopped and the scratch directory
//! removed before the drill returns, unless `keep` asks to keep the directory.

pub mod decide;
pub mod pg;
pub mod record;
pub mod report;
mod run;
mod scratch;
mod sweep;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use run::drill;

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Target {
    /// The end of the archive (every WAL in the bucket after the backup).
    #[default]
    End,
    /// `recovery_target_time`.
    Time(String),
    /// `recovery_target_lsn`.
    Lsn(String),
}

/// What the command line asked for.
#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    /// The backup (None: the newest complete one).
    pub backup: Option<String>,
    /// Where recovery stops.
    pub target: Target,
    /// The scratch directory (None: a new private one under the temporary directory).
    pub dest: Option<PathBuf>,
    /// Keep the scratch directory (PostgreSQL is stopped all the same).
    pub keep: bool,
    /// Statements that must succeed; their first value is reported.
    pub queries: Vec<String>,
    /// The database the statements run in.
    pub dbname: String,
    /// The bound of the whole drill.
    pub timeout: Duration,
    /// Run pg_amcheck when the binaries include it.
    pub amcheck: bool,
    /// Who wrote the bucket (the server's restore and its restore_command read it so).
    pub layout: crate::barman::remote::BucketLayout,
}

/// What the run's configuration supplies.
#[derive(Debug, Clone, Default)]
pub struct DrillEnv {
    /// The restore_command base-restore writes (this program's `wal-restore`).
    pub restore_command: String,
    /// `barman.pg_bindir`.
    pub pg_bindir: Option<PathBuf>,
    /// `barman.pg_combinebackup`.
    pub pg_combinebackup: Option<PathBuf>,
    /// How archives Barman encrypted are decrypted.
    pub decrypt: Option<crate::codec::Decryption>,
}

/// One database of the restored cluster.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Database {
    /// Name.
    pub name: String,
    /// `pg_database_size`.
    pub bytes: u64,
}

/// One `--query` and the first value it returned.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QueryResult {
    /// The statement.
    pub sql: String,
    /// The first field of the first row (empty when none).
    pub first_value: String,
}

/// What a drill found; filled as far as it got.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DrillReport {
    /// Server.
    pub server: String,
    /// Who wrote the bucket (`barmans3` or `barman-cloud`).
    pub layout: String,
    /// The backup restored.
    pub backup_id: Option<String>,
    /// True only when every step passed.
    pub success: bool,
    /// The step that failed.
    pub failed_step: Option<String>,
    /// Why, in one line.
    pub error: Option<String>,
    /// The scratch directory.
    pub dest: String,
    /// Whether it was kept.
    pub kept: bool,
    /// Whether the drill got as far as taking it (a drill refused before, e.g. for free
    /// space, made and removed nothing).
    pub claimed: bool,
    /// The binaries used.
    pub pg_bindir: Option<String>,
    /// Download and write of the base backup.
    pub restore_seconds: f64,
    /// From starting PostgreSQL to its promotion.
    pub replay_seconds: f64,
    /// The checks after promotion.
    pub checks_seconds: f64,
    /// The whole drill, the recovery time objective it proves.
    pub total_seconds: f64,
    /// Bytes of the base backup written.
    pub restored_bytes: u64,
    /// Bytes read from the bucket: the base backup and the WAL objects replayed.
    pub bucket_bytes: u64,
    /// The first WAL of the backup.
    pub begin_wal: Option<String>,
    /// The segment replay ended in, and its LSN.
    pub end_segment: Option<String>,
    /// LSN where replay ended.
    pub end_lsn: Option<String>,
    /// Segments replayed (from the backup's first WAL to the end).
    pub segments_replayed: Option<u64>,
    /// The commit time of the last transaction replayed.
    pub restorable_up_to: Option<String>,
    /// The same, in seconds since the epoch.
    pub restorable_up_to_epoch: Option<f64>,
    /// Seconds between that and the end of the drill.
    pub restorable_gap_seconds: Option<f64>,
    /// Every database and its size.
    pub databases: Vec<Database>,
    /// The `--query` results.
    pub queries: Vec<QueryResult>,
    /// `verified` (pg_checksums --check passed on the stopped copy) or `off` (the cluster has
    /// no data checksums).
    pub data_checksums: Option<String>,
    /// `passed` (pg_amcheck --heapallindexed found nothing in any database), `not installed`
    /// (no pg_amcheck beside postgres) or `skipped` (--no-amcheck).
    pub amcheck: Option<String>,
    /// Lines of the restored configuration that were commented out (`file: line`).
    pub neutralised: Vec<String>,
    /// When the drill ended (seconds since the epoch).
    pub finished_at: u64,
}
