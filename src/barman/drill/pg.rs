//! The scratch PostgreSQL of a drill: started directly as our child (so its end is ours to
//! see and to wait for), on 127.0.0.1 and a unix socket inside DEST only, with a private
//! authentication file; queried with `psql`; stopped fast, then immediately, then killed, each
//! wait bounded.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};

use crate::error::{Error, Result};

/// How long a fast shutdown may take before an immediate one.
const FAST_STOP: Duration = Duration::from_secs(60);
/// How long an immediate shutdown may take before the postmaster is killed.
const IMMEDIATE_STOP: Duration = Duration::from_secs(15);
/// How long one `psql` may run beyond the caller's own bound.
pub const PSQL_TIMEOUT: Duration = Duration::from_secs(600);

/// Where a scratch server lives.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The binaries of the backup's major version.
    pub bindir: PathBuf,
    /// The restored data directory.
    pub data: PathBuf,
    /// The unix socket directory (mode 0700, inside DEST).
    pub sock: PathBuf,
    /// PostgreSQL's own log (stderr).
    pub log: PathBuf,
    /// The authentication file: trust on the private socket only.
    pub hba: PathBuf,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
}

/// A running scratch postmaster.
#[derive(Debug)]
pub struct Postmaster {
    child: tokio::process::Child,
    stopped: bool,
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("find a free port on 127.0.0.1", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("find a free port on 127.0.0.1", e))
}

/// The `-c` settings that keep the copy to itself, whatever its configuration files say
/// (command-line settings win over both files).
pub fn isolating_settings(l: &Layout) -> Vec<(String, String)> {
    let mut s: Vec<(&str, String)> = vec![
        ("listen_addresses", "127.0.0.1".into()),
        ("port", l.port.to_string()),
        ("unix_socket_directories", l.sock.display().to_string()),
        ("unix_socket_permissions", "0700".into()),
        ("hba_file", l.hba.display().to_string()),
        ("archive_mode", "off".into()),
        ("primary_conninfo", String::new()),
        ("primary_slot_name", String::new()),
        ("synchronous_standby_names", String::new()),
        ("hot_standby", "on".into()),
        ("logging_collector", "off".into()),
        ("log_destination", "stderr".into()),
        ("cluster_name", "barmans3-drill".into()),
    ];
    // A copy must not start replication slots' consumers nor background jobs of the source.
    s.push(("max_logical_replication_workers", "0".into()));
    s.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

impl Postmaster {
    /// Starts `postgres -D DATA` with `settings` as `-c` options; output goes to the log.
    pub fn start(l: &Layout, settings: &[(String, String)]) -> Result<Postmaster> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&l.log)
            .map_err(|e| Error::io(format!("open {}", l.log.display()), e))?;
        let err = log
            .try_clone()
            .map_err(|e| Error::io(format!("open {}", l.log.display()), e))?;
        let mut cmd = tokio::process::Command::new(l.bindir.join("postgres"));
        cmd.arg("-D").arg(&l.data);
        for (k, v) in settings {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        // Its own process group: a Ctrl-C on the terminal reaches us, and we stop it in order.
        cmd.stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(false);
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("start {}", l.bindir.join("postgres").display()), e))?;
        Ok(Postmaster {
            child,
            stopped: false,
        })
    }

    /// The exit status once the postmaster has ended on its own.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn signal(&self, sig: Signal) {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|p| Pid::from_raw(i32::try_from(p).ok()?))
        {
            let _ = kill_process(pid, sig);
        }
    }

    /// Stops it: a fast shutdown (SIGINT), then an immediate one (SIGQUIT), then SIGKILL; every
    /// wait bounded. Returns once the postmaster has exited.
    pub async fn stop(&mut self) -> Result<()> {
        if self.stopped || self.exited().is_some() {
            self.stopped = true;
            return Ok(());
        }
        for (sig, wait) in [
            (Signal::INT, FAST_STOP),
            (Signal::QUIT, IMMEDIATE_STOP),
            (Signal::KILL, IMMEDIATE_STOP),
        ] {
            self.signal(sig);
            if tokio::time::timeout(wait, self.child.wait()).await.is_ok() {
                self.stopped = true;
                return Ok(());
            }
        }
        Err(Error::Failed(
            "the scratch PostgreSQL did not exit even after SIGKILL".into(),
        ))
    }
}

/// The roles tried for the checks: `PGUSER`, this OS user, `postgres`.
pub fn users() -> Vec<String> {
    let mut out: Vec<String> = ["PGUSER", "USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .filter(|v| !v.is_empty())
        .collect();
    out.push("postgres".into());
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|u| seen.insert(u.clone()));
    out
}

