//! Command-line definitions (clap derive) and their conversion into a validated
//! [`Invocation`]. clap's types stop here: the application layer only sees the invocation.
//! Nothing here touches the network or the disk.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::barman::observe::admin::Thresholds;
use crate::error::{Error, Result};
use crate::logging::Verbosity;
use crate::store::Location;

mod archive;
mod barman;
mod dplcompat;
mod drill;
pub mod invocation;
mod man;
mod store;
mod sync;
mod values;
mod verify;
mod volume;

use barman::barman_action;
use invocation::{Action, AdminAction, ConfigAction, Invocation, Options};
pub use man::man_pages;
use store::{StoreCommand, store_action};
use values::{parse_age, parse_as_of, parse_poll};

/// Ship Barman and gpbackup backups to S3-compatible object storage and back.
#[derive(Debug, Parser)]
#[command(name = "barmans3", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Configuration file [default: $BARMANS3_CONFIG or /etc/barmans3/barmans3.yaml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Use this store instead of the configured one: s3://bucket/prefix, file:///dir, or the
    /// NAME of a store of the config's stores: (a replica, read alone)
    #[arg(long, global = true, value_name = "URL|NAME")]
    pub store: Option<String>,
    /// More log output: -v debug (each decision), -vv trace (each store request); the default
    /// is info, -q errors only
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors: nothing on success (cron)
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print the run summary as JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// Show a progress bar on stderr even when it is not a terminal
    #[arg(long, global = true, conflicts_with = "no_progress")]
    pub progress: bool,
    /// Never show a progress bar (the default when stderr is not a terminal, e.g. under cron)
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Append one CSV line per store request to FILE (cost accounting; never secrets)
    #[arg(long, global = true, value_name = "FILE")]
    pub request_log: Option<PathBuf>,
    /// Format of --request-log: droplet (Bareos droplet's pricing lines) or extended (CSV with
    /// header, status, attempt and key)
    #[arg(long, global = true, value_name = "FORMAT", default_value = "droplet",
          value_parser = ["droplet", "extended"], requires = "request_log")]
    pub request_log_format: String,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Barman post_backup_script / post_backup_retry_script: queue the backup (never uploads)
    ///
    /// Records the backup Barman just took (every BARMAN_* variable of the hook) as a task file
    /// in the queue (state.queue_dir), in milliseconds; base-sync uploads it later. Install it as
    /// post_backup_retry_script in Barman's server configuration, with the path of the installed
    /// binary (/usr/bin/barmans3 from the packages, /usr/local/bin/barmans3 from the install script;
    /// `command -v barmans3` tells). As a retry hook every failure exits 62 (ABORT_CONTINUE) so
    /// Barman carries on; a hook line naming a path that does not exist exits 127 instead, which
    /// Barman retries for ever: `barman backup` then never returns. `barmans3 config check`,
    /// run as barman, checks the hook lines of Barman's configuration.
    QueueAdd,
    /// Upload queued backups once Barman marks them DONE (cron)
    ///
    /// Works every task of the queue: a backup whose backup.info says DONE is uploaded (data
    /// files, then the manifest, then backup.info last: only then is it complete in the bucket)
    /// under Barman's lock for that backup, verified, and its task moves to .done. A backup still
    /// WAITING_FOR_WALS (a plain `barman backup` whose hook ran before its WALs arrived), or an
    /// incremental backup whose parent is not complete in the bucket yet, stays queued for the
    /// next run; one waiting longer than barman.wait_for_wals_max fails. A failed upload is
    /// retried by later runs, then moved to .error (see queue ls, queue retry). Runs as Barman's
    /// user; one run at a time (a second one exits 75).
    BaseSync,
    /// Upload new WAL files of a Barman server (cron, every few minutes)
    WalSync {
        /// Barman server name
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        server: Option<String>,
        /// Every server in Barman's configuration
        #[arg(long)]
        all: bool,
        /// Compare the whole archive with the bucket, not only the newest WAL directories
        #[arg(long, conflicts_with = "follow")]
        full: bool,
        /// Keep running and ship each WAL as soon as Barman has written it (inotify), instead
        /// of once; stops cleanly on SIGTERM and exits 0 (the barmans3-wal-follow.service unit)
        #[arg(long)]
        follow: bool,
        /// With --follow: also look for new WALs this often without an event
        #[arg(long, value_name = "AGE", default_value = "60s", value_parser = parse_poll, requires = "follow")]
        poll: Duration,
    },
    /// List a server's backups in the bucket
    BaseLs {
        /// Barman server name
        server: String,
        /// Read the bucket as it was at TIME (RFC 3339, e.g. 2026-11-30T12:00:00Z): each key's
        /// newest version not newer than TIME (a versioned bucket only)
        #[arg(long, value_name = "TIME", value_parser = parse_as_of)]
        as_of: Option<std::time::SystemTime>,
        /// Who wrote the bucket: barmans3 (base-sync, wal-sync), or barman-cloud
        /// (barman-cloud-backup and barman-cloud-wal-archive, Barman's S3 backend,
        /// CloudNativePG), which barmans3 reads and never writes
        #[arg(long, value_name = "LAYOUT", value_parser = ["barmans3", "barman-cloud"], default_value = "barmans3")]
        layout: String,
    },
    /// Upload every DONE backup and every WAL, then delete remotely what Barman deleted
    FullSync {
        /// Barman server name
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        server: Option<String>,
        /// Every active server in Barman's configuration (a failing one does not stop the others)
        #[arg(long)]
        all: bool,
        /// Upload only (initial sync); never delete
        #[arg(long)]
        no_delete: bool,
        /// Print what would be deleted, delete nothing
        #[arg(long)]
        dry_run: bool,
        /// Allow more deletions than barman.max_deletes
        #[arg(long)]
        force: bool,
    },
    /// Restore a backup from the bucket into a new data directory, verifying every file
    ///
    /// Restores copies of PGDATA (backup_method = postgres or rsync) and pg_basebackup's tar
    /// format (backup_compression gzip, lz4, zstd or none: data/base.tar[.gz|.lz4|.zst] and one
    /// archive per tablespace, streamed into place without a temporary copy). Before anything is
    /// written the whole plan is checked: only pg_tblspc/<oid> may be a symbolic link, and it is
    /// made to point at the tablespace's new directory. global/pg_control is written last and a
    /// failed restore removes what it wrote, so a directory PostgreSQL could start on exists only
    /// after a complete restore. A PostgreSQL 17+ incremental backup is restored with its whole
    /// chain, each backup verified, and combined by pg_combinebackup (barman.pg_combinebackup).
    /// GPG-encrypted and snapshot backups are refused with a message naming the kind.
    BaseRestore {
        /// Barman server name
        server: String,
        /// Backup id (see base-ls)
        backup_id: String,
        /// New (or empty) data directory
        dest: PathBuf,
        /// Put tablespace OID in DIR [default: DEST_tblspc/OID]
        #[arg(long = "tablespace", value_name = "OID=DIR")]
        tablespaces: Vec<String>,
        /// Write recovery.signal and a restore_command that fetches WALs with wal-restore
        #[arg(long)]
        recovery: bool,
        /// With --recovery: the config the restore_command names [default: this run's]. PostgreSQL
        /// runs it as DEST's owner (postgres), who must be able to read it: a config without
        /// secrets (credentials from s3.profile or the AWS chain), mode 640, group postgres
        #[arg(long, value_name = "FILE", requires = "recovery")]
        recovery_config: Option<PathBuf>,
        /// For backups in GLACIER or DEEP_ARCHIVE: ask the store to restore every archived
        /// object the restore needs for DAYS days, then stop; run again once they are readable
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=3650))]
        request_restore: Option<u32>,
        /// Read the bucket as it was at TIME (RFC 3339, e.g. 2026-11-30T12:00:00Z): each key's
        /// newest version not newer than TIME (a versioned bucket only);
        /// with --recovery, the restore_command reads WALs as of TIME too
        #[arg(long, value_name = "TIME", value_parser = parse_as_of)]
        as_of: Option<std::time::SystemTime>,
        /// Who wrote the bucket: barmans3 (base-sync, wal-sync), or barman-cloud
        /// (barman-cloud-backup and barman-cloud-wal-archive, Barman's S3 backend,
        /// CloudNativePG), which barmans3 reads and never writes
        #[arg(long, value_name = "LAYOUT", value_parser = ["barmans3", "barman-cloud"], default_value = "barmans3")]
        layout: String,
    },
    /// Fetch one WAL file: restore_command = 'barmans3 wal-restore SERVER %f %p'
    ///
    /// Reads every WAL Barman writes: gzip, pigz, bzip2, xz, zstd, lz4, snappy and uncompressed
    /// segments, closed .partial segments (served for a missing segment), backup labels and
    /// .history files; Barman's custom compression through barman.custom_decompression and GPG
    /// encryption through barman.decryption_command. A segment is handed over only after its
    /// first page proves it is that segment; %p is written atomically.
    ///
    /// barmans3-wal-restore, installed beside barmans3, takes the same arguments without the
    /// word wal-restore and is what base-restore --recovery writes: it serves a segment the
    /// prefetcher has spooled in about half the time (it links no store client) and runs
    /// barmans3 wal-restore for everything else.
    ///
    /// Exit status: 0, the file is at %p. 1, the file is not in the bucket under any name it
    /// may have (PostgreSQL then ends recovery). 200, anything else: network or store errors
    /// after retries, checksum or decoding errors, a gap in the archive (a later segment of the
    /// timeline is there), a bad configuration or command line. PostgreSQL treats a status
    /// above 125 as fatal and stops recovery instead of promoting: fix the cause and start it
    /// again, and recovery continues where it stopped.
    WalRestore {
        /// Barman server name
        server: String,
        /// WAL file name (%f)
        wal_name: String,
        /// Destination path (%p)
        dest: PathBuf,
        /// Read the bucket as it was at TIME (RFC 3339, e.g. 2026-11-30T12:00:00Z): each key's
        /// newest version not newer than TIME (a versioned bucket only)
        #[arg(long, value_name = "TIME", value_parser = parse_as_of)]
        as_of: Option<std::time::SystemTime>,
        /// Who wrote the bucket: barmans3 (base-sync, wal-sync), or barman-cloud
        /// (barman-cloud-backup and barman-cloud-wal-archive, Barman's S3 backend,
        /// CloudNativePG), which barmans3 reads and never writes
        #[arg(long, value_name = "LAYOUT", value_parser = ["barmans3", "barman-cloud"], default_value = "barmans3")]
        layout: String,
    },
    /// Copy complete backups and their WAL files to a second store of the config (stores:)
    ///
    /// Reads the main store, never Barman's directories: every complete backup (its files,
    /// then our manifest, then backup.info last, so the replica never lists a backup it does not
    /// hold whole) and the WAL files from the first WAL of the oldest backup copied on, each
    /// object verified against the manifest's CRC32C (or the main store's own checksum). The
    /// copy is server-side when both stores share endpoint and credentials, else streamed
    /// through this host with bounded memory. Resumable and idempotent: a second run sends
    /// nothing. Never deletes on the replica. Run it from cron after wal-sync.
    Replicate {
        /// Name of the target store under stores: in the config
        #[arg(long, value_name = "STORE")]
        to: String,
        /// Barman server name
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        server: Option<String>,
        /// Every server found in the main store
        #[arg(long)]
        all: bool,
        /// Only backups with this id or a later one (and the WAL files they need, and newer)
        #[arg(long, value_name = "ID")]
        since: Option<String>,
        /// Then delete from the replica what the main store no longer has, under full-sync's
        /// rules (min_remote_backups, max_deletes) and the replica's own Object Lock
        #[arg(long)]
        prune: bool,
        /// With --prune: allow more deletions than barman.max_deletes
        #[arg(long, requires = "prune")]
        force: bool,
    },
    /// Rebuild a lost Barman server's directory from the bucket (backups, WAL archive), then
    /// run `barman rebuild-xlogdb SERVER`
    CatalogRestore {
        /// Barman server name
        server: String,
        /// Only this backup (repeatable); WALs from the oldest one's first WAL on
        #[arg(long = "backup", value_name = "ID")]
        backups: Vec<String>,
        /// Only WALs from this backup's first WAL, or from this WAL file, on
        #[arg(long, value_name = "ID|WAL")]
        wals_since: Option<String>,
        /// Where backup.info goes: meta (Barman 3.13.2 and later) or base [default: what the
        /// installed barman reads]. barman-cloud is refused: Barman 3.18 and later reads a
        /// barman-cloud bucket's catalog itself (basebackups_directory and wals_directory set
        /// to the bucket's URL, active = false)
        #[arg(long, value_parser = ["meta", "base", "barman-cloud"])]
        layout: Option<String>,
        /// Read the bucket as it was at TIME (RFC 3339, e.g. 2026-11-30T12:00:00Z): each key's
        /// newest version not newer than TIME (a versioned bucket only)
        #[arg(long, value_name = "TIME", value_parser = parse_as_of)]
        as_of: Option<std::time::SystemTime>,
    },
    Drill(drill::DrillArgs),
    /// The background prefetcher wal-restore starts during recovery (not for direct use)
    #[command(hide = true)]
    WalPrefetch {
        /// Barman server name
        server: String,
        /// The spool directory wal-restore chose
        #[arg(long)]
        spool: PathBuf,
        /// wal-restore's --as-of
        #[arg(long, value_name = "TIME", value_parser = parse_as_of)]
        as_of: Option<std::time::SystemTime>,
        /// Who wrote the bucket
        #[arg(long, value_parser = ["barmans3", "barman-cloud"], default_value = "barmans3")]
        layout: String,
    },
    /// Queue, running tasks, WAL shipping lag per server, last successful syncs
    Status {
        /// Write the status as a node_exporter textfile to FILE (atomically, mode 644) instead
        /// of printing it: WAL lag and pending files per server, last good base-sync and
        /// wal-sync, queue tasks by state, bytes and requests of the last good base-sync and
        /// wal-sync, problems found by the last verify and verify-wal (see README, Metrics)
        #[arg(long, value_name = "FILE")]
        prometheus: Option<PathBuf>,
        /// Forget the wal-sync --follow of SERVER that stopped without cleaning up (killed, or
        /// its host crashed), so check stops warning; refused while it runs
        #[arg(long, value_name = "SERVER", conflicts_with = "prometheus")]
        forget_follower: Option<String>,
    },
    /// Monitoring check (Nagios plugin convention): exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN
    Check {
        /// WARNING when a WAL has waited longer than this to be shipped
        #[arg(long, default_value = "30m", value_parser = parse_age)]
        wal_warning: Duration,
        /// CRITICAL when a WAL has waited longer than this to be shipped
        #[arg(long, default_value = "2h", value_parser = parse_age)]
        wal_critical: Duration,
        /// CRITICAL when a task has been running longer than this
        #[arg(long, default_value = "12h", value_parser = parse_age)]
        stuck_after: Duration,
        /// Answer UNKNOWN if the check cannot tell within this time (NRPE gives up at 10s)
        #[arg(long, default_value = "10s", value_parser = parse_age)]
        timeout: Duration,
    },
    Sync(sync::SyncArgs),
    Verify(verify::VerifyArgs),
    VerifyWal(verify::VerifyWalArgs),
    /// Archive cold files of a Gluster brick for cloudsync (uploaded, verified, then truncated)
    Archive(archive::ArchiveArgs),
    /// Bareos droplet-compatible chunked volumes: put, get, ls, status, rm
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Inspect and manage the base-backup queue
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Print shell completions (bash, zsh, fish, elvish, powershell)
    Completions {
        /// Shell
        shell: clap_complete::Shell,
    },
    /// Inspect the configuration
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Object-level operations on the store (verified, parallel, resumable)
    #[command(subcommand)]
    Store(StoreCommand),
    /// The gpbackup storage plugin, same as the gpbackup_s3_plugin binary:
    /// gp-plugin <command> <config.yaml> [args...]
    #[command(disable_help_flag = true, disable_version_flag = true)]
    GpPlugin {
        /// Plugin command and its arguments, passed through as gpbackup sends them
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
}

