//! Opening: the header is parsed and authenticated with the configured identities, then any run
//! of chunks opens on its own when the object's length is known ([`Opener`], for ranged and
//! parallel reads), or the whole object opens in order with one chunk held back when it is not
//! ([`StreamOpener`]). Nothing unauthenticated is ever returned: a chunk's plaintext is appended
//! only after its tag verifies, and the final flag must sit on the object's last chunk only.

use super::MAX_HEADER_LEN;
use super::error::{CryptError, Fault};
use super::header;
use super::keys::Identities;
use super::layout::{Layout, SEALED_CHUNK, SealedSpan, TAG};
use super::seal::NONCE_LEN;
use super::stream::{ChunkCipher, payload_key};
use age_core::secrecy::ExposeSecret;

/// Whether an object's first bytes are an age header (of any version). Objects written before
/// encryption was turned on read as what they are.
pub fn is_sealed(prefix: &[u8]) -> bool {
    prefix.starts_with(header::MAGIC)
}

/// The length of an object's preamble (header and nonce) from its first bytes: `Ok(None)` while
/// `prefix` does not hold the whole header yet (read more; headers longer than
/// [`MAX_HEADER_LEN`] are refused).
pub fn preamble_len(prefix: &[u8], object: &str) -> Result<Option<u64>, CryptError> {
    header::parse(prefix)
        .map(|p| p.map(|h| (h.len + NONCE_LEN) as u64))
        .map_err(|f| CryptError::new(object, f))
}

/// An object whose header has been authenticated: opens any run of its chunks.
#[derive(Debug, Clone)]
pub struct Opener {
    cipher: ChunkCipher,
    layout: Layout,
    object: String,
}

impl Opener {
    /// Parses and authenticates the header at the start of `prefix`, which must hold the header
    /// and the nonce after it (see [`preamble_len`]), with the first identity that opens it.
    pub fn open(prefix: &[u8], ids: &Identities, object: &str) -> Result<Opener, CryptError> {
        let err = |f| CryptError::new(object, f);
        let parsed = header::parse(prefix)
            .map_err(err)?
            .ok_or(err(Fault::TruncatedHeader))?;
        let nonce: [u8; NONCE_LEN] = prefix
            .get(parsed.len..parsed.len + NONCE_LEN)
            .and_then(|n| n.try_into().ok())
            .ok_or(err(Fault::TruncatedHeader))?;
        let file_key = ids.unwrap(&parsed.stanzas, object)?;
        if !parsed.verify(prefix, &file_key) {
            return Err(err(Fault::HeaderMac));
        }
        let key = payload_key(file_key.expose_secret(), &nonce);
        Ok(Opener {
            cipher: ChunkCipher::new(&key),
            layout: Layout::new((parsed.len + NONCE_LEN) as u64),
            object: object.to_string(),
        })
    }

    /// The object's geometry.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The plaintext length of the object, from its stored length.
    pub fn plain_len(&self, sealed_len: u64) -> Result<u64, CryptError> {
        self.layout
            .plain_len(sealed_len)
            .ok_or_else(|| self.fail(Fault::BadLength { sealed: sealed_len }))
    }

    fn fail(&self, fault: Fault) -> CryptError {
        CryptError::new(&self.object, fault)
    }

