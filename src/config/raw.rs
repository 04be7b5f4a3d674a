//! The configuration file as written: the raw model (strings, strict: unknown keys are errors),
//! its validation into [`Config`], and the other way round, the effective values as a raw
//! model for `config check` to print. The raw structs are the one place key names are written:
//! messages take them from the field names ([`field!`]), and the printed view is these structs
//! serialized.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{BarmanConfig, Config, StateConfig};
use crate::codec::Filter;
use crate::error::{Error, Result};
use crate::secret::Secret;
use crate::store::limits::{MAX_PART_SIZE, MIN_PART_SIZE};
use crate::store::s3::{Addressing, S3Options, Sse, StaticCredentials, validate_endpoint};
use crate::store::{Location, normalize_prefix, validate_bucket};
use crate::transfer::{ChecksumMode, Settings};
use crate::units::{parse_duration, parse_size};

mod effective;
mod stores;
pub use stores::valid_name as valid_store_name;

/// A field of a raw section and its key name, `section.field`, taken from the identifiers.
macro_rules! field {
    ($sec:ident . $f:ident) => {
        (&$sec.$f, concat!(stringify!($sec), ".", stringify!($f)))
    };
}

/// The whole file.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    store: Option<String>,
    #[serde(default)]
    s3: RawS3,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    barman: RawBarman,
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption: Option<super::encryption::RawEncryption>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    stores: BTreeMap<String, stores::RawStore>,
}

/// `s3:`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawS3 {
    endpoint: Option<String>,
    region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bucket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    addressing: Option<String>,
    profile: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_token: Option<String>,
    ca_bundle: Option<PathBuf>,
    http_proxy: Option<String>,
    https_proxy: Option<String>,
    storage_class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    storage_classes: Option<super::protect::RawClasses>,
    #[serde(skip_serializing_if = "Option::is_none")]
    object_lock: Option<super::protect::RawLock>,
    max_bandwidth: Option<String>,
    acl: Option<String>,
    sse: Option<String>,
    sse_kms_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sse_customer_key_file: Option<PathBuf>,
    /// Shown by `config check` (the SSE-C key's MD5, which servers echo), never read.
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    sse_customer_key_md5: Option<String>,
    request_checksum: Option<String>,
    part_size: Option<String>,
    concurrency: Option<u32>,
    stream_memory: Option<String>,
    max_attempts: Option<u32>,
    connect_timeout: Option<String>,
    read_timeout: Option<String>,
}

/// `state:`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    dir: Option<PathBuf>,
    queue_dir: Option<PathBuf>,
    log_dir: Option<PathBuf>,
}

/// `barman:`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawBarman {
    config: Option<PathBuf>,
    /// Read for `state.queue_dir`, never written.
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_dir: Option<PathBuf>,
    /// Read for `state.dir`, never written.
    #[serde(skip_serializing_if = "Option::is_none")]
    state_dir: Option<PathBuf>,
    /// Read for `state.log_dir`, never written.
    #[serde(skip_serializing_if = "Option::is_none")]
    log_dir: Option<PathBuf>,
    min_remote_backups: Option<usize>,
    max_deletes: Option<usize>,
    wait_for_wals_max: Option<String>,
    wal_reconcile_every: Option<String>,
    hook_grace: Option<String>,
    drill_max_age: Option<String>,
    custom_decompression: Option<String>,
    custom_compression_magic: Option<String>,
    decryption_command: Option<String>,
    command_timeout: Option<String>,
    wal_prefetch: Option<usize>,
    wal_spool_dir: Option<PathBuf>,
    wal_spool_bytes: Option<String>,
    pg_combinebackup: Option<PathBuf>,
    pg_bindir: Option<PathBuf>,
    restore_staging_dir: Option<PathBuf>,
    one_put_max: Option<String>,
    replica_max_lag: Option<String>,
}

/// Builds the error of one key.
struct Keyed<'a>(&'a Path);

impl Keyed<'_> {
    fn err(&self, key: &str, why: impl fmt::Display) -> Error {
        Error::Config(format!("{}: {key}: {why}", self.0.display()))
    }

    /// A positive duration, or the default.
    fn duration(&self, (v, key): (&Option<String>, &str), default: Duration) -> Result<Duration> {
        match v {
            Some(v) => match parse_duration(v) {
                Ok(d) if !d.is_zero() => Ok(d),
                Ok(_) => Err(self.err(key, "must be greater than zero")),
                Err(e) => Err(self.err(key, e)),
            },
            None => Ok(default),
        }
    }

    /// One of `choices` (name, value), or the default when absent.
    fn choice<T: Copy>(
        &self,
        (v, key): (&Option<String>, &str),
        choices: &[(&str, T)],
    ) -> Result<T> {
        let name = v.as_deref().unwrap_or(choices[0].0);
        choices
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                self.err(key, format!("{name:?}: use {}", names.join(", ")))
            })
    }
}

