//! Whether a queued backup is uploaded now, later, or never: a pure function of what the hook
//! saw, what backup.info says at sync time and how long the task has waited, so every queue
//! transition is unit-tested without a server. The I/O around it is in [`super::backup`] and
//! [`super::basesync`].
//!
//! | found | decision |
//! |---|---|
//! | the hook saw FAILED | never (`.error`) |
//! | no backup.info, or a `delete_this` annotation | never: gone or being deleted |
//! | `DONE` | upload (an incremental: once its parent is complete in the bucket) |
//! | `FAILED` | never, with Barman's error |
//! | `WAITING_FOR_WALS` past `wait_for_wals_max` | never: check `barman check-backup` |
//! | anything else (`WAITING_FOR_WALS`, `STARTED`, `EMPTY`, no status) | wait (`.run`) |

use std::time::Duration;

/// What backup.info and the bucket say at sync time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen<'a> {
    /// `BARMAN_STATUS` the hook recorded.
    pub hook_status: &'a str,
    /// Whether backup.info exists (in `meta/` or `base/<id>/`).
    pub info_found: bool,
    /// Whether Barman marked the backup for deletion.
    pub being_deleted: bool,
    /// backup.info's `status`.
    pub status: &'a str,
    /// backup.info's `error`.
    pub error: Option<&'a str>,
    /// The parent of an incremental backup, and whether it is complete in the bucket.
    pub parent: Option<(&'a str, bool)>,
    /// Seconds since the task was queued.
    pub waited: u64,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Upload it now.
    Upload,
    /// Not yet: leave the task in `.run`, with the reason.
    Wait(String),
    /// Never: the task goes to `.error`, with the reason.
    Never(String),
}

/// Decides for backup `id`.
pub fn decide(id: &str, seen: &Seen, max_wait: Duration) -> Decision {
    if seen.hook_status == "FAILED" {
        return Decision::Never("Barman reported the backup FAILED".into());
    }
    if !seen.info_found {
        return Decision::Never(format!(
            "backup {id} is gone: Barman has no backup.info for it"
        ));
    }
    if seen.being_deleted {
        return Decision::Never(format!("backup {id} is being deleted by Barman"));
    }
    match seen.status {
        "DONE" => match seen.parent {
            Some((parent, false)) => Decision::Wait(format!(
                "backup {id} is an incremental backup of {parent}, which is not complete in the bucket yet: it is uploaded once its parent is"
            )),
            _ => Decision::Upload,
        },
        "FAILED" => Decision::Never(format!(
            "Barman reports backup {id} FAILED: {}",
            seen.error.unwrap_or("no error recorded")
        )),
        "WAITING_FOR_WALS" if seen.waited > max_wait.as_secs() => Decision::Never(format!(
            "backup {id} is still WAITING_FOR_WALS after {}; check `barman check-backup`",
            crate::units::human_duration(max_wait)
        )),
        other => Decision::Wait(format!(
            "backup {id} is {}: will upload once Barman marks it DONE",
            if other.is_empty() {
                "without status"
            } else {
                other
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEEK: Duration = Duration::from_secs(7 * 86400);

    fn seen(status: &str) -> Seen<'_> {
        Seen {
            hook_status: "WAITING_FOR_WALS",
            info_found: true,
            status,
            ..Seen::default()
        }
    }

    /// (case, seen, expected: "upload" | "wait" | "never", fragment of the reason)
    #[test]
    fn each_queue_transition_follows_the_table() {
        let cases: Vec<(&str, Seen, &str, &str)> = vec![
            ("DONE uploads", seen("DONE"), "upload", ""),
            (
                "hook saw FAILED",
                Seen {
                    hook_status: "FAILED",
                    ..seen("DONE")
                },
                "never",
                "FAILED",
            ),
            (
                "backup.info gone",
                Seen {
                    info_found: false,
                    ..seen("DONE")
                },
                "never",
                "gone",
            ),
            (
                "being deleted",
                Seen {
                    being_deleted: true,
                    ..seen("DONE")
                },
                "never",
                "being deleted",
            ),
            (
                "FAILED later",
                Seen {
                    error: Some("WAL missing"),
                    ..seen("FAILED")
                },
                "never",
                "WAL missing",
            ),
            (
                "FAILED without error",
                seen("FAILED"),
                "never",
                "no error recorded",
            ),
            (
                "waiting for WALs",
                seen("WAITING_FOR_WALS"),
                "wait",
                "WAITING_FOR_WALS",
            ),
            (
                "waiting too long",
                Seen {
                    waited: 8 * 86400,
                    ..seen("WAITING_FOR_WALS")
                },
                "never",
                "check-backup",
            ),
            ("still copying", seen("STARTED"), "wait", "STARTED"),
            ("no status", seen(""), "wait", "without status"),
            (
                "incremental, parent uploaded",
                Seen {
                    parent: Some(("P", true)),
                    ..seen("DONE")
                },
                "upload",
                "",
            ),
            (
                "incremental, parent not yet",
                Seen {
                    parent: Some(("P", false)),
                    ..seen("DONE")
                },
                "wait",
                "incremental backup of P",
            ),
        ];
        for (name, s, want, fragment) in cases {
            let d = decide("20261121T220933", &s, WEEK);
            let (kind, why) = match &d {
                Decision::Upload => ("upload", ""),
                Decision::Wait(w) => ("wait", w.as_str()),
                Decision::Never(w) => ("never", w.as_str()),
            };
            assert_eq!(kind, want, "{name}: {d:?}");
            assert!(why.contains(fragment), "{name}: {why}");
        }
    }
}
