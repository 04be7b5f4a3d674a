//! The sealed side of uploads: whole objects sealed in memory before one PUT, and files (whole,
//! or the parts of a multipart upload, the first carrying the header) read and sealed chunk by
//! chunk into the buffer that is sent, each part on its own so parts go in parallel and a
//! resumed upload seals only what is missing.
//!
//! Why read straight into the send buffer: sealing costs CPU on the machine that also runs the
//! transfer, so every pass over a part counts. Each 64 KiB chunk is read into place, its
//! plaintext CRC32C taken, sealed where it lies and its sealed CRC32C taken while it is still in
//! cache: one buffer per part in flight and one trip through memory, where reading the part,
//! copying it into a second buffer and checksumming both afterwards took four.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::file::{integrity_for, integrity_known, read_exact_at};
use super::{PartJob, Uploaded};
use crate::checksum;
use crate::crypt::{CHUNK, Sealer};
use crate::error::{Error, Result};
use crate::store::{Body, ByteRange, PartReceipt, PutOptions, Upload};
use crate::transfer::Transfer;
use crate::transfer::plan;
use crate::transfer::sealed::{self, Ciphertext};

/// Where a sealed part of a file sits: its number, its plaintext, whether it ends the object.
#[derive(Debug, Clone, Copy)]
pub(super) struct SealedPart {
    pub(super) number: u32,
    pub(super) range: ByteRange,
    pub(super) last: bool,
}

/// A part of a file as it is sent: its sealed bytes and the CRC32C of those and of the
/// plaintext they hold.
struct SealedBody {
    bytes: Bytes,
    crc32c: u32,
    plain_crc32c: u32,
}

/// Reads `part` of `file` and seals it, chunk by chunk, into the buffer it is sent from (the
/// preamble first when it is part 1). A file that ends early has changed: an error naming it.
fn seal_file_part(
    sealer: &Sealer,
    file: &File,
    part: SealedPart,
    path: &Path,
) -> Result<SealedBody> {
    seal_part_from(sealer, part, path, |buf, at| {
        read_exact_at(file, buf, at, path)
    })
}

/// Seals `part`, whose plaintext `fill` writes chunk by chunk (a buffer and its plaintext
/// offset) into the buffer the part is sent from; both CRC32Cs are taken while each chunk is in
/// cache. `what` names the source in errors.
fn seal_part_from(
    sealer: &Sealer,
    part: SealedPart,
    what: &Path,
    mut fill: impl FnMut(&mut [u8], u64) -> Result<()>,
) -> Result<SealedBody> {
    let (start, end) = (part.range.start, part.range.end);
    if !start.is_multiple_of(CHUNK) {
        return Err(Error::Failed(format!(
            "{}: a sealed part must start on a 64 KiB boundary",
            what.display()
        )));
    }
    let preamble = if part.number == 1 {
        sealer.preamble()
    } else {
        &[]
    };
    let sealed_len = sealer.layout().sealed_len(end - start) - sealer.layout().payload_start();
    let mut out = Vec::with_capacity(preamble.len() + sealed_len as usize);
    out.extend_from_slice(preamble);
    let mut crc = checksum::crc32c(&out);
    let mut plain_crc = 0;
    let mut at = start;
    loop {
        // Parts start on chunk boundaries, so a chunk's index is its plaintext offset's.
        let (index, len) = (at / CHUNK, CHUNK.min(end - at) as usize);
        let mark = out.len();
        out.resize(mark + len, 0);
        fill(&mut out[mark..], at)?;
        plain_crc = checksum::crc32c_append(plain_crc, &out[mark..]);
        at += len as u64;
        sealer.seal_chunk_in_place(index, part.last && at == end, &mut out, mark)?;
        crc = checksum::crc32c_append(crc, &out[mark..]);
        if at == end {
            break;
        }
    }
    Ok(SealedBody {
        bytes: Bytes::from(out),
        crc32c: crc,
        plain_crc32c: plain_crc,
    })
}

/// Seals a part of a stream held in memory (`plain`, at plaintext offset `part.range.start`),
/// off the async workers: the sealed bytes and the CRC32C of those and of `plain`.
pub(super) async fn seal_stream_part(
    sealer: Arc<Sealer>,
    part: SealedPart,
    plain: Bytes,
) -> Result<(Bytes, u32, u32)> {
    let start = part.range.start;
    let b = off_workers(move || {
        seal_part_from(&sealer, part, Path::new("stream"), |buf, at| {
            let from = (at - start) as usize;
            buf.copy_from_slice(&plain[from..from + buf.len()]);
            Ok(())
        })
    })
    .await?;
    Ok((b.bytes, b.crc32c, b.plain_crc32c))
}

