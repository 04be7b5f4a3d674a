//! The barmans3 YAML configuration: file model, defaults, validation, permission check, and
//! the redacted view printed by `config check`.
//!
//! The file is parsed strictly (unknown keys are errors) into a raw model of strings, then
//! validated into [`Config`], whose fields are typed and whose errors name the key. Every YAML
//! call of the product's own config lives here, so the YAML crate stays swappable.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result, one_line};

/// Default location of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/barmans3/barmans3.yaml";
/// Environment variable that overrides the configuration path.
pub const CONFIG_ENV: &str = "BARMANS3_CONFIG";
pub use crate::store::limits::{MAX_PART_SIZE, MIN_PART_SIZE};

/// A secret string: never printed, in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How requests address the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// Path style with a custom endpoint (what S3-compatible servers expect), virtual-hosted on AWS.
    Auto,
    /// `https://endpoint/bucket/key`.
    Path,
    /// `https://bucket.endpoint/key`.
    Virtual,
    /// `https://endpoint/key`: the endpoint already names the bucket (gpbackup plugin's
    /// `remove_duplicate_bucket`).
    BucketInEndpoint,
}

/// Server-side encryption requested on writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// No SSE header.
    None,
    /// SSE-S3.
    Aes256,
    /// SSE-KMS with an optional key id.
    Kms(Option<String>),
}

/// Which integrity mechanism uploads use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumMode {
    /// CRC32C flexible checksums on every part and object (AWS S3, Garage, recent MinIO).
    WhenSupported,
    /// Content-MD5 only, for servers that reject the newer checksum headers.
    WhenRequired,
}

pub use protect::{ARCHIVE_CLASSES, LockMode, ObjectKind, ObjectLock, StorageClasses};

/// Static credentials from the config file.
#[derive(Debug, Clone)]
pub struct StaticCredentials {
    /// Access key id (not secret, but kept out of logs anyway).
    pub access_key_id: Secret,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Optional session token.
    pub session_token: Option<Secret>,
}

/// Connection settings of the S3 backend.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Custom endpoint URL; `None` means AWS.
    pub endpoint: Option<String>,
    /// Signing region.
    pub region: Option<String>,
    /// Addressing style.
    pub addressing: Addressing,
    /// Shared-config profile for the credential chain.
    pub profile: Option<String>,
    /// Static keys; `None` means the full AWS credential chain.
    pub credentials: Option<StaticCredentials>,
    /// Extra PEM CA bundle trusted for TLS.
    pub ca_bundle: Option<PathBuf>,
    /// Proxy for plain-HTTP endpoints.
    pub http_proxy: Option<Secret>,
    /// Proxy for HTTPS endpoints.
    pub https_proxy: Option<Secret>,
    /// Storage classes for new objects (`s3.storage_class`, `s3.storage_classes`).
    pub storage_classes: StorageClasses,
    /// Object Lock retention set on every object created.
    pub object_lock: Option<ObjectLock>,
    /// Bandwidth cap in bytes per second, each direction, shared by the whole process.
    pub max_bandwidth: Option<u64>,
    /// `s3.request_checksum: auto`: probe once per store whether CRC32C headers are verified.
    pub probe_checksum: bool,
    /// Canned ACL for new objects.
    pub acl: Option<String>,
    /// Server-side encryption.
    pub sse: Sse,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Timeout for a response (or the next body bytes) to arrive.
    pub read_timeout: Duration,
}

/// Where objects live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A bucket and a key prefix ("" or ending without '/').
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix, normalised (no leading/trailing '/').
        prefix: String,
    },
    /// A local directory standing in for a bucket.
    Local {
        /// Root directory.
        root: PathBuf,
    },
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            StoreLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            StoreLocation::Local { root } => write!(f, "file://{}", root.display()),
        }
    }
}

