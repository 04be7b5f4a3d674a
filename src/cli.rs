//! Command-line definitions (clap derive) and their conversion into validated requests.
//! Nothing here touches the network or the disk beyond reading the config file.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, PermissionPolicy, StoreLocation};
use crate::error::{Error, Result};

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
pub struct Global {
    /// Configuration file [default: $BARMANS3_CONFIG or /etc/barmans3/barmans3.yaml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Use this store instead of the configured one (s3://bucket/prefix or file:///dir)
    #[arg(long, global = true, value_name = "URL")]
    pub store: Option<String>,
    /// More log output (-v info, -vv debug)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors
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
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Barman post_backup_script / post_backup_retry_script: queue the backup (never uploads)
    QueueAdd,
    /// Upload queued backups once Barman marks them DONE (cron)
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
        #[arg(long)]
        full: bool,
    },
    /// List a server's backups in the bucket
    BaseLs {
        /// Barman server name
        server: String,
    },
    /// Upload every DONE backup and every WAL, then delete remotely what Barman deleted
    FullSync {
        /// Barman server name
        server: String,
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
    },
    /// Fetch one WAL file: restore_command = 'barmans3 wal-restore SERVER %f %p'
    WalRestore {
        /// Barman server name
        server: String,
        /// WAL file name (%f)
        wal_name: String,
        /// Destination path (%p)
        dest: PathBuf,
    },
    /// Queue, running tasks, WAL shipping lag per server, last successful syncs
    Status,
    /// Monitoring check (Nagios plugin convention): exit 0 OK, 1 WARNING, 2 CRITICAL
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
    },
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
    Check,
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
    },
    /// Delete .done tasks older than AGE (e.g. 30d)
    Prune {
        /// Age
        #[arg(long, value_parser = parse_age)]
        older_than: Duration,
    },
}

/// Man pages for the binary and every subcommand: (file name, roff text).
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, name: String, out: &mut Vec<(String, Vec<u8>)>) {
        let cmd = cmd.clone().name(name.clone()).display_name(name.clone());
        let mut buf = Vec::new();
        if clap_mangen::Man::new(cmd.clone()).render(&mut buf).is_ok() {
            out.push((format!("{name}.1"), buf));
        }
        for sub in cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            walk(sub, format!("{name}-{}", sub.get_name()), out);
        }
    }
    let mut out = Vec::new();
    walk(&Cli::command(), "barmans3".into(), &mut out);
    out
}

/// `store` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum StoreCommand {
    /// Upload a local file (or - for stdin) to KEY under the configured prefix
    Put {
        /// Local file, or - for standard input
        source: String,
        /// Object key, relative to the prefix
        key: String,
    },
    /// Download KEY to a local file (or - for stdout), verified
    Get {
        /// Object key, relative to the prefix
        key: String,
        /// Local file, or - for standard output
        dest: String,
    },
    /// List objects under a prefix
    Ls {
        /// Key prefix, relative to the configured prefix
        #[arg(default_value = "")]
        prefix: String,
    },
    /// List incomplete multipart uploads; with --abort-older-than, abort the stale ones
    Uploads {
        /// Abort uploads started longer ago than this (e.g. 24h)
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        abort_older_than: Option<Duration>,
    },
}

fn parse_age(s: &str) -> std::result::Result<Duration, String> {
    crate::units::parse_duration(s)
}

impl Global {
    /// Whether to draw progress bars: `--progress`, or stderr is a terminal and not `--no-progress`.
    pub fn show_progress(&self) -> bool {
        use std::io::IsTerminal;
        self.progress
            || (!self.no_progress
                && !self.quiet
                && std::io::stderr().is_terminal()
                && std::env::var("TERM").map_or(true, |t| t != "dumb"))
    }

    /// Loads and validates the configuration these options point at.
    pub fn load_config(&self) -> Result<Config> {
        let path = Config::resolve_path(self.config.as_deref());
        let explicit =
            self.config.is_some() || std::env::var_os(crate::config::CONFIG_ENV).is_some();
        let mut cfg = match Config::load(&path, PermissionPolicy::Refuse) {
            // With --store and no config anywhere, run on defaults: the demo and first steps.
            Err(Error::Config(_)) if self.store.is_some() && !explicit && !path.exists() => {
                let loc = self
                    .store_location()?
                    .ok_or_else(|| Error::Usage("--store missing".into()))?;
                Config::for_location(loc)
            }
            other => other?,
        };
        if let Some(loc) = self.store_location()? {
            cfg.location = loc;
        }
        Ok(cfg)
    }

    fn store_location(&self) -> Result<Option<StoreLocation>> {
        self.store
            .as_deref()
            .map(|u| StoreLocation::parse(u).map_err(|e| Error::Usage(format!("--store: {e}"))))
            .transpose()
    }
}
