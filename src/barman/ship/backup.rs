//! Uploading one Barman base backup: the eligibility decision from backup.info at sync time,
//! Barman's per-backup lock, the data files (never following symlinks), our manifest, and
//! backup.info last so its presence in the bucket means "complete".

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::eligibility::{self, Decision, Seen};
use super::present::{self, BaseRecord, Listed, Present, Row};
use super::reuse::{self, Previous, Reuse};
use super::state::LocalState;
use crate::barman::conf::ServerDirs;
use crate::barman::info::{self, BackupInfo};
use crate::barman::manifest::{CiphertextRecord, Entry, Manifest, check_unique, encode_path};
use crate::barman::remote::{INFO, MANIFEST};
use crate::barman::server::Server;
use crate::checksum;
use crate::clock::now;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lockfile::try_lock_file;
use crate::store::{ListRequest, ObjectKind, PutOptions};
use crate::transfer::{CopyExpect, FileJournal, Transfer, bounded};

/// How a backup's files are sent: where resumable uploads keep their journals, and up to
/// which size a file goes in one PUT (`barman.one_put_max`).
struct Sending {
    journal_dir: PathBuf,
    one_put_max: u64,
}

/// What uploading a backup produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupUpload {
    /// Files uploaded.
    pub files: usize,
    /// Bytes uploaded.
    pub bytes: u64,
    /// Files made by a server-side copy of the previous backup's object.
    pub copied_files: usize,
    /// Bytes of those files (never sent by this host).
    pub copied_bytes: u64,
    /// Files the bucket already held with the same bytes (a rerun for this backup).
    pub present_files: usize,
    /// Bytes of those files.
    pub present_bytes: u64,
}

/// How a file came to be in the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Uploaded,
    Copied,
    AlreadyThere,
}

/// What a rerun knows before sending anything: the backup's objects as one listing shows them,
/// and the record of what this host sent of it ([`present`]).
#[derive(Debug, Default)]
struct Found {
    listed: std::collections::HashMap<String, Listed>,
    record: BaseRecord,
}

impl Found {
    /// Lists the backup's prefix once (all pages) and loads the record. With client-side
    /// encryption nothing is taken as already there: sealed objects never have the file's size.
    async fn of(srv: &Server, id: &str, record: BaseRecord) -> Result<Found> {
        let mut k = Found {
            record,
            ..Found::default()
        };
        if srv.t.encrypts() {
            return Ok(k);
        }
        let prefix = srv.remote.backup_key(id, "");
        let req = ListRequest {
            prefix: prefix.clone(),
            ..Default::default()
        };
        srv.t
            .list_pages(&req, |objs, _| {
                for o in objs {
                    if let Some(rel) = o.key.strip_prefix(&prefix) {
                        let listed = Listed {
                            size: o.size,
                            etag: o.etag,
                        };
                        k.listed.insert(rel.to_string(), listed);
                    }
                }
                true
            })
            .await?;
        Ok(k)
    }
}

/// Why a backup was not uploaded now.
#[derive(Debug)]
pub enum NotNow {
    /// Not ready yet (still `WAITING_FOR_WALS`, Barman holds the lock): a later run uploads it.
    Wait(String),
    /// A transient failure (network, server, local I/O): a later run retries.
    Retry(String),
    /// Will never work (Barman says FAILED, backup gone, being deleted, refused by the store).
    Never(String),
    /// Interrupted by a signal.
    Interrupted,
}

impl From<Error> for NotNow {
    fn from(e: Error) -> Self {
        match e {
            Error::Interrupted => NotNow::Interrupted,
            Error::Store(ref f) if !f.retryable => NotNow::Never(e.one_line()),
            e => NotNow::Retry(e.one_line()),
        }
    }
}