/// Validates a raw file into the typed configuration; every error names its key.
pub(super) fn validate(raw: RawConfig, path: Option<&Path>) -> Result<Config> {
    let label = path.unwrap_or(Path::new("<config>"));
    let k = Keyed(label);
    let file = label.display().to_string();
    let location = location(&k, &raw.store, &raw.s3)?;
    let sse_customer = super::encryption::sse_customer(
        &file,
        raw.s3.sse.as_deref(),
        raw.s3.sse_customer_key_file.as_ref(),
    )?;
    let encryption = super::encryption::encryption(&file, raw.encryption.as_ref())?;
    let (mut s3, transfer) = s3(&k, raw.s3)?;
    s3.sse_customer = sse_customer.as_ref().map(|c| c.key.clone());
    let state = state(&k, &raw.state, &raw.barman)?;
    let stores = stores::validate(&k, &raw.stores)?;
    let barman = barman(&k, raw.barman)?;
    Ok(Config {
        stores,
        source: path.map(Path::to_path_buf),
        location,
        s3,
        transfer,
        state,
        barman,
        encryption,
        sse_customer,
    })
}

/// `state:`. Its keys used to be `barman.state_dir`, `barman.queue_dir` and `barman.log_dir`,
/// which still read, with a deprecation line each.
fn state(k: &Keyed, state: &RawState, barman: &RawBarman) -> Result<StateConfig> {
    let d = StateConfig::default();
    let dir = moved(k, field!(state.dir), field!(barman.state_dir))?;
    let queue_dir = moved(k, field!(state.queue_dir), field!(barman.queue_dir))?;
    let log_dir = moved(k, field!(state.log_dir), field!(barman.log_dir))?;
    Ok(StateConfig {
        dir: dir.unwrap_or(d.dir),
        queue_dir: queue_dir.unwrap_or(d.queue_dir),
        log_dir,
    })
}

/// A key that moved: its new spelling, else its old one (with a deprecation line naming the new
/// key), never both.
fn moved<T: Clone>(
    k: &Keyed,
    (new, new_key): (&Option<T>, &str),
    (old, old_key): (&Option<T>, &str),
) -> Result<Option<T>> {
    match (new, old) {
        (Some(_), Some(_)) => Err(k.err(
            old_key,
            format!("also given as {new_key}; keep {new_key} only"),
        )),
        (None, Some(v)) => {
            tracing::warn!(
                "{}: {old_key} is deprecated: write it as {new_key}",
                k.0.display()
            );
            Ok(Some(v.clone()))
        }
        (v, None) => Ok(v.clone()),
    }
}

fn location(k: &Keyed, store: &Option<String>, s3: &RawS3) -> Result<Location> {
    let (bucket, bucket_key) = field!(s3.bucket);
    let (prefix, prefix_key) = field!(s3.prefix);
    match (store, bucket) {
        (Some(url), None) => {
            let loc = Location::parse(url).map_err(|e| k.err("store", e))?;
            if matches!(loc, Location::S3 { .. }) && prefix.is_some() {
                return Err(k.err(
                    prefix_key,
                    "also given in store; set the prefix in one place",
                ));
            }
            Ok(loc)
        }
        (Some(_), Some(_)) => Err(k.err(
            bucket_key,
            "also given in store; set the bucket in one place",
        )),
        (None, Some(b)) => {
            validate_bucket(b).map_err(|e| k.err(bucket_key, e))?;
            Ok(Location::S3 {
                bucket: b.clone(),
                prefix: normalize_prefix(prefix.as_deref().unwrap_or("")),
            })
        }
        (None, None) => Err(k.err(
            bucket_key,
            "missing: set s3.bucket (or store: s3://bucket/prefix or file:///dir)",
        )),
    }
}

