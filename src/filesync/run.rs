//! The engine side of `sync`: the crawl (SRC_DIR walked while the prefix is listed), the change
//! list (each listed path probed, directories walked), files compared and uploaded in parallel
//! under the engine's bounds, and deletions last, only when every path was handled.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::decide::{self, Compare, Guard, Known, LocalIndex, Sent};
use super::file::{FileJob, Outcome, sync_file};
use super::list::{Change, Line};
use super::local::{self, Probe, XattrNs};
use super::record::Record;
use super::repair;
use super::{MAX_KEY_BYTES, SyncOptions, SyncReport};
use crate::error::{Error, Result};
use crate::store::{ListRequest, join_key};
use crate::transfer::{Transfer, bounded};

/// Runs a sync. `root` is the store's key prefix; `lines` the parsed `--files-from` list.
pub async fn sync(
    t: &Transfer,
    o: &SyncOptions,
    root: &str,
    lines: Option<Vec<Line>>,
) -> Result<SyncReport> {
    match std::fs::metadata(&o.src) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(usage_src(&o.src, "is not a directory")),
        Err(e) => return Err(usage_src(&o.src, &crate::error::reason(&e))),
    }
    if o.compare == Compare::Checksum && t.encrypts() && !t.opens_sealed() {
        // Encrypted objects compare as plaintext, which only an identity opens.
        return Err(Error::Usage(format!(
            "--checksum with encryption compares each file with its object's plaintext: set {} (the identities that open the objects), or sync without --checksum",
            crate::transfer::sealed::IDENTITY_SETTING
        )));
    }
    let base = join_key(root, &o.key_prefix);
    let mut report = SyncReport {
        dry_run: o.dry_run,
        ..Default::default()
    };
    // Only a crawl lists every file's object, so only a crawl uses and rewrites the record.
    let record = match (&lines, &o.record) {
        (None, Some((path, scope))) => Some(Record::load(path, scope)),
        _ => None,
    };
    let (mut jobs, candidates) = match lines {
        None => crawl(t, o, &base, &mut report).await?,
        Some(lines) => from_list(o, &base, lines, &mut report).await?,
    };
    if let Some(r) = &record {
        for j in &mut jobs {
            j.sent = r.files.get(&j.rel).cloned();
        }
    }
    let (uploaded, sent) = send(t, o, jobs, &mut report).await?;
    if let Some(r) = record.filter(|_| !o.dry_run) {
        // Every upload of the run is done and verified: the record now says what is there.
        if let Err(e) = r.save(sent) {
            tracing::warn!("{}; the next run compares by HEAD", e.one_line());
        }
    }
    if let Some(limits) = o.delete {
        let allow_missing = o.files_from.as_ref().is_some_and(|f| f.allow_missing);
        let failures = report.failed.len()
            + if allow_missing {
                0
            } else {
                report.missing.len()
            };
        let guard = Guard {
            source_empty: local::is_empty_dir(&o.src).unwrap_or(true),
            failures,
            max_deletes: limits.max_deletes,
            force: limits.force,
        };
        let candidates = match candidates {
            Candidates::Keys(k) => k,
            Candidates::Paths(p) if failures == 0 => {
                listed_deletions(t, o, &base, p, &mut report).await?
            }
            Candidates::Paths(_) => Vec::new(),
        };
        delete(
            t,
            o.dry_run,
            decide::plan_deletes(candidates, &uploaded, guard),
            &mut report,
        )
        .await?;
    }
    Ok(report)
}

fn usage_src(src: &Path, why: &str) -> Error {
    Error::Usage(format!("SRC_DIR {}: {why}", src.display()))
}

/// What `--delete` may remove: remote keys already known to be orphans (crawl), or listed
/// paths whose keys are looked up only if the path is gone locally (change list).
enum Candidates {
    Keys(Vec<String>),
    Paths(Vec<String>),
}

