//! Downloads: to a file (parallel ranged GETs written at their offsets into a temp file, then
//! renamed) or to a stream (ranges fetched in parallel, written strictly in order through a
//! bounded reorder window), and byte ranges for `restore_data_subset`.
//!
//! Every download is verified before it is reported as done: against the caller's record
//! (size, CRC32C from a manifest or a local file) and against what the store says about the
//! object: a full-object CRC32C, a composite CRC32C over the parts recorded in our layout
//! metadata, or an MD5 ETag. A mismatch is an error, never a warning.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;

use super::Transfer;
use super::plan::{self, LAYOUT_META};
use crate::checksum::{self, Md5State};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::store::{ByteRange, ObjectMeta};

/// Largest range one GET asks for; bounds the memory a stream download holds per request.
const MAX_PIECE: u64 = 16 << 20;
/// Bytes gathered before one positioned write to the destination file.
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

/// The check the object's metadata allows, decided before any byte is fetched because it
/// shapes the ranges.
#[derive(Debug, Clone)]
pub(crate) enum Check {
    Full(u32),
    Composite {
        parts: Vec<ByteRange>,
        expected: String,
    },
    Md5 {
        etag: String,
    },
    CompositeMd5 {
        parts: Vec<ByteRange>,
        etag: String,
    },
    SizeOnly,
}

