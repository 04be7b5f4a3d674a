//! `volume ls` (the volumes under the prefix, or one volume's chunks) and `volume rm`.
//!
//! A directory under the prefix is a volume when it directly holds four-digit chunks or our
//! manifest; only direct children are listed, so a Barman archive sharing the prefix costs one
//! short listing, not a walk. `rm` deletes what makes the volume (manifest first, chunks, then
//! droplet's marker) and nothing else; a volume without our manifest (Bareos-made, or a put
//! that never finished) is deleted only with `--force`.

use std::path::Path;

use serde::Serialize;

use super::layout::{self, Listed, chunk_name};
use super::{Manifest, Volume, VolumeName, status, survey};
use crate::error::{Error, Result};
use crate::store::{ListRequest, join_key};
use crate::transfer::Transfer;

/// One volume in `volume ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeSummary {
    /// Volume name.
    pub volume: String,
    /// Chunks stored.
    pub chunks: usize,
    /// Bytes in them.
    pub bytes: u64,
    /// Whether our manifest is there.
    pub manifest: bool,
    /// `complete`, `no manifest`, or what is wrong.
    pub state: String,
}

/// One chunk in `volume ls VOL`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChunkLine {
    /// Chunk name (`0000`).
    pub chunk: String,
    /// Bytes.
    pub size: u64,
    /// CRC32C from our manifest.
    pub crc32c: Option<String>,
}

/// The state of a volume in a few words.
fn state_of(listed: &Listed, manifest: Option<&Manifest>) -> String {
    match (
        layout::readable(&listed.chunks, manifest, false),
        &listed.stale,
    ) {
        (Err(e), _) => format!("damaged: {e}"),
        (Ok(_), Some(why)) => {
            format!("manifest out of date ({why}; changed by Bareos?): chunks as Bareos sees them")
        }
        (Ok(r), None) if !r.warnings.is_empty() => r.warnings.join("; "),
        (Ok(_), None) if manifest.is_some() => "complete".into(),
        (Ok(_), None) => "no manifest (made by Bareos, or a put that did not finish)".into(),
    }
}

fn summary(name: &str, listed: &Listed, manifest: Option<&Manifest>) -> VolumeSummary {
    VolumeSummary {
        volume: name.to_string(),
        chunks: listed.chunks.len(),
        bytes: listed.chunks.values().sum(),
        manifest: listed.manifest && listed.stale.is_none(),
        state: state_of(listed, manifest),
    }
}

/// Every volume directly under `prefix`.
pub async fn list_volumes(
    t: &Transfer,
    location: &str,
    prefix: &str,
    marker: bool,
) -> Result<Vec<VolumeSummary>> {
    let top = if prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", prefix.trim_end_matches('/'))
    };
    let mut dirs = Vec::new();
    let req = ListRequest {
        prefix: top.clone(),
        delimiter: Some("/".into()),
        ..Default::default()
    };
    t.list_pages(&req, |_, prefixes| {
        dirs.extend(prefixes);
        true
    })
    .await?;
    let mut out = Vec::new();
    for d in dirs {
        let name = d[top.len()..].trim_end_matches('/').to_string();
        let Ok(name) = VolumeName::parse(&name) else {
            continue;
        };
        let vol = Volume {
            location: location.to_string(),
            prefix: prefix.to_string(),
            name,
            marker,
        };
        let children = ListRequest {
            prefix: vol.dir(),
            delimiter: Some("/".into()),
            ..Default::default()
        };
        let listed = layout::parse_listing(&vol.dir(), &t.list_all(&children).await?);
        if listed.exists() {
            let (listed, manifest) = survey(t, &vol).await?;
            out.push(summary(vol.name.as_str(), &listed, manifest.as_ref()));
        }
    }
    Ok(out)
}

/// One volume: its summary and chunks.
pub async fn list_chunks(t: &Transfer, vol: &Volume) -> Result<(VolumeSummary, Vec<ChunkLine>)> {
    let (listed, manifest) = survey(t, vol).await?;
    if !listed.exists() {
        return Err(not_found(vol));
    }
    let lines = listed
        .chunks
        .iter()
        .map(|(&n, &size)| ChunkLine {
            chunk: chunk_name(n),
            size,
            crc32c: manifest
                .as_ref()
                .and_then(|m| m.chunks.get(n as usize))
                .filter(|r| r.size == size)
                .and_then(|r| r.crc32c.clone()),
        })
        .collect();
    Ok((
        summary(vol.name.as_str(), &listed, manifest.as_ref()),
        lines,
    ))
}

fn not_found(vol: &Volume) -> Error {
    Error::Failed(format!("volume {} not found in {}", vol.name, vol.location))
}

/// What `rm` deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RmReport {
    /// Volume name.
    pub volume: String,
    /// Chunks deleted.
    pub chunks: usize,
    /// Other objects under the volume, left alone.
    pub others: Vec<String>,
}

/// Deletes a volume: our manifest, its chunks, droplet's marker; then this host's state file
/// of it.
pub async fn rm(t: &Transfer, vol: &Volume, force: bool, state_dir: &Path) -> Result<RmReport> {
    let (listed, _) = survey(t, vol).await?;
    if !listed.exists() {
        return Err(not_found(vol));
    }
    if (!listed.manifest || listed.stale.is_some()) && !force {
        return Err(Error::Usage(format!(
            "volume {} has no manifest of ours that describes it (made or changed by Bareos, or a put that did not finish): --force deletes its {} chunks",
            vol.name,
            listed.chunks.len()
        )));
    }
    if listed.manifest {
        t.delete_keys(&[vol.manifest_key()]).await?;
    }
    let keys: Vec<String> = listed.chunks.keys().map(|&n| vol.chunk_key(n)).collect();
    t.delete_keys(&keys).await?;
    if listed.marker {
        t.delete_keys(&[vol.dir()]).await?;
    }
    let path = status::state_path(state_dir, &vol.name);
    if status::load(&path)?.is_some_and(|s| s.store == vol.location) {
        std::fs::remove_file(&path)
            .map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
    }
    for o in &listed.others {
        tracing::warn!(
            "left {} in place: not a chunk of the volume",
            join_key(&vol.dir(), o)
        );
    }
    Ok(RmReport {
        volume: vol.name.to_string(),
        chunks: keys.len(),
        others: listed.others,
    })
}
