//! Objects read whole with one GET and no HEAD before it: a WAL file into memory, and a file
//! the caller's record says is small into place. The GET's own headers carry the size and
//! checksums, so each costs one round trip instead of two, checked as any download is.

use std::path::Path;

use super::opened::opened_small;
use super::receive::{Received, receive};
use super::verify::{decide_whole, verify};
use super::{Check, Downloaded, Durable, Expect, Piece, Sink, Verified, whole_crc};
use crate::checksum;
use crate::directio::OutFile;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::store::ByteRange;
use crate::transfer::Transfer;

/// Files up to this size (by the caller's record) are fetched whole with one GET.
pub(super) const SMALL_FILE: u64 = 1 << 20;
/// What encryption adds to a small file: the age header (at most 64 KiB) and a tag per
/// 64 KiB chunk. With it a file of 1 MiB still takes a light permit, one of 128 KiB a tiny one.
const SEALED_SLACK: u64 = crate::transfer::LIGHT_BODY - SMALL_FILE;

/// The caller's record checked against a download fetched whole: its size, and its CRC32C
/// (of the plaintext, for an encrypted object).
fn expected(key: &str, expect: Expect, d: Downloaded) -> Result<Downloaded> {
    let mismatch = |expected: String, actual: String| Error::Checksum {
        key: key.into(),
        expected,
        actual,
    };
    if let Some(s) = expect.size
        && s != d.size
    {
        return Err(mismatch(
            format!("{s} bytes"),
            format!("{} bytes in the store", d.size),
        ));
    }
    match expect.crc32c {
        Some(want) if want != d.crc32c => Err(mismatch(
            format!("crc32c {want:08x}"),
            format!("crc32c {:08x}", d.crc32c),
        )),
        Some(_) => Ok(Downloaded {
            verified: Verified::CallerCrc32c,
            ..d
        }),
        None => Ok(d),
    }
}

impl Transfer {
    /// Reads a small object (a WAL file) whole into memory with one GET and no HEAD before it
    /// (the GET's own headers carry the size and checksums: one round trip per WAL instead of
    /// two), verified like any download. An object above `max` bytes is an error. The
    /// [`Downloaded`]'s CRC32C is that of the bytes returned (the plaintext of an encrypted
    /// object), so a caller need not take it again.
    pub async fn download_small(&self, key: &str, max: u64) -> Result<(Vec<u8>, Downloaded)> {
        let _permit = self.permit_for(max).await?;
        self.download_whole(key, max, None).await
    }

