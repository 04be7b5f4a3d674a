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

use serde::Deserialize;

use crate::error::{Error, Result, one_line};
use crate::units::{parse_duration, parse_size};

/// Default location of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/barmans3/barmans3.yaml";
/// Environment variable that overrides the configuration path.
pub const CONFIG_ENV: &str = "BARMANS3_CONFIG";
/// Smallest part S3 accepts (except the last part).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// Largest part S3 accepts.
pub const MAX_PART_SIZE: u64 = 5 << 30;

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
    /// Storage class for new objects.
    pub storage_class: Option<String>,
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
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            part_size: 64 << 20,
            concurrency: 8,
            max_attempts: 5,
            checksum: ChecksumMode::WhenSupported,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    store: Option<String>,
    #[serde(default)]
    s3: RawS3,
    #[serde(default)]
    barman: RawBarman,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawS3 {
    endpoint: Option<String>,
    region: Option<String>,
    bucket: Option<String>,
    prefix: Option<String>,
    addressing: Option<String>,
    profile: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    ca_bundle: Option<PathBuf>,
    http_proxy: Option<String>,
    https_proxy: Option<String>,
    storage_class: Option<String>,
    acl: Option<String>,
    sse: Option<String>,
    sse_kms_key_id: Option<String>,
    request_checksum: Option<String>,
    part_size: Option<String>,
    concurrency: Option<u32>,
    max_attempts: Option<u32>,
    connect_timeout: Option<String>,
    read_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBarman {
    config: Option<PathBuf>,
    queue_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    log_dir: Option<PathBuf>,
    min_remote_backups: Option<usize>,
    max_deletes: Option<usize>,
    wait_for_wals_max: Option<String>,
    wal_reconcile_every: Option<String>,
    custom_decompression: Option<String>,
    custom_compression_magic: Option<String>,
    decryption_command: Option<String>,
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

/// Parses Barman's `custom_compression_magic` notation: `0x` and hex digits.
fn parse_magic(v: &str) -> std::result::Result<Vec<u8>, String> {
    let hex = v
        .strip_prefix("0x")
        .or_else(|| v.strip_prefix("0X"))
        .ok_or_else(|| format!("{v:?}: write the magic bytes as hex, e.g. 0x28b52ffd"))?;
    if hex.is_empty() || hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{v:?}: an even number of hex digits after 0x"));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

fn key_err(path: &Path, key: &str, why: impl fmt::Display) -> Error {
    Error::Config(format!("{}: {key}: {why}", path.display()))
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
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| {
                Error::Config(format!(
                    "{}: invalid YAML: {}",
                    label.display(),
                    one_line(&e.to_string())
                ))
            })?
        };
        Self::validate(raw, path)
    }

    /// A config with defaults pointing at the given store and nothing else (demo, tests).
    pub fn for_location(location: StoreLocation) -> Self {
        Config {
            source: None,
            location,
            s3: default_s3(),
            transfer: TransferConfig::default(),
            barman: BarmanConfig::default(),
        }
    }

    fn validate(raw: RawConfig, path: Option<&Path>) -> Result<Self> {
        let label = path.unwrap_or(Path::new("<config>"));
        let err = |key: &str, why: &dyn fmt::Display| key_err(label, key, why);
        let s = raw.s3;

        let location = match (&raw.store, &s.bucket) {
            (Some(url), None) => {
                let loc = StoreLocation::parse(url).map_err(|e| err("store", &e))?;
                match (&loc, &s.prefix) {
                    (StoreLocation::S3 { .. }, Some(_)) => {
                        return Err(err(
                            "s3.prefix",
                            &"also given in store; set the prefix in one place",
                        ));
                    }
                    _ => loc,
                }
            }
            (Some(_), Some(_)) => {
                return Err(err(
                    "s3.bucket",
                    &"also given in store; set the bucket in one place",
                ));
            }
            (None, Some(bucket)) => {
                validate_bucket(bucket).map_err(|e| err("s3.bucket", &e))?;
                StoreLocation::S3 {
                    bucket: bucket.clone(),
                    prefix: normalize_prefix(s.prefix.as_deref().unwrap_or("")),
                }
            }
            (None, None) => {
                return Err(err(
                    "s3.bucket",
                    &"missing: set s3.bucket (or store: s3://bucket/prefix or file:///dir)",
                ));
            }
        };

        if let Some(e) = &s.endpoint {
            validate_endpoint(e).map_err(|m| err("s3.endpoint", &m))?;
        }
        let addressing = match s.addressing.as_deref() {
            None | Some("auto") => Addressing::Auto,
            Some("path") => Addressing::Path,
            Some("virtual") => Addressing::Virtual,
            Some(o) => {
                return Err(err(
                    "s3.addressing",
                    &format!("{o:?}: use auto, path or virtual"),
                ));
            }
        };
        let credentials = match (&s.access_key_id, &s.secret_access_key) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
                Some(StaticCredentials {
                    access_key_id: Secret::new(id),
                    secret_access_key: Secret::new(secret),
                    session_token: s.session_token.as_ref().map(Secret::new),
                })
            }
            (None, None) => None,
            _ => {
                return Err(err(
                    "s3.access_key_id",
                    &"set both access_key_id and secret_access_key, or neither (then the AWS credential chain is used)",
                ));
            }
        };
        let sse = match (s.sse.as_deref(), &s.sse_kms_key_id) {
            (None | Some("none"), None) => Sse::None,
            (Some("AES256"), None) => Sse::Aes256,
            (Some("aws:kms"), k) => Sse::Kms(k.clone()),
            (None | Some("none") | Some("AES256"), Some(_)) => {
                return Err(err("s3.sse_kms_key_id", &"only valid with sse: aws:kms"));
            }
            (Some(o), _) => {
                return Err(err(
                    "s3.sse",
                    &format!("{o:?}: use none, AES256 or aws:kms"),
                ));
            }
        };
        let checksum = match s.request_checksum.as_deref() {
            None | Some("when_supported") => ChecksumMode::WhenSupported,
            Some("when_required") => ChecksumMode::WhenRequired,
            Some(o) => {
                return Err(err(
                    "s3.request_checksum",
                    &format!("{o:?}: use when_supported or when_required"),
                ));
            }
        };
        let defaults = TransferConfig::default();
        let part_size = match &s.part_size {
            Some(v) => parse_size(v).map_err(|e| err("s3.part_size", &e))?,
            None => defaults.part_size,
        };
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
            return Err(err("s3.part_size", &"must be between 5MiB and 5GiB"));
        }
        let concurrency = s.concurrency.unwrap_or(defaults.concurrency as u32);
        if !(1..=256).contains(&concurrency) {
            return Err(err("s3.concurrency", &"must be between 1 and 256"));
        }
        let max_attempts = s.max_attempts.unwrap_or(defaults.max_attempts);
        if !(1..=100).contains(&max_attempts) {
            return Err(err("s3.max_attempts", &"must be between 1 and 100"));
        }
        let duration = |key: &str, v: &Option<String>, default: u64| -> Result<Duration> {
            match v {
                Some(v) => match parse_duration(v) {
                    Ok(d) if !d.is_zero() => Ok(d),
                    Ok(_) => Err(err(key, &"must be greater than zero")),
                    Err(e) => Err(err(key, &e)),
                },
                None => Ok(Duration::from_secs(default)),
            }
        };
        let connect_timeout = duration("s3.connect_timeout", &s.connect_timeout, 10)?;
        let read_timeout = duration("s3.read_timeout", &s.read_timeout, 60)?;
        for (key, v) in [
            ("s3.http_proxy", &s.http_proxy),
            ("s3.https_proxy", &s.https_proxy),
        ] {
            if let Some(p) = v {
                // The proxy URL may carry a password: never echo it.
                if !(p.starts_with("http://") || p.starts_with("https://")) {
                    return Err(err(key, &"must be an http:// or https:// URL"));
                }
            }
        }
        if let Some(ca) = &s.ca_bundle
            && !ca.is_file()
        {
            return Err(err(
                "s3.ca_bundle",
                &format!("{} is not a readable file", ca.display()),
            ));
        }

        let b = raw.barman;
        let bdef = BarmanConfig::default();
        let min_remote_backups = b.min_remote_backups.unwrap_or(bdef.min_remote_backups);
        if min_remote_backups == 0 {
            return Err(err(
                "barman.min_remote_backups",
                &"must be at least 1 (full-sync never empties the bucket)",
            ));
        }
        let wait_for_wals_max = duration(
            "barman.wait_for_wals_max",
            &b.wait_for_wals_max,
            bdef.wait_for_wals_max.as_secs(),
        )?;
        let wal_reconcile_every = duration(
            "barman.wal_reconcile_every",
            &b.wal_reconcile_every,
            bdef.wal_reconcile_every.as_secs(),
        )?;
        let custom_compression_magic = b
            .custom_compression_magic
            .as_deref()
            .map(parse_magic)
            .transpose()
            .map_err(|e| err("barman.custom_compression_magic", &e))?;
        Ok(Config {
            source: path.map(Path::to_path_buf),
            location,
            s3: S3Config {
                endpoint: s.endpoint,
                region: s.region,
                addressing,
                profile: s.profile,
                credentials,
                ca_bundle: s.ca_bundle,
                http_proxy: s.http_proxy.map(Secret::new),
                https_proxy: s.https_proxy.map(Secret::new),
                storage_class: s.storage_class,
                acl: s.acl,
                sse,
                connect_timeout,
                read_timeout,
            },
            transfer: TransferConfig {
                part_size,
                concurrency: concurrency as usize,
                max_attempts,
                checksum,
            },
            barman: BarmanConfig {
                config: b.config.unwrap_or(bdef.config),
                queue_dir: b.queue_dir.unwrap_or(bdef.queue_dir),
                state_dir: b.state_dir.unwrap_or(bdef.state_dir),
                log_dir: b.log_dir,
                min_remote_backups,
                max_deletes: b.max_deletes.unwrap_or(bdef.max_deletes),
                wait_for_wals_max,
                wal_reconcile_every,
                custom_decompression: b
                    .custom_decompression
                    .as_deref()
                    .and_then(|c| crate::codec::Filter::parse(c, "barman.custom_decompression")),
                custom_compression_magic,
                decryption_command: b
                    .decryption_command
                    .as_deref()
                    .and_then(|c| crate::codec::Filter::parse(c, "barman.decryption_command")),
            },
        })
    }

    /// The effective configuration as YAML, secrets replaced by `<redacted>`.
    pub fn to_redacted_yaml(&self) -> String {
        use serde_yaml_ng::{Mapping, Value};
        fn put(m: &mut Mapping, k: &str, v: Option<String>) {
            m.insert(Value::from(k), v.map_or(Value::Null, Value::from));
        }
        let s = &self.s3;
        let mut s3 = Mapping::new();
        let redacted = |x: bool| x.then(|| "<redacted>".to_string());
        put(&mut s3, "endpoint", s.endpoint.clone());
        put(&mut s3, "region", s.region.clone());
        put(
            &mut s3,
            "addressing",
            Some(format!("{:?}", s.addressing).to_lowercase()),
        );
        put(&mut s3, "profile", s.profile.clone());
        put(&mut s3, "access_key_id", redacted(s.credentials.is_some()));
        put(
            &mut s3,
            "secret_access_key",
            redacted(s.credentials.is_some()),
        );
        put(
            &mut s3,
            "ca_bundle",
            s.ca_bundle.as_ref().map(|p| p.display().to_string()),
        );
        put(&mut s3, "http_proxy", redacted(s.http_proxy.is_some()));
        put(&mut s3, "https_proxy", redacted(s.https_proxy.is_some()));
        put(&mut s3, "storage_class", s.storage_class.clone());
        put(&mut s3, "acl", s.acl.clone());
        let (sse, kms) = match &s.sse {
            Sse::None => ("none", None),
            Sse::Aes256 => ("AES256", None),
            Sse::Kms(k) => ("aws:kms", k.clone()),
        };
        put(&mut s3, "sse", Some(sse.into()));
        put(&mut s3, "sse_kms_key_id", kms);
        let t = &self.transfer;
        let mode = match t.checksum {
            ChecksumMode::WhenSupported => "when_supported",
            ChecksumMode::WhenRequired => "when_required",
        };
        put(&mut s3, "request_checksum", Some(mode.into()));
        put(
            &mut s3,
            "part_size",
            Some(format!("{}MiB", t.part_size >> 20)),
        );
        s3.insert("concurrency".into(), Value::from(t.concurrency as u64));
        s3.insert(
            "max_attempts".into(),
            Value::from(u64::from(t.max_attempts)),
        );
        put(
            &mut s3,
            "connect_timeout",
            Some(format!("{}s", s.connect_timeout.as_secs_f64())),
        );
        put(
            &mut s3,
            "read_timeout",
            Some(format!("{}s", s.read_timeout.as_secs_f64())),
        );
        let b = &self.barman;
        let mut barman = Mapping::new();
        put(&mut barman, "config", Some(b.config.display().to_string()));
        put(
            &mut barman,
            "queue_dir",
            Some(b.queue_dir.display().to_string()),
        );
        put(
            &mut barman,
            "state_dir",
            Some(b.state_dir.display().to_string()),
        );
        put(
            &mut barman,
            "log_dir",
            b.log_dir.as_ref().map(|p| p.display().to_string()),
        );
        put(
            &mut barman,
            "min_remote_backups",
            Some(b.min_remote_backups.to_string()),
        );
        put(&mut barman, "max_deletes", Some(b.max_deletes.to_string()));
        put(
            &mut barman,
            "wait_for_wals_max",
            Some(format!("{}s", b.wait_for_wals_max.as_secs())),
        );
        put(
            &mut barman,
            "wal_reconcile_every",
            Some(format!("{}s", b.wal_reconcile_every.as_secs())),
        );
        let mut top = Mapping::new();
        put(&mut top, "store", Some(self.location.to_string()));
        top.insert("s3".into(), Value::Mapping(s3));
        top.insert("barman".into(), Value::Mapping(barman));
        serde_yaml_ng::to_string(&Value::Mapping(top)).unwrap_or_default()
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
        storage_class: None,
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

#[cfg(test)]
mod tests;
