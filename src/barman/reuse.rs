//! Backup files that need not be sent again: a file of a new backup that is the same as a file
//! of the server's previous complete backup in the bucket is made with a server-side copy of
//! that object (the bucket stays a plain mirror: every backup prefix is complete on its own).
//!
//! "The same" is decided by [`decide`], a pure function: the very file Barman hard-linked
//! (`reuse_backup = link`: same inode, unchanged since it was uploaded) is copied outright; a
//! file of the same size is read locally and copied only if its CRC32C equals the recorded
//! one; anything else is uploaded. The copy itself is verified against that CRC32C.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::conf::ServerDirs;
use super::manifest::Entry;
use super::remote::Remote;
use crate::error::{Error, Result};
use crate::store::ListRequest;
use crate::transfer::Transfer;

/// What the previous backup's manifest says of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prior {
    /// Bytes.
    pub size: u64,
    /// CRC32C of the uploaded content.
    pub crc32c: u32,
    /// Modification time when it was uploaded, if recorded.
    pub mtime_ns: Option<i64>,
}

/// What the new backup's file is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    /// Bytes.
    pub size: u64,
    /// Modification time (ns since the epoch).
    pub mtime_ns: i64,
    /// Whether it is the same inode as the previous backup's file at the same path (a hard
    /// link Barman made).
    pub same_inode: bool,
}

/// How a file of the new backup gets into the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Server-side copy of the previous object, whose CRC32C this is.
    Copy(u32),
    /// Server-side copy if the file's CRC32C, read locally, equals this; else upload.
    CopyIfCrc(u32),
    /// Upload.
    Upload,
}

/// The decision for one file. Never copies on a size difference; copies without reading only
/// the same inode unchanged since its upload.
pub fn decide(now: &Current, prior: Option<&Prior>) -> Reuse {
    match prior {
        None => Reuse::Upload,
        Some(p) if p.size != now.size || now.size == 0 => Reuse::Upload,
        Some(p) if now.same_inode && p.mtime_ns == Some(now.mtime_ns) => Reuse::Copy(p.crc32c),
        Some(p) => Reuse::CopyIfCrc(p.crc32c),
    }
}

/// The previous complete backup of the server in the bucket, as far as reuse needs it.
#[derive(Debug)]
pub struct Previous {
    /// Its id.
    pub id: String,
    /// Its local directory (`base/<id>/`), which may be gone.
    dir: PathBuf,
    /// Files by key tail.
    files: HashMap<String, Prior>,
    /// Cleared on the first refused copy: the rest of the run uploads.
    copies_work: AtomicBool,
}

impl Previous {
    /// The manifest's record of a file, by key tail.
    pub fn prior(&self, rel: &str) -> Option<&Prior> {
        self.files.get(rel)
    }

    /// Whether the previous backup's local file at `local_rel` is the same inode as `meta`.
    pub fn same_inode(&self, local_rel: &Path, meta: &std::fs::Metadata) -> bool {
        std::fs::symlink_metadata(self.dir.join(local_rel))
            .is_ok_and(|m| m.is_file() && m.dev() == meta.dev() && m.ino() == meta.ino())
    }

    /// Whether copies are still worth trying in this run.
    pub fn copies_work(&self) -> bool {
        self.copies_work.load(Ordering::Relaxed)
    }

    /// Records that the store refused (or could not vouch for) a copy: said once, then the
    /// rest of the run uploads.
    pub fn copy_refused(&self, why: &str) {
        if self.copies_work.swap(false, Ordering::Relaxed) {
            tracing::info!("server-side copies unavailable ({why}); uploading instead");
        }
    }
}

/// Backups tried, newest first, before giving up on reuse (incomplete ones are skipped).
const CANDIDATES: usize = 3;

/// Finds the newest complete backup before `id` in the bucket and reads its manifest. Reuse is
/// an optimisation: any failure here is a warning and the backup is uploaded whole.
pub async fn previous(
    t: &Transfer,
    remote: &Remote,
    dirs: &ServerDirs,
    id: &str,
) -> Option<Previous> {
    match find(t, remote, dirs, id).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(
                "{id}: cannot read the previous backup's manifest, uploading every file: {}",
                e.one_line()
            );
            None
        }
    }
}

