//! Checking one object of the bucket against what we recorded: a full read verified by the
//! engine (size and CRC32C from the manifest, or the object's own stored checksum for a WAL
//! file), or with `--quick` a HEAD (size, and the stored CRC32C where the object has a
//! full-object one). What a failure means (a problem to report, or a reason to stop) is decided
//! by [`classify`], a pure function.

use serde::Serialize;

use super::sysid;
use crate::checksum;
use crate::error::{Error, Result};
use crate::transfer::download::Verified;
use crate::transfer::{Expect, Transfer};

/// The kinds of problem `verify` reports, as they are spelled on stdout and in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// An object the manifest lists is not in the bucket.
    Missing,
    /// An object has another size than the manifest says (truncated, replaced).
    Size,
    /// An object's bytes do not match the recorded CRC32C (or its own stored checksum).
    Checksum,
    /// The store refused to hand out an object (e.g. archived to a cold storage class).
    Unreadable,
    /// A backup's manifest is unreadable or not ours.
    Manifest,
    /// A backup (or the parent of an incremental one) is not complete in the bucket.
    Incomplete,
    /// WAL segments needed by a backup or between two others are not in the bucket.
    WalMissing,
    /// A timeline's history file is not in the bucket.
    HistoryMissing,
    /// A WAL name that does not fit the cluster's segment size.
    WalName,
    /// A WAL segment of a backup's chain belongs to another database system than the backup.
    WalSystem,
    /// An encrypted object does not open (altered, truncated, another key's) or is plaintext
    /// where every object must be encrypted.
    Decrypt,
}

impl Kind {
    /// The word printed on stdout.
    pub fn word(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Size => "size",
            Kind::Checksum => "checksum",
            Kind::Unreadable => "unreadable",
            Kind::Manifest => "manifest",
            Kind::Incomplete => "incomplete",
            Kind::WalMissing => "wal-missing",
            Kind::HistoryMissing => "history-missing",
            Kind::WalName => "wal-name",
            Kind::WalSystem => "wal-system",
            Kind::Decrypt => "decrypt",
        }
    }
}

/// One thing wrong in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Problem {
    /// What is wrong.
    pub kind: Kind,
    /// The object key (for a run of missing WALs, the first one's).
    pub key: String,
    /// The backup it concerns, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// One line for the operator.
    pub detail: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys come from the bucket and its manifests: one line each, whatever a key holds.
        write!(
            f,
            "{} {}: {}",
            self.kind.word(),
            crate::store::printable_key(&self.key),
            self.detail
        )
    }
}

/// One object to check.
#[derive(Debug, Clone)]
pub struct Job {
    /// Full key.
    pub key: String,
    /// The backup it belongs to (for WAL files: the backup whose chain needs it).
    pub backup: Option<String>,
    /// Size and CRC32C from our manifest; `None` for WAL files, which are checked against the
    /// checksum the store keeps with them.
    pub record: Option<(u64, u32)>,
    /// For a WAL segment of a backup's chain: the backup's system identifier, which the
    /// segment's first page must name.
    pub system: Option<u64>,
}

/// How an object passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passed {
    /// Read whole and its CRC32C matched (ours, or the object's own).
    Read {
        /// Bytes read.
        bytes: u64,
    },
    /// Read whole, but nothing beyond its size could be compared (a WAL file written by a
    /// tool that stores no checksum).
    ReadSizeOnly {
        /// Bytes read.
        bytes: u64,
    },
    /// HEAD: size and the stored full-object CRC32C matched the manifest.
    HeadCrc32c,
    /// HEAD: the size matched; the object has no full-object CRC32C to compare.
    HeadSizeOnly,
    /// HEAD of a WAL file (nothing recorded to compare): present, and it carries a
    /// full-object CRC32C that a read is verified against.
    HeadStoredCrc32c,
    /// HEAD and the age header of an encrypted object: the header opens with the identities
    /// and gives the recorded plaintext size (a HEAD cannot compare a plaintext CRC32C).
    HeadOpened,
    /// Read whole and verified, but its first page could not be read to compare the system
    /// identifier (encrypted, or a custom compression).
    ReadSystemOpaque {
        /// Bytes read.
        bytes: u64,
        /// Verified by a CRC32C (else by its size only).
        crc32c: bool,
    },
}

/// The outcome of one object: passed, or a problem to report.
pub type Outcome = std::result::Result<Passed, Problem>;

