//! The barmans3 YAML configuration: file model, defaults, validation, permission check, and
//! the redacted view printed by `config check`.
//!
//! The file is parsed strictly (unknown keys are errors) into a raw model of strings, then
//! validated into [`Config`], whose fields are typed and whose errors name the key. Every YAML
//! call of the product's own config lives here, so the YAML crate stays swappable.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use encryption::{EncryptionConfig, SseCustomerConfig, keys_from_files};
pub use raw::valid_store_name;

use crate::error::{Error, Result, one_line};
use crate::store::Location;
use crate::store::s3::S3Options;
use crate::transfer;

/// Default location of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/barmans3/barmans3.yaml";
/// Environment variable that overrides the configuration path.
pub const CONFIG_ENV: &str = "BARMANS3_CONFIG";

/// barmans3's own directories (`state:`), shared by every command family: the state, the task
/// queue and the optional log directory.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// Persistent state (WAL sync high-water marks, locks, upload journals, caches).
    pub dir: PathBuf,
    /// Persistent task queue directory.
    pub queue_dir: PathBuf,
    /// Optional log directory (a file per run, reopened each run).
    pub log_dir: Option<PathBuf>,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: PathBuf::from("/var/lib/barmans3/state"),
            queue_dir: PathBuf::from("/var/lib/barmans3/queue"),
            log_dir: None,
        }
    }
}

/// The Barman side of the configuration.
#[derive(Debug, Clone)]
pub struct BarmanConfig {
    /// Barman's main configuration file.
    pub config: PathBuf,
    /// Remote DONE backups `full-sync` always keeps.
    pub min_remote_backups: usize,
    /// Remote backups one `full-sync` may delete without `--force`.
    pub max_deletes: usize,
    /// How long a `WAITING_FOR_WALS` backup may wait before its task goes to `.error`.
    pub wait_for_wals_max: Duration,
    /// How often `wal-sync` re-lists the whole remote archive (besides `--full`).
    pub wal_reconcile_every: Duration,
    /// How long a backup may be DONE in Barman and absent from the bucket before `check` warns
    /// (its hook failed, so only the nightly full-sync would upload it).
    pub hook_grace: Duration,
    /// How old the last good drill of a server may be before `check` warns.
    pub drill_max_age: Duration,
    /// Decompresses WALs of Barman's `custom` compression (stdin to stdout, no shell).
    pub custom_decompression: Option<crate::codec::Filter>,
    /// Magic bytes of the custom compression (Barman's `custom_compression_magic`).
    pub custom_compression_magic: Option<Vec<u8>>,
    /// Decrypts GPG-encrypted WALs (stdin to stdout, no shell).
    pub decryption_command: Option<crate::codec::Filter>,
    /// How long `decryption_command` or `custom_decompression` may run on one file.
    pub command_timeout: Duration,
    /// Segments `wal-restore` fetches ahead during recovery (0: none).
    pub wal_prefetch: usize,
    /// Where prefetched segments wait (default: `.barmans3-spool` in `pg_wal`).
    pub wal_spool_dir: Option<PathBuf>,
    /// Bytes the spool may hold.
    pub wal_spool_bytes: u64,
    /// pg_combinebackup for restoring incremental backups (default: found by version, then PATH).
    pub pg_combinebackup: Option<PathBuf>,
    /// PostgreSQL's server binaries for `drill` (default: found by the backup's major version,
    /// as pg_combinebackup is).
    pub pg_bindir: Option<PathBuf>,
    /// Where the chain of an incremental backup is staged before it is combined (default: beside
    /// the destination).
    pub restore_staging_dir: Option<PathBuf>,
    /// `base-sync` sends backup files up to this size in one PUT (parts above `part_size`
    /// otherwise): such objects are what the next backup can copy server-side by reference.
    pub one_put_max: u64,
    /// How far a replica (`stores:`) may fall behind the main store before `check` warns.
    pub replica_max_lag: Duration,
}

impl Default for BarmanConfig {
    fn default() -> Self {
        BarmanConfig {
            config: PathBuf::from("/etc/barman.conf"),
            min_remote_backups: 1,
            max_deletes: 3,
            wait_for_wals_max: Duration::from_secs(7 * 86400),
            wal_reconcile_every: Duration::from_secs(86400),
            hook_grace: Duration::from_secs(2 * 3600),
            drill_max_age: Duration::from_secs(8 * 86400),
            custom_decompression: None,
            custom_compression_magic: None,
            decryption_command: None,
            command_timeout: crate::codec::DEFAULT_FILTER_TIMEOUT,
            wal_prefetch: 8,
            wal_spool_dir: None,
            wal_spool_bytes: 1 << 30,
            pg_combinebackup: None,
            pg_bindir: None,
            restore_staging_dir: None,
            // PostgreSQL's segment size: every data file of a default build.
            one_put_max: 1 << 30,
            replica_max_lag: Duration::from_secs(86400),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    /// Where the objects go.
    pub location: Location,
    /// S3 connection settings (used when `location` is S3).
    pub s3: S3Options,
    /// Engine settings.
    pub transfer: transfer::Settings,
    /// barmans3's own directories.
    pub state: StateConfig,
    /// Barman settings.
    pub barman: BarmanConfig,
    /// Client-side encryption (`encryption:`), when on.
    pub encryption: Option<EncryptionConfig>,
    /// SSE-C (`s3.sse: customer`), when on. The S3 backend's own settings take it over once it
    /// sends the SSE-C headers.
    pub sse_customer: Option<SseCustomerConfig>,
    /// Further stores by name (`stores:`): where `replicate --to NAME` copies, and what
    /// `--store NAME` reads instead of the main store.
    pub stores: BTreeMap<String, StoreConfig>,
}

/// One named store of `stores:`: its place, its connection and its engine settings, in the
/// same types as the main store's.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Where its objects are.
    pub location: Location,
    /// How to reach it (credentials, storage classes, Object Lock).
    pub s3: S3Options,
    /// Engine settings (part size, concurrency, attempts, checksums).
    pub transfer: transfer::Settings,
    /// SSE-C, when this store uses it.
    pub sse_customer: Option<SseCustomerConfig>,
}

/// How strictly to treat a config file readable by others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermissionPolicy {
    /// Refuse (the `.pgpass` rule). The default for barmans3.
    Refuse,
    /// Only warn (gpbackup plugin mode: gpbackup copies the file itself).
    Warn,
}

