//! The drill's scratch directory: claimed (new or empty, room checked) before anything is
//! written, marked by a locked `.barmans3-drill` file while its drill lives, emptied and removed
//! at the end. Without `--dest` it is a new private directory with an unpredictable name in the
//! temporary directory (as mkdtemp makes one), so nobody can prepare it or a link in its place.
//! Every check is made on the directory itself, never through a symbolic link: it is opened
//! with O_NOFOLLOW, must be this user's, and is made private before it is taken for ours.
//! What a killed drill left is found by the next one ([`super::sweep`]).

use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use super::pg::{self, Postmaster};
use crate::error::{Error, Result};

/// The marker a live drill keeps locked in its scratch directory.
pub(super) const MARKER: &str = ".barmans3-drill";
/// What the default scratch directories are called (in the temporary directory).
pub(super) const DEFAULT_PREFIX: &str = "barmans3-drill-";
/// The marker's text when the drill made the directory (the sweep may remove it); anything
/// else means the user gave it, and only what is inside is the drill's.
pub(super) const MADE_HERE: &str = "created";
/// How many random names are tried for the default directory before giving up.
const NAME_TRIES: u32 = 16;

/// The scratch copy: its directory, whether it was claimed (found new or empty and made
/// private: only then is it ours to empty), whether we created it, its running server.
#[derive(Debug)]
pub(super) struct Scratch {
    /// The directory; without `given`, the temporary directory until [`claim`] names it.
    pub(super) dest: PathBuf,
    /// The user named it with `--dest`.
    pub(super) given: bool,
    pub(super) claimed: bool,
    pub(super) created: bool,
    /// A given directory's mode before the drill made it private, put back at the end.
    pub(super) mode_before: Option<u32>,
    pub(super) pg: Option<Postmaster>,
    /// The marker's lock, held while the drill lives: a later drill that can take it knows
    /// this one is gone.
    pub(super) marker: Option<std::fs::File>,
}

impl Scratch {
    /// A scratch copy at `dest` (given with `--dest`), or a new one in the temporary directory.
    pub(super) fn new(dest: Option<PathBuf>) -> Self {
        let given = dest.is_some();
        let dest = dest.unwrap_or_else(std::env::temp_dir);
        Scratch {
            dest: std::path::absolute(&dest).unwrap_or(dest),
            given,
            claimed: false,
            created: false,
            mode_before: None,
            pg: None,
            marker: None,
        }
    }
}

/// Refuses a DEST that is a link, another user's, not a directory, not empty, or on a file
/// system without `need` free bytes, before anything is written; then creates it (mode 0700;
/// without `--dest` under a random name) or makes the given one private, and marks it.
pub(super) fn claim(scratch: &mut Scratch, need: u64, server: &str) -> Result<()> {
    let existing = if scratch.given {
        inspect_given(&scratch.dest)?
    } else {
        None
    };
    free_space(&scratch.dest, need)?;
    if scratch.given && existing.is_none() {
        mkdir_private(&scratch.dest).map_err(|e| {
            Error::io(
                format!("create {}", scratch.dest.display()),
                std::io::Error::from(e),
            )
        })?;
        scratch.created = true;
    } else if !scratch.given {
        scratch.dest = make_private_dir(&scratch.dest, server)?;
        scratch.created = true;
    }
    scratch.mode_before = existing;
    let fd = open_ours(&scratch.dest)?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700))
        .map_err(|e| Error::io(format!("chmod {}", scratch.dest.display()), e.into()))?;
    // Emptiness is judged after the chmod: nobody else can add an entry from here on.
    if !dir_is_empty(&fd).map_err(|e| Error::io(format!("list {}", scratch.dest.display()), e))? {
        if let Some(mode) = existing {
            let _ = rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode));
        }
        return Err(Error::Usage(format!(
            "--dest {} is not empty: the drill needs a new or empty directory",
            scratch.dest.display()
        )));
    }
    // Ours only now that it is private: a crash from here leaves a directory only we can
    // write, which the marker lets the next drill recognise.
    scratch.claimed = true;
    scratch.marker = Some(mark(&scratch.dest, scratch.created)?);
    Ok(())
}

/// A given `--dest`: its mode when it exists (a directory of this user, not a link), `None`
/// when it does not exist yet.
fn inspect_given(dest: &Path) -> Result<Option<u32>> {
    let md = match std::fs::symlink_metadata(dest) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("inspect {}", dest.display()), e)),
    };
    if md.file_type().is_symlink() {
        return Err(Error::Usage(format!(
            "--dest {} is a symbolic link: give the directory itself",
            dest.display()
        )));
    }
    if !md.is_dir() {
        return Err(Error::Usage(format!(
            "--dest {} is not a directory",
            dest.display()
        )));
    }
    if md.uid() != rustix::process::geteuid().as_raw() {
        return Err(Error::Usage(format!(
            "--dest {} belongs to uid {}, not to this user: give a directory of your own",
            dest.display(),
            md.uid()
        )));
    }
    if std::fs::read_dir(dest)
        .map_err(|e| Error::io(format!("list {}", dest.display()), e))?
        .next()
        .is_some()
    {
        return Err(Error::Usage(format!(
            "--dest {} is not empty: the drill needs a new or empty directory",
            dest.display()
        )));
    }
    Ok(Some(md.mode() & 0o7777))
}