    /// Opens the run of sealed chunks `sealed`, the first of which is chunk `first_chunk`, and
    /// appends their plaintext to `out`. `ends_object`: the run ends where the object ends, so
    /// its last chunk is the final one; otherwise every chunk must be whole. All or nothing: on
    /// an error `out` is left as it was.
    pub fn open_chunks(
        &self,
        first_chunk: u64,
        sealed: &[u8],
        ends_object: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), CryptError> {
        let (_, index_of_last) = self.run_shape(first_chunk, sealed.len(), ends_object)?;
        let at = out.len();
        out.reserve(sealed.len());
        for (i, c) in sealed.chunks(SEALED_CHUNK as usize).enumerate() {
            let index = first_chunk + i as u64;
            if let Err(e) = self.open_one(index, ends_object && index == index_of_last, c, out) {
                out.truncate(at);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Opens the run of sealed chunks at `buf[at..]` (the first is chunk `first_chunk`) where
    /// they lie: their plaintext ends up at the start of `buf`, closed up; returns its length.
    /// `at` lets a caller choose where the plaintext lands (an aligned address, or right after
    /// the plaintext before it) without moving it afterwards. The same checks as
    /// [`Opener::open_chunks`], without a second buffer: the lengths first, so a truncation
    /// spends nothing. A chunk that does not authenticate is [`Fault::ChunkAuth`] whatever the
    /// cause, and its bytes are spent; read it again and give it to [`Opener::open_chunks`] to
    /// tell a truncation or trailing data from damage.
    pub fn open_chunks_in_place(
        &self,
        first_chunk: u64,
        buf: &mut [u8],
        at: usize,
        ends_object: bool,
    ) -> Result<usize, CryptError> {
        let sealed = buf.len().saturating_sub(at);
        let (n, index_of_last) = self.run_shape(first_chunk, sealed, ends_object)?;
        let mut plain = 0;
        for i in 0..n {
            let index = first_chunk + i;
            let src = at + (i * SEALED_CHUNK) as usize;
            let len = (buf.len() - src).min(SEALED_CHUNK as usize);
            let last = ends_object && index == index_of_last;
            match self
                .cipher
                .open_shifted(index, last, buf, (plain, src, len))
            {
                Some(l) => plain += l,
                None => return Err(self.fail(Fault::ChunkAuth { chunk: index })),
            }
        }
        Ok(plain)
    }

    /// The chunks of a run of `len` stored bytes starting at chunk `first_chunk`: how many,
    /// and the index of the last. A run that is not whole chunks where it does not end the
    /// object, or ends it on less than a tag (or an empty chunk after others), is truncated.
    fn run_shape(
        &self,
        first_chunk: u64,
        len: usize,
        ends_object: bool,
    ) -> Result<(u64, u64), CryptError> {
        let n = (len as u64).div_ceil(SEALED_CHUNK).max(1);
        let tail = len as u64 - (n - 1) * SEALED_CHUNK;
        let index_of_last = first_chunk + n - 1;
        if !ends_object && tail != SEALED_CHUNK {
            return Err(self.fail(Fault::Truncated));
        }
        if ends_object && (tail < TAG || (tail == TAG && index_of_last > 0)) {
            return Err(self.fail(Fault::Truncated));
        }
        Ok((n, index_of_last))
    }

    /// Opens chunk `index`, appending its plaintext to `out`. A whole chunk that fails but opens
    /// with the other final flag is genuine yet in the wrong place (an object cut at a chunk
    /// boundary, or with data after its final chunk): its plaintext is appended, as the age
    /// reference readers do, and the error says which case it is. Anything else appends
    /// nothing.
    fn open_one(
        &self,
        index: u64,
        last: bool,
        sealed: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptError> {
        if self.cipher.open(index, last, sealed, out) {
            return Ok(());
        }
        let at = out.len();
        if self.cipher.open(index, !last, sealed, out) {
            if sealed.len() as u64 != SEALED_CHUNK {
                // Only whole chunks are ever sealed as not final: keep nothing of this one.
                out.truncate(at);
            }
            return Err(self.fail(if last {
                Fault::Truncated
            } else {
                Fault::TrailingData { chunk: index }
            }));
        }
        Err(self.fail(Fault::ChunkAuth { chunk: index }))
    }

    /// Opens the stored bytes of a [`SealedSpan`] (as a ranged GET of `span.bytes` returned
    /// them) and appends exactly the plaintext range it was made for.
    pub fn open_span(
        &self,
        span: &SealedSpan,
        sealed: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptError> {
        if sealed.len() as u64 != span.bytes.end - span.bytes.start {
            return Err(self.fail(Fault::Truncated));
        }
        let at = out.len();
        self.open_chunks(span.chunks.start, sealed, span.ends_object, out)?;
        let start = at + span.skip as usize;
        let end = start + span.take as usize;
        if end > out.len() {
            out.truncate(at);
            return Err(self.fail(Fault::Truncated));
        }
        out.truncate(end);
        out.drain(at..start);
        Ok(())
    }
}

/// Opens a whole object in order, from its first byte, when its length is not known: the header
/// is gathered (up to [`MAX_HEADER_LEN`]) and authenticated, then every chunk is opened once the
/// next byte shows it is not the last. Memory: the header and one chunk.
#[derive(Debug)]
pub struct StreamOpener {
    ids: Identities,
    object: String,
    head: Vec<u8>,
    opener: Option<Opener>,
    held: Vec<u8>,
    next: u64,
    seen: u64,
}

impl StreamOpener {
    /// A stream opener for `object` with these identities.
    pub fn new(ids: &Identities, object: &str) -> Self {
        StreamOpener {
            ids: ids.clone(),
            object: object.to_string(),
            head: Vec::new(),
            opener: None,
            held: Vec::with_capacity(SEALED_CHUNK as usize),
            next: 0,
            seen: 0,
        }
    }

    /// Takes the next bytes of the object and appends the plaintext they complete to `out`.
    pub fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CryptError> {
        self.seen += input.len() as u64;
        if self.opener.is_some() {
            return self.feed(input, out);
        }
        let room = (MAX_HEADER_LEN + NONCE_LEN).saturating_sub(self.head.len());
        let take = room.min(input.len());
        self.head.extend_from_slice(&input[..take]);
        let Some(len) = preamble_len(&self.head, &self.object)? else {
            return Ok(());
        };
        let len = len as usize;
        if self.head.len() < len {
            return Ok(());
        }
        self.opener = Some(Opener::open(&self.head, &self.ids, &self.object)?);
        let head = std::mem::take(&mut self.head);
        self.feed(&head[len..], out)?;
        self.feed(&input[take..], out)
    }

    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), CryptError> {
        let Some(opener) = &self.opener else {
            return Ok(());
        };
        let full = SEALED_CHUNK as usize;
        while !input.is_empty() {
            if self.held.len() == full {
                // More bytes follow, so the held chunk is not the last.
                opener.open_one(self.next, false, &self.held, out)?;
                self.next += 1;
                self.held.clear();
            }
            while self.held.is_empty() && input.len() > full {
                opener.open_one(self.next, false, &input[..full], out)?;
                self.next += 1;
                input = &input[full..];
            }
            let take = (full - self.held.len()).min(input.len());
            self.held.extend_from_slice(&input[..take]);
            input = &input[take..];
        }
        Ok(())
    }

    /// The object ended: opens the held chunk as the final one.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<(), CryptError> {
        let Some(opener) = &self.opener else {
            let fault = if self.seen == 0 {
                Fault::NotAge
            } else {
                Fault::TruncatedHeader
            };
            return Err(CryptError::new(&self.object, fault));
        };
        if self.held.len() < TAG as usize {
            return Err(opener.fail(Fault::Truncated));
        }
        if self.held.len() == TAG as usize && self.next > 0 {
            return Err(opener.fail(Fault::BadLength { sealed: self.seen }));
        }
        opener.open_one(self.next, true, &self.held, out)
    }
}
