//! The `s3:` keys that protect and place backups: per-kind storage classes, Object Lock, the
//! bandwidth cap; their raw form and validation (every error names its key). The validated
//! types are the S3 backend's own ([`crate::store::s3`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::s3::{LockMode, ObjectLock};
use crate::store::{ARCHIVE_CLASSES, STORAGE_CLASSES, StorageClasses};
use crate::units::{human_bytes_exact, parse_duration, parse_size};

/// `s3.storage_classes:` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClasses {
    base: Option<String>,
    wal: Option<String>,
    meta: Option<String>,
}

/// `s3.object_lock:` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLock {
    mode: Option<String>,
    retain: Option<String>,
}

fn err(file: &str, key: &str, why: impl std::fmt::Display) -> Error {
    Error::Config(format!("{file}: {key}: {why}"))
}

fn class(file: &str, key: &str, v: &Option<String>) -> Result<Option<String>> {
    match v.as_deref() {
        None => Ok(None),
        Some(c) if STORAGE_CLASSES.contains(&c) => Ok(Some(c.to_string())),
        Some(c) => Err(err(
            file,
            key,
            format!(
                "{c:?} is not a storage class: use one of {}",
                STORAGE_CLASSES.join(", ")
            ),
        )),
    }
}

/// Validates `s3.storage_class` and `s3.storage_classes`.
pub(super) fn classes(
    file: &str,
    default: &Option<String>,
    raw: Option<&RawClasses>,
) -> Result<StorageClasses> {
    let empty = RawClasses::default();
    let raw = raw.unwrap_or(&empty);
    let meta = class(file, "s3.storage_classes.meta", &raw.meta)?;
    if let Some(m) = meta.as_deref().filter(|m| ARCHIVE_CLASSES.contains(m)) {
        return Err(err(
            file,
            "s3.storage_classes.meta",
            format!(
                "{m} objects cannot be read without a restore; manifests and backup.info must stay readable: use STANDARD or STANDARD_IA"
            ),
        ));
    }
    Ok(StorageClasses {
        default: class(file, "s3.storage_class", default)?,
        base: class(file, "s3.storage_classes.base", &raw.base)?,
        wal: class(file, "s3.storage_classes.wal", &raw.wal)?,
        meta,
    })
}

/// Validates `s3.object_lock`.
pub(super) fn object_lock(file: &str, raw: Option<&RawLock>) -> Result<Option<ObjectLock>> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let mode = match raw.mode.as_deref() {
        Some("governance") => LockMode::Governance,
        Some("compliance") => LockMode::Compliance,
        Some(m) => {
            return Err(err(
                file,
                "s3.object_lock.mode",
                format!("{m:?}: use governance or compliance"),
            ));
        }
        None => {
            return Err(err(
                file,
                "s3.object_lock.mode",
                "missing: use governance or compliance",
            ));
        }
    };
    let retain = match raw.retain.as_deref().map(parse_duration) {
        Some(Ok(d)) if d >= Duration::from_secs(86_400) => d,
        Some(Ok(_)) => {
            return Err(err(
                file,
                "s3.object_lock.retain",
                "must be at least 1d (S3 counts retention in days)",
            ));
        }
        Some(Err(e)) => return Err(err(file, "s3.object_lock.retain", e)),
        None => return Err(err(file, "s3.object_lock.retain", "missing: e.g. 30d")),
    };
    Ok(Some(ObjectLock { mode, retain }))
}

/// Validates `s3.max_bandwidth` (bytes per second, each direction).
pub(super) fn bandwidth(file: &str, raw: &Option<String>) -> Result<Option<u64>> {
    match raw.as_deref().map(parse_size) {
        None => Ok(None),
        Some(Ok(n)) if n >= 64 << 10 => Ok(Some(n)),
        Some(Ok(_)) => Err(err(
            file,
            "s3.max_bandwidth",
            "must be at least 64KiB (per second)",
        )),
        Some(Err(e)) => Err(err(file, "s3.max_bandwidth", e)),
    }
}

/// The raw form of validated values, for `config check`.
pub(super) fn raw_classes(c: &StorageClasses) -> Option<RawClasses> {
    (c.base.is_some() || c.wal.is_some() || c.meta.is_some()).then(|| RawClasses {
        base: c.base.clone(),
        wal: c.wal.clone(),
        meta: c.meta.clone(),
    })
}

/// The raw form of a validated Object Lock.
pub(super) fn raw_lock(l: &Option<ObjectLock>) -> Option<RawLock> {
    l.map(|l| RawLock {
        mode: Some(match l.mode {
            LockMode::Governance => "governance".into(),
            LockMode::Compliance => "compliance".into(),
        }),
        retain: Some(crate::units::human_duration(l.retain)),
    })
}

/// The raw form of a bandwidth cap.
pub(super) fn raw_bandwidth(b: Option<u64>) -> Option<String> {
    b.map(human_bytes_exact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_key() {
        let e = |r: Result<Option<ObjectLock>>| r.expect_err("bad").to_string();
        let lock = |m: Option<&str>, r: Option<&str>| RawLock {
            mode: m.map(str::to_string),
            retain: r.map(str::to_string),
        };
        assert!(
            e(object_lock("f", Some(&lock(Some("strict"), Some("30d")))))
                .contains("s3.object_lock.mode")
        );
        assert!(
            e(object_lock(
                "f",
                Some(&lock(Some("governance"), Some("1h")))
            ))
            .contains("at least 1d")
        );
        assert!(
            e(object_lock("f", Some(&lock(Some("governance"), None))))
                .contains("s3.object_lock.retain")
        );
        let ok = object_lock("f", Some(&lock(Some("compliance"), Some("30d")))).expect("ok");
        assert_eq!(ok.map(|l| l.mode), Some(LockMode::Compliance));
        let raw = RawClasses {
            base: Some("GLACIERX".into()),
            ..Default::default()
        };
        let msg = classes("f", &None, Some(&raw))
            .expect_err("bad")
            .to_string();
        assert!(
            msg.contains("s3.storage_classes.base") && msg.contains("GLACIER_IR"),
            "{msg}"
        );
        let raw = RawClasses {
            meta: Some("GLACIER".into()),
            ..Default::default()
        };
        assert!(classes("f", &None, Some(&raw)).is_err());
        assert!(bandwidth("f", &Some("10KiB".into())).is_err());
        assert_eq!(
            bandwidth("f", &Some("50MiB".into())).expect("ok"),
            Some(50 << 20)
        );
    }
}
