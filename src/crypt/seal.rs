//! Sealing: a fresh file key and nonce per object, the header that wraps the key to every
//! recipient, then chunks sealed by index, so the parts of one object seal independently and in
//! parallel ([`Sealer::seal`]); and a sealer for streams of unknown length ([`StreamSealer`]).

use std::fmt;

use age_core::format::FileKey;
use age_core::secrecy::ExposeSecret;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::TryRngCore;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use super::error::{CryptError, Fault};
use super::header;
use super::keys::Recipients;
use super::layout::{CHUNK, Layout};
use super::stream::{ChunkCipher, payload_key};
use crate::secret::Secret;

/// Bytes of the payload nonce after the header.
pub(crate) const NONCE_LEN: usize = 16;

/// Seals one object: holds its header and nonce (the preamble every sealed object starts with)
/// and its payload cipher.
pub struct Sealer {
    preamble: Vec<u8>,
    cipher: ChunkCipher,
    file_key: FileKey,
    object: String,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("object", &self.object)
            .field("payload_start", &self.preamble.len())
            .finish_non_exhaustive()
    }
}

fn random(object: &str, buf: &mut [u8]) -> Result<(), CryptError> {
    OsRng.try_fill_bytes(buf).map_err(|e| {
        CryptError::new(
            object,
            Fault::Seal(format!("the system random source failed: {e}")),
        )
    })
}

impl Sealer {
    /// A sealer for a new object, encrypted to every recipient, with a fresh file key and nonce.
    /// `object` names it in errors.
    pub fn new(recipients: &Recipients, object: &str) -> Result<Sealer, CryptError> {
        let file_key = FileKey::try_init_with_mut(|k| random(object, k))?;
        let mut stanzas = Vec::new();
        for r in recipients.iter() {
            let (s, _labels) = age::Recipient::wrap_file_key(r, &file_key)
                .map_err(|e| CryptError::new(object, Fault::Seal(e.to_string())))?;
            stanzas.extend(s);
        }
        let mut preamble = header::build(&stanzas, &file_key);
        let mut nonce = [0u8; NONCE_LEN];
        random(object, &mut nonce)?;
        preamble.extend_from_slice(&nonce);
        Ok(Sealer::from_parts(preamble, &nonce, file_key, object))
    }

    fn from_parts(
        preamble: Vec<u8>,
        nonce: &[u8; NONCE_LEN],
        file_key: FileKey,
        object: &str,
    ) -> Sealer {
        let key = payload_key(file_key.expose_secret(), nonce);
        Sealer {
            cipher: ChunkCipher::new(&key),
            preamble,
            file_key,
            object: object.to_string(),
        }
    }

    /// The header and nonce: the first bytes of the sealed object.
    pub fn preamble(&self) -> &[u8] {
        &self.preamble
    }

    /// The object's geometry (sealed lengths, the bytes of each part).
    pub fn layout(&self) -> Layout {
        Layout::new(self.preamble.len() as u64)
    }

    /// Appends chunks `first_chunk..` sealed from `plain` to `out` (without the preamble: the
    /// caller puts [`Self::preamble`] in front of the first part). Unless `last`, `plain` must
    /// be whole chunks; with `last`, its final chunk carries the final flag, and `plain` may be
    /// empty only for an empty object (chunk 0).
    ///
    /// A retried part must seal the same plaintext again: the nonce of a chunk is its index, so
    /// sealing other bytes at the same index would reuse a nonce under the same key.
    pub fn seal(
        &self,
        first_chunk: u64,
        plain: &[u8],
        last: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), CryptError> {
        let misuse = |why| Err(CryptError::new(&self.object, Fault::Misuse(why)));
        if !last && (plain.is_empty() || !(plain.len() as u64).is_multiple_of(CHUNK)) {
            return misuse("a part before the last must hold whole 64 KiB chunks");
        }
        if last && plain.is_empty() && first_chunk != 0 {
            return misuse("an empty final chunk may only end an empty object");
        }
        let n = (plain.len() as u64).div_ceil(CHUNK).max(1);
        out.reserve(plain.len() + 16 * n as usize);
        if plain.is_empty() {
            self.cipher.seal(0, true, &[], out);
            return Ok(());
        }
        let mut chunks = plain.chunks(CHUNK as usize).peekable();
        let mut index = first_chunk;
        while let Some(c) = chunks.next() {
            self.cipher
                .seal(index, last && chunks.peek().is_none(), c, out);
            index += 1;
        }
        Ok(())
    }

