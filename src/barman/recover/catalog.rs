//! `catalog-restore`: a lost Barman host rebuilt from the bucket. The server's directory is
//! recreated in the Barman home the config names, as Barman kept it: each backup's files (the
//! bytes Barman stored, tar archives left as archives), directories with their modes, the
//! tablespace links re-pointed at the new `base/<id>/<oid>`, backup.info where the installed
//! Barman reads it, `identity.json`, and the WAL archive as stored (compressed as Barman wrote
//! it). Afterwards `barman rebuild-xlogdb SERVER` makes the catalogue, and `barman list-backups`
//! and `barman recover` work on the new host.
//!
//! Every file is verified (manifest CRC32C for backup files, the stored checksum for the rest)
//! and written atomically. The target must be empty; an interrupted run leaves a marker file,
//! and running again resumes: files already there with the right size are kept.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::restore::manifest;
use super::restore::modes::narrow;
use crate::barman::conf::ServerDirs;
use crate::barman::manifest::Entry;
use crate::barman::remote::{INFO, Remote};
use crate::barman::server::Server;
use crate::barman::ship::fullsync::{RemoteBackup, chain_gap};
use crate::barman::wal::{self, WalKind};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::store::ListRequest;
use crate::transfer::{Expect, Transfer, bounded};

/// Where backup.info goes: `meta/<id>-backup.info` (Barman ≥ 3.13.2) or `base/<id>/backup.info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InfoLayout {
    /// `meta/<id>-backup.info`.
    Meta,
    /// `base/<id>/backup.info`.
    Base,
}

/// What to rebuild.
#[derive(Debug, Clone, Default)]
pub struct CatalogOptions {
    /// Only these backups (all when empty).
    pub backups: Vec<String>,
    /// WALs from this backup's first WAL, or from this WAL name, on (all when `None`; with
    /// `backups`, from the oldest one's first WAL).
    pub wals_since: Option<String>,
    /// Where backup.info goes (None: ask the installed Barman).
    pub layout: Option<InfoLayout>,
}

/// What the rebuild wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// Backups rebuilt.
    pub backups: Vec<String>,
    /// WAL files written.
    pub wals: usize,
    /// Files written (backups and WALs), and bytes.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Where backup.info went.
    pub layout: Option<InfoLayout>,
}

const MARKER: &str = ".barmans3-catalog-restore";

/// One file to download.
#[derive(Debug, Clone)]
struct Job {
    key: String,
    to: PathBuf,
    /// Expected size (0: take the object's).
    size: u64,
    crc32c: Option<u32>,
    mode: Option<u32>,
}

impl Job {
    fn new(key: String, to: PathBuf) -> Job {
        Job {
            key,
            to,
            size: 0,
            crc32c: None,
            mode: Some(0o600),
        }
    }
}

