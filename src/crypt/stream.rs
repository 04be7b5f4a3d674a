//! age's STREAM construction, one chunk at a time: ChaCha20-Poly1305 under the payload key, the
//! nonce an 11-byte big-endian chunk counter and a final-chunk flag. Because a chunk's nonce
//! depends only on its index, any run of chunks seals or opens on its own, in any order: parallel
//! parts and ranged reads both rest on that.
//!
//! The cipher is ring's (already linked for TLS and request signing): its ChaCha20-Poly1305 is
//! one assembly pass per chunk (AVX2 on x86_64, NEON on aarch64), about twice the speed of the
//! portable implementation the `age` crate uses. The bytes are the same algorithm's, so objects
//! still open with `age`/`rage`.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, Tag, UnboundKey};
use zeroize::Zeroizing;

use super::layout::{CHUNK, SEALED_CHUNK, TAG};

/// The payload cipher of one object. The key is wiped when it is dropped.
#[derive(Clone)]
pub(crate) struct ChunkCipher(LessSafeKey);

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
    Nonce::assume_unique_for_key(n)
}

/// The payload key: HKDF-SHA256 of the file key, salted with the object's nonce.
pub(crate) fn payload_key(file_key: &[u8; 16], nonce: &[u8; 16]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(age_core::primitives::hkdf(nonce, b"payload", file_key))
}

impl ChunkCipher {
    pub(crate) fn new(payload_key: &[u8; 32]) -> Self {
        let key = UnboundKey::new(&CHACHA20_POLY1305, payload_key)
            .expect("a 32-byte key is ChaCha20-Poly1305's key length");
        ChunkCipher(LessSafeKey::new(key))
    }

    /// Appends chunk `index` sealed (at most [`CHUNK`] bytes of plaintext) to `out`.
    pub(crate) fn seal(&self, index: u64, last: bool, plain: &[u8], out: &mut Vec<u8>) {
        debug_assert!(plain.len() as u64 <= CHUNK);
        let at = out.len();
        out.extend_from_slice(plain);
        self.seal_in_place(index, last, out, at);
    }

    /// Seals the plaintext at `out[at..]` (at most [`CHUNK`] bytes) as chunk `index` where it
    /// lies, and appends its tag: for callers that read the plaintext straight into `out`.
    pub(crate) fn seal_in_place(&self, index: u64, last: bool, out: &mut Vec<u8>, at: usize) {
        debug_assert!((out.len() - at) as u64 <= CHUNK);
        // Fails only for messages longer than 256 GiB; a chunk is 64 KiB.
        let tag = self
            .0
            .seal_in_place_separate_tag(nonce(index, last), Aad::empty(), &mut out[at..])
            .expect("a 64 KiB chunk is within ChaCha20-Poly1305's limit");
        out.extend_from_slice(tag.as_ref());
    }

    /// Opens sealed chunk `index`, `len` bytes at `buf[src..]`, writing its plaintext at
    /// `buf[dst..]` (`dst <= src`: runs of chunks open in place, their plaintext closing up
    /// the tags' gaps). Returns the plaintext's length, or `None` when the chunk does not
    /// authenticate with that index and flag; its bytes are then spent (ring zeroes what it
    /// decrypted), so a second try needs a fresh copy.
    pub(crate) fn open_shifted(
        &self,
        index: u64,
        last: bool,
        buf: &mut [u8],
        (dst, src, len): (usize, usize, usize),
    ) -> Option<usize> {
        if !(TAG..=SEALED_CHUNK).contains(&(len as u64)) || dst > src || src + len > buf.len() {
            return None;
        }
        let body = len - TAG as usize;
        let tag = Tag::try_from(&buf[src + body..src + len]).ok()?;
        self.0
            .open_in_place_separate_tag(
                nonce(index, last),
                Aad::empty(),
                tag,
                &mut buf[dst..src + body],
                (src - dst)..,
            )
            .ok()
            .map(|plain| plain.len())
    }

    /// Appends the plaintext of sealed chunk `index` to `out`, or returns `false` (and leaves
    /// `out` as it was) when it does not authenticate with that index and flag.
    pub(crate) fn open(&self, index: u64, last: bool, sealed: &[u8], out: &mut Vec<u8>) -> bool {
        let len = sealed.len() as u64;
        if !(TAG..=SEALED_CHUNK).contains(&len) {
            return false;
        }
        let (body, tag) = sealed.split_at(sealed.len() - TAG as usize);
        let Ok(tag) = Tag::try_from(tag) else {
            return false;
        };
        let at = out.len();
        out.extend_from_slice(body);
        let ok = self
            .0
            .open_in_place_separate_tag(nonce(index, last), Aad::empty(), tag, &mut out[at..], 0..)
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
