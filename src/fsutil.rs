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

/// The filesystems a restore writes to, held open from before its first byte so that one
/// `syncfs(2)` each at the end makes everything written there durable (file data, directory
/// entries, links, modes) and reports any writeback error since the open (Linux 5.8 and later).
/// A restore of thousands of files then costs one journal commit rather than one fsync per
/// file, and the extraction never waits for the disk in the middle of a stream.
///
/// Where `syncfs` cannot be trusted to report an error (kernels before 5.8, FUSE mounts, whose
/// syncfs may do nothing), every file and directory under the directory is fsynced instead,
/// as PostgreSQL's own `fsync` of a data directory does.
#[derive(Debug)]
pub struct FsBarrier(Vec<(PathBuf, File, bool)>);

/// The filesystem magic of FUSE mounts (`FUSE_SUPER_MAGIC`).
const FUSE_MAGIC: i64 = 0x6573_5546;

impl FsBarrier {
    /// Opens each of `dirs` (they must exist).
    pub fn open<'a>(dirs: impl IntoIterator<Item = &'a Path>) -> Result<FsBarrier> {
        let kernel_reports = syncfs_reports_errors(
            &fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default(),
        );
        let open = |d: &Path| {
            let f = File::open(d).map_err(|e| Error::io(format!("open {}", d.display()), e))?;
            // `f_type`'s integer type differs between architectures.
            #[allow(clippy::unnecessary_cast)]
            let fuse = rustix::fs::fstatfs(&f).is_ok_and(|s| s.f_type as i64 == FUSE_MAGIC);
            Ok((d.to_path_buf(), f, kernel_reports && !fuse))
        };
        dirs.into_iter()
            .map(open)
            .collect::<Result<_>>()
            .map(FsBarrier)
    }

    /// Flushes the filesystem of every directory opened.
    pub fn sync(&self) -> Result<()> {
        for (dir, f, trusted) in &self.0 {
            if !trusted {
                sync_tree(dir)?;
            }
            rustix::fs::syncfs(f).map_err(|e| {
                Error::io(
                    format!("sync the filesystem of {}", dir.display()),
                    std::io::Error::from(e),
                )
            })?;
        }
        Ok(())
    }
}

/// Whether a kernel of `release` (`uname -r`) reports writeback errors from `syncfs` (5.8 and
/// later); an unreadable release is not trusted.
fn syncfs_reports_errors(release: &str) -> bool {
    let mut nums = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    match (nums.next().flatten(), nums.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (5, 8),
        _ => false,
    }
}

/// Fsyncs every regular file and directory under `root`, links not followed.
fn sync_tree(root: &Path) -> Result<()> {
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.map_err(|e| {
            Error::io(
                format!("list {}", root.display()),
                std::io::Error::other(e.to_string()),
            )
        })?;
        let kind = entry.file_type();
        if kind.is_file() || kind.is_dir() {
            File::open(entry.path())
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(format!("fsync {}", entry.path().display()), e))?;
        }
    }
    Ok(())
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
    rename_into_place(tmp, path)?;
    sync_dir(parent_dir(path))
}

/// Renames a finished temp file over `path`, removing it if that fails; durable only once the
/// caller syncs the directory or its filesystem.
pub fn rename_into_place(tmp: &Path, path: &Path) -> Result<()> {
    fs::rename(tmp, path).map_err(|e| {
        let _ = fs::remove_file(tmp);
        Error::io(format!("rename {} to {}", tmp.display(), path.display()), e)
    })
}

/// Renames `from` to `to` durably (both in the same directory or filesystem).
pub fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to)
        .map_err(|e| Error::io(format!("rename {} to {}", from.display(), to.display()), e))?;
    sync_dir(parent_dir(to))
}

/// Opens `path` as `opts` says (appending or writing, creating it with a mode) where others may
/// be able to write the directory (`/tmp`, a shared log or spool directory): a symbolic link as
/// the last component is never followed (`O_NOFOLLOW`), a FIFO or device never blocks the open
/// (`O_NONBLOCK`), and what was opened must be a regular file. Anything else is an error saying
/// what was found, and nothing has been written.
pub fn open_regular(path: &Path, opts: &mut OpenOptions) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = opts
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => std::io::Error::other("is a symbolic link, which is not followed"),
            Some(libc::ENXIO) => std::io::Error::other("is a FIFO or socket, not a regular file"),
            _ => e,
        })?;
    if !file.metadata()?.file_type().is_file() {
        return Err(std::io::Error::other("is not a regular file"));
    }
    Ok(file)
}

/// [`open_regular`] for a file we write into: it must also have one link (not a hard link
/// planted to another file) and belong to this user or root.
pub fn open_owned(path: &Path, opts: &mut OpenOptions) -> std::io::Result<File> {
    let file = open_regular(path, opts)?;
    check_owned_file(&file.metadata()?, rustix::process::geteuid().as_raw())?;
    Ok(file)
}

