//! The gpbackup plugin config file (`executablepath` + `options:`), read exactly as gpbackup
//! writes it, validated with every problem reported at once, and turned into engine configs.
//!
//! Every option value is taken as the text of its YAML scalar (`2`, `true`, `1.3` and `"5432"`
//! all arrive as strings, as in the reference plugin). Size strings follow go-bytesize: a number,
//! optional spaces, a unit (`B`, `KB`, `MB`, ... or `byte[s]`, `kilobyte[s]`, ...), all binary,
//! case-insensitive; a bare number, `M` or `MiB` is refused.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml_ng::{Mapping, Value};

use crate::error::{Error, Result};
use crate::secret::Secret;
use crate::store::limits::{MAX_PART_SIZE, MIN_PART_SIZE};
use crate::store::s3::{Addressing, S3Options, StaticCredentials, validate_endpoint};
use crate::store::{Location, normalize_prefix, validate_bucket};
use crate::transfer::{ChecksumMode, Settings};

/// Default part and range size of the reference plugin: `500MB`.
pub const DEFAULT_CHUNK: u64 = 500 << 20;
/// Default parallel requests of the reference plugin.
pub const DEFAULT_CONCURRENCY: usize = 6;
/// Signing region used when only an endpoint is given (the reference signs for `unused`, which
/// servers that check the region refuse; `us-east-1` is what S3-compatible servers accept).
pub const FALLBACK_REGION: &str = "us-east-1";

/// Options the plugin understands; anything else under `options:` is an error, as in the
/// reference (`logger_verbosity` is the GreengageDB fork's).
const KNOWN: &[&str] = &[
    "region",
    "endpoint",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "bucket",
    "folder",
    "encryption",
    "http_proxy",
    "backup_max_concurrent_requests",
    "backup_multipart_chunksize",
    "restore_max_concurrent_requests",
    "restore_multipart_chunksize",
    "remove_duplicate_bucket",
    "logger_verbosity",
    "pgport",
    "backup_plugin_version",
    "restore_subset",
    "age_recipients_file",
    "age_identity_file",
    "age_require_encrypted",
    "stream_memory",
];

/// How much goes to the log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// Errors only.
    Error,
    /// Errors, warnings and one line per operation (default).
    Info,
    /// Also per-object detail.
    Verbose,
    /// Everything, including per-request detail.
    Debug,
}

/// Parallelism and part size for one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Direction {
    /// Parallel part uploads or ranged GETs.
    pub concurrency: usize,
    /// Part size (upload) or range size (download).
    pub chunk: u64,
}

/// A validated plugin config.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// The file it came from.
    pub path: std::path::PathBuf,
    /// `executablepath` (not checked for existence, like the reference).
    pub executable: String,
    /// Bucket name.
    pub bucket: String,
    /// `folder`, normalised: no leading, trailing or doubled `/`.
    pub folder: String,
    /// Endpoint URL with its scheme decided by `encryption`; `None` means AWS.
    pub endpoint: Option<String>,
    /// Signing region.
    pub region: String,
    /// Static keys, or `None` for the AWS credential chain.
    pub credentials: Option<StaticCredentials>,
    /// `encryption: on` (default) means HTTPS for scheme-less endpoints.
    pub tls: bool,
    /// Proxy for all requests.
    pub proxy: Option<Secret>,
    /// Client-side encryption (`age_recipients_file`, `age_identity_file`), when on.
    pub age: Option<crate::crypt::Keys>,
    /// Upload settings.
    pub backup: Direction,
    /// Download settings.
    pub restore: Direction,
    /// Requests go to `<endpoint>/<key>`.
    pub bucket_in_endpoint: bool,
    /// Log file verbosity.
    pub verbosity: Verbosity,
    /// `stream_memory`: what `backup_data` and `restore_data` hold in parts or ranges at once,
    /// whatever the chunk sizes say.
    pub stream_memory: u64,
}