impl StoreLocation {
    /// Parses `s3://bucket/prefix` or `file:///dir`.
    pub fn parse(url: &str) -> std::result::Result<Self, String> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            validate_bucket(bucket)?;
            Ok(StoreLocation::S3 {
                bucket: bucket.to_string(),
                prefix: normalize_prefix(prefix),
            })
        } else if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "invalid store URL {url:?}: a file URL needs an absolute path, e.g. file:///srv/backups"
                ));
            }
            Ok(StoreLocation::Local {
                root: PathBuf::from(path),
            })
        } else {
            Err(format!(
                "invalid store URL {url:?}: use s3://bucket[/prefix] or file:///absolute/dir"
            ))
        }
    }

    /// The key prefix inside the store ("" for local stores).
    pub fn prefix(&self) -> &str {
        match self {
            StoreLocation::S3 { prefix, .. } => prefix,
            StoreLocation::Local { .. } => "",
        }
    }
}

/// Settings of the transfer engine.
#[derive(Debug, Clone)]
pub struct TransferConfig {
    /// Configured part size (the engine raises it for very large objects).
    pub part_size: u64,
    /// Parts or ranges in flight at once, per run.
    pub concurrency: usize,
    /// Attempts per request, including the first.
    pub max_attempts: u32,
    /// Integrity mechanism for uploads.
    pub checksum: ChecksumMode,
    /// Objects above this size are copied server-side part by part (S3's single-copy limit;
    /// lowered only by tests).
    pub copy_limit: u64,
    /// `s3.request_checksum: auto`: probe the store on the first upload (`checksum` is then
    /// only the fallback).
    pub probe: Option<crate::transfer::probe::ChecksumProbe>,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            part_size: 64 << 20,
            concurrency: 8,
            max_attempts: 5,
            checksum: ChecksumMode::WhenSupported,
            copy_limit: crate::store::limits::MAX_COPY_SIZE,
            probe: None,
        }
    }
}

/// The Barman side of the configuration.
#[derive(Debug, Clone)]
pub struct BarmanConfig {
    /// Barman's main configuration file.
    pub config: PathBuf,
    /// Persistent task queue directory.
    pub queue_dir: PathBuf,
    /// Persistent state (WAL sync high-water marks, locks, upload journals).
    pub state_dir: PathBuf,
    /// Optional log directory (a file per run, reopened each run).
    pub log_dir: Option<PathBuf>,
    /// Remote DONE backups `full-sync` always keeps.
    pub min_remote_backups: usize,
    /// Remote backups one `full-sync` may delete without `--force`.
    pub max_deletes: usize,
    /// How long a `WAITING_FOR_WALS` backup may wait before its task goes to `.error`.
    pub wait_for_wals_max: Duration,
    /// How often `wal-sync` re-lists the whole remote archive (besides `--full`).
    pub wal_reconcile_every: Duration,
    /// Decompresses WALs of Barman's `custom` compression (stdin to stdout, no shell).
    pub custom_decompression: Option<crate::codec::Filter>,
    /// Magic bytes of the custom compression (Barman's `custom_compression_magic`).
    pub custom_compression_magic: Option<Vec<u8>>,
    /// Decrypts GPG-encrypted WALs (stdin to stdout, no shell).
    pub decryption_command: Option<crate::codec::Filter>,
    /// Segments `wal-restore` fetches ahead during recovery (0: none).
    pub wal_prefetch: usize,
    /// Where prefetched segments wait (default: `.barmans3-spool` in `pg_wal`).
    pub wal_spool_dir: Option<PathBuf>,
    /// Bytes the spool may hold.
    pub wal_spool_bytes: u64,
    /// pg_combinebackup for restoring incremental backups (default: found by version, then PATH).
    pub pg_combinebackup: Option<PathBuf>,
    /// Where the chain of an incremental backup is staged before it is combined (default: beside
    /// the destination).
    pub restore_staging_dir: Option<PathBuf>,
    /// `base-sync` sends backup files up to this size in one PUT (parts above `part_size`
    /// otherwise): such objects are what the next backup can copy server-side by reference.
    pub one_put_max: u64,
}

