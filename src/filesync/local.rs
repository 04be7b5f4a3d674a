//! The local side of a sync: what a path is (without following symlinks), the walk of a
//! directory, the stamp that tells a changed file, and the Gluster cloudsync mark that says a
//! file's data is in the archive and reading it would recall it.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The xattr namespace of Gluster's cloudsync marks: `trusted` on a real Gluster mount (root
/// only), `user` for tests run as any user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XattrNs {
    /// `trusted.glusterfs.cs.remote`.
    #[default]
    Trusted,
    /// `user.glusterfs.cs.remote`.
    User,
}

impl XattrNs {
    fn remote_mark(self) -> &'static str {
        match self {
            XattrNs::Trusted => "trusted.glusterfs.cs.remote",
            XattrNs::User => "user.glusterfs.cs.remote",
        }
    }
}

/// What tells a changed file: size, modification and change time, inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i128,
    /// Change time, ns since the epoch.
    pub ctime_ns: i128,
    /// Device and inode.
    pub ino: (u64, u64),
}

impl Stamp {
    /// The stamp of a `symlink_metadata`.
    pub fn of(m: &std::fs::Metadata) -> Self {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Stamp {
            size: m.len(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
            ino: (m.dev(), m.ino()),
        }
    }

    /// The modification time as it is stored in the object's metadata: `SECONDS.NANOSECONDS`.
    pub fn mtime_text(&self) -> String {
        let s = self.mtime_ns.div_euclid(1_000_000_000);
        let n = self.mtime_ns.rem_euclid(1_000_000_000);
        format!("{s}.{n:09}")
    }
}

/// What a path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A regular file, to upload.
    File(Stamp),
    /// A directory, to walk.
    Dir,
    /// A symbolic link: never followed.
    Symlink,
    /// A device, fifo or socket.
    Special,
    /// A regular file whose data Gluster's cloudsync archived: never read.
    Archived,
    /// Nothing there.
    Missing,
    /// It could not be looked at (the reason).
    Error(String),
}

/// Looks at `path` without following a symlink or reading data.
pub fn probe(path: &Path, ns: XattrNs) -> Probe {
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        // ENOTDIR: a component above is a file now, so nothing of this name exists.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(20) => {
            return Probe::Missing;
        }
        Err(e) => {
            return Probe::Error(format!(
                "stat {}: {}",
                path.display(),
                crate::error::reason(&e)
            ));
        }
    };
    let ft = m.file_type();
    if ft.is_dir() {
        Probe::Dir
    } else if ft.is_symlink() {
        Probe::Symlink
    } else if ft.is_file() {
        match archived(path, ns) {
            Ok(true) => Probe::Archived,
            Ok(false) => Probe::File(Stamp::of(&m)),
            Err(e) => Probe::Error(e),
        }
    } else {
        Probe::Special
    }
}

/// Whether `src/rel` would be reached through a symbolic link above it (`lstat` follows every
/// component but the last, and sync never follows a link). Directories already seen real are
/// remembered in `real`.
pub fn via_link(src: &Path, rel: &str, real: &mut HashSet<String>) -> bool {
    let mut at = 0;
    while let Some(i) = rel[at..].find('/') {
        let dir = &rel[..at + i];
        at += i + 1;
        if real.contains(dir) {
            continue;
        }
        match std::fs::symlink_metadata(src.join(dir)) {
            Ok(m) if m.file_type().is_symlink() => return true,
            Ok(m) if m.is_dir() => {
                real.insert(dir.to_string());
            }
            _ => return false, // missing or not a directory: the probe says so
        }
    }
    false
}

/// Whether Gluster's cloudsync holds this file's data remotely (`cs.remote` is set). A
/// filesystem without xattrs has no such mark.
pub fn archived(path: &Path, ns: XattrNs) -> std::result::Result<bool, String> {
    match xattr::get(path, ns.remote_mark()) {
        Ok(v) => Ok(v.is_some()),
        Err(e) if e.raw_os_error() == Some(95) => Ok(false), // EOPNOTSUPP
        Err(e) => Err(format!(
            "read {} of {}: {}",
            ns.remote_mark(),
            path.display(),
            crate::error::reason(&e)
        )),
    }
}

