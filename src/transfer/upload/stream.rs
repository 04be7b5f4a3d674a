//! Uploads of streams of unknown length (stdin, the plugin's `backup_data`): a lazily filled pool
//! of at most `concurrency` part buffers, so a 10 KiB stream never allocates a whole part, and
//! a part size that doubles every [`GROWTH_EVERY`] parts so 10 000 parts reach past 5 TiB. The
//! layout is recorded in the object's metadata so a reader can cut the same parts again.

use std::collections::BTreeMap;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinSet;

use super::{PartJob, SentPart, Uploaded, combine};
use crate::error::{Error, Result};
use crate::store::{PartReceipt, PutOptions, Upload};
use crate::transfer::Transfer;
use crate::transfer::plan::{self, GROWTH_EVERY, LAYOUT_META, MAX_PARTS};

impl Transfer {
    /// Uploads a stream of unknown length (stdin). Buffers are allocated only as data arrives,
    /// at most `concurrency` of them; a stream that ends within the first part is a single PUT,
    /// an empty stream a zero-byte object.
    pub async fn upload_stream<R: AsyncRead + Unpin + Send>(
        &self,
        mut reader: R,
        key: &str,
    ) -> Result<Uploaded> {
        let first = self.cfg.part_size.max(crate::store::limits::MIN_PART_SIZE);
        let permit = self.permit().await?;
        let body = fill(&mut reader, first as usize, true).await?;
        if (body.len() as u64) < first {
            drop(permit);
            return self.put_bytes(key, body, BTreeMap::new()).await;
        }
        let mut metadata = BTreeMap::new();
        metadata.insert(
            LAYOUT_META.to_string(),
            plan::encode_layout(first, GROWTH_EVERY),
        );
        let opts = PutOptions {
            metadata,
            ..Default::default()
        };
        let upload = self.create_upload(key, &opts).await?;
        self.progress.object_started(key, 0);
        let result = self
            .send_stream_parts(
                &mut reader,
                &upload,
                PartJob {
                    number: 1,
                    body,
                    _permit: permit,
                },
                first,
            )
            .await;
        let result = match result {
            Ok(parts) => {
                let size = parts.iter().map(|p| p.size).sum();
                self.finish(&upload, &parts, size, first, GROWTH_EVERY)
                    .await
                    .map(|etag| (parts, size, etag))
            }
            Err(e) => Err(e),
        };
        self.progress.object_done(key);
        match result {
            Ok((parts, size, etag)) => {
                let crcs: Vec<_> = parts.iter().map(|p| (p.crc32c, p.size)).collect();
                Ok(Uploaded {
                    size,
                    crc32c: combine(&crcs),
                    etag,
                    parts: parts.len() as u32,
                    parts_reused: 0,
                })
            }
            Err(e) => {
                let _ = self.abort(&upload).await;
                Err(e)
            }
        }
    }

    async fn send_stream_parts<R: AsyncRead + Unpin + Send>(
        &self,
        reader: &mut R,
        upload: &Upload,
        first_job: PartJob,
        first: u64,
    ) -> Result<Vec<SentPart>> {
        let mut set: JoinSet<Result<(PartReceipt, u32)>> = JoinSet::new();
        let mut parts = Vec::new();
        let mut job = Some(first_job);
        let mut number = 1u32;
        let collect =
            |done: std::result::Result<Result<(PartReceipt, u32)>, tokio::task::JoinError>,
             parts: &mut Vec<SentPart>|
             -> Result<()> {
                let (r, crc) =
                    done.map_err(|e| Error::Failed(format!("part task failed: {e}")))??;
                self.progress.bytes_done(r.size);
                parts.push(SentPart::from_receipt(r, crc));
                Ok(())
            };
        loop {
            if let Some(j) = job.take() {
                let this = self.clone();
                let upload = upload.clone();
                set.spawn(async move { this.send_part(j, &upload).await });
            }
            // Reap finished parts without waiting, so a failure stops the reading early.
            while let Some(done) = set.try_join_next() {
                collect(done, &mut parts)?;
            }
            let permit = tokio::select! {
                p = self.permit() => p?,
                Some(done) = set.join_next(), if !set.is_empty() => {
                    collect(done, &mut parts)?;
                    continue;
                }
            };
            let size = plan::part_size_at(first, GROWTH_EVERY, u64::from(number));
            let body = fill(reader, size as usize, false).await?;
            if body.is_empty() {
                drop(permit);
                break;
            }
            number += 1;
            if u64::from(number) > MAX_PARTS {
                return Err(Error::Failed(format!(
                    "{}: stream longer than {MAX_PARTS} parts can hold",
                    upload.key
                )));
            }
            job = Some(PartJob {
                number,
                body,
                _permit: permit,
            });
        }
        while let Some(done) = set.join_next().await {
            collect(done, &mut parts)?;
        }
        parts.sort_by_key(|p| p.number);
        Ok(parts)
    }
}

/// Reads up to `limit` bytes. With `lazy`, the buffer grows with the data (a 10 KiB stream
/// never allocates a whole part); otherwise the part is allocated at once (it will be filled).
async fn fill<R: AsyncRead + Unpin>(reader: &mut R, limit: usize, lazy: bool) -> Result<Bytes> {
    let mut buf = Vec::with_capacity(if lazy { limit.min(1 << 20) } else { limit });
    let mut taken = reader.take(limit as u64);
    loop {
        if buf.len() == buf.capacity() {
            if buf.len() >= limit {
                break;
            }
            let grow = buf.capacity().max(1 << 16).min(limit - buf.len());
            buf.reserve_exact(grow);
        }
        let n = taken
            .read_buf(&mut buf)
            .await
            .map_err(|e| Error::io("read input stream", e))?;
        if n == 0 {
            break;
        }
    }
    Ok(Bytes::from(buf))
}
