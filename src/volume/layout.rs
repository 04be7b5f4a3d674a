//! The decisions about a volume's chunks, as pure functions over plain data: what a listing
//! holds, which chunks a reader may use and how each is checked, where a put starts and whether
//! it fits in 10 000 chunks, which chunk size an existing volume has, whether a stored chunk is
//! the one we would send, and which chunk bytes a range needs.
//!
//! Droplet's reader ends a volume at the first missing chunk, so a lost chunk in the middle
//! silently shortens it. Here a gap followed by more chunks, or fewer chunks than our manifest
//! lists, is an error unless the caller allows a truncated read.

use std::collections::BTreeMap;

use super::{
    ChunkRecord, DEFAULT_CHUNK_SIZE, MANIFEST_NAME, MAX_CHUNKS, MIN_CHUNK_SIZE, Manifest, PutMode,
};
use crate::checksum;
use crate::store::{ByteRange, ObjectMeta};

/// The name of chunk `n`: droplet's `%04d`.
pub fn chunk_name(n: u32) -> String {
    format!("{n:04}")
}

/// The chunk number a name stands for: exactly four ASCII digits.
pub fn chunk_index(name: &str) -> Option<u32> {
    (name.len() == 4 && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
}

/// What a listing of `<VOL>/` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listed {
    /// Chunk number → size.
    pub chunks: BTreeMap<u32, u64>,
    /// Our manifest is there.
    pub manifest: bool,
    /// Droplet's empty `<VOL>/` directory marker is there.
    pub marker: bool,
    /// Other objects under the volume (names relative to it): neither ours nor Bareos'.
    pub others: Vec<String>,
    /// Chunk number → ETag, where the listing gives one.
    pub etags: BTreeMap<u32, String>,
    /// Why our manifest, though there, was set aside (it no longer describes the chunks).
    pub stale: Option<String>,
}

impl Listed {
    /// Whether the volume has any object of ours or Bareos'.
    pub fn exists(&self) -> bool {
        !self.chunks.is_empty() || self.manifest
    }
}

/// Sorts the objects under `dir` (ending in `/`) into chunks, manifest, marker and others.
pub fn parse_listing(dir: &str, objects: &[ObjectMeta]) -> Listed {
    let mut l = Listed::default();
    for o in objects {
        let Some(name) = o.key.strip_prefix(dir) else {
            continue;
        };
        match chunk_index(name) {
            Some(n) => {
                l.chunks.insert(n, o.size);
                if let Some(e) = &o.etag {
                    l.etags.insert(n, e.clone());
                }
            }
            None if name == MANIFEST_NAME => l.manifest = true,
            None if name.is_empty() => l.marker = true,
            None => l.others.push(name.to_string()),
        }
    }
    l
}

/// With client-side encryption the listing shows each chunk's stored (ciphertext) size; the
/// decisions here need plaintext sizes. Our manifest gives them for the chunks whose stored
/// size can hold what it records; the rest (no manifest: a put that did not finish; chunks
/// past it or of another size) must be opened: their numbers are returned, in order.
pub fn plain_sizes(listed: &mut Listed, manifest: Option<&Manifest>) -> Vec<u32> {
    let mut open = Vec::new();
    for (&n, size) in listed.chunks.iter_mut() {
        match manifest.and_then(|m| m.chunks.get(n as usize)) {
            Some(rec) if crate::crypt::could_hold(*size, rec.size) => *size = rec.size,
            _ => open.push(n),
        }
    }
    open
}

/// The chunks of our manifest whose identity the listing cannot show (the record has no ETag,
/// or the listing gives none) and whose CRC32C must come from a HEAD.
pub fn needs_head(listed: &Listed, m: &Manifest) -> Vec<u32> {
    (0..m.count)
        .filter(|i| {
            let rec = &m.chunks[*i as usize];
            listed.chunks.get(i) == Some(&rec.size)
                && (rec.etag.is_none() || !listed.etags.contains_key(i))
        })
        .collect()
}