impl Default for BarmanConfig {
    fn default() -> Self {
        BarmanConfig {
            config: PathBuf::from("/etc/barman.conf"),
            queue_dir: PathBuf::from("/var/lib/barmans3/queue"),
            state_dir: PathBuf::from("/var/lib/barmans3/state"),
            log_dir: None,
            min_remote_backups: 1,
            max_deletes: 3,
            wait_for_wals_max: Duration::from_secs(7 * 86400),
            wal_reconcile_every: Duration::from_secs(86400),
            custom_decompression: None,
            custom_compression_magic: None,
            decryption_command: None,
            wal_prefetch: 8,
            wal_spool_dir: None,
            wal_spool_bytes: 1 << 30,
            pg_combinebackup: None,
            restore_staging_dir: None,
            // PostgreSQL's segment size: every data file of a default build.
            one_put_max: 1 << 30,
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    /// Where the objects go.
    pub location: StoreLocation,
    /// S3 connection settings (used when `location` is S3).
    pub s3: S3Config,
    /// Engine settings.
    pub transfer: TransferConfig,
    /// Barman settings.
    pub barman: BarmanConfig,
    /// The request log of this run (`--request-log`; not a file key).
    pub request_log: Option<crate::store::reqlog::RequestLog>,
}

/// How strictly to treat a config file readable by others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermissionPolicy {
    /// Refuse (the `.pgpass` rule). The default for barmans3.
    Refuse,
    /// Only warn (gpbackup plugin mode: gpbackup copies the file itself).
    Warn,
}

/// Normalises a key prefix: no leading or trailing '/', no empty segments.
pub fn normalize_prefix(p: &str) -> String {
    p.split('/')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

pub(crate) fn validate_bucket(b: &str) -> std::result::Result<(), String> {
    let ok = (3..=63).contains(&b.len())
        && b.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_'))
        && !b.starts_with(['-', '.'])
        && !b.ends_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid bucket name {b:?}: 3-63 characters of a-z, 0-9, '-', '.', '_'"
        ))
    }
}

/// Validates an endpoint URL (`http(s)://host[:port][/]`).
pub fn validate_endpoint(e: &str) -> std::result::Result<(), String> {
    let bad = |why: &str| format!("invalid endpoint URL {e:?}: {why}");
    let uri: http::Uri = e
        .parse()
        .map_err(|_| bad("not a URL, e.g. https://s3.example.com:9000"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("the scheme must be http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    Ok(())
}

impl Config {
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
                    "create it (see etc/barmans3.yaml) or pass --config / BARMANS3_CONFIG"
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
    pub fn for_location(location: StoreLocation) -> Self {
        Config {
            source: None,
            location,
            s3: default_s3(),
            transfer: TransferConfig::default(),
            barman: BarmanConfig::default(),
            request_log: None,
        }
    }

    /// The effective configuration as YAML, secrets replaced by `<redacted>`: the file model
    /// filled from the validated values, so every key is named in one place.
    pub fn to_redacted_yaml(&self) -> String {
        serde_yaml_ng::to_string(&raw::RawConfig::effective(self)).unwrap_or_default()
    }
}

pub(crate) fn default_s3() -> S3Config {
    S3Config {
        endpoint: None,
        region: None,
        addressing: Addressing::Auto,
        profile: None,
        credentials: None,
        ca_bundle: None,
        http_proxy: None,
        https_proxy: None,
        storage_classes: StorageClasses::default(),
        object_lock: None,
        max_bandwidth: None,
        probe_checksum: true,
        acl: None,
        sse: Sse::None,
        connect_timeout: Duration::from_secs(10),
        read_timeout: Duration::from_secs(60),
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

pub mod legacy;
mod protect;
mod raw;

#[cfg(test)]
mod tests;