/// Reads the backup's current backup.info and decides ([`eligibility::decide`]): `Ok` when it
/// is uploaded now. `parent_done` says whether the parent of an incremental backup is complete
/// in the bucket (`None`: not asked).
pub fn check_eligible(
    dirs: &ServerDirs,
    id: &str,
    waiting_since: u64,
    max_wait: std::time::Duration,
    parent_done: Option<bool>,
) -> std::result::Result<(PathBuf, BackupInfo), NotNow> {
    let path = info::locate(dirs, id);
    let bi = match &path {
        Some(p) => Some(info::read(p).map_err(|e| {
            NotNow::Retry(format!(
                "cannot read {}: {}",
                p.display(),
                crate::error::reason(&e)
            ))
        })?),
        None => None,
    };
    let seen = Seen {
        hook_status: "",
        info_found: bi.is_some(),
        being_deleted: info::being_deleted(dirs, id),
        status: bi.as_ref().map_or("", BackupInfo::status),
        error: bi.as_ref().and_then(|b| b.get("error")),
        parent: bi
            .as_ref()
            .and_then(|b| b.get("parent_backup_id"))
            .zip(parent_done),
        waited: now().saturating_sub(waiting_since),
    };
    match eligibility::decide(id, &seen, max_wait) {
        Decision::Upload => Ok((path.unwrap_or_default(), bi.unwrap_or_default())),
        Decision::Wait(w) => Err(NotNow::Wait(w)),
        Decision::Never(w) => Err(NotNow::Never(w)),
    }
}

/// A file of the backup to upload, as it was when the backup was scanned.
#[derive(Debug, Clone)]
struct LocalFile {
    /// Local path.
    path: PathBuf,
    /// Local path relative to the backup directory.
    local_rel: PathBuf,
    /// Key tail (path relative to the backup directory).
    rel: String,
    /// The local path's bytes (base64) when they are not UTF-8.
    raw: Option<String>,
    /// Permission bits.
    mode: u32,
    /// What must not change while the file is read: size, mtime and ctime (ns).
    stamp: Stamp,
}

/// Size, modification and change time of a file: any write changes one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Stamp {
            size: m.len(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Fails when `f` is no longer what the scan saw: bytes read from a file being written are
/// neither the old nor the new version, and must never be called verified.
fn unchanged(f: &LocalFile) -> Result<()> {
    let now = std::fs::symlink_metadata(&f.path)
        .map(|m| Stamp::of(&m))
        .map_err(|e| Error::io(format!("stat {}", f.path.display()), e))?;
    if now == f.stamp {
        Ok(())
    } else {
        Err(Error::Failed(format!(
            "{} changed while it was being uploaded (size, modification or change time); the backup is being modified: it will be uploaded again once it is quiet",
            f.path.display()
        )))
    }
}

/// Scans `base/<id>/` without following symlinks: files to upload and the tree entries. The
/// backup.info (old layout) and Barman's `annotations/` are not data.
fn scan(dir: &Path) -> Result<(Vec<LocalFile>, Vec<Entry>)> {
    let mut files = Vec::new();
    let mut entries = Vec::new();
    for e in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .min_depth(1)
        .sort_by_file_name()
    {
        let e = e.map_err(|e| Error::Failed(format!("cannot walk {}: {e}", dir.display())))?;
        let local_rel = e
            .path()
            .strip_prefix(dir)
            .map_err(|_| Error::Failed("walk left the backup directory".into()))?
            .to_path_buf();
        let (rel, raw) = encode_path(local_rel.as_os_str());
        if rel == INFO || rel == MANIFEST || rel == "annotations" || rel.starts_with("annotations/")
        {
            continue;
        }
        let meta = e
            .path()
            .symlink_metadata()
            .map_err(|err| Error::io(format!("stat {}", e.path().display()), err))?;
        let mode = meta.permissions().mode() & 0o7777;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(e.path())
                .map_err(|err| Error::io(format!("readlink {}", e.path().display()), err))?;
            entries.push(Entry::Symlink {
                path: rel,
                raw,
                target: target.to_string_lossy().into_owned(),
            });
        } else if ft.is_dir() {
            entries.push(Entry::Dir {
                path: rel,
                raw,
                mode,
            });
        } else if ft.is_file() {
            files.push(LocalFile {
                path: e.path().to_path_buf(),
                local_rel,
                rel,
                raw,
                mode,
                stamp: Stamp::of(&meta),
            });
        }
    }
    check_unique(
        files
            .iter()
            .map(|f| f.rel.as_str())
            .chain(entries.iter().map(Entry::path)),
    )?;
    Ok((files, entries))
}