/// Whether our manifest still describes the volume's chunks, object by object: the same
/// chunks, the same sizes, and the same objects (the ETag it recorded, else the store's CRC32C
/// from `heads` equal to its own). Anything else means another program changed the volume
/// since (Bareos appends by rewriting the last chunk, relabels by writing `0000` anew); the
/// error says where, in one line. Chunks that are merely missing do not count: that is damage
/// the manifest lets the reader see.
pub fn manifest_matches(
    listed: &Listed,
    m: &Manifest,
    heads: &BTreeMap<u32, Option<u32>>,
) -> Result<(), String> {
    for (i, rec) in (0..m.count).zip(&m.chunks) {
        let name = chunk_name(i);
        // A chunk merely gone is damage, not a change: the manifest stays, so the reader is
        // told the volume is truncated.
        let Some(&size) = listed.chunks.get(&i) else {
            continue;
        };
        if size != rec.size {
            return Err(format!(
                "chunk {name} holds {size} bytes, the manifest says {}",
                rec.size
            ));
        }
        let same = match (&rec.etag, listed.etags.get(&i)) {
            (Some(want), Some(got)) => want == got,
            _ => rec.crc().is_some() && heads.get(&i).copied().flatten() == rec.crc(),
        };
        if !same {
            return Err(format!("chunk {name} was rewritten"));
        }
    }
    match listed.chunks.range(m.count..).next() {
        Some((&n, _)) => Err(format!("chunk {} was added", chunk_name(n))),
        None => Ok(()),
    }
}

/// The chunks a reader uses and how each is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readable {
    /// The chunk size.
    pub chunk_size: u64,
    /// Size and expected CRC32C (from our manifest) of chunks `0000`… in order.
    pub chunks: Vec<(u64, Option<u32>)>,
    /// Bytes readable.
    pub total: u64,
    /// What the reader should be told (a truncation it allowed, a volume grown past our
    /// manifest).
    pub warnings: Vec<String>,
}

/// Decides which chunks of a volume can be read, from the listing's chunk sizes and our
/// manifest when there is one. Errors are one line, without the volume's name.
pub fn readable(
    listed: &BTreeMap<u32, u64>,
    manifest: Option<&Manifest>,
    allow_truncated: bool,
) -> Result<Readable, String> {
    let run = (0..MAX_CHUNKS)
        .take_while(|n| listed.contains_key(n))
        .count() as u32;
    let mut warnings = Vec::new();
    let mut truncated = None;
    if let Some((&later, _)) = listed.range(run..).next() {
        let n = listed.range(run..).count();
        truncated = Some(format!(
            "chunk {} is missing but {n} later chunk(s) exist (first {})",
            chunk_name(run),
            chunk_name(later)
        ));
    } else if let Some(m) = manifest.filter(|m| run < m.count) {
        truncated = Some(format!(
            "our manifest lists {} chunks but only {run} are in the store",
            m.count
        ));
    }
    if let Some(t) = truncated {
        if !allow_truncated {
            return Err(format!(
                "{t}: the volume is truncated (--allow-truncated reads the first {run} chunks)"
            ));
        }
        warnings.push(format!("{t}; reading the first {run} chunks only"));
    }
    let chunk_size = manifest
        .map(|m| m.chunk_size)
        .or_else(|| listed.get(&0).copied())
        .unwrap_or(0);
    let mut chunks = Vec::with_capacity(run as usize);
    for i in 0..run {
        let size = listed[&i];
        if size > chunk_size || (i + 1 < run && size != chunk_size) {
            return Err(format!(
                "chunk {} holds {size} bytes where the chunk size is {chunk_size}: not a volume of that chunk size, or damaged",
                chunk_name(i)
            ));
        }
        chunks.push((size, expected_crc(manifest, i, size, &mut warnings)?));
    }
    let total = chunks.iter().map(|c| c.0).sum();
    Ok(Readable {
        chunk_size,
        chunks,
        total,
        warnings,
    })
}

/// The CRC32C our manifest gives chunk `i` of `size` bytes. A volume may have grown after our
/// manifest was written (Bareos appended: its last chunk rewritten longer, new chunks after
/// it); those chunks are checked by what the store knows only. Any other disagreement is an
/// error.
fn expected_crc(
    manifest: Option<&Manifest>,
    i: u32,
    size: u64,
    warnings: &mut Vec<String>,
) -> Result<Option<u32>, String> {
    let Some(m) = manifest else { return Ok(None) };
    let mut grown = || {
        let w = format!(
            "the volume has grown since our manifest was written (appended by Bareos?): chunks from {} on are checked against the store's checksums only",
            chunk_name(m.count.saturating_sub(1).min(i))
        );
        if !warnings
            .iter()
            .any(|x| x.starts_with("the volume has grown"))
        {
            warnings.push(w);
        }
    };
    match m.chunks.get(i as usize) {
        Some(rec) if rec.size == size => Ok(rec.crc()),
        Some(rec) if i + 1 == m.count && size > rec.size => {
            grown();
            Ok(None)
        }
        Some(rec) => Err(format!(
            "chunk {} holds {size} bytes, our manifest says {}",
            chunk_name(i),
            rec.size
        )),
        None => {
            grown();
            Ok(None)
        }
    }
}

