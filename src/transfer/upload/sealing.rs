//! The sealed side of uploads: whole objects sealed in memory before one PUT, and the parts of
//! a file sealed as runs of whole chunks (the first carrying the header), each on its own so
//! they go in parallel and a resumed upload seals only what is missing.

use bytes::Bytes;

use super::file::integrity_for;
use super::{PartJob, Uploaded};
use crate::checksum;
use crate::crypt::Sealer;
use crate::error::Result;
use crate::store::{Body, ByteRange, PartReceipt, PutOptions, Upload};
use crate::transfer::Transfer;
use crate::transfer::sealed::{self, Ciphertext};

/// Where a sealed part of a file sits: its number, its plaintext, whether it ends the object.
pub(super) struct SealedPart {
    pub(super) number: u32,
    pub(super) range: ByteRange,
    pub(super) last: bool,
}

impl Transfer {
    /// One PUT of `body`, sealed first when encryption is on, under a permit the caller holds.
    /// The result describes the plaintext (size, CRC32C) either way, and a sealed body's stored
    /// form as sent.
    pub(super) async fn put_sealed(
        &self,
        key: &str,
        body: Bytes,
        opts: &PutOptions,
    ) -> Result<Uploaded> {
        let Some(keys) = self.crypt.keys() else {
            return self.put_stored(key, body, opts).await;
        };
        let (plain_len, plain_crc) = (body.len() as u64, checksum::crc32c(&body));
        let sealed = sealed::seal_bytes(keys, key, &body)?;
        drop(body);
        let mut up = self.put_stored(key, sealed, opts).await?;
        up.ciphertext = Some(Ciphertext {
            size: up.size,
            crc32c: up.crc32c,
        });
        up.size = plain_len;
        up.crc32c = plain_crc;
        Ok(up)
    }

    /// One PUT of bytes as they are to be stored, under a permit the caller holds.
    async fn put_stored(&self, key: &str, body: Bytes, opts: &PutOptions) -> Result<Uploaded> {
        let (crc, integrity) = integrity_for(self.mode().await, &body);
        self.put_once(key, Body::bytes(body, integrity), crc, opts)
            .await
    }

    /// Seals part `part` of a file (plaintext `plain`) and sends it: the first part carries the
    /// preamble. Returns the receipt, the stored bytes' CRC32C and the plaintext's. The
    /// plaintext is let go once sealed, so a part in flight holds its ciphertext alone while it
    /// is sent (and retried).
    pub(super) async fn send_sealed_part(
        &self,
        sealer: &Sealer,
        part: &SealedPart,
        plain: Bytes,
        upload: &Upload,
    ) -> Result<(PartReceipt, u32, Option<u32>)> {
        let plain_crc = checksum::crc32c(&plain);
        let mut out =
            Vec::with_capacity(plain.len() + plain.len() / 1024 + sealer.preamble().len() + 64);
        if part.number == 1 {
            out.extend_from_slice(sealer.preamble());
        }
        sealer.seal(
            part.range.start / crate::crypt::CHUNK,
            &plain,
            part.last,
            &mut out,
        )?;
        drop(plain);
        let job = PartJob {
            number: part.number,
            body: Bytes::from(out),
            _permit: None,
        };
        let (receipt, crc) = self.send_part(job, upload).await?;
        Ok((receipt, crc, Some(plain_crc)))
    }
}
