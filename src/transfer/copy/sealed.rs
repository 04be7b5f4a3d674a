//! Server-side copies of encrypted objects: the stored ciphertext is copied as it is (never
//! opened and sealed again) and checked against the record of what this host sent
//! ([`Ciphertext`]: size and CRC32C of the stored bytes, kept in our encrypted manifest), not
//! against what the server says of the source alone. The bucket is outside the trust
//! boundary: a source swapped for another ciphertext of the same plaintext size would
//! otherwise be copied into the new backup unnoticed.
//!
//! [`judge`] (pure) decides from the record and the source's HEAD: a source whose whole-object
//! CRC32C is the record's is copied in one request, and the copy must have it too; a source
//! stored in parts (only a composite checksum) is copied part by part along its own parts, and
//! the server's CRC32Cs of the copied parts, combined, must be the record's. Anything else is
//! not copied: the caller sends the file again.

use super::CopyExpect;
use crate::checksum;
use crate::error::{Error, Result};
use crate::store::limits::{MAX_COPY_SIZE, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE};
use crate::store::{ByteRange, ObjectMeta, PutOptions};
use crate::transfer::Transfer;
use crate::transfer::plan::{self, LAYOUT_META};
use crate::transfer::sealed::{self, Ciphertext, SEALED_META};

/// How an encrypted object is copied, if at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SealedCopy {
    /// One CopyObject; the copy's whole-object CRC32C must be `expect`'s.
    Whole(CopyExpect),
    /// UploadPartCopy of these stored ranges (the source's own parts); the copied parts'
    /// CRC32Cs, combined, must be `expect`'s.
    Parts(CopyExpect, Vec<ByteRange>),
    /// The source is not what was sent: never copied.
    Differs {
        /// What the record says.
        expected: String,
        /// What the store holds.
        actual: String,
    },
    /// The source cannot be checked against the record (why): not copied.
    Unchecked(&'static str),
}

/// Decides the copy of an encrypted object from `record` (the object as sent) and `head` (the
/// source as the store shows it); `single_max` is the largest object one CopyObject copies.
pub(crate) fn judge(record: Option<Ciphertext>, head: &ObjectMeta, single_max: u64) -> SealedCopy {
    let Some(rec) = record else {
        return SealedCopy::Unchecked(
            "the manifest has no record of its ciphertext (written by an older barmans3)",
        );
    };
    if head.size != rec.size {
        return SealedCopy::Differs {
            expected: format!("{} stored bytes", rec.size),
            actual: format!("{} bytes", head.size),
        };
    }
    let expect = CopyExpect {
        size: rec.size,
        crc32c: rec.crc32c,
        ciphertext: None,
    };
    let Some(stored) = head.crc32c.as_deref() else {
        return SealedCopy::Unchecked("the store keeps no CRC32C of it");
    };
    if !stored.contains('-') {
        return match checksum::parse_crc32c_header(stored) {
            None => SealedCopy::Unchecked("the store's CRC32C of it does not parse"),
            Some(c) if c != rec.crc32c => SealedCopy::Differs {
                expected: checksum::crc32c_header(rec.crc32c),
                actual: stored.to_string(),
            },
            Some(_) if head.size <= single_max => SealedCopy::Whole(expect),
            Some(_) => match stored_parts(head) {
                Some(parts) => SealedCopy::Parts(expect, parts),
                None => SealedCopy::Unchecked("it is above the single-copy limit in one part"),
            },
        };
    }
    let count = stored
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse::<usize>().ok());
    match stored_parts(head) {
        Some(parts) if count == Some(parts.len()) => SealedCopy::Parts(expect, parts),
        _ => SealedCopy::Unchecked("it is stored in parts its metadata does not describe"),
    }
}