/// Uploads backup `id` (which must be `DONE`) while holding Barman's lock on it: data files in
/// parallel, then the manifest, then backup.info. Also refreshes `identity.json`.
pub async fn upload_backup(
    srv: &Server,
    dirs: &ServerDirs,
    id: &str,
    cfg: &Config,
) -> std::result::Result<BackupUpload, NotNow> {
    let _lock = match try_lock_file(&dirs.backup_lock(id), "Barman operation on this backup") {
        Ok(l) => l,
        Err(Error::Busy(m)) => return Err(NotNow::Wait(m)),
        Err(e) => return Err(e.into()),
    };
    // Re-read under the lock: Barman cannot delete it now, and the status is final.
    check_eligible(dirs, id, now(), std::time::Duration::MAX, None)?;
    let (files, mut entries) = scan(&dirs.base_dir.join(id))?;
    let how = Sending {
        journal_dir: LocalState::new(cfg).journal_dir(),
        one_put_max: cfg.barman.one_put_max,
    };
    std::fs::create_dir_all(&how.journal_dir)
        .map_err(|e| Error::io(format!("create {}", how.journal_dir.display()), e))?;
    let records = LocalState::new(cfg).base_records(&dirs.name);
    let record = BaseRecord::load(
        &records.join(format!("{id}.json")),
        &format!("{}/{id}", dirs.name),
    );
    let known = Arc::new(Found::of(srv, id, record).await?);
    let prev = super::reuse::previous(srv, dirs, id).await;
    let sent = upload_files(srv, id, files, &how, prev.map(Arc::new), known.clone()).await?;
    let mut up = BackupUpload::default();
    let mut rows = std::collections::HashMap::new();
    for (entry, how, row) in sent {
        if let Entry::File { size, path, .. } = &entry {
            let (n, b) = match how {
                How::Copied => (&mut up.copied_files, &mut up.copied_bytes),
                How::Uploaded => (&mut up.files, &mut up.bytes),
                How::AlreadyThere => (&mut up.present_files, &mut up.present_bytes),
            };
            *n += 1;
            *b += size;
            if let Some(row) = row {
                rows.insert(path.clone(), row);
            }
        }
        entries.push(entry);
    }
    // Before publishing: a rerun after a failed publish finds every file settled.
    known.record.save(rows)?;
    if let Ok(ids) = info::local_backup_ids(dirs) {
        present::prune(&records, &ids.into_iter().collect());
    }
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    let manifest = Manifest {
        version: 1,
        server: dirs.name.clone(),
        backup_id: id.to_string(),
        created_at: now(),
        total_bytes: up.bytes + up.copied_bytes + up.present_bytes,
        entries,
    };
    publish(srv, dirs, id, &manifest).await?;
    Ok(up)
}