/// Walks SRC_DIR while listing the prefix; the files to compare and the orphaned keys.
async fn crawl(
    t: &Transfer,
    o: &SyncOptions,
    base: &str,
    report: &mut SyncReport,
) -> Result<(Vec<FileJob>, Candidates)> {
    let (src, ns) = (o.src.clone(), o.xattr_ns);
    let walk = tokio::task::spawn_blocking(move || local::walk(&src, &src, ns));
    let dir = format!("{base}/");
    let (entries, remote) = tokio::join!(walk, list_sizes(t, &dir));
    let entries = entries.map_err(|e| Error::Failed(format!("walk task failed: {e}")))?;
    let remote = remote?;
    let mut index = LocalIndex::default();
    let mut jobs = Vec::new();
    for e in entries {
        if matches!(e.kind, Probe::Dir) {
            index.dirs.insert(e.rel.clone());
        } else if !matches!(e.kind, Probe::Error(_)) {
            index.others.insert(e.rel.clone());
        }
        let listed = remote.get(&e.rel);
        let known = Known::Listed(listed.map(|l| l.0));
        let etag = listed.and_then(|l| l.1.clone());
        if let Some(job) = classify(e.kind, e.path, &e.rel, base, report) {
            jobs.push(FileJob { known, etag, ..job });
        }
    }
    let rels: Vec<String> = remote.into_keys().collect();
    let orphans = decide::orphans(&rels, &index)
        .into_iter()
        .map(|rel| format!("{dir}{rel}"))
        .collect();
    Ok((jobs, Candidates::Keys(orphans)))
}

/// Size and ETag of every object under `dir`, by key relative to it.
async fn list_sizes(t: &Transfer, dir: &str) -> Result<BTreeMap<String, (u64, Option<String>)>> {
    let req = ListRequest {
        prefix: dir.to_string(),
        ..Default::default()
    };
    let mut out = BTreeMap::new();
    t.list_pages(&req, |objs, _| {
        for o in objs {
            if let Some(rel) = o.key.strip_prefix(dir) {
                out.insert(rel.to_string(), (o.size, o.etag.clone()));
            }
        }
        true
    })
    .await?;
    Ok(out)
}

/// Counts what is not a file to send and turns a file into a job (its key checked).
fn classify(
    kind: Probe,
    path: PathBuf,
    rel: &str,
    base: &str,
    report: &mut SyncReport,
) -> Option<FileJob> {
    match kind {
        Probe::File(stamp) => {
            let key = join_key(base, rel);
            if key.len() > MAX_KEY_BYTES {
                report.failed.push(format!(
                    "{}: its key would be {} bytes, more than S3's {MAX_KEY_BYTES}",
                    path.display(),
                    key.len()
                ));
                return None;
            }
            return Some(FileJob {
                rel: rel.to_string(),
                path,
                key,
                stamp,
                known: Known::Unknown,
                etag: None,
                sent: None,
            });
        }
        Probe::Symlink => {
            tracing::warn!("{}: a symbolic link, not followed", path.display());
            report.symlinks += 1;
        }
        Probe::Special => {
            tracing::warn!("{}: not a regular file, skipped", path.display());
            report.special += 1;
        }
        Probe::Archived => {
            tracing::info!(
                "{}: archived by Gluster cloudsync, not read",
                path.display()
            );
            report.archived += 1;
        }
        Probe::Error(m) => {
            tracing::error!("{m}");
            report.failed.push(m);
        }
        Probe::Dir | Probe::Missing => {}
    }
    None
}

/// Expands a change list: files to compare (listed, or under listed directories, each once)
/// and the paths `--delete` may remove.
async fn from_list(
    o: &SyncOptions,
    base: &str,
    lines: Vec<Line>,
    report: &mut SyncReport,
) -> Result<(Vec<FileJob>, Candidates)> {
    let (src, ns, base_owned) = (o.src.clone(), o.xattr_ns, base.to_string());
    let mut r = std::mem::take(report);
    let (jobs, paths, r) = tokio::task::spawn_blocking(move || {
        let (jobs, paths) = expand(&src, ns, &base_owned, &lines, &mut r);
        (jobs, paths, r)
    })
    .await
    .map_err(|e| Error::Failed(format!("list task failed: {e}")))?;
    *report = r;
    Ok((jobs, Candidates::Paths(paths)))
}