/// Refuses when the file system that will hold `dest` has less than `need` bytes free.
fn free_space(dest: &Path, need: u64) -> Result<()> {
    let mut probe = dest;
    while std::fs::symlink_metadata(probe).is_err() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    let st = rustix::fs::statvfs(probe)
        .map_err(|e| Error::io(format!("statvfs {}", probe.display()), e.into()))?;
    let avail = st.f_bavail.saturating_mul(st.f_frsize);
    if avail < need {
        return Err(Error::Config(format!(
            "not enough free space at {}: the drill needs {} (backup, WAL and margin), {} is free; free space or choose another --dest",
            dest.display(),
            crate::units::human_bytes(need),
            crate::units::human_bytes(avail)
        )));
    }
    Ok(())
}

/// mkdir with mode 0700; never follows a link in the last component (it fails as existing).
fn mkdir_private(path: &Path) -> rustix::io::Result<()> {
    rustix::fs::mkdir(path, Mode::from_raw_mode(0o700))
}

/// A new directory `barmans3-drill-SERVER-RANDOM` in `tmp`, mode 0700, as mkdtemp makes one.
fn make_private_dir(tmp: &Path, server: &str) -> Result<PathBuf> {
    let safe: String = server
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    for _ in 0..NAME_TRIES {
        let path = tmp.join(format!(
            "{DEFAULT_PREFIX}{safe}-{:016x}",
            rand::random::<u64>()
        ));
        match mkdir_private(&path) {
            Ok(()) => return Ok(path),
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(Error::io(format!("create {}", path.display()), e.into())),
        }
    }
    Err(Error::Failed(format!(
        "could not make a new directory in {} after {NAME_TRIES} tries; give --dest",
        tmp.display()
    )))
}

/// The directory itself (never a link), checked to be this user's.
fn open_ours(dest: &Path) -> Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::open(dest, flags, Mode::empty()).map_err(|e| {
        Error::Usage(format!(
            "--dest {}: not a directory that can be opened without following a link ({e})",
            dest.display()
        ))
    })?;
    let st = rustix::fs::fstat(&fd)
        .map_err(|e| Error::io(format!("stat {}", dest.display()), e.into()))?;
    if st.st_uid != rustix::process::geteuid().as_raw() {
        return Err(Error::Usage(format!(
            "--dest {} belongs to uid {}, not to this user: give a directory of your own",
            dest.display(),
            st.st_uid
        )));
    }
    Ok(fd)
}

fn dir_is_empty(fd: &OwnedFd) -> std::io::Result<bool> {
    for entry in rustix::fs::Dir::read_from(fd)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The marker, locked before it gets its name (a sweep never sees it unlocked while this
/// drill lives); its text says whether the drill made the directory.
fn mark(dest: &Path, created: bool) -> Result<std::fs::File> {
    use std::io::Write;
    let marker = dest.join(MARKER);
    let tmp = dest.join(format!("{MARKER}.new"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
    f.try_lock()
        .map_err(|e| Error::Failed(format!("lock {}: {e}", tmp.display())))?;
    let text = if created { MADE_HERE } else { "given" };
    writeln!(f, "{text}").map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, &marker)
        .map_err(|e| Error::io(format!("rename {}", marker.display()), e))?;
    Ok(f)
}

/// Stops PostgreSQL and the prefetchers, then removes the scratch directory unless kept.
pub(super) async fn cleanup(scratch: &mut Scratch, keep: bool) -> Result<()> {
    let mut problems = Vec::new();
    if let Some(pm) = scratch.pg.as_mut()
        && let Err(e) = pm.stop().await
    {
        problems.push(e.one_line());
    }
    tracing::debug!("drill: PostgreSQL stopped");
    if scratch.claimed {
        pg::stop_prefetchers(&scratch.dest).await;
        tracing::debug!("drill: prefetchers stopped");
    }
    if keep && scratch.marker.take().is_some() {
        // A kept copy is the user's now: no later drill may take it for a killed one's.
        let _ = std::fs::remove_file(scratch.dest.join(MARKER));
    }
    if !scratch.claimed && scratch.created {
        // Made by us and refused before anything was written in it: still empty.
        let _ = std::fs::remove_dir(&scratch.dest);
    }
    // A directory refused (not empty, not ours) or never reached is not ours: nothing in it
    // is touched.
    if !keep
        && scratch.claimed
        && let Err(e) = remove_claimed(scratch)
    {
        problems.push(format!(
            "could not remove {}: {}; delete it",
            scratch.dest.display(),
            crate::error::reason(&e)
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Failed(problems.join("; ")))
    }
}

/// Removes what the drill wrote: the whole directory when the drill made it, else what is
/// inside (a given directory gets its mode back). A DEST that is no longer our directory (a
/// link put in its place) is left alone.
fn remove_claimed(scratch: &Scratch) -> std::io::Result<()> {
    let dest = &scratch.dest;
    let md = match std::fs::symlink_metadata(dest) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !md.is_dir() || md.uid() != rustix::process::geteuid().as_raw() {
        return Err(std::io::Error::other(
            "it is no longer the directory the drill claimed (a link or another user's); nothing in it was touched",
        ));
    }
    if scratch.created {
        return std::fs::remove_dir_all(dest);
    }
    empty_dir(dest)?;
    if let Some(mode) = scratch.mode_before {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Removes every entry of `dir`, links as links (never followed).
pub(super) fn empty_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::read_dir(dir)?.try_for_each(|e| {
        let p = e?.path();
        if std::fs::symlink_metadata(&p)?.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        }
    })
}

#[cfg(test)]
#[path = "scratch_tests.rs"]
mod tests;
