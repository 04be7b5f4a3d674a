//! The Object Lock proof: a store that accepts a lock and then allows a DELETE anyway is worse
//! than one without locks, because nobody looks. One small canary object is written with the
//! configured mode and the shortest retention the store accepts, under one fixed key (expired
//! canary versions are removed on the next run, so repeated checks do not pile up); then the
//! three things a lock must refuse are tried on that version: DELETE by version id, an earlier
//! retain-until date, and (governance) removing the lock without the bypass header.
//!
//! The decisions are in [`judge`] (pure): a refusal counts only when the version read back
//! afterwards is still there and unchanged, and the refusal was the lock's, not the
//! credentials' (two controls, on things no lock protects, show what the credentials may do).

mod judge;

use std::time::{Duration, SystemTime};

use bytes::Bytes;

pub use self::judge::{
    After, Answer, Attempt, Canary, Permitted, Reply, Verdict, judge, names_the_lock, state_after,
    verdict,
};
use super::s3::LockMode;
use super::{LockSpec, Retention, Store, Versions};
use crate::error::{Error, Result};

/// The canary's key under the configured prefix.
pub const CANARY_KEY: &str = ".barmans3-lock-proof";

/// Retentions tried for the canary, shortest first: long enough to outlive the check, short
/// enough that an old canary is gone by the next day's check.
const RETENTIONS: [Duration; 2] = [Duration::from_secs(3600), Duration::from_secs(86_400)];

/// The canary, its lock, what the controls showed and what each attempt proves.
#[derive(Debug, Clone)]
pub struct Proof {
    /// The canary's full key.
    pub key: String,
    /// Its version id.
    pub version_id: String,
    /// The lock it was written with (its date as the store keeps it, after the control).
    pub lock: LockSpec,
    /// Each control, in words, and what it showed.
    pub controls: Vec<(&'static str, Permitted)>,
    /// Each attempt and what it proves, in the order tried.
    pub answers: Vec<(Attempt, Answer)>,
}

/// What a proof that ran found: its attempts, or that the store keeps no lock at all (which
/// is as bad as a lock it lets go, never merely "not proven").
#[derive(Debug)]
pub enum Proven {
    /// The attempts were made.
    Ran(Proof),
    /// The bucket or the canary shows no lock (why).
    NoLock(String),
}

/// Runs the proof on `store` with the configured lock `mode`; `key` is the canary's full key.
pub async fn prove(store: &dyn Store, key: &str, mode: LockMode) -> Result<Proven> {
    let (Some(retention), Some(versions)) = (store.retention(), store.versions()) else {
        return Err(Error::Config(format!(
            "--lock-proof: {} has no Object Lock (an S3 bucket with Object Lock enabled is needed)",
            store.describe()
        )));
    };
    if retention.lock_status().await?.is_none() {
        return Ok(Proven::NoLock(format!(
            "{}: Object Lock is not enabled on the bucket, so nothing it holds is locked",
            store.describe()
        )));
    }
    remove_expired(versions, key).await;
    let (version_id, lock) = write_canary(retention, key, mode).await?;
    let mut canary = match read_canary(versions, key, &version_id, lock).await? {
        Ok(c) => c,
        Err(none) => return Ok(Proven::NoLock(none)),
    };
    let controls = vec![
        (
            "removing a delete marker by version id",
            delete_control(store, versions, key).await,
        ),
        (
            "lengthening the canary's retention",
            lengthen(retention, key, &version_id, mode, &mut canary).await,
        ),
    ];
    let mut tried = Tried {
        versions,
        key,
        version_id: &version_id,
        canary,
        answers: Vec::new(),
    };
    let r = versions.delete_version(key, &version_id).await;
    let after = tried.record(Attempt::Delete, &r, &controls[0].1).await;
    if after != After::Gone {
        let now = SystemTime::now();
        let earlier = LockSpec {
            mode,
            until: now + tried.canary.until.duration_since(now).unwrap_or_default() / 2,
        };
        let r = retention
            .set_retention(key, &version_id, Some(earlier))
            .await;
        tried.record(Attempt::Shorten, &r, &controls[1].1).await;
        if mode == LockMode::Governance {
            let r = retention.set_retention(key, &version_id, None).await;
            tried.record(Attempt::Unlock, &r, &controls[1].1).await;
        }
    }
    Ok(Proven::Ran(Proof {
        key: key.to_string(),
        version_id: version_id.clone(),
        lock: LockSpec {
            mode,
            until: tried.canary.until,
        },
        controls,
        answers: tried.answers,
    }))
}

/// The attempts made so far on one canary version.
struct Tried<'a> {
    versions: &'a dyn Versions,
    key: &'a str,
    version_id: &'a str,
    canary: Canary,
    answers: Vec<(Attempt, Answer)>,
}

