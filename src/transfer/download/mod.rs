//! Downloads: to a file (parallel ranged GETs written at their offsets into a temp file, then
//! renamed) or to a stream (ranges fetched in parallel, written strictly in order through a
//! bounded reorder window), and byte ranges for `restore_data_subset`.
//!
//! Every download is verified before it is reported as done: against the caller's record
//! (size, CRC32C from a manifest or a local file) and against what the store says about the
//! object: a full-object CRC32C, a composite CRC32C over the parts recorded in our layout
//! metadata, or an MD5 ETag. A mismatch is an error, never a warning.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::task::JoinSet;

use super::Transfer;

mod opened;
mod ordered;
mod receive;
mod runs;
mod small;
pub(crate) mod verify;
use super::plan;
use super::sealed::{self, CryptMode, SealedObject};
use crate::directio::{AlignedBuf, OutFile};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::store::{ByteRange, ObjectMeta};
use opened::{check_fetched, deliver_opened};
use ordered::Writes;
use ordered::{InOrderMd5, flush};
pub use ordered::{PieceOut, PieceReader, PieceSender, piece_channel};
use receive::{Received, receive};
use verify::verify;
pub(crate) use verify::{Check, decide};

/// Largest range one GET asks for; bounds the memory a stream download holds per request.
pub(crate) const MAX_PIECE: u64 = 16 << 20;
/// Bytes gathered before one positioned write to the destination file (a multiple of the
/// direct-I/O alignment).
const WRITE_BATCH: usize = 4 << 20;

/// What the caller already knows about the object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expect {
    /// Size from a manifest or listing.
    pub size: Option<u64>,
    /// CRC32C of the whole object from a manifest or a local copy.
    pub crc32c: Option<u32>,
}

/// How a download was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// Against the caller's CRC32C.
    CallerCrc32c,
    /// Against the store's full-object CRC32C.
    ObjectCrc32c,
    /// Against the store's composite CRC32C over our recorded part layout.
    CompositeCrc32c,
    /// Against an MD5 ETag.
    Md5,
    /// Against the store's full-object checksum of another kind (an object read whole).
    ObjectChecksum(crate::store::ChecksumKind),
    /// Only the size could be checked (object written by a tool that records no checksum).
    SizeOnly,
}

/// What a download produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Bytes written.
    pub size: u64,
    /// CRC32C of the bytes written.
    pub crc32c: u32,
    /// Strongest check that passed.
    pub verified: Verified,
}

/// One fetched piece: its place, CRC32C and (when the check needs it) MD5 of the stored
/// bytes, and for an encrypted object the CRC32C and length of its plaintext.
struct Piece {
    index: usize,
    crc: u32,
    md5: Option<[u8; 16]>,
    /// The digest of the store's other full-object checksum, when the check is one.
    stored: Option<String>,
    data: Option<Bytes>,
    plain: Option<(u32, u64)>,
}

/// What [`Transfer::prepare`] decided: the object, its check, its pieces, and whether it is
/// encrypted.
struct Prepared {
    meta: ObjectMeta,
    check: Check,
    pieces: Vec<(usize, ByteRange)>,
    n_units: usize,
    sealed: Option<SealedObject>,
    /// MD5 units cut into pieces for a stream, their MD5 computed as they are written in order.
    md5_in_order: bool,
}

/// Bytes first asked for to find out whether an object is encrypted: a header for a dozen
/// recipients.
const SNIFF: u64 = 4096;

/// Where fetched bytes go.
#[derive(Clone)]
enum Sink {
    File(Arc<OutFile>),
    Memory,
}

impl Transfer {
    /// Decides the ranges and the check for an object.
    /// For a `stream` (written in order), MD5-checked units are cut into pieces too, so memory
    /// stays bounded however large a part (or a single-PUT object) is.
    async fn prepare(&self, key: &str, expect: Expect, stream: bool) -> Result<Prepared> {
        let meta = self.head(key).await?;
        let sealed = self.sniff(key, &meta).await?;
        let size = sealed.as_ref().map_or(meta.size, |s| s.plain_len);
        if let Some(s) = expect.size
            && s != size
        {
            return Err(Error::Checksum {
                key: key.into(),
                expected: format!("{s} bytes"),
                actual: format!("{size} bytes in the store"),
            });
        }
        let check = decide(&meta);
        let md5_in_order = stream
            && sealed.is_none()
            && matches!(check, Check::Md5 { .. } | Check::CompositeMd5 { .. });
        let piece = MAX_PIECE.min(self.cfg.part_size);
        let (units, max) = match &check {
            Check::Composite { parts, .. } => (parts.clone(), piece),
            // MD5 cannot be combined, so each part (or the whole object) is one sequential GET.
            Check::CompositeMd5 { parts, .. } => {
                (parts.clone(), if md5_in_order { piece } else { u64::MAX })
            }
            Check::Md5 { .. } => (
                vec![ByteRange {
                    start: 0,
                    end: meta.size,
                }],
                if md5_in_order { piece } else { u64::MAX },
            ),
            _ => (
                vec![ByteRange {
                    start: 0,
                    end: meta.size,
                }],
                piece,
            ),
        };
        let units: Vec<_> = units.into_iter().filter(|r| !r.is_empty()).collect();
        let n_units = units.len();
        let pieces = match &sealed {
            Some(s) => sealed::split_sealed(&units, s.opener.layout(), max),
            None => plan::split(&units, max),
        };
        Ok(Prepared {
            meta,
            check,
            pieces,
            n_units,
            sealed,
            md5_in_order,
        })
    }