/// `config` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config, reach the bucket, print the effective config (secrets redacted)
    Check {
        /// Prove that s3.object_lock holds: write a small canary object (one fixed key, the
        /// shortest retention the store accepts) with the configured lock, then try to DELETE
        /// that version, shorten its retain-until date and (governance) remove its lock without
        /// the bypass header. Prints `lock holds`, or names what the store allowed and exits 1
        #[arg(long)]
        lock_proof: bool,
    },
    /// Write a commented example config (to stdout, or to FILE with mode 600)
    Init {
        /// Write here instead of stdout (refuses to overwrite)
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Convert a BarmanS3 barmans3.conf into this tool's YAML (stdout) and explain the changes
    ImportLegacy {
        /// The BarmanS3 configuration file
        file: PathBuf,
    },
}

/// `queue` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum QueueCommand {
    /// List tasks with state, age, attempts and last error
    Ls,
    /// Put a failed task back to .run for the next base-sync
    Retry {
        /// Backup id
        backup_id: String,
        /// Queue it even when the backup is already complete in the bucket (uploads it again)
        #[arg(long)]
        force: bool,
    },
    /// Delete .done tasks older than AGE (e.g. 30d)
    Prune {
        /// Age
        #[arg(long, value_parser = parse_age)]
        older_than: Duration,
    },
}

