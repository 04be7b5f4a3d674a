//! Bareos droplet-compatible chunked volumes (`volume put|get|ls|status|rm`).
//!
//! A volume is the objects `<prefix>/<VOL>/0000` … `9999`: every chunk holds exactly
//! `chunk_size` bytes but the last, which may be shorter, and there is no end marker, so a
//! volume written here is read by Bareos' droplet and dplcompat devices and the other way round.
//! Beside the chunks we keep `<VOL>/barmans3.volume.json` (chunk size, total, a CRC32C per
//! chunk), written last; Bareos ignores it. Where Bareos would drop a chunk after its retries or
//! silently end a volume at a gap, we fail loudly: a chunk is never given up, a `put` that ran
//! out of retries exits 1 keeping what it stored for `--resume`, and a `get` that meets a gap
//! refuses unless `--allow-truncated`.
//!
//! [`layout`] holds the decisions (what a listing means, what a put must send, which bytes a
//! range needs) as pure functions; [`put`], [`get`] and [`admin`] do the I/O around them;
//! [`status`] keeps a running put's state file and prints it as Bareos' `status storage` does.
//!
//! With client-side encryption every chunk and the manifest are age objects. The manifest keeps
//! plaintext sizes and CRC32Cs; [`survey`] turns listed (ciphertext) sizes into plaintext ones,
//! so every decision in [`layout`] reads plaintext sizes whether the volume is encrypted or not.

pub mod admin;
pub mod get;
pub mod layout;
pub mod put;
pub mod status;

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{ListRequest, join_key};
use crate::transfer::{Expect, Transfer};
use layout::Listed;

/// Droplet's default chunk size, also its minimum (smaller values are raised silently there,
/// refused here).
pub const DEFAULT_CHUNK_SIZE: u64 = 10 << 20;
/// The smallest chunk size accepted without the hidden test override.
pub const MIN_CHUNK_SIZE: u64 = DEFAULT_CHUNK_SIZE;
/// The largest chunk: one PUT per chunk, and S3's single PUT stops at 5 GiB.
pub const MAX_CHUNK_SIZE: u64 = 5 << 30;
/// Chunk names have four digits: `0000` … `9999`.
pub const MAX_CHUNKS: u32 = 10_000;
/// Our record of a volume, beside its chunks.
pub const MANIFEST_NAME: &str = "barmans3.volume.json";

/// A volume name: what Bareos calls the volume, and the directory of its chunks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VolumeName(String);

impl VolumeName {
    /// Checks a name by Bareos' rule (`IsNameValid`): 1 to 127 characters of letters, digits,
    /// `: . - _ /` and space, not starting or ending with a space. Stricter than Bareos in one
    /// way: every `/`-separated segment must be a name (no empty, `.` or `..` segment), so the
    /// keys are the plain `<prefix>/<VOL>/<PART>` any S3 tool reads.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let chars_ok = !s.is_empty()
            && s.len() <= 127
            && !s.starts_with(' ')
            && !s.ends_with(' ')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.: /".contains(&b));
        let segments_ok = s.split('/').all(|seg| !matches!(seg, "" | "." | ".."));
        if chars_ok && segments_ok {
            Ok(VolumeName(s.to_string()))
        } else {
            Err(format!(
                "invalid volume name {s:?}: use 1 to 127 letters, digits, spaces and - _ . : / as Bareos names volumes (no leading or trailing space, no empty, . or .. between slashes)"
            ))
        }
    }

    /// The name as one file name (state and lock files): `/` written as `%2F`, which no
    /// volume name contains, so different names never share a file.
    pub fn file_stem(&self) -> String {
        self.0.replace('/', "%2F")
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a volume's objects live.
#[derive(Debug, Clone)]
pub struct Volume {
    /// The store and prefix, for messages and the state file (`s3://bucket/prefix`).
    pub location: String,
    /// The store's key prefix ("" for none).
    pub prefix: String,
    /// The volume.
    pub name: VolumeName,
    /// Whether to keep droplet's empty `<VOL>/` directory marker (S3 stores; a `file://` store
    /// has the directory itself).
    pub marker: bool,
}

impl Volume {
    /// The prefix of every object of the volume, ending in `/`.
    pub fn dir(&self) -> String {
        format!("{}/", join_key(&self.prefix, self.name.as_str()))
    }
    /// The key of chunk `n`.
    pub fn chunk_key(&self, n: u32) -> String {
        format!("{}{}", self.dir(), layout::chunk_name(n))
    }
    /// The key of our manifest.
    pub fn manifest_key(&self) -> String {
        format!("{}{MANIFEST_NAME}", self.dir())
    }
}

/// Our record of a complete volume (`barmans3.volume.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version (1).
    pub format: u32,
    /// The chunk size every chunk but the last has.
    pub chunk_size: u64,
    /// Bytes in the volume.
    pub total: u64,
    /// Number of chunks.
    pub count: u32,
    /// Every chunk, from `0000` on.
    pub chunks: Vec<ChunkRecord>,
}

