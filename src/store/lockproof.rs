//! The Object Lock proof: a store that accepts a lock and then allows a DELETE anyway is worse
//! than one without locks, because nobody looks. One small canary object is written with the
//! configured mode and the shortest retention the store accepts, under one fixed key (expired
//! canary versions are removed on the next run, so repeated checks do not pile up); then the
//! three things a lock must refuse are tried on that version: DELETE by version id, an earlier
//! retain-until date, and (governance) removing the lock without the bypass header.
//!
//! [`verdict`] is pure: an answer of success means the store allowed it; a refusal (4xx) means
//! the lock held; anything else (no answer, 5xx, the lock already expired) proves nothing and
//! is reported as such, never as "holds".

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::s3::LockMode;
use super::{LockSpec, Retention, Store, Versions};
use crate::error::{Error, Result};

/// The canary's key under the configured prefix.
pub const CANARY_KEY: &str = ".barmans3-lock-proof";

/// Retentions tried for the canary, shortest first: long enough to outlive the check, short
/// enough that an old canary is gone by the next day's check.
const RETENTIONS: [Duration; 2] = [Duration::from_secs(3600), Duration::from_secs(86_400)];

/// What the proof tries on the locked version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// DeleteObject by version id.
    Delete,
    /// PutObjectRetention with an earlier retain-until date.
    Shorten,
    /// PutObjectRetention without a retention (governance), without the bypass header.
    Unlock,
}

impl Attempt {
    /// What was tried, in words.
    pub fn describe(self) -> &'static str {
        match self {
            Attempt::Delete => "DELETE of the locked version",
            Attempt::Shorten => "shortening its retain-until date",
            Attempt::Unlock => "removing its governance lock without the bypass header",
        }
    }
}

/// How the store answered one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The store refused, with its reason.
    Refused(String),
    /// The store answered success.
    Allowed,
    /// No verdict: the request failed in a way that says nothing about the lock.
    Unknown(String),
}

/// The proof's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every attempt was refused.
    Holds,
    /// The store allowed these.
    Allowed(Vec<Attempt>),
    /// Nothing was allowed, but these proved nothing.
    Inconclusive(Vec<(Attempt, String)>),
}

/// The canary, its lock and what each attempt got.
#[derive(Debug, Clone)]
pub struct Proof {
    /// The canary's full key.
    pub key: String,
    /// Its version id.
    pub version_id: String,
    /// The lock it was written with.
    pub lock: LockSpec,
    /// Each attempt and its answer, in the order tried.
    pub answers: Vec<(Attempt, Answer)>,
}

/// The verdict over a proof's answers.
pub fn verdict(answers: &[(Attempt, Answer)]) -> Verdict {
    let allowed: Vec<Attempt> = answers
        .iter()
        .filter(|(_, a)| *a == Answer::Allowed)
        .map(|(t, _)| *t)
        .collect();
    if !allowed.is_empty() {
        return Verdict::Allowed(allowed);
    }
    let unknown: Vec<(Attempt, String)> = answers
        .iter()
        .filter_map(|(t, a)| match a {
            Answer::Unknown(why) => Some((*t, why.clone())),
            _ => None,
        })
        .collect();
    if unknown.is_empty() && !answers.is_empty() {
        Verdict::Holds
    } else {
        Verdict::Inconclusive(unknown)
    }
}

/// How an attempt's result reads, given whether the lock was still in force when it was sent.
pub fn classify(result: &Result<()>, in_force: bool) -> Answer {
    match result {
        _ if !in_force => Answer::Unknown("the canary's retention had already ended".into()),
        Ok(()) => Answer::Allowed,
        Err(Error::Store(f)) if !f.retryable && matches!(f.status, Some(400..=499)) => {
            Answer::Refused(
                f.code
                    .clone()
                    .unwrap_or_else(|| f.status.map_or("refused".into(), |s| format!("HTTP {s}"))),
            )
        }
        Err(e) => Answer::Unknown(e.one_line()),
    }
}

