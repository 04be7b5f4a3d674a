//! One GET's body received into its sink: checksummed as it arrives, written past the page
//! cache in batches or held in memory, its length checked against the range asked for.

use bytes::BytesMut;

use super::runs::RunWriter;
use super::{Piece, Sink, WRITE_BATCH, write_at};
use crate::checksum::{self, Md5State};
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
    let (Some(sealed), Sink::File(f)) = (got_.sealed, sink) else {
        return receive_stored(body, got_, sink).await;
    };
    let mut runs = RunWriter::new(sealed, f.clone(), got_.range);
    match receive_into(body, &got_, &mut runs).await {
        Ok((crc, md5)) => {
            let plain = runs.finish().await?;
            Ok(Piece {
                index: got_.index,
                crc,
                md5,
                data: None,
                plain: Some(plain),
            })
        }
        Err(e) => {
            runs.abandon().await;
            Err(e)
        }
    }
}

/// The body of a piece of an encrypted object into its runs; returns the stored bytes'
/// CRC32C, and their MD5 when the store's checksum is one (the piece is then a whole part).
async fn receive_into(
    mut body: Box<dyn crate::store::BodyReader>,
    got_: &Received<'_>,
    runs: &mut RunWriter,
) -> Result<(u32, Option<[u8; 16]>)> {
    let (mut crc, mut got) = (0u32, 0u64);
    let mut md5 = got_.want_md5.then(Md5State::default);
    while let Some(chunk) = body.next_chunk().await? {
        crc = checksum::crc32c_append(crc, &chunk);
        if let Some(m) = md5.as_mut() {
            m.update(&chunk);
        }
        got += chunk.len() as u64;
        if got > got_.range.len() {
            break;
        }
        runs.feed(&chunk).await?;
    }
    if got != got_.range.len() {
        return Err(length_mismatch(got_.key, got_.range, got));
    }
    Ok((crc, md5.map(Md5State::finish)))
}

/// The body of a piece as stored: written to the file in batches or held in memory.
async fn receive_stored(
    mut body: Box<dyn crate::store::BodyReader>,
    got_: Received<'_>,
    sink: &Sink,
) -> Result<Piece> {
    let Received {
        key,
        index,
        range,
        want_md5,
        mut refuse_sealed,
        sealed: _,
    } = got_;
    let mut crc = 0u32;
    let mut md5 = want_md5.then(Md5State::default);
    let mut got = 0u64;
    // Received chunks are gathered into one aligned buffer per piece (allocated once, reused)
    // until WRITE_BATCH bytes, which one blocking task writes past the page cache.
    let mut batch = matches!(sink, Sink::File(_))
        .then(|| AlignedBuf::new(WRITE_BATCH.min(range.len() as usize)));
    let mut written = range.start;
    // A piece for memory is held whole until it is handed on: reserved once at its size rather
    // than grown by doubling copies.
    let mut mem = match sink {
        Sink::Memory => BytesMut::with_capacity(range.len() as usize),
        Sink::File(_) => BytesMut::new(),
    };
    while let Some(chunk) = body.next_chunk().await? {
        if std::mem::take(&mut refuse_sealed) && crate::crypt::is_sealed(&chunk) {
            return Err(sealed::no_identity(key));
        }
        crc = checksum::crc32c_append(crc, &chunk);
        if let Some(m) = md5.as_mut() {
            m.update(&chunk);
        }
        got += chunk.len() as u64;
        if got > range.len() {
            break;
        }
        match (sink, batch.as_mut()) {
            (Sink::File(f), Some(buf)) => {
                let mut rest = &chunk[..];
                while !rest.is_empty() {
                    rest = &rest[buf.fill(rest)..];
                    if buf.is_full() {
                        let n = buf.len() as u64;
                        *buf = write_at(f.clone(), written, std::mem::take(buf)).await?;
                        written += n;
                    }
                }
            }
            _ => mem.extend_from_slice(&chunk),
        }
    }
    if got != range.len() {
        return Err(length_mismatch(key, range, got));
    }
    if let (Sink::File(f), Some(buf)) = (sink, batch) {
        let buf = if buf.is_empty() {
            buf
        } else {
            write_at(f.clone(), written, buf).await?
        };
        buf.recycle();
    }
    Ok(Piece {
        index,
        crc,
        md5: md5.map(Md5State::finish),
        data: matches!(sink, Sink::Memory).then(|| mem.freeze()),
        plain: None,
    })
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
    /// Refuse the object if its first bytes are an age header (no identities to open it).
    pub(super) refuse_sealed: bool,
    /// The encrypted object this is a piece of, opened on the way when bound for a file.
    pub(super) sealed: Option<&'a crate::transfer::sealed::SealedObject>,
}