    /// [`Transfer::download_small`] under a permit the caller holds. With `recorded` (the
    /// most the caller's record allows, below `max`), a larger object is refused as the
    /// record's mismatch before its body is read: a request holds no more than its share says.
    async fn download_whole(
        &self,
        key: &str,
        max: u64,
        recorded: Option<u64>,
    ) -> Result<(Vec<u8>, Downloaded)> {
        let (meta, mut check, piece) = self.get_whole(key, max, recorded).await?;
        if let Check::Stored { taken, .. } = &mut check {
            *taken = piece.stored;
        }
        let data = Vec::from(piece.data.unwrap_or_default());
        // A multipart object is checked part by part, from the bytes already in memory.
        let (pieces, info): (Vec<_>, Vec<_>) = match &check {
            Check::Composite { parts, .. } | Check::CompositeMd5 { parts, .. } => parts
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let bytes = &data[r.start as usize..r.end as usize];
                    let md5 =
                        matches!(check, Check::CompositeMd5 { .. }).then(|| checksum::md5(bytes));
                    ((i, *r), (checksum::crc32c(bytes), md5))
                })
                .unzip(),
            _ => (
                vec![(
                    0,
                    ByteRange {
                        start: 0,
                        end: meta.size,
                    },
                )],
                vec![(piece.crc, piece.md5)],
            ),
        };
        let crc = whole_crc(&pieces, &info);
        let verified = verify(
            key,
            &check,
            Expect::default(),
            crc,
            &pieces,
            pieces.len(),
            &info,
        )?;
        let d = Downloaded {
            size: meta.size,
            crc32c: crc,
            verified,
        };
        if !self.crypt.reads_sealed() {
            return Ok((data, d));
        }
        opened_small(self.crypt.keys(), key, data, d)
    }

    /// The retried GET of a whole object into memory, refused before its body is read when
    /// it is larger than `max` or than the caller's record allows, and the check its headers
    /// allow, with what it needs taken as the bytes arrive.
    async fn get_whole(
        &self,
        key: &str,
        max: u64,
        recorded: Option<u64>,
    ) -> Result<(crate::store::ObjectMeta, Check, Piece)> {
        self.retry
            .run(&self.stats, &self.cancel, || async {
                let resp = self.store.get(key, None).await?;
                let size = resp.meta.size;
                if size > max {
                    return Err(Error::Failed(format!(
                        "{key}: {size} bytes in the store, more than the {max} such a file can have"
                    )));
                }
                if let Some(most) = recorded.filter(|m| size > *m) {
                    return Err(Error::Checksum {
                        key: key.into(),
                        expected: format!("at most {most} bytes"),
                        actual: format!("{size} bytes in the store"),
                    });
                }
                let check = decide_whole(&resp.meta);
                let whole = ByteRange {
                    start: 0,
                    end: size,
                };
                let got = Received {
                    key,
                    index: 0,
                    range: whole,
                    want_md5: matches!(check, Check::Md5 { .. }),
                    want_stored: match &check {
                        Check::Stored { want, .. } => Some(want.kind),
                        _ => None,
                    },
                    refuse_sealed: false,
                    sealed: None,
                };
                let piece = receive(resp.body, got, &Sink::Memory).await?;
                self.progress.bytes_done(size);
                Ok((resp.meta, check, piece))
            })
            .await
    }

    /// A file the caller knows to be small: one GET and no HEAD before it (the GET's headers
    /// carry the size and checksums, as for a WAL), checked as any download against the
    /// object's checksum and the caller's record, then written whole. A restore of many small
    /// files makes one request per file instead of two, and waits one round trip less for each.
    pub(super) async fn small_file(
        &self,
        key: &str,
        dest: &Path,
        expect: Expect,
        durable: Durable,
    ) -> Result<Downloaded> {
        self.progress
            .object_started(key, expect.size.unwrap_or_default());
        // The share of the body the record allows (an encrypted object's is larger by its
        // header and tags), held until the file is written: the bodies in flight or waiting
        // to be written stay within the shares.
        let max = SMALL_FILE + SEALED_SLACK;
        let slack = if self.crypt.reads_sealed() {
            SEALED_SLACK
        } else {
            0
        };
        let recorded = expect.size.map(|s| s.saturating_add(slack).min(max));
        let _permit = self.permit_for(recorded.unwrap_or(max)).await?;
        let got = self.download_whole(key, max, recorded).await;
        self.progress.object_done(key);
        let (data, d) = got?;
        let d = expected(key, expect, d)?;
        let tmp = fsutil::temp_path_for(dest);
        // Created here, so that what is removed on failure is only ever the file this call made.
        let f = OutFile::create_new_buffered(&tmp, 0o666)
            .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
        let written = tokio::task::spawn_blocking(move || {
            f.write_all_at(&data, 0)?;
            match durable {
                Durable::Now => f.sync_all(),
                Durable::ByCaller => Ok(()),
            }
        })
        .await
        .map_err(|e| Error::Failed(format!("write task failed: {e}")))
        .and_then(|r| r.map_err(|e| Error::io(format!("write {}", tmp.display()), e)));
        let placed = written.and_then(|()| durable.place(&tmp, dest));
        if placed.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        placed.map(|()| d)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;

    use super::*;
    use crate::store::local::LocalStore;
    use crate::store::{
        Body, ChecksumKind, DeleteFailure, GetResponse, ListPage, ListRequest, Multipart,
        ObjectMeta, PutOptions, PutReceipt, Store, StoredChecksum,
    };
    use crate::transfer::Settings;

    /// A bucket on disk whose reads report one stored checksum of another kind than CRC32C
    /// and nothing else (no CRC32C, no ETag), as an object written by another tool may.
    #[derive(Debug)]
    struct Foreign {
        core: LocalStore,
        checksum: StoredChecksum,
    }

    #[async_trait]
    impl Store for Foreign {
        fn describe(&self) -> String {
            "foreign".into()
        }
        async fn put(&self, k: &str, b: Body, o: &PutOptions) -> Result<PutReceipt> {
            self.core.put(k, b, o).await
        }
        async fn get(&self, k: &str, r: Option<ByteRange>) -> Result<GetResponse> {
            let mut resp = self.core.get(k, r).await?;
            resp.meta.crc32c = None;
            resp.meta.etag = None;
            resp.meta.other_checksum = Some(self.checksum.clone());
            Ok(resp)
        }
        async fn head(&self, k: &str) -> Result<ObjectMeta> {
            self.core.head(k).await
        }
        async fn list_page(&self, r: &ListRequest, t: Option<&str>) -> Result<ListPage> {
            self.core.list_page(r, t).await
        }
        async fn delete_batch(&self, k: &[String]) -> Result<Vec<DeleteFailure>> {
            self.core.delete_batch(k).await
        }
        fn multipart(&self) -> &dyn Multipart {
            self.core.multipart()
        }
    }

    #[tokio::test]
    async fn an_object_read_whole_is_checked_against_its_stored_checksum_of_any_kind() {
        let d = tempfile::tempdir().expect("tmp");
        let body = b"000000010000000000000003, as another tool stored it".repeat(1000);
        std::fs::create_dir_all(d.path().join("b/p")).expect("dir");
        std::fs::write(d.path().join("b/p/wal"), &body).expect("object");
        let open = |kind, value: String| {
            let store = Foreign {
                core: LocalStore::open(&d.path().join("b")).expect("store"),
                checksum: StoredChecksum { kind, value },
            };
            Transfer::new(Arc::new(store), Settings::default())
        };
        for kind in [
            ChecksumKind::Crc32,
            ChecksumKind::Crc64Nvme,
            ChecksumKind::Sha1,
            ChecksumKind::Sha256,
        ] {
            let right = checksum::stored_digest(kind, &body);
            let (got, d) = open(kind, right.clone())
                .download_small("p/wal", 1 << 20)
                .await
                .expect("read");
            assert!(got == body, "{kind:?}");
            assert_eq!(d.verified, Verified::ObjectChecksum(kind));
            assert_eq!(d.crc32c, checksum::crc32c(&body));
            // The store's value for other bytes: refused, never returned.
            let wrong = checksum::stored_digest(kind, b"other bytes");
            let e = open(kind, wrong.clone())
                .download_small("p/wal", 1 << 20)
                .await
                .expect_err("a mismatch is refused");
            let m = e.to_string();
            assert!(matches!(e, Error::Checksum { .. }), "{m}");
            assert!(
                m.contains("p/wal") && m.contains(&wrong) && m.contains(&right),
                "{m}"
            );
        }
    }
}