/// One chunk in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRecord {
    /// Bytes.
    pub size: u64,
    /// CRC32C, 8 hex digits; `None` for a chunk we did not write and whose CRC32C the store
    /// does not know (appending to a volume Bareos made).
    pub crc32c: Option<String>,
    /// The chunk object's ETag when the manifest was written: a listing shows whether the
    /// object is still that one (another program rewrote it otherwise). Absent in manifests of
    /// earlier versions, whose chunks are compared by the store's CRC32C instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

impl ChunkRecord {
    /// A record of a chunk whose CRC32C is known.
    pub fn new(size: u64, crc: u32) -> Self {
        ChunkRecord {
            size,
            crc32c: Some(format!("{crc:08x}")),
            etag: None,
        }
    }
    /// The record with the object's ETag.
    pub fn with_etag(mut self, etag: Option<String>) -> Self {
        self.etag = etag;
        self
    }
    /// The CRC32C as a number.
    pub fn crc(&self) -> Option<u32> {
        self.crc32c
            .as_deref()
            .and_then(|c| u32::from_str_radix(c, 16).ok())
    }
}

impl Manifest {
    /// The manifest of chunks of `chunk_size`.
    pub fn new(chunk_size: u64, chunks: Vec<ChunkRecord>) -> Self {
        Manifest {
            format: 1,
            chunk_size,
            total: chunks.iter().map(|c| c.size).sum(),
            count: chunks.len() as u32,
            chunks,
        }
    }

    /// Parses a manifest and checks that it agrees with itself.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Self, String> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let sum: u64 = m.chunks.iter().map(|c| c.size).sum();
        if m.format != 1 || m.count as usize != m.chunks.len() || m.total != sum {
            return Err(format!(
                "format {}, {} chunks listed for a count of {}, {sum} bytes for a total of {}",
                m.format,
                m.chunks.len(),
                m.count,
                m.total
            ));
        }
        Ok(m)
    }
}

