//! Uploads of files of known size: a single PUT, or a parallel multipart upload from positioned
//! reads with an optional resume journal. Streams of unknown length are in [`stream`].
//!
//! Every part carries a checksum the server verifies; after a multipart completes, a HEAD
//! checks size and composite checksum. Failure aborts the upload, except one recorded in a
//! journal, which the next run resumes.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;

use super::Transfer;
use super::plan::{self, LAYOUT_META};
use super::sealed::{Ciphertext, SEALED_META};
use crate::checksum;
use crate::crypt::Sealer;
use crate::error::{Error, Result};
use crate::secret::Secret;
use crate::store::limits::MAX_PUT_SIZE;
use crate::store::{
    Body, ByteRange, ChecksumAlgorithm, FileRange, Integrity, PartReceipt, PutOptions, Upload,
};
use crate::transfer::ChecksumMode;

mod file;
mod journal;
mod sealing;
mod stream;

use file::{SMALL, changed_or, hash_range, integrity_for, read_range};
pub use journal::{FileJournal, ResumeState, SentPart, UploadJournal};
use sealing::SealedPart;

/// What an upload produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// Bytes in the object.
    pub size: u64,
    /// CRC32C of the whole object, computed from the bytes sent.
    pub crc32c: u32,
    /// ETag the server gave.
    pub etag: Option<String>,
    /// Parts (1 for a single PUT).
    pub parts: u32,
    /// Parts that a resumed upload did not need to send again.
    pub parts_reused: u32,
    /// With encryption on: the object as stored (`size` and `crc32c` are the plaintext's).
    pub ciphertext: Option<Ciphertext>,
}

/// A part ready to send.
struct PartJob {
    number: u32,
    body: Bytes,
    _permit: Option<OwnedSemaphorePermit>,
}

/// The stored form of an object sent in `parts`: their sizes and CRC32Cs as sent.
fn stored_form(parts: &[SentPart]) -> Ciphertext {
    let crcs: Vec<(u32, u64)> = parts.iter().map(|p| (p.crc32c, p.size)).collect();
    Ciphertext {
        size: crcs.iter().map(|c| c.1).sum(),
        crc32c: combine(&crcs),
    }
}

/// CRC32C of a whole object from its parts' CRC32C and sizes.
pub(crate) fn combine(parts: &[(u32, u64)]) -> u32 {
    parts.iter().fold(0u32, |acc, &(crc, len)| {
        if len == 0 {
            acc
        } else {
            checksum::crc32c_combine(acc, crc, len)
        }
    })
}

impl Transfer {
    async fn algorithm(&self) -> Option<ChecksumAlgorithm> {
        (self.mode().await == ChecksumMode::WhenSupported).then_some(ChecksumAlgorithm::Crc32c)
    }

    /// Writes a small object from memory in one PUT (manifests, metadata files).
    pub async fn put_bytes(
        &self,
        key: &str,
        body: Bytes,
        metadata: BTreeMap<String, String>,
    ) -> Result<Uploaded> {
        self.put_bytes_with(
            key,
            body,
            &PutOptions {
                metadata,
                ..Default::default()
            },
        )
        .await
    }

    /// [`Transfer::put_bytes`] with options (metadata, kind of object).
    pub async fn put_bytes_with(
        &self,
        key: &str,
        body: Bytes,
        opts: &PutOptions,
    ) -> Result<Uploaded> {
        let _permit = self.permit_for(body.len() as u64).await?;
        self.put_sealed(key, body, opts).await
    }

    /// One PUT with retries, under a permit the caller holds.
    async fn put_once(
        &self,
        key: &str,
        body: Body,
        crc: u32,
        opts: &PutOptions,
    ) -> Result<Uploaded> {
        let size = body.len();
        self.progress.object_started(key, size);
        let receipt = self
            .retry
            .run(&self.stats, &self.cancel, || {
                self.store.put(key, body.clone(), opts)
            })
            .await;
        self.progress.object_done(key);
        let receipt = receipt?;
        self.progress.bytes_done(size);
        Ok(Uploaded {
            size,
            crc32c: crc,
            etag: receipt.etag,
            parts: 1,
            parts_reused: 0,
            ciphertext: None,
        })
    }

