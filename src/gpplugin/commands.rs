//! The bodies of the plugin commands that touch the bucket, on the shared transfer engine.
//! Keys follow the reference plugin exactly (see [`object_key`]), so either plugin restores
//! what the other wrote.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::config::{Direction, PluginConfig};
use crate::error::{Error, Result};
use crate::store::{ByteRange, ListRequest};
use crate::transfer::{Cancel, EngineBuilder, Expect, Transfer, bounded};
use crate::units::human_bytes;

/// `<folder>/` + the last four `/`-separated components of `path` (for gpbackup paths:
/// `backups/<YYYYMMDD>/<timestamp>/<file>`). Empty components are skipped; a path with fewer
/// than four, or with `.`/`..` among them, is refused.
pub fn object_key(folder: &str, path: &str) -> Result<String> {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if parts.len() < 4 {
        return Err(Error::Usage(format!(
            "{path:?} has fewer than 4 path components; expected .../backups/<YYYYMMDD>/<timestamp>/<file>"
        )));
    }
    let last = &parts[parts.len() - 4..];
    if last.iter().any(|c| matches!(*c, "." | "..")) {
        return Err(Error::Usage(format!(
            "{path:?}: '.' and '..' are not allowed in the last 4 path components"
        )));
    }
    Ok(format!("{folder}/{}", last.join("/")))
}

/// Checks a gpbackup timestamp: exactly 14 ASCII digits (format only, like the reference).
pub fn check_timestamp(ts: &str) -> Result<()> {
    if ts.len() == 14 && ts.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "delete_backup: invalid timestamp {ts:?}: expected 14 digits, YYYYMMDDHHMMSS"
        )))
    }
}

/// Parses an offsets file: `N s1 e1 s2 e2 ...` with N [start, end) pairs.
pub fn parse_offsets(text: &str) -> Result<Vec<ByteRange>> {
    let bad =
        |why: &str| Error::Usage(format!("offsets file: {why}; expected `N s1 e1 ... sN eN`"));
    let mut nums = text.split_whitespace().map(|t| {
        t.parse::<u64>()
            .map_err(|_| bad(&format!("{t:?} is not a byte offset")))
    });
    let n = nums.next().ok_or_else(|| bad("empty"))??;
    let values = nums.collect::<Result<Vec<u64>>>()?;
    if values.len() as u64 != n.saturating_mul(2) {
        return Err(bad(&format!(
            "says {n} ranges but holds {} numbers",
            values.len()
        )));
    }
    values
        .chunks(2)
        .map(|p| {
            if p[0] > p[1] {
                Err(bad(&format!(
                    "range {}..{} ends before it starts",
                    p[0], p[1]
                )))
            } else {
                Ok(ByteRange {
                    start: p[0],
                    end: p[1],
                })
            }
        })
        .collect()
}

/// One plugin invocation's view of the bucket.
#[derive(Debug)]
pub struct Plugin {
    cfg: PluginConfig,
    cancel: Arc<Cancel>,
}

impl Plugin {
    /// Wraps a validated config.
    pub fn new(cfg: PluginConfig, cancel: Arc<Cancel>) -> Self {
        Plugin { cfg, cancel }
    }

    async fn engine(&self, d: Direction) -> Result<Transfer> {
        let (location, s3) = self.cfg.store_settings();
        EngineBuilder::new(self.cfg.transfer_config(d))
            .cancel(self.cancel.clone())
            .encryption(self.cfg.age.clone())
            .open(&location, &s3)
            .await
    }

    fn key(&self, path: &str) -> Result<String> {
        object_key(&self.cfg.folder, path)
    }

    /// `setup_plugin_for_backup` on the coordinator or a segment host: proves credentials and
    /// bucket with an empty report object (only if no report exists yet; a real one is kept).
    pub async fn setup_backup(&self, local_backup_dir: &str) -> Result<()> {
        let dir = local_backup_dir.trim_end_matches('/');
        let ts = dir.rsplit('/').next().unwrap_or_default();
        let key = self.key(&format!("{dir}/gpbackup_{ts}_report"))?;
        let t = self.engine(self.cfg.backup).await?;
        if t.head_opt(&key).await?.is_none() {
            t.put_bytes(&key, bytes::Bytes::new(), Default::default())
                .await?;
        }
        tracing::info!("setup: {} is writable ({key})", self.cfg.bucket);
        Ok(())
    }

    /// `setup_plugin_for_restore`: one cheap listing, so bad credentials fail before gprestore
    /// starts the data phase.
    pub async fn setup_restore(&self) -> Result<()> {
        let t = self.engine(self.cfg.restore).await?;
        let req = ListRequest {
            prefix: format!("{}/", self.cfg.folder),
            max_keys: Some(1),
            ..Default::default()
        };
        t.list_pages(&req, |_, _| false).await?;
        tracing::info!("setup: {} is readable", self.cfg.bucket);
        Ok(())
    }

