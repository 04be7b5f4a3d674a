//! What the command line asked for, validated: what `cli` hands out (built from clap's parse)
//! and the application layer runs. Nothing here knows clap; every value is already parsed (ids
//! checked, durations and tablespace maps built).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::barman::observe::admin::Thresholds;
use crate::barman::ship::fullsync::FullSyncOptions;
use crate::logging::Verbosity;
use crate::store::Location;

/// A complete, validated command line.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Options every command takes.
    pub options: Options,
    /// What to do.
    pub action: Action,
}

/// Global options.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--store URL`, parsed, with the text as given (for the restore_command we write).
    pub store: Option<(Location, String)>,
    /// `--store NAME`: a store of the config's `stores:` in the main store's place.
    pub store_name: Option<String>,
    /// Log level.
    pub verbosity: Verbosity,
    /// `--json`: the run summary (and reports) as JSON on stdout.
    pub json: bool,
    /// Draw progress bars on stderr.
    pub progress: bool,
    /// `--request-log FILE [--request-log-format F]`.
    pub request_log: Option<crate::store::reqlog::RequestLog>,
    /// `--as-of TIME` of the commands that read the bucket as it was.
    pub as_of: Option<std::time::SystemTime>,
}

/// Every command.
#[derive(Debug, Clone)]
pub enum Action {
    /// The gpbackup plugin, argv as gpbackup sends it (without the program name).
    GpPlugin(Vec<String>),
    /// Barman's post-backup hook.
    QueueAdd,
    /// The Barman sync and restore commands.
    Barman(BarmanAction),
    /// Operator views and queue administration.
    Admin(AdminAction),
    /// The monitoring check, with its deadline.
    Check(Thresholds, Duration),
    /// Object-level commands.
    Store(StoreAction),
    /// `sync SRC_DIR KEY_PREFIX`.
    Sync(crate::filesync::SyncOptions),
    /// `archive BRICK --mount MNT`.
    Archive(crate::gluster::ArchiveOptions),
    /// `volume put|get|ls|status|rm`.
    Volume(crate::volume::VolumeAction),
    /// `verify SERVER [ID…]` and `verify-wal SERVER`.
    Verify(crate::barman::observe::verify::VerifyRequest),
    /// Configuration helpers.
    Config(ConfigAction),
    /// A shell completion script, already rendered.
    Completions(Vec<u8>),
}

/// Which Barman servers a command covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Servers {
    /// One named server.
    One(String),
    /// Every active server in Barman's configuration.
    All,
}

/// The Barman commands.
#[derive(Debug, Clone)]
pub enum BarmanAction {
    /// `base-sync`.
    BaseSync,
    /// `wal-sync SERVER|--all [--full]`.
    WalSync {
        /// Servers to sync.
        servers: Servers,
        /// Compare the whole archive with the bucket.
        full: bool,
        /// `--follow`: keep running and ship WALs as they appear.
        follow: Option<crate::barman::ship::follow::FollowOptions>,
    },
    /// `replicate --to STORE SERVER|--all [--since ID]`.
    Replicate {
        /// The target store's name (`stores:`).
        to: String,
        /// Servers to replicate.
        servers: Servers,
        /// Options.
        opts: crate::barman::replica::ReplicateOptions,
    },
    /// `base-ls SERVER`.
    BaseLs {
        /// Server.
        server: String,
        /// Who wrote the bucket.
        layout: crate::barman::remote::BucketLayout,
    },
    /// `full-sync SERVER|--all`.
    FullSync {
        /// Servers to sync.
        servers: Servers,
        /// Options.
        opts: FullSyncOptions,
    },
    /// `base-restore SERVER ID DEST`.
    BaseRestore {
        /// Server.
        server: String,
        /// Backup id (checked: `YYYYMMDDTHHMMSS`).
        id: String,
        /// Destination data directory.
        dest: PathBuf,
        /// Tablespace oid → directory.
        tablespaces: BTreeMap<String, PathBuf>,
        /// Write recovery.signal and a restore_command.
        recovery: bool,
        /// The config the restore_command names, instead of this run's.
        recovery_config: Option<PathBuf>,
        /// `--request-restore DAYS`.
        request_restore: Option<u32>,
        /// Who wrote the bucket.
        layout: crate::barman::remote::BucketLayout,
    },
    /// `catalog-restore SERVER`.
    CatalogRestore {
        /// Server.
        server: String,
        /// What to rebuild.
        opts: crate::barman::recover::catalog::CatalogOptions,
    },
    /// The background prefetcher of `wal-restore`.
    WalPrefetch {
        /// Server.
        server: String,
        /// The spool directory.
        spool: PathBuf,
        /// Who wrote the bucket.
        layout: crate::barman::remote::BucketLayout,
    },
    /// `drill SERVER`.
    Drill {
        /// Server.
        server: String,
        /// What to restore and check.
        opts: crate::barman::drill::DrillOptions,
        /// `--prometheus FILE`.
        prometheus: Option<PathBuf>,
    },
    /// `wal-restore SERVER %f %p`.
    WalRestore {
        /// Server.
        server: String,
        /// WAL file name (checked).
        name: String,
        /// Destination path.
        dest: PathBuf,
        /// Who wrote the bucket.
        layout: crate::barman::remote::BucketLayout,
    },
}

/// Operator commands.
#[derive(Debug, Clone)]
pub enum AdminAction {
    /// `status [--prometheus FILE]`.
    Status {
        /// Write a node_exporter textfile here instead of printing.
        prometheus: Option<PathBuf>,
    },
    /// `status --forget-follower SERVER`.
    ForgetFollower(String),
    /// `queue ls`.
    QueueLs,
    /// `queue retry ID`.
    QueueRetry(String, bool),
    /// `queue prune --older-than AGE`.
    QueuePrune(Duration),
}

/// Where `store put` reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Standard input.
    Stdin,
    /// A local file.
    File(PathBuf),
}

/// Where `store get` writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// Standard output.
    Stdout,
    /// A local file (written atomically).
    File(PathBuf),
}

/// Object-level commands.
#[derive(Debug, Clone)]
pub enum StoreAction {
    /// `store put`.
    Put {
        /// What to upload.
        source: Source,
        /// Key relative to the prefix.
        key: String,
    },
    /// `store get`.
    Get {
        /// Key relative to the prefix.
        key: String,
        /// Where to write.
        dest: Sink,
        /// The stored bytes as they are (no decryption).
        raw: bool,
    },
    /// `store ls`.
    Ls {
        /// Key prefix relative to the configured prefix.
        prefix: String,
        /// Print whole keys (with the configured prefix) rather than keys as `get` takes them.
        absolute: bool,
    },
    /// `store uploads`.
    Uploads {
        /// Abort uploads older than this.
        abort_older_than: Option<Duration>,
    },
}

/// Configuration helpers.
#[derive(Debug, Clone)]
pub enum ConfigAction {
    /// `config check [--lock-proof]`.
    Check {
        /// Prove that the configured Object Lock holds.
        lock_proof: bool,
    },
    /// `config init [--output FILE]`.
    Init {
        /// Write here instead of stdout.
        output: Option<PathBuf>,
    },
    /// `config import-legacy FILE`.
    ImportLegacy {
        /// The BarmanS3 config.
        file: PathBuf,
    },
}
