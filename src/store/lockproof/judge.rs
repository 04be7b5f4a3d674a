//! The lock proof's decisions, pure because a wrong "lock holds" is how backups get lost: what
//! one attempt's answer proves, and the verdict over all of them.
//!
//! A refusal alone proves nothing: S3 answers a DELETE of a locked version with `403
//! AccessDenied`, and so it answers credentials that lack `s3:DeleteObjectVersion` (moto's
//! lock refusal reads exactly like an IAM one: "Access Denied"). An attempt counts as held by
//! the lock only when the store refused it, the canary version read back afterwards is still
//! there and unchanged, and the refusal was the lock's: either its words name the lock, or a
//! control (the same request on something no lock protects) showed the credentials may do it.

use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::store::ObjectMeta;

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

/// What one attempt proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The lock refused it (the store's error code).
    Refused(String),
    /// The store did it, or said it did.
    Allowed,
    /// No verdict: the answer says nothing about the lock.
    Unknown(String),
}

/// The proof's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every attempt was refused by the lock.
    Holds,
    /// The store allowed these.
    Allowed(Vec<Attempt>),
    /// Nothing was allowed, but these proved nothing.
    Inconclusive(Vec<(Attempt, String)>),
}

/// The store's answer to one request, as the decision reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Success.
    Done,
    /// A 4xx refusal with the store's code and message.
    Refused {
        /// HTTP status.
        status: u16,
        /// S3 error code, when sent.
        code: Option<String>,
        /// The store's message.
        message: String,
    },
    /// No answer, a 5xx, anything that is not a refusal.
    Failed(String),
}

impl Reply {
    /// Reads a request's result.
    pub fn of(r: &Result<()>) -> Reply {
        match r {
            Ok(()) => Reply::Done,
            Err(Error::Store(f)) if !f.retryable && matches!(f.status, Some(400..=499)) => {
                Reply::Refused {
                    status: f.status.unwrap_or(400),
                    code: f.code.clone(),
                    message: f.message.clone(),
                }
            }
            Err(e) => Reply::Failed(e.one_line()),
        }
    }

    fn code(&self) -> String {
        match self {
            Reply::Refused { code, status, .. } => {
                code.clone().unwrap_or_else(|| format!("HTTP {status}"))
            }
            Reply::Done => "done".into(),
            Reply::Failed(why) => why.clone(),
        }
    }
}

/// The canary version read back after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    /// Still there, same bytes, retention not earlier, lock not removed.
    Unchanged,
    /// The version is gone.
    Gone,
    /// Still there but weakened or altered (what changed).
    Changed(String),
    /// Could not be read back (why).
    Unreadable(String),
}

/// Whether the credentials may send what an attempt sends, shown by a control request on
/// something no lock protects (a delete marker's removal; a longer retention).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permitted {
    /// The control succeeded.
    Yes,
    /// The control was refused as well (how).
    No(String),
    /// The control proved nothing (why).
    Unknown(String),
}

impl Permitted {
    /// Reads a control request's result.
    pub fn of(r: &Result<()>) -> Permitted {
        match Reply::of(r) {
            Reply::Done => Permitted::Yes,
            Reply::Refused { code, message, .. } if names_the_lock(code.as_deref(), &message) => {
                Permitted::Unknown(format!("the control was refused by a lock ({message})"))
            }
            r @ Reply::Refused { .. } => Permitted::No(r.code()),
            Reply::Failed(why) => Permitted::Unknown(why),
        }
    }
}

/// What the canary was when written, to compare each read-back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canary {
    /// Its size.
    pub size: u64,
    /// Its ETag, if the store gave one.
    pub etag: Option<String>,
    /// The retain-until date it must keep at least.
    pub until: SystemTime,
}

/// Stores keep retain-until dates to the second (or the millisecond): a read-back this much
/// earlier than what was set is the same date.
const DATE_SLACK: Duration = Duration::from_secs(1);

/// Whether a refusal's words name Object Lock (AWS: "Access Denied because object protected by
/// object lock."; MinIO: `ObjectLocked`, "Object is WORM protected and cannot be overwritten").
/// Only whole phrases count, never single words: IAM's refusals quote the action and the
/// resource ("not authorized to perform: s3:PutObjectRetention on resource
/// arn:aws:s3:::worm-backups/…"), where "retention" or a bucket named "worm" say nothing about
/// the lock. `InvalidRetentionPeriod` is a validation error, not the lock refusing.
pub fn names_the_lock(code: Option<&str>, message: &str) -> bool {
    if code == Some("ObjectLocked") {
        return true;
    }
    let m = message.to_ascii_lowercase();
    if m.contains("not authorized to perform") || m.contains("arn:") {
        return false;
    }
    [
        "protected by object lock",
        "object is worm protected",
        "object is locked",
        "under legal hold",
    ]
    .iter()
    .any(|w| m.contains(w))
}

