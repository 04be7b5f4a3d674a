//! What a `wal-sync` run looks at, a step at a time: the local archive (history files at the
//! top of `wals/`, hash directories in order) and the bucket's listing of it, read in step
//! with the hash directories, so a run holds one step's files, listing and ledgers whatever the
//! archive's size ([`Survey::step`]), and still makes one listing request per 1000 objects.

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::state::{Ledger, LocalState, WalState};
use super::walplan::{self, Listed, LocalWal};
use crate::barman::conf::ServerDirs;
use crate::barman::remote::Remote;
use crate::barman::wal::{self, WalKind};
use crate::clock::now;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::ListRequest;
use crate::transfer::{ListCursor, Transfer};

pub(super) fn is_hash_dir(name: &str) -> bool {
    name.len() == 16 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Local WAL files in hash directories ≥ `from` (all when `None`), plus the history files at
/// the top of `wals/`, sorted by path; and the hash directories seen, sorted.
pub fn scan_local(wals: &Path, from: Option<&str>) -> Result<(Vec<LocalWal>, Vec<String>)> {
    let (mut files, dirs) = scan_top(wals)?;
    for d in dirs.iter().filter(|d| from.is_none_or(|f| d.as_str() >= f)) {
        scan_dir(wals, d, &mut files)?;
    }
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok((files, dirs))
}

/// The top of `wals/`: its history files, sorted, and its hash directories, sorted.
pub(super) fn scan_top(wals: &Path) -> Result<(Vec<LocalWal>, Vec<String>)> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let rd = std::fs::read_dir(wals)
        .map_err(|e| Error::io(format!("list WAL directory {}", wals.display()), e))?;
    for e in rd {
        let e = e.map_err(|e| Error::io(format!("list {}", wals.display()), e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let ft = e
            .file_type()
            .map_err(|err| Error::io(format!("stat {}", e.path().display()), err))?;
        if ft.is_dir() && is_hash_dir(&name) {
            dirs.push(name);
        } else if ft.is_file() && wal::classify(&name) == Some(WalKind::History) {
            files.push(local_wal(name, e.path())?);
        }
    }
    dirs.sort();
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok((files, dirs))
}

/// Appends the WAL files of hash directory `d` (unsorted).
pub(super) fn scan_dir(wals: &Path, d: &str, files: &mut Vec<LocalWal>) -> Result<()> {
    let path = wals.join(d);
    // Steps scan their directories long after the run listed them: one Barman's retention
    // removed meanwhile is empty, and so is a file it removed, never an error that fails the run.
    let rd = match std::fs::read_dir(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        r => r.map_err(|e| Error::io(format!("list {}", path.display()), e))?,
    };
    for e in rd {
        let e = e.map_err(|e| Error::io(format!("list {}", path.display()), e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if wal::classify(&name).is_some_and(|k| k != WalKind::History)
            && e.file_type().is_ok_and(|t| t.is_file())
        {
            match std::fs::symlink_metadata(e.path()) {
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(Error::io(format!("stat {}", e.path().display()), err)),
                Ok(m) => files.push(wal_of(format!("{d}/{name}"), e.path(), &m)),
            }
        }
    }
    Ok(())
}

pub(super) fn local_wal(rel: String, path: PathBuf) -> Result<LocalWal> {
    let m = std::fs::symlink_metadata(&path)
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
    Ok(wal_of(rel, path, &m))
}

fn wal_of(rel: String, path: PathBuf, m: &std::fs::Metadata) -> LocalWal {
    LocalWal {
        rel,
        path,
        size: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    }
}

/// Hash directories per step of a run (4096 segments of 16 MiB): a step's local files, its
/// part of the listing and its ledgers are what a run holds at a time, whatever the archive's
/// size.
pub(super) const STEP_DIRS: usize = 16;

/// One run's starting point: the state, the hash directories and history files, and the
/// listing, read a step at a time ([`Survey::step`]).
#[derive(Debug)]
pub(super) struct Survey {
    pub(super) state: WalState,
    pub(super) full: bool,
    pub(super) window: Option<String>,
    wals: PathBuf,
    /// Every local hash directory, sorted (the next window is made from them).
    pub(super) hash_dirs: Vec<String>,
    /// History files not yet handed to a step.
    history: VecDeque<LocalWal>,
    /// Steps of hash directories from the window on; the last one takes the rest of the listing.
    steps: VecDeque<Vec<String>>,
    prefix: String,
    listing: ListCursor,
}

/// One step's files, ledgers and plan.
#[derive(Debug)]
pub(super) struct Step {
    pub(super) local: usize,
    pub(super) ledgers: BTreeMap<String, Ledger>,
    pub(super) plan: walplan::WalPlan,
}

/// Scans the top of the archive; lists and plans nothing yet. `full` forces a full reconcile;
/// without state for this store, or past `wal_reconcile_every`, it is one anyway.
pub(super) fn survey(
    cfg: &Config,
    dirs: &ServerDirs,
    st: &LocalState,
    full: bool,
) -> Result<Survey> {
    let state = st.wal_state(&dirs.name);
    let full = full
        || state.window.is_none()
        || now().saturating_sub(state.last_full) > cfg.barman.wal_reconcile_every.as_secs();
    let window = if full { None } else { state.window.clone() };
    let (history, hash_dirs) = scan_top(&dirs.wals_dir)?;
    let todo: Vec<String> = hash_dirs
        .iter()
        .filter(|d| window.as_deref().is_none_or(|w| d.as_str() >= w))
        .cloned()
        .collect();
    let mut steps: VecDeque<Vec<String>> = todo.chunks(STEP_DIRS).map(<[String]>::to_vec).collect();
    if steps.is_empty() {
        steps.push_back(Vec::new());
    }
    let prefix = Remote::new(cfg.location.prefix(), &dirs.name).wals_prefix();
    let listing = ListCursor::new(ListRequest {
        prefix: prefix.clone(),
        start_after: window.as_ref().map(|w| format!("{prefix}{w}")),
        ..Default::default()
    });
    Ok(Survey {
        state,
        full,
        window,
        wals: dirs.wals_dir.clone(),
        hash_dirs,
        history: history.into(),
        steps,
        prefix,
        listing,
    })
}

impl Survey {
    /// The next step: its hash directories scanned, the listing up to their end (to the end of
    /// the listing for the last step) and the history files sorting there, planned.
    pub(super) async fn step(
        &mut self,
        t: &Transfer,
        st: &LocalState,
        server: &str,
    ) -> Result<Option<Step>> {
        let Some(dirs) = self.steps.pop_front() else {
            return Ok(None);
        };
        // Keys under `d/` sort before `d0` ('0' follows '/'); the last step takes the rest.
        let below = match (self.steps.is_empty(), dirs.last()) {
            (false, Some(d)) => Some(format!("{d}0")),
            _ => None,
        };
        let mut local = Vec::new();
        for d in &dirs {
            scan_dir(&self.wals, d, &mut local)?;
        }
        while let Some(h) = self.history.front() {
            if below.as_deref().is_some_and(|b| h.rel.as_str() >= b) {
                break;
            }
            local.extend(self.history.pop_front());
        }
        local.sort_by(|a, b| a.rel.cmp(&b.rel));
        let below_key = below.map(|b| format!("{}{b}", self.prefix));
        let mut remote = BTreeMap::new();
        for o in self.listing.take_below(t, below_key.as_deref()).await? {
            if let Some(rel) = o.key.strip_prefix(&self.prefix)
                && in_step(rel, &dirs)
            {
                let listed = Listed {
                    size: o.size,
                    etag: o.etag,
                };
                remote.insert(rel.to_string(), listed);
            }
        }
        let ledgers = load_ledgers(st, server, &local);
        let plan = walplan::plan(&local, &remote, &ledgers, self.window.as_deref());
        Ok(Some(Step {
            local: local.len(),
            ledgers,
            plan,
        }))
    }
}

/// Whether a listed key (relative to `wals/`) is one a step with hash directories `dirs`
/// (sorted) plans with: a file of one of them, or a history file at the top. The first step's
/// listing also holds the directories the bucket has and the host no longer does (Barman's
/// retention removed them), the last step's the rest of the listing: nothing of this host is
/// compared with those, and keeping them would make the step as large as the bucket's archive.
fn in_step(rel: &str, dirs: &[String]) -> bool {
    match rel.split_once('/') {
        Some((d, _)) => dirs.binary_search_by(|x| x.as_str().cmp(d)).is_ok(),
        None => wal::classify(rel) == Some(WalKind::History),
    }
}

/// The ledgers of the hash directories `local` touches.
pub(super) fn load_ledgers(
    st: &LocalState,
    server: &str,
    local: &[LocalWal],
) -> BTreeMap<String, Ledger> {
    let mut ledgers = BTreeMap::new();
    for f in local {
        if !ledgers.contains_key(f.hash_dir()) {
            ledgers.insert(f.hash_dir().to_string(), st.ledger(server, f.hash_dir()));
        }
    }
    ledgers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_keeps_only_its_directories_and_the_history_files() {
        let dirs: Vec<String> = ["0000000100000003", "0000000100000005"]
            .map(String::from)
            .to_vec();
        let keep = |rel: &str| in_step(rel, &dirs);
        assert!(keep("0000000100000003/000000010000000300000001"));
        assert!(keep("0000000100000005/000000010000000500000001.partial"));
        assert!(keep("00000002.history"));
        // Directories the bucket has and this host does not: before the first step's, between
        // its directories, after the last step's; and stray keys.
        assert!(!keep("0000000100000001/000000010000000100000001"));
        assert!(!keep("0000000100000004/000000010000000400000001"));
        assert!(!keep("0000000100000009/000000010000000900000001"));
        assert!(!keep("0000000200000000/000000020000000000000001"));
        assert!(!keep("stray.txt"));
        assert!(!in_step("00000002.history/x", &[]));
    }

    #[test]
    fn a_hash_directory_removed_after_the_survey_is_empty_not_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = "0000000100000000";
        std::fs::create_dir(dir.path().join(d)).expect("mkdir");
        std::fs::write(dir.path().join(d).join("000000010000000000000001"), b"x").expect("wal");
        let mut files = Vec::new();
        scan_dir(dir.path(), d, &mut files).expect("scan");
        assert_eq!(files.len(), 1);
        // Barman's retention removes the directory before this step reaches it.
        std::fs::remove_dir_all(dir.path().join(d)).expect("rm");
        let mut files = Vec::new();
        scan_dir(dir.path(), d, &mut files).expect("a removed directory is empty");
        assert!(files.is_empty());
    }
}
