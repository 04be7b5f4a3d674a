//! The one atomic-write helper for durable state (queue tasks, manifests, local objects):
//! write a temp file in the target directory, fsync it, rename it into place, fsync the
//! directory. A crash at any point leaves either the old file or the new one, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A temp-file name next to `path`, unique per process and call.
pub fn temp_path_for(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// The directory a path lives in: its parent, or `.` for a bare file name (`RECOVERYXLOG`
/// given relative to the current directory has the parent `""`).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Fsyncs a directory so a rename inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync directory {}", dir.display()), e))
}

/// Atomically replaces `path` with `data` (mode 0600 for new files: tasks can hold paths and
/// errors that are nobody else's business).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    replace_with(path, |tmp| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)?;
        f.write_all(data)?;
        f.sync_all()
    })
}

/// Atomically replaces `path` with the file `write` creates and fsyncs at the temp path it is
/// given; a failed write leaves no temp file behind.
pub fn replace_with(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    let tmp = temp_path_for(path);
    if let Err(e) = write(&tmp) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(format!("write {}", tmp.display()), e));
    }
    persist(&tmp, path)
}

/// Renames a finished, fsynced temp file into place and fsyncs the parent directory.
pub fn persist(tmp: &Path, path: &Path) -> Result<()> {
    if let Err(e) = fs::rename(tmp, path) {
        let _ = fs::remove_file(tmp);
        return Err(Error::io(
            format!("rename {} to {}", tmp.display(), path.display()),
            e,
        ));
    }
    sync_dir(parent_dir(path))
}

/// Renames `from` to `to` durably (both in the same directory or filesystem).
pub fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to)
        .map_err(|e| Error::io(format!("rename {} to {}", from.display(), to.display()), e))?;
    sync_dir(parent_dir(to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("t.json");
        write_atomic(&p, b"one").expect("first");
        write_atomic(&p, b"two").expect("second");
        assert_eq!(fs::read(&p).expect("read"), b"two");
        let names: Vec<_> = fs::read_dir(d.path()).expect("ls").collect();
        assert_eq!(names.len(), 1);
    }
}
