//! Server-side copies: an object made from another object of the same store without its bytes
//! passing through this host (CopyObject, or UploadPartCopy part by part above the single-copy
//! limit), verified like an upload: the server's checksum of the new object must equal the
//! CRC32C the caller expects (from the manifest that recorded the source when it was uploaded).
//!
//! A copy the server refuses, or cannot vouch for because it keeps no checksum of copies, is
//! reported as [`Error::CopyRefused`], so the caller can upload instead.
//!
//! With encryption on, an encrypted source is copied as it is stored (its ciphertext, never
//! opened and sealed again), checked against the caller's record of the ciphertext as it was
//! sent ([`sealed`]).

use super::plan::{self, LAYOUT_META};
use super::{Ciphertext, Transfer};
use crate::checksum;
use crate::error::{Error, Result};
use crate::store::limits::MAX_COPY_SIZE;
use crate::store::{
    ByteRange, ChecksumAlgorithm, ObjectRange, PartReceipt, PutOptions, ServerCopy, Upload,
};

mod sealed;

/// What a copy must produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyExpect {
    /// Bytes.
    pub size: u64,
    /// CRC32C of the whole object.
    pub crc32c: u32,
    /// With encryption on: the source as this host sent it (`size` and `crc32c` are then the
    /// plaintext's). The source and the copy must be exactly these stored bytes; without this
    /// record an encrypted object is not copied.
    pub ciphertext: Option<Ciphertext>,
}

/// Whether a store error means "this server does not do (verifiable) copies" rather than a
/// failure of this one request.
fn refused(e: &Error) -> bool {
    match e {
        Error::Store(f) => {
            matches!(f.status, Some(400 | 403 | 405 | 501))
                || matches!(
                    f.code.as_deref(),
                    Some("NotImplemented" | "InvalidRequest" | "AccessDenied")
                )
        }
        _ => false,
    }
}

impl Transfer {
    /// The store's server-side copies; a store without them is an error naming `src`.
    fn copier(&self, src: &str) -> Result<&dyn ServerCopy> {
        self.store.copier().ok_or_else(|| {
            Error::Failed(format!(
                "{}: server-side copy of {src} is not supported",
                self.describe()
            ))
        })
    }

    /// Copies `src` to `dst` inside the store and verifies the result against `expect`. The
    /// options' metadata replaces the source's when not empty; their kind picks the class.
    pub async fn copy_object(
        &self,
        src: &str,
        dst: &str,
        expect: CopyExpect,
        opts: PutOptions,
    ) -> Result<()> {
        if self.encrypts() {
            return self.copy_sealed(src, dst, expect, opts).await;
        }
        let result = if expect.size <= self.cfg.copy_limit.min(MAX_COPY_SIZE) {
            self.copy_whole(src, dst, expect, opts).await
        } else {
            self.copy_parts(src, dst, expect, opts).await
        };
        self.copied(result, expect.size)
    }

    /// A copy's result: counted when made; a store that refuses copies says so as
    /// [`Error::CopyRefused`], so the caller sends the file instead.
    fn copied(&self, result: Result<()>, size: u64) -> Result<()> {
        match result {
            Ok(()) => {
                self.stats.copied(size);
                Ok(())
            }
            Err(e) if refused(&e) => Err(Error::CopyRefused(e.one_line())),
            Err(e) => Err(e),
        }
    }

    async fn copy_whole(
        &self,
        src: &str,
        dst: &str,
        expect: CopyExpect,
        opts: PutOptions,
    ) -> Result<()> {
        let copier = self.copier(src)?;
        let _permit = self.permit().await?;
        self.retry
            .run(&self.stats, &self.cancel, || copier.copy(src, dst, &opts))
            .await?;
        let head = self.head(dst).await?;
        if head.size != expect.size {
            return Err(Error::Checksum {
                key: dst.into(),
                expected: format!("{} bytes", expect.size),
                actual: format!("{} bytes", head.size),
            });
        }
        match head.crc32c.as_deref() {
            Some(c) if !c.contains('-') => {
                let want = checksum::crc32c_header(expect.crc32c);
                if c == want {
                    Ok(())
                } else {
                    Err(Error::Checksum {
                        key: dst.into(),
                        expected: want,
                        actual: c.to_string(),
                    })
                }
            }
            // This object's own shape (its source was sent in parts), not the server's: the
            // caller uploads this file and goes on copying others.
            Some(c) => Err(Error::Failed(format!(
                "the copy {dst} has a CRC32C of its parts ({c}), not of the whole object, so it cannot be verified"
            ))),
            None => Err(Error::CopyRefused(format!(
                "{}: the copy {dst} has no CRC32C, so it cannot be verified",
                self.describe()
            ))),
        }
    }