    /// Seals chunk `index` where it lies: its plaintext is `out[at..]` (a whole 64 KiB chunk
    /// unless `last`; empty only as chunk 0 of an empty object), sealed in place and followed
    /// by its tag. For callers that read plaintext straight into the buffer they send, so a
    /// part is never held twice. The rule of [`Self::seal`] on retried parts holds here too.
    pub fn seal_chunk_in_place(
        &self,
        index: u64,
        last: bool,
        out: &mut Vec<u8>,
        at: usize,
    ) -> Result<(), CryptError> {
        let misuse = |why| Err(CryptError::new(&self.object, Fault::Misuse(why)));
        let len = out.len().saturating_sub(at) as u64;
        if at > out.len() || len > CHUNK || (!last && len != CHUNK) {
            return misuse("a chunk before the last must be a whole 64 KiB chunk");
        }
        if len == 0 && index != 0 {
            return misuse("an empty final chunk may only end an empty object");
        }
        self.cipher.seal_in_place(index, last, out, at);
        Ok(())
    }

    /// A sealer for a stream whose length is not known in advance.
    pub fn into_stream(self) -> StreamSealer {
        StreamSealer {
            sealer: self,
            held: Vec::with_capacity(CHUNK as usize),
            next: 0,
            started: false,
        }
    }

    /// What a resumed upload needs to seal the rest of this object: the preamble and the file
    /// key, as one line for the upload journal.
    ///
    /// Persisting the key is deliberate. A multipart upload resumed in another run must seal its
    /// remaining parts under the key its header (already in the bucket, in part 1) wraps, and
    /// this host holds only the recipients' public keys, so it cannot unwrap that key again. The
    /// key opens this one object, whose plaintext sits on this same host, and the journal is
    /// written 0600 and removed when the upload completes or is aborted.
    pub fn resume_state(&self) -> Secret {
        Secret::new(format!(
            "age-v1:{}:{}",
            B64.encode(&self.preamble),
            B64.encode(self.file_key.expose_secret())
        ))
    }

    /// The sealer of an upload being resumed, from [`Self::resume_state`]. The header's MAC is
    /// checked against the key, so a damaged journal is refused rather than sealing garbage.
    pub fn resume(state: &Secret, object: &str) -> Result<Sealer, CryptError> {
        let bad = |why| CryptError::new(object, Fault::BadState(why));
        let mut fields = state.expose().split(':');
        let (Some("age-v1"), Some(p), Some(k), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(bad("expected age-v1:<preamble>:<key>"));
        };
        let preamble = B64
            .decode(p)
            .map_err(|_| bad("the preamble is not base64"))?;
        let key = Zeroizing::new(B64.decode(k).map_err(|_| bad("the key is not base64"))?);
        let file_key = FileKey::try_init_with_mut(|fk| {
            (key.len() == fk.len())
                .then(|| fk.copy_from_slice(&key))
                .ok_or(bad("the key is not 16 bytes"))
        })?;
        let parsed = header::parse(&preamble)
            .ok()
            .flatten()
            .filter(|h| h.len + NONCE_LEN == preamble.len())
            .ok_or(bad("the preamble is not an age header and nonce"))?;
        if !parsed.verify(&preamble, &file_key) {
            return Err(bad("the key does not match the header"));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&preamble[parsed.len..]);
        Ok(Sealer::from_parts(preamble, &nonce, file_key, object))
    }
}

/// Seals a stream of unknown length in order, holding back at most one chunk so the last one
/// gets the final flag. Memory: one chunk.
#[derive(Debug)]
pub struct StreamSealer {
    sealer: Sealer,
    held: Vec<u8>,
    next: u64,
    started: bool,
}

impl StreamSealer {
    /// Seals what `input` completes and appends it to `out` (the preamble first).
    pub fn update(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), CryptError> {
        if !self.started {
            out.extend_from_slice(self.sealer.preamble());
            self.started = true;
        }
        let chunk = CHUNK as usize;
        while !input.is_empty() {
            if self.held.len() == chunk {
                // More data follows, so the held chunk is not the last.
                self.sealer.seal(self.next, &self.held, false, out)?;
                self.next += 1;
                self.held.clear();
            }
            if self.held.is_empty() && input.len() > chunk {
                let whole = (input.len() - 1) / chunk * chunk;
                self.sealer.seal(self.next, &input[..whole], false, out)?;
                self.next += (whole / chunk) as u64;
                input = &input[whole..];
            }
            let take = (chunk - self.held.len()).min(input.len());
            self.held.extend_from_slice(&input[..take]);
            input = &input[take..];
        }
        Ok(())
    }

    /// Seals the held chunk as the last and appends it to `out`.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), CryptError> {
        self.update(&[], out)?;
        self.sealer.seal(self.next, &self.held, true, out)
    }
}