/// Runs the proof on `store` with the configured lock `mode`; `key` is the canary's full key.
pub async fn prove(store: &dyn Store, key: &str, mode: LockMode) -> Result<Proof> {
    let (Some(retention), Some(versions)) = (store.retention(), store.versions()) else {
        return Err(Error::Config(format!(
            "--lock-proof: {} has no Object Lock (an S3 bucket with Object Lock enabled is needed)",
            store.describe()
        )));
    };
    if retention.lock_status().await?.is_none() {
        return Err(Error::Failed(format!(
            "{}: Object Lock is not enabled on the bucket, so nothing it holds is locked",
            store.describe()
        )));
    }
    remove_expired(versions, key).await;
    let (version_id, lock) = write_canary(retention, key, mode).await?;
    let mut answers = Vec::new();
    let in_force = || SystemTime::now() < lock.until;
    let r = versions.delete_version(key, &version_id).await;
    answers.push((Attempt::Delete, classify(&r, in_force())));
    let gone = matches!(
        versions.head_version(key, &version_id).await,
        Err(Error::NotFound { .. })
    );
    if !gone {
        let earlier = LockSpec {
            mode,
            until: SystemTime::now()
                + (lock
                    .until
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
                    / 2),
        };
        let r = retention
            .set_retention(key, &version_id, Some(earlier))
            .await;
        answers.push((Attempt::Shorten, classify(&r, in_force())));
        if mode == LockMode::Governance {
            let r = retention.set_retention(key, &version_id, None).await;
            answers.push((Attempt::Unlock, classify(&r, in_force())));
        }
    }
    Ok(Proof {
        key: key.to_string(),
        version_id,
        lock,
        answers,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StoreFailure;

    fn refused(status: u16, code: &str) -> Result<()> {
        Err(Error::Store(StoreFailure {
            op: "DeleteObject",
            key: "k".into(),
            status: Some(status),
            code: Some(code.into()),
            message: "no".into(),
            retryable: status >= 500,
        }))
    }

    #[test]
    fn only_a_refusal_while_the_lock_is_in_force_counts_as_holding() {
        assert_eq!(classify(&Ok(()), true), Answer::Allowed);
        assert_eq!(
            classify(&refused(403, "AccessDenied"), true),
            Answer::Refused("AccessDenied".into())
        );
        assert!(matches!(
            classify(&refused(503, "SlowDown"), true),
            Answer::Unknown(_)
        ));
        assert!(matches!(
            classify(&Err(Error::Failed("connection reset".into())), true),
            Answer::Unknown(_)
        ));
        // After the retain-until date a success is no evidence, and neither is a refusal.
        assert!(matches!(classify(&Ok(()), false), Answer::Unknown(_)));
        assert!(matches!(
            classify(&refused(403, "AccessDenied"), false),
            Answer::Unknown(_)
        ));
    }

    #[test]
    fn anything_allowed_fails_the_proof_and_nothing_unknown_passes_it() {
        let no = || Answer::Refused("AccessDenied".into());
        assert_eq!(
            verdict(&[(Attempt::Delete, no()), (Attempt::Shorten, no())]),
            Verdict::Holds
        );
        assert_eq!(
            verdict(&[
                (Attempt::Delete, Answer::Allowed),
                (Attempt::Shorten, Answer::Unknown("x".into())),
            ]),
            Verdict::Allowed(vec![Attempt::Delete])
        );
        assert_eq!(
            verdict(&[
                (Attempt::Delete, no()),
                (Attempt::Shorten, Answer::Unknown("timeout".into())),
            ]),
            Verdict::Inconclusive(vec![(Attempt::Shorten, "timeout".into())])
        );
        // No attempt made is no proof.
        assert_eq!(verdict(&[]), Verdict::Inconclusive(vec![]));
    }
}