    /// Fetches one piece, retrying it whole on retryable failures (a truncated body included).
    /// A piece of an encrypted object bound for a file is opened as it arrives; one bound for
    /// memory is received whole and then opened. Every GET names its range, the whole object's
    /// too: the checksums to verify against came with the HEAD, so no GET needs to ask for
    /// them again.
    async fn fetch(
        &self,
        key: &str,
        index: usize,
        range: ByteRange,
        sink: Sink,
        want_md5: bool,
        sealed: Option<&SealedObject>,
    ) -> Result<Piece> {
        let piece = self
            .fetch_stored(key, index, range, &sink, want_md5, sealed)
            .await?;
        self.open_held(key, range, piece, sealed).await
    }

    /// The receiving half of [`Transfer::fetch`]: a piece for memory is still as stored.
    async fn fetch_stored(
        &self,
        key: &str,
        index: usize,
        range: ByteRange,
        sink: &Sink,
        want_md5: bool,
        sealed: Option<&SealedObject>,
    ) -> Result<Piece> {
        // Without identities, an encrypted object is refused from its first bytes.
        let refuse_sealed = range.start == 0 && matches!(self.crypt, CryptMode::Off);
        let fetched = self
            .retry
            .run(&self.stats, &self.cancel, || {
                let sink = sink.clone();
                async move {
                    let resp = self.store.get(key, Some(range)).await?;
                    let got = Received {
                        key,
                        index,
                        range,
                        want_md5,
                        want_stored: None,
                        refuse_sealed,
                        sealed,
                    };
                    let piece = receive(resp.body, got, &sink).await?;
                    self.progress.bytes_done(range.len());
                    Ok(piece)
                }
            })
            .await;
        match (fetched, sealed) {
            (Ok(p), _) => Ok(p),
            (Err(e), Some(s)) => Err(self.name_spent(key, s, e).await),
            (Err(e), None) => Err(e),
        }
    }

    /// The opening half of [`Transfer::fetch`]: a piece of an encrypted object held in memory
    /// is opened where it lies (one bound for a file was opened as it arrived).
    async fn open_held(
        &self,
        key: &str,
        range: ByteRange,
        mut piece: Piece,
        sealed: Option<&SealedObject>,
    ) -> Result<Piece> {
        if let Some(s) = sealed
            && piece.plain.is_none()
            && let Err(e) = deliver_opened(s, range, &mut piece).await
        {
            return Err(self.name_spent(key, s, e).await);
        }
        Ok(piece)
    }

    /// Downloads an object to `dest` (written to a temp file beside it, fsynced, renamed), in
    /// parallel ranges, and verifies it. `dest` is never left half-written.
    pub async fn download_file(
        &self,
        key: &str,
        dest: &Path,
        expect: Expect,
    ) -> Result<Downloaded> {
        self.download_file_as(key, dest, expect, Durable::Now).await
    }

    /// [`Transfer::download_file`] for a caller that makes a whole directory durable at once
    /// ([`crate::fsutil::FsBarrier`]): verified and renamed into place, but neither the file nor
    /// its directory fsynced. A restore of many files then waits for one journal commit at the
    /// end instead of two per file, each holding a download slot while the journal serializes
    /// them.
    pub async fn download_file_unsynced(
        &self,
        key: &str,
        dest: &Path,
        expect: Expect,
    ) -> Result<Downloaded> {
        self.download_file_as(key, dest, expect, Durable::ByCaller)
            .await
    }