/// What an error from reading `job` means: a problem to report (`Ok`), or a reason to stop the
/// run (`Err`: the store is unreachable after retries, the credentials are wrong, Ctrl-C).
/// Stopping is the honest answer there: nothing can be said about the objects not yet read.
pub fn classify(job: &Job, e: Error) -> Result<Problem> {
    let problem = |kind, detail: String| Problem {
        kind,
        key: job.key.clone(),
        backup: job.backup.clone(),
        detail,
    };
    let recorded = job.record.map(|(size, _)| format!("{size} bytes"));
    Ok(match e {
        Error::NotFound { .. } => problem(Kind::Missing, "not in the bucket".into()),
        // The engine compares the size first and says so with the recorded size as expected.
        Error::Checksum {
            expected, actual, ..
        } if Some(&expected) == recorded.as_ref() => problem(
            Kind::Size,
            format!("{actual}, the manifest says {expected}"),
        ),
        Error::Checksum {
            expected, actual, ..
        } => problem(
            Kind::Checksum,
            format!("content changed: expected {expected}, read {actual}"),
        ),
        e @ Error::Store(_) if !e.is_retryable() && !e.is_access_problem() => {
            problem(Kind::Unreadable, e.one_line())
        }
        // A missing identity stops the run (every object would say so); a bad object is one
        // problem among others.
        Error::Crypt(c) if !c.is_key_problem() => problem(Kind::Decrypt, c.fault.to_string()),
        other => return Err(other),
    })
}

/// Reads the whole object through the engine into nothing, verified against the manifest's
/// size and CRC32C (or, for WAL files, the object's own stored checksum).
pub async fn read(t: &Transfer, job: &Job) -> Result<Outcome> {
    let expect = match job.record {
        Some((size, crc)) => Expect {
            size: Some(size),
            crc32c: Some(crc),
        },
        None => Expect::default(),
    };
    let mut head = sysid::HeadKeeper::default();
    let got = match job.system {
        Some(_) => t.download_to(&job.key, &mut head, expect).await,
        None => {
            t.download_to(&job.key, &mut tokio::io::sink(), expect)
                .await
        }
    };
    let d = match got {
        Ok(d) => d,
        Err(e) => return classify(job, e).map(Err),
    };
    if let Some(want) = job.system {
        let found = sysid::first_page(&head.kept);
        if let Some(other) = sysid::other_system(found, want) {
            return Ok(Err(Problem {
                kind: Kind::WalSystem,
                key: job.key.clone(),
                backup: job.backup.clone(),
                detail: format!(
                    "belongs to database system {other}, the backup to {want} (its backup.info): recovery of the backup cannot use it"
                ),
            }));
        }
        if !matches!(found, sysid::Found::System(..)) {
            return Ok(Ok(Passed::ReadSystemOpaque {
                bytes: d.size,
                crc32c: d.verified != Verified::SizeOnly,
            }));
        }
    }
    Ok(Ok(if d.verified == Verified::SizeOnly {
        Passed::ReadSizeOnly { bytes: d.size }
    } else {
        Passed::Read { bytes: d.size }
    }))
}

/// Checks an object by HEAD only: present, the recorded size, and the recorded CRC32C when
/// the store keeps a full-object one (a composite or absent checksum leaves the size alone).
pub async fn head(t: &Transfer, job: &Job) -> Result<Outcome> {
    let meta = match t.head(&job.key).await {
        Ok(m) => m,
        Err(e) => return classify(job, e).map(Err),
    };
    // An encrypted object: its header, authenticated, gives the plaintext size. A sealed
    // object is always larger than its plaintext, so one of the recorded size is judged as
    // stored and only another size costs the read of a header (one request per file of an
    // unencrypted backup, not two).
    let plain = match job.record {
        Some((size, _)) if meta.size == size => None,
        _ => match t.sealed_size(&job.key, &meta).await {
            Ok(p) => p,
            Err(e) => return classify(job, e).map(Err),
        },
    };
    if let Some(plain) = plain {
        return Ok(match job.record {
            Some((size, _)) if plain != size => Err(Problem {
                kind: Kind::Size,
                key: job.key.clone(),
                backup: job.backup.clone(),
                detail: format!(
                    "{plain} bytes once decrypted (its header says), the manifest says {size} bytes"
                ),
            }),
            _ => Ok(Passed::HeadOpened),
        });
    }
    let Some((size, crc)) = job.record else {
        // Nothing recorded (a WAL file): present, and verifiable by a read when the store
        // keeps a full-object checksum with it.
        return Ok(Ok(match meta.full_crc32c() {
            Some(_) => Passed::HeadStoredCrc32c,
            None => Passed::HeadSizeOnly,
        }));
    };
    Ok(judge_head(
        job,
        size,
        crc,
        meta.size,
        meta.crc32c.as_deref(),
    ))
}

