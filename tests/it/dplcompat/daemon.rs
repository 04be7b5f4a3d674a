//! The storage daemon's side of a dplcompat call, as Bareos' `CrudStorage` and `bpipe` make it
//! (Bareos 24.0.10 to 25): the program run directly with the configured options as environment
//! variables, stdout and stderr on one pipe, the chunk written in 256 KiB blocks, the output
//! read to EOF (a download in 256 KiB reads), a watchdog that sends SIGTERM when no block moved
//! for a whole interval and SIGKILL 5 s later, and an exit waited for at most one interval
//! more. An exit code n is n, a death by signal s is -s, as the daemon reports them.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const PROG: &str = env!("CARGO_BIN_EXE_barmans3-dplcompat");
const BLOCK: usize = 256 << 10;
/// The daemon's delay between SIGTERM and SIGKILL.
pub const KILL_AFTER: Duration = Duration::from_secs(5);

/// What one call gave.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code, or minus the signal that ended the program; 62 (ETIME) when it did not end.
    pub status: i32,
    /// stdout and stderr, merged as the daemon reads them.
    pub out: Vec<u8>,
    /// The watchdog sent SIGTERM.
    pub killed: bool,
    /// Start to exit.
    pub elapsed: Duration,
    /// From the end of the input to the exit.
    pub eof_to_exit: Duration,
}

impl Outcome {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }
    /// Asserts success and returns the output.
    pub fn ok(&self, what: &str) -> &[u8] {
        assert_eq!(self.status, 0, "{what}: {}", self.text());
        &self.out
    }
}

/// How the input is fed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Pace {
    /// Pause after every block.
    pub every_block: Duration,
    /// After this many blocks, stop writing for this long (then close the input).
    pub stall: Option<(usize, Duration)>,
    /// After this many bytes, stop and SIGKILL the program (a crash mid-upload).
    pub kill_after: Option<usize>,
    /// After reading this many bytes of the output, stop reading for this long (a daemon busy
    /// writing what it read, while the program's last bytes fill the pipe).
    pub read_pause: Option<(usize, Duration)>,
}

/// A storage daemon's device: the program's environment and the watchdog's interval.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// The watchdog: every `timeout`, SIGTERM unless a block moved since the last look; SIGKILL
/// `KILL_AFTER` later. Ends when `done` is set.
fn watchdog(
    pid: u32,
    timeout: Duration,
    keepalive: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    killed: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let sleep = |d: Duration| {
            let end = Instant::now() + d;
            while Instant::now() < end {
                if done.load(Ordering::SeqCst) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            !done.load(Ordering::SeqCst)
        };
        while sleep(timeout) {
            if keepalive.swap(false, Ordering::SeqCst) {
                continue;
            }
            killed.store(true, Ordering::SeqCst);
            signal(pid, "-TERM");
            if sleep(KILL_AFTER) {
                signal(pid, "-KILL");
            }
            return;
        }
    })
}

impl Daemon {
    /// Runs `program args…` without input.
    pub fn run(&self, args: &[&str]) -> Outcome {
        self.run_with(args, None, Pace::default(), &[])
    }

    /// Runs an upload of `data`.
    pub fn upload(&self, vol: &str, part: &str, data: &[u8]) -> Outcome {
        self.run_with(&["upload", vol, part], Some(data), Pace::default(), &[])
    }

    /// Runs a call; `extra` adds to the environment (the daemon's own environment).
    pub fn run_with(
        &self,
        args: &[&str],
        input: Option<&[u8]>,
        pace: Pace,
        extra: &[(&str, &str)],
    ) -> Outcome {
        let (mut r, w) = std::io::pipe().expect("pipe");
        let start = Instant::now();
        let mut child = Command::new(PROG)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().copied())
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(w.try_clone().expect("dup"))
            .stderr(w)
            .spawn()
            .expect("spawn the program");
        let pid = child.id();
        let (keepalive, done, killed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let dog = watchdog(
            pid,
            self.timeout,
            keepalive.clone(),
            done.clone(),
            killed.clone(),
        );
        if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
            feed(&mut stdin, data, pace, &keepalive, pid);
        }
        let eof = Instant::now();
        let mut out = Vec::new();
        let mut buf = vec![0u8; BLOCK];
        let mut pause = pace.read_pause;
        loop {
            // Up to the pause exactly, then on.
            let room = match pause {
                Some((at, _)) if out.len() < at => (at - out.len()).min(BLOCK),
                _ => BLOCK,
            };
            if let Some((at, how_long)) = pause
                && out.len() >= at
            {
                std::thread::sleep(how_long);
                pause = None;
            }
            match r.read(&mut buf[..room]) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    keepalive.store(true, Ordering::SeqCst);
                }
            }
        }
        // The daemon waits at most one interval for the exit once the pipe closed.
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                use std::os::unix::process::ExitStatusExt;
                break st.code().unwrap_or_else(|| -st.signal().unwrap_or(0));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break 62;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let (elapsed, eof_to_exit) = (start.elapsed(), eof.elapsed());
        done.store(true, Ordering::SeqCst);
        dog.join().expect("watchdog");
        Outcome {
            status,
            out,
            killed: killed.load(Ordering::SeqCst),
            elapsed,
            eof_to_exit,
        }
    }
}

/// Writes the input in 256 KiB blocks, as the daemon does, keeping the watchdog quiet after each.
fn feed(
    stdin: &mut std::process::ChildStdin,
    data: &[u8],
    pace: Pace,
    keep: &AtomicBool,
    pid: u32,
) {
    for (i, block) in data.chunks(BLOCK).enumerate() {
        if let Some(limit) = pace.kill_after
            && i * BLOCK >= limit
        {
            signal(pid, "-KILL");
            return;
        }
        if let Some((after, pause)) = pace.stall
            && i == after
        {
            std::thread::sleep(pause);
            return;
        }
        if stdin.write_all(block).is_err() {
            // The daemon's "Broken pipe after writing": the program went away.
            return;
        }
        keep.store(true, Ordering::SeqCst);
        if !pace.every_block.is_zero() {
            std::thread::sleep(pace.every_block);
        }
    }
}

/// The daemon's `list` parser (`fscanf(rfh, "%128s %zu\n")` until EOF, each scan two items),
/// in Rust: the parts and sizes, or `None` where the daemon reports "could not parse data".
pub fn daemon_parses_list(out: &[u8]) -> Option<Vec<(String, u64)>> {
    let text = std::str::from_utf8(out).ok()?;
    let mut words = text.split_ascii_whitespace().peekable();
    let mut parts = Vec::new();
    // fscanf at EOF returns EOF (not 2) on its first call: an empty output fails.
    loop {
        let name = words.next()?;
        let size = words.next()?.parse().ok()?;
        parts.push((name.chars().take(128).collect(), size));
        if words.peek().is_none() {
            return Some(parts);
        }
    }
}
