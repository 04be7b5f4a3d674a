//! One GET's body received into its sink: checksummed as it arrives, then written past the
//! page cache in batches, held in memory, or (an encrypted piece bound for a file) opened and
//! written run by run; its length checked against the range asked for.

use bytes::BytesMut;

use super::runs::RunWriter;
use super::{Piece, Sink, WRITE_BATCH, write_at};
use crate::checksum::{self, Md5State, StoredDigest};
use crate::directio::AlignedBuf;
use crate::error::{Error, Result};
use crate::store::ByteRange;
use crate::transfer::sealed;

/// Reads one GET's body into the sink: the whole range, checksummed as it arrives. A short body
/// is a retryable truncation; a long one a broken server. A piece of an encrypted object
/// bound for a file is opened and written run by run as it arrives ([`RunWriter`]).
pub(super) async fn receive(
    body: Box<dyn crate::store::BodyReader>,
    got_: Received<'_>,
    sink: &Sink,
) -> Result<Piece> {
    let range = got_.range;
    let mut dest = match (got_.sealed, sink) {
        (Some(sealed), Sink::File(f)) => Dest::Runs(RunWriter::new(sealed, f.clone(), range)),
        // Gathered into one aligned buffer per piece (allocated once, reused) until
        // WRITE_BATCH bytes, which one blocking task writes past the page cache.
        (None, Sink::File(f)) => Dest::Batch {
            file: f.clone(),
            buf: AlignedBuf::new(WRITE_BATCH.min(range.len() as usize)),
            written: range.start,
        },
        // Held whole until it is handed on: reserved once at its size rather than grown by
        // doubling copies.
        (_, Sink::Memory) => Dest::Memory(BytesMut::with_capacity(range.len() as usize)),
    };
    match checked(body, &got_, &mut dest).await {
        Ok(Sums { crc, md5, stored }) => {
            let (data, plain) = dest.finish().await?;
            Ok(Piece {
                index: got_.index,
                crc,
                md5,
                stored,
                data,
                plain,
            })
        }
        Err(e) => {
            dest.abandon().await;
            Err(e)
        }
    }
}

/// What was taken over a piece's stored bytes as they arrived.
struct Sums {
    crc: u32,
    md5: Option<[u8; 16]>,
    stored: Option<String>,
}

/// The body into `dest`, checked as it arrives: an encrypted object refused without
/// identities, the length held to the range. Returns the stored bytes' CRC32C, and their MD5
/// or other digest when the store's checksum is one.
async fn checked(
    mut body: Box<dyn crate::store::BodyReader>,
    got_: &Received<'_>,
    dest: &mut Dest,
) -> Result<Sums> {
    let (mut crc, mut got) = (0u32, 0u64);
    let mut md5 = got_.want_md5.then(Md5State::default);
    let mut stored = got_.want_stored.map(StoredDigest::new);
    let mut refuse_sealed = got_.refuse_sealed;
    while let Some(chunk) = body.next_chunk().await? {
        if std::mem::take(&mut refuse_sealed) && crate::crypt::is_sealed(&chunk) {
            return Err(sealed::no_identity(got_.key));
        }
        crc = checksum::crc32c_append(crc, &chunk);
        if let Some(m) = md5.as_mut() {
            m.update(&chunk);
        }
        if let Some(d) = stored.as_mut() {
            d.update(&chunk);
        }
        got += chunk.len() as u64;
        if got > got_.range.len() {
            break;
        }
        dest.take(&chunk).await?;
    }
    if got != got_.range.len() {
        return Err(length_mismatch(got_.key, got_.range, got));
    }
    Ok(Sums {
        crc,
        md5: md5.map(Md5State::finish),
        stored: stored.map(StoredDigest::finish),
    })
}

/// Where a piece's bytes go as they arrive.
enum Dest {
    /// Stored bytes into the file, in batches.
    Batch {
        file: std::sync::Arc<crate::directio::OutFile>,
        buf: AlignedBuf,
        written: u64,
    },
    /// Stored bytes held in memory.
    Memory(BytesMut),
    /// An encrypted piece's plaintext into the file, run by run.
    Runs(RunWriter),
}

impl Dest {
    async fn take(&mut self, chunk: &[u8]) -> Result<()> {
        match self {
            Dest::Batch { file, buf, written } => {
                let mut rest = chunk;
                while !rest.is_empty() {
                    rest = &rest[buf.fill(rest)..];
                    if buf.is_full() {
                        let n = buf.len() as u64;
                        *buf = write_at(file.clone(), *written, std::mem::take(buf)).await?;
                        *written += n;
                    }
                }
                Ok(())
            }
            Dest::Memory(mem) => {
                mem.extend_from_slice(chunk);
                Ok(())
            }
            Dest::Runs(runs) => runs.feed(chunk).await,
        }
    }

    /// After the last byte: the bytes held (memory) and the plaintext's CRC32C and length
    /// (runs), everything else written.
    async fn finish(self) -> Result<(Option<bytes::Bytes>, Option<(u32, u64)>)> {
        match self {
            Dest::Batch { file, buf, written } => {
                let buf = if buf.is_empty() {
                    buf
                } else {
                    write_at(file, written, buf).await?
                };
                buf.recycle();
                Ok((None, None))
            }
            Dest::Memory(mem) => Ok((Some(mem.freeze()), None)),
            Dest::Runs(runs) => Ok((None, Some(runs.finish().await?))),
        }
    }

    /// After a failure: a run being opened is waited for, never left running.
    async fn abandon(self) {
        if let Dest::Runs(runs) = self {
            runs.abandon().await;
        }
    }
}

/// A body of another length than the range asked for: a short one is a retryable truncation,
/// a long one a broken server.
fn length_mismatch(key: &str, range: ByteRange, got: u64) -> Error {
    Error::Store(crate::error::StoreFailure {
        op: "GetObject",
        key: key.to_string(),
        status: None,
        code: None,
        message: format!(
            "expected {} bytes at offset {}, got {got}",
            range.len(),
            range.start
        ),
        retryable: got < range.len(),
    })
}

/// What one GET is for: the object, the piece, and what to check as it arrives.
pub(super) struct Received<'a> {
    pub(super) key: &'a str,
    pub(super) index: usize,
    pub(super) range: ByteRange,
    pub(super) want_md5: bool,
    /// The other full-object checksum to take (a whole object read in one GET).
    pub(super) want_stored: Option<crate::store::ChecksumKind>,
    /// Refuse the object if its first bytes are an age header (no identities to open it).
    pub(super) refuse_sealed: bool,
    /// The encrypted object this is a piece of, opened on the way when bound for a file.
    pub(super) sealed: Option<&'a crate::transfer::sealed::SealedObject>,
}