async fn find(
    t: &Transfer,
    remote: &Remote,
    dirs: &ServerDirs,
    id: &str,
) -> Result<Option<Previous>> {
    let base = remote.base_prefix();
    let req = ListRequest {
        prefix: base.clone(),
        delimiter: Some("/".into()),
        ..Default::default()
    };
    let mut ids = Vec::new();
    t.list_pages(&req, |_, prefixes| {
        ids.extend(
            prefixes
                .iter()
                .filter_map(|p| p.strip_prefix(&base)?.strip_suffix('/'))
                .filter(|other| super::info::is_backup_id(other) && *other < id)
                .map(str::to_string),
        );
        true
    })
    .await?;
    ids.sort_unstable_by(|a, b| b.cmp(a));
    for prev in ids.into_iter().take(CANDIDATES) {
        match super::restore::manifest(t, remote, &prev).await {
            Ok((_, m)) => {
                let files = m
                    .entries
                    .iter()
                    .filter_map(|e| match e {
                        Entry::File {
                            path,
                            size,
                            crc32c,
                            mtime_ns,
                            ..
                        } => Some((
                            path.clone(),
                            Prior {
                                size: *size,
                                crc32c: u32::from_str_radix(crc32c, 16).ok()?,
                                mtime_ns: *mtime_ns,
                            },
                        )),
                        _ => None,
                    })
                    .collect();
                tracing::debug!("{id}: reusing unchanged files of {prev}");
                return Ok(Some(Previous {
                    dir: dirs.base_dir.join(&prev),
                    id: prev,
                    files,
                    copies_work: AtomicBool::new(true),
                }));
            }
            // Incomplete in the bucket (no backup.info) or a kind we do not restore: older one.
            Err(Error::Failed(_)) | Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// CRC32C and size of a local file, read in small buffers off the async threads.
pub async fn file_crc(path: &Path) -> Result<(u32, u64)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut f = std::fs::File::open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let mut buf = vec![0u8; 1 << 20];
        let (mut crc, mut size) = (0u32, 0u64);
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            if n == 0 {
                return Ok((crc, size));
            }
            crc = crate::checksum::crc32c_append(crc, &buf[..n]);
            size += n as u64;
        }
    })
    .await
    .map_err(|e| Error::Failed(format!("read task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000_000_000_000;

    fn prior(size: u64, mtime_ns: Option<i64>) -> Prior {
        Prior {
            size,
            crc32c: 0xabc,
            mtime_ns,
        }
    }
    fn now(size: u64, mtime_ns: i64, same_inode: bool) -> Current {
        Current {
            size,
            mtime_ns,
            same_inode,
        }
    }

    #[test]
    fn only_the_same_unchanged_inode_is_copied_unread() {
        let cases = [
            (now(10, T, true), None, Reuse::Upload),
            (
                now(10, T, true),
                Some(prior(10, Some(T))),
                Reuse::Copy(0xabc),
            ),
            // Same inode but touched since the upload: read it first.
            (
                now(10, T + 1, true),
                Some(prior(10, Some(T))),
                Reuse::CopyIfCrc(0xabc),
            ),
            // An older manifest without mtimes: read it first.
            (
                now(10, T, true),
                Some(prior(10, None)),
                Reuse::CopyIfCrc(0xabc),
            ),
            // Another inode of the same size (a copy, or rewritten in place): read it first.
            (
                now(10, T, false),
                Some(prior(10, Some(T))),
                Reuse::CopyIfCrc(0xabc),
            ),
            // Any size difference: upload, whatever else matches.
            (now(11, T, true), Some(prior(10, Some(T))), Reuse::Upload),
            (now(9, T, false), Some(prior(10, None)), Reuse::Upload),
            // Empty files: a copy saves nothing.
            (now(0, T, true), Some(prior(0, Some(T))), Reuse::Upload),
        ];
        for (i, (n, p, want)) in cases.iter().enumerate() {
            assert_eq!(decide(n, p.as_ref()), *want, "case {i}");
        }
    }
}
