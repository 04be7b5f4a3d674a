//! `volume put`: a file or stdin cut into chunks stored in parallel, each verified, then our
//! manifest; `--resume` sends only chunks the store does not already hold as they should be;
//! `--append` rewrites the last chunk with the new data after it, as Bareos does.
//!
//! Memory is at most `concurrency` chunks being stored plus the one being read. A chunk is
//! never given up: its PUT is retried as the engine retries (bounded), and when that runs out
//! the put stops with exit 1, keeping the chunks already stored; the state file says which are
//! missing and `--resume` completes them. Our manifest is removed before the first chunk
//! changes and written after the last is verified, so a volume that has one is complete.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinSet;

use super::layout::{self, Listed, Refusal, Stored, chunk_name};
use super::status::{RunState, Tracker, VolumeState};
use super::{ChunkRecord, MAX_CHUNKS, Manifest, PutRequest, Source, Volume, survey};
use crate::checksum;
use crate::error::{Error, Result};
use crate::transfer::{Expect, Transfer};

/// What a put did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PutReport {
    /// Volume name.
    pub volume: String,
    /// `put` or `append`.
    pub operation: String,
    /// Chunks in the volume now.
    pub chunks: u32,
    /// Bytes in the volume now.
    pub total: u64,
    /// Chunk size.
    pub chunk_size: u64,
    /// Chunks this run sent.
    pub chunks_sent: u32,
    /// Chunks already stored as they should be (resume, or an append's unchanged last chunk).
    pub chunks_reused: u32,
}

/// What the put will do, decided before anything changes.
#[derive(Debug)]
struct Plan {
    operation: &'static str,
    base: u64,
    chunk_size: u64,
    /// The first chunk written, and how many of its current bytes stay in front of the data.
    first: u32,
    head_len: u64,
    /// Manifest records of the chunks before `first`.
    kept: Vec<ChunkRecord>,
    /// The source's size, when it is a regular file.
    source_len: Option<u64>,
}

/// What every step of one put works with: the engine, the volume, and the tracker behind its
/// state file.
#[derive(Debug)]
struct Run<'a> {
    t: &'a Transfer,
    vol: &'a Volume,
    tracker: &'a Arc<Tracker>,
}

/// A chunk this run stored or found stored.
#[derive(Debug)]
struct Done {
    n: u32,
    record: ChunkRecord,
    sent: bool,
}

/// Runs `volume put`. `tracker` must be the observer of `t`'s store, so that the state file
/// follows the chunks' requests.
pub async fn put(
    t: &Transfer,
    vol: &Volume,
    req: &PutRequest,
    tracker: &Arc<Tracker>,
) -> Result<PutReport> {
    let run = Run { t, vol, tracker };
    let (listed, manifest) = survey(t, vol).await?;
    let (reader, source_len) = open_source(&req.source).await?;
    let plan = decide(&run, req, &listed, manifest.as_ref(), source_len).await?;
    let head = head_bytes(t, vol, &plan, &listed, manifest.as_ref()).await?;
    tracker.begin(VolumeState {
        volume: vol.name.to_string(),
        store: vol.location.clone(),
        operation: plan.operation.to_string(),
        state: RunState::Running,
        pid: std::process::id(),
        started: crate::clock::now(),
        chunk_size: plan.chunk_size,
        base: plan.base,
        connection_ok: true,
        ..VolumeState::default()
    })?;
    let result = tokio::select! {
        r = write(&run, &plan, &listed, reader, head) => r,
        () = tracker.keep_current() => Err(Error::Failed("status writer stopped".into())),
    };
    let recorded = tracker.finish(result.as_ref().err());
    let report = result?;
    recorded?;
    Ok(report)
}

type Reader = Box<dyn AsyncRead + Unpin + Send>;

async fn open_source(source: &Source) -> Result<(Reader, Option<u64>)> {
    match source {
        Source::Stdin => Ok((Box::new(tokio::io::stdin()), None)),
        Source::File(p) => {
            let f = tokio::fs::File::open(p)
                .await
                .map_err(|e| Error::io(format!("open {}", p.display()), e))?;
            let m = f
                .metadata()
                .await
                .map_err(|e| Error::io(format!("stat {}", p.display()), e))?;
            // A device or a pipe has no size to check against: it is read as a stream.
            Ok((Box::new(f), m.is_file().then_some(m.len())))
        }
    }
}

