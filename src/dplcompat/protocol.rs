//! The program's side of Bareos' dplcompat protocol as plain data: the command line the
//! storage daemon builds (`<op> ["<volume>" ["<part>"]]`), checked into a [`Request`], and the
//! device options that reach us as environment variables, checked into [`DeviceOptions`].
//! Nothing here does I/O, so every rule is a table test.
//!
//! The daemon passes every name `options` prints that matches a configured device option to
//! the program as an environment variable of exactly that name. It compares names ignoring case,
//! `_`, spaces, tabs and newlines, and consumes its own (`program`, `program_timeout`,
//! `chunksize`, `iothreads`, `ioslots`, `retries`) first, so none of ours may look like them.

use std::time::Duration;

use crate::store::{Location, normalize_prefix, validate_bucket};
use crate::volume::VolumeName;
use crate::volume::layout::chunk_index;

/// The options the program reads, printed by `options`, one per line.
pub const OPTION_NAMES: &[&str] = &[
    "config",
    "bucket",
    "prefix",
    "base_url",
    "storage_class",
    "timeout",
    "s3cfg",
    "s3cmd_prog",
];

/// The device options the storage daemon keeps for itself.
pub const DAEMON_OPTIONS: &[&str] = &[
    "program",
    "program_timeout",
    "chunksize",
    "iothreads",
    "ioslots",
    "retries",
];

/// How long a `testconnection`, `list`, `stat` or `remove` may take, retries included, when the
/// `timeout` option does not say: well inside the daemon's `program_timeout`, whose default
/// (30 s) is also its minimum, and which for these operations is a limit on the whole call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// The operations, as the daemon names them.
pub const OPERATIONS: &[&str] = &[
    "options",
    "testconnection",
    "list",
    "stat",
    "upload",
    "download",
    "remove",
];

/// One call of the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Print the option names.
    Options,
    /// Reach the store with the configured credentials.
    TestConnection,
    /// `part size` lines of a volume.
    List(VolumeName),
    /// The size of a part.
    Stat(Part),
    /// Standard input to a part.
    Upload(Part),
    /// A part to standard output.
    Download(Part),
    /// Delete a part.
    Remove(Part),
}

/// A part of a volume: a chunk number Bareos names with four digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The volume.
    pub volume: VolumeName,
    /// The chunk number.
    pub chunk: u32,
}

impl Request {
    /// The operation's name.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Options => "options",
            Request::TestConnection => "testconnection",
            Request::List(_) => "list",
            Request::Stat(_) => "stat",
            Request::Upload(_) => "upload",
            Request::Download(_) => "download",
            Request::Remove(_) => "remove",
        }
    }

    /// Checks the arguments after the program name. The error is one line.
    pub fn parse(args: &[String]) -> Result<Request, String> {
        let Some((op, rest)) = args.split_first() else {
            return Err(format!(
                "no operation given: expected one of {}",
                OPERATIONS.join(", ")
            ));
        };
        let want = match op.as_str() {
            "options" | "testconnection" => 0,
            "list" => 1,
            "stat" | "upload" | "download" | "remove" => 2,
            other => {
                return Err(format!(
                    "unknown operation {other:?}: expected one of {}",
                    OPERATIONS.join(", ")
                ));
            }
        };
        if rest.len() != want {
            let shape = ["", " VOLUME", " VOLUME PART"][want];
            return Err(format!(
                "{op} takes {want} argument(s), got {}: usage {op}{shape}",
                rest.len()
            ));
        }
        let volume = || VolumeName::parse(&rest[0]);
        let part = || -> Result<Part, String> {
            let chunk = chunk_index(&rest[1]).ok_or_else(|| {
                format!(
                    "invalid part name {:?}: Bareos names parts with four digits (0000 to 9999)",
                    rest[1]
                )
            })?;
            Ok(Part {
                volume: volume()?,
                chunk,
            })
        };
        Ok(match op.as_str() {
            "options" => Request::Options,
            "testconnection" => Request::TestConnection,
            "list" => Request::List(volume()?),
            "stat" => Request::Stat(part()?),
            "upload" => Request::Upload(part()?),
            "download" => Request::Download(part()?),
            _ => Request::Remove(part()?),
        })
    }
}

