//! Backup files that need not be sent again: a file of a new backup that is the same as a file
//! of the server's previous complete backup in the bucket is made with a server-side copy of
//! that object (the bucket stays a plain mirror: every backup prefix is complete on its own).
//!
//! "The same" is decided by [`decide`], a pure function, against the previous backup's own
//! local file, which must still be what was uploaded (its size and mtime as the manifest
//! recorded them): the very file Barman hard-linked (`reuse_backup = link`: same inode) is
//! copied outright; another file of the same size is compared byte for byte with it. Never by
//! checksum alone: PostgreSQL's `pg_control` and `pg_filenode.map` end with a CRC-32C of their
//! own content, so every valid version of them has the same CRC32C and size. The copy itself
//! is verified against the recorded CRC32C; with encryption on, against the record of the
//! object's ciphertext as it was sent, so a file recorded without one (a manifest of an older
//! version, or of a backup made without encryption) is sent again, never copied on the
//! bucket's word.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::barman::conf::ServerDirs;
use crate::barman::manifest::Entry;
use crate::barman::server::Server;
use crate::error::{Error, Result};
use crate::transfer::Ciphertext;

/// What the previous backup's manifest says of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prior {
    /// Bytes.
    pub size: u64,
    /// CRC32C of the uploaded content.
    pub crc32c: u32,
    /// Modification time when it was uploaded, if recorded.
    pub mtime_ns: Option<i64>,
    /// The encrypted object as it was sent, if recorded.
    pub ciphertext: Option<Ciphertext>,
    /// The fingerprint of the recipients it was sealed to, if recorded.
    pub recipients: Option<u32>,
}

/// Size and modification time of a local file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Bytes.
    pub size: u64,
    /// Modification time (ns since the epoch).
    pub mtime_ns: i64,
}

/// How a file of the new backup gets into the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Server-side copy of the previous object, recorded so.
    Copy(Prior),
    /// Server-side copy if the file is byte for byte the previous backup's local file; else
    /// upload.
    CopyIfSame(Prior),
    /// Upload.
    Upload,
}

