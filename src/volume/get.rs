//! `volume get`: a volume's bytes (or a range of them) to a file, written atomically, or to
//! stdout. Chunks are fetched whole, `concurrency` at a time, each verified (its size, the
//! CRC32C of our manifest, the store's own checksum) before any of its bytes is written, and
//! written strictly in order. A range costs at most two chunks more than it asks for: the
//! price of never handing out unverified bytes.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;

use super::layout::{self, chunk_name};
use super::{GetRequest, Sink, Volume, survey};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::store::ByteRange;
use crate::transfer::{Expect, Transfer};

/// What a get wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GetReport {
    /// Volume name.
    pub volume: String,
    /// Bytes written.
    pub bytes: u64,
    /// Bytes the volume holds (readable part).
    pub total: u64,
    /// Whether the volume was read only up to a gap or missing chunks.
    pub truncated: bool,
}

/// Runs `volume get`.
pub async fn get(t: &Transfer, vol: &Volume, req: &GetRequest) -> Result<GetReport> {
    let (listed, manifest) = survey(t, vol).await?;
    if !listed.exists() {
        return Err(Error::Failed(format!(
            "volume {} not found in {}",
            vol.name, vol.location
        )));
    }
    let readable = layout::readable(&listed.chunks, manifest.as_ref(), req.allow_truncated)
        .map_err(|e| Error::Failed(format!("volume {}: {e}", vol.name)))?;
    for w in &readable.warnings {
        tracing::warn!("volume {}: {w}", vol.name);
    }
    let total = readable.total;
    let len = req.length.unwrap_or(total.saturating_sub(req.offset));
    if req.offset.checked_add(len).is_none_or(|end| end > total) {
        return Err(Error::Failed(format!(
            "volume {}: bytes {}..{} lie past its end ({total} bytes)",
            vol.name,
            req.offset,
            req.offset.saturating_add(len)
        )));
    }
    let sizes: Vec<u64> = readable.chunks.iter().map(|c| c.0).collect();
    let pieces = layout::pieces(&sizes, req.offset, len);
    let plan = Fetch {
        chunks: &readable.chunks,
        pieces: &pieces,
    };
    let bytes = match &req.dest {
        Sink::Stdout => {
            let mut out = tokio::io::stdout();
            plan.copy_out(t, vol, &mut out).await?
        }
        Sink::File(p) => plan.to_file(t, vol, p).await?,
    };
    Ok(GetReport {
        volume: vol.name.to_string(),
        bytes,
        total,
        truncated: !readable.warnings.is_empty() && req.allow_truncated,
    })
}

/// The chunks to fetch and the part of each to write.
struct Fetch<'a> {
    chunks: &'a [(u64, Option<u32>)],
    pieces: &'a [(u32, ByteRange)],
}

impl Fetch<'_> {
    /// Writes to a temp file beside `dest`, fsyncs and renames it; removes it on failure.
    async fn to_file(&self, t: &Transfer, vol: &Volume, dest: &Path) -> Result<u64> {
        let tmp = fsutil::temp_path_for(dest);
        let result = async {
            // A new file, never one found under the temp name (a link planted beside DEST).
            let mut f = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .await
                .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
            let n = self.copy_out(t, vol, &mut f).await?;
            f.sync_all()
                .await
                .map_err(|e| Error::io(format!("fsync {}", tmp.display()), e))?;
            Ok(n)
        }
        .await;
        match result {
            Ok(n) => fsutil::persist(&tmp, dest).map(|()| n),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Fetches chunks `concurrency` ahead of the writer and writes their pieces in order.
    async fn copy_out<W: AsyncWrite + Unpin + Send>(
        &self,
        t: &Transfer,
        vol: &Volume,
        w: &mut W,
    ) -> Result<u64> {
        let window = t.config().concurrency.max(1);
        let mut set: JoinSet<Result<(usize, Bytes)>> = JoinSet::new();
        let mut waiting: BTreeMap<usize, Bytes> = BTreeMap::new();
        let (mut next_spawn, mut next_write, mut written) = (0usize, 0usize, 0u64);
        loop {
            while next_spawn < self.pieces.len() && next_spawn < next_write + window {
                let (n, range) = self.pieces[next_spawn];
                let (size, crc32c) = self.chunks[n as usize];
                let (t, key, i) = (t.clone(), vol.chunk_key(n), next_spawn);
                set.spawn(async move {
                    let mut buf = Vec::with_capacity(size as usize);
                    let expect = Expect {
                        size: Some(size),
                        crc32c,
                    };
                    t.download_to(&key, &mut buf, expect).await?;
                    let piece = Bytes::from(buf).slice(range.start as usize..range.end as usize);
                    Ok((i, piece))
                });
                next_spawn += 1;
            }
            let Some(done) = set.join_next().await else {
                break;
            };
            let (i, piece) =
                done.map_err(|e| Error::Failed(format!("chunk task failed: {e}")))??;
            waiting.insert(i, piece);
            while let Some(d) = waiting.remove(&next_write) {
                w.write_all(&d).await.map_err(|e| {
                    let (n, _) = self.pieces[next_write];
                    Error::io(format!("write chunk {} of {}", chunk_name(n), vol.name), e)
                })?;
                written += d.len() as u64;
                next_write += 1;
            }
        }
        w.flush().await.map_err(|e| Error::io("write output", e))?;
        Ok(written)
    }
}
