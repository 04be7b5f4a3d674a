//! Whether an object in the store holds the same bytes as a local file, at the lowest cost the
//! object's metadata allows: one HEAD and one read of the local file when the store keeps a
//! checksum we can recompute (a full CRC32C, a composite CRC32C over our recorded part layout,
//! an MD5 ETag), else a download verified against the local file's CRC32C. Size alone never
//! decides: two different 16 MiB WAL segments have the same size. An encrypted object is
//! opened and its plaintext compared, since its own checksums cover only the ciphertext.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::Transfer;
use super::download::{Check, Expect, decide};
use crate::checksum::{self, Md5State};
use crate::error::{Error, Result};
use crate::store::ByteRange;

/// What reading a local file once gave: its CRC32C, and what the object's check needs.
#[derive(Debug, Default)]
struct Digest {
    size: u64,
    crc32c: u32,
    part_crcs: Vec<u32>,
    md5: Option<[u8; 16]>,
    part_md5s: Vec<[u8; 16]>,
}

/// Reads `path` once, computing the CRC32C, and per part (for `parts`) CRC32C and, with
/// `md5`, MD5.
fn digest(path: &Path, parts: &[ByteRange], md5: bool) -> Result<Digest> {
    let mut f = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let mut d = Digest::default();
    let mut whole_md5 = md5.then(Md5State::default);
    let mut part_md5 = Md5State::default();
    let mut part_crc = 0u32;
    let mut part = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        let mut chunk = &buf[..n];
        d.crc32c = checksum::crc32c_append(d.crc32c, chunk);
        if let Some(m) = whole_md5.as_mut() {
            m.update(chunk);
        }
        // Cut the chunk at part boundaries.
        while !chunk.is_empty() && part < parts.len() {
            let left = (parts[part].end - d.size) as usize;
            let take = left.min(chunk.len());
            part_crc = checksum::crc32c_append(part_crc, &chunk[..take]);
            if md5 {
                part_md5.update(&chunk[..take]);
            }
            d.size += take as u64;
            chunk = &chunk[take..];
            if d.size == parts[part].end {
                d.part_crcs.push(std::mem::take(&mut part_crc));
                d.part_md5s.push(std::mem::take(&mut part_md5).finish());
                part += 1;
            }
        }
        d.size += chunk.len() as u64;
    }
    d.md5 = whole_md5.map(Md5State::finish);
    Ok(d)
}

impl Transfer {
    /// Whether the object at `key` holds exactly the bytes of the local file `path`: `Some`
    /// with the file's CRC32C when it does, `None` when it does not.
    pub async fn same_as_local(&self, key: &str, path: &Path) -> Result<Option<u32>> {
        self.same_as_local_etag(key, path).await.map(|(crc, _)| crc)
    }

    /// [`Transfer::same_as_local`], with the ETag of the object that was compared.
    pub async fn same_as_local_etag(
        &self,
        key: &str,
        path: &Path,
    ) -> Result<(Option<u32>, Option<String>)> {
        let meta = self.head(key).await?;
        let etag = meta.etag.clone();
        let crc = self.compare_meta(&meta, key, path).await?;
        Ok((crc, etag))
    }

    async fn compare_meta(
        &self,
        meta: &crate::store::ObjectMeta,
        key: &str,
        path: &Path,
    ) -> Result<Option<u32>> {
        let local_size = std::fs::metadata(path)
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
            .len();
        if meta.size != local_size {
            // A host that cannot open encrypted objects cannot tell: not the same.
            return match self.opens_sealed() {
                true => self.compare_sealed(meta, key, path, local_size).await,
                false => Ok(None),
            };
        }
        let check = decide(meta);
        let (parts, md5) = match &check {
            Check::Composite { parts, .. } => (parts.clone(), false),
            Check::CompositeMd5 { parts, .. } => (parts.clone(), true),
            Check::Md5 { .. } => (Vec::new(), true),
            _ => (Vec::new(), false),
        };
        let p = path.to_path_buf();
        let d = tokio::task::spawn_blocking(move || digest(&p, &parts, md5))
            .await
            .map_err(|e| Error::Failed(format!("read task failed: {e}")))??;
        if d.size != meta.size {
            return Ok(None);
        }
        let same = match &check {
            Check::Full(crc) => *crc == d.crc32c,
            Check::Composite { expected, .. } => {
                checksum::composite_crc32c(&d.part_crcs) == *expected
            }
            Check::Md5 { etag } => d.md5.is_some_and(|m| checksum::hex(&m) == *etag),
            Check::CompositeMd5 { etag, .. } => {
                let cat: Vec<u8> = d.part_md5s.iter().flatten().copied().collect();
                format!(
                    "{}-{}",
                    checksum::hex(&checksum::md5(&cat)),
                    d.part_md5s.len()
                ) == *etag
            }
            // Nothing to recompute (a checksum of another kind is only decided for a read of
            // the whole object): read the object and compare with the local CRC32C.
            Check::SizeOnly | Check::Stored { .. } => {
                let expect = Expect {
                    size: Some(d.size),
                    crc32c: Some(d.crc32c),
                };
                match self.download_to(key, &mut tokio::io::sink(), expect).await {
                    Ok(_) => true,
                    Err(Error::Checksum { .. }) => false,
                    Err(e) => return Err(e),
                }
            }
        };
        Ok(same.then_some(d.crc32c))
    }
}

impl Transfer {
    /// An object of another size than the file, with encryption on: when it is an age object
    /// whose plaintext has the file's size, it is read and opened, and its plaintext compared
    /// with the file's CRC32C (the stored checksums cover only ciphertext, and no plaintext
    /// checksum is kept in metadata). Errors opening it (no identity, altered) are the caller's.
    async fn compare_sealed(
        &self,
        meta: &crate::store::ObjectMeta,
        key: &str,
        path: &Path,
        local_size: u64,
    ) -> Result<Option<u32>> {
        let Some(sealed) = self.sniff(key, meta).await? else {
            return Ok(None);
        };
        if sealed.plain_len != local_size {
            return Ok(None);
        }
        let p = path.to_path_buf();
        let d = tokio::task::spawn_blocking(move || digest(&p, &[], false))
            .await
            .map_err(|e| Error::Failed(format!("read task failed: {e}")))??;
        let expect = Expect {
            size: Some(d.size),
            crc32c: Some(d.crc32c),
        };
        match self.download_to(key, &mut tokio::io::sink(), expect).await {
            Ok(_) => Ok(Some(d.crc32c)),
            Err(Error::Checksum { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_read_gives_every_digest() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&p, &data).expect("w");
        let parts = crate::transfer::plan::layout(data.len() as u64, 1 << 20, 0);
        let d = digest(&p, &parts, true).expect("digest");
        assert_eq!(d.size, data.len() as u64);
        assert_eq!(d.crc32c, checksum::crc32c(&data));
        assert_eq!(d.part_crcs.len(), 3);
        assert_eq!(d.part_crcs[2], checksum::crc32c(&data[2 << 20..]));
        assert_eq!(d.md5, Some(checksum::md5(&data)));
        assert_eq!(d.part_md5s[0], checksum::md5(&data[..1 << 20]));
    }
}
