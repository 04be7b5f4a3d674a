//! One object from the main store to the replica: server-side when the stores allow it,
//! else through this host ([`Transfer::relay_from`]); verified either way against what we
//! recorded (the manifest's size and CRC32C) or, where nothing was recorded (WAL files, our
//! manifest, backup.info, encrypted objects whose record is of the plaintext), against the
//! checksum the main store keeps with the object. Streamed objects share one memory budget
//! ([`RelayBudget`]: `max(s3.stream_memory, 16 MiB)` of buffers for the whole run).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::store::{ObjectKind, ObjectMeta, PutOptions};
use crate::transfer::plan::LAYOUT_META;
use crate::transfer::relay::{RelayBudget, RelaySource};
use crate::transfer::sealed::SEALED_META;
use crate::transfer::{CopyExpect, Expect, Transfer};

/// The two engines of a replication run and how they copy.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The main store (read as stored bytes: nothing opened).
    pub source: Transfer,
    /// The main store through the identities: opens an encrypted object's header to tell
    /// whether a manifest record of another size is its plaintext's.
    pub reader: Transfer,
    /// The replica (written as stored bytes: nothing sealed again).
    pub target: Transfer,
    /// Whether to try server-side copies first.
    pub server_side: Arc<AtomicBool>,
    /// What was copied, by way.
    pub counts: Arc<Counts>,
    /// The memory every object streamed through this host shares (`s3.stream_memory`).
    pub budget: Arc<RelayBudget>,
}

/// What a run copied.
#[derive(Debug, Default)]
pub struct Counts {
    /// Objects copied server-side.
    pub server_side: AtomicU64,
    /// Objects streamed through this host.
    pub streamed: AtomicU64,
    /// Their bytes.
    pub bytes: AtomicU64,
    /// Objects found already on the replica, verified.
    pub present: AtomicU64,
}

/// Metadata of a replicated object: the CRC32C of its whole content, verified before the object
/// was completed, for a replica whose own checksum is a composite of parts (a later run then
/// knows the object without reading it).
pub const CRC_META: &str = "barmans3-crc32c";

/// What the stored bytes of an object must be: our record where it describes them (the file,
/// or the ciphertext as it was sent), else the main store's own full-object checksum (inner
/// `None`: the download checks what the store keeps). A record of another size is the
/// plaintext's of an encrypted object (a manifest from before ciphertext records) only when the
/// object's authenticated header (`opened`) gives exactly that size; otherwise the object is
/// not what the manifest recorded, and the outer `None` says so: it is never replicated.
fn stored_expectation(
    head: &ObjectMeta,
    record: Option<(u64, u32)>,
    opened: Option<u64>,
) -> Option<Option<(u64, u32)>> {
    match record {
        Some(r) if r.0 == head.size => Some(Some(r)),
        Some(r) if opened != Some(r.0) => None,
        _ => Some(head.full_crc32c().map(|c| (head.size, c))),
    }
}

impl Pair {
    /// Whether `dst` holds the bytes of `src`, told by the source's whole-object checksum;
    /// `None` when the source has none to tell by.
    pub async fn same_as(&self, src: &str, dst: &str) -> Result<Option<bool>> {
        let head = self.source.head(src).await?;
        match stored_expectation(&head, None, None).flatten() {
            Some(want) => Ok(Some(self.holds(dst, want).await?)),
            None => Ok(None),
        }
    }

    /// Whether the replica already holds `dst` as `want` says (size and full CRC32C).
    pub async fn holds(&self, dst: &str, want: (u64, u32)) -> Result<bool> {
        Ok(self.target.head_opt(dst).await?.is_some_and(|m| {
            let recorded = m
                .metadata
                .get(CRC_META)
                .and_then(|v| u32::from_str_radix(v, 16).ok());
            m.size == want.0 && (m.full_crc32c().or(recorded) == Some(want.1))
        }))
    }