impl Command {
    /// The `--as-of` of the commands that read the bucket as it was.
    fn as_of(&self) -> Option<std::time::SystemTime> {
        match self {
            Command::BaseLs { as_of, .. }
            | Command::BaseRestore { as_of, .. }
            | Command::WalRestore { as_of, .. }
            | Command::CatalogRestore { as_of, .. }
            | Command::WalPrefetch { as_of, .. } => *as_of,
            Command::Verify(a) => a.as_of,
            _ => None,
        }
    }
}

/// Why the command line did not yield an invocation.
#[derive(Debug)]
pub enum Rejected {
    /// clap's own outcome (usage error, `--help`, `--version`): print it, exit with its code.
    Clap(clap::Error),
    /// A value clap accepted but that is not valid.
    Invalid(Error),
}

impl Rejected {
    /// Prints the outcome the way the user expects (help on stdout, errors on stderr).
    pub fn print(&self) {
        match self {
            Rejected::Clap(e) => {
                let _ = e.print();
            }
            Rejected::Invalid(e) => eprintln!("barmans3: {}", e.one_line()),
        }
    }

    /// The exit code clap or the error asks for (0 for `--help`).
    pub fn exit_code(&self) -> i32 {
        match self {
            Rejected::Clap(e) => e.exit_code(),
            Rejected::Invalid(e) => i32::from(e.exit().code()),
        }
    }
}

