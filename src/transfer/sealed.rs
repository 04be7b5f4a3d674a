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
    /// object's end) into plaintext.
    pub fn open_piece(&self, range: ByteRange, stored: &[u8]) -> Result<Vec<u8>> {
        let (first, body) = self.payload_of(range, stored);
        let mut out = Vec::with_capacity(stored.len());
        let ends = range.end == self.stored_len;
        self.opener.open_chunks(first, body, ends, &mut out)?;
        Ok(out)
    }

    /// Opens stored bytes `range` as [`Self::open_piece`] does, [`RUN_CHUNKS`] chunks at a
    /// time into one reused buffer, handing each run's plaintext and its plaintext offset to
    /// `sink`: a piece is opened in the memory of one run instead of a second copy of itself.
    /// Not all or nothing: the runs before a chunk that fails have been handed on.
    pub fn open_piece_in_runs(
        &self,
        range: ByteRange,
        stored: &[u8],
        mut sink: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let (first, body) = self.payload_of(range, stored);
        let ends = range.end == self.stored_len;
        if body.is_empty() {
            // No chunk at all: the opener names what is missing.
            return Ok(self
                .opener
                .open_chunks(first, body, ends, &mut Vec::new())?);
        }
        let run = (RUN_CHUNKS * SEALED_CHUNK) as usize;
        let mut plain = Vec::with_capacity(run);
        for (k, sealed) in body.chunks(run).enumerate() {
            let index = first + k as u64 * RUN_CHUNKS;
            let last_run = (k + 1) * run >= body.len();
            plain.clear();
            self.opener
                .open_chunks(index, sealed, ends && last_run, &mut plain)?;
            sink(index * crate::crypt::CHUNK, &plain)?;
        }
        Ok(())
    }

    /// The index of the first chunk stored in `range`, and those chunks' bytes in `stored`
    /// (the header, when the range starts at 0, left out).
    fn payload_of<'a>(&self, range: ByteRange, stored: &'a [u8]) -> (u64, &'a [u8]) {
        let start = self.opener.layout().payload_start();
        let skip = start.saturating_sub(range.start).min(stored.len() as u64) as usize;
        let first = range.start.max(start).saturating_sub(start) / SEALED_CHUNK;
        (first, &stored[skip..])
    }
}

/// Chunks opened together by [`SealedObject::open_piece_in_runs`]: 1 MiB of plaintext, the
/// size of one direct write.
pub const RUN_CHUNKS: u64 = 16;

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
mod tests {
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
    fn sealed_object(len: u64, modulo: usize) -> (Vec<u8>, Bytes, SealedObject, [ByteRange; 1]) {
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
    fn pieces_open_in_runs_to_the_same_plaintext_at_their_offsets_and_a_bad_chunk_fails() {
        let (plain, sealed, obj, whole) = sealed_object((2 * RUN_CHUNKS + 3) * CHUNK + 77, 241);
        let pieces = split_sealed(&whole, obj.opener.layout(), (RUN_CHUNKS + 5) * SEALED_CHUNK);
        assert!(pieces.len() > 1);
        let mut got = vec![0u8; plain.len()];
        for (_, r) in &pieces {
            let bytes = &sealed[r.start as usize..r.end as usize];
            let mut runs = Vec::new();
            obj.open_piece_in_runs(*r, bytes, |at, p| {
                got[at as usize..at as usize + p.len()].copy_from_slice(p);
                runs.extend_from_slice(p);
                Ok(())
            })
            .expect("runs");
            assert_eq!(runs, obj.open_piece(*r, bytes).expect("piece"));
        }
        assert_eq!(got, plain);
        // A flipped byte in the second run: the first run was handed on, then the error.
        let mut bad = sealed.to_vec();
        let at = obj.opener.layout().payload_start() + (RUN_CHUNKS + 1) * SEALED_CHUNK;
        bad[at as usize] ^= 1;
        let mut handed = 0;
        let r = obj.open_piece_in_runs(whole[0], &bad, |_, p| {
            handed += p.len();
            Ok(())
        });
        assert!(r.is_err());
        assert_eq!(handed as u64, RUN_CHUNKS * CHUNK);
        // A piece of the header alone has no chunk: refused, nothing handed on.
        let head = ByteRange {
            start: 0,
            end: obj.opener.layout().payload_start(),
        };
        let r = obj.open_piece_in_runs(head, &sealed[..head.end as usize], |_, _| {
            panic!("nothing to hand on")
        });
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