fn failed(vol: &Volume, what: impl std::fmt::Display) -> Error {
    Error::Failed(format!("volume {} in {}: {what}", vol.name, vol.location))
}

/// Where the data goes and what stays (see [`layout::put_start`] and [`layout::check_end`]):
/// everything a put may refuse is refused here, before any change.
async fn decide(
    run: &Run<'_>,
    req: &PutRequest,
    listed: &Listed,
    manifest: Option<&Manifest>,
    source_len: Option<u64>,
) -> Result<Plan> {
    let Run { t, vol, tracker } = *run;
    let interrupted = tracker
        .previous()
        .filter(|s| s.store == vol.location && s.state != RunState::Done)
        .map(|s| layout::Start {
            operation: if s.operation == "append" {
                "append"
            } else {
                "put"
            },
            base: s.base,
            chunk_size: s.chunk_size,
        });
    let refused = |r| match r {
        Refusal::Usage(m) => Error::Usage(format!("volume {}: {m}", vol.name)),
        Refusal::Refused(m) => failed(vol, m),
    };
    let start = layout::put_start(req.mode, req.chunk_size, interrupted, listed, manifest)
        .map_err(refused)?;
    if let Some(len) = source_len {
        layout::check_end(&start, len, listed).map_err(refused)?;
    }
    let (first, head_len) = layout::start_of(start.base, start.chunk_size);
    Ok(Plan {
        operation: start.operation,
        base: start.base,
        chunk_size: start.chunk_size,
        first,
        head_len,
        kept: kept(t, vol, first, listed, manifest).await?,
        source_len,
    })
}

/// The manifest records of the chunks before `first`, asking the store for the CRC32C of any
/// our manifest does not give.
async fn kept(
    t: &Transfer,
    vol: &Volume,
    first: u32,
    listed: &Listed,
    manifest: Option<&Manifest>,
) -> Result<Vec<ChunkRecord>> {
    let unknown: Vec<u32> = (0..first)
        .filter(|&i| {
            let rec = manifest.and_then(|m| m.chunks.get(i as usize));
            rec.is_none_or(|r| Some(&r.size) != listed.chunks.get(&i))
        })
        .collect();
    let heads: BTreeMap<u32, Option<u32>> =
        crate::transfer::bounded(unknown, t.config().concurrency.max(1), |i| {
            let (t, key) = (t.clone(), vol.chunk_key(i));
            async move {
                let meta = t.head(&key).await?;
                // An encrypted chunk's CRC32C is its ciphertext's: not the one to record.
                let crc = meta.full_crc32c().filter(|_| !t.encrypts());
                Ok((i, crc))
            }
        })
        .await?
        .into_iter()
        .collect();
    let mut kept = layout::kept_records(first, &listed.chunks, manifest, &heads)
        .map_err(|e| failed(vol, e))?;
    for (i, rec) in (0u32..).zip(kept.iter_mut()) {
        if rec.etag.is_none() {
            rec.etag = listed.etags.get(&i).cloned();
        }
    }
    Ok(kept)
}

/// The bytes of the first written chunk that stay in front of the new data: the whole last
/// chunk of an append, or the front of a chunk an interrupted append already rewrote.
async fn head_bytes(
    t: &Transfer,
    vol: &Volume,
    plan: &Plan,
    listed: &Listed,
    manifest: Option<&Manifest>,
) -> Result<Bytes> {
    if plan.head_len == 0 {
        return Ok(Bytes::new());
    }
    let size = listed.chunks.get(&plan.first).copied().unwrap_or(0);
    if size < plan.head_len {
        return Err(failed(
            vol,
            format!(
                "chunk {} holds {size} bytes, fewer than the {} the volume had there before the append",
                chunk_name(plan.first),
                plan.head_len
            ),
        ));
    }
    let crc32c = manifest
        .and_then(|m| m.chunks.get(plan.first as usize))
        .filter(|r| r.size == size)
        .and_then(ChunkRecord::crc);
    let mut buf = Vec::with_capacity(size as usize);
    let expect = Expect {
        size: Some(size),
        crc32c,
    };
    t.download_to(&vol.chunk_key(plan.first), &mut buf, expect)
        .await?;
    buf.truncate(plan.head_len as usize);
    Ok(Bytes::from(buf))
}