/// Parses and validates a command line (`args[0]` is the program).
pub fn parse(args: Vec<OsString>) -> std::result::Result<Invocation, Rejected> {
    let cli = Cli::try_parse_from(args).map_err(Rejected::Clap)?;
    Invocation::try_from(cli).map_err(Rejected::Invalid)
}

/// The subcommand a command line names, parsed or not: the first argument that is not an
/// option or an option's value. Lets the caller pick the exit code of a rejected command line
/// (a mistyped `restore_command` must abort recovery; a retry hook must exit 62).
pub fn subcommand_name(args: &[OsString]) -> Option<String> {
    let mut it = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" | "--store" => {
                it.next();
            }
            s if s.starts_with('-') => {}
            s => return Some(s.to_string()),
        }
    }
    None
}

impl TryFrom<Cli> for Invocation {
    type Error = Error;

    fn try_from(cli: Cli) -> Result<Invocation> {
        let mut options = cli.global.options()?;
        options.as_of = cli.command.as_of();
        let action = match cli.command {
            Command::GpPlugin { args } => Action::GpPlugin(args),
            Command::QueueAdd => Action::QueueAdd,
            Command::Completions { shell } => {
                use clap::CommandFactory;
                let mut out = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "barmans3", &mut out);
                Action::Completions(out)
            }
            Command::Config(c) => Action::Config(match c {
                ConfigCommand::Check { lock_proof } => ConfigAction::Check { lock_proof },
                ConfigCommand::Init { output } => ConfigAction::Init { output },
                ConfigCommand::ImportLegacy { file } => ConfigAction::ImportLegacy { file },
            }),
            Command::Store(c) => Action::Store(store_action(c)),
            Command::Sync(a) => Action::Sync(a.validate()?),
            Command::Archive(a) => Action::Archive(a.validate()?),
            Command::Volume(c) => Action::Volume(c.validate()?),
            Command::Status {
                forget_follower: Some(server),
                ..
            } => Action::Admin(AdminAction::ForgetFollower(server)),
            Command::Status { prometheus, .. } => Action::Admin(AdminAction::Status { prometheus }),
            Command::Verify(a) => Action::Verify(a.validate()?),
            Command::VerifyWal(a) => Action::Verify(a.validate()),
            Command::Check {
                wal_warning,
                wal_critical,
                stuck_after,
                timeout,
            } => Action::Check(
                Thresholds {
                    wal_warning,
                    wal_critical,
                    stuck: stuck_after,
                    // barman.replica_max_lag replaces it once the config is read.
                    replica_max_lag: Duration::from_secs(86400),
                },
                timeout,
            ),
            Command::Queue(QueueCommand::Ls) => Action::Admin(AdminAction::QueueLs),
            Command::Queue(QueueCommand::Retry { backup_id, force }) => {
                Action::Admin(AdminAction::QueueRetry(backup_id, force))
            }
            Command::Queue(QueueCommand::Prune { older_than }) => {
                Action::Admin(AdminAction::QueuePrune(older_than))
            }
            other => Action::Barman(barman_action(other)?),
        };
        Ok(Invocation { options, action })
    }
}

