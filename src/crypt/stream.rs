//! age's STREAM construction, one chunk at a time: ChaCha20-Poly1305 under the payload key, the
//! nonce an 11-byte big-endian chunk counter and a final-chunk flag. Because a chunk's nonce
//! depends only on its index, any run of chunks seals or opens on its own, in any order: parallel
//! parts and ranged reads both rest on that.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use zeroize::Zeroizing;

use super::layout::{CHUNK, SEALED_CHUNK, TAG};

/// The payload cipher of one object. The key is wiped when it is dropped.
#[derive(Clone)]
pub(crate) struct ChunkCipher(ChaCha20Poly1305);

impl std::fmt::Debug for ChunkCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkCipher(<redacted>)")
    }
}

/// The nonce of chunk `index`.
fn nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    n.into()
}

/// The payload key: HKDF-SHA256 of the file key, salted with the object's nonce.
pub(crate) fn payload_key(file_key: &[u8; 16], nonce: &[u8; 16]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(age_core::primitives::hkdf(nonce, b"payload", file_key))
}

impl ChunkCipher {
    pub(crate) fn new(payload_key: &[u8; 32]) -> Self {
        ChunkCipher(ChaCha20Poly1305::new(Key::from_slice(payload_key)))
    }

    /// Appends chunk `index` sealed (at most [`CHUNK`] bytes of plaintext) to `out`.
    pub(crate) fn seal(&self, index: u64, last: bool, plain: &[u8], out: &mut Vec<u8>) {
        debug_assert!(plain.len() as u64 <= CHUNK);
        let at = out.len();
        out.extend_from_slice(plain);
        // Fails only for messages longer than 256 GiB; a chunk is 64 KiB.
        let tag = self
            .0
            .encrypt_in_place_detached(&nonce(index, last), &[], &mut out[at..])
            .expect("a 64 KiB chunk is within ChaCha20-Poly1305's limit");
        out.extend_from_slice(&tag);
    }

    /// Appends the plaintext of sealed chunk `index` to `out`, or returns `false` (and leaves
    /// `out` as it was) when it does not authenticate with that index and flag.
    pub(crate) fn open(&self, index: u64, last: bool, sealed: &[u8], out: &mut Vec<u8>) -> bool {
        let len = sealed.len() as u64;
        if !(TAG..=SEALED_CHUNK).contains(&len) {
            return false;
        }
        let (body, tag) = sealed.split_at(sealed.len() - TAG as usize);
        let at = out.len();
        out.extend_from_slice(body);
        let ok = self
            .0
            .decrypt_in_place_detached(
                &nonce(index, last),
                &[],
                &mut out[at..],
                Tag::from_slice(tag),
            )
            .is_ok();
        if !ok {
            out.truncate(at);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_opens_only_with_its_own_index_and_flag() {
        let c = ChunkCipher::new(&[9; 32]);
        let mut sealed = Vec::new();
        c.seal(5, false, b"hello", &mut sealed);
        assert_eq!(sealed.len(), 5 + 16);
        let mut out = b"x".to_vec();
        assert!(c.open(5, false, &sealed, &mut out));
        assert_eq!(out, b"xhello");
        assert!(!c.open(4, false, &sealed, &mut out));
        assert!(!c.open(5, true, &sealed, &mut out));
        assert_eq!(out, b"xhello", "a failed open leaves the output alone");
        let other = ChunkCipher::new(&[8; 32]);
        assert!(!other.open(5, false, &sealed, &mut out));
        assert!(!c.open(5, false, &sealed[..15], &mut out));
    }
}