    /// `backup_file`: uploads a local file (kept in place).
    pub async fn backup_file(&self, path: &str) -> Result<()> {
        let key = self.key(path)?;
        let t = self.engine(self.cfg.backup).await?;
        let started = std::time::Instant::now();
        let up = t.upload_file(Path::new(path), &key, None).await?;
        tracing::info!(
            "Uploaded {} bytes for {path} in {:.1?}",
            up.size,
            started.elapsed()
        );
        Ok(())
    }

    /// `restore_file`: downloads to a temp file beside `path` and renames it into place; on
    /// failure `path` is left as it was (the reference deletes it).
    pub async fn restore_file(&self, path: &str) -> Result<()> {
        let key = self.key(path)?;
        let t = self.engine(self.cfg.restore).await?;
        let started = std::time::Instant::now();
        let d = t
            .download_file(&key, Path::new(path), Expect::default())
            .await?;
        tracing::info!(
            "Downloaded {} bytes for {path} in {:.1?}",
            d.size,
            started.elapsed()
        );
        Ok(())
    }

    /// `backup_data`: uploads stdin until EOF (an empty stream is a 0-byte object).
    pub async fn backup_data(&self, filekey: &str) -> Result<()> {
        let key = self.key(filekey)?;
        let t = self.engine(self.cfg.backup).await?;
        let up = t.upload_stream(tokio::io::stdin(), &key).await?;
        tracing::debug!("Uploaded {} bytes to {key} in {} parts", up.size, up.parts);
        Ok(())
    }

