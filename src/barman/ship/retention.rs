//! What `full-sync` may delete from the bucket: a pure function of the remote backups, the
//! local ones and the remote WAL objects, so every rule that guards against losing data is
//! unit-tested without a server.
//!
//! A remote backup is deleted only when Barman no longer has it locally, it is older than the
//! newest remote backup, no remaining backup depends on it (an incremental's parent), and at
//! least `min_keep` complete DONE backups remain; more than `max_deletes` at once needs
//! `force`. A remote WAL is deleted only when it is older than the first WAL of the oldest
//! remaining complete DONE backup on that backup's timeline or an older one, is not a history
//! file, and is absent locally. With no complete DONE backup left, no WAL is deleted.

use std::collections::BTreeSet;

use crate::barman::wal::{self, WalKind};
use crate::error::{Error, Result};

/// A remote backup as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Backup id.
    pub id: String,
    /// backup.info and manifest are both in the bucket.
    pub complete: bool,
    /// Barman's status (`DONE`, ...).
    pub status: String,
    /// First WAL the backup needs.
    pub begin_wal: Option<String>,
    /// The backup it is an increment of (PostgreSQL 17+), if any.
    pub parent: Option<String>,
}

impl Held {
    fn counts(&self) -> bool {
        self.complete && self.status == "DONE"
    }
}

/// The limits of one run.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Complete DONE backups that always remain.
    pub min_keep: usize,
    /// Backups one run may delete without `force`.
    pub max_deletes: usize,
    /// Allow more than `max_deletes`.
    pub force: bool,
}

/// What to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deletions {
    /// Backup ids, oldest first.
    pub backups: Vec<String>,
    /// WAL objects: (key, path relative to `wals/`).
    pub wals: Vec<String>,
    /// Backups spared though Barman deleted them, with the reason.
    pub spared: Vec<String>,
}

