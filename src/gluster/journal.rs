//! The archive journal (spec §1.3 step 9): one JSON line per archived file, appended and
//! fsynced before the file counts as archived, the basis for a later orphan collection.
//!
//! An append-only log is the one durable state not written through `fsutil::write_atomic`:
//! rewriting the whole file per line would cost O(n²). Each line goes out in one `write(2)` on
//! an `O_APPEND` descriptor and is fsynced; a crash can at worst cut the last line short, which
//! a reader skips. The directory is fsynced when the file is created.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::fsutil;

/// One archived file.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Entry {
    /// When it was confirmed archived (RFC 3339, UTC).
    pub time: String,
    /// Volume path, with the leading `/`.
    pub path: String,
    /// gfid.
    pub gfid: String,
    /// Bytes.
    pub size: u64,
    /// mtime of S0, `<seconds>.<nanoseconds>`.
    pub mtime: String,
    /// The object's full key.
    pub key: String,
    /// CRC32C, base64 as in `x-amz-checksum-crc32c`.
    pub crc32c: String,
}

/// An open journal shared by the run's workers.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
}

impl Journal {
    /// Opens (creating, mode 0600) the journal at `path` for appending.
    pub fn open(path: &Path) -> Result<Journal> {
        let dir = fsutil::parent_dir(path);
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let existed = path.exists();
        let file = fsutil::open_owned(
            path,
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600),
        )
        .map_err(|e| Error::io(format!("open journal {}", path.display()), e))?;
        if !existed {
            fsutil::sync_dir(dir)?;
        }
        Ok(Journal {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// Appends one line and fsyncs it.
    pub fn append(&self, entry: &Entry) -> Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(|e| Error::Failed(e.to_string()))?;
        line.push(b'\n');
        let f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        (&*f)
            .write_all(&line)
            .and_then(|()| f.sync_data())
            .map_err(|e| Error::io(format!("append to journal {}", self.path.display()), e))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_append_across_opens() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("sub/j.jsonl");
        let e = Entry {
            time: "t".into(),
            path: "/a".into(),
            gfid: "g".into(),
            size: 1,
            mtime: "1.000000000".into(),
            key: "k".into(),
            crc32c: "c".into(),
        };
        Journal::open(&p).expect("open").append(&e).expect("append");
        Journal::open(&p).expect("open").append(&e).expect("append");
        let text = std::fs::read_to_string(&p).expect("read");
        assert_eq!(text.lines().count(), 2);
        let v: serde_json::Value =
            serde_json::from_str(text.lines().next().expect("line")).expect("json");
        assert_eq!(v["key"], "k");
        assert_eq!(v["size"], 1);
    }
}
