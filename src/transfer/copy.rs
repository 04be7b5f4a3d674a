//! Server-side copies: an object made from another object of the same store without its bytes
//! passing through this host (CopyObject, or UploadPartCopy part by part above the single-copy
//! limit), verified like an upload: the server's checksum of the new object must equal the
//! CRC32C the caller expects (from the manifest that recorded the source when it was uploaded).
//!
//! A copy the server refuses, or cannot vouch for because it keeps no checksum of copies, is
//! reported as [`Error::CopyRefused`], so the caller can upload instead.
//!
//! With encryption on, an encrypted source is copied as it is stored (its ciphertext, never
//! opened and sealed again): the caller's record is of the plaintext, so the copy is checked
//! against the source instead, whose header must open to the recorded plaintext size, and
//! whose stored size and full-object CRC32C the copy must have.

use super::Transfer;
use super::plan::{self, LAYOUT_META};
use crate::checksum;
use crate::error::{Error, Result};
use crate::store::limits::MAX_COPY_SIZE;
use crate::store::{ChecksumAlgorithm, ObjectRange, PartReceipt, PutOptions, ServerCopy, Upload};

/// What a copy must produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyExpect {
    /// Bytes.
    pub size: u64,
    /// CRC32C of the whole object.
    pub crc32c: u32,
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

    /// The copy of an encrypted object: its stored bytes, checked against the source's (the
    /// plaintext record `expect` cannot be compared with the server's checksum of
    /// ciphertext). The source's header must open with our identities and give `expect.size`;
    /// a source stored unencrypted (a backup from before encryption was turned on) refuses
    /// copies for the run; one the server holds without a full-object CRC32C (sent in parts)
    /// is not copied: the file is sent again, sealed.
    async fn copy_sealed(
        &self,
        src: &str,
        dst: &str,
        expect: CopyExpect,
        opts: PutOptions,
    ) -> Result<()> {
        let meta = self.head(src).await?;
        // Reuse reads the previous backup's (encrypted) manifest, so a host that gets here
        // holds identities: the header opens, or the copy is not made.
        let plain_len = self.sniff(src, &meta).await?.map(|s| s.plain_len);
        let Some(plain_len) = plain_len else {
            return Err(Error::CopyRefused(format!(
                "{src} is stored unencrypted; sending it again, encrypted"
            )));
        };
        if plain_len != expect.size {
            return Err(Error::Checksum {
                key: src.into(),
                expected: format!("{} bytes", expect.size),
                actual: format!("{plain_len} bytes in the store"),
            });
        }
        let stored = match meta.crc32c.as_deref() {
            Some(c) if !c.contains('-') => checksum::parse_crc32c_header(c),
            _ => None,
        };
        // This object's own shape, not the server's: the caller sends this file again and goes
        // on copying others.
        let Some(crc32c) = stored else {
            return Err(Error::Failed(format!(
                "{src} has no CRC32C of the whole encrypted object to check a copy against"
            )));
        };
        if meta.size > self.cfg.copy_limit.min(MAX_COPY_SIZE) {
            return Err(Error::Failed(format!(
                "{src} is an encrypted object above the single-copy limit"
            )));
        }
        let result = self
            .copy_whole(
                src,
                dst,
                CopyExpect {
                    size: meta.size,
                    crc32c,
                },
                opts,
            )
            .await;
        self.copied(result, expect.size)
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
        opts.part_checksum = Some(ChecksumAlgorithm::Crc32c);
        self.copier(src)?;
        let upload = self
            .retry
            .run(&self.stats, &self.cancel, || {
                self.store.multipart().create(dst, &opts)
            })
            .await?;
        let result = self.copy_ranges(src, &upload, expect, part_size).await;
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
        part_size: u64,
    ) -> Result<()> {
        let dst = upload.key.as_str();
        let ranges = plan::layout(expect.size, part_size, 0);
        let jobs = ranges.into_iter().enumerate();
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
        self.finish(upload, &sent, expect.size, part_size, 0)
            .await
            .map(|_| ())
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