    /// A copy above the single-copy limit: a multipart upload whose parts are ranges of the
    /// source. The server reports each part's CRC32C; combined, they must equal the expected one.
    async fn copy_parts(
        &self,
        src: &str,
        dst: &str,
        expect: CopyExpect,
        mut opts: PutOptions,
    ) -> Result<()> {
        // Big parts: fewer requests, and a copied part costs this host nothing.
        let part_size = plan::part_size_for(
            expect.size,
            self.cfg.part_size.max(self.cfg.copy_limit.min(1 << 30)),
        );
        opts.metadata
            .insert(LAYOUT_META.to_string(), plan::encode_layout(part_size, 0));
        let ranges = plan::layout(expect.size, part_size, 0);
        self.copy_in_parts(src, dst, expect, opts, &ranges).await
    }

    /// The multipart copy of `src` as `ranges` (which tile it), created with `opts`.
    async fn copy_in_parts(
        &self,
        src: &str,
        dst: &str,
        expect: CopyExpect,
        mut opts: PutOptions,
        ranges: &[ByteRange],
    ) -> Result<()> {
        opts.part_checksum = Some(ChecksumAlgorithm::Crc32c);
        self.copier(src)?;
        let upload = self
            .retry
            .run(&self.stats, &self.cancel, || {
                self.store.multipart().create(dst, &opts)
            })
            .await?;
        let result = self.copy_ranges(src, &upload, expect, ranges).await;
        if result.is_err() {
            let _ = self.abort(&upload).await;
        }
        result
    }

    async fn copy_ranges(
        &self,
        src: &str,
        upload: &Upload,
        expect: CopyExpect,
        ranges: &[ByteRange],
    ) -> Result<()> {
        let dst = upload.key.as_str();
        let jobs = ranges.iter().copied().enumerate();
        let parts: Vec<PartReceipt> = super::bounded(jobs, self.cfg.concurrency, |(i, r)| {
            let t = self.clone();
            let (upload, from) = (
                upload.clone(),
                ObjectRange {
                    key: src.to_string(),
                    range: r,
                },
            );
            async move {
                let copier = t.copier(&from.key)?;
                let _permit = t.permit().await?;
                t.retry
                    .run(&t.stats, &t.cancel, || {
                        copier.copy_part(&upload, i as u32 + 1, &from)
                    })
                    .await
            }
        })
        .await?;
        let mut parts = parts;
        parts.sort_by_key(|p| p.part_number);
        self.listed_crcs(upload, &mut parts).await?;
        let crcs: Vec<(u32, u64)> = parts
            .iter()
            .map(|p| {
                p.crc32c.map(|c| (c, p.size)).ok_or_else(|| {
                    Error::CopyRefused(format!(
                        "{}: part {} of the copy {dst} has no CRC32C, so it cannot be verified",
                        self.describe(),
                        p.part_number
                    ))
                })
            })
            .collect::<Result<_>>()?;
        let combined = super::upload::combine(&crcs);
        if combined != expect.crc32c {
            return Err(Error::Checksum {
                key: dst.into(),
                expected: checksum::crc32c_header(expect.crc32c),
                actual: checksum::crc32c_header(combined),
            });
        }
        let sent: Vec<_> = parts
            .into_iter()
            .zip(&crcs)
            .map(|(p, (crc, _))| super::SentPart {
                number: p.part_number,
                etag: p.etag,
                crc32c: *crc,
                size: p.size,
                plain_crc32c: None,
            })
            .collect();
        let first = ranges.first().map_or(1, ByteRange::len);
        self.finish(upload, &sent, expect.size, first, 0)
            .await
            .map(|_| ())
    }
}

impl Transfer {
    /// Fills in the CRC32C of copied parts whose answer had none from the server's list of the
    /// upload's parts: Garage computes a copied part's CRC32C (the upload asked for them) but
    /// returns it only there. Still the server's checksum of the bytes it copied, so the
    /// combined value checks the copy as the answers' would.
    async fn listed_crcs(&self, upload: &Upload, parts: &mut [PartReceipt]) -> Result<()> {
        if parts.iter().all(|p| p.crc32c.is_some()) {
            return Ok(());
        }
        let listed = self
            .retry
            .run(&self.stats, &self.cancel, || {
                self.store.multipart().list_parts(upload)
            })
            .await?;
        for p in parts.iter_mut().filter(|p| p.crc32c.is_none()) {
            p.crc32c = listed
                .iter()
                .find(|l| l.part_number == p.part_number && l.etag == p.etag)
                .and_then(|l| l.crc32c);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StoreFailure;

    fn store_err(status: Option<u16>, code: Option<&str>) -> Error {
        Error::Store(StoreFailure {
            op: "CopyObject",
            key: "k".into(),
            status,
            code: code.map(str::to_string),
            message: "m".into(),
            retryable: false,
        })
    }

    #[test]
    fn refusals_are_told_apart_from_failures() {
        assert!(refused(&store_err(Some(501), None)));
        assert!(refused(&store_err(None, Some("NotImplemented"))));
        assert!(refused(&store_err(Some(403), Some("AccessDenied"))));
        assert!(!refused(&store_err(Some(500), Some("InternalError"))));
        assert!(!refused(&Error::NotFound { key: "k".into() }));
        assert!(!refused(&Error::Interrupted));
    }
}