fn expand(
    src: &Path,
    ns: XattrNs,
    base: &str,
    lines: &[Line],
    report: &mut SyncReport,
) -> (Vec<FileJob>, Vec<String>) {
    // Paths the list itself removes: a missing path under one of them is accounted for.
    let gone: HashSet<&str> = lines
        .iter()
        .filter_map(|l| match &l.change {
            Change::Delete(p) | Change::Rename { old: p, .. } => Some(p.as_str()),
            _ => None,
        })
        .collect();
    // The uploads in list order, for putting back names glusterfind split at commas.
    let uploads: Vec<Option<&str>> = lines
        .iter()
        .map(|l| match &l.change {
            Change::Upload(p) => Some(p.as_str()),
            _ => None,
        })
        .collect();
    let mut x = Expander {
        src,
        ns,
        base,
        seen: HashSet::new(),
        real: HashSet::new(),
        jobs: Vec::new(),
    };
    let mut deletions = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let target = match &line.change {
            Change::Upload(p) => p,
            Change::Rename { old, new } => {
                deletions.push(old.clone());
                new
            }
            Change::Delete(p) => {
                deletions.push(p.clone());
                continue;
            }
            Change::Unmappable(m) => {
                tracing::error!("line {}: {m}", line.number);
                report.failed.push(format!("line {}: {m}", line.number));
                continue;
            }
        };
        if x.take(line.number, target, report) || removed_by_list(target, &gone) {
            continue;
        }
        match repair::recover(src, ns, &uploads, i) {
            Some(name) => {
                if !report.recovered.contains(&name) {
                    tracing::warn!(
                        "line {}: {target:?} does not exist; glusterfind listed {name:?} so (split at its commas, or its name mangled): sending {name:?}",
                        line.number
                    );
                    report.recovered.push(name.clone());
                }
                x.take(line.number, &name, report);
            }
            None => {
                tracing::warn!(
                    "line {}: {} does not exist",
                    line.number,
                    src.join(target).display()
                );
                report.missing.push(target.clone());
            }
        }
    }
    let mut once = HashSet::new();
    deletions.retain(|p| once.insert(p.clone()));
    (x.jobs, deletions)
}

/// The files a change list names, gathered once each.
struct Expander<'a> {
    src: &'a Path,
    ns: XattrNs,
    base: &'a str,
    seen: HashSet<String>,
    real: HashSet<String>,
    jobs: Vec<FileJob>,
}

impl Expander<'_> {
    /// Takes the listed path `target` (a file, or every file under a directory); `false` when
    /// nothing of that name exists.
    fn take(&mut self, number: usize, target: &str, report: &mut SyncReport) -> bool {
        let path = self.src.join(target);
        if local::via_link(self.src, target, &mut self.real) {
            tracing::warn!(
                "line {number}: {} is under a symbolic link, not followed",
                path.display()
            );
            report.symlinks += 1;
            return true;
        }
        match local::probe(&path, self.ns) {
            Probe::Missing => return false,
            Probe::Dir => {
                for e in local::walk(self.src, &path, self.ns) {
                    if self.seen.insert(e.rel.clone()) {
                        let job = classify(e.kind, e.path, &e.rel, self.base, report);
                        self.jobs.extend(job);
                    }
                }
            }
            kind => {
                if self.seen.insert(target.to_string()) {
                    let job = classify(kind, path, target, self.base, report);
                    self.jobs.extend(job);
                }
            }
        }
        true
    }
}