/// Rebuilds server `dirs.name`'s directory from the bucket.
pub async fn catalog_restore(
    srv: &Server,
    dirs: &ServerDirs,
    opts: &CatalogOptions,
) -> Result<Rebuilt> {
    let ids = backup_ids(srv, &opts.backups).await?;
    claim(dirs)?;
    let Server { t, remote, .. } = srv;
    let layout = opts.layout.unwrap_or_else(installed_layout);
    let mut jobs: Vec<Job> = Vec::new();
    let mut dir_modes: Vec<(PathBuf, u32)> = Vec::new();
    let mut links = Vec::new();
    let mut begin_wals = Vec::new();
    for id in &ids {
        let (info, m) = manifest(srv, id).await?;
        begin_wals.extend(info.begin_wal().map(str::to_string));
        let root = dirs.base_dir.join(id);
        let (files, dirs_of, links_of) = backup_jobs(remote, id, &root, &m.entries)?;
        let narrowed = m
            .entries
            .iter()
            .filter(|e| match e {
                Entry::Dir { mode, .. } | Entry::File { mode, .. } => narrow(*mode).1,
                Entry::Symlink { .. } => false,
            })
            .count();
        crate::barman::recover::restore::modes::report(&format!("backup {id}"), narrowed);
        jobs.extend(files);
        dir_modes.extend(dirs_of);
        links.extend(links_of);
        let info_to = match layout {
            InfoLayout::Meta => dirs.meta_dir().join(format!("{id}-backup.info")),
            InfoLayout::Base => root.join(INFO),
        };
        jobs.push(Job::new(remote.backup_key(id, INFO), info_to));
    }
    if t.head_opt(&remote.identity_key()).await?.is_some() {
        jobs.push(Job::new(
            remote.identity_key(),
            dirs.backup_dir.join("identity.json"),
        ));
    }
    let since = opts.wals_since.clone().or_else(|| {
        (!opts.backups.is_empty())
            .then(|| begin_wals.iter().min().cloned())
            .flatten()
    });
    let wals = wal_jobs(srv, dirs, since.as_deref()).await?;
    let n_wals = wals.len();
    jobs.extend(wals);
    for (dir, _) in &dir_modes {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    let (files, bytes) = fetch(t, jobs).await?;
    for (link, to) in &links {
        if std::fs::symlink_metadata(link).is_err() {
            std::os::unix::fs::symlink(to, link)
                .map_err(|e| Error::io(format!("symlink {}", link.display()), e))?;
        }
    }
    dir_modes.sort_by(|a, b| b.0.cmp(&a.0));
    for (dir, mode) in &dir_modes {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| Error::io(format!("chmod {}", dir.display()), e))?;
    }
    let _ = std::fs::remove_file(dirs.backup_dir.join(MARKER));
    Ok(Rebuilt {
        backups: ids,
        wals: n_wals,
        files,
        bytes,
        layout: Some(layout),
    })
}

/// The target must hold nothing of Barman's yet (empty directories are fine), unless an earlier
/// run of this command left its marker: then it resumes.
fn claim(dirs: &ServerDirs) -> Result<()> {
    let marker = dirs.backup_dir.join(MARKER);
    if marker.exists() {
        return Ok(());
    }
    for d in [&dirs.base_dir, &dirs.wals_dir, &dirs.meta_dir()] {
        let has_files = walkdir::WalkDir::new(d)
            .into_iter()
            .filter_map(|e| e.ok())
            .any(|e| !e.file_type().is_dir());
        if has_files {
            return Err(Error::Usage(format!(
                "{} is not empty: catalog-restore rebuilds a lost server into an empty Barman directory (move the old one aside first)",
                d.display()
            )));
        }
    }
    std::fs::create_dir_all(&dirs.backup_dir)
        .map_err(|e| Error::io(format!("create {}", dirs.backup_dir.display()), e))?;
    fsutil::write_atomic(
        &marker,
        b"catalog-restore in progress: run it again to resume\n",
    )
}

/// Where the installed Barman reads backup.info: `barman --version` ≥ 3.13.2 (or no Barman on
/// PATH, as today's Barman does) means `meta/`.
fn installed_layout() -> InfoLayout {
    let out = std::process::Command::new("barman")
        .arg("--version")
        .output();
    let version = out
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .and_then(|s| s.split_whitespace().next().map(str::to_string));
    let parts: Vec<u32> = version
        .as_deref()
        .unwrap_or("")
        .split('.')
        .filter_map(|p| p.parse().ok())
        .collect();
    match parts.as_slice() {
        [major, minor, patch, ..] if (*major, *minor, *patch) < (3, 13, 2) => InfoLayout::Base,
        [major, minor] if (*major, *minor) < (3, 13) => InfoLayout::Base,
        _ => InfoLayout::Meta,
    }
}