fn is_md5_hex(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(crate) fn decide(meta: &ObjectMeta) -> Check {
    let layout = meta
        .metadata
        .get(LAYOUT_META)
        .and_then(|v| plan::decode_layout(v))
        .map(|(f, g)| plan::layout(meta.size, f, g));
    if let Some(c) = meta.crc32c.as_deref() {
        match c.split_once('-') {
            None => {
                if let Some(v) = checksum::parse_crc32c_header(c) {
                    return Check::Full(v);
                }
            }
            Some((_, n)) => {
                if let Some(parts) = layout.clone()
                    && n.parse::<usize>().is_ok_and(|n| n == parts.len())
                {
                    return Check::Composite {
                        parts,
                        expected: c.to_string(),
                    };
                }
            }
        }
    }
    match meta.etag.as_deref() {
        Some(e) if is_md5_hex(e) => Check::Md5 {
            etag: e.to_ascii_lowercase(),
        },
        Some(e) => match (e.split_once('-'), layout) {
            (Some((h, n)), Some(parts))
                if is_md5_hex(h) && n.parse::<usize>().is_ok_and(|n| n == parts.len()) =>
            {
                Check::CompositeMd5 {
                    parts,
                    etag: e.to_ascii_lowercase(),
                }
            }
            _ => Check::SizeOnly,
        },
        None => Check::SizeOnly,
    }
}

/// One fetched piece: its place, CRC32C and (when the check needs it) MD5.
struct Piece {
    index: usize,
    crc: u32,
    md5: Option<[u8; 16]>,
    data: Option<Bytes>,
}

/// Where fetched bytes go.
#[derive(Clone)]
enum Sink {
    File(Arc<File>),
    Memory,
}

impl Transfer {
    /// Decides the ranges and the check for an object.
    async fn prepare(
        &self,
        key: &str,
        expect: Expect,
    ) -> Result<(ObjectMeta, Check, Vec<(usize, ByteRange)>, usize)> {
        let meta = self.head(key).await?;
        if let Some(s) = expect.size
            && s != meta.size
        {
            return Err(Error::Checksum {
                key: key.into(),
                expected: format!("{s} bytes"),
                actual: format!("{} bytes in the store", meta.size),
            });
        }
        let check = decide(&meta);
        let (units, max) = match &check {
            Check::Composite { parts, .. } => (parts.clone(), MAX_PIECE.min(self.cfg.part_size)),
            // MD5 cannot be combined, so each part (or the whole object) is one sequential GET.
            Check::CompositeMd5 { parts, .. } => (parts.clone(), u64::MAX),
            Check::Md5 { .. } => (
                vec![ByteRange {
                    start: 0,
                    end: meta.size,
                }],
                u64::MAX,
            ),
            _ => (
                vec![ByteRange {
                    start: 0,
                    end: meta.size,
                }],
                MAX_PIECE.min(self.cfg.part_size),
            ),
        };
        let units: Vec<_> = units.into_iter().filter(|r| !r.is_empty()).collect();
        let n_units = units.len();
        Ok((meta, check, plan::split(&units, max), n_units))
    }

    /// Fetches one piece, retrying it whole on retryable failures (a truncated body included).
    async fn fetch(
        &self,
        key: &str,
        index: usize,
        range: ByteRange,
        whole: bool,
        sink: Sink,
        want_md5: bool,
    ) -> Result<Piece> {
        self.retry
            .run(&self.stats, &self.cancel, || {
                let sink = sink.clone();
                async move {
                    let resp = self
                        .store
                        .get(key, if whole { None } else { Some(range) })
                        .await?;
                    let mut body = resp.body;
                    let mut crc = 0u32;
                    let mut md5 = want_md5.then(Md5State::default);
                    let mut got = 0u64;
                    // Received chunks are written as they are (no copy into a batch buffer, no
                    // fresh allocation per batch: both showed in a profile of a 2 GiB download),
                    // gathered until WRITE_BATCH bytes so one blocking task writes many.
                    let mut batch: Vec<Bytes> = Vec::new();
                    let mut batched = 0usize;
                    let mut mem = BytesMut::new();
                    while let Some(chunk) = body.next_chunk().await? {
                        crc = checksum::crc32c_append(crc, &chunk);
                        if let Some(m) = md5.as_mut() {
                            m.update(&chunk);
                        }
                        got += chunk.len() as u64;
                        if got > range.len() {
                            break;
                        }
                        match &sink {
                            Sink::Memory => mem.extend_from_slice(&chunk),
                            Sink::File(f) => {
                                batched += chunk.len();
                                batch.push(chunk);
                                if batched >= WRITE_BATCH {
                                    let off = range.start + got - batched as u64;
                                    write_at(f.clone(), off, std::mem::take(&mut batch)).await?;
                                    batched = 0;
                                }
                            }
                        }
                    }
                    if got != range.len() {
                        // Too short is a truncated body (retryable); too long is a broken server.
                        return Err(Error::Store(crate::error::StoreFailure {
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
                        }));
                    }
                    if let Sink::File(f) = &sink
                        && !batch.is_empty()
                    {
                        let off = range.start + got - batched as u64;
                        write_at(f.clone(), off, batch).await?;
                    }
                    self.progress.bytes_done(got);
                    let data = matches!(sink, Sink::Memory).then(|| mem.freeze());
                    Ok(Piece {
                        index,
                        crc,
                        md5: md5.map(Md5State::finish),
                        data,
                    })
                }
            })
            .await
    }

    /// Downloads an object to `dest` (written to a temp file beside it, fsynced, renamed), in
    /// parallel ranges, and verifies it. `dest` is never left half-written.
    pub async fn download_file(
        &self,
        key: &str,
        dest: &Path,
        expect: Expect,
    ) -> Result<Downloaded> {
        let (meta, check, pieces, n_units) = self.prepare(key, expect).await?;
        let tmp = fsutil::temp_path_for(dest);
        let file =
            File::create(&tmp).map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
        let file = Arc::new(file);
        self.progress.object_started(key, meta.size);
        let result = self
            .fetch_all(
                key,
                &meta,
                &pieces,
                Sink::File(file.clone()),
                &check,
                None::<&mut tokio::io::Sink>,
            )
            .await;
        self.progress.object_done(key);
        let result = result.and_then(|(crc, piece_info)| {
            let verified = verify(key, &check, expect, crc, &pieces, n_units, &piece_info)?;
            file.sync_all()
                .map_err(|e| Error::io(format!("fsync {}", tmp.display()), e))?;
            Ok(Downloaded {
                size: meta.size,
                crc32c: crc,
                verified,
            })
        });
        match result {
            Ok(d) => {
                fsutil::persist(&tmp, dest)?;
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
        let (meta, check, pieces, n_units) = self.prepare(key, expect).await?;
        self.progress.object_started(key, meta.size);
        let result = self
            .fetch_all(key, &meta, &pieces, Sink::Memory, &check, Some(writer))
            .await;
        self.progress.object_done(key);
        let (crc, info) = result?;
        let verified = verify(key, &check, expect, crc, &pieces, n_units, &info)?;
        Ok(Downloaded {
            size: meta.size,
            crc32c: crc,
            verified,
        })
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
        for r in ranges {
            if r.end > meta.size || r.start > r.end {
                return Err(Error::Failed(format!(
                    "{key}: range {}..{} is outside the object ({} bytes)",
                    r.start, r.end, meta.size
                )));
            }
        }
        let units: Vec<_> = ranges.iter().copied().filter(|r| !r.is_empty()).collect();
        let pieces = plan::split(&units, MAX_PIECE.min(self.cfg.part_size));
        let (_, _) = self
            .fetch_all(
                key,
                &meta,
                &pieces,
                Sink::Memory,
                &Check::SizeOnly,
                Some(writer),
            )
            .await?;
        Ok(units.iter().map(ByteRange::len).sum())
    }

    /// Runs the pieces with at most `concurrency` in flight. With a writer, pieces are written
    /// in order and at most `concurrency` finished pieces wait for their turn. Returns the
    /// whole CRC32C and each piece's (crc, md5).
    async fn fetch_all<W: AsyncWrite + Unpin + Send>(
        &self,
        key: &str,
        meta: &ObjectMeta,
        pieces: &[(usize, ByteRange)],
        sink: Sink,
        check: &Check,
        mut writer: Option<&mut W>,
    ) -> Result<(u32, Vec<(u32, Option<[u8; 16]>)>)> {
        let want_md5 = matches!(check, Check::Md5 { .. } | Check::CompositeMd5 { .. });
        let whole = pieces.len() == 1 && pieces[0].1.start == 0 && pieces[0].1.end == meta.size;
        let mut info: Vec<(u32, Option<[u8; 16]>)> = vec![(0, None); pieces.len()];
        let mut set: JoinSet<Result<Piece>> = JoinSet::new();
        let mut waiting: BTreeMap<usize, Bytes> = BTreeMap::new();
        let (mut next_spawn, mut next_write) = (0usize, 0usize);
        let window = self.cfg.concurrency.max(1);
        loop {
            while next_spawn < pieces.len()
                && (writer.is_none() || next_spawn < next_write + window)
            {
                let permit = tokio::select! {
                    p = self.permit() => p?,
                    Some(done) = set.join_next(), if !set.is_empty() => {
                        self.take_piece(done, &mut info, &mut waiting)?;
                        flush(&mut writer, &mut waiting, &mut next_write).await?;
                        continue;
                    }
                };
                let (i, r) = (next_spawn, pieces[next_spawn].1);
                next_spawn += 1;
                let (this, key, sink) = (self.clone(), key.to_string(), sink.clone());
                set.spawn(async move {
                    let p = this.fetch(&key, i, r, whole, sink, want_md5).await;
                    drop(permit);
                    p
                });
            }
            match set.join_next().await {
                Some(done) => {
                    self.take_piece(done, &mut info, &mut waiting)?;
                    flush(&mut writer, &mut waiting, &mut next_write).await?;
                }
                None => break,
            }
        }
        if let Some(w) = writer.as_mut() {
            w.flush().await.map_err(|e| Error::io("write output", e))?;
        }
        let crc = pieces
            .iter()
            .zip(&info)
            .fold(0u32, |acc, ((_, r), (c, _))| {
                checksum::crc32c_combine(acc, *c, r.len())
            });
        Ok((crc, info))
    }

    fn take_piece(
        &self,
        done: std::result::Result<Result<Piece>, tokio::task::JoinError>,
        info: &mut [(u32, Option<[u8; 16]>)],
        waiting: &mut BTreeMap<usize, Bytes>,
    ) -> Result<()> {
        let p = done.map_err(|e| Error::Failed(format!("download task failed: {e}")))??;
        info[p.index] = (p.crc, p.md5);
        if let Some(d) = p.data {
            waiting.insert(p.index, d);
        }
        Ok(())
    }
}

async fn flush<W: AsyncWrite + Unpin + Send>(
    writer: &mut Option<&mut W>,
    waiting: &mut BTreeMap<usize, Bytes>,
    next_write: &mut usize,
) -> Result<()> {
    let Some(w) = writer.as_mut() else {
        waiting.clear();
        return Ok(());
    };
    while let Some(d) = waiting.remove(next_write) {
        w.write_all(&d)
            .await
            .map_err(|e| Error::io("write output", e))?;
        *next_write += 1;
    }
    Ok(())
}

/// Writes consecutive chunks starting at `offset`.
async fn write_at(file: Arc<File>, offset: u64, chunks: Vec<Bytes>) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        let mut off = offset;
        for c in &chunks {
            file.write_all_at(c, off)?;
            off += c.len() as u64;
        }
        Ok::<(), std::io::Error>(())
    })
    .await
    .map_err(|e| Error::Failed(format!("write task failed: {e}")))?
    .map_err(|e| Error::io("write downloaded data", e))
}