/// `verify-wal` without `--read`: a WAL object the listing showed (with its size), checked with
/// one request. Without identities, the HEAD: the listing cannot say whether the store keeps a
/// full-object CRC32C with the object, which decides whether a read can verify it (counted,
/// and the operator told). With identities, the ranged GET of its first bytes that
/// authenticates an encrypted object's header instead (a HEAD adds nothing there: the checksum
/// covers the ciphertext, and the listing gave the size the header is judged by); a plaintext
/// object in such a bucket (written before encryption was turned on) gets the HEAD as well.
pub async fn wal_quick(t: &Transfer, job: &Job, listed_size: u64) -> Result<Outcome> {
    if t.opens_sealed() {
        let listed = crate::store::ObjectMeta::listed(job.key.clone(), listed_size);
        match t.sealed_size(&job.key, &listed).await {
            Ok(Some(_)) => return Ok(Ok(Passed::HeadOpened)),
            Ok(None) => {}
            Err(e) => return classify(job, e).map(Err),
        }
    }
    let meta = match t.head(&job.key).await {
        Ok(m) => m,
        Err(e) => return classify(job, e).map(Err),
    };
    Ok(Ok(match meta.full_crc32c() {
        Some(_) => Passed::HeadStoredCrc32c,
        None => Passed::HeadSizeOnly,
    }))
}

/// The HEAD verdict: size first, then a full-object CRC32C if the object has one.
pub fn judge_head(job: &Job, size: u64, crc: u32, got: u64, stored: Option<&str>) -> Outcome {
    let problem = |kind, detail| Problem {
        kind,
        key: job.key.clone(),
        backup: job.backup.clone(),
        detail,
    };
    if got != size {
        return Err(problem(
            Kind::Size,
            format!("{got} bytes in the store, the manifest says {size} bytes"),
        ));
    }
    match stored.and_then(checksum::parse_full_crc32c_header) {
        Some(c) if c != crc => Err(problem(
            Kind::Checksum,
            format!("the store's CRC32C is {c:08x}, the manifest says {crc:08x}"),
        )),
        Some(_) => Ok(Passed::HeadCrc32c),
        None => Ok(Passed::HeadSizeOnly),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StoreFailure;

    fn job() -> Job {
        Job {
            key: "p/pg/base/20260101T000000/data/x".into(),
            backup: Some("20260101T000000".into()),
            record: Some((8192, 0xDEADBEEF)),
            system: None,
        }
    }

    fn store(status: u16, code: &str, retryable: bool) -> Error {
        Error::Store(StoreFailure {
            op: "GetObject",
            key: "k".into(),
            status: Some(status),
            code: Some(code.into()),
            message: "m".into(),
            retryable,
        })
    }

    #[test]
    fn errors_become_problems_or_stop_the_run() {
        let j = job();
        let kind = |e: Error| classify(&j, e).map(|p| p.kind).ok();
        assert_eq!(
            kind(Error::NotFound { key: "k".into() }),
            Some(Kind::Missing)
        );
        // The engine's size check (expected = the recorded size) is a size problem.
        assert_eq!(
            kind(Error::Checksum {
                key: "k".into(),
                expected: "8192 bytes".into(),
                actual: "100 bytes in the store".into()
            }),
            Some(Kind::Size)
        );
        assert_eq!(
            kind(Error::Checksum {
                key: "k".into(),
                expected: "crc32c deadbeef".into(),
                actual: "crc32c 00000000".into()
            }),
            Some(Kind::Checksum)
        );
        assert_eq!(
            kind(store(403, "InvalidObjectState", false)),
            None,
            "403 is an access problem: stop"
        );
        assert_eq!(
            kind(store(400, "InvalidObjectState", false)),
            Some(Kind::Unreadable)
        );
        // Unreachable after retries, wrong credentials, Ctrl-C: nothing can be said; stop.
        assert_eq!(kind(store(503, "SlowDown", true)), None);
        assert_eq!(kind(store(400, "InvalidAccessKeyId", false)), None);
        assert_eq!(kind(Error::Interrupted), None);
    }

    #[test]
    fn head_compares_size_then_a_full_object_crc32c() {
        let j = job();
        let crc = checksum::crc32c_header(0xDEADBEEF);
        let other = checksum::crc32c_header(1);
        let verdict =
            |got, stored: Option<&str>| match judge_head(&j, 8192, 0xDEADBEEF, got, stored) {
                Ok(p) => format!("{p:?}"),
                Err(p) => p.kind.word().to_string(),
            };
        assert_eq!(verdict(8192, Some(&crc)), "HeadCrc32c");
        assert_eq!(verdict(100, Some(&crc)), "size");
        assert_eq!(verdict(8192, Some(&other)), "checksum");
        // Composite (multipart) and absent checksums: the size alone.
        assert_eq!(verdict(8192, Some(&format!("{other}-3"))), "HeadSizeOnly");
        assert_eq!(verdict(8192, None), "HeadSizeOnly");
    }
}