    async fn download_file_as(
        &self,
        key: &str,
        dest: &Path,
        expect: Expect,
        durable: Durable,
    ) -> Result<Downloaded> {
        if expect.size.is_some_and(|s| s <= small::SMALL_FILE) {
            return self.small_file(key, dest, expect, durable).await;
        }
        let p = self.prepare(key, expect, false).await?;
        let tmp = fsutil::temp_path_for(dest);
        let file = OutFile::create_new(&tmp, 0o666)
            .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
        let file = Arc::new(file);
        self.progress.object_started(key, p.meta.size);
        let result = self
            .fetch_all(key, &p, Sink::File(file.clone()), None::<&mut PieceSender>)
            .await;
        self.progress.object_done(key);
        let result = match result.and_then(|f| check_fetched(key, &p, expect, &f)) {
            // Off the runtime's threads: a large file's fsync would stall every other download.
            Ok(d) if durable == Durable::Now => sync_file(file, &tmp).await.map(|()| d),
            other => other,
        };
        match result {
            Ok(d) => {
                durable.place(&tmp, dest)?;
                Ok(d)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Downloads an object to a writer, in order, holding at most `concurrency` ranges in
    /// memory. On a verification failure the bytes are already written: the error is the signal.
    pub async fn download_to<W: AsyncWrite + Unpin + Send>(
        &self,
        key: &str,
        writer: &mut W,
        expect: Expect,
    ) -> Result<Downloaded> {
        self.download_into(key, &mut Writes(writer), expect).await
    }

    /// [`Transfer::download_to`] into any piece output: a [`piece_channel`] hands each
    /// piece to a blocking reader without copying it.
    pub async fn download_into<O: PieceOut>(
        &self,
        key: &str,
        out: &mut O,
        expect: Expect,
    ) -> Result<Downloaded> {
        let p = self.prepare(key, expect, true).await?;
        self.progress.object_started(key, p.meta.size);
        let result = self.fetch_all(key, &p, Sink::Memory, Some(out)).await;
        self.progress.object_done(key);
        check_fetched(key, &p, expect, &result?)
    }

    /// Writes the given byte ranges of an object to a writer, in the order given (ranges past
    /// the end are an error). Returns the bytes written.
    pub async fn download_ranges<W: AsyncWrite + Unpin + Send>(
        &self,
        key: &str,
        ranges: &[ByteRange],
        writer: &mut W,
    ) -> Result<u64> {
        let meta = self.head(key).await?;
        let sealed = self.sniff(key, &meta).await?;
        let size = sealed.as_ref().map_or(meta.size, |s| s.plain_len);
        for r in ranges {
            if r.end > size || r.start > r.end {
                return Err(Error::Failed(format!(
                    "{key}: range {}..{} is outside the object ({size} bytes)",
                    r.start, r.end
                )));
            }
        }
        let units: Vec<_> = ranges.iter().copied().filter(|r| !r.is_empty()).collect();
        if let Some(s) = &sealed {
            return self.sealed_ranges(key, s, &units, writer).await;
        }
        let p = Prepared {
            pieces: plan::split(&units, MAX_PIECE.min(self.cfg.part_size)),
            n_units: units.len(),
            meta,
            check: Check::SizeOnly,
            sealed: None,
            md5_in_order: false,
        };
        self.fetch_all(key, &p, Sink::Memory, Some(&mut Writes(writer)))
            .await?;
        Ok(units.iter().map(ByteRange::len).sum())
    }

    /// Runs the pieces with at most `concurrency` in flight. With a writer, pieces are written
    /// in order and at most `concurrency` pieces (fewer when `stream_memory` holds fewer)
    /// are fetched or wait for their turn. Returns the whole CRC32C and each piece's (crc, md5).
    async fn fetch_all<O: PieceOut>(
        &self,
        key: &str,
        p: &Prepared,
        sink: Sink,
        mut writer: Option<&mut O>,
    ) -> Result<Fetched> {
        let (pieces, check) = (&p.pieces, &p.check);
        let mut plain: Vec<(u32, u64)> = vec![(0, 0); pieces.len()];
        let want_md5 =
            !p.md5_in_order && matches!(check, Check::Md5 { .. } | Check::CompositeMd5 { .. });
        let mut md5 = p.md5_in_order.then(|| InOrderMd5::new(pieces));
        let mut info: Vec<(u32, Option<[u8; 16]>)> = vec![(0, None); pieces.len()];
        let mut set: JoinSet<Result<Piece>> = JoinSet::new();
        let mut waiting: BTreeMap<usize, Bytes> = BTreeMap::new();
        let (mut next_spawn, mut next_write) = (0usize, 0usize);
        let largest = pieces.iter().map(|(_, r)| r.len()).max().unwrap_or(0);
        let window =
            plan::stream_parts_in_flight(self.cfg.stream_memory, largest, self.cfg.concurrency);
        loop {
            while next_spawn < pieces.len()
                && (writer.is_none() || next_spawn < next_write + window)
            {
                let permit = tokio::select! {
                    p = self.permit() => p?,
                    Some(done) = set.join_next(), if !set.is_empty() => {
                        self.take_piece(done, &mut info, &mut plain, &mut waiting)?;
                        flush(&mut writer, &mut waiting, &mut next_write, &mut md5).await?;
                        continue;
                    }
                };
                let (i, r) = (next_spawn, pieces[next_spawn].1);
                next_spawn += 1;
                let (this, key, sink) = (self.clone(), key.to_string(), sink.clone());
                let sealed = p.sealed.clone();
                let ordered = writer.is_some();
                set.spawn(async move {
                    let held = this
                        .fetch_stored(&key, i, r, &sink, want_md5, sealed.as_ref())
                        .await;
                    // With an ordered writer the window bounds the pieces held, so the
                    // request's permit can go before the piece is opened: the next GET need
                    // not wait for the CPU. Without one, the permits are that bound.
                    let permit = (!ordered).then_some(permit);
                    let p = this.open_held(&key, r, held?, sealed.as_ref()).await;
                    drop(permit);
                    p
                });
            }
            match set.join_next().await {
                Some(done) => {
                    self.take_piece(done, &mut info, &mut plain, &mut waiting)?;
                    flush(&mut writer, &mut waiting, &mut next_write, &mut md5).await?;
                }
                None => break,
            }
        }
        if let Some(w) = writer.as_mut() {
            w.finish().await.map_err(|e| Error::io("write output", e))?;
        }
        for (i, d) in md5.map(InOrderMd5::finish).unwrap_or_default() {
            info[i].1 = Some(d);
        }
        Ok(Fetched {
            crc: whole_crc(pieces, &info),
            info,
            plain: p.sealed.is_some().then(|| super::upload::combine(&plain)),
        })
    }

    fn take_piece(
        &self,
        done: std::result::Result<Result<Piece>, tokio::task::JoinError>,
        info: &mut [(u32, Option<[u8; 16]>)],
        plain: &mut [(u32, u64)],
        waiting: &mut BTreeMap<usize, Bytes>,
    ) -> Result<()> {
        let p = done.map_err(|e| Error::Failed(format!("download task failed: {e}")))??;
        info[p.index] = (p.crc, p.md5);
        if let Some(pl) = p.plain {
            plain[p.index] = pl;
        }
        if let Some(d) = p.data {
            waiting.insert(p.index, d);
        }
        Ok(())
    }
}

/// What [`Transfer::fetch_all`] received: the stored bytes' CRC32C, each piece's (crc, md5),
/// and the plaintext's CRC32C when the object is encrypted.
struct Fetched {
    crc: u32,
    info: Vec<(u32, Option<[u8; 16]>)>,
    plain: Option<u32>,
}

/// The CRC32C of the whole object from its pieces' CRC32C.
fn whole_crc(pieces: &[(usize, ByteRange)], info: &[(u32, Option<[u8; 16]>)]) -> u32 {
    let parts: Vec<(u32, u64)> = pieces
        .iter()
        .zip(info)
        .map(|((_, r), (c, _))| (*c, r.len()))
        .collect();
    super::upload::combine(&parts)
}

/// Flushes a finished download to disk.
async fn sync_file(file: Arc<OutFile>, path: &Path) -> Result<()> {
    tokio::task::spawn_blocking(move || file.sync_all())
        .await
        .map_err(|e| Error::Failed(format!("fsync task failed: {e}")))?
        .map_err(|e| Error::io(format!("fsync {}", path.display()), e))
}

/// Who makes a downloaded file durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durable {
    /// The download: the file and its directory are fsynced before it returns.
    Now,
    /// The caller, for a whole directory at once.
    ByCaller,
}

impl Durable {
    /// Renames the finished temp file over `dest`, fsyncing the directory when the download
    /// makes it durable.
    fn place(self, tmp: &Path, dest: &Path) -> Result<()> {
        match self {
            Durable::Now => fsutil::persist(tmp, dest),
            Durable::ByCaller => fsutil::rename_into_place(tmp, dest),
        }
    }
}

/// Writes the buffer at `offset`; gives it back emptied for reuse.
async fn write_at(file: Arc<OutFile>, offset: u64, mut buf: AlignedBuf) -> Result<AlignedBuf> {
    tokio::task::spawn_blocking(move || {
        file.write_at(&buf, offset)?;
        buf.clear();
        Ok::<AlignedBuf, std::io::Error>(buf)
    })
    .await
    .map_err(|e| Error::Failed(format!("write task failed: {e}")))?
    .map_err(|e| Error::io("write downloaded data", e))
}