/// [`open_owned`] for appending, creating the file 0600.
pub fn open_append_owned(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    open_owned(
        path,
        OpenOptions::new().append(true).create(true).mode(0o600),
    )
}

/// Whether a regular file is one we may write: one link, owned by `uid` or root.
fn check_owned_file(m: &fs::Metadata, uid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |why: String| Err(std::io::Error::other(why));
    if m.nlink() > 1 {
        return refuse(format!("has {} hard links, not one", m.nlink()));
    }
    if m.uid() != uid && m.uid() != 0 {
        return refuse(format!(
            "is owned by uid {}, not by this user or root",
            m.uid()
        ));
    }
    Ok(())
}

/// A scratch directory holding what another user can leave where we write: `victim` (a file
/// of ours), `link` (a symbolic link to it), `hard` (a hard link to it), `fifo` (that nobody
/// reads).
#[cfg(test)]
pub(crate) fn hostile_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tmp");
    let victim = d.path().join("victim");
    fs::write(&victim, b"precious").expect("victim");
    std::os::unix::fs::symlink(&victim, d.path().join("link")).expect("symlink");
    fs::hard_link(&victim, d.path().join("hard")).expect("hard link");
    let made = std::process::Command::new("mkfifo")
        .arg(d.path().join("fifo"))
        .status();
    assert!(made.expect("mkfifo").success());
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncfs_is_trusted_from_kernel_5_8_only() {
        for (release, trusted) in [
            ("6.1.0-28-amd64", true),
            ("5.8.0", true),
            ("5.15.0-91-generic", true),
            ("5.4.0-170-generic", false),
            ("4.18.0-553.el8_10.x86_64", false),
            ("", false),
            ("garbage", false),
        ] {
            assert_eq!(syncfs_reports_errors(release), trusted, "{release}");
        }
    }

    #[test]
    fn the_fallback_fsyncs_every_file_and_directory_and_names_what_it_cannot() {
        let d = tempfile::tempdir().expect("tmp");
        fs::create_dir_all(d.path().join("a/b")).expect("mkdir");
        fs::write(d.path().join("a/b/f"), b"x").expect("write");
        std::os::unix::fs::symlink("/nonexistent", d.path().join("a/link")).expect("symlink");
        sync_tree(d.path()).expect("sync");
        let e = sync_tree(&d.path().join("gone")).expect_err("missing");
        assert!(e.to_string().contains("gone"), "{e}");
    }

    #[test]
    fn a_barrier_opens_every_directory_before_it_syncs_and_names_one_missing() {
        let d = tempfile::tempdir().expect("tmp");
        let b = FsBarrier::open([d.path()]).expect("open");
        fs::write(d.path().join("f"), b"data").expect("write");
        b.sync().expect("syncfs");
        let gone = d.path().join("gone");
        let e = FsBarrier::open([d.path(), gone.as_path()]).expect_err("missing");
        assert!(e.to_string().contains(&gone.display().to_string()), "{e}");
    }

    #[test]
    fn appends_only_to_our_own_regular_files() {
        let d = hostile_dir();
        open_append_owned(&d.path().join("log")).expect("created");
        // A FIFO has no reader: the open fails at once instead of waiting for one.
        for (name, why) in [
            ("link", "symbolic link"),
            ("hard", "hard links"),
            ("fifo", "FIFO"),
        ] {
            let e = open_append_owned(&d.path().join(name)).expect_err(name);
            assert!(e.to_string().contains(why), "{name}: {e}");
        }
        assert_eq!(
            fs::read(d.path().join("victim")).expect("victim"),
            b"precious"
        );
        let e = open_append_owned(d.path()).expect_err("a directory is refused");
        assert!(e.raw_os_error() == Some(libc::EISDIR), "{e}");
    }

    #[test]
    fn another_users_file_is_refused() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("f");
        fs::write(&p, b"").expect("f");
        use std::os::unix::fs::MetadataExt;
        let me = rustix::process::geteuid().as_raw();
        let (m, runner) = if me == 0 {
            // Root's run meets a file someone else planted.
            std::os::unix::fs::chown(&p, Some(4242), None).expect("chown");
            (fs::metadata(&p).expect("stat"), 0)
        } else {
            // A user's run meets a file of another user (only root can give one away).
            (fs::metadata(&p).expect("stat"), me + 4242)
        };
        let e = check_owned_file(&m, runner).expect_err("not ours");
        assert!(e.to_string().contains("owned by uid"), "{e}");
        assert!(
            check_owned_file(&m, m.uid()).is_ok(),
            "the owner's own file"
        );
    }

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
