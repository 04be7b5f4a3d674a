//! Downloads of encrypted objects: finding out from an object's first bytes whether it is
//! sealed (and authenticating its header), plaintext ranges read as the chunks they touch, and
//! the check of a finished download against the store's checksum (stored bytes) and the
//! caller's record (plaintext).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{
    Downloaded, Expect, Fetched, MAX_PIECE, Piece, Prepared, SNIFF, Sink, Verified, verify,
};
use crate::checksum;
use crate::error::{Error, Result};
use crate::store::{ByteRange, ObjectMeta};
use crate::transfer::Transfer;
use crate::transfer::sealed::SealedObject;

impl Transfer {
    /// Reads the first `len` bytes of an object.
    pub(super) async fn get_prefix(&self, key: &str, len: u64) -> Result<Bytes> {
        let range = ByteRange { start: 0, end: len };
        let _permit = self.permit().await?;
        let p = self.fetch(key, 0, range, Sink::Memory, false, None).await?;
        Ok(p.data.unwrap_or_default())
    }

    /// With identities configured: whether the object is encrypted, from its first bytes, and
    /// if so its authenticated header.
    pub(in crate::transfer) async fn sniff(
        &self,
        key: &str,
        meta: &ObjectMeta,
    ) -> Result<Option<SealedObject>> {
        let Some(keys) = self.crypt.keys() else {
            return Ok(None);
        };
        if meta.size == 0 {
            crate::transfer::sealed::check_plaintext(Some(keys), key, false)?;
            return Ok(None);
        }
        let mut head = self.get_prefix(key, meta.size.min(SNIFF)).await?;
        if !crate::crypt::is_sealed(&head) {
            crate::transfer::sealed::check_plaintext(Some(keys), key, false)?;
            return Ok(None);
        }
        if crate::crypt::preamble_len(&head, key)?.is_none_or(|l| l > head.len() as u64) {
            let more = meta.size.min((crate::crypt::MAX_HEADER_LEN + 16) as u64);
            head = self.get_prefix(key, more).await?;
        }
        let opener = crate::crypt::Opener::open(&head, &keys.identities, key)?;
        let plain_len = opener.plain_len(meta.size)?;
        Ok(Some(SealedObject {
            opener: Arc::new(opener),
            stored_len: meta.size,
            plain_len,
        }))
    }

    /// The plaintext size of an encrypted object from its header alone (one ranged GET of its
    /// first bytes, after the HEAD that gave `meta`): `None` when it is not encrypted. The
    /// header is authenticated with the identities, so an object this answers for opens with
    /// them (its chunks are not read). A plaintext object where every object must be encrypted
    /// is refused, as by any read.
    pub async fn sealed_size(&self, key: &str, meta: &ObjectMeta) -> Result<Option<u64>> {
        if self.crypt.keys().is_none() && meta.size > 0 {
            // Without identities: refused by name when encrypted, as a read would be.
            let head = self.get_prefix(key, meta.size.min(SNIFF)).await?;
            if crate::crypt::is_sealed(&head) {
                return Err(crate::transfer::sealed::no_identity(key));
            }
            return Ok(None);
        }
        Ok(self.sniff(key, meta).await?.map(|s| s.plain_len))
    }

    /// Plaintext ranges of an encrypted object: each is read as the chunks it touches (at most
    /// [`MAX_PIECE`] at a time), opened, and cut to the bytes asked for.
    pub(super) async fn sealed_ranges<W: AsyncWrite + Unpin + Send>(
        &self,
        key: &str,
        s: &SealedObject,
        units: &[ByteRange],
        writer: &mut W,
    ) -> Result<u64> {
        let step =
            (MAX_PIECE.min(self.cfg.part_size) / crate::crypt::CHUNK).max(1) * crate::crypt::CHUNK;
        let mut total = 0;
        for u in units {
            let mut at = u.start;
            while at < u.end {
                let end = (at - at % step + step).min(u.end);
                let span = s
                    .opener
                    .layout()
                    .sealed_span(at..end, s.plain_len)
                    .ok_or_else(|| {
                        Error::Failed(format!("{key}: range {at}..{end} is outside the object"))
                    })?;
                let stored = ByteRange {
                    start: span.bytes.start,
                    end: span.bytes.end,
                };
                let bytes = {
                    let _permit = self.permit().await?;
                    self.fetch(key, 0, stored, Sink::Memory, false, None)
                        .await?
                        .data
                        .unwrap_or_default()
                };
                let mut out = Vec::with_capacity(span.take as usize);
                s.opener.open_span(&span, &bytes, &mut out)?;
                writer
                    .write_all(&out)
                    .await
                    .map_err(|e| Error::io("write output", e))?;
                total += out.len() as u64;
                at = end;
            }
        }
        writer
            .flush()
            .await
            .map_err(|e| Error::io("write output", e))?;
        Ok(total)
    }
}