/// Checks the fetched bytes against the caller's record and the object's own checksum.
fn verify(
    key: &str,
    check: &Check,
    expect: Expect,
    crc: u32,
    pieces: &[(usize, ByteRange)],
    n_units: usize,
    info: &[(u32, Option<[u8; 16]>)],
) -> Result<Verified> {
    let mismatch = |expected: String, actual: String| Error::Checksum {
        key: key.into(),
        expected,
        actual,
    };
    if let Some(want) = expect.crc32c
        && want != crc
    {
        return Err(mismatch(
            format!("crc32c {want:08x}"),
            format!("crc32c {crc:08x}"),
        ));
    }
    // Per-unit (part) CRCs, combined from the pieces cut out of each unit.
    let mut unit_crc = vec![0u32; n_units];
    for ((u, r), (c, _)) in pieces.iter().zip(info) {
        unit_crc[*u] = checksum::crc32c_combine(unit_crc[*u], *c, r.len());
    }
    let verified = match check {
        Check::Full(want) if *want != crc => {
            return Err(mismatch(
                format!("crc32c {want:08x}"),
                format!("crc32c {crc:08x}"),
            ));
        }
        Check::Full(_) => Verified::ObjectCrc32c,
        Check::Composite { expected, .. } => {
            let got = checksum::composite_crc32c(&unit_crc);
            if &got != expected {
                return Err(mismatch(expected.clone(), got));
            }
            Verified::CompositeCrc32c
        }
        Check::Md5 { etag } => {
            let got = info
                .first()
                .and_then(|i| i.1)
                .map(|d| checksum::hex(&d))
                .unwrap_or_else(|| checksum::hex(&checksum::md5(b"")));
            if &got != etag {
                return Err(mismatch(format!("md5 {etag}"), format!("md5 {got}")));
            }
            Verified::Md5
        }
        Check::CompositeMd5 { etag, .. } => {
            let mut cat = Vec::with_capacity(info.len() * 16);
            for (_, d) in info {
                cat.extend_from_slice(&d.unwrap_or_default());
            }
            let got = format!("{}-{}", checksum::hex(&checksum::md5(&cat)), info.len());
            if &got != etag {
                return Err(mismatch(format!("etag {etag}"), format!("etag {got}")));
            }
            Verified::Md5
        }
        Check::SizeOnly => Verified::SizeOnly,
    };
    Ok(if expect.crc32c.is_some() {
        Verified::CallerCrc32c
    } else {
        verified
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64, crc: Option<&str>, etag: Option<&str>, layout: Option<&str>) -> ObjectMeta {
        let mut m = ObjectMeta::listed("k", size);
        m.crc32c = crc.map(str::to_string);
        m.etag = etag.map(str::to_string);
        if let Some(l) = layout {
            m.metadata.insert(LAYOUT_META.into(), l.into());
        }
        m
    }

    #[test]
    fn check_prefers_full_crc_then_composite_then_md5() {
        let c = checksum::crc32c_header(5);
        assert!(matches!(
            decide(&meta(10, Some(&c), None, None)),
            Check::Full(5)
        ));
        assert!(matches!(
            decide(&meta(12, Some("AAAAAA==-3"), None, Some("5:0"))),
            Check::Composite { .. }
        ));
        // A composite without our layout cannot be recomputed: fall back to the ETag.
        assert!(matches!(
            decide(&meta(12, Some("AAAAAA==-3"), Some("x-3"), None)),
            Check::SizeOnly
        ));
        assert!(matches!(
            decide(&meta(
                3,
                None,
                Some("D41D8CD98F00B204E9800998ECF8427E"),
                None
            )),
            Check::Md5 { .. }
        ));
        assert!(matches!(
            decide(&meta(
                12,
                None,
                Some("d41d8cd98f00b204e9800998ecf8427e-3"),
                Some("5:0")
            )),
            Check::CompositeMd5 { .. }
        ));
    }
}