/// Sends the data files in parallel (none the bucket already holds, [`present`]; copied
/// server-side from the previous backup where [`reuse`](super::reuse) allows, else uploaded),
/// each checked unchanged afterwards: their manifest entries, how each got there, and the
/// record's row for it when the object's ETag is known.
async fn upload_files(
    srv: &Server,
    id: &str,
    files: Vec<LocalFile>,
    how: &Sending,
    prev: Option<Arc<Previous>>,
    known: Arc<Found>,
) -> Result<Vec<(Entry, How, Option<Row>)>> {
    let one_put_max = how.one_put_max;
    let total: u64 = files.iter().map(|f| f.stamp.size).sum();
    srv.t.progress().add_work(files.len() as u64, total);
    let jobs = files.into_iter().enumerate().map(|(i, f)| {
        let key = srv.remote.backup_key(id, &f.rel);
        // Named by the key too: two servers can have backups of the same id.
        let tag = checksum::crc32c(key.as_bytes());
        let journal = FileJournal(how.journal_dir.join(format!("{id}-{i}-{tag:08x}.json")));
        (f, key, journal)
    });
    bounded(jobs, srv.t.file_workers(), |(f, key, journal)| {
        let (srv, prev, known) = (srv.clone(), prev.clone(), known.clone());
        async move {
            let t = &srv.t;
            let there = already_there(t, &known, &f, &key).await?;
            let copied = match (&there, &prev) {
                (None, Some(p)) => try_copy(&srv, p, &f, &key).await?,
                _ => None,
            };
            // A copy is of the same ciphertext as its source: the record goes with it.
            let (crc, how, etag, sealed) = match (there, copied) {
                (Some((crc, etag)), _) => (crc, How::AlreadyThere, etag, None),
                (None, Some(p)) => (p.crc32c, How::Copied, None, p.ciphertext),
                // The engine keeps the journal only for a file it sends in parts, so that a
                // later run resumes it.
                (None, None) => {
                    let up = upload_one(t, &f, &key, &journal, one_put_max).await?;
                    (up.crc32c, How::Uploaded, up.etag, up.ciphertext)
                }
            };
            if how != How::Uploaded {
                t.progress().bytes_done(f.stamp.size);
                t.discard_journal(&journal, &key).await;
            }
            unchanged(&f)?;
            let row = etag.filter(|e| !e.is_empty()).map(|etag| Row {
                size: f.stamp.size,
                mtime_ns: f.stamp.mtime_ns,
                ctime_ns: f.stamp.ctime_ns,
                etag,
                crc32c: crc,
            });
            let entry = Entry::File {
                path: f.rel,
                raw: f.raw,
                size: f.stamp.size,
                mode: f.mode,
                crc32c: format!("{crc:08x}"),
                mtime_ns: i64::try_from(f.stamp.mtime_ns).ok(),
                // Sealed to this run's recipients: uploaded now, or copied because its record
                // names the same set.
                ciphertext: sealed.map(|c| CiphertextRecord::of(c, t.recipients_fingerprint())),
            };
            Ok((entry, how, row))
        }
    })
    .await
}

/// Whether the bucket already holds `f` at `key` ([`present::decide`]): its CRC32C and the
/// object's ETag when it does. A comparison that fails for any reason but an interruption
/// sends the file.
async fn already_there(
    t: &Transfer,
    known: &Found,
    f: &LocalFile,
    key: &str,
) -> Result<Option<(u32, Option<String>)>> {
    let local = present::Local {
        size: f.stamp.size,
        mtime_ns: f.stamp.mtime_ns,
        ctime_ns: f.stamp.ctime_ns,
    };
    let listed = known.listed.get(&f.rel);
    match present::decide(&local, listed, known.record.rows.get(&f.rel)) {
        Present::Send => Ok(None),
        Present::Unchanged(crc) => Ok(Some((crc, listed.and_then(|l| l.etag.clone())))),
        Present::Compare => match t.same_as_local_etag(key, &f.path).await {
            Ok((Some(crc), etag)) => Ok(Some((crc, etag))),
            Ok((None, _)) => Ok(None),
            Err(Error::Interrupted) => Err(Error::Interrupted),
            Err(e) => {
                tracing::debug!("{key}: not compared ({}); sending it", e.one_line());
                Ok(None)
            }
        },
    }
}

async fn upload_one(
    t: &Transfer,
    f: &LocalFile,
    key: &str,
    journal: &FileJournal,
    one_put_max: u64,
) -> Result<crate::transfer::Uploaded> {
    let opts = PutOptions::of(ObjectKind::Base);
    let up = t
        .upload_file_as(&f.path, key, Some(journal), &opts, one_put_max)
        .await?;
    if up.size != f.stamp.size {
        return Err(Error::Failed(format!(
            "{}: uploaded {} bytes of {}",
            f.path.display(),
            up.size,
            f.stamp.size
        )));
    }
    Ok(up)
}