/// The backups to rebuild: `wanted` with the whole chain of each, or every complete one in
/// the bucket.
async fn backup_ids(srv: &Server, wanted: &[String]) -> Result<Vec<String>> {
    let list = crate::barman::ship::fullsync::remote_backups(srv).await?;
    let (ids, skipped) = with_chains(&list, wanted)?;
    for why in skipped {
        tracing::warn!("{}: not rebuilt: {why}", srv.name);
    }
    Ok(ids)
}

/// The backups to rebuild, oldest first, and those left out with the reason. Asked-for
/// backups come with every backup of their chain (an incremental backup is useless to Barman
/// without its parents): an asked-for backup whose chain is not complete in the bucket refuses
/// the run. Without a list, every backup complete with its whole chain; an incremental whose
/// chain is not is left out and named, never copied as an orphan Barman would then fail on.
pub fn with_chains(list: &[RemoteBackup], wanted: &[String]) -> Result<(Vec<String>, Vec<String>)> {
    let mut ids = std::collections::BTreeSet::new();
    let mut skipped = Vec::new();
    let asked: Vec<&str> = if wanted.is_empty() {
        list.iter().map(|b| b.id.as_str()).collect()
    } else {
        wanted.iter().map(String::as_str).collect()
    };
    for id in asked {
        if let Some(gap) = chain_gap(list, id) {
            let why = if gap == id {
                format!("backup {id} is not complete in the bucket; see base-ls")
            } else {
                format!(
                    "backup {id} is incremental and its chain needs {gap}, which is not complete in the bucket; see base-ls"
                )
            };
            if !wanted.is_empty() {
                return Err(Error::Failed(format!("{why}; nothing was written")));
            }
            if gap != id {
                skipped.push(why);
            }
            continue;
        }
        let mut cur = Some(id.to_string());
        while let Some(at) = cur {
            cur = list
                .iter()
                .find(|b| b.id == at)
                .and_then(|b| b.parent.clone());
            ids.insert(at);
        }
    }
    Ok((ids.into_iter().collect(), skipped))
}

/// The files, directories and links of one backup, in Barman's layout under `root`. Only
/// `data/pg_tblspc/<oid>` may be a link (to `root/<oid>`, as Barman makes it).
#[allow(clippy::type_complexity)] // three lists of plain tuples, named at the call
fn backup_jobs(
    remote: &Remote,
    id: &str,
    root: &Path,
    entries: &[Entry],
) -> Result<(Vec<Job>, Vec<(PathBuf, u32)>, Vec<(PathBuf, PathBuf)>)> {
    let (mut files, mut dirs, mut links) =
        (Vec::new(), vec![(root.to_path_buf(), 0o700)], Vec::new());
    for e in entries {
        let local = root.join(e.local_path()?);
        match e {
            Entry::Dir { mode, .. } => dirs.push((local, narrow(*mode).0)),
            Entry::File {
                path,
                size,
                mode,
                crc32c,
                ..
            } => files.push(Job {
                key: remote.backup_key(id, path),
                to: local,
                size: *size,
                crc32c: u32::from_str_radix(crc32c, 16).ok(),
                mode: Some(narrow(*mode).0),
            }),
            Entry::Symlink { path, target, .. } => {
                let oid = path
                    .strip_prefix("data/pg_tblspc/")
                    .filter(|o| !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        Error::Failed(format!(
                            "refusing backup {id}: {path} is a link (to {target}) where Barman keeps none"
                        ))
                    })?;
                links.push((local, root.join(oid)));
            }
        }
    }
    Ok((files, dirs, links))
}