fn s3(k: &Keyed, s3: RawS3) -> Result<(S3Options, Settings)> {
    let (endpoint, key) = field!(s3.endpoint);
    if let Some(e) = endpoint {
        validate_endpoint(e).map_err(|m| k.err(key, m))?;
    }
    let addressing = k.choice(
        field!(s3.addressing),
        &[
            ("auto", Addressing::Auto),
            ("path", Addressing::Path),
            ("virtual", Addressing::Virtual),
        ],
    )?;
    let credentials = credentials(k, &s3)?;
    let sse = sse(k, &s3)?;
    // `auto` probes the store once and caches the answer; until then, CRC32C.
    let (probe_checksum, checksum) = k.choice(
        field!(s3.request_checksum),
        &[
            ("auto", (true, ChecksumMode::WhenSupported)),
            ("when_supported", (false, ChecksumMode::WhenSupported)),
            ("when_required", (false, ChecksumMode::WhenRequired)),
        ],
    )?;
    let file = k.0.display().to_string();
    let storage_classes =
        super::protect::classes(&file, &s3.storage_class, s3.storage_classes.as_ref())?;
    let object_lock = super::protect::object_lock(&file, s3.object_lock.as_ref())?;
    let max_bandwidth = super::protect::bandwidth(&file, &s3.max_bandwidth)?;
    let transfer = transfer(k, &s3, checksum, probe_checksum)?;
    let base = S3Options::default();
    let connect_timeout = k.duration(field!(s3.connect_timeout), base.connect_timeout)?;
    let read_timeout = k.duration(field!(s3.read_timeout), base.read_timeout)?;
    for (v, key) in [field!(s3.http_proxy), field!(s3.https_proxy)] {
        // The proxy URL may carry a password: never echo it.
        if v.as_ref()
            .is_some_and(|p| !(p.starts_with("http://") || p.starts_with("https://")))
        {
            return Err(k.err(key, "must be an http:// or https:// URL"));
        }
    }
    let (ca, key) = field!(s3.ca_bundle);
    if let Some(ca) = ca
        && !ca.is_file()
    {
        return Err(k.err(key, format!("{} is not a readable file", ca.display())));
    }
    Ok((
        S3Options {
            endpoint: s3.endpoint,
            region: s3.region,
            addressing,
            profile: s3.profile,
            credentials,
            ca_bundle: s3.ca_bundle,
            http_proxy: s3.http_proxy.map(Secret::new),
            https_proxy: s3.https_proxy.map(Secret::new),
            storage_classes,
            object_lock,
            max_bandwidth,
            acl: s3.acl,
            sse,
            // Filled from s3.sse_customer_key_file by `validate`.
            sse_customer: None,
            connect_timeout,
            read_timeout,
            copy_source_bucket: None,
        },
        transfer,
    ))
}

/// The engine's settings from the `s3:` section: part size, concurrency, attempts, checksums.
fn transfer(
    k: &Keyed,
    s3: &RawS3,
    checksum: ChecksumMode,
    probe_checksum: bool,
) -> Result<Settings> {
    let defaults = Settings::default();
    let (part_size, key) = field!(s3.part_size);
    let part_size = match part_size {
        Some(v) => parse_size(v).map_err(|e| k.err(key, e))?,
        None => defaults.part_size,
    };
    if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
        return Err(k.err(key, "must be between 5MiB and 5GiB"));
    }
    let (concurrency, key) = field!(s3.concurrency);
    let concurrency = concurrency.unwrap_or(defaults.concurrency as u32);
    if !(1..=256).contains(&concurrency) {
        return Err(k.err(key, "must be between 1 and 256"));
    }
    let (stream_memory, key) = field!(s3.stream_memory);
    let stream_memory = match stream_memory {
        Some(v) => parse_size(v).map_err(|e| k.err(key, e))?,
        None => defaults.stream_memory,
    };
    if !(MIN_PART_SIZE..=64 << 30).contains(&stream_memory) {
        return Err(k.err(key, "must be between 5MiB and 64GiB"));
    }
    let (max_attempts, key) = field!(s3.max_attempts);
    let max_attempts = max_attempts.unwrap_or(defaults.max_attempts);
    if !(1..=100).contains(&max_attempts) {
        return Err(k.err(key, "must be between 1 and 100"));
    }
    Ok(Settings {
        part_size,
        concurrency: concurrency as usize,
        stream_memory,
        max_attempts,
        checksum,
        probe_checksum,
        ..Settings::default()
    })
}