/// Makes `key` with a verified server-side copy of the previous backup's object when the file
/// is the same ([`reuse::decide`]); the record of the source on success, `None` when it must
/// be uploaded.
/// A copy only saves an upload: whatever fails here but an interruption is a warning, and the
/// file is uploaded (a source shorter than its manifest says must not fail every retry).
async fn try_copy(
    srv: &Server,
    prev: &Previous,
    f: &LocalFile,
    key: &str,
) -> Result<Option<reuse::Prior>> {
    match copy_if_same(srv, prev, f, key).await {
        Err(Error::Interrupted) => Err(Error::Interrupted),
        Err(e) => {
            tracing::warn!(
                "no server-side copy of {} ({}); uploading it",
                f.rel,
                e.one_line()
            );
            Ok(None)
        }
        copied => copied,
    }
}

async fn copy_if_same(
    srv: &Server,
    prev: &Previous,
    f: &LocalFile,
    key: &str,
) -> Result<Option<reuse::Prior>> {
    if !prev.copies_work() {
        return Ok(None);
    }
    let meta = std::fs::symlink_metadata(&f.path)
        .map_err(|e| Error::io(format!("stat {}", f.path.display()), e))?;
    let now = reuse::Stat {
        size: f.stamp.size,
        mtime_ns: i64::try_from(f.stamp.mtime_ns).unwrap_or(i64::MIN),
    };
    let local = prev.local(&f.local_rel, &meta);
    let decision = reuse::decide(
        &now,
        prev.prior(&f.rel),
        local.as_ref().map(|(s, _)| s),
        local.is_some_and(|(_, same)| same),
        srv.t.recipients_fingerprint(),
    );
    let prior = match decision {
        Reuse::Upload => return Ok(None),
        Reuse::Copy(p) => p,
        Reuse::CopyIfSame(p) => {
            let other = prev.local_path(&f.local_rel);
            let same = reuse::same_content(&f.path, &other).await?;
            // The previous file must not have changed while it was compared.
            let still = prev.local(&f.local_rel, &meta).map(|(s, _)| s);
            if !same || still != local.map(|(s, _)| s) {
                return Ok(None);
            }
            p
        }
    };
    let src = srv.remote.backup_key(&prev.id, &f.rel);
    let expect = CopyExpect {
        size: f.stamp.size,
        crc32c: prior.crc32c,
        ciphertext: prior.ciphertext,
    };
    match srv
        .t
        .copy_object(&src, key, expect, PutOptions::of(ObjectKind::Base))
        .await
    {
        Ok(()) => Ok(Some(prior)),
        Err(Error::CopyRefused(why)) => {
            prev.copy_refused(&why);
            Ok(None)
        }
        // Deleted meanwhile (retention): upload it.
        Err(Error::NotFound { .. }) => Ok(None),
        Err(Error::Checksum {
            expected, actual, ..
        }) => Err(Error::Failed(format!(
            "{src} does not match the manifest of backup {} (expected {expected}, got {actual})",
            prev.id
        ))),
        Err(e) => Err(e),
    }
}

/// Makes the backup complete in the bucket: the manifest, identity.json, and backup.info last,
/// read again just before, so a backup Barman marked FAILED (or deleted) meanwhile is never
/// published as complete.
async fn publish(
    srv: &Server,
    dirs: &ServerDirs,
    id: &str,
    manifest: &Manifest,
) -> std::result::Result<(), NotNow> {
    let json = serde_json::to_vec_pretty(manifest)
        .map_err(|e| Error::Failed(format!("encode manifest: {e}")))?;
    let meta = PutOptions::of(ObjectKind::Meta);
    let Server { t, remote, .. } = srv;
    t.put_bytes_with(&remote.backup_key(id, MANIFEST), Bytes::from(json), &meta)
        .await?;
    let identity = dirs.backup_dir.join("identity.json");
    if identity.is_file() {
        t.upload_file_with(&identity, &remote.identity_key(), None, &meta)
            .await?;
    }
    let (info_path, _) = check_eligible(dirs, id, now(), std::time::Duration::MAX, None)?;
    t.upload_file_with(&info_path, &remote.backup_key(id, INFO), None, &meta)
        .await?;
    Ok(())
}
