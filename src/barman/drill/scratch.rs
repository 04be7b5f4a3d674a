//! The drill's scratch directory: claimed (new or empty, room checked) before anything is
//! written, marked by a locked `.barmans3-drill` file while its drill lives, emptied and removed
//! at the end; and what a drill that was killed (SIGKILL, a crash, the OOM killer) left, found
//! and cleaned by the next one: its PostgreSQL (its own process group, so it outlives the
//! drill), its prefetchers and its directory. A directory is taken for a dead drill's only when
//! it is this user's, private, and holds the marker nobody has locked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};

use super::decide;
use super::pg::{self, Postmaster};
use crate::error::{Error, Result};

/// The marker a live drill keeps locked in its scratch directory.
pub(super) const MARKER: &str = ".barmans3-drill";
/// What the default scratch directories are called (in the temporary directory).
pub(super) const DEFAULT_PREFIX: &str = "barmans3-drill-";
/// How long a dead drill's PostgreSQL may take to end an immediate shutdown.
const STALE_STOP: Duration = Duration::from_secs(15);

/// The scratch copy: its directory, whether it was claimed (found new or empty: only then is
/// it ours to empty), whether we created it, its running server.
#[derive(Debug)]
pub(super) struct Scratch {
    pub(super) dest: PathBuf,
    pub(super) claimed: bool,
    pub(super) created: bool,
    pub(super) pg: Option<Postmaster>,
    /// The marker's lock, held while the drill lives: a later drill that can take it knows
    /// this one is gone.
    pub(super) marker: Option<std::fs::File>,
}

/// Refuses a DEST that is not empty or lacks `need` free bytes, before anything is written;
/// then creates it (mode 0700).
pub(super) fn claim(scratch: &mut Scratch, need: u64) -> Result<()> {
    let dest = &scratch.dest;
    if dest.exists() {
        let mut entries = std::fs::read_dir(dest)
            .map_err(|e| Error::io(format!("list {}", dest.display()), e))?;
        if entries.next().is_some() {
            return Err(Error::Usage(format!(
                "--dest {} is not empty: the drill needs a new or empty directory",
                dest.display()
            )));
        }
    }
    let mut probe = dest.as_path();
    while !probe.exists() {
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
    if !dest.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dest)
            .map_err(|e| Error::io(format!("create {}", dest.display()), e))?;
        scratch.created = true;
    }
    scratch.claimed = true;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("chmod {}", dest.display()), e))?;
    // Locked before it gets its name: a sweep never sees it unlocked while this drill lives.
    let marker = dest.join(MARKER);
    let tmp = dest.join(format!("{MARKER}.new"));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
    f.try_lock()
        .map_err(|e| Error::Failed(format!("lock {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, &marker)
        .map_err(|e| Error::io(format!("rename {}", marker.display()), e))?;
    scratch.marker = Some(f);
    Ok(())
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
    pg::stop_prefetchers(&scratch.dest).await;
    tracing::debug!("drill: prefetchers stopped");
    if keep && scratch.marker.take().is_some() {
        // A kept copy is the user's now: no later drill may take it for a killed one's.
        let _ = std::fs::remove_file(scratch.dest.join(MARKER));
    }
    // A directory refused (not empty) or never reached is not ours: nothing in it is touched.
    if !keep && scratch.claimed && scratch.dest.exists() {
        let gone = if scratch.created {
            std::fs::remove_dir_all(&scratch.dest)
        } else {
            std::fs::read_dir(&scratch.dest).and_then(|mut entries| {
                entries.try_for_each(|e| {
                    let p = e?.path();
                    if std::fs::symlink_metadata(&p)?.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    }
                })
            })
        };
        if let Err(e) = gone {
            problems.push(format!(
                "could not remove {}: {}; delete it",
                scratch.dest.display(),
                crate::error::reason(&e)
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Failed(problems.join("; ")))
    }
}

/// Finds what killed drills of this user left and removes it: directories in the temporary
/// directory named like a drill's, the data directories of orphaned drill postmasters, and
/// `dest` itself. Never fails the drill: a problem is a warning.
pub(super) async fn sweep_stale(dest: &Path) {
    let mut candidates: Vec<PathBuf> = vec![dest.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) {
        candidates.extend(
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(DEFAULT_PREFIX))
                .map(|e| e.path()),
        );
    }
    candidates.extend(orphan_postmasters().into_iter().map(|(_, d)| d));
    candidates.sort();
    candidates.dedup();
    for dir in candidates {
        let Some(marker) = stale_marker(&dir) else {
            continue;
        };
        let pid = postmaster_of(&dir);
        if let Some(pid) = pid {
            stop_stale(pid).await;
        }
        pg::stop_prefetchers(&dir).await;
        drop(marker);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => tracing::warn!(
                "drill: removed {} that a killed drill left{}",
                dir.display(),
                pid.map_or(String::new(), |p| format!(
                    " (its PostgreSQL, pid {}, stopped)",
                    p.as_raw_nonzero()
                ))
            ),
            Err(e) => tracing::warn!(
                "drill: could not remove {} that a killed drill left: {}",
                dir.display(),
                crate::error::reason(&e)
            ),
        }
    }
}

/// The marker of `dir`, locked by us, when `dir` is a dead drill's scratch directory.
fn stale_marker(dir: &Path) -> Option<std::fs::File> {
    use rustix::fs::{Mode, OFlags};
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    let d = std::fs::symlink_metadata(dir).ok()?;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let f = std::fs::File::from(rustix::fs::open(dir.join(MARKER), flags, Mode::empty()).ok()?);
    let m = f.metadata().ok()?;
    let facts = decide::ScratchFacts {
        is_dir: d.is_dir(),
        ours: d.uid() == me && m.uid() == me,
        private: d.mode() & 0o077 == 0,
        marker_regular: m.is_file() && m.nlink() == 1,
        marker_free: f.try_lock().is_ok(),
    };
    decide::is_stale_scratch(&facts).then_some(f)
}

/// The postmaster recorded in `dir/data/postmaster.pid`, if it is a drill postmaster of this
/// user serving that directory.
fn postmaster_of(dir: &Path) -> Option<Pid> {
    let text = std::fs::read_to_string(dir.join("data/postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    orphan_postmasters()
        .into_iter()
        .find(|(p, d)| p.as_raw_nonzero().get() == pid && d == dir)
        .map(|(p, _)| p)
}

/// Drill postmasters of this user (`postgres … -D DIR/data … -c cluster_name=barmans3-drill`),
/// with their scratch directory.
fn orphan_postmasters() -> Vec<(Pid, PathBuf)> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            if e.metadata().ok()?.uid() != me {
                return None;
            }
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let data = decide::drill_postmaster_data(&args)?;
            let data = Path::new(std::ffi::OsStr::from_bytes(data));
            Some((Pid::from_raw(pid)?, data.parent()?.to_path_buf()))
        })
        .collect()
}

/// An immediate shutdown of a dead drill's PostgreSQL, then SIGKILL; each wait bounded.
async fn stop_stale(pid: Pid) {
    let gone = || !Path::new(&format!("/proc/{}", pid.as_raw_nonzero())).exists();
    for sig in [Signal::QUIT, Signal::KILL] {
        let _ = kill_process(pid, sig);
        let deadline = std::time::Instant::now() + STALE_STOP;
        while std::time::Instant::now() < deadline {
            if gone() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
