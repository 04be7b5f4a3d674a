//! What `full-sync` may delete from the bucket: a pure function of the remote backups, the
//! local ones and the remote WAL objects, so every rule that guards against losing data is
//! unit-tested without a server. `--dry-run` prints exactly this plan; the real run carries it
//! out.
//!
//! A backup is *restorable* from the bucket only when it and every backup of its chain (the
//! parents of an incremental backup, PostgreSQL 17+) are complete and DONE there. Nothing at all
//! is deleted while the newest backup Barman has DONE is not restorable from the bucket (an
//! upload under way, a busy backup): until then the older ones may be the only copies. A
//! remote backup is deleted only when Barman no longer has it locally, it is older than the
//! newest remote backup, no remaining backup depends on it (an incremental's parent), and at
//! least `min_keep` restorable backups remain: `min_keep` spares a backup with its whole chain,
//! never an incremental alone. More than `max_deletes` at once needs `force`. A remote WAL is
//! deleted only when it is older than the first WAL of the oldest remaining restorable backup
//! on that backup's timeline or an older one, is not a history file, and is absent locally.
//! With no restorable backup left, no WAL is deleted.

use std::collections::{BTreeMap, BTreeSet};

use crate::barman::wal::{self, WalKind};
use crate::error::{Error, Result};

/// A remote backup as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Backup id.
    pub id: String,
    /// Its own backup.info and manifest are both in the bucket (its chain aside).
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

/// What Barman holds locally.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Local {
    /// Every backup id Barman has (any status).
    pub ids: BTreeSet<String>,
    /// The newest of them whose status is DONE.
    pub newest_done: Option<String>,
}

/// The limits of one run.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Restorable backups that always remain.
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

/// The backups whose whole chain counts (complete and DONE) within `set`.
pub fn restorable<'a>(set: &[&'a Held]) -> BTreeSet<&'a str> {
    let by_id: BTreeMap<&str, &Held> = set.iter().map(|b| (b.id.as_str(), *b)).collect();
    let mut out = BTreeSet::new();
    for b in set {
        let mut cur = Some(*b);
        let mut seen = BTreeSet::new();
        let ok = loop {
            match cur {
                None => break false,
                Some(h) if !h.counts() || !seen.insert(h.id.as_str()) => break false,
                Some(h) => match &h.parent {
                    None => break true,
                    Some(p) => cur = by_id.get(p.as_str()).copied(),
                },
            }
        };
        if ok {
            out.insert(b.id.as_str());
        }
    }
    out
}

/// Plans the deletions. `wal_objects` are (key, path relative to `wals/`) of the remote WAL
/// archive; `local_wal` says whether Barman still has a path. Err when more than
/// `max_deletes` backups would go without `force`.
pub fn plan(
    remote: &[Held],
    local: &Local,
    wal_objects: &[(String, String)],
    local_wal: impl Fn(&str) -> bool,
    rules: Rules,
) -> Result<Deletions> {
    let mut out = Deletions::default();
    let all: Vec<&Held> = remote.iter().collect();
    let whole = restorable(&all);
    let guard = match &local.newest_done {
        Some(id) if whole.contains(id.as_str()) => None,
        Some(id) => Some(format!(
            "nothing deleted: {id}, the newest backup Barman has DONE, is not restorable from the bucket yet (it or a backup of its chain is missing or incomplete there)"
        )),
        None => Some("nothing deleted: Barman has no DONE backup".to_string()),
    };
    if let Some(why) = guard {
        out.spared.push(why);
        return Ok(out);
    }
    let newest = remote.iter().map(|b| b.id.as_str()).max();
    let mut doomed: Vec<&Held> = remote
        .iter()
        .filter(|b| !local.ids.contains(&b.id) && Some(b.id.as_str()) < newest)
        .collect();
    spare_parents(remote, &mut doomed, &mut out.spared);
    spare_for_min_keep(remote, &whole, &mut doomed, rules.min_keep, &mut out.spared);
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
    let staying: Vec<&Held> = remote
        .iter()
        .filter(|b| !gone.contains(b.id.as_str()))
        .collect();
    let kept = restorable(&staying);
    let oldest_kept = staying
        .iter()
        .filter(|b| kept.contains(b.id.as_str()))
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

/// At least `min_keep` restorable backups remain: the newest candidate restorable with its
/// chain is spared together with that whole chain, until enough remain or none is left.
fn spare_for_min_keep(
    remote: &[Held],
    whole: &BTreeSet<&str>,
    doomed: &mut Vec<&Held>,
    min_keep: usize,
    spared: &mut Vec<String>,
) {
    loop {
        let staying: Vec<&Held> = remote
            .iter()
            .filter(|b| !doomed.iter().any(|d| d.id == b.id))
            .collect();
        if restorable(&staying).len() >= min_keep {
            return;
        }
        let Some(i) = doomed.iter().rposition(|b| whole.contains(b.id.as_str())) else {
            return;
        };
        let pick = doomed.remove(i);
        spared.push(format!("{}: kept for min_remote_backups", pick.id));
        // Its chain, parent by parent, stays with it.
        let mut parent = pick.parent.as_deref();
        let mut steps = 0;
        while let Some(p) = parent.filter(|_| steps <= remote.len()) {
            steps += 1;
            if let Some(j) = doomed.iter().position(|d| d.id == p) {
                doomed.remove(j);
                spared.push(format!(
                    "{p}: in the chain of {}, kept for min_remote_backups",
                    pick.id
                ));
            }
            parent = remote
                .iter()
                .find(|b| b.id == p)
                .and_then(|b| b.parent.as_deref());
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
mod tests;