/// The WAL archive (from `since` on, history files always), into Barman's `wals/` layout.
async fn wal_jobs(srv: &Server, dirs: &ServerDirs, since: Option<&str>) -> Result<Vec<Job>> {
    let prefix = srv.remote.wals_prefix();
    let objects = srv
        .t
        .list_all(&ListRequest {
            prefix: prefix.clone(),
            ..Default::default()
        })
        .await?;
    let mut jobs = Vec::new();
    for o in objects {
        let Some(rel) = o.key.strip_prefix(&prefix) else {
            continue;
        };
        let name = rel.rsplit('/').next().unwrap_or(rel);
        // Only what Barman itself keeps there, at the place it keeps it.
        if wal::classify(name).is_none() || wal::relative_path(name).as_deref() != Some(rel) {
            continue;
        }
        let wanted = wal::classify(name) == Some(WalKind::History)
            || since.is_none_or(|s| wal::compare(name, s).is_ge());
        if wanted {
            // The listing gives the stored size, which for an encrypted WAL is the
            // ciphertext's: the object's own checksums verify it instead (a resumed run fetches
            // WALs again rather than trust a size that is not the file's).
            jobs.push(Job {
                key: o.key.clone(),
                to: dirs.wals_dir.join(rel),
                size: 0,
                crc32c: None,
                mode: None,
            });
        }
    }
    Ok(jobs)
}

/// Downloads the jobs in parallel, skipping files already complete (a resumed run).
async fn fetch(t: &Transfer, jobs: Vec<Job>) -> Result<(usize, u64)> {
    let jobs: Vec<Job> = jobs
        .into_iter()
        .filter(|j| std::fs::metadata(&j.to).map_or(true, |m| j.size == 0 || m.len() != j.size))
        .collect();
    t.progress()
        .add_work(jobs.len() as u64, jobs.iter().map(|j| j.size).sum());
    let done = bounded(jobs, t.file_workers(), |j| {
        let t = t.clone();
        let Job {
            key,
            to,
            size,
            crc32c: crc,
            mode,
        } = j;
        async move {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
            }
            let expect = Expect {
                size: (size > 0).then_some(size),
                crc32c: crc,
            };
            let d = t.download_file(&key, &to, expect).await?;
            if let Some(m) = mode {
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(m))
                    .map_err(|e| Error::io(format!("chmod {}", to.display()), e))?;
            }
            Ok(d.size)
        }
    })
    .await?;
    Ok((done.len(), done.iter().sum()))
}

/// The next steps to print after a rebuild.
pub fn next_steps(server: &str, r: &Rebuilt) -> Vec<String> {
    let mut v = vec![
        format!("barman rebuild-xlogdb {server}"),
        format!("barman list-backups {server}"),
    ];
    if r.layout == Some(InfoLayout::Base) {
        v.push("(backup.info written in base/<id>/, where Barman before 3.13.2 reads it)".into());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rb(id: &str, complete: bool, parent: Option<&str>) -> RemoteBackup {
        RemoteBackup::sketch(id, "DONE", complete, parent)
    }
    fn v(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_incremental_comes_with_its_chain_or_not_at_all() {
        let list = vec![
            rb("A", true, None),
            rb("B", true, Some("A")),
            rb("C", true, Some("B")),
            rb("D", false, None),
            rb("E", true, Some("D")),
            rb("F", true, Some("X")),
            rb("G", true, None),
        ];
        // Asked for the leaf: its whole chain comes.
        assert_eq!(
            with_chains(&list, &v(&["C"])).expect("C").0,
            v(&["A", "B", "C"])
        );
        assert_eq!(
            with_chains(&list, &v(&["B", "G"])).expect("B G").0,
            v(&["A", "B", "G"])
        );
        // Asked for an orphan: refused, naming what is missing.
        for (id, gap) in [("E", "D"), ("F", "X")] {
            let e = with_chains(&list, &v(&[id])).expect_err(id);
            assert!(e.to_string().contains(&format!("needs {gap}")), "{e}");
        }
        assert!(with_chains(&list, &v(&["D"])).is_err());
        // Everything: orphans are left out and named, incomplete ones quietly.
        let (ids, skipped) = with_chains(&list, &[]).expect("all");
        assert_eq!(ids, v(&["A", "B", "C", "G"]));
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[0].contains("backup E") && skipped[1].contains("backup F"));
    }
}