    /// Copies `src` to `dst` unless the replica holds it already, verified; whether it was sent.
    pub async fn copy(
        &self,
        src: &str,
        dst: &str,
        record: Option<(u64, u32)>,
        kind: ObjectKind,
    ) -> Result<bool> {
        if let Some(r) = record
            && self.holds(dst, r).await?
        {
            self.counts.present.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        let head = self.source.head(src).await?;
        let opened = match record {
            Some((size, _)) if size != head.size => self.reader.sealed_size(src, &head).await?,
            _ => None,
        };
        let want = stored_expectation(&head, record, opened).ok_or_else(|| Error::Checksum {
            key: src.into(),
            expected: format!(
                "{} bytes, as the manifest records",
                record.map_or(0, |r| r.0)
            ),
            actual: format!(
                "{} bytes in the store{}",
                head.size,
                opened.map_or(String::new(), |p| format!(", {p} once decrypted"))
            ),
        })?;
        if let Some(w) = want
            && record.is_none()
            && self.holds(dst, w).await?
        {
            self.counts.present.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        let mut metadata = head.metadata.clone();
        metadata.remove(LAYOUT_META);
        if let Some((_, crc)) = want {
            metadata.insert(CRC_META.to_string(), format!("{crc:08x}"));
        }
        let opts = PutOptions {
            metadata,
            kind,
            ..Default::default()
        };
        if let Some((size, crc32c)) = want
            && self.server_side.load(Ordering::Relaxed)
        {
            let expect = CopyExpect {
                size,
                crc32c,
                ciphertext: None,
            };
            match self
                .target
                .copy_object(src, dst, expect, opts.clone())
                .await
            {
                Ok(()) => {
                    self.counts.server_side.fetch_add(1, Ordering::Relaxed);
                    self.counts.bytes.fetch_add(size, Ordering::Relaxed);
                    return Ok(true);
                }
                Err(Error::CopyRefused(why)) => {
                    if self.server_side.swap(false, Ordering::Relaxed) {
                        tracing::warn!(
                            "server-side copies refused ({why}); streaming through this host"
                        );
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.stream(src, dst, &head, want, &opts).await?;
        Ok(true)
    }

    async fn stream(
        &self,
        src: &str,
        dst: &str,
        head: &ObjectMeta,
        want: Option<(u64, u32)>,
        opts: &PutOptions,
    ) -> Result<()> {
        if head.metadata.contains_key(SEALED_META) && head.size > self.target.config().part_size {
            // Its part layout is recorded for the plaintext; a new one of the stored bytes
            // would not read back.
            return Err(Error::Failed(format!(
                "{src}: an encrypted object larger than one part can only be replicated server-side (both stores on one endpoint with the same credentials)"
            )));
        }
        let expect = Expect {
            size: want.map(|w| w.0),
            crc32c: want.map(|w| w.1),
        };
        let from = RelaySource {
            engine: &self.source,
            key: src,
            size: head.size,
            expect,
            budget: &self.budget,
        };
        let sent = self.target.relay_from(from, dst, opts).await?;
        self.counts.streamed.fetch_add(1, Ordering::Relaxed);
        self.counts.bytes.fetch_add(sent.size, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(size: u64, crc: Option<u32>) -> ObjectMeta {
        ObjectMeta {
            key: "k".into(),
            size,
            etag: None,
            last_modified: None,
            crc32c: crc.map(crate::checksum::crc32c_header),
            other_checksum: None,
            metadata: Default::default(),
            storage_class: None,
            restore: None,
            retain_until: None,
        }
    }

    #[test]
    fn a_record_describes_the_stored_bytes_only_at_their_size() {
        // Our record of the file (or of the ciphertext sent) wins over the store's word.
        assert_eq!(
            stored_expectation(&head(10, Some(7)), Some((10, 5)), None),
            Some(Some((10, 5)))
        );
        // A record of another size is of the plaintext of an encrypted object only when its
        // header opens to that size: then the store's own checksum of what it holds, or
        // nothing to expect beyond what the download checks.
        assert_eq!(
            stored_expectation(&head(203, Some(7)), Some((3, 5)), Some(3)),
            Some(Some((203, 7)))
        );
        assert_eq!(
            stored_expectation(&head(203, None), Some((3, 5)), Some(3)),
            Some(None)
        );
        // Anything else is not the object the manifest recorded: never replicated.
        assert_eq!(
            stored_expectation(&head(9, Some(7)), Some((10, 5)), None),
            None
        );
        assert_eq!(
            stored_expectation(&head(203, Some(7)), Some((3, 5)), Some(4)),
            None
        );
        assert_eq!(
            stored_expectation(&head(9, Some(7)), None, None),
            Some(Some((9, 7)))
        );
    }
}