/// Lists a volume's objects and reads our manifest when it is there and still describes the
/// chunks (see [`layout::manifest_matches`]); with encryption on, chunk sizes are plaintext
/// sizes ([`plain_sizes`]). A manifest that no longer does (Bareos, through
/// its dplcompat program or another wrapper, rewrote, appended to or truncated the volume) is
/// set aside with a warning and `Listed::stale` saying why: the volume is then read as Bareos
/// sees it. A manifest that does not parse is an error: it is ours, so something damaged it.
pub async fn survey(t: &Transfer, vol: &Volume) -> Result<(Listed, Option<Manifest>)> {
    let req = ListRequest {
        prefix: vol.dir(),
        ..Default::default()
    };
    let mut listed = layout::parse_listing(&vol.dir(), &t.list_all(&req).await?);
    let manifest = match listed.manifest {
        true => Some(read_manifest(t, vol).await?),
        false => None,
    };
    // The stored sizes, kept in case the manifest the plaintext sizes come from turns out stale.
    let stored = t.encrypts().then(|| listed.chunks.clone());
    if t.encrypts() {
        plain_sizes(t, vol, &mut listed, manifest.as_ref()).await?;
    }
    let Some(m) = manifest else {
        return Ok((listed, None));
    };
    let heads = chunk_heads(t, vol, &mut listed, &m).await?;
    match layout::manifest_matches(&listed, &m, &heads) {
        Ok(()) => Ok((listed, Some(m))),
        Err(why) => {
            tracing::warn!(
                "volume {}: our manifest no longer describes it ({why}): reading its chunks as Bareos does",
                vol.name
            );
            if let Some(stored) = stored {
                // Those sizes came from a manifest that no longer describes the chunks: each
                // chunk's own header says what it holds.
                listed.chunks = stored;
                plain_sizes(t, vol, &mut listed, None).await?;
            }
            listed.stale = Some(why);
            Ok((listed, None))
        }
    }
}

/// What HEADs tell of the chunks whose identity the listing does not show
/// ([`layout::needs_head`]): the store's CRC32C of each. An encrypted chunk's CRC32C is its
/// ciphertext's, never the one our manifest records, so there the HEAD's ETag goes into the
/// listing instead (a file:// listing carries none) and identifies the chunk.
async fn chunk_heads(
    t: &Transfer,
    vol: &Volume,
    listed: &mut Listed,
    m: &Manifest,
) -> Result<std::collections::BTreeMap<u32, Option<u32>>> {
    let heads = crate::transfer::bounded(
        layout::needs_head(listed, m),
        t.config().concurrency.max(1),
        |i| {
            let (t, key) = (t.clone(), vol.chunk_key(i));
            async move {
                let meta = t.head_opt(&key).await?;
                let crc = meta
                    .as_ref()
                    .and_then(crate::store::ObjectMeta::full_crc32c);
                Ok((i, crc, meta.and_then(|m| m.etag)))
            }
        },
    )
    .await?;
    let mut crcs = std::collections::BTreeMap::new();
    for (i, crc, etag) in heads {
        match (t.encrypts(), etag) {
            (true, Some(e)) => {
                listed.etags.entry(i).or_insert(e);
            }
            (true, None) => {}
            (false, _) => {
                crcs.insert(i, crc);
            }
        }
    }
    Ok(crcs)
}

async fn read_manifest(t: &Transfer, vol: &Volume) -> Result<Manifest> {
    let mut buf = Vec::new();
    t.download_to(&vol.manifest_key(), &mut buf, Expect::default())
        .await?;
    Manifest::parse(&buf).map_err(|e| {
        Error::Failed(format!(
            "{}: damaged manifest ({e}); volume rm --force removes the volume",
            vol.manifest_key()
        ))
    })
}

/// Encryption on: the listing's chunk sizes made plaintext sizes ([`layout::plain_sizes`]),
/// from our manifest, else from each remaining chunk's header (a ranged GET of its first
/// bytes; the header is authenticated, and a chunk that is not encrypted keeps its size).
async fn plain_sizes(
    t: &Transfer,
    vol: &Volume,
    listed: &mut Listed,
    manifest: Option<&Manifest>,
) -> Result<()> {
    let open = layout::plain_sizes(listed, manifest);
    let stored: Vec<(u32, u64)> = open.iter().map(|n| (*n, listed.chunks[n])).collect();
    let sizes = crate::transfer::bounded(stored, t.config().concurrency.max(1), |(n, size)| {
        let (t, key) = (t.clone(), vol.chunk_key(n));
        async move {
            let meta = crate::store::ObjectMeta::listed(&key, size);
            Ok((n, t.sealed_size(&key, &meta).await?.unwrap_or(size)))
        }
    })
    .await?;
    listed.chunks.extend(sizes);
    Ok(())
}