/// The pieces of chunks holding bytes `[offset, offset + len)` of a volume whose chunks have
/// `sizes`: (chunk number, range inside the chunk), in order.
pub fn pieces(sizes: &[u64], offset: u64, len: u64) -> Vec<(u32, ByteRange)> {
    let end = offset.saturating_add(len);
    let mut out = Vec::new();
    let mut start = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        let (a, b) = (offset.max(start), end.min(start + size));
        if a < b {
            out.push((
                i as u32,
                ByteRange {
                    start: a - start,
                    end: b - start,
                },
            ));
        }
        start += size;
        if start >= end {
            break;
        }
    }
    out
}

/// The smallest chunk size (a whole number of MiB, at least the minimum) that holds `total`
/// bytes in 10 000 chunks.
pub fn chunk_size_fitting(total: u64) -> u64 {
    let mib = 1u64 << 20;
    total
        .div_ceil(u64::from(MAX_CHUNKS))
        .div_ceil(mib)
        .saturating_mul(mib)
        .max(MIN_CHUNK_SIZE)
}

/// Refuses a volume end past chunk 9999, naming a chunk size that fits.
pub fn check_fits(end: u64, chunk_size: u64) -> Result<(), String> {
    if end.div_ceil(chunk_size) > u64::from(MAX_CHUNKS) {
        return Err(format!(
            "{end} bytes need more than {MAX_CHUNKS} chunks of {chunk_size} bytes (droplet names chunks 0000 to 9999): use --chunk-size {}MiB or more",
            chunk_size_fitting(end) >> 20
        ));
    }
    Ok(())
}

/// Where a put writing its data at volume offset `base` starts: the first chunk it writes and
/// how many bytes of that chunk's current content stay in front of the new data.
pub fn start_of(base: u64, chunk_size: u64) -> (u32, u64) {
    ((base / chunk_size) as u32, base % chunk_size)
}

/// The chunk size of an existing volume (our manifest's, else the size of `0000` when a later
/// chunk proves it is whole), checked against `--chunk-size` when given; `default` for an
/// empty volume. One chunk without a manifest does not tell: then `--chunk-size` is required.
pub fn existing_chunk_size(
    listed: &BTreeMap<u32, u64>,
    manifest: Option<&Manifest>,
    given: Option<u64>,
    default: u64,
) -> Result<u64, String> {
    let known = match (manifest, listed.get(&0)) {
        (Some(m), _) => Some((m.chunk_size, "its manifest")),
        (None, Some(&first)) if listed.len() >= 2 => Some((first, "chunk 0000")),
        (None, Some(&first)) => {
            return match given {
                Some(g) if g >= first => Ok(g),
                Some(g) => Err(format!(
                    "chunk 0000 holds {first} bytes, more than --chunk-size {g}"
                )),
                None => Err(format!(
                    "one chunk of {first} bytes and no manifest do not tell the chunk size: give --chunk-size (the device's chunksize)"
                )),
            };
        }
        (None, None) => None,
    };
    match (known, given) {
        (Some((cs, from)), Some(g)) if g != cs => Err(format!(
            "the volume has chunks of {cs} bytes ({from}); --chunk-size {g} disagrees"
        )),
        (Some((cs, _)), _) => Ok(cs),
        (None, g) => Ok(g.unwrap_or(default)),
    }
}

/// Where a put's data goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// `put` or `append` (what the state file and `status` call it).
    pub operation: &'static str,
    /// The volume offset of the first byte of the data.
    pub base: u64,
    /// Chunk size.
    pub chunk_size: u64,
}

/// Why a put does not start: a command line to fix (exit 2), or a volume that must not be
/// written this way (exit 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The command line disagrees with the volume.
    Usage(String),
    /// The volume's state forbids it.
    Refused(String),
}

