//! Uploads of streams of unknown length (stdin, the plugin's `backup_data`): a lazily filled pool
//! of part buffers, so a 10 KiB stream never allocates a whole part, parts sized from the
//! memory budget (`stream_memory`) rather than the configured part size, and a part size that
//! doubles every [`GROWTH_EVERY`] parts so 10 000 parts reach past 5 TiB, with fewer parts in
//! flight as they grow ([`plan::stream_parts_in_flight`]). The layout is recorded in the
//! object's metadata so a reader can cut the same parts again.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinSet;

use std::sync::Arc;

use super::file::integrity_known;
use super::sealing::{SealedPart, seal_stream_part};
use super::{PartJob, SentPart, Uploaded, combine, stored_form};
use crate::crypt::Sealer;
use crate::error::{Error, Result};
use crate::store::{ByteRange, PartReceipt, PutOptions, Upload};
use crate::transfer::Transfer;
use crate::transfer::plan::{self, GROWTH_EVERY, LAYOUT_META, MAX_PARTS};
use crate::transfer::sealed::SEALED_META;

impl Transfer {
    /// Uploads a stream of unknown length (stdin). Buffers are allocated only as data arrives,
    /// at most `concurrency` of them; a stream that ends within the first part is a single PUT,
    /// an empty stream a zero-byte object. With encryption on, each part is sealed as a run of
    /// whole chunks (one byte is read ahead, so the last part is known and carries the final
    /// chunk); the result describes the plaintext (size, CRC32C).
    pub async fn upload_stream<R: AsyncRead + Unpin + Send>(
        &self,
        reader: R,
        key: &str,
    ) -> Result<Uploaded> {
        self.upload_stream_with(reader, key, &PutOptions::default())
            .await
    }

    /// [`Transfer::upload_stream`] with options: the object's kind (its storage class) and
    /// metadata to keep (the part layout is always this upload's own).
    pub async fn upload_stream_with<R: AsyncRead + Unpin + Send>(
        &self,
        mut reader: R,
        key: &str,
        given: &PutOptions,
    ) -> Result<Uploaded> {
        let sealing = self.crypt.keys().is_some();
        let mut first = plan::stream_first_part(
            self.cfg.part_size,
            self.cfg.stream_memory,
            self.cfg.concurrency,
        );
        if sealing {
            first = first.next_multiple_of(crate::crypt::CHUNK);
        }
        let ahead = usize::from(sealing);
        let permit = self.permit().await?;
        let body = fill(&mut reader, None, first as usize + ahead, true).await?;
        if (body.len() as u64) < first + ahead as u64 {
            let mut opts = given.clone();
            opts.metadata.remove(LAYOUT_META);
            let sent = self.put_sealed(key, body, &opts).await;
            drop(permit);
            return sent;
        }
        let carry = sealing.then(|| body[first as usize]);
        let body = body.slice(..first as usize);
        let (opts, sealer) = self.stream_options(key, given, first)?;
        let upload = self.create_upload(key, &opts).await?;
        self.progress.object_started(key, 0);
        let first_job = StreamPart {
            job: PartJob {
                number: 1,
                body,
                _permit: Some(permit),
            },
            at: 0,
            last: false,
        };
        let run = StreamRun {
            upload: &upload,
            first,
            sealer,
            carry,
        };
        let result = self.send_stream_parts(&mut reader, run, first_job).await;
        let result = match result {
            Ok((parts, plain)) => {
                let size = parts.iter().map(|p| p.size).sum();
                self.finish(&upload, &parts, size, first, GROWTH_EVERY)
                    .await
                    .map(|etag| (parts, plain, etag))
            }
            Err(e) => Err(e),
        };
        self.progress.object_done(key);
        match result {
            Ok((parts, plain, etag)) => Ok(Uploaded {
                size: plain.iter().map(|p| p.1).sum(),
                crc32c: combine(&plain),
                etag,
                parts: parts.len() as u32,
                parts_reused: 0,
                ciphertext: sealing.then(|| stored_form(&parts)),
            }),
            Err(e) => {
                let _ = self.abort(&upload).await;
                Err(e)
            }
        }
    }

    /// The options a stream's multipart upload is created with (its part layout, and the
    /// sealing preamble's length when it is sealed), and its sealer.
    fn stream_options(
        &self,
        key: &str,
        given: &PutOptions,
        first: u64,
    ) -> Result<(PutOptions, Option<Arc<Sealer>>)> {
        let mut metadata = given.metadata.clone();
        metadata.insert(
            LAYOUT_META.to_string(),
            plan::encode_layout(first, GROWTH_EVERY),
        );
        let sealer = match self.crypt.keys() {
            Some(k) => {
                let s = Sealer::new(&k.recipients, key)?;
                metadata.insert(SEALED_META.to_string(), s.preamble().len().to_string());
                Some(Arc::new(s))
            }
            None => None,
        };
        let opts = PutOptions {
            metadata,
            kind: given.kind,
            ..Default::default()
        };
        Ok((opts, sealer))
    }

    /// Sends one part of a stream, sealed first when the run seals: returns the receipt, the
    /// stored bytes' CRC32C, and the plaintext's CRC32C and length.
    async fn send_stream_part(
        &self,
        part: StreamPart,
        upload: &Upload,
        sealer: Option<Arc<Sealer>>,
    ) -> Result<(PartReceipt, u32, (u32, u64))> {
        let plain_len = part.job.body.len() as u64;
        let Some(s) = sealer else {
            let (r, crc) = self.send_part(part.job, upload).await?;
            return Ok((r, crc, (crc, plain_len)));
        };
        let PartJob {
            number,
            body,
            _permit,
        } = part.job;
        let range = ByteRange {
            start: part.at,
            end: part.at + plain_len,
        };
        let sealed = SealedPart {
            number,
            range,
            last: part.last,
        };
        // The plaintext is let go once sealed: one copy per part in flight while it is sent.
        let (body, crc, plain_crc) = seal_stream_part(s, sealed, body).await?;
        let integrity = integrity_known(self.mode().await, crc, &body);
        let job = PartJob {
            number,
            body,
            _permit,
        };
        let r = self.send_part_as(job, upload, integrity).await?;
        Ok((r, crc, (plain_crc, plain_len)))
    }

