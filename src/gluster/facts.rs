//! Gathering the facts the decisions in [`super::decide`] take: a brick entry's lstat and
//! Gluster xattrs, and a snapshot of a file through the mount and on the brick. No decision is
//! made here.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::decide::{BrickFacts, Snapshot, afr_pending};
use super::openfiles::Scan;
use super::xattrs::{self, XattrNs};
use crate::error::{Error, Result};

/// Nanoseconds since the epoch of a (seconds, nanoseconds) stat time.
fn ns(secs: i64, nsec: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsec)
}

fn lstat(path: &Path) -> Result<Metadata> {
    std::fs::symlink_metadata(path).map_err(|e| Error::io(format!("stat {}", path.display()), e))
}

/// What the brick says about `path` (never following a symlink). Xattrs are only read for
/// regular files.
pub fn brick_facts(ns_: XattrNs, path: &Path) -> Result<BrickFacts> {
    let m = lstat(path)?;
    let mut f = BrickFacts {
        regular: m.file_type().is_file(),
        mode: m.mode(),
        size: m.len(),
        blocks: m.blocks(),
        nlink: m.nlink(),
        dev: m.dev(),
        ino: m.ino(),
        ..Default::default()
    };
    if !f.regular {
        return Ok(f);
    }
    f.gfid = xattrs::gfid_of(ns_.get(path, xattrs::GFID)?);
    f.linkto = ns_.get(path, xattrs::DHT_LINKTO)?.is_some();
    f.sharded = ns_.get(path, xattrs::SHARD_BLOCK_SIZE)?.is_some();
    f.cs_remote = ns_.get_text(path, xattrs::CS_REMOTE)?;
    f.cs_downloading = ns_.get(path, xattrs::CS_DOWNLOADING)?.is_some();
    f.cs_object_size = ns_.get_text(path, xattrs::CS_OBJECT_SIZE)?;
    f.afr_pending = ns_
        .with_prefix(path, xattrs::AFR_PREFIX)?
        .iter()
        .any(|v| afr_pending(v));
    Ok(f)
}

/// A snapshot of one file: size, times and gfid through the mount (`mnt`), identity and size
/// on the brick (`brick`), and whether `open` shows a process holding the brick inode. A file
/// without a gfid gets the zero gfid, which no real file has, so it never equals S0.
pub fn snapshot(
    ns_: XattrNs,
    brick: &Path,
    mnt: &Path,
    open: &Scan,
    emulated: bool,
) -> Result<Snapshot> {
    let b = lstat(brick)?;
    let gfid = xattrs::gfid_of(ns_.get(brick, xattrs::GFID)?).unwrap_or([0; 16]);
    let m = lstat(mnt)?;
    if !m.file_type().is_file() {
        return Err(Error::Failed(format!(
            "{} is not a regular file through the mount",
            mnt.display()
        )));
    }
    let mnt_gfid = super::preflight::mount_gfid(ns_, mnt, emulated)?.unwrap_or([0; 16]);
    Ok(Snapshot {
        mnt_size: m.len(),
        mtime_ns: ns(m.mtime(), m.mtime_nsec()),
        ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        brick_size: b.len(),
        brick_dev: b.dev(),
        brick_ino: b.ino(),
        gfid,
        mnt_gfid,
        open: open.holds(b.dev(), b.ino()),
    })
}

/// Whether an error says the file is gone (renamed or unlinked since the crawl saw it).
pub fn is_gone(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// Now, in ns since the epoch.
pub fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}