async fn write(
    run: &Run<'_>,
    plan: &Plan,
    listed: &Listed,
    reader: Reader,
    head: Bytes,
) -> Result<PutReport> {
    let Run { t, vol, .. } = *run;
    if listed.manifest {
        t.delete_keys(&[vol.manifest_key()]).await?;
    }
    if vol.marker && !listed.marker {
        t.put_bytes(&vol.dir(), Bytes::new(), BTreeMap::new())
            .await?;
    }
    let done = send_chunks(run, plan, &listed.chunks, reader, head).await?;
    let end = plan.first + done.len() as u32;
    if let Some((&n, _)) = listed.chunks.range(end..).next() {
        return Err(failed(
            vol,
            format!(
                "chunk {} lies past the end of this data ({end} chunks): this is not the volume of this data (no manifest written); volume rm {} removes it",
                chunk_name(n),
                vol.name
            ),
        ));
    }
    let sent = done.iter().filter(|d| d.sent).count() as u32;
    let reused = done.len() as u32 - sent;
    let mut chunks = plan.kept.clone();
    chunks.extend(done.into_iter().map(|d| d.record));
    let manifest = Manifest::new(plan.chunk_size, chunks);
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Failed(e.to_string()))?;
    t.put_bytes(&vol.manifest_key(), Bytes::from(json), BTreeMap::new())
        .await?;
    Ok(PutReport {
        volume: vol.name.to_string(),
        operation: plan.operation.to_string(),
        chunks: manifest.count,
        total: manifest.total,
        chunk_size: plan.chunk_size,
        chunks_sent: sent,
        chunks_reused: reused,
    })
}