/// [`seal_file_part`] off the async workers.
async fn seal_file_part_blocking(
    sealer: Arc<Sealer>,
    file: Arc<File>,
    part: SealedPart,
    path: &Path,
) -> Result<SealedBody> {
    let path = path.to_path_buf();
    off_workers(move || seal_file_part(&sealer, &file, part, &path)).await
}

/// Runs a sealing off the async workers: it burns CPU, and a file's reads block.
async fn off_workers(
    seal: impl FnOnce() -> Result<SealedBody> + Send + 'static,
) -> Result<SealedBody> {
    tokio::task::spawn_blocking(seal)
        .await
        .map_err(|e| Error::Failed(format!("seal task failed: {e}")))?
}

impl Transfer {
    /// The part size of a sealed file of `size` bytes: the parts in flight, each held sealed in
    /// memory, share `s3.stream_memory` ([`plan::sealed_part_size`]).
    pub(super) fn sealed_part_size(&self, size: u64) -> u64 {
        let c = &self.cfg;
        plan::sealed_part_size(size, c.part_size, c.stream_memory, c.concurrency)
    }

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
        let up = self.put_stored(key, sealed, opts).await?;
        Ok(as_plaintext(up, plain_len, plain_crc))
    }

    /// One PUT of a whole file sealed (`size` bytes, at most one part's worth), under a permit
    /// the caller holds.
    pub(super) async fn put_sealed_file(
        &self,
        file: Arc<File>,
        path: &Path,
        key: &str,
        size: u64,
        opts: &PutOptions,
    ) -> Result<Uploaded> {
        let Some(keys) = self.crypt.keys() else {
            return Err(Error::Failed(format!("{key}: sealing without keys")));
        };
        let sealer = Arc::new(Sealer::new(&keys.recipients, key)?);
        let part = SealedPart {
            number: 1,
            range: ByteRange {
                start: 0,
                end: size,
            },
            last: true,
        };
        let sealed = seal_file_part_blocking(sealer, file, part, path).await?;
        let integrity = integrity_known(self.mode().await, sealed.crc32c, &sealed.bytes);
        let body = Body::bytes(sealed.bytes, integrity);
        let up = self.put_once(key, body, sealed.crc32c, opts).await?;
        Ok(as_plaintext(up, size, sealed.plain_crc32c))
    }

    /// One PUT of bytes as they are to be stored, under a permit the caller holds.
    async fn put_stored(&self, key: &str, body: Bytes, opts: &PutOptions) -> Result<Uploaded> {
        let (crc, integrity) = integrity_for(self.mode().await, &body);
        self.put_once(key, Body::bytes(body, integrity), crc, opts)
            .await
    }

    /// Reads and seals part `part` of a file and sends it: the first part carries the preamble.
    /// Returns the receipt, the stored bytes' CRC32C and the plaintext's. A part in flight
    /// holds its sealed bytes alone while it is sent (and retried).
    pub(super) async fn send_sealed_part(
        &self,
        sealer: Arc<Sealer>,
        part: SealedPart,
        (file, path): (Arc<File>, &Path),
        upload: &Upload,
    ) -> Result<(PartReceipt, u32, Option<u32>)> {
        let sealed = seal_file_part_blocking(sealer, file, part, path).await?;
        let integrity = integrity_known(self.mode().await, sealed.crc32c, &sealed.bytes);
        let job = PartJob {
            number: part.number,
            body: sealed.bytes,
            _permit: None,
        };
        let receipt = self.send_part_as(job, upload, integrity).await?;
        Ok((receipt, sealed.crc32c, Some(sealed.plain_crc32c)))
    }
}