    /// A file of at most one part in one PUT. The permit (a share of one for a file of at most
    /// 1 MiB, else a whole one) is taken before any byte is read, so the files read at once
    /// stay within the permits; a file above [`SMALL`] is sent from disk after the hashing
    /// pre-pass.
    async fn put_file_whole(
        &self,
        file: File,
        path: &Path,
        key: &str,
        size: u64,
        opts: &PutOptions,
    ) -> Result<Uploaded> {
        let _permit = self.permit_for(size).await?;
        let file = Arc::new(file);
        let range = ByteRange {
            start: 0,
            end: size,
        };
        if self.crypt.keys().is_some() {
            return self.put_sealed_file(file, path, key, size, opts).await;
        }
        let (body, crc) = if size <= SMALL {
            let buf = read_range(file, range, path).await?;
            let (crc, integrity) = integrity_for(self.mode().await, &buf);
            (Body::bytes(buf, integrity), crc)
        } else {
            let fr = FileRange {
                path: path.to_path_buf(),
                file,
                range,
            };
            let (crc, integrity) = hash_range(&fr, self.mode().await).await?;
            (Body::file(fr, integrity), crc)
        };
        self.put_once(key, body, crc, opts).await
    }

    /// Uploads a local file. Up to the configured part size it is one PUT; above, a parallel
    /// multipart upload reading each part once with positioned reads. With a journal, progress
    /// is recorded after every part and a matching earlier upload is resumed.
    pub async fn upload_file(
        &self,
        path: &Path,
        key: &str,
        journal: Option<&dyn UploadJournal>,
    ) -> Result<Uploaded> {
        self.upload_file_with(path, key, journal, &PutOptions::default())
            .await
    }

    /// [`Transfer::upload_file`] with user metadata on the object.
    pub async fn upload_file_with(
        &self,
        path: &Path,
        key: &str,
        journal: Option<&dyn UploadJournal>,
        opts: &PutOptions,
    ) -> Result<Uploaded> {
        self.upload_file_as(path, key, journal, opts, self.cfg.part_size)
            .await
    }

    /// [`Transfer::upload_file_with`], sending a file of up to `one_put_max` bytes (never less
    /// than the part size, never more than S3's single-PUT limit) in one PUT. Objects made in
    /// one PUT can later be copied server-side without the server reading them again (Garage
    /// re-reads and re-hashes every byte of a copied multipart object); parts pay off only for
    /// a file that would otherwise be sent alone.
    pub async fn upload_file_as(
        &self,
        path: &Path,
        key: &str,
        journal: Option<&dyn UploadJournal>,
        opts: &PutOptions,
        one_put_max: u64,
    ) -> Result<Uploaded> {
        let file =
            File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
        let size = meta.len();
        // A sealed object is sealed in memory: one sealed part's worth at most.
        let one_put_max = match self.crypt.keys() {
            Some(_) => self.sealed_part_size(0),
            None => one_put_max.clamp(self.cfg.part_size, MAX_PUT_SIZE),
        };
        let result = if size <= one_put_max {
            let sent = self.put_file_whole(file, path, key, size, opts).await;
            if let (Ok(_), Some(j)) = (&sent, journal) {
                self.discard_journal(j, key).await;
            }
            sent
        } else {
            self.put_file_parts(file, &meta, path, key, journal, opts)
                .await
        };
        result.map_err(|e| changed_or(e, &meta, path))
    }

    /// A file above one part: a parallel multipart upload, resumable through `journal`.
    async fn put_file_parts(
        &self,
        file: File,
        meta: &std::fs::Metadata,
        path: &Path,
        key: &str,
        journal: Option<&dyn UploadJournal>,
        opts: &PutOptions,
    ) -> Result<Uploaded> {
        let size = meta.len();
        let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        let part_size = match self.crypt.keys() {
            Some(_) => self.sealed_part_size(size),
            None => plan::part_size_for(size, self.cfg.part_size),
        };
        let layout = plan::layout(size, part_size, 0);
        let file = Arc::new(file);

        let (mut state, sealer) = self
            .resume_or_create(key, size, mtime_ns, part_size, journal, opts)
            .await?;
        let sealed = sealer.is_some();
        let stored = sealer
            .as_ref()
            .map_or(size, |s| s.layout().sealed_len(size));
        let reused = state.parts.len() as u32;
        self.progress.object_started(key, size);
        self.progress
            .bytes_done(state.parts.iter().map(|p| p.size).sum());

        let result = self
            .send_file_parts(&file, path, &layout, &mut state, journal, sealer)
            .await;
        let result = match result {
            Ok(()) => {
                self.finish(&state.upload(), &state.parts, stored, part_size, 0)
                    .await
            }
            Err(e) => Err(e),
        };
        self.progress.object_done(key);
        match result {
            Ok(etag) => {
                if let Some(j) = journal {
                    j.clear()?;
                }
                let crcs: Vec<_> = state
                    .parts
                    .iter()
                    .zip(&layout)
                    .map(|(p, r)| (p.plain_crc32c.unwrap_or(p.crc32c), r.len()))
                    .collect();
                Ok(Uploaded {
                    size,
                    crc32c: combine(&crcs),
                    etag,
                    parts: layout.len() as u32,
                    parts_reused: reused,
                    ciphertext: sealed.then(|| stored_form(&state.parts)),
                })
            }
            Err(e) => {
                // A journaled upload stays for the next run to resume, unless it can never
                // complete (our data or the server refuses it); anything else is aborted now.
                let resumable =
                    journal.is_some() && (e.is_retryable() || matches!(e, Error::Interrupted));
                if !resumable {
                    let _ = self.abort(&state.upload()).await;
                    if let Some(j) = journal {
                        let _ = j.clear();
                    }
                }
                Err(e)
            }
        }
    }