/// The decision for one file: `now` is the new file, `prior` the manifest's record of the same
/// path in the previous backup, `prev` that backup's local file as it is now (`None`: gone),
/// `same_inode` whether the two are one inode, `recipients` the fingerprint of the recipients
/// this run seals to (`None`: it does not encrypt). Copies only when the previous local file is
/// still what was uploaded; never on a size difference; with encryption on, only an object
/// recorded as the ciphertext sent to the same recipients (after a key rotation every file is
/// sealed again to the new set, or the new backup would open only with the old identities), and
/// never one so recorded into a run without encryption, which must not store ciphertext.
pub fn decide(
    now: &Stat,
    prior: Option<&Prior>,
    prev: Option<&Stat>,
    same_inode: bool,
    recipients: Option<u32>,
) -> Reuse {
    let (Some(p), Some(local)) = (prior, prev) else {
        return Reuse::Upload;
    };
    let uploaded_as_is = p.mtime_ns == Some(local.mtime_ns) && p.size == local.size;
    if !uploaded_as_is || p.size != now.size || now.size == 0 {
        return Reuse::Upload;
    }
    if p.ciphertext.is_some() != recipients.is_some() || p.recipients != recipients {
        return Reuse::Upload;
    }
    if same_inode {
        Reuse::Copy(*p)
    } else {
        Reuse::CopyIfSame(*p)
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

    /// The previous backup's local file at `local_rel`: its size and mtime, and whether it is
    /// the same inode as `meta`. `None` when it is gone or not a regular file.
    pub fn local(&self, local_rel: &Path, meta: &std::fs::Metadata) -> Option<(Stat, bool)> {
        let m = std::fs::symlink_metadata(self.dir.join(local_rel)).ok()?;
        m.is_file().then(|| {
            let st = Stat {
                size: m.len(),
                mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            };
            (st, m.dev() == meta.dev() && m.ino() == meta.ino())
        })
    }

    /// Path of the previous backup's local file at `local_rel`.
    pub fn local_path(&self, local_rel: &Path) -> PathBuf {
        self.dir.join(local_rel)
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
pub async fn previous(srv: &Server, dirs: &ServerDirs, id: &str) -> Option<Previous> {
    match find(srv, dirs, id).await {
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

async fn find(srv: &Server, dirs: &ServerDirs, id: &str) -> Result<Option<Previous>> {
    let mut ids = srv.backup_ids().await?;
    ids.retain(|other| other.as_str() < id);
    ids.sort_unstable_by(|a, b| b.cmp(a));
    for prev in ids.into_iter().take(CANDIDATES) {
        match crate::barman::recover::restore::manifest(srv, &prev).await {
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
                            ciphertext,
                            ..
                        } => Some((
                            path.clone(),
                            Prior {
                                size: *size,
                                crc32c: u32::from_str_radix(crc32c, 16).ok()?,
                                mtime_ns: *mtime_ns,
                                ciphertext: ciphertext.as_ref().and_then(|c| c.parse()),
                                recipients: ciphertext.as_ref().and_then(|c| c.recipients()),
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

/// Whether two local files hold the same bytes, read side by side in small buffers off the
/// async threads.
pub async fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let (a, b) = (a.to_path_buf(), b.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let open = |p: &Path| {
            std::fs::File::open(p).map_err(|e| Error::io(format!("open {}", p.display()), e))
        };
        let (mut fa, mut fb) = (open(&a)?, open(&b)?);
        let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
        loop {
            let n = read_full(&mut fa, &mut ba)
                .map_err(|e| Error::io(format!("read {}", a.display()), e))?;
            let m = read_full(&mut fb, &mut bb)
                .map_err(|e| Error::io(format!("read {}", b.display()), e))?;
            if n != m || ba[..n] != bb[..m] {
                return Ok(false);
            }
            if n == 0 {
                return Ok(true);
            }
        }
    })
    .await
    .map_err(|e| Error::Failed(format!("read task failed: {e}")))?
}

/// Fills `buf` as far as the file allows; the bytes read (short only at the end).
fn read_full(f: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000_000_000_000;

    fn st(size: u64, mtime_ns: i64) -> Stat {
        Stat { size, mtime_ns }
    }
    fn prior(size: u64, mtime_ns: Option<i64>) -> Prior {
        Prior {
            size,
            crc32c: 0xabc,
            mtime_ns,
            ciphertext: None,
            recipients: None,
        }
    }

    #[test]
    fn copies_only_from_a_previous_file_still_as_uploaded() {
        let pp = prior(10, Some(T));
        let p = Some(pp);
        let cases = [
            // The hard link Barman made: copied unread.
            (st(10, T), p, Some(st(10, T)), true, Reuse::Copy(pp)),
            // Another inode of the same size: compared byte for byte first.
            (
                st(10, T + 5),
                p,
                Some(st(10, T)),
                false,
                Reuse::CopyIfSame(pp),
            ),
            // Nothing recorded, or the previous local file gone: upload.
            (st(10, T), None, Some(st(10, T)), true, Reuse::Upload),
            (st(10, T), p, None, false, Reuse::Upload),
            // The previous local file changed since its upload (mtime or size): upload.
            (st(10, T + 1), p, Some(st(10, T + 1)), true, Reuse::Upload),
            (st(11, T), p, Some(st(11, T)), true, Reuse::Upload),
            // An older manifest without mtimes: nothing proves the local file is what went.
            (
                st(10, T),
                Some(prior(10, None)),
                Some(st(10, T)),
                true,
                Reuse::Upload,
            ),
            // Any size difference, and empty files (a copy saves nothing).
            (st(9, T), p, Some(st(10, T)), false, Reuse::Upload),
            (
                st(0, T),
                Some(prior(0, Some(T))),
                Some(st(0, T)),
                true,
                Reuse::Upload,
            ),
        ];
        for (i, (now, pr, prev, same, want)) in cases.iter().enumerate() {
            assert_eq!(
                decide(now, pr.as_ref(), prev.as_ref(), *same, None),
                *want,
                "case {i}"
            );
        }
    }

    #[test]
    fn encrypted_copies_need_the_record_of_the_ciphertext_sent() {
        let plain = prior(10, Some(T));
        let sealed = Prior {
            ciphertext: Some(Ciphertext {
                size: 300,
                crc32c: 0xdef,
            }),
            recipients: Some(0xa),
            ..plain
        };
        // A record of an older version: no recipients recorded.
        let unnamed = Prior {
            recipients: None,
            ..sealed
        };
        let (now, local) = (st(10, T), Some(st(10, T)));
        let (a, b) = (Some(0xa), Some(0xb));
        let cases = [
            // Encrypted, recorded as sent to these recipients: copied (the record goes with it).
            (sealed, true, a, Reuse::Copy(sealed)),
            (sealed, false, a, Reuse::CopyIfSame(sealed)),
            // The recipients changed since (a key rotation), or the record does not say: sealed
            // again to the current set.
            (sealed, true, b, Reuse::Upload),
            (unnamed, true, a, Reuse::Upload),
            // Encrypted now, but the manifest (older, or of a backup without encryption) has no
            // record of a ciphertext: sent again.
            (plain, true, a, Reuse::Upload),
            (plain, false, a, Reuse::Upload),
            // A ciphertext is never copied into a run that does not encrypt.
            (sealed, true, None, Reuse::Upload),
            // Neither: as ever.
            (plain, true, None, Reuse::Copy(plain)),
        ];
        for (i, (p, same, recipients, want)) in cases.iter().enumerate() {
            assert_eq!(
                decide(&now, Some(p), local.as_ref(), *same, *recipients),
                *want,
                "case {i}"
            );
        }
    }

    /// Why content is compared, never CRC32C alone: a file ending in a CRC-32C of its own
    /// content (pg_control, pg_filenode.map) has the same CRC32C whatever that content is.
    #[test]
    fn self_checksummed_files_share_one_crc32c() {
        let control = |seed: u8| {
            let mut v: Vec<u8> = (0..296u32).map(|i| (i as u8).wrapping_mul(seed)).collect();
            let crc = crate::checksum::crc32c(&v);
            v.extend_from_slice(&crc.to_le_bytes());
            v.resize(8192, 0);
            v
        };
        let (a, b) = (control(3), control(7));
        assert_ne!(a, b);
        assert_eq!(crate::checksum::crc32c(&a), crate::checksum::crc32c(&b));
    }

    #[tokio::test]
    async fn same_content_compares_every_byte() {
        let d = tempfile::tempdir().expect("tmp");
        let (a, b, c) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&a, &body).expect("a");
        std::fs::write(&b, &body).expect("b");
        let mut other = body.clone();
        other[2_999_999] ^= 1;
        std::fs::write(&c, &other).expect("c");
        assert!(same_content(&a, &b).await.expect("cmp"));
        assert!(!same_content(&a, &c).await.expect("cmp"));
        std::fs::write(&c, &body[..10]).expect("short");
        assert!(!same_content(&a, &c).await.expect("cmp"));
    }
}