    async fn send_stream_parts<R: AsyncRead + Unpin + Send>(
        &self,
        reader: &mut R,
        mut run: StreamRun<'_>,
        first_job: StreamPart,
    ) -> Result<(Vec<SentPart>, Vec<(u32, u64)>)> {
        type Done = (PartReceipt, u32, (u32, u64));
        let mut set: JoinSet<Result<Done>> = JoinSet::new();
        let mut parts = Vec::new();
        let mut plain = Vec::new();
        let mut at = first_job.job.body.len() as u64;
        let mut job = Some(first_job);
        let mut number = 1u32;
        let collect = |done: std::result::Result<Result<Done>, tokio::task::JoinError>,
                       parts: &mut Vec<SentPart>,
                       plain: &mut Vec<(u32, (u32, u64))>|
         -> Result<()> {
            let (r, crc, p) =
                done.map_err(|e| Error::Failed(format!("part task failed: {e}")))??;
            self.progress.bytes_done(r.size);
            plain.push((r.part_number, p));
            parts.push(SentPart::from_receipt(r, crc));
            Ok(())
        };
        loop {
            if let Some(j) = job.take() {
                let this = self.clone();
                let upload = run.upload.clone();
                let sealer = run.sealer.clone();
                set.spawn(async move { this.send_stream_part(j, &upload, sealer).await });
            }
            // Reap finished parts without waiting, so a failure stops the reading early.
            while let Some(done) = set.try_join_next() {
                collect(done, &mut parts, &mut plain)?;
            }
            // Parts only grow: the next one's size bounds every part in flight, so holding
            // fewer than the budget allows (the part about to be filled included) bounds memory.
            let size = plan::part_size_at(run.first, GROWTH_EVERY, u64::from(number));
            let room =
                plan::stream_parts_in_flight(self.cfg.stream_memory, size, self.cfg.concurrency);
            while set.len() >= room {
                match set.join_next().await {
                    Some(done) => collect(done, &mut parts, &mut plain)?,
                    None => break,
                }
            }
            let permit = tokio::select! {
                p = self.permit() => p?,
                Some(done) = set.join_next(), if !set.is_empty() => {
                    collect(done, &mut parts, &mut plain)?;
                    continue;
                }
            };
            let Some((body, last)) = read_stream_part(reader, &mut run, size as usize).await?
            else {
                drop(permit);
                break;
            };
            number += 1;
            within_part_limit(number, &run.upload.key)?;
            let len = body.len() as u64;
            job = Some(StreamPart {
                job: PartJob {
                    number,
                    body,
                    _permit: Some(permit),
                },
                at,
                last,
            });
            at += len;
        }
        while let Some(done) = set.join_next().await {
            collect(done, &mut parts, &mut plain)?;
        }
        parts.sort_by_key(|p| p.number);
        plain.sort_by_key(|p| p.0);
        Ok((parts, plain.into_iter().map(|p| p.1).collect()))
    }
}

/// S3 holds at most MAX_PARTS parts per upload: a longer stream fails rather than be cut.
fn within_part_limit(number: u32, key: &str) -> Result<()> {
    if u64::from(number) > MAX_PARTS {
        return Err(Error::Failed(format!(
            "{key}: stream longer than {MAX_PARTS} parts can hold"
        )));
    }
    Ok(())
}

/// Reads a stream's next part of `size` bytes (and, when sealing, one byte ahead, kept in `run`
/// for the part after): the body and whether it is the last part; `None` at the end.
async fn read_stream_part<R: AsyncRead + Unpin + Send>(
    reader: &mut R,
    run: &mut StreamRun<'_>,
    size: usize,
) -> Result<Option<(Bytes, bool)>> {
    let ahead = usize::from(run.sealer.is_some());
    let mut body = fill(reader, run.carry.take(), size + ahead, false).await?;
    if body.is_empty() {
        return Ok(None);
    }
    // With the byte read ahead present, this part is not the last.
    let last = body.len() < size + ahead;
    if !last && ahead == 1 {
        run.carry = Some(body[size]);
        body = body.slice(..size);
    }
    Ok(Some((body, last)))
}

/// One stream upload in progress: the upload, the first part's size, the sealer when
/// encrypting and the byte read ahead of the part being filled.
struct StreamRun<'a> {
    upload: &'a Upload,
    first: u64,
    sealer: Option<Arc<Sealer>>,
    carry: Option<u8>,
}

/// A part of a stream: its job, its plaintext offset, whether it ends the stream.
struct StreamPart {
    job: PartJob,
    at: u64,
    last: bool,
}

/// Reads up to `limit` bytes (`carry`, a byte read ahead earlier, first). With `lazy`, the
/// buffer grows with the data (a 10 KiB stream never allocates a whole part); otherwise the
/// part is allocated at once (it will be filled).
async fn fill<R: AsyncRead + Unpin>(
    reader: &mut R,
    carry: Option<u8>,
    limit: usize,
    lazy: bool,
) -> Result<Bytes> {
    let mut buf = Vec::with_capacity(if lazy { limit.min(1 << 20) } else { limit });
    buf.extend(carry);
    let mut taken = reader.take((limit - buf.len()) as u64);
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