    async fn resume_or_create(
        &self,
        key: &str,
        size: u64,
        mtime_ns: i128,
        part_size: u64,
        journal: Option<&dyn UploadJournal>,
        user: &PutOptions,
    ) -> Result<(ResumeState, Option<Arc<Sealer>>)> {
        if let Some(old) = journal.and_then(|j| j.load()) {
            let same = old.key == key
                && old.size == size
                && old.mtime_ns == mtime_ns
                && old.part_size == part_size
                && old.seal.is_some() == self.crypt.keys().is_some();
            // An upload sealed under a key this run cannot restore is started again.
            let sealer = match &old.seal {
                Some(st) if same => Sealer::resume(&Secret::new(st.clone()), key).ok(),
                _ => None,
            };
            if same && old.seal.is_some() != sealer.is_some() {
                let _ = self.abort(&old.upload()).await;
            } else if same {
                let resumed = old.upload();
                match self
                    .retry
                    .run(&self.stats, &self.cancel, || {
                        self.store.multipart().list_parts(&resumed)
                    })
                    .await
                {
                    Ok(server) => {
                        // Keep only parts the server has with the ETag we recorded.
                        let mut st = old.clone();
                        st.parts.retain(|p| {
                            server
                                .iter()
                                .any(|s| s.part_number == p.number && s.etag == p.etag)
                        });
                        tracing::info!(key, upload_id = %st.upload_id, parts = st.parts.len(), "resuming upload");
                        return Ok((st, sealer.map(Arc::new)));
                    }
                    Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            } else {
                let _ = self.abort(&old.upload()).await;
            }
        }
        let mut opts = user.clone();
        opts.metadata
            .insert(LAYOUT_META.to_string(), plan::encode_layout(part_size, 0));
        let sealer = match self.crypt.keys() {
            Some(k) => Some(Sealer::new(&k.recipients, key)?),
            None => None,
        };
        if let Some(s) = &sealer {
            opts.metadata
                .insert(SEALED_META.to_string(), s.preamble().len().to_string());
        }
        let upload = self.create_upload(key, &opts).await?;
        let st = ResumeState {
            key: upload.key,
            upload_id: upload.id,
            size,
            mtime_ns,
            part_size,
            parts: Vec::new(),
            seal: sealer
                .as_ref()
                .map(|s| s.resume_state().expose().to_string()),
        };
        if let Some(j) = journal {
            j.save(&st)?;
        }
        Ok((st, sealer.map(Arc::new)))
    }

    /// Starts a multipart upload of `key`. A new upload supersedes any incomplete earlier one
    /// of the same key: those are left-overs of a run that was killed before it could abort
    /// them or record them for resuming, and they are aborted first, so a crash never leaves
    /// orphaned parts behind once the key has been uploaded again.
    async fn create_upload(&self, key: &str, opts: &PutOptions) -> Result<Upload> {
        for old in self.incomplete_uploads(key).await? {
            if old.upload.key == key {
                tracing::info!(key, upload_id = %old.upload.id, "aborting an incomplete earlier upload");
                self.abort(&old.upload).await?;
            }
        }
        let opts = PutOptions {
            part_checksum: self.algorithm().await,
            ..opts.clone()
        };
        self.retry
            .run(&self.stats, &self.cancel, || {
                self.store.multipart().create(key, &opts)
            })
            .await
    }

    async fn send_file_parts(
        &self,
        file: &Arc<File>,
        path: &Path,
        layout: &[ByteRange],
        state: &mut ResumeState,
        journal: Option<&dyn UploadJournal>,
        sealer: Option<Arc<Sealer>>,
    ) -> Result<()> {
        let mut set: JoinSet<Result<(PartReceipt, u32, Option<u32>)>> = JoinSet::new();
        let total = layout.last().map_or(0, |r| r.end);
        let todo: Vec<u32> = (1..=layout.len() as u32)
            .filter(|n| !state.parts.iter().any(|p| p.number == *n))
            .collect();
        let mut next = 0;
        loop {
            // Keep at most `concurrency` parts in flight; capacity is taken before spawning.
            while next < todo.len() {
                let permit = tokio::select! {
                    p = self.permit() => p?,
                    Some(done) = set.join_next(), if !set.is_empty() => {
                        self.record_part(done, state, journal)?;
                        continue;
                    }
                };
                let number = todo[next];
                let r = layout[number as usize - 1];
                next += 1;
                let this = self.clone();
                let (file, path, upload) = (file.clone(), path.to_path_buf(), state.upload());
                let sealer = sealer.clone();
                set.spawn(async move {
                    if let Some(s) = sealer {
                        let part = SealedPart {
                            number,
                            range: r,
                            last: r.end == total,
                        };
                        let sent = this.send_sealed_part(s, part, (file, &path), &upload).await;
                        drop(permit);
                        return sent;
                    }
                    let range = FileRange {
                        path,
                        file,
                        range: r,
                    };
                    let (crc, integrity) = hash_range(&range, this.mode().await).await?;
                    let body = Body::file(range, integrity);
                    let receipt = this
                        .retry
                        .run(&this.stats, &this.cancel, || {
                            this.store
                                .multipart()
                                .upload_part(&upload, number, body.clone())
                        })
                        .await?;
                    drop(permit);
                    Ok((receipt, crc, None))
                });
            }
            match set.join_next().await {
                None => return Ok(()),
                Some(done) => self.record_part(done, state, journal)?,
            }
        }
    }

    fn record_part(
        &self,
        done: std::result::Result<Result<(PartReceipt, u32, Option<u32>)>, tokio::task::JoinError>,
        state: &mut ResumeState,
        journal: Option<&dyn UploadJournal>,
    ) -> Result<()> {
        let (receipt, crc, plain_crc) =
            done.map_err(|e| Error::Failed(format!("part task failed: {e}")))??;
        self.progress.bytes_done(receipt.size);
        let mut part = SentPart::from_receipt(receipt, crc);
        part.plain_crc32c = plain_crc;
        state.parts.push(part);
        state.parts.sort_by_key(|p| p.number);
        if let Some(j) = journal {
            j.save(state)?;
        }
        Ok(())
    }

    async fn send_part(&self, job: PartJob, upload: &Upload) -> Result<(PartReceipt, u32)> {
        let (crc, integrity) = integrity_for(self.mode().await, &job.body);
        Ok((self.send_part_as(job, upload, integrity).await?, crc))
    }

    /// Sends a part whose integrity value is already known, with retries.
    async fn send_part_as(
        &self,
        job: PartJob,
        upload: &Upload,
        integrity: Integrity,
    ) -> Result<PartReceipt> {
        let body = Body::bytes(job.body, integrity);
        self.retry
            .run(&self.stats, &self.cancel, || {
                self.store
                    .multipart()
                    .upload_part(upload, job.number, body.clone())
            })
            .await
    }

    /// Completes an upload and checks what the server now holds: size, and composite checksum
    /// or part count.
    pub(super) async fn finish(
        &self,
        upload: &Upload,
        parts: &[SentPart],
        size: u64,
        first: u64,
        growth: u64,
    ) -> Result<Option<String>> {
        let with_crc = self.mode().await == ChecksumMode::WhenSupported;
        let receipts: Vec<PartReceipt> = parts
            .iter()
            .map(|p| PartReceipt {
                part_number: p.number,
                etag: p.etag.clone(),
                crc32c: with_crc.then_some(p.crc32c),
                size: p.size,
            })
            .collect();
        let receipt = self
            .retry
            .run(&self.stats, &self.cancel, || {
                self.store.multipart().complete(upload, &receipts)
            })
            .await?;
        let key = upload.key.as_str();
        let head = self.head(key).await?;
        if head.size != size {
            return Err(Error::Checksum {
                key: key.into(),
                expected: format!("{size} bytes"),
                actual: format!("{} bytes", head.size),
            });
        }
        let expected =
            checksum::composite_crc32c(&parts.iter().map(|p| p.crc32c).collect::<Vec<_>>());
        if let Some(c) = head.crc32c.as_deref()
            && c.contains('-')
            && c != expected
        {
            return Err(Error::Checksum {
                key: key.into(),
                expected,
                actual: c.to_string(),
            });
        }
        if let Some(etag) = head.etag.as_deref()
            && let Some((_, n)) = etag.rsplit_once('-')
            && n.parse::<usize>().is_ok_and(|n| n != parts.len())
        {
            return Err(Error::Checksum {
                key: key.into(),
                expected: format!("{} parts", parts.len()),
                actual: format!("ETag {etag}"),
            });
        }
        debug_assert!(
            self.crypt.keys().is_some() || plan::layout(size, first, growth).len() == parts.len()
        );
        Ok(receipt.etag.or(head.etag))
    }
}