/// What `options` prints.
pub fn options_text() -> String {
    OPTION_NAMES.iter().map(|n| format!("{n}\n")).collect()
}

/// The daemon's comparison of option names: case-folded, without `_`, spaces, tabs, newlines.
pub fn option_key(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '_' | ' ' | '\t' | '\n'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The device options, checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceOptions {
    /// `config`: the barmans3 YAML (else `BARMANS3_CONFIG`, else the default path).
    pub config: Option<String>,
    /// `bucket` or `base_url`'s bucket: replaces the config's bucket.
    pub bucket: Option<String>,
    /// `prefix` or `base_url`'s path: replaces the config's key prefix.
    pub prefix: Option<String>,
    /// `storage_class`: the class of the parts we upload.
    pub storage_class: Option<String>,
    /// `timeout`: how long a call other than upload and download may take.
    pub timeout: Duration,
    /// `s3cfg`: the s3cmd configuration of a device that used Bareos' s3cmd wrapper, read
    /// instead of a barmans3 config. (`s3cmd_prog`, the wrapper's other option, is accepted
    /// and unused, so such a device starts with only `program=` changed.)
    pub s3cfg: Option<String>,
}

impl DeviceOptions {
    /// Reads our options through `get` (the environment; an empty value counts as unset). The
    /// error names the option and is one line.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<DeviceOptions, String> {
        let get = |n: &str| get(n).filter(|v| !v.is_empty());
        let mut o = DeviceOptions {
            config: get("config"),
            bucket: get("bucket"),
            prefix: get("prefix").map(|p| normalize_prefix(&p)),
            storage_class: get("storage_class"),
            timeout: DEFAULT_TIMEOUT,
            s3cfg: get("s3cfg"),
        };
        if let (Some(c), Some(s)) = (&o.config, &o.s3cfg) {
            return Err(format!(
                "config={c} and s3cfg={s} both say how to reach the store: keep one"
            ));
        }
        if o.s3cfg.is_some() && o.bucket.is_none() && get("base_url").is_none() {
            return Err(
                "s3cfg= names no bucket: add bucket= (or base_url=), as the s3cmd wrapper had"
                    .into(),
            );
        }
        if let Some(url) = get("base_url") {
            if o.bucket.is_some() || o.prefix.is_some() {
                return Err(format!(
                    "base_url={url} and bucket= or prefix= both name the place: keep one"
                ));
            }
            let Ok(Location::S3 { bucket, prefix }) = Location::parse(&url) else {
                return Err(format!(
                    "base_url={url}: not an s3://bucket[/path] URL (the s3cmd wrapper's form)"
                ));
            };
            (o.bucket, o.prefix) = (Some(bucket), Some(prefix));
        }
        if let Some(b) = &o.bucket {
            validate_bucket(b).map_err(|e| format!("bucket={b}: {e}"))?;
        }
        if let Some(c) = &o.storage_class
            && !crate::store::STORAGE_CLASSES.contains(&c.as_str())
        {
            return Err(format!(
                "storage_class={c}: not a storage class; use one of {}",
                crate::store::STORAGE_CLASSES.join(", ")
            ));
        }
        if let Some(t) = get("timeout") {
            o.timeout = match t.parse::<u64>() {
                Ok(s) if (1..=3600).contains(&s) => Duration::from_secs(s),
                _ => {
                    return Err(format!(
                        "timeout={t}: give whole seconds from 1 to 3600, below the device's program_timeout"
                    ));
                }
            };
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn requests_follow_the_daemons_command_lines() {
        let part = |v: &str, c| Part {
            volume: VolumeName::parse(v).expect("name"),
            chunk: c,
        };
        assert_eq!(Request::parse(&args(&["options"])), Ok(Request::Options));
        assert_eq!(
            Request::parse(&args(&["testconnection"])),
            Ok(Request::TestConnection)
        );
        assert_eq!(
            Request::parse(&args(&["list", "Full-0001"])),
            Ok(Request::List(VolumeName::parse("Full-0001").expect("n")))
        );
        assert_eq!(
            Request::parse(&args(&["upload", "Vol 1", "0007"])),
            Ok(Request::Upload(part("Vol 1", 7)))
        );
        assert_eq!(
            Request::parse(&args(&["download", "a:b.c-d_e", "9999"])),
            Ok(Request::Download(part("a:b.c-d_e", 9999)))
        );
        assert_eq!(
            Request::parse(&args(&["remove", "pool/V1", "0000"])),
            Ok(Request::Remove(part("pool/V1", 0)))
        );
    }

    #[test]
    fn bad_command_lines_are_one_line_errors() {
        for bad in [
            &[][..],
            &["frobnicate"],
            &["list"],
            &["stat", "V"],
            &["options", "x"],
            &["upload", "V", "0001", "extra"],
            &["stat", "V", "1"],
            &["stat", "V", "00a1"],
            &["stat", "V", "10000"],
            &["stat", "V", "-001"],
            &["list", "a/../b"],
            &["list", "a;b"],
            &["list", " lead"],
            &["list", ""],
        ] {
            let e = Request::parse(&args(bad)).expect_err(&format!("{bad:?}"));
            assert!(!e.contains('\n') && !e.is_empty(), "{bad:?}: {e}");
        }
        let e = Request::parse(&args(&["frobnicate"])).expect_err("unknown");
        assert!(
            e.contains("frobnicate") && e.contains("testconnection"),
            "{e}"
        );
    }

    #[test]
    fn option_names_are_env_names_the_daemon_does_not_swallow() {
        let daemon: Vec<String> = DAEMON_OPTIONS.iter().map(|d| option_key(d)).collect();
        for n in OPTION_NAMES {
            let ok = n.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            assert!(ok, "{n} is not an environment variable name");
            assert!(!daemon.contains(&option_key(n)), "{n} is the daemon's");
        }
        assert_eq!(option_key("Program_Timeout"), option_key("program timeout"));
        assert_eq!(options_text().lines().count(), OPTION_NAMES.len());
        assert!(options_text().ends_with('\n') && !options_text().contains(' '));
    }

    fn read(pairs: &[(&str, &str)]) -> Result<DeviceOptions, String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DeviceOptions::read(|n| pairs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()))
    }

    #[test]
    fn device_options_are_read_and_checked() {
        let none = read(&[]).expect("empty");
        assert_eq!(none.timeout, DEFAULT_TIMEOUT);
        assert_eq!(none.bucket, None);
        let o = read(&[("base_url", "s3://backup/bareos/sd1/"), ("timeout", "9")]).expect("ok");
        assert_eq!(o.bucket.as_deref(), Some("backup"));
        assert_eq!(o.prefix.as_deref(), Some("bareos/sd1"));
        assert_eq!(o.timeout, Duration::from_secs(9));
        let o = read(&[("bucket", "backup"), ("prefix", "/x/"), ("config", "")]).expect("ok");
        assert_eq!((o.prefix.as_deref(), o.config), (Some("x"), None));
        for (bad, names) in [
            (&[("bucket", "B")][..], "bucket="),
            (&[("base_url", "http://x")], "base_url="),
            (
                &[("base_url", "s3://backup"), ("bucket", "backup")],
                "base_url=",
            ),
            (&[("storage_class", "COLD")], "storage_class="),
            (&[("timeout", "0")], "timeout="),
            (&[("timeout", "20s")], "timeout="),
            (&[("s3cfg", "/etc/s3cfg")], "s3cfg="),
            (
                &[("s3cfg", "/a"), ("bucket", "backup"), ("config", "/b")],
                "s3cfg=",
            ),
        ] {
            let e = read(bad).expect_err(names);
            assert!(e.contains(names) && !e.contains('\n'), "{e}");
        }
    }
}