/// The stored ranges of the parts of an encrypted object uploaded in parts, from its metadata
/// (plaintext layout and header length), within S3's limits; `None` when they do not describe
/// it. The metadata is the bucket's word: it only picks the ranges, whose copied bytes are
/// then checked against the record.
fn stored_parts(head: &ObjectMeta) -> Option<Vec<ByteRange>> {
    let start = head.metadata.get(SEALED_META)?.parse::<u64>().ok()?;
    // The layout cuts the plaintext.
    let plain = crate::crypt::Layout::new(start).plain_len(head.size)?;
    let (first, growth) = plan::decode_layout(head.metadata.get(LAYOUT_META)?, plain)?;
    // Bounds the number of ranges computed before they are counted.
    if first < MIN_PART_SIZE {
        return None;
    }
    let parts = sealed::sealed_parts(head.size, start, first, growth)?;
    let fits = parts.len() as u64 <= MAX_PARTS && parts.iter().all(|p| p.len() <= MAX_PART_SIZE);
    fits.then_some(parts)
}

impl Transfer {
    /// The copy of an encrypted object: its stored bytes, checked against `expect.ciphertext`
    /// ([`judge`]) and its header, which must open with our identities to `expect.size`. A
    /// source stored unencrypted (a backup from before encryption was turned on) refuses copies
    /// for the run; a source that is not what was sent is a checksum error naming it; one that
    /// cannot be checked fails alone: the caller sends the file again.
    pub(super) async fn copy_sealed(
        &self,
        src: &str,
        dst: &str,
        expect: CopyExpect,
        mut opts: PutOptions,
    ) -> Result<()> {
        let meta = self.head(src).await?;
        let limit = self.cfg.copy_limit.min(MAX_COPY_SIZE);
        let (stored, ranges) = match judge(expect.ciphertext, &meta, limit) {
            SealedCopy::Whole(stored) => (stored, None),
            SealedCopy::Parts(stored, ranges) => (stored, Some(ranges)),
            SealedCopy::Differs { expected, actual } => {
                return Err(Error::Checksum {
                    key: src.into(),
                    expected,
                    actual,
                });
            }
            SealedCopy::Unchecked(why) => {
                return Err(Error::Failed(format!("{src} is not copied: {why}")));
            }
        };
        self.check_header(src, &meta, expect.size).await?;
        let result = match ranges {
            None => self.copy_whole(src, dst, stored, opts).await,
            Some(ranges) => {
                // The copy is laid out as its source, so it reads (and verifies) the same way.
                for k in [LAYOUT_META, SEALED_META] {
                    if let Some(v) = meta.metadata.get(k) {
                        opts.metadata.insert(k.to_string(), v.clone());
                    }
                }
                self.copy_in_parts(src, dst, stored, opts, &ranges).await
            }
        };
        self.copied(result, expect.size)
    }