/// Plans the deletions. `wal_objects` are (key, path relative to `wals/`) of the remote WAL
/// archive; `local_wal` says whether Barman still has a path. Err when more than
/// `max_deletes` backups would go without `force`.
pub fn plan(
    remote: &[Held],
    local: &BTreeSet<String>,
    wal_objects: &[(String, String)],
    local_wal: impl Fn(&str) -> bool,
    rules: Rules,
) -> Result<Deletions> {
    let mut out = Deletions::default();
    let newest = remote.iter().map(|b| b.id.as_str()).max();
    let mut doomed: Vec<&Held> = remote
        .iter()
        .filter(|b| !local.contains(&b.id) && Some(b.id.as_str()) < newest)
        .collect();
    spare_parents(remote, &mut doomed, &mut out.spared);
    spare_for_min_keep(remote, &mut doomed, rules.min_keep, &mut out.spared);
    if doomed.len() > rules.max_deletes && !rules.force {
        return Err(Error::Failed(format!(
            "{} remote backups would be deleted (more than max_deletes = {}): {}; check with --dry-run, then run with --force",
            doomed.len(),
            rules.max_deletes,
            doomed
                .iter()
                .map(|b| b.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let gone: BTreeSet<&str> = doomed.iter().map(|b| b.id.as_str()).collect();
    let oldest_kept = remote
        .iter()
        .filter(|b| !gone.contains(b.id.as_str()) && b.counts())
        .filter_map(|b| b.begin_wal.as_deref())
        .min_by(|a, b| wal::compare(a, b));
    if let Some(begin) = oldest_kept {
        out.wals = old_wals(begin, wal_objects, local_wal);
    }
    out.backups = doomed.iter().map(|b| b.id.clone()).collect();
    Ok(out)
}

/// A parent stays while any remaining backup is built on it (repeated: sparing a child may
/// spare its own parent).
fn spare_parents(remote: &[Held], doomed: &mut Vec<&Held>, spared: &mut Vec<String>) {
    loop {
        let staying: Vec<&Held> = remote
            .iter()
            .filter(|b| !doomed.iter().any(|d| d.id == b.id))
            .collect();
        let before = doomed.len();
        doomed.retain(|d| {
            let child = staying
                .iter()
                .find(|s| s.parent.as_deref() == Some(d.id.as_str()));
            if let Some(child) = child {
                spared.push(format!(
                    "{}: incremental backup {} depends on it",
                    d.id, child.id
                ));
            }
            child.is_none()
        });
        if doomed.len() == before {
            return;
        }
    }
}

/// At least `min_keep` complete DONE backups remain: the newest candidates that count are
/// spared.
fn spare_for_min_keep(
    remote: &[Held],
    doomed: &mut Vec<&Held>,
    min_keep: usize,
    spared: &mut Vec<String>,
) {
    let total = remote.iter().filter(|b| b.counts()).count();
    while total - doomed.iter().filter(|b| b.counts()).count() < min_keep {
        match doomed.iter().rposition(|b| b.counts()) {
            Some(i) => {
                spared.push(format!("{}: kept for min_remote_backups", doomed[i].id));
                doomed.remove(i);
            }
            None => return,
        }
    }
}

/// The WAL objects older than `begin` (on its timeline or an older one), not history files,
/// that Barman no longer has.
fn old_wals(
    begin: &str,
    wal_objects: &[(String, String)],
    local_wal: impl Fn(&str) -> bool,
) -> Vec<String> {
    let (Some(tli), Some(first)) = (wal::timeline(begin), wal::segment_number(begin, 256)) else {
        return Vec::new();
    };
    wal_objects
        .iter()
        .filter(|(_, rel)| {
            let name = rel.rsplit('/').next().unwrap_or(rel);
            let old = match wal::classify(name) {
                None | Some(WalKind::History) => false,
                Some(_) => {
                    wal::timeline(name).is_some_and(|t| t <= tli)
                        && wal::segment_number(name, 256).is_some_and(|s| s < first)
                }
            };
            old && !local_wal(rel)
        })
        .map(|(key, _)| key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(id: &str, begin: &str) -> Held {
        Held {
            id: id.into(),
            complete: true,
            status: "DONE".into(),
            begin_wal: Some(begin.into()),
            parent: None,
        }
    }
    fn inc(id: &str, begin: &str, parent: &str) -> Held {
        Held {
            parent: Some(parent.into()),
            ..b(id, begin)
        }
    }
    fn incomplete(id: &str) -> Held {
        Held {
            complete: false,
            ..b(id, "000000010000000000000001")
        }
    }
    fn ids(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }
    fn wals(names: &[&str]) -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| {
                let rel = if n.ends_with(".history") {
                    n.to_string()
                } else {
                    format!("{}/{n}", &n[..16])
                };
                (format!("p/pg/wals/{rel}"), rel)
            })
            .collect()
    }
    const R: Rules = Rules {
        min_keep: 1,
        max_deletes: 3,
        force: false,
    };

    const W1: &str = "000000010000000000000001";
    const W3: &str = "000000010000000000000003";
    const W5: &str = "000000010000000000000005";
    const W7: &str = "000000010000000000000007";

    /// (case, remote, local ids, rules) → deleted backups.
    #[test]
    fn backups_are_deleted_only_under_every_rule() {
        type Case<'a> = (&'a str, Vec<Held>, Vec<&'a str>, Rules, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "gone locally, older: deleted",
                vec![b("A", W1), b("B", W3)],
                vec!["B"],
                R,
                vec!["A"],
            ),
            (
                "still local: kept",
                vec![b("A", W1), b("B", W3)],
                vec!["A", "B"],
                R,
                vec![],
            ),
            (
                "the newest is never deleted",
                vec![b("A", W1), b("B", W3)],
                vec!["A"],
                R,
                vec![],
            ),
            (
                "min_keep 2 spares the newest candidate",
                vec![b("A", W1), b("B", W3), b("C", W5)],
                vec!["C"],
                Rules { min_keep: 2, ..R },
                vec!["A"],
            ),
            (
                "min_keep counts only complete DONE",
                vec![b("A", W1), incomplete("B"), b("C", W5)],
                vec!["C"],
                Rules { min_keep: 2, ..R },
                vec!["B"],
            ),
            (
                "incomplete leftovers go",
                vec![incomplete("A"), b("B", W3)],
                vec!["B"],
                R,
                vec!["A"],
            ),
            (
                "a parent stays while its child stays",
                vec![b("A", W1), inc("B", W3, "A"), b("C", W5)],
                vec!["B", "C"],
                R,
                vec![],
            ),
            (
                "parent and child go together",
                vec![b("A", W1), inc("B", W3, "A"), b("C", W5)],
                vec!["C"],
                R,
                vec!["A", "B"],
            ),
            (
                "a chain is spared from its leaf",
                vec![b("A", W1), inc("B", W3, "A"), inc("C", W5, "B"), b("D", W7)],
                vec!["C", "D"],
                R,
                vec![],
            ),
            (
                "force lifts the cap",
                vec![b("A", W1), b("B", W1), b("C", W1), b("D", W1), b("E", W3)],
                vec!["E"],
                Rules { force: true, ..R },
                vec!["A", "B", "C", "D"],
            ),
        ];
        for (name, remote, local, rules, want) in cases {
            let d = plan(&remote, &ids(&local), &[], |_| false, rules).expect(name);
            assert_eq!(d.backups, want, "{name}");
        }
    }

    #[test]
    fn more_than_max_deletes_is_refused_without_force() {
        let remote = vec![b("A", W1), b("B", W1), b("C", W1), b("D", W1), b("E", W3)];
        let e = plan(&remote, &ids(&["E"]), &[], |_| false, R).expect_err("cap");
        assert!(e.to_string().contains("max_deletes = 3"), "{e}");
    }

    /// (case, remote, local ids, WAL objects, local WALs) → deleted WAL names.
    #[test]
    fn wals_are_deleted_only_before_the_oldest_remaining_backup() {
        let w2 = "000000010000000000000002";
        let w4 = "000000010000000000000004";
        let t2 = "000000020000000000000002";
        type Case<'a> = (
            &'a str,
            Vec<Held>,
            Vec<&'a str>,
            Vec<&'a str>,
            Vec<&'a str>,
            Vec<&'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                "before the oldest kept begin: deleted",
                vec![b("A", W1), b("B", W3)],
                vec!["B"],
                vec![W1, w2, W3, w4],
                vec![],
                vec![W1, w2],
            ),
            (
                "history files never",
                vec![b("A", W1), b("B", W3)],
                vec!["B"],
                vec!["00000002.history", W1],
                vec![],
                vec![W1],
            ),
            (
                "still local: kept",
                vec![b("A", W1), b("B", W3)],
                vec!["B"],
                vec![W1, w2],
                vec![w2],
                vec![W1],
            ),
            (
                "a newer timeline is kept",
                vec![b("A", W1), b("B", W3)],
                vec!["B"],
                vec![t2, W1],
                vec![],
                vec![W1],
            ),
            (
                "no backup deleted: WALs before the oldest still go",
                vec![b("A", W3)],
                vec!["A"],
                vec![W1, W3],
                vec![],
                vec![W1],
            ),
            (
                "no complete DONE backup: none",
                vec![incomplete("A"), incomplete("B")],
                vec!["B"],
                vec![W1],
                vec![],
                vec![],
            ),
            (
                "a spared parent keeps its WALs",
                vec![b("A", W1), inc("B", W3, "A"), b("C", W5)],
                vec!["B", "C"],
                vec![W1, w2],
                vec![],
                vec![],
            ),
            (
                "labels and partials follow their segment",
                vec![b("A", W1), b("B", W3)],
                vec!["B"],
                vec![
                    "000000010000000000000002.00000028.backup",
                    "000000010000000000000002.partial",
                ],
                vec![],
                vec![
                    "000000010000000000000002.00000028.backup",
                    "000000010000000000000002.partial",
                ],
            ),
        ];
        for (name, remote, local, objects, here, want) in cases {
            let here: BTreeSet<String> = wals(&here).into_iter().map(|(_, r)| r).collect();
            let d = plan(
                &remote,
                &ids(&local),
                &wals(&objects),
                |r| here.contains(r),
                R,
            )
            .expect(name);
            let got: Vec<&str> = d
                .wals
                .iter()
                .map(|k| k.rsplit('/').next().unwrap_or(""))
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }
}
