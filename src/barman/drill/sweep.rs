//! What a drill that was killed (SIGKILL, a crash, the OOM killer) left, found and cleaned by
//! the next one: its PostgreSQL (its own process group, so it outlives the drill), its
//! prefetchers and what it wrote. A directory is taken for a dead drill's only when it is this
//! user's, private, and holds the marker nobody has locked; it is removed only when the marker
//! says the drill made it: a directory the user gave keeps existing, emptied.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};

use super::decide;
use super::pg;
use super::scratch::{DEFAULT_PREFIX, MADE_HERE, MARKER, empty_dir};

/// How long a dead drill's PostgreSQL may take to end an immediate shutdown.
const STALE_STOP: Duration = Duration::from_secs(15);

/// Finds what killed drills of this user left and removes it: directories in the temporary
/// directory named like a drill's, the directories of orphaned drill postmasters, and `given`
/// (this run's `--dest`). Never fails the drill: a problem is a warning.
pub(super) async fn sweep_stale(given: Option<&Path>) {
    let mut candidates: Vec<PathBuf> = given.map(Path::to_path_buf).into_iter().collect();
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
        let Some(mut marker) = stale_marker(&dir) else {
            continue;
        };
        let pid = postmaster_of(&dir);
        if let Some(pid) = pid {
            stop_stale(pid).await;
        }
        pg::stop_prefetchers(&dir).await;
        let mut text = String::new();
        let _ = marker.by_ref().take(64).read_to_string(&mut text);
        drop(marker);
        let made_here = text.trim() == MADE_HERE;
        let gone = if made_here {
            std::fs::remove_dir_all(&dir)
        } else {
            empty_dir(&dir)
        };
        let what = if made_here { "removed" } else { "emptied" };
        match gone {
            Ok(()) => tracing::warn!(
                "drill: {what} {} that a killed drill left{}",
                dir.display(),
                pid.map_or(String::new(), |p| format!(
                    " (its PostgreSQL, pid {}, stopped)",
                    p.as_raw_nonzero()
                ))
            ),
            Err(e) => tracing::warn!(
                "drill: could not clean {} that a killed drill left: {}",
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