/// Parses a go-bytesize size string (`500MB`, `1.5 GB`, `10gb`, `2 megabytes`).
pub fn parse_gp_size(s: &str) -> std::result::Result<u64, String> {
    let bad = || format!("invalid size {s:?}: use a number and a unit such as 5MB, 500MB, 1GB");
    let t = s.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(end);
    if num.is_empty() || num.matches('.').count() > 1 || num == "." {
        return Err(bad());
    }
    let value: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit
        .strip_suffix('s')
        .filter(|u| u.ends_with("byte"))
        .unwrap_or(&unit);
    let shift = match unit {
        "b" | "byte" => 0,
        "kb" | "kilobyte" => 10,
        "mb" | "megabyte" => 20,
        "gb" | "gigabyte" => 30,
        "tb" | "terabyte" => 40,
        "pb" | "petabyte" => 50,
        "eb" | "exabyte" => 60,
        _ => return Err(bad()),
    };
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// The text of a YAML scalar, as gpbackup's Go YAML library would hand it over.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some(String::new()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

impl PluginConfig {
    /// Reads and validates the config file. No network access.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read plugin config file {}: {}",
                path.display(),
                crate::error::reason(&e)
            ))
        })?;
        Self::parse(&text, path)
    }

    /// Validates the text of a config file; `path` only names it in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let fail = |problems: Vec<String>| {
            Error::Config(format!(
                "plugin config {}: {}",
                path.display(),
                problems.join("; ")
            ))
        };
        let top = top_mapping(text).map_err(|p| fail(vec![p]))?;
        // Every problem is collected, in the order of the checks below, and reported at once.
        let mut problems = Vec::new();
        let (executable, options) = top_level(&top, &mut problems);
        let opts = option_values(options, &mut problems);
        let cfg = from_options(path, executable, &opts, &mut problems);
        if !problems.is_empty() {
            return Err(fail(problems));
        }
        Ok(cfg)
    }

    /// Where the plugin's objects live and how to reach them. The location prefix is empty:
    /// plugin keys are computed in full (folder included) by the key rules.
    pub fn store_settings(&self) -> (Location, S3Options) {
        let mut s3 = S3Options {
            endpoint: self.endpoint.clone(),
            region: Some(self.region.clone()),
            addressing: if self.bucket_in_endpoint {
                Addressing::BucketInEndpoint
            } else {
                Addressing::Path
            },
            credentials: self.credentials.clone(),
            http_proxy: self.proxy.clone(),
            https_proxy: self.proxy.clone(),
            ..S3Options::default()
        };
        if self.endpoint.is_none() && !self.tls {
            s3.endpoint = Some(format!("http://s3.{}.amazonaws.com", self.region));
            s3.addressing = Addressing::Path;
        }
        let location = Location::S3 {
            bucket: self.bucket.clone(),
            prefix: String::new(),
        };
        (location, s3)
    }

    /// The engine settings for one direction.
    pub fn transfer_config(&self, d: Direction) -> Settings {
        Settings {
            part_size: d.chunk,
            concurrency: d.concurrency,
            max_attempts: 6,
            checksum: ChecksumMode::WhenSupported,
            // CRC32C, never probed: the plugin has no state directory to cache a probe's answer
            // in, and probing on every one of gpbackup's many short invocations costs requests.
            probe_checksum: false,
            stream_memory: self.stream_memory,
            ..Settings::default()
        }
    }
}

/// The `options:` values as text, by name.
struct Options(BTreeMap<String, String>);

impl Options {
    /// A value, an empty one counting as not set.
    fn get(&self, k: &str) -> Option<&str> {
        self.raw(k).filter(|v| !v.is_empty())
    }

    /// A value as written: for the switches an empty value is a wrong one, not a missing one.
    fn raw(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
}

/// The document's top-level mapping, or the one problem that it is none.
fn top_mapping(text: &str) -> std::result::Result<Mapping, String> {
    let doc: Value = serde_yaml_ng::from_str(text)
        .map_err(|e| format!("not valid YAML: {}", crate::error::one_line(&e.to_string())))?;
    match doc {
        Value::Mapping(top) => Ok(top),
        _ => Err("expected a mapping with executablepath and options".into()),
    }
}

/// `executablepath` and the value of `options`; any other top-level key is a problem.
fn top_level<'a>(top: &'a Mapping, problems: &mut Vec<String>) -> (String, Option<&'a Value>) {
    let mut executable = None;
    let mut options = None;
    for (k, v) in top {
        match k.as_str() {
            Some("executablepath") => executable = scalar_text(v),
            Some("options") => options = Some(v),
            Some(other) => problems.push(format!(
                "unknown top-level key {other:?} (only executablepath and options are allowed)"
            )),
            None => problems.push("top-level keys must be strings".into()),
        }
    }
    let executable = executable.unwrap_or_default();
    if executable.trim().is_empty() {
        problems.push("executablepath is missing or empty".into());
    }
    (executable, options)
}