/// An upload of sealed bytes described as the plaintext it holds, with its stored form kept.
fn as_plaintext(mut up: Uploaded, plain_len: u64, plain_crc: u32) -> Uploaded {
    up.ciphertext = Some(Ciphertext {
        size: up.size,
        crc32c: up.crc32c,
    });
    up.size = plain_len;
    up.crc32c = plain_crc;
    up
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::crypt::{Identities, Opener, Recipients};

    /// Every part of a file sealed on its own, put together, is the object sealed whole, and
    /// the CRC32Cs it reports are those of the bytes.
    #[test]
    fn parts_read_and_sealed_in_place_make_the_object_and_report_their_checksums() {
        let id = age::x25519::Identity::generate();
        let recipients = Recipients::new([id.to_public()]).expect("recipients");
        let sealer = Sealer::new(&recipients, "k").expect("sealer");
        let plain: Vec<u8> = (0..5 * CHUNK + 77).map(|i| (i * 31 % 251) as u8).collect();
        let mut f = tempfile::tempfile().expect("tmp");
        f.write_all(&plain).expect("write");
        let total = plain.len() as u64;
        let mut whole = Vec::new();
        for (n, start) in (0..total).step_by(2 * CHUNK as usize).enumerate() {
            let end = (start + 2 * CHUNK).min(total);
            let part = SealedPart {
                number: n as u32 + 1,
                range: ByteRange { start, end },
                last: end == total,
            };
            let b = seal_file_part(&sealer, &f, part, Path::new("/f")).expect("part");
            assert_eq!(b.crc32c, checksum::crc32c(&b.bytes));
            let piece = &plain[start as usize..end as usize];
            assert_eq!(b.plain_crc32c, checksum::crc32c(piece));
            whole.extend_from_slice(&b.bytes);
        }
        let mut expected = sealer.preamble().to_vec();
        sealer.seal(0, &plain, true, &mut expected).expect("seal");
        assert_eq!(whole, expected);
        let ids = Identities::new("identity_files", vec!["/k".into()], vec![id]);
        let o = Opener::open(&whole, &ids, "k").expect("opens");
        let mut out = Vec::new();
        let payload = &whole[o.layout().payload_start() as usize..];
        o.open_chunks(0, payload, true, &mut out).expect("chunks");
        assert_eq!(out, plain);
    }

    /// Parts of a stream sealed from memory are the object sealed whole, an empty stream the
    /// empty object, and the reported CRC32Cs are the bytes'.
    #[tokio::test]
    async fn stream_parts_sealed_from_memory_make_the_object() {
        let id = age::x25519::Identity::generate();
        let recipients = Recipients::new([id.to_public()]).expect("recipients");
        let sealer = Arc::new(Sealer::new(&recipients, "k").expect("sealer"));
        let plain: Vec<u8> = (0..3 * CHUNK + 5).map(|i| (i * 7 % 253) as u8).collect();
        let mut whole = Vec::new();
        for (n, start) in [0, 2 * CHUNK].into_iter().enumerate() {
            let end = (start + 2 * CHUNK).min(plain.len() as u64);
            let body = Bytes::copy_from_slice(&plain[start as usize..end as usize]);
            let part = SealedPart {
                number: n as u32 + 1,
                range: ByteRange { start, end },
                last: end == plain.len() as u64,
            };
            let (b, crc, plain_crc) = seal_stream_part(sealer.clone(), part, body.clone())
                .await
                .expect("part");
            assert_eq!(
                (crc, plain_crc),
                (checksum::crc32c(&b), checksum::crc32c(&body))
            );
            whole.extend_from_slice(&b);
        }
        let mut expected = sealer.preamble().to_vec();
        sealer.seal(0, &plain, true, &mut expected).expect("seal");
        assert_eq!(whole, expected);
        let empty = SealedPart {
            number: 1,
            range: ByteRange { start: 0, end: 0 },
            last: true,
        };
        let (b, _, _) = seal_stream_part(sealer.clone(), empty, Bytes::new())
            .await
            .expect("empty");
        let mut expected = sealer.preamble().to_vec();
        sealer.seal(0, &[], true, &mut expected).expect("seal");
        assert_eq!(&b[..], &expected[..]);
    }

    /// A file shorter than the range asked for has changed: an error naming it, never a part
    /// sealed from zeros; an empty file seals as the empty object.
    #[test]
    fn a_file_that_ends_early_is_named_and_an_empty_one_seals_empty() {
        let id = age::x25519::Identity::generate();
        let recipients = Recipients::new([id.to_public()]).expect("recipients");
        let sealer = Sealer::new(&recipients, "k").expect("sealer");
        let mut f = tempfile::tempfile().expect("tmp");
        f.write_all(&[7; 1000]).expect("write");
        let part = SealedPart {
            number: 1,
            range: ByteRange {
                start: 0,
                end: 2000,
            },
            last: true,
        };
        let e = seal_file_part(&sealer, &f, part, Path::new("/data/base.tar"))
            .err()
            .expect("short file");
        assert!(e.to_string().contains("/data/base.tar changed"), "{e}");
        let empty = tempfile::tempfile().expect("tmp");
        let part = SealedPart {
            number: 1,
            range: ByteRange { start: 0, end: 0 },
            last: true,
        };
        let b = seal_file_part(&sealer, &empty, part, Path::new("/e")).expect("empty");
        let mut expected = sealer.preamble().to_vec();
        sealer.seal(0, &[], true, &mut expected).expect("seal");
        assert_eq!(&b.bytes[..], &expected[..]);
        assert_eq!(b.plain_crc32c, 0);
    }
}