/// Decides where a put starts, from its mode, `--chunk-size`, the run an earlier put left
/// unfinished on this host (its `Start`), the listing and our manifest. Refuses to overwrite an
/// existing volume without `--resume`, and to append to one that is damaged or half written.
pub fn put_start(
    mode: PutMode,
    given: Option<u64>,
    interrupted: Option<Start>,
    listed: &Listed,
    manifest: Option<&Manifest>,
) -> Result<Start, Refusal> {
    let existing = || {
        existing_chunk_size(&listed.chunks, manifest, given, DEFAULT_CHUNK_SIZE)
            .map_err(Refusal::Usage)
    };
    let start = |operation, base, chunk_size| Start {
        operation,
        base,
        chunk_size,
    };
    match (mode, interrupted) {
        (PutMode::New, _) if listed.exists() => Err(Refusal::Refused(format!(
            "already exists ({} chunks, {}): --resume completes an interrupted put of the same data, --append adds to it, volume rm removes it",
            listed.chunks.len(),
            if listed.manifest {
                "complete"
            } else {
                "no manifest"
            }
        ))),
        (PutMode::New, _) => Ok(start("put", 0, given.unwrap_or(DEFAULT_CHUNK_SIZE))),
        (PutMode::Resume, Some(p)) if given.is_some_and(|g| g != p.chunk_size) => {
            Err(Refusal::Usage(format!(
                "the interrupted {} used chunks of {} bytes; --chunk-size disagrees",
                p.operation, p.chunk_size
            )))
        }
        (PutMode::Resume, Some(p)) => Ok(p),
        (PutMode::Resume, None) => Ok(start("put", 0, existing()?)),
        (PutMode::Append, Some(p)) => Err(Refusal::Refused(format!(
            "an earlier {} did not finish (see volume status): complete it with volume put --resume first",
            p.operation
        ))),
        (PutMode::Append, None) => {
            let cs = existing()?;
            let r = readable(&listed.chunks, manifest, false)
                .map_err(|e| Refusal::Refused(format!("cannot append: {e}")))?;
            Ok(start("append", r.total, cs))
        }
    }
}

/// Checks, before anything is sent, that data of `len` bytes put at `start` fits in 10 000
/// chunks and that no stored chunk lies past its end (that would be another volume's data).
pub fn check_end(start: &Start, len: u64, listed: &Listed) -> Result<(), Refusal> {
    let end = start.base + len;
    check_fits(end, start.chunk_size).map_err(Refusal::Usage)?;
    let end_chunks = end.div_ceil(start.chunk_size) as u32;
    match listed.chunks.range(end_chunks..).next() {
        Some((&n, _)) => Err(Refusal::Refused(past_end(n, end_chunks))),
        None => Ok(()),
    }
}

/// The refusal of a chunk past the end of the data.
pub fn past_end(n: u32, end_chunks: u32) -> String {
    format!(
        "chunk {} lies past the end of this data ({end_chunks} chunks): this is not the volume of this data; volume rm removes it",
        chunk_name(n)
    )
}

/// How a stored chunk compares with the bytes we would send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Same size and same checksum.
    Same,
    /// Another size or another checksum.
    Differs,
    /// Same size, but the store knows no checksum we can compare (neither a CRC32C nor an MD5
    /// ETag).
    Unknown,
}

/// Compares a stored chunk (its HEAD) with `body`: size, then the store's full-object CRC32C,
/// else an MD5 ETag.
pub fn compare(meta: &ObjectMeta, body: &[u8], crc: u32) -> Stored {
    if meta.size != body.len() as u64 {
        return Stored::Differs;
    }
    if let Some(v) = meta.full_crc32c() {
        return if v == crc {
            Stored::Same
        } else {
            Stored::Differs
        };
    }
    match meta.etag.as_deref() {
        Some(e) if e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit()) => {
            if e.eq_ignore_ascii_case(&checksum::hex(&checksum::md5(body))) {
                Stored::Same
            } else {
                Stored::Differs
            }
        }
        _ => Stored::Unknown,
    }
}

/// Checks a sealed chunk just stored (its HEAD) against the `len` plaintext bytes sent: the
/// store's checksums cover the ciphertext, which the PUT already verified in transit, so only
/// the size can be checked here: [`Stored::Unknown`] when it can hold them.
pub fn compare_sealed(meta: &ObjectMeta, len: u64) -> Stored {
    if crate::crypt::could_hold(meta.size, len) {
        Stored::Unknown
    } else {
        Stored::Differs
    }
}

/// The manifest entries of chunks `0..first` that a put keeps as they are: from the earlier
/// manifest where it agrees with the listing, else what the store said (`heads`).
pub fn kept_records(
    first: u32,
    listed: &BTreeMap<u32, u64>,
    manifest: Option<&Manifest>,
    heads: &BTreeMap<u32, Option<u32>>,
) -> Result<Vec<ChunkRecord>, String> {
    (0..first)
        .map(|i| {
            let size = *listed
                .get(&i)
                .ok_or_else(|| format!("chunk {} is missing", chunk_name(i)))?;
            let from_manifest = manifest
                .and_then(|m| m.chunks.get(i as usize))
                .filter(|r| r.size == size)
                .cloned();
            Ok(from_manifest.unwrap_or_else(|| ChunkRecord {
                size,
                crc32c: heads.get(&i).copied().flatten().map(|c| format!("{c:08x}")),
                etag: None,
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests;
