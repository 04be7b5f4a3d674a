//! Where objects live: a bucket and key prefix (`s3://bucket/prefix`) or a local directory
//! standing in for a bucket (`file:///dir`), parsed and checked once, printed the same way.

use std::fmt;
use std::path::PathBuf;

/// Where objects live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
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

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Location::Local { root } => write!(f, "file://{}", root.display()),
        }
    }
}

impl Location {
    /// Parses `s3://bucket/prefix` or `file:///dir`.
    pub fn parse(url: &str) -> std::result::Result<Self, String> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            validate_bucket(bucket)?;
            Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: normalize_prefix(prefix),
            })
        } else if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "invalid store URL {url:?}: a file URL needs an absolute path, e.g. file:///srv/backups"
                ));
            }
            Ok(Location::Local {
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
            Location::S3 { prefix, .. } => prefix,
            Location::Local { .. } => "",
        }
    }
}

/// Normalises a key prefix: no leading or trailing '/', no empty segments.
pub fn normalize_prefix(p: &str) -> String {
    p.split('/')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

/// Checks a bucket name against S3's rules.
pub fn validate_bucket(b: &str) -> std::result::Result<(), String> {
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
