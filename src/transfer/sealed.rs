//! Client-side encryption in the engine: what the engine does with the run's age keys.
//!
//! Every body written is sealed here before it reaches the store (whole objects in memory, the
//! parts of a file upload as runs of whole chunks so they seal in parallel and resume, streams part by part
//! with one byte read ahead); every read finds out from the object's first bytes whether it is
//! sealed, so a bucket written partly before encryption was turned on reads each object as
//! what it is. The store's checksums then cover the stored (encrypted) bytes in transit, and
//! the plaintext CRC32C the callers record is computed from the opened bytes.
//!
//! Nothing here puts a plaintext checksum in object metadata: the layout key of an encrypted
//! multipart object ([`SEALED_META`]) holds only the header's length, which the object shows
//! anyway.

use std::sync::Arc;

use bytes::Bytes;

use crate::crypt::{Fault, Keys, Layout, Opener, SEALED_CHUNK, Sealer};
use crate::error::{Error, Result};
use crate::store::ByteRange;

/// Metadata key of an encrypted object uploaded in parts: the length of its header and nonce.
/// With the layout key (which then describes the plaintext parts) a reader recovers the stored
/// bytes of every part, to check the composite checksum.
pub const SEALED_META: &str = "barmans3-age";

/// An encrypted object as this host sent it: its stored size and the CRC32C of its stored
/// bytes (the ciphertext), computed from what was sent rather than from what a server reports.
/// Recorded beside the plaintext's, so a later server-side copy of the object is checked
/// against what was sent: the bucket can be written by others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ciphertext {
    /// Stored bytes.
    pub size: u64,
    /// CRC32C of the stored bytes.
    pub crc32c: u32,
}

/// The setting a missing identity is named by.
pub const IDENTITY_SETTING: &str = "encryption.identity_file";

/// What the engine does about encryption.
#[derive(Debug, Clone, Default)]
pub enum CryptMode {
    /// Not configured: bodies are written as they are; an encrypted object read is refused
    /// with a message naming the missing setting.
    #[default]
    Off,
    /// Seal every body to the recipients, open every encrypted object with the identities.
    Keys(Arc<Keys>),
    /// Move stored bytes as they are, encrypted or not (`store get --raw`).
    Raw,
}

impl CryptMode {
    /// The keys, when bodies are sealed.
    pub fn keys(&self) -> Option<&Keys> {
        match self {
            CryptMode::Keys(k) => Some(k),
            _ => None,
        }
    }

    /// Whether reads look for the age header at all.
    pub fn reads_sealed(&self) -> bool {
        !matches!(self, CryptMode::Raw)
    }
}

/// The error of an encrypted object read without identities.
pub fn no_identity(key: &str) -> Error {
    Error::Crypt(crate::crypt::CryptError {
        object: key.to_string(),
        fault: Fault::NoIdentity {
            setting: IDENTITY_SETTING,
        },
    })
}

/// The error of a plaintext object read where every object must be encrypted.
pub fn plaintext(key: &str, setting: &'static str) -> Error {
    Error::Crypt(crate::crypt::CryptError {
        object: key.to_string(),
        fault: Fault::Plaintext { setting },
    })
}

/// Refuses a plaintext object (`sealed` false) when `keys` require every object encrypted.
pub fn check_plaintext(keys: Option<&Keys>, key: &str, sealed: bool) -> Result<()> {
    match keys {
        Some(Keys {
            require_sealed: Some(setting),
            ..
        }) if !sealed => Err(plaintext(key, setting)),
        _ => Ok(()),
    }
}

/// Seals a whole object held in memory.
pub fn seal_bytes(keys: &Keys, key: &str, plain: &[u8]) -> Result<Bytes> {
    let sealer = Sealer::new(&keys.recipients, key)?;
    let mut out = sealer.preamble().to_vec();
    sealer.seal(0, plain, true, &mut out)?;
    Ok(Bytes::from(out))
}

/// Opens a whole stored object held in memory: its plaintext, or the bytes as they are when it
/// is not sealed. `None` keys: a sealed object is refused naming the setting.
pub fn open_bytes(keys: Option<&Keys>, key: &str, stored: Vec<u8>) -> Result<Vec<u8>> {
    if !crate::crypt::is_sealed(&stored) {
        check_plaintext(keys, key, false)?;
        return Ok(stored);
    }
    let keys = keys.ok_or_else(|| no_identity(key))?;
    let opener = Opener::open(&stored, &keys.identities, key)?;
    opener.plain_len(stored.len() as u64)?;
    let start = opener.layout().payload_start() as usize;
    let mut out = Vec::with_capacity(stored.len());
    opener.open_chunks(0, &stored[start..], true, &mut out)?;
    Ok(out)
}