/// Whether the list deletes or renames away `p` or a directory above it.
fn removed_by_list(p: &str, gone: &HashSet<&str>) -> bool {
    let mut at = Some(p);
    while let Some(q) = at {
        if gone.contains(q) {
            return true;
        }
        at = q.rsplit_once('/').map(|(parent, _)| parent);
    }
    false
}

/// The keys of listed paths that no longer exist locally: the object of that name and every
/// object under `name/`. A path that exists (or cannot be looked at) keeps its keys.
async fn listed_deletions(
    t: &Transfer,
    o: &SyncOptions,
    base: &str,
    paths: Vec<String>,
    report: &mut SyncReport,
) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut real = HashSet::new();
    for p in paths {
        let probe = if local::via_link(&o.src, &p, &mut real) {
            Probe::Symlink // reached through a link: not known to be gone
        } else {
            local::probe(&o.src.join(&p), o.xattr_ns)
        };
        match probe {
            Probe::Missing => {}
            Probe::Error(m) => {
                report.failed.push(m);
                continue;
            }
            _ => {
                tracing::info!("{p} exists locally: its keys stay");
                continue;
            }
        }
        let key = join_key(base, &p);
        if t.head_opt(&key).await?.is_some() {
            keys.push(key.clone());
        }
        let under = format!("{key}/");
        keys.extend(
            list_sizes(t, &under)
                .await?
                .into_keys()
                .map(|rel| format!("{under}{rel}")),
        );
    }
    Ok(keys)
}

/// Compares and sends the files in parallel (the engine's file workers); returns the keys
/// uploaded and the sync record's rows for the files now known to be in the bucket.
async fn send(
    t: &Transfer,
    o: &SyncOptions,
    jobs: Vec<FileJob>,
    report: &mut SyncReport,
) -> Result<(HashSet<String>, HashMap<String, Sent>)> {
    let (compare, dry_run, ns) = (o.compare, o.dry_run, o.xattr_ns);
    let listed = o.files_from.is_some();
    let outcomes = bounded(
        jobs.into_iter().map(|j| (j.rel.clone(), j)),
        t.file_workers(),
        |(rel, job)| {
            let t = t.clone();
            async move { Ok((rel, sync_file(&t, job, compare, dry_run, ns).await?)) }
        },
    )
    .await?;
    let mut uploaded = HashSet::new();
    let mut record = HashMap::new();
    for (rel, outcome) in outcomes {
        match outcome {
            Outcome::Uploaded { key, bytes, sent } => {
                report.uploaded += 1;
                report.uploaded_bytes += bytes;
                uploaded.insert(key);
                record.extend(sent.map(|s| (rel, s)));
            }
            Outcome::WouldUpload { key, bytes } => {
                report.uploaded += 1;
                report.uploaded_bytes += bytes;
                report.would_upload.push(key);
            }
            Outcome::Unchanged(sent) => {
                report.unchanged += 1;
                record.extend(sent.map(|s| (rel, s)));
            }
            Outcome::Vanished if listed => report.missing.push(rel),
            Outcome::Vanished => report.vanished += 1,
            Outcome::Failed(m) => {
                tracing::error!("{m}");
                report.failed.push(m);
            }
        }
    }
    report.would_upload.sort();
    Ok((uploaded, record))
}

/// Carries out (or, with `dry_run`, only reports) a deletion plan.
async fn delete(
    t: &Transfer,
    dry_run: bool,
    plan: std::result::Result<Vec<String>, decide::Refusal>,
    report: &mut SyncReport,
) -> Result<()> {
    match plan {
        Ok(keys) => {
            if !dry_run && !keys.is_empty() {
                t.delete_keys(&keys).await?;
                tracing::info!("deleted {} keys", keys.len());
            }
            report.deleted = keys;
        }
        Err(refusal) => {
            if let (true, decide::Refusal::TooMany { keys, .. }) = (dry_run, &refusal) {
                report.deleted = keys.clone();
            }
            report.delete_refused = Some(refusal.to_string());
        }
    }
    Ok(())
}