/// The canary as read back (`HEAD` by version id) compared with what it was.
pub fn state_after(was: &Canary, read: &Result<ObjectMeta>) -> After {
    match read {
        Err(Error::NotFound { .. }) => After::Gone,
        Err(e) => After::Unreadable(e.one_line()),
        Ok(m) if m.size != was.size => After::Changed(format!("its size is now {}", m.size)),
        Ok(m) if matches!((&m.etag, &was.etag), (Some(a), Some(b)) if a != b) => {
            After::Changed("its ETag changed".into())
        }
        Ok(m) => match m.retain_until {
            None => After::Changed("its lock is gone".into()),
            Some(u) if u + DATE_SLACK < was.until => {
                After::Changed("its retain-until date is earlier".into())
            }
            Some(_) => After::Unchanged,
        },
    }
}

/// What one attempt proves: the store's reply, whether the lock was still in force when it
/// was sent, what the control showed of the credentials, and the version read back after.
pub fn judge(reply: &Reply, in_force: bool, permitted: &Permitted, after: &After) -> Answer {
    if !in_force {
        return Answer::Unknown("the canary's retention had already ended".into());
    }
    match (reply, after) {
        // The store said yes, or said no and did it anyway.
        (Reply::Done, _) | (_, After::Gone | After::Changed(_)) => Answer::Allowed,
        (Reply::Failed(why), _) => Answer::Unknown(why.clone()),
        (Reply::Refused { .. }, After::Unreadable(why)) => Answer::Unknown(format!(
            "refused ({}), but the version could not be read back: {why}",
            reply.code()
        )),
        (Reply::Refused { code, message, .. }, After::Unchanged) => {
            // A refused control outweighs the words: credentials that may not do it
            // elsewhere prove nothing here, whatever the refusal says.
            let refused_control = matches!(permitted, Permitted::No(_));
            if !refused_control && names_the_lock(code.as_deref(), message) {
                return Answer::Refused(reply.code());
            }
            match permitted {
                Permitted::Yes => Answer::Refused(reply.code()),
                Permitted::No(how) => Answer::Unknown(format!(
                    "refused ({}), and so was the same request where no lock applies ({how}): \
                     the credentials lack the permission, which says nothing about the lock",
                    reply.code()
                )),
                Permitted::Unknown(why) => Answer::Unknown(format!(
                    "refused ({}) without naming the lock, and whether the credentials may do \
                     it is unknown ({why})",
                    reply.code()
                )),
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StoreFailure;

    fn refused(status: u16, code: &str, message: &str) -> Result<()> {
        Err(Error::Store(StoreFailure {
            op: "DeleteObject",
            key: "k".into(),
            status: Some(status),
            code: Some(code.into()),
            message: message.into(),
            retryable: status >= 500,
        }))
    }

    fn denied() -> Reply {
        Reply::of(&refused(403, "AccessDenied", "Access Denied"))
    }

    const LOCK_WORDS: &str = "Access Denied because object protected by object lock.";

    #[test]
    fn a_bare_access_denied_counts_only_when_the_credentials_are_shown_to_be_allowed() {
        let yes = Permitted::Yes;
        let no = Permitted::No("AccessDenied".into());
        let unknown = Permitted::Unknown("timeout".into());
        assert_eq!(
            judge(&denied(), true, &yes, &After::Unchanged),
            Answer::Refused("AccessDenied".into())
        );
        // An IAM refusal: the control was refused too. Not "the lock holds".
        assert!(matches!(
            judge(&denied(), true, &no, &After::Unchanged),
            Answer::Unknown(w) if w.contains("permission")
        ));
        assert!(matches!(
            judge(&denied(), true, &unknown, &After::Unchanged),
            Answer::Unknown(_)
        ));
        // The lock's own words need no control, but a refused control outweighs them.
        let by_lock = Reply::of(&refused(403, "AccessDenied", LOCK_WORDS));
        assert_eq!(
            judge(&by_lock, true, &unknown, &After::Unchanged),
            Answer::Refused("AccessDenied".into())
        );
        assert!(matches!(
            judge(&by_lock, true, &no, &After::Unchanged),
            Answer::Unknown(_)
        ));
        let minio = Reply::of(&refused(400, "ObjectLocked", "Object is WORM protected"));
        assert_eq!(
            judge(&minio, true, &unknown, &After::Unchanged),
            Answer::Refused("ObjectLocked".into())
        );
    }

    #[test]
    fn iam_refusals_quoting_the_action_or_a_bucket_name_do_not_name_the_lock() {
        let iam = "User: arn:aws:iam::1:user/b is not authorized to perform: \
                   s3:PutObjectRetention on resource: arn:aws:s3:::worm-backups/lock-proof";
        assert!(!names_the_lock(Some("AccessDenied"), iam));
        assert!(!names_the_lock(
            Some("InvalidRetentionPeriod"),
            "the retention period is invalid"
        ));
        assert!(!names_the_lock(
            Some("AccessDenied"),
            "retention locked worm"
        ));
        assert!(names_the_lock(Some("AccessDenied"), LOCK_WORDS));
        assert!(names_the_lock(Some("ObjectLocked"), ""));
        assert!(names_the_lock(
            Some("AccessDenied"),
            "Object is WORM protected and cannot be overwritten"
        ));
        let reply = Reply::of(&refused(403, "AccessDenied", iam));
        assert!(matches!(
            judge(
                &reply,
                true,
                &Permitted::Unknown("x".into()),
                &After::Unchanged
            ),
            Answer::Unknown(_)
        ));
    }

    #[test]
    fn the_proof_is_the_version_unchanged_not_the_call_failing() {
        let by_lock = Reply::of(&refused(403, "AccessDenied", LOCK_WORDS));
        let yes = Permitted::Yes;
        // Refused in words, done in fact.
        assert_eq!(judge(&by_lock, true, &yes, &After::Gone), Answer::Allowed);
        assert_eq!(
            judge(&by_lock, true, &yes, &After::Changed("earlier".into())),
            Answer::Allowed
        );
        assert_eq!(
            judge(&Reply::Failed("reset".into()), true, &yes, &After::Gone),
            Answer::Allowed
        );
        // Not read back: no verdict, whatever the words.
        assert!(matches!(
            judge(&by_lock, true, &yes, &After::Unreadable("503".into())),
            Answer::Unknown(_)
        ));
        // A success is allowed even when the version is still there (the store lied either way).
        assert_eq!(
            judge(&Reply::Done, true, &yes, &After::Unchanged),
            Answer::Allowed
        );
        assert!(matches!(
            judge(
                &Reply::of(&refused(503, "SlowDown", "")),
                true,
                &yes,
                &After::Unchanged
            ),
            Answer::Unknown(_)
        ));
        // After the retain-until date nothing is evidence.
        assert!(matches!(
            judge(&Reply::Done, false, &yes, &After::Gone),
            Answer::Unknown(_)
        ));
        assert!(matches!(
            judge(&by_lock, false, &yes, &After::Unchanged),
            Answer::Unknown(_)
        ));
    }

    #[test]
    fn a_control_refused_in_the_locks_words_proves_nothing_about_permissions() {
        assert_eq!(Permitted::of(&Ok(())), Permitted::Yes);
        assert_eq!(
            Permitted::of(&refused(403, "AccessDenied", "Access Denied")),
            Permitted::No("AccessDenied".into())
        );
        assert!(matches!(
            Permitted::of(&refused(403, "AccessDenied", LOCK_WORDS)),
            Permitted::Unknown(_)
        ));
        assert!(matches!(
            Permitted::of(&refused(500, "InternalError", "")),
            Permitted::Unknown(_)
        ));
    }

    #[test]
    fn the_read_back_must_show_the_same_bytes_and_a_lock_no_weaker() {
        let now = SystemTime::now();
        let was = Canary {
            size: 10,
            etag: Some("e1".into()),
            until: now + Duration::from_secs(3600),
        };
        let meta = |size, etag: &str, until: Option<SystemTime>| {
            let mut m = ObjectMeta::listed("k", size);
            m.etag = Some(etag.into());
            m.retain_until = until;
            Ok(m)
        };
        assert_eq!(
            state_after(&was, &meta(10, "e1", Some(was.until))),
            After::Unchanged
        );
        // Stores round the date to the second.
        assert_eq!(
            state_after(
                &was,
                &meta(10, "e1", Some(was.until - Duration::from_millis(900)))
            ),
            After::Unchanged
        );
        assert!(matches!(
            state_after(&was, &meta(10, "e1", Some(now + Duration::from_secs(1800)))),
            After::Changed(_)
        ));
        assert!(matches!(
            state_after(&was, &meta(10, "e1", None)),
            After::Changed(_)
        ));
        assert!(matches!(
            state_after(&was, &meta(11, "e1", Some(was.until))),
            After::Changed(_)
        ));
        assert!(matches!(
            state_after(&was, &meta(10, "e2", Some(was.until))),
            After::Changed(_)
        ));
        assert_eq!(
            state_after(&was, &Err(Error::NotFound { key: "k".into() })),
            After::Gone
        );
        assert!(matches!(
            state_after(&was, &Err(Error::Failed("reset".into()))),
            After::Unreadable(_)
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