    /// `restore_data`: writes the object's bytes to `out` (the plugin's stdout), in order.
    pub async fn restore_data<W>(&self, filekey: &str, out: &mut W) -> Result<()>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let key = self.key(filekey)?;
        let t = self.engine(self.cfg.restore).await?;
        let d = t.download_to(&key, out, Expect::default()).await?;
        out.flush()
            .await
            .map_err(|e| Error::io("write stdout", e))?;
        tracing::debug!("Downloaded {} bytes from {key}", d.size);
        Ok(())
    }

    /// `restore_data_subset`: writes the ranges listed in the offsets file to `out` (the
    /// plugin's stdout).
    pub async fn restore_data_subset<W>(
        &self,
        filekey: &str,
        offsets: &str,
        out: &mut W,
    ) -> Result<()>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let key = self.key(filekey)?;
        let text = std::fs::read_to_string(offsets)
            .map_err(|e| Error::io(format!("read offsets file {offsets}"), e))?;
        let ranges = parse_offsets(&text)?;
        let t = self.engine(self.cfg.restore).await?;
        let n = t.download_ranges(&key, &ranges, out).await?;
        out.flush()
            .await
            .map_err(|e| Error::io("write stdout", e))?;
        tracing::debug!("Downloaded {n} bytes in {} ranges from {key}", ranges.len());
        Ok(())
    }

    /// `delete_backup`: deletes every object of one backup timestamp (zero objects is success).
    pub async fn delete_backup(&self, ts: &str) -> Result<()> {
        check_timestamp(ts)?;
        let prefix = format!("{}/backups/{}/{ts}/", self.cfg.folder, &ts[..8]);
        let n = self.delete_prefix(&prefix).await?;
        tracing::info!("Deleted {n} objects under {prefix}");
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<usize> {
        self.engine(self.cfg.backup)
            .await?
            .delete_prefix(prefix)
            .await
    }

    /// `list_directory`: every object under the prefix (default: the folder), all pages.
    pub async fn list_directory(&self, prefix: Option<&str>, out: &mut dyn Write) -> Result<()> {
        let prefix = match prefix {
            Some(p) => p.trim_start_matches('/').to_string(),
            None => format!("{}/", self.cfg.folder),
        };
        let t = self.engine(self.cfg.restore).await?;
        let req = ListRequest {
            prefix,
            ..Default::default()
        };
        let objs = t.list_all(&req).await?;
        let width = objs.iter().map(|o| o.key.len()).max().unwrap_or(0).max(4);
        let mut text = format!("{:<width$}  SIZE(bytes)\n", "NAME");
        for o in objs.iter().filter(|o| !o.key.ends_with('/')) {
            text.push_str(&format!("{:<width$}  {}\n", o.key, o.size));
        }
        out.write_all(text.as_bytes())
            .map_err(|e| Error::io("write stdout", e))
    }

    /// `delete_directory`: deletes everything under a prefix, which must lie inside `folder`
    /// (the reference would wipe the whole bucket on an empty prefix).
    pub async fn delete_directory(&self, prefix: &str) -> Result<()> {
        let p = crate::store::normalize_prefix(prefix);
        let folder = &self.cfg.folder;
        if !(p == *folder || p.starts_with(&format!("{folder}/"))) {
            return Err(Error::Usage(format!(
                "delete_directory: prefix {prefix:?} is outside folder {folder:?}; refusing to delete"
            )));
        }
        let n = self.delete_prefix(&format!("{p}/")).await?;
        tracing::info!("Deleted {n} objects under {p}/");
        Ok(())
    }

    /// `backup_directory[_parallel]`: uploads every regular file under `dir` with the file's
    /// own path as its key (symlinks are not followed).
    pub async fn backup_directory(&self, dir: &str, workers: usize) -> Result<()> {
        let t = self.engine(self.cfg.backup).await?;
        let mut files = Vec::new();
        for entry in walkdir::WalkDir::new(dir).follow_links(false) {
            let entry = entry
                .map_err(|e| Error::Failed(format!("backup_directory: cannot walk {dir}: {e}")))?;
            if entry.file_type().is_file() {
                files.push(entry.into_path());
            }
        }
        let jobs = files.into_iter().map(|path| {
            let key = crate::store::normalize_prefix(&path.to_string_lossy());
            (path, key)
        });
        bounded(jobs, workers, move |(path, key)| {
            let t = t.clone();
            async move {
                let up = t.upload_file(&path, &key, None).await?;
                tracing::info!("Uploaded {} ({})", key, human_bytes(up.size));
                Ok(())
            }
        })
        .await
        .map(drop)
    }

    /// `restore_directory[_parallel]`: downloads every object under `prefix` into the local
    /// directory `prefix`, flattened to base names (as the reference does); two objects with
    /// one base name, or a base name of `.`/`..`, are refused before anything is written.
    pub async fn restore_directory(&self, prefix: &str, workers: usize) -> Result<()> {
        let t = self.engine(self.cfg.restore).await?;
        let req = ListRequest {
            prefix: prefix.trim_start_matches('/').to_string(),
            ..Default::default()
        };
        let objs = t.list_all(&req).await?;
        let mut seen = std::collections::BTreeMap::new();
        for o in objs.iter().filter(|o| !o.key.ends_with('/')) {
            let base = o.key.rsplit('/').next().unwrap_or_default();
            if matches!(base, "" | "." | "..") {
                return Err(Error::Failed(format!(
                    "restore_directory: refusing key {:?}",
                    o.key
                )));
            }
            if let Some(other) = seen.insert(base.to_string(), (o.key.clone(), o.size)) {
                return Err(Error::Failed(format!(
                    "restore_directory: {:?} and {:?} would both land in {base}",
                    other.0, o.key
                )));
            }
        }
        std::fs::create_dir_all(prefix)
            .map_err(|e| Error::io(format!("create directory {prefix}"), e))?;
        let dest = PathBuf::from(prefix);
        bounded(seen, workers, move |(base, (key, size))| {
            let (t, path) = (t.clone(), dest.join(base));
            async move {
                let expect = Expect {
                    size: Some(size),
                    crc32c: None,
                };
                t.download_file(&key, &path, expect).await?;
                tracing::info!("Downloaded {key} to {}", path.display());
                Ok(())
            }
        })
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_take_the_last_four_components() {
        assert_eq!(
            object_key(
                "nightly",
                "/data/gpseg3/backups/20240101/20240101120000/gpbackup_3_20240101120000_16384.gz"
            )
            .expect("key"),
            "nightly/backups/20240101/20240101120000/gpbackup_3_20240101120000_16384.gz"
        );
        assert_eq!(object_key("f", "a/b/c/d").expect("relative"), "f/a/b/c/d");
        assert_eq!(
            object_key("f", "/x//a/b/c/d").expect("doubled"),
            "f/a/b/c/d"
        );
        assert!(object_key("f", "/a/b/c").is_err());
        assert!(object_key("f", "/x/a/../c/d").is_err());
    }

    #[test]
    fn timestamps_are_fourteen_digits() {
        assert!(check_timestamp("20240101120000").is_ok());
        assert!(check_timestamp("99998900123456").is_ok());
        for bad in [
            "",
            "badformat",
            "2024010112000",
            "202401011200000",
            "2024010112000a",
        ] {
            assert!(check_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn offsets_files_parse_strictly() {
        let r = parse_offsets("2 3 10 20 25\n").expect("valid");
        assert_eq!(
            r,
            vec![
                ByteRange { start: 3, end: 10 },
                ByteRange { start: 20, end: 25 }
            ]
        );
        assert_eq!(parse_offsets("0").expect("none"), vec![]);
        for bad in ["", "1 3", "1 5 3", "2 1 2", "x", "1 -1 4"] {
            assert!(parse_offsets(bad).is_err(), "{bad:?}");
        }
    }
}
