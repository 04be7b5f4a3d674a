//! The sync record: what this host last sent for each file of one sync (the file's size and
//! modification time, the object's ETag), so that a rerun decides unchanged files from the
//! bucket listing alone instead of a HEAD per file ([`super::decide::by_record`]).
//!
//! It is a cache, never an authority: a file is skipped only when its stamp and the listed
//! ETag both still match, a missing or unreadable record (or one of another sync) only costs
//! HEADs, and it is replaced whole through the atomic helper once a run's uploads are done, so
//! a crash leaves the previous record, whose rows no longer match what changed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::decide::Sent;
use crate::error::{Error, Result};

/// Format version of the file.
const VERSION: u32 = 1;

/// The record of one sync (store, bucket and key prefix).
#[derive(Debug, Default)]
pub struct Record {
    /// Where it lives.
    path: PathBuf,
    /// Which sync it is for: a record of another one is not used.
    scope: String,
    /// By path relative to SRC_DIR.
    pub files: HashMap<String, Sent>,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    scope: String,
    files: HashMap<String, Sent>,
}

impl Record {
    /// The record at `path` for `scope`; empty when there is none or it cannot be used.
    pub fn load(path: &Path, scope: &str) -> Record {
        let mut r = Record {
            path: path.to_path_buf(),
            scope: scope.to_string(),
            files: HashMap::new(),
        };
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return r,
            Err(e) => {
                tracing::warn!("sync record {}: {e}; comparing by HEAD", path.display());
                return r;
            }
        };
        match serde_json::from_slice::<OnDisk>(&text) {
            Ok(d) if d.version == VERSION && d.scope == scope => r.files = d.files,
            Ok(_) => tracing::warn!(
                "sync record {}: of another sync or version; comparing by HEAD",
                path.display()
            ),
            Err(e) => tracing::warn!(
                "sync record {}: unreadable ({e}); comparing by HEAD",
                path.display()
            ),
        }
        r
    }

    /// Replaces the file with `files` (atomically: written beside it, fsynced, renamed).
    pub fn save(&self, files: HashMap<String, Sent>) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        let d = OnDisk {
            version: VERSION,
            scope: self.scope.clone(),
            files,
        };
        let text = serde_json::to_vec(&d)
            .map_err(|e| Error::Failed(format!("sync record: cannot encode: {e}")))?;
        crate::fsutil::write_atomic(&self.path, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(etag: &str) -> Sent {
        Sent {
            size: 3,
            mtime: "1.000000001".into(),
            etag: etag.into(),
        }
    }

    #[test]
    fn a_record_is_read_back_only_for_its_own_sync() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("sync").join("r.json");
        assert!(Record::load(&p, "s3://b/x").files.is_empty(), "none yet");
        let r = Record::load(&p, "s3://b/x");
        r.save(HashMap::from([("a".to_string(), sent("e"))]))
            .expect("save");
        assert_eq!(Record::load(&p, "s3://b/x").files["a"], sent("e"));
        assert!(Record::load(&p, "s3://b/y").files.is_empty(), "other scope");
        std::fs::write(&p, b"{not json").expect("corrupt");
        assert!(Record::load(&p, "s3://b/x").files.is_empty(), "corrupt");
    }
}