/// Checks a finished download: the stored bytes against the object's checksum, the plaintext
/// (the stored bytes, when not encrypted) against the caller's record.
pub(super) fn check_fetched(
    key: &str,
    p: &Prepared,
    expect: Expect,
    f: &Fetched,
) -> Result<Downloaded> {
    let Some(plain) = f.plain else {
        let verified = verify(key, &p.check, expect, f.crc, &p.pieces, p.n_units, &f.info)?;
        return Ok(Downloaded {
            size: p.meta.size,
            crc32c: f.crc,
            verified,
        });
    };
    let stored = Expect::default();
    let verified = verify(key, &p.check, stored, f.crc, &p.pieces, p.n_units, &f.info)?;
    let mut verified = verified;
    if let Some(want) = expect.crc32c {
        if want != plain {
            return Err(Error::Checksum {
                key: key.into(),
                expected: format!("crc32c {want:08x}"),
                actual: format!("crc32c {plain:08x} (decrypted)"),
            });
        }
        verified = Verified::CallerCrc32c;
    }
    Ok(Downloaded {
        size: p.sealed.as_ref().map_or(p.meta.size, |s| s.plain_len),
        crc32c: plain,
        verified,
    })
}

/// Opens a fetched piece of an encrypted object bound for the ordered writer where it lies in
/// the received buffer, and keeps its plaintext (the same buffer, cut to it). Opening and
/// checksumming run off the async workers: they are the CPU of an encrypted download, and the
/// workers meanwhile keep the other pieces' bytes coming. (A piece bound for a file is opened
/// as it arrives instead: [`super::runs`].) A chunk that does not authenticate is spent by
/// the opening: [`Transfer::name_spent`] reads it again.
pub(super) async fn deliver_opened(
    s: &SealedObject,
    range: ByteRange,
    piece: &mut Piece,
) -> Result<()> {
    let stored = piece.data.take().unwrap_or_default();
    // The receiver's buffer, unshared: opened where it is rather than into a second one.
    let mut stored = stored
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    let s = s.clone();
    let (plain, crc, len) = tokio::task::spawn_blocking(move || {
        // Each run checksummed while it is in cache.
        let mut crc = 0;
        let at = s.open_piece_in_place(range, &mut stored, true, |_, run| {
            crc = checksum::crc32c_append(crc, run);
            Ok(())
        })?;
        let len = at.len() as u64;
        stored.truncate(at.end);
        Ok::<_, Error>((stored.split_off(at.start).freeze(), crc, len))
    })
    .await
    .map_err(|e| Error::Failed(format!("open task failed: {e}")))??;
    piece.plain = Some((crc, len));
    piece.data = Some(plain);
    Ok(())
}

impl Transfer {
    /// The error of a piece that did not open: a chunk spent by opening in place is read again
    /// and named by the opener that keeps its input (a truncation, data after the final
    /// chunk, or damage). Any other error, or a failed second read, is `e` itself.
    pub(super) async fn name_spent(&self, key: &str, s: &SealedObject, e: Error) -> Error {
        let Error::Crypt(crate::crypt::CryptError {
            fault: crate::crypt::Fault::ChunkAuth { chunk },
            ..
        }) = e
        else {
            return e;
        };
        let range = s.chunk_range(chunk);
        // Boxed: a piece's fetch is what called this.
        match Box::pin(self.fetch(key, 0, range, Sink::Memory, false, None)).await {
            Ok(p) => s.explain(chunk, &p.data.unwrap_or_default(), e),
            Err(_) => e,
        }
    }
}

/// A small object read whole (a WAL), already checked as stored: its plaintext when it is
/// sealed, described by the plaintext's size and CRC32C; as it is otherwise.
pub(super) fn opened_small(
    keys: Option<&crate::crypt::Keys>,
    key: &str,
    data: Vec<u8>,
    stored: Downloaded,
) -> Result<(Vec<u8>, Downloaded)> {
    if !crate::crypt::is_sealed(&data) {
        crate::transfer::sealed::check_plaintext(keys, key, false)?;
        return Ok((data, stored));
    }
    let plain = crate::transfer::sealed::open_bytes(keys, key, data)?;
    let d = Downloaded {
        size: plain.len() as u64,
        crc32c: checksum::crc32c(&plain),
        verified: stored.verified,
    };
    Ok((plain, d))
}