/// An opened object being downloaded: its opener and lengths.
#[derive(Debug, Clone)]
pub struct SealedObject {
    /// Opens its chunks.
    pub opener: Arc<Opener>,
    /// Stored length.
    pub stored_len: u64,
    /// Plaintext length.
    pub plain_len: u64,
}

impl SealedObject {
    /// The plaintext offset of stored offset `at`, which is 0 or a chunk boundary.
    pub fn plain_offset(&self, at: u64) -> u64 {
        let start = self.opener.layout().payload_start();
        at.saturating_sub(start) / SEALED_CHUNK * crate::crypt::CHUNK
    }

    /// Opens stored bytes `range` (starting at 0 or a chunk boundary, ending at one or at the
    /// object's end) into a new buffer: what [`Self::open_piece_in_place`] must agree with.
    #[cfg(test)]
    fn open_piece(&self, range: ByteRange, stored: &[u8]) -> Result<Vec<u8>> {
        let (first, skip) = self.payload_at(range, stored.len());
        let body = &stored[skip..];
        let mut out = Vec::with_capacity(stored.len());
        let ends = range.end == self.stored_len;
        self.opener.open_chunks(first, body, ends, &mut out)?;
        Ok(out)
    }

    /// Opens stored bytes `range` (starting at 0 or a chunk boundary, ending at one or at the
    /// object's end) where they lie in `stored`, [`RUN_CHUNKS`] chunks at a time, handing each
    /// run's plaintext and its offset in the object to `sink` while it is in cache. With
    /// `close_up`, each run's plaintext lands right after the one before: the returned range
    /// of `stored` holds the piece's plaintext. Without, a run has been handed on before the
    /// next is opened, so its plaintext may land over the bytes already handed on: at the
    /// aligned address at or before the run, which a direct write then takes without a copy.
    /// Not all or nothing: the runs before a chunk that fails have been handed on. A chunk
    /// that does not authenticate leaves its bytes spent: [`Self::explain`] names the fault
    /// from a fresh copy of it.
    pub fn open_piece_in_place(
        &self,
        range: ByteRange,
        stored: &mut [u8],
        close_up: bool,
        mut sink: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<std::ops::Range<usize>> {
        let (first, skip) = self.payload_at(range, stored.len());
        let ends = range.end == self.stored_len;
        let run = (RUN_CHUNKS * SEALED_CHUNK) as usize;
        let runs = (stored.len() - skip).div_ceil(run).max(1);
        let base = stored.as_ptr() as usize;
        let mut plain = skip;
        for k in 0..runs {
            let start = skip + k * run;
            let end = (start + run).min(stored.len());
            let index = first + k as u64 * RUN_CHUNKS;
            let last = ends && k + 1 == runs;
            let dst = if close_up {
                plain
            } else {
                // Everything before `start` has been handed on (or is the header).
                aligned_at_or_before(base, start)
            };
            let len = self.opener.open_chunks_in_place(
                index,
                &mut stored[dst..end],
                start - dst,
                last,
            )?;
            sink(index * crate::crypt::CHUNK, &stored[dst..dst + len])?;
            plain += len;
        }
        Ok(skip..plain)
    }

    /// The stored bytes of chunk `chunk`.
    pub fn chunk_range(&self, chunk: u64) -> ByteRange {
        let start = self.opener.layout().payload_start() + chunk * SEALED_CHUNK;
        ByteRange {
            start: start.min(self.stored_len),
            end: (start + SEALED_CHUNK).min(self.stored_len),
        }
    }

    /// Why chunk `chunk` did not open in place, from `fresh`, its bytes read again: a
    /// truncation or trailing data where the opener that keeps its input can tell, else
    /// `spent` (damage, or an object that changed between the two reads).
    pub fn explain(&self, chunk: u64, fresh: &[u8], spent: Error) -> Error {
        let ends = self.chunk_range(chunk).end == self.stored_len;
        match self.opener.open_chunks(chunk, fresh, ends, &mut Vec::new()) {
            Err(e) => e.into(),
            Ok(()) => spent,
        }
    }

    /// The index of the first chunk stored in `range`, and where in the `len` bytes stored
    /// there the chunks start.
    fn payload_at(&self, range: ByteRange, len: usize) -> (u64, usize) {
        let start = self.opener.layout().payload_start();
        let skip = start.saturating_sub(range.start).min(len as u64) as usize;
        let first = range.start.max(start).saturating_sub(start) / SEALED_CHUNK;
        (first, skip)
    }
}

/// Chunks opened together by [`SealedObject::open_piece_in_place`]: 1 MiB of plaintext, the
/// size of one direct write, opened, checksummed and written while it is in cache.
pub const RUN_CHUNKS: u64 = 16;

/// Where in a buffer at address `base` a run stored at offset `start` may open so that its
/// plaintext starts on a direct-I/O boundary: the aligned offset at or before `start`, or
/// `start` itself when the buffer starts after that boundary.
fn aligned_at_or_before(base: usize, start: usize) -> usize {
    let back = (base + start) % crate::directio::ALIGN;
    start.checked_sub(back).unwrap_or(start)
}

/// Cuts stored ranges `units` into pieces of at most about `max` bytes whose every inner
/// boundary is a chunk boundary, so each piece opens on its own. Unit boundaries must be chunk
/// boundaries already (they are: parts of whole chunks, or the whole object).
pub fn split_sealed(units: &[ByteRange], layout: Layout, max: u64) -> Vec<(usize, ByteRange)> {
    let per = (max / SEALED_CHUNK).max(1);
    let mut out = Vec::new();
    for (i, u) in units.iter().enumerate() {
        let mut at = u.start;
        while at < u.end {
            let chunk = at.saturating_sub(layout.payload_start()) / SEALED_CHUNK;
            let next = layout.chunk_offset(chunk + per).min(u.end);
            let next = if next <= at { u.end } else { next };
            out.push((
                i,
                ByteRange {
                    start: at,
                    end: next,
                },
            ));
            at = next;
        }
    }
    out
}

/// The stored bytes of each part of an encrypted multipart object, from its plaintext part
/// layout (`first`, `growth`) and header length; `None` when the lengths do not fit.
pub fn sealed_parts(
    stored_len: u64,
    payload_start: u64,
    first: u64,
    growth: u64,
) -> Option<Vec<ByteRange>> {
    let layout = Layout::new(payload_start);
    let plain_len = layout.plain_len(stored_len)?;
    crate::transfer::plan::layout(plain_len, first, growth)
        .into_iter()
        .map(|p| {
            layout
                .sealed_part(p.start..p.end, plain_len)
                .map(|r| ByteRange {
                    start: r.start,
                    end: r.end,
                })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crypt::{CHUNK, Identities, Recipients};

    /// Keys of a fresh identity, the public half as the recipient.
    pub(crate) fn keys() -> Keys {
        let id = age::x25519::Identity::generate();
        Keys {
            recipients: Recipients::new([id.to_public()]).expect("recipients"),
            identities: Identities::new(IDENTITY_SETTING, vec!["/test/id.key".into()], vec![id]),
            require_sealed: None,
        }
    }

    #[test]
    fn bytes_round_trip_and_plaintext_passes_through() {
        let k = keys();
        let plain = vec![7u8; 3 * CHUNK as usize + 5];
        let sealed = seal_bytes(&k, "o", &plain).expect("seal");
        assert!(crate::crypt::is_sealed(&sealed));
        assert_eq!(
            open_bytes(Some(&k), "o", sealed.to_vec()).expect("open"),
            plain
        );
        assert_eq!(
            open_bytes(Some(&k), "o", b"plain".to_vec()).expect("plain"),
            b"plain"
        );
        let err = open_bytes(None, "o", sealed.to_vec()).expect_err("no identity");
        assert!(err.to_string().contains(IDENTITY_SETTING), "{err}");
    }

    /// `len` bytes of plaintext, sealed whole, opened as a download sees it, and its one range.
    pub(crate) fn sealed_object(
        len: u64,
        modulo: usize,
    ) -> (Vec<u8>, Bytes, SealedObject, [ByteRange; 1]) {
        let k = keys();
        let plain: Vec<u8> = (0..len as usize).map(|i| (i % modulo) as u8).collect();
        let sealed = seal_bytes(&k, "o", &plain).expect("seal");
        let opener = Opener::open(&sealed, &k.identities, "o").expect("header");
        let obj = SealedObject {
            stored_len: sealed.len() as u64,
            plain_len: plain.len() as u64,
            opener: Arc::new(opener),
        };
        let whole = [ByteRange {
            start: 0,
            end: sealed.len() as u64,
        }];
        (plain, sealed, obj, whole)
    }

    #[test]
    fn pieces_split_at_chunk_boundaries_and_open_alone() {
        let (plain, sealed, obj, whole) = sealed_object(10 * CHUNK + 77, 251);
        let pieces = split_sealed(&whole, obj.opener.layout(), 3 * SEALED_CHUNK + 5);
        assert_eq!(pieces.len(), 4);
        let mut got = Vec::new();
        for (_, r) in &pieces {
            assert_eq!(obj.plain_offset(r.start), got.len() as u64);
            let bytes = &sealed[r.start as usize..r.end as usize];
            got.extend(obj.open_piece(*r, bytes).expect("piece"));
        }
        assert_eq!(got, plain);
    }

    #[test]
    fn pieces_open_in_place_to_the_same_plaintext_and_a_spent_chunk_is_named_again() {
        // Pieces of several runs, the last one short.
        let (plain, sealed, obj, whole) = sealed_object(90 * CHUNK + 77, 241);
        let pieces = split_sealed(&whole, obj.opener.layout(), 40 * SEALED_CHUNK);
        assert_eq!(pieces.len(), 3);
        let mut got = Vec::new();
        for (_, r) in &pieces {
            let bytes = &sealed[r.start as usize..r.end as usize];
            let mut buf = bytes.to_vec();
            let mut handed = Vec::new();
            let at = obj
                .open_piece_in_place(*r, &mut buf, true, |off, p| {
                    assert_eq!(off, obj.plain_offset(r.start) + handed.len() as u64);
                    handed.extend_from_slice(p);
                    Ok(())
                })
                .expect("opens");
            assert_eq!(obj.plain_offset(r.start), got.len() as u64);
            let want = obj.open_piece(*r, bytes).expect("piece");
            assert_eq!(buf[at.clone()], want[..]);
            assert_eq!(handed, want);
            got.extend_from_slice(&buf[at]);
            // Handed on without closing up: the same plaintext, every run after the first
            // starting on a direct-I/O boundary (so it is written without a copy).
            let mut buf = bytes.to_vec();
            let (mut handed, mut runs) = (Vec::new(), 0);
            obj.open_piece_in_place(*r, &mut buf, false, |off, p| {
                assert_eq!(off, obj.plain_offset(r.start) + handed.len() as u64);
                let aligned = (p.as_ptr() as usize).is_multiple_of(crate::directio::ALIGN);
                assert!(runs == 0 || aligned, "run {runs} is not aligned");
                handed.extend_from_slice(p);
                runs += 1;
                Ok(())
            })
            .expect("opens");
            // 40, 40 and 10 chunks: three runs, three and one.
            assert_eq!(runs, (r.len() / SEALED_CHUNK).div_ceil(RUN_CHUNKS).max(1));
            assert_eq!(handed, want);
        }
        assert_eq!(got, plain);
        let fault = |e: &Error| match e {
            Error::Crypt(c) => c.fault.clone(),
            other => panic!("not a crypt error: {other}"),
        };
        // A flipped byte: that chunk, damaged, whichever way it is read.
        let mut bad = sealed.to_vec();
        let at = obj.chunk_range(17).start as usize + 5;
        bad[at] ^= 1;
        let mut buf = bad.clone();
        let mut handed = 0;
        let spent = obj
            .open_piece_in_place(whole[0], &mut buf, false, |_, p| {
                handed += p.len();
                Ok(())
            })
            .expect_err("damaged");
        // The run before the damaged chunk's was handed on, nothing after.
        assert_eq!(handed as u64, RUN_CHUNKS * CHUNK);
        assert_eq!(fault(&spent), Fault::ChunkAuth { chunk: 17 });
        let r = obj.chunk_range(17);
        let named = obj.explain(17, &bad[r.start as usize..r.end as usize], spent);
        assert_eq!(fault(&named), Fault::ChunkAuth { chunk: 17 });
        // Cut after a whole chunk: in place a chunk that does not open; read again, a
        // truncation.
        let cut = obj.chunk_range(3).start;
        let short = SealedObject {
            stored_len: cut,
            ..obj.clone()
        };
        let head = ByteRange { start: 0, end: cut };
        let mut buf = sealed[..cut as usize].to_vec();
        let spent = short
            .open_piece_in_place(head, &mut buf, true, |_, _| Ok(()))
            .expect_err("cut");
        assert_eq!(fault(&spent), Fault::ChunkAuth { chunk: 2 });
        let r = short.chunk_range(2);
        let named = short.explain(2, &sealed[r.start as usize..r.end as usize], spent);
        assert_eq!(fault(&named), Fault::Truncated);
        // A piece of the header alone has no chunk: refused.
        let head = ByteRange {
            start: 0,
            end: obj.opener.layout().payload_start(),
        };
        let mut buf = sealed[..head.end as usize].to_vec();
        let r = obj.open_piece_in_place(head, &mut buf, true, |_, _| panic!("no chunk"));
        assert!(r.is_err());
    }

    #[test]
    fn parts_of_a_sealed_multipart_object_tile_it() {
        let parts = sealed_parts(200 + 3 * SEALED_CHUNK + 10 + 16, 200, CHUNK, 0).expect("fits");
        assert_eq!(parts.len(), 4);
        assert_eq!(
            parts[0],
            ByteRange {
                start: 0,
                end: 200 + SEALED_CHUNK
            }
        );
        assert_eq!(parts[3].end, 200 + 3 * SEALED_CHUNK + 26);
        assert!(sealed_parts(100, 200, CHUNK, 0).is_none());
    }
}