impl Global {
    fn options(self) -> Result<Options> {
        let progress = self.show_progress();
        let (store, store_name) = match self.store {
            // A name of the config's stores: (never a URL, which has a scheme).
            Some(n) if !n.contains("://") && crate::config::valid_store_name(&n) => (None, Some(n)),
            other => (
                other
                    .map(|u| {
                        Location::parse(&u)
                            .map(|loc| (loc, u))
                            .map_err(|e| Error::Usage(format!("--store: {e}")))
                    })
                    .transpose()?,
                None,
            ),
        };
        let request_log = self
            .request_log
            .map(|path| crate::store::reqlog::RequestLog {
                path,
                format: match self.request_log_format.as_str() {
                    "extended" => crate::store::reqlog::LogFormat::Extended,
                    _ => crate::store::reqlog::LogFormat::Droplet,
                },
            });
        Ok(Options {
            request_log,
            as_of: None,
            config: self.config,
            store,
            store_name,
            verbosity: match (self.quiet, self.verbose) {
                (true, _) => Verbosity::Quiet,
                (false, 0) => Verbosity::Normal,
                (false, 1) => Verbosity::Verbose,
                _ => Verbosity::Trace,
            },
            json: self.json,
            progress,
        })
    }

    /// Whether to draw progress bars: `--progress`, or stderr is a terminal and not `--no-progress`.
    fn show_progress(&self) -> bool {
        use std::io::IsTerminal;
        self.progress
            || (!self.no_progress
                && !self.quiet
                && std::io::stderr().is_terminal()
                && std::env::var("TERM").map_or(true, |t| t != "dumb"))
    }
}

#[cfg(test)]
mod tests;