/// The known options under `options:`, each a single value.
fn option_values(options: Option<&Value>, problems: &mut Vec<String>) -> Options {
    let mut opts = BTreeMap::new();
    match options {
        None => problems.push("options is missing".into()),
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                let Some(name) = k.as_str() else {
                    problems.push("option names must be strings".into());
                    continue;
                };
                if !KNOWN.contains(&name) {
                    problems.push(format!("unknown option {name:?}"));
                    continue;
                }
                match scalar_text(v) {
                    Some(t) => {
                        opts.insert(name.to_string(), t);
                    }
                    None => problems.push(format!("option {name} must be a single value")),
                }
            }
        }
        Some(_) => problems.push("options must be a mapping of key: value".into()),
    }
    Options(opts)
}

/// The config the options describe; what is wrong goes to `problems` and its field gets a
/// default, so that every later check still runs.
fn from_options(
    path: &Path,
    executable: String,
    o: &Options,
    problems: &mut Vec<String>,
) -> PluginConfig {
    let (bucket, folder) = bucket_and_folder(o, problems);
    if o.get("region").is_none() && o.get("endpoint").is_none() {
        problems.push("set option region (AWS) or endpoint (S3-compatible server)".into());
    }
    let tls = switch(o, "encryption", ["on", "off"], true, problems);
    let endpoint = endpoint(o, tls, problems);
    let credentials = credentials(o, problems);
    let proxy = o.get("http_proxy").map(|p| {
        if !(p.starts_with("http://") || p.starts_with("https://")) {
            problems.push("option http_proxy must be an http:// or https:// URL".into());
        }
        Secret::new(p)
    });
    let backup = direction(o, "backup", problems);
    let restore = direction(o, "restore", problems);
    let bucket_in_endpoint = switch(
        o,
        "remove_duplicate_bucket",
        ["true", "false"],
        false,
        problems,
    );
    if bucket_in_endpoint && endpoint.is_none() {
        problems.push("option remove_duplicate_bucket needs an endpoint".into());
    }
    // gprestore reads `restore_subset` itself (utils/plugin.go CanRestoreSubset) to decide
    // whether to call restore_data_subset; the plugin only checks the value.
    switch(o, "restore_subset", ["on", "off"], false, problems);
    let verbosity = verbosity(o, problems);
    let stream_memory = stream_memory(o, problems);
    let age = age_keys(path, o, problems);
    PluginConfig {
        path: path.to_path_buf(),
        executable,
        bucket,
        folder,
        region: o.get("region").unwrap_or(FALLBACK_REGION).to_string(),
        endpoint,
        credentials,
        tls,
        proxy,
        backup,
        restore,
        bucket_in_endpoint,
        verbosity,
        age,
        stream_memory,
    }
}

/// `stream_memory` (a size string, 5MB to 64GB), 128 MiB when unset.
fn stream_memory(o: &Options, problems: &mut Vec<String>) -> u64 {
    let default = crate::transfer::plan::STREAM_MEMORY;
    let Some(v) = o.get("stream_memory") else {
        return default;
    };
    match parse_gp_size(v) {
        Ok(n) if (MIN_PART_SIZE..=64 << 30).contains(&n) => n,
        Ok(_) => {
            problems.push(format!(
                "option stream_memory: {v:?}: must be from 5MB to 64GB"
            ));
            default
        }
        Err(e) => {
            problems.push(format!("option stream_memory: {e}"));
            default
        }
    }
}

/// `age_recipients_file` and `age_identity_file`: every file sealed in the age format, as the
/// companion's `encryption:` section does.
fn age_keys(path: &Path, o: &Options, problems: &mut Vec<String>) -> Option<crate::crypt::Keys> {
    let ids = o.get("age_identity_file").map(Path::new);
    // Every file read must be encrypted: a plaintext one is refused (the companion's
    // encryption.require_encrypted), so a swapped object cannot pass for an old backup's.
    let require = switch(o, "age_require_encrypted", ["on", "off"], false, problems);
    let Some(to) = o.get("age_recipients_file") else {
        if ids.is_some() || require {
            let which = if ids.is_some() {
                "age_identity_file"
            } else {
                "age_require_encrypted"
            };
            problems.push(format!("option {which} needs age_recipients_file"));
        }
        return None;
    };
    let file = path.display().to_string();
    let keys = crate::config::keys_from_files(
        &file,
        "age_recipients_file",
        Path::new(to),
        "age_identity_file",
        ids,
    );
    keys.map(|k| crate::crypt::Keys {
        require_sealed: require.then_some("age_require_encrypted"),
        ..k
    })
    .map_err(|e| problems.push(e.to_string()))
    .ok()
}