/// Runs one SQL statement through `psql` on the private socket and returns its output
/// (unaligned, tuples only, fields separated by `\x1f`); a failing statement is an error
/// carrying psql's message.
pub async fn psql(l: &Layout, user: &str, db: &str, sql: &str, bound: Duration) -> Result<String> {
    let mut cmd = tokio::process::Command::new(l.bindir.join("psql"));
    cmd.args([
        "-X",
        "-A",
        "-t",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-F",
        "\x1f",
    ])
    .arg("-h")
    .arg(&l.sock)
    .arg("-p")
    .arg(l.port.to_string())
    .args(["-U", user, "-d", db, "-c", sql])
    .env_remove("PGPASSWORD")
    .env_remove("PGSERVICE")
    .env("PGCONNECT_TIMEOUT", "10")
    .stdin(Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(bound.min(PSQL_TIMEOUT), cmd.output())
        .await
        .map_err(|_| Error::Failed(format!("psql did not answer within {bound:?}")))?
        .map_err(|e| Error::io(format!("run {}", l.bindir.join("psql").display()), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    } else {
        Err(Error::Failed(crate::error::one_line(
            String::from_utf8_lossy(&out.stderr).trim(),
        )))
    }
}

/// `pg_checksums --check` on the stopped copy; a mismatch is an error with its report.
pub async fn checksums(l: &Layout) -> Result<()> {
    let bin = l.bindir.join("pg_checksums");
    let out = tokio::process::Command::new(&bin)
        .arg("--check")
        .arg("-D")
        .arg(&l.data)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::io(format!("run {}", bin.display()), e))?;
    if out.status.success() {
        Ok(())
    } else {
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        Err(Error::Failed(format!(
            "pg_checksums --check: {}",
            crate::error::one_line(text.trim())
        )))
    }
}

/// `pg_amcheck --all --heapallindexed` on the running copy (the amcheck extension installed
/// where missing: the copy is scratch). `Ok(false)` when the binaries have no pg_amcheck;
/// corruption is an error with its first lines.
pub async fn amcheck(l: &Layout, user: &str) -> Result<bool> {
    let bin = l.bindir.join("pg_amcheck");
    if !bin.is_file() {
        return Ok(false);
    }
    let out = tokio::process::Command::new(&bin)
        .arg("-h")
        .arg(&l.sock)
        .arg("-p")
        .arg(l.port.to_string())
        .args([
            "-U",
            user,
            "--all",
            "--heapallindexed",
            "--install-missing",
            "-w",
        ])
        .env_remove("PGPASSWORD")
        .env_remove("PGSERVICE")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::io(format!("run {}", bin.display()), e))?;
    if out.status.success() {
        return Ok(true);
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let first: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(3)
        .collect();
    Err(Error::Failed(format!(
        "pg_amcheck ({}): {}",
        out.status,
        crate::error::one_line(&first.join(" / "))
    )))
}

/// `postgres --version` of a directory's binaries, if it has `postgres` and `psql`.
pub async fn version_of(bindir: &Path) -> Option<String> {
    if !bindir.join("postgres").is_file() || !bindir.join("psql").is_file() {
        return None;
    }
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(bindir.join("postgres"))
            .arg("--version")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .ok()?
    .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Ends the WAL prefetchers wal-restore started for this copy (their command line names a
/// spool inside `dest`): they would otherwise linger until idle. A prefetcher keeps polling
/// its spool after SIGTERM, so a short grace is followed by SIGKILL; what it leaves (temp
/// files in the spool) is inside `dest`, which the caller removes.
pub async fn stop_prefetchers(dest: &Path) {
    let mine: Vec<Pid> = prefetchers_under(dest);
    for pid in &mine {
        let _ = kill_process(*pid, Signal::TERM);
    }
    for _ in 0..10 {
        if prefetchers_under(dest).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for pid in prefetchers_under(dest) {
        let _ = kill_process(pid, Signal::KILL);
    }
}

/// Processes of this user whose arguments are `… wal-prefetch … --spool DIR` with DIR inside
/// `dest`.
pub fn prefetchers_under(dest: &Path) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_prefetch = args.iter().any(|a| *a == b"wal-prefetch");
            let spool = args.windows(2).find(|w| w[0] == b"--spool").map(|w| {
                Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(w[1]))
            })?;
            (is_prefetch && spool.starts_with(dest)).then(|| Pid::from_raw(pid))?
        })
        .collect()
}