    /// The source's header must open with our identities to `plain` bytes, and its header
    /// length be the one its metadata gives (a copy in parts keeps that metadata).
    async fn check_header(&self, src: &str, meta: &ObjectMeta, plain: u64) -> Result<()> {
        // Reuse reads the previous backup's (encrypted) manifest, so a host that gets here
        // holds identities: the header opens, or the copy is not made.
        let Some(opened) = self.sniff(src, meta).await? else {
            return Err(Error::CopyRefused(format!(
                "{src} is stored unencrypted; sending it again, encrypted"
            )));
        };
        if opened.plain_len != plain {
            return Err(Error::Checksum {
                key: src.into(),
                expected: format!("{plain} bytes"),
                actual: format!("{} bytes in the store", opened.plain_len),
            });
        }
        let start = opened.opener.layout().payload_start();
        match meta.metadata.get(SEALED_META) {
            Some(v) if v.parse::<u64>().ok() != Some(start) => Err(Error::Checksum {
                key: src.into(),
                expected: format!("a header of {start} bytes"),
                actual: format!("{SEALED_META}: {v}"),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypt::{CHUNK, Layout};

    const MIB: u64 = 1 << 20;
    const HEADER: u64 = 200;

    fn rec(size: u64, crc32c: u32) -> Option<Ciphertext> {
        Some(Ciphertext { size, crc32c })
    }

    /// A HEAD of an encrypted object of `plain` bytes: `crc` as the store reports it and,
    /// when it was sent in parts of `part` plaintext bytes, its layout metadata.
    fn head(plain: u64, crc: Option<&str>, part: Option<u64>) -> ObjectMeta {
        let size = Layout::new(HEADER).sealed_len(plain);
        let mut m = ObjectMeta::listed("src", size);
        m.crc32c = crc.map(str::to_string);
        if let Some(p) = part {
            m.metadata
                .insert(LAYOUT_META.into(), plan::encode_layout(p, 0));
            m.metadata.insert(SEALED_META.into(), HEADER.to_string());
        }
        m
    }

    fn size_of(plain: u64) -> u64 {
        Layout::new(HEADER).sealed_len(plain)
    }

    fn expect(size: u64, crc32c: u32) -> CopyExpect {
        CopyExpect {
            size,
            crc32c,
            ciphertext: None,
        }
    }

    #[test]
    fn a_whole_object_is_copied_only_with_the_recorded_checksum() {
        let small = size_of(3 * MIB);
        let h = head(3 * MIB, Some(&checksum::crc32c_header(7)), None);
        assert_eq!(
            judge(rec(small, 7), &h, MAX_COPY_SIZE),
            SealedCopy::Whole(expect(small, 7))
        );
        // Swapped for another ciphertext of the same size: another CRC32C.
        assert!(matches!(
            judge(rec(small, 8), &h, MAX_COPY_SIZE),
            SealedCopy::Differs { .. }
        ));
        // Another size.
        assert!(matches!(
            judge(rec(small + 1, 7), &h, MAX_COPY_SIZE),
            SealedCopy::Differs { .. }
        ));
        // Above the single-copy limit, with no parts to copy along.
        assert!(matches!(
            judge(rec(small, 7), &h, MIB),
            SealedCopy::Unchecked(_)
        ));
    }

    #[test]
    fn an_object_sent_in_parts_is_copied_along_its_parts() {
        let (plain, part) = (12 * MIB + 5, 5 * MIB);
        let size = size_of(plain);
        let h = head(plain, Some("AAAAAA==-3"), Some(part));
        let SealedCopy::Parts(e, parts) = judge(rec(size, 9), &h, MAX_COPY_SIZE) else {
            panic!("copied in parts");
        };
        assert_eq!(e, expect(size, 9));
        assert_eq!(parts.len(), 3);
        assert_eq!((parts[0].start, parts[2].end), (0, size));
        assert!(parts.windows(2).all(|w| w[0].end == w[1].start));
        // Every inner boundary is a chunk boundary: the copy reads like its source.
        let chunks = (parts[0].end - HEADER) % crate::crypt::SEALED_CHUNK;
        assert_eq!((chunks, part % CHUNK), (0, 0));
        // A whole-object CRC32C (the local store's) above the single-copy limit: by parts.
        let full = head(plain, Some(&checksum::crc32c_header(9)), Some(part));
        assert!(matches!(
            judge(rec(size, 9), &full, MIB),
            SealedCopy::Parts(_, _)
        ));
        // The size still has to be the record's; the CRC32C is checked on the copied parts.
        assert!(matches!(
            judge(rec(size - 1, 9), &h, MAX_COPY_SIZE),
            SealedCopy::Differs { .. }
        ));
    }

    #[test]
    fn what_cannot_be_checked_is_not_copied() {
        let (plain, part) = (12 * MIB + 5, 5 * MIB);
        let size = size_of(plain);
        let unchecked = |r: Option<Ciphertext>, h: &ObjectMeta| {
            matches!(judge(r, h, MAX_COPY_SIZE), SealedCopy::Unchecked(_))
        };
        let parts = head(plain, Some("AAAAAA==-3"), Some(part));
        // A manifest from before the record existed.
        assert!(unchecked(None, &parts));
        // No checksum at all, or one that does not parse.
        assert!(unchecked(rec(size, 9), &head(plain, None, Some(part))));
        assert!(unchecked(rec(size, 9), &head(plain, Some("zz"), None)));
        // A composite without a layout, or with one of another part count.
        assert!(unchecked(
            rec(size, 9),
            &head(plain, Some("AAAAAA==-3"), None)
        ));
        assert!(unchecked(
            rec(size, 9),
            &head(plain, Some("AAAAAA==-4"), Some(part))
        ));
        // A layout whose parts S3 would refuse (or that would be millions of ranges).
        let tiny = head(plain, Some("AAAAAA==-192"), Some(CHUNK));
        assert!(unchecked(rec(size, 9), &tiny));
        let mut bad = parts.clone();
        bad.metadata.insert(SEALED_META.into(), "x".into());
        assert!(unchecked(rec(size, 9), &bad));
    }
}