impl Tried<'_> {
    /// Reads the version back after an attempt, judges it and returns what was read.
    async fn record(&mut self, attempt: Attempt, r: &Result<()>, permitted: &Permitted) -> After {
        let in_force = SystemTime::now() < self.canary.until;
        let read = self.versions.head_version(self.key, self.version_id).await;
        let after = state_after(&self.canary, &read);
        let answer = judge(&Reply::of(r), in_force, permitted, &after);
        self.answers.push((attempt, answer));
        // What a weakening attempt achieved is the canary the next attempt must keep.
        if let Ok(Some(u)) = read.map(|m| m.retain_until) {
            self.canary.until = self.canary.until.min(u);
        }
        after
    }
}

/// The canary as the store keeps it: a store that accepted the lock must show it.
async fn read_canary(
    versions: &dyn Versions,
    key: &str,
    version_id: &str,
    lock: LockSpec,
) -> Result<std::result::Result<Canary, String>> {
    let m = versions.head_version(key, version_id).await?;
    let Some(until) = m.retain_until else {
        return Ok(Err(format!(
            "{key} (version {version_id}): the store accepted the canary's lock but shows none on it"
        )));
    };
    Ok(Ok(Canary {
        size: m.size,
        etag: m.etag,
        until: until.min(lock.until),
    }))
}

/// Whether the credentials may delete a version by id: a delete marker is never locked, so
/// placing one on the canary and removing it by its version id needs the permission the
/// DELETE of the locked version needs, and nothing a lock refuses.
async fn delete_control(store: &dyn Store, versions: &dyn Versions, key: &str) -> Permitted {
    match store.delete_batch(&[key.to_string()]).await {
        Ok(failed) if failed.is_empty() => {}
        Ok(failed) => {
            return Permitted::Unknown(format!("placing a delete marker: {}", failed[0].message));
        }
        Err(e) => return Permitted::Unknown(format!("placing a delete marker: {}", e.one_line())),
    }
    let marker = match versions.list_versions_page(key, None).await {
        Ok(page) => page
            .versions
            .into_iter()
            .find(|v| v.key == key && v.delete_marker),
        Err(e) => return Permitted::Unknown(format!("listing versions: {}", e.one_line())),
    };
    match marker {
        Some(m) => Permitted::of(&versions.delete_version(key, &m.version_id).await),
        None => Permitted::Unknown("no delete marker appeared".into()),
    }
}

/// Whether the credentials may change the canary's retention: a lock never refuses a later
/// date. On success the canary must keep the later date.
async fn lengthen(
    retention: &dyn Retention,
    key: &str,
    version_id: &str,
    mode: LockMode,
    canary: &mut Canary,
) -> Permitted {
    let later = LockSpec {
        mode,
        until: canary.until + Duration::from_secs(2),
    };
    let r = retention.set_retention(key, version_id, Some(later)).await;
    if r.is_ok() {
        canary.until = later.until;
    }
    Permitted::of(&r)
}

/// Writes the canary with the shortest retention the store accepts.
async fn write_canary(
    retention: &dyn Retention,
    key: &str,
    mode: LockMode,
) -> Result<(String, LockSpec)> {
    let body = Bytes::from_static(b"barmans3 Object Lock proof canary\n");
    let mut last = None;
    for r in RETENTIONS {
        let lock = LockSpec {
            mode,
            until: SystemTime::now() + r,
        };
        match retention.put_locked(key, body.clone(), lock).await {
            Ok(v) => return Ok((v, lock)),
            // A store with a minimum retention refuses the shorter one: try the next.
            Err(Error::Store(f)) if f.status == Some(400) => last = Some(Error::Store(f)),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Failed(format!("PutObject {key}: refused"))))
}

/// Deletes earlier canary versions whose retention has ended (and delete markers): each check
/// leaves one version behind until its lock ends. Failures only warn: they prove nothing.
async fn remove_expired(versions: &dyn Versions, key: &str) {
    let page = match versions.list_versions_page(key, None).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("listing old lock-proof canaries: {}", e.one_line());
            return;
        }
    };
    for v in page.versions.iter().filter(|v| v.key == key) {
        let expired = v.delete_marker
            || match versions.head_version(key, &v.version_id).await {
                Ok(m) => m.retain_until.is_none_or(|u| u <= SystemTime::now()),
                Err(_) => false,
            };
        if expired && let Err(e) = versions.delete_version(key, &v.version_id).await {
            tracing::warn!(
                "removing an old lock-proof canary ({}): {}",
                v.version_id,
                e.one_line()
            );
        }
    }
}