/// The object `s3.request_checksum: auto` writes and deletes, under the configured prefix.
const PROBE_KEY: &str = ".barmans3-checksum-probe";

impl Config {
    /// What identifies the store for the state kept about it.
    pub fn store_id(&self) -> String {
        match &self.location {
            crate::store::Location::S3 { bucket, prefix } => format!(
                "s3 {} {bucket}/{prefix}",
                self.s3.endpoint.as_deref().unwrap_or("aws")
            ),
            crate::store::Location::Local { root } => format!("file {}", root.display()),
        }
    }

    /// Where `s3.request_checksum: auto` caches its answer for this store, and the key it
    /// probes.
    pub fn checksum_probe(&self) -> crate::transfer::probe::ChecksumProbe {
        crate::transfer::probe::ChecksumProbe {
            cache: self.state.dir.join(format!(
                "checksum-{:08x}.json",
                crate::checksum::crc32c(self.store_id().as_bytes())
            )),
            // One fixed key, not one per run: a probe killed between its PUT and its DELETE
            // leaves this object, and the next run (which probes again, the answer being cached
            // only after the delete) overwrites and removes it. Concurrent probes only overwrite
            // each other's identical bytes.
            key: crate::store::join_key(self.location.prefix(), PROBE_KEY),
        }
    }

    /// Resolves the config path: flag, then `BARMANS3_CONFIG`, then the default.
    pub fn resolve_path(flag: Option<&Path>) -> PathBuf {
        if let Some(p) = flag {
            return p.to_path_buf();
        }
        match std::env::var_os(CONFIG_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(DEFAULT_CONFIG_PATH),
        }
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path, policy: PermissionPolicy) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "create it (barmans3 config init --output FILE writes a commented one) or pass --config / BARMANS3_CONFIG"
                }
                std::io::ErrorKind::PermissionDenied => {
                    "make it readable by the user running barmans3"
                }
                _ => "check the file",
            };
            Error::Config(format!(
                "cannot read config file {}: {}; {hint}",
                path.display(),
                crate::error::reason(&e)
            ))
        })?;
        let cfg = Self::parse(&text, Some(path))?;
        if cfg.s3.credentials.is_some() {
            check_permissions(path, policy)?;
        }
        Ok(cfg)
    }

    /// Parses and validates YAML text. `path` only labels the errors.
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Self> {
        let label = path.unwrap_or(Path::new("<config>"));
        let raw: raw::RawConfig = if text.trim().is_empty() {
            raw::RawConfig::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| {
                Error::Config(format!(
                    "{}: invalid YAML: {}",
                    label.display(),
                    one_line(&e.to_string())
                ))
            })?
        };
        raw::validate(raw, path)
    }

    /// A config with defaults pointing at the given store and nothing else (demo, tests).
    pub fn for_location(location: Location) -> Self {
        Config {
            source: None,
            location,
            s3: S3Options::default(),
            transfer: transfer::Settings::default(),
            state: StateConfig::default(),
            barman: BarmanConfig::default(),
            encryption: None,
            sse_customer: None,
            stores: BTreeMap::new(),
        }
    }

    /// The named store of `stores:`.
    pub fn named_store(&self, name: &str) -> Result<&StoreConfig> {
        self.stores.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.stores.keys().map(String::as_str).collect();
            Error::Config(format!(
                "no store {name:?} in stores: of {}; {}",
                self.source
                    .as_deref()
                    .unwrap_or(Path::new("the configuration"))
                    .display(),
                if known.is_empty() {
                    "add it under stores: (see README, Replication)".to_string()
                } else {
                    format!("known: {}", known.join(", "))
                }
            ))
        })
    }

    /// This configuration with the named store in the main store's place: what `--store NAME`
    /// runs on (a replica read alone).
    pub fn with_store(&self, name: &str) -> Result<Config> {
        let s = self.named_store(name)?.clone();
        Ok(Config {
            location: s.location,
            s3: s.s3,
            transfer: s.transfer,
            sse_customer: s.sse_customer,
            ..self.clone()
        })
    }

    /// The effective configuration as YAML, secrets replaced by `<redacted>`: the file model
    /// filled from the validated values, so every key is named in one place.
    pub fn to_redacted_yaml(&self) -> String {
        serde_yaml_ng::to_string(&raw::RawConfig::effective(self)).unwrap_or_default()
    }
}

/// Refuses (or warns about) a secrets-holding file that group or others can read.
pub fn check_permissions(path: &Path, policy: PermissionPolicy) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::Config(format!(
            "cannot stat {}: {}",
            path.display(),
            crate::error::reason(&e)
        ))
    })?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        let msg = format!(
            "{} holds secrets but is readable by group or others (mode {:o}); run: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        );
        match policy {
            PermissionPolicy::Refuse => return Err(Error::Config(msg)),
            PermissionPolicy::Warn => tracing::warn!("{msg}"),
        }
    }
    Ok(())
}

mod encryption;
pub mod legacy;
mod protect;
mod raw;

#[cfg(test)]
mod tests;