/// One entry of a walk: its path relative to SRC_DIR and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative path (`/`-separated, UTF-8).
    pub rel: String,
    /// Full path.
    pub path: PathBuf,
    /// What it is ([`Probe::Missing`] never occurs here).
    pub kind: Probe,
}

/// Walks `dir` (a directory under `src`) without following symlinks: every entry below it.
/// Names that are not UTF-8 and entries that could not be read come back as
/// [`Probe::Error`] with the lossy name.
pub fn walk(src: &Path, dir: &Path, ns: XattrNs) -> Vec<Entry> {
    let mut out = Vec::new();
    for item in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .min_depth(1)
        .sort_by_file_name()
    {
        let e = match item {
            Ok(e) => e,
            Err(err) => {
                let path = err.path().unwrap_or(dir).to_path_buf();
                let reason = err
                    .io_error()
                    .map(crate::error::reason)
                    .unwrap_or_else(|| err.to_string());
                out.push(Entry {
                    rel: rel_lossy(src, &path),
                    kind: Probe::Error(format!("read {}: {reason}", path.display())),
                    path,
                });
                continue;
            }
        };
        let path = e.path().to_path_buf();
        let Some(rel) = e
            .path()
            .strip_prefix(src)
            .ok()
            .and_then(Path::to_str)
            .map(str::to_string)
        else {
            out.push(Entry {
                rel: rel_lossy(src, &path),
                kind: Probe::Error(format!(
                    "{}: not a UTF-8 name, it cannot be an object key",
                    path.display()
                )),
                path,
            });
            continue;
        };
        let kind = match probe(&path, ns) {
            Probe::Missing => continue, // gone since the directory was read
            k => k,
        };
        out.push(Entry { rel, path, kind });
    }
    out
}

fn rel_lossy(src: &Path, path: &Path) -> String {
    path.strip_prefix(src)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// Whether a directory has no entries (an empty source is never a reason to delete). An
/// unreadable directory is an error.
pub fn is_empty_dir(dir: &Path) -> std::io::Result<bool> {
    Ok(std::fs::read_dir(dir)?.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtime_text_keeps_nanoseconds_and_handles_old_times() {
        let st = |mtime_ns| Stamp {
            size: 0,
            mtime_ns,
            ctime_ns: 0,
            ino: (0, 0),
        };
        assert_eq!(
            st(1_700_000_000_000_000_123).mtime_text(),
            "1700000000.000000123"
        );
        assert_eq!(st(-1).mtime_text(), "-1.999999999");
    }

    #[test]
    fn walk_never_follows_links_and_reports_what_it_saw() {
        let d = tempfile::tempdir().expect("tmp");
        let src = d.path();
        std::fs::create_dir_all(src.join("a/b")).expect("mkdir");
        std::fs::write(src.join("a/b/f"), b"x").expect("w");
        std::fs::write(src.join("top"), b"y").expect("w");
        std::os::unix::fs::symlink("/etc", src.join("a/link")).expect("ln");
        let got: Vec<(String, &str)> = walk(src, src, XattrNs::User)
            .into_iter()
            .map(|e| {
                let k = match e.kind {
                    Probe::File(_) => "file",
                    Probe::Dir => "dir",
                    Probe::Symlink => "link",
                    _ => "other",
                };
                (e.rel, k)
            })
            .collect();
        let want = [
            ("a", "dir"),
            ("a/b", "dir"),
            ("a/b/f", "file"),
            ("a/link", "link"),
            ("top", "file"),
        ];
        let want: Vec<(String, &str)> = want.iter().map(|(r, k)| (r.to_string(), *k)).collect();
        assert_eq!(got, want);
        assert_eq!(probe(&src.join("nothing"), XattrNs::User), Probe::Missing);
        assert_eq!(probe(&src.join("top/below"), XattrNs::User), Probe::Missing);
        let mut real = HashSet::new();
        assert!(via_link(src, "a/link/passwd", &mut real));
        assert!(!via_link(src, "a/b/f", &mut real));
        assert!(real.contains("a/b"));
        assert!(!via_link(src, "gone/x", &mut real));
    }
}