/// Where `volume put` reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Standard input.
    Stdin,
    /// A local file.
    File(PathBuf),
}

/// Where `volume get` writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// Standard output.
    Stdout,
    /// A local file, written atomically.
    File(PathBuf),
}

/// How `volume put` treats what is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// A new volume: refuse if chunks exist.
    New,
    /// Complete an interrupted put (or append) of the same data: send only missing or
    /// different chunks.
    Resume,
    /// Add to the end of the volume (Bareos' append: the last chunk is rewritten).
    Append,
}

/// A validated `volume put`.
#[derive(Debug, Clone)]
pub struct PutRequest {
    /// The volume.
    pub name: VolumeName,
    /// What to upload.
    pub source: Source,
    /// `--chunk-size`, when given (else the volume's own, or the default).
    pub chunk_size: Option<u64>,
    /// New, resume or append.
    pub mode: PutMode,
}

/// A validated `volume get`.
#[derive(Debug, Clone)]
pub struct GetRequest {
    /// The volume.
    pub name: VolumeName,
    /// Where to write.
    pub dest: Sink,
    /// `--offset`.
    pub offset: u64,
    /// `--length` (to the end when `None`).
    pub length: Option<u64>,
    /// Return the readable prefix of a volume with a gap or missing chunks.
    pub allow_truncated: bool,
}

/// A validated `volume` command line.
#[derive(Debug, Clone)]
pub enum VolumeAction {
    /// `volume put`.
    Put(PutRequest),
    /// `volume get`.
    Get(GetRequest),
    /// `volume ls [VOL]`.
    Ls(Option<VolumeName>),
    /// `volume status [VOL]`.
    Status(Option<VolumeName>),
    /// `volume rm VOL [--force]`.
    Rm {
        /// The volume.
        name: VolumeName,
        /// Also without our manifest (a Bareos-made or unfinished volume).
        force: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_follow_bareos() {
        for ok in [
            "Full-0001",
            "vol_1.2:x",
            "A",
            "Vol 1",
            "pool/Full-1",
            ".x",
            "a b/c d",
        ] {
            assert!(VolumeName::parse(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(128);
        for bad in [
            "", "a;b", " a", "a ", "..", ".", "a/../b", "a//b", "/a", "a/", &long, "é", "a\tb",
        ] {
            assert!(VolumeName::parse(bad).is_err(), "{bad}");
        }
        let v = VolumeName::parse("pool/Full-1").expect("name");
        assert_eq!(v.file_stem(), "pool%2FFull-1");
    }

    #[test]
    fn keys_are_droplets() {
        let v = Volume {
            location: "s3://b/bareos".into(),
            prefix: "bareos".into(),
            name: VolumeName::parse("Full-0001").expect("name"),
            marker: true,
        };
        assert_eq!(v.dir(), "bareos/Full-0001/");
        assert_eq!(v.chunk_key(7), "bareos/Full-0001/0007");
        assert_eq!(v.manifest_key(), "bareos/Full-0001/barmans3.volume.json");
        let bare = Volume {
            prefix: String::new(),
            ..v
        };
        assert_eq!(bare.chunk_key(9999), "Full-0001/9999");
    }

    #[test]
    fn manifests_must_agree_with_themselves() {
        let m = Manifest::new(10, vec![ChunkRecord::new(10, 1), ChunkRecord::new(3, 2)]);
        let text = serde_json::to_vec(&m).expect("json");
        assert_eq!(Manifest::parse(&text).expect("parse"), m);
        let mut bad = m.clone();
        bad.total = 14;
        let text = serde_json::to_vec(&bad).expect("json");
        assert!(Manifest::parse(&text).is_err());
        assert_eq!(m.chunks[1].crc(), Some(2));
    }
}