/// `bucket` and the normalised `folder`, both required.
fn bucket_and_folder(o: &Options, problems: &mut Vec<String>) -> (String, String) {
    let bucket = o.get("bucket").unwrap_or_default().to_string();
    if bucket.is_empty() {
        problems.push("option bucket is required".into());
    } else if let Err(e) = validate_bucket(&bucket) {
        problems.push(format!("option bucket: {e}"));
    }
    let folder = match o.get("folder") {
        None => {
            problems.push("option folder is required".into());
            String::new()
        }
        Some(f) => {
            let n = normalize_prefix(f);
            if n.is_empty() {
                problems.push("option folder must name a key prefix, not only '/'".into());
            }
            n
        }
    };
    (bucket, folder)
}

/// A two-word switch: `yes` is true, `no` false, unset `default`; anything else is a problem.
fn switch(
    o: &Options,
    name: &str,
    [yes, no]: [&str; 2],
    default: bool,
    problems: &mut Vec<String>,
) -> bool {
    match o.raw(name) {
        None => default,
        Some(v) if v == yes => true,
        Some(v) if v == no => false,
        Some(v) => {
            problems.push(format!("option {name}: {v:?}: use {yes} or {no}"));
            default
        }
    }
}

/// The endpoint URL; without a scheme, `tls` (option `encryption`) decides it.
fn endpoint(o: &Options, tls: bool, problems: &mut Vec<String>) -> Option<String> {
    o.get("endpoint").map(|e| {
        let e = e.trim_end_matches('/');
        let url = if e.contains("://") {
            e.to_string()
        } else if tls {
            format!("https://{e}")
        } else {
            format!("http://{e}")
        };
        if let Err(m) = validate_endpoint(&url) {
            problems.push(format!("option endpoint: {m}"));
        }
        url
    })
}

/// Static keys, both or neither; neither means the AWS credential chain.
fn credentials(o: &Options, problems: &mut Vec<String>) -> Option<StaticCredentials> {
    match (o.get("aws_access_key_id"), o.get("aws_secret_access_key")) {
        (Some(id), Some(secret)) => Some(StaticCredentials {
            access_key_id: Secret::new(id),
            secret_access_key: Secret::new(secret),
            session_token: o.get("aws_session_token").map(Secret::new),
        }),
        (None, None) => None,
        _ => {
            problems.push(
                "set both aws_access_key_id and aws_secret_access_key, or neither (then the AWS credential chain is used)"
                    .into(),
            );
            None
        }
    }
}

/// `<which>_max_concurrent_requests` and `<which>_multipart_chunksize`.
fn direction(o: &Options, which: &str, problems: &mut Vec<String>) -> Direction {
    let ckey = format!("{which}_max_concurrent_requests");
    let concurrency = match o.get(&ckey) {
        None => DEFAULT_CONCURRENCY,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=256).contains(&n) => n,
            _ => {
                problems.push(format!(
                    "option {ckey}: {v:?}: use a whole number from 1 to 256"
                ));
                DEFAULT_CONCURRENCY
            }
        },
    };
    let skey = format!("{which}_multipart_chunksize");
    let chunk = match o.get(&skey) {
        None => DEFAULT_CHUNK,
        Some(v) => match parse_gp_size(v) {
            Ok(n) if (MIN_PART_SIZE..=MAX_PART_SIZE).contains(&n) => n,
            Ok(_) => {
                problems.push(format!("option {skey}: {v:?}: must be from 5MB to 5GB"));
                DEFAULT_CHUNK
            }
            Err(e) => {
                problems.push(format!("option {skey}: {e}"));
                DEFAULT_CHUNK
            }
        },
    };
    Direction { concurrency, chunk }
}

/// `logger_verbosity`, `info` when unset.
fn verbosity(o: &Options, problems: &mut Vec<String>) -> Verbosity {
    match o.raw("logger_verbosity") {
        None | Some("info") => Verbosity::Info,
        Some("error") => Verbosity::Error,
        Some("verbose") => Verbosity::Verbose,
        Some("debug") => Verbosity::Debug,
        Some(v) => {
            problems.push(format!(
                "option logger_verbosity: {v:?}: use error, info, verbose or debug"
            ));
            Verbosity::Info
        }
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
