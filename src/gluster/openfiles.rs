//! Which brick inodes a process on this host holds open (spec §1.4 `open`): a scan of
//! `/proc/*/fd`. On a brick host `glusterfsd` holds an fd for every file a client has open, so
//! this sees the volume's open files on this replica; other replicas stay invisible (best
//! effort, documented).
//!
//! A scan costs one small read per fd on the host, so it is shared: the crawl reuses a scan a
//! few seconds old, and the check right before a mark asks for one started after its upload
//! ended; concurrent workers wait for the same scan instead of each running their own.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One scan: fd paths by the inode number they point at.
#[derive(Debug, Default)]
pub struct Scan {
    by_ino: HashMap<u64, Vec<PathBuf>>,
}

impl Scan {
    /// Reads every process's fds except our own (ours are closed before a mark; the files we
    /// read are never written by us).
    fn run() -> Scan {
        let me = std::process::id().to_string();
        let mut by_ino: HashMap<u64, Vec<PathBuf>> = HashMap::new();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return Scan { by_ino };
        };
        for p in procs.flatten() {
            let name = p.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            // Processes come and go and some are not ours to read: skip what cannot be read.
            let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                if let Some(ino) = fd_inode(pid, &fd.file_name().to_string_lossy(), &fd.path()) {
                    by_ino.entry(ino).or_default().push(fd.path());
                }
            }
        }
        Scan { by_ino }
    }

    /// Whether some fd points at inode `ino` of device `dev`. Inode numbers repeat across
    /// filesystems, so a hit is confirmed by a stat of that fd.
    pub fn holds(&self, dev: u64, ino: u64) -> bool {
        self.by_ino.get(&ino).is_some_and(|fds| {
            fds.iter()
                .any(|p| std::fs::metadata(p).is_ok_and(|m| m.dev() == dev && m.ino() == ino))
        })
    }
}

/// The inode an fd points at: `ino:` of its fdinfo (no call into the file's filesystem), else
/// a stat through the fd link.
fn fd_inode(pid: &str, fd: &str, link: &std::path::Path) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok();
    info.as_deref()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("ino:").and_then(|v| v.trim().parse().ok()))
        })
        .or_else(|| std::fs::metadata(link).ok().map(|m| m.ino()))
}

/// How old a scan the crawl and S0 may reuse; the check right before the mark always asks for
/// a scan started after the upload.
const REUSE: std::time::Duration = std::time::Duration::from_secs(5);

/// Scans shared by the crawl and the workers of one run.
#[derive(Debug, Default)]
pub struct OpenFiles {
    last: Mutex<Option<(Instant, Arc<Scan>)>>,
}

impl OpenFiles {
    /// A scan at most a few seconds old. Blocking.
    pub fn recent(&self) -> Arc<Scan> {
        self.since(
            Instant::now()
                .checked_sub(REUSE)
                .unwrap_or_else(Instant::now),
        )
    }

    /// A scan started at or after `since`, running one if the last is older. Blocking.
    pub fn since(&self, since: Instant) -> Arc<Scan> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((started, scan)) = last.as_ref()
            && *started >= since
        {
            return scan.clone();
        }
        let started = Instant::now();
        let scan = Arc::new(Scan::run());
        *last = Some((started, scan.clone()));
        scan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_held_by_another_process_is_seen_and_a_closed_one_is_not() {
        let dir = tempfile::tempdir().expect("tmp");
        let held = dir.path().join("held");
        let free = dir.path().join("free");
        std::fs::write(&held, b"x").expect("w");
        std::fs::write(&free, b"x").expect("w");
        // Our own fds do not count, so another process must hold it.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::fs::File::open(&held).expect("open"))
            .spawn()
            .expect("sleep");
        let files = OpenFiles::default();
        let scan = files.since(Instant::now());
        let m = std::fs::metadata(&held).expect("stat");
        let f = std::fs::metadata(&free).expect("stat");
        let seen = scan.holds(m.dev(), m.ino());
        let _ = child.kill();
        let _ = child.wait();
        assert!(seen, "the child's stdin is the held file");
        assert!(!scan.holds(f.dev(), f.ino()));
        let again = files.since(Instant::now() - std::time::Duration::from_secs(60));
        assert!(Arc::ptr_eq(&scan, &again), "a recent enough scan is shared");
    }
}