/// Reads the source chunk by chunk and stores each in a task of its own, at most
/// `concurrency` at once and no more than `stream_memory` holds (a chunk is one object, held
/// whole for its retries and its check; at least one); the next chunk is read only when a task
/// slot is free. After the first failure nothing new starts, the running tasks finish, and the
/// failure is returned.
async fn send_chunks(
    run: &Run<'_>,
    plan: &Plan,
    remote: &BTreeMap<u32, u64>,
    mut reader: Reader,
    head: Bytes,
) -> Result<Vec<Done>> {
    let Run { t, vol, tracker } = *run;
    let cfg = t.config();
    // Chunks held: those being stored and the one being read.
    let held = crate::transfer::plan::stream_parts_in_flight(
        cfg.stream_memory,
        plan.chunk_size,
        cfg.concurrency + 1,
    );
    let workers = held - 1;
    let mut set: JoinSet<Result<Done>> = JoinSet::new();
    let (mut done, mut first_err) = (Vec::new(), None);
    let (mut n, mut read, mut head) = (plan.first, 0u64, Some(head));
    loop {
        while !set.is_empty() && set.len() >= workers {
            collect(set.join_next().await, &mut done, &mut first_err);
        }
        if first_err.is_some() || t.cancel_flag().is_cancelled() {
            break;
        }
        let front = head.take().unwrap_or_default();
        let (body, got) = match fill(&mut reader, front, plan.chunk_size).await {
            Ok(x) => x,
            Err(e) => {
                first_err = Some(e);
                break;
            }
        };
        read += got;
        if body.is_empty() {
            break;
        }
        if n >= MAX_CHUNKS {
            first_err = Some(too_many(vol, plan, read, &mut reader).await);
            break;
        }
        let last = (body.len() as u64) < plan.chunk_size;
        tracker.queued(n, body.len() as u64);
        let job = (t.clone(), vol.chunk_key(n), remote.get(&n).copied());
        set.spawn(store_chunk(job, n, body, tracker.clone()));
        n += 1;
        if last {
            break;
        }
    }
    while let Some(r) = set.join_next().await {
        collect(Some(r), &mut done, &mut first_err);
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    if t.cancel_flag().is_cancelled() {
        return Err(Error::Interrupted);
    }
    if let Some(len) = plan.source_len.filter(|&l| l != read) {
        return Err(failed(
            vol,
            format!(
                "the source changed size while being read ({len} bytes at the start, {read} read); no manifest written"
            ),
        ));
    }
    done.sort_by_key(|d| d.n);
    Ok(done)
}

fn collect(
    r: Option<std::result::Result<Result<Done>, tokio::task::JoinError>>,
    done: &mut Vec<Done>,
    first_err: &mut Option<Error>,
) {
    match r {
        Some(Ok(Ok(d))) => done.push(d),
        Some(Ok(Err(e))) => {
            first_err.get_or_insert(e);
        }
        Some(Err(e)) => {
            first_err.get_or_insert(Error::Failed(format!("chunk task failed: {e}")));
        }
        None => {}
    }
}

/// Reads up to `chunk_size` bytes after `front`; returns the chunk and the bytes read.
async fn fill(reader: &mut Reader, front: Bytes, chunk_size: u64) -> Result<(Bytes, u64)> {
    let mut buf = vec![0u8; chunk_size as usize];
    let mut len = front.len();
    buf[..len].copy_from_slice(&front);
    while len < buf.len() {
        match reader.read(&mut buf[len..]).await {
            Ok(0) => break,
            Ok(k) => len += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read the volume's source", e)),
        }
    }
    buf.truncate(len);
    Ok((Bytes::from(buf), (len - front.len()) as u64))
}

/// Stdin holds more than 10 000 chunks: count the rest (sending nothing more) to name a chunk
/// size that fits.
async fn too_many(vol: &Volume, plan: &Plan, read: u64, reader: &mut Reader) -> Error {
    let rest = tokio::io::copy(reader, &mut tokio::io::sink())
        .await
        .unwrap_or(0);
    let end = plan.base + read + rest;
    let why = layout::check_fits(end, plan.chunk_size)
        .err()
        .unwrap_or_default();
    failed(
        vol,
        format!(
            "{why}; the chunks stored so far stay (no manifest): volume rm {} before putting it again",
            vol.name
        ),
    )
}

/// Stores one chunk: skipped when the store already holds these bytes under its name (resume,
/// an unchanged last chunk), else PUT (retried by the engine) and checked with a HEAD.
async fn store_chunk(
    (t, key, remote): (Transfer, String, Option<u64>),
    n: u32,
    body: Bytes,
    tracker: Arc<Tracker>,
) -> Result<Done> {
    let crc = checksum::crc32c(&body);
    let len = body.len() as u64;
    let record = ChunkRecord::new(len, crc);
    if remote == Some(len)
        && let Some(meta) = t.head_opt(&key).await?
        && already_stored(&t, &key, &meta, &body, crc).await? == Stored::Same
    {
        tracing::debug!(key, "chunk already stored");
        tracker.stored(n, len);
        return Ok(Done {
            n,
            record: record.with_etag(meta.etag),
            sent: false,
        });
    }
    t.put_bytes(&key, body.clone(), BTreeMap::new()).await?;
    let meta = t.head(&key).await?;
    let stored = match t.encrypts() {
        true => layout::compare_sealed(&meta, len),
        false => layout::compare(&meta, &body, crc),
    };
    if stored == Stored::Differs {
        return Err(Error::Checksum {
            key,
            expected: format!("{len} bytes with CRC32C {crc:08x}"),
            actual: format!("{} bytes, {:?}", meta.size, meta.crc32c),
        });
    }
    tracker.stored(n, len);
    Ok(Done {
        n,
        record: record.with_etag(meta.etag),
        sent: true,
    })
}

/// Whether the chunk stored under `key` (its HEAD) holds `body`. Encrypted, its checksums cover
/// ciphertext, so it is read, opened and its plaintext checked against `crc`: resuming costs a
/// read of each chunk already stored rather than sending it again blind.
async fn already_stored(
    t: &Transfer,
    key: &str,
    meta: &crate::store::ObjectMeta,
    body: &[u8],
    crc: u32,
) -> Result<Stored> {
    let len = body.len() as u64;
    if !t.encrypts() {
        return Ok(layout::compare(meta, body, crc));
    }
    if layout::compare_sealed(meta, len) == Stored::Differs {
        // Not an encrypted chunk of that size (a plaintext one): sent again, encrypted.
        return Ok(Stored::Differs);
    }
    let expect = Expect {
        size: Some(len),
        crc32c: Some(crc),
    };
    match t.download_to(key, &mut tokio::io::sink(), expect).await {
        Ok(_) => Ok(Stored::Same),
        Err(Error::Checksum { .. } | Error::Crypt(_)) => Ok(Stored::Differs),
        Err(e) => Err(e),
    }
}
