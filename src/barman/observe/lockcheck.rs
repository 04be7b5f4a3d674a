//! The lock proof in `check`: with Object Lock configured, `check` runs the proof of
//! `config check --lock-proof` at most once a day (it writes a canary) and reports its last
//! result every time. The result is kept per store in the state directory (written through
//! the atomic helper), so a check between two proofs still says whether the lock held.
//!
//! [`due`] and [`judge`] are pure: a proof is due when none is recorded, when the last one is
//! a day old, or when the clock went back; a lock that did not hold is CRITICAL, a proof
//! that proved nothing a WARNING.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CheckLevel, Error, Result};

/// How often `check` runs the proof.
pub const EVERY_SECS: u64 = 86_400;

/// Largest record read back.
const MAX_RECORD: u64 = 64 << 10;

/// The last proof of one store's lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockProofRecord {
    /// The store it proved.
    pub store: String,
    /// When (seconds since the epoch).
    pub at: u64,
    /// Whether every attempt was refused by the lock.
    pub holds: bool,
    /// Whether the store allowed something (a lock that does not hold, not a proof that
    /// proved nothing).
    pub allowed: bool,
    /// Its verdict line (`lock holds`, `lock does not hold: …`, `lock not proven: …`).
    pub line: String,
}

/// Where the record of `store` is kept.
fn path(state_dir: &Path, store: &str) -> PathBuf {
    let tag = crate::checksum::crc32c(store.as_bytes());
    state_dir.join(format!("lock-proof-{tag:08x}.json"))
}

/// Records a proof (through the atomic helper).
pub fn save(state_dir: &Path, rec: &LockProofRecord) -> Result<()> {
    std::fs::create_dir_all(state_dir)
        .map_err(|e| Error::io(format!("create {}", state_dir.display()), e))?;
    let json = serde_json::to_vec(rec).map_err(|e| Error::Failed(format!("encode: {e}")))?;
    crate::fsutil::write_atomic(&path(state_dir, &rec.store), &json)
}

/// The last proof of `store`, if one was recorded (an unreadable record is none: the next
/// check proves again).
pub fn load(state_dir: &Path, store: &str) -> Option<LockProofRecord> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_nofollow())
        .open(path(state_dir, store))
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    f.take(MAX_RECORD).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice::<LockProofRecord>(&bytes)
        .ok()
        .filter(|r| r.store == store)
}

fn libc_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Whether `check` proves the lock again at `now`.
pub fn due(last: Option<&LockProofRecord>, now: u64) -> bool {
    match last {
        None => true,
        // A proof that proved nothing (or could not run) is tried again sooner, but not at
        // every check: each try may leave one more locked canary version.
        Some(r) => {
            let every = if r.holds || r.allowed {
                EVERY_SECS
            } else {
                RETRY_SECS
            };
            r.at > now || now - r.at >= every
        }
    }
}

/// How long after a proof that proved nothing `check` tries again.
const RETRY_SECS: u64 = 3600;

/// What `check` says of the last proof at `now`: its level and line.
pub fn judge(r: &LockProofRecord, now: u64) -> (CheckLevel, String) {
    let ago = crate::barman::drill::record::rough(now.saturating_sub(r.at));
    let level = if r.holds {
        CheckLevel::Ok
    } else if r.allowed {
        CheckLevel::Critical
    } else {
        CheckLevel::Warning
    };
    (level, format!("{} (lock proof {ago} ago)", r.line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(at: u64, holds: bool, allowed: bool) -> LockProofRecord {
        LockProofRecord {
            store: "s3://b/p".into(),
            at,
            holds,
            allowed,
            line: if holds {
                "lock holds"
            } else {
                "lock does not hold: …"
            }
            .into(),
        }
    }

    #[test]
    fn a_proof_is_due_once_a_day_and_when_the_clock_went_back() {
        let now = 1_000_000;
        assert!(due(None, now));
        assert!(!due(Some(&rec(now - 3600, true, false)), now));
        assert!(due(Some(&rec(now - EVERY_SECS, true, false)), now));
        assert!(due(Some(&rec(now + 60, true, false)), now));
        // A lock that let something through is also proven again a day later.
        assert!(!due(Some(&rec(now - 3600, false, true)), now));
        // One that proved nothing is tried again after an hour, not at every check.
        assert!(!due(Some(&rec(now - 600, false, false)), now));
        assert!(due(Some(&rec(now - 3600, false, false)), now));
    }

    #[test]
    fn a_lock_that_let_something_through_is_critical_an_unproven_one_a_warning() {
        let now = 1_000_000;
        assert_eq!(judge(&rec(now - 60, true, false), now).0, CheckLevel::Ok);
        assert_eq!(
            judge(&rec(now - 60, false, true), now).0,
            CheckLevel::Critical
        );
        let (level, line) = judge(&rec(now - 7200, false, false), now);
        assert_eq!(level, CheckLevel::Warning);
        assert!(
            line.contains("lock proof") && line.contains("ago"),
            "{line}"
        );
    }

    #[test]
    fn the_record_round_trips_per_store_and_a_link_is_not_followed() {
        let d = tempfile::tempdir().expect("tmp");
        let r = rec(5, true, false);
        save(d.path(), &r).expect("save");
        assert_eq!(load(d.path(), "s3://b/p"), Some(r.clone()));
        assert_eq!(load(d.path(), "s3://other/p"), None);
        let p = path(d.path(), "s3://b/p");
        let elsewhere = d.path().join("elsewhere.json");
        std::fs::rename(&p, &elsewhere).expect("mv");
        std::os::unix::fs::symlink(&elsewhere, &p).expect("link");
        assert_eq!(load(d.path(), "s3://b/p"), None);
    }
}