fn credentials(k: &Keyed, s3: &RawS3) -> Result<Option<StaticCredentials>> {
    let (id, key) = field!(s3.access_key_id);
    let (secret, _) = field!(s3.secret_access_key);
    match (id, secret) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
            Ok(Some(StaticCredentials {
                access_key_id: Secret::new(id),
                secret_access_key: Secret::new(secret),
                session_token: s3.session_token.as_ref().map(Secret::new),
            }))
        }
        (None, None) => Ok(None),
        _ => Err(k.err(
            key,
            "set both access_key_id and secret_access_key, or neither (then the AWS credential chain is used)",
        )),
    }
}

fn sse(k: &Keyed, s3: &RawS3) -> Result<Sse> {
    let (sse, sse_key) = field!(s3.sse);
    let (kms, kms_key) = field!(s3.sse_kms_key_id);
    match (sse.as_deref(), kms) {
        // SSE-C's key travels on every request, not as a setting of the object (Config::sse_customer).
        (None | Some("none") | Some("customer"), None) => Ok(Sse::None),
        (Some("AES256"), None) => Ok(Sse::Aes256),
        (Some("aws:kms"), kms) => Ok(Sse::Kms(kms.clone())),
        (None | Some("none") | Some("AES256") | Some("customer"), Some(_)) => {
            Err(k.err(kms_key, "only valid with sse: aws:kms"))
        }
        (Some(o), _) => Err(k.err(
            sse_key,
            format!("{o:?}: use none, AES256, aws:kms or customer"),
        )),
    }
}

fn barman(k: &Keyed, barman: RawBarman) -> Result<BarmanConfig> {
    let d = BarmanConfig::default();
    let (min_keep, key) = field!(barman.min_remote_backups);
    let min_remote_backups = min_keep.unwrap_or(d.min_remote_backups);
    if min_remote_backups == 0 {
        return Err(k.err(
            key,
            "must be at least 1 (full-sync never empties the bucket)",
        ));
    }
    let wait_for_wals_max = k.duration(field!(barman.wait_for_wals_max), d.wait_for_wals_max)?;
    let wal_reconcile_every =
        k.duration(field!(barman.wal_reconcile_every), d.wal_reconcile_every)?;
    let hook_grace = k.duration(field!(barman.hook_grace), d.hook_grace)?;
    let drill_max_age = k.duration(field!(barman.drill_max_age), d.drill_max_age)?;
    let (magic, key) = field!(barman.custom_compression_magic);
    let custom_compression_magic = magic
        .as_deref()
        .map(parse_magic)
        .transpose()
        .map_err(|e| k.err(key, e))?;
    let command_timeout = k.duration(field!(barman.command_timeout), d.command_timeout)?;
    let filter = |(v, key): (&Option<String>, &'static str)| {
        v.as_deref()
            .and_then(|c| Filter::parse(c, key))
            .map(|f| f.with_timeout(command_timeout))
    };
    let (prefetch, key) = field!(barman.wal_prefetch);
    let wal_prefetch = prefetch.unwrap_or(d.wal_prefetch);
    if wal_prefetch > 64 {
        return Err(k.err(key, "at most 64 segments ahead"));
    }
    let (spool_bytes, key) = field!(barman.wal_spool_bytes);
    let wal_spool_bytes = match spool_bytes {
        Some(v) => parse_size(v).map_err(|e| k.err(key, e))?,
        None => d.wal_spool_bytes,
    };
    let (one_put, key) = field!(barman.one_put_max);
    let one_put_max = match one_put {
        Some(v) => parse_size(v).map_err(|e| k.err(key, e))?,
        None => d.one_put_max,
    };
    if !(MIN_PART_SIZE..=crate::store::limits::MAX_PUT_SIZE).contains(&one_put_max) {
        return Err(k.err(key, "must be between 5MiB and 5GiB"));
    }
    let replica_max_lag = k.duration(field!(barman.replica_max_lag), d.replica_max_lag)?;
    Ok(BarmanConfig {
        replica_max_lag,
        custom_decompression: filter(field!(barman.custom_decompression)),
        decryption_command: filter(field!(barman.decryption_command)),
        command_timeout,
        config: barman.config.unwrap_or(d.config),
        min_remote_backups,
        max_deletes: barman.max_deletes.unwrap_or(d.max_deletes),
        wait_for_wals_max,
        wal_reconcile_every,
        hook_grace,
        drill_max_age,
        custom_compression_magic,
        wal_prefetch,
        wal_spool_dir: barman.wal_spool_dir,
        wal_spool_bytes,
        pg_combinebackup: barman.pg_combinebackup,
        pg_bindir: barman.pg_bindir,
        restore_staging_dir: barman.restore_staging_dir,
        one_put_max,
    })
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
