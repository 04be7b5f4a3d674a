//! External filters: Barman's `custom` decompression and GPG decryption run as a program
//! reading stdin and writing stdout, without a shell, within a time limit; a filter over its time
//! is killed with everything it started, and its output is bounded.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use zeroize::Zeroizing;

/// How long an external filter may run on one file unless configured otherwise
/// (`barman.command_timeout`).
pub const DEFAULT_FILTER_TIMEOUT: Duration = Duration::from_secs(60);

/// The most of a filter's standard error kept for its failure message.
pub(super) const STDERR_KEPT: u64 = 4096;

/// An external filter: a program and its arguments, run without a shell, reading the input on
/// stdin and writing the result to stdout, within a time limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// The config key that set it, for messages.
    pub key: &'static str,
    /// How long one run may take before the filter (and whatever it started) is killed.
    pub timeout: Duration,
}

/// What the threads around a running filter report.
enum Piped {
    /// Its standard output (at most the limit and one byte).
    Out(std::io::Result<Vec<u8>>),
    /// Its standard error (the start of it).
    Err(Vec<u8>),
    /// Whether all of the input was written.
    In(std::io::Result<()>),
}

impl Filter {
    /// Splits a configured command on white space (no shell quoting: the value is not run by a
    /// shell). `None` for an empty value.
    pub fn parse(text: &str, key: &'static str) -> Option<Filter> {
        let argv: Vec<String> = text.split_whitespace().map(str::to_string).collect();
        (!argv.is_empty()).then_some(Filter {
            argv,
            key,
            timeout: DEFAULT_FILTER_TIMEOUT,
        })
    }

    /// The same filter with another time limit.
    pub fn with_timeout(self, timeout: Duration) -> Filter {
        Filter { timeout, ..self }
    }

    /// Runs the filter over `input`; at most `limit` bytes of output are accepted. A non-zero
    /// exit, more output than `limit`, or a run longer than the timeout (a `gpg` waiting for a
    /// passphrase nobody will type) is an error naming the key and the file; a filter over its
    /// time is killed with everything it started.
    pub fn run(&self, input: &[u8], limit: u64, what: &str) -> Result<Vec<u8>> {
        self.run_owned(Zeroizing::new(input.to_vec()), limit, what)
    }

    /// [`Filter::run`] over an input it takes: no copy is made, and the input is wiped from
    /// memory once written (it may start with a passphrase).
    pub fn run_owned(&self, input: Zeroizing<Vec<u8>>, limit: u64, what: &str) -> Result<Vec<u8>> {
        let deadline = Instant::now() + self.timeout;
        // Messages name the program only: its arguments may hold a passphrase.
        let program = Path::new(&self.argv[0]);
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(program)
            .args(&self.argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills what it started too.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                Error::Config(format!(
                    "{}: cannot run {}: {}",
                    self.key,
                    program.display(),
                    crate::error::reason(&e)
                ))
            })?;
        let piped = pipe_threads(&mut child, input, limit);
        let status = wait_until(&mut child, deadline);
        let Some(status) = status else {
            kill_group(&mut child);
            return Err(Error::Failed(format!(
                "{what}: {} ({}) did not finish within {}; killed it (a command waiting for input such as a passphrase never will: give it what it needs non-interactively, or raise barman.command_timeout)",
                self.key,
                program.display(),
                crate::units::human_duration(self.timeout)
            )));
        };
        // The program has exited; what it wrote is in the pipes, unless something it started
        // in the background still holds them: that, too, is bounded.
        let Collected {
            out,
            err: stderr,
            wrote,
        } = collect(&piped, deadline.max(Instant::now() + GRACE));
        // Over the limit first: the pipe was closed on it, so its exit status says little.
        if let Some(Ok(out)) = &out
            && out.len() as u64 > limit
        {
            return Err(Error::Failed(format!(
                "{what}: {} wrote more than {limit} bytes; refusing it",
                self.key
            )));
        }
        if !status.success() {
            return Err(Error::Failed(format!(
                "{what}: {} ({}) failed with {status}: {}",
                self.key,
                program.display(),
                crate::error::one_line(&String::from_utf8_lossy(&stderr))
            )));
        }
        let out = match out {
            Some(Ok(out)) => out,
            Some(Err(e)) => {
                return Err(Error::io(format!("read the output of {}", self.key), e));
            }
            None => {
                kill_group(&mut child);
                return Err(Error::Failed(format!(
                    "{what}: {} ({}) exited but its output stayed open (a process it started holds it); refusing to wait for it",
                    self.key,
                    program.display()
                )));
            }
        };
        if !matches!(wrote, Some(Ok(()))) {
            return Err(Error::Failed(format!(
                "{what}: {} ({}) stopped reading its input",
                self.key,
                program.display()
            )));
        }
        Ok(out)
    }
}

/// How long the pipes may stay open after the program exited.
const GRACE: Duration = Duration::from_secs(2);

/// Feeds stdin and drains stdout (at most `limit` + 1 bytes, then the pipe is closed so the
/// program stops) and stderr from threads of their own: a filter that writes before it has
/// read everything cannot deadlock against us, and none of them can make us wait past the
/// deadline. The threads end when their pipe does.
fn pipe_threads(
    child: &mut std::process::Child,
    input: Zeroizing<Vec<u8>>,
    limit: u64,
) -> std::sync::mpsc::Receiver<Piped> {
    // Three messages at most: the channel never holds more.
    let (tx, rx) = std::sync::mpsc::sync_channel(3);
    if let Some(mut w) = child.stdin.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let r = w.write_all(&input);
            drop(w);
            let _ = tx.send(Piped::In(r));
        });
    } else {
        let _ = tx.send(Piped::In(Ok(())));
    }
    if let Some(r) = child.stdout.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            // Sized up front for small outputs (a passphrase command's): a vector that grows
            // leaves copies of what it held in memory it frees.
            let mut out = Vec::with_capacity(limit.saturating_add(1).min(1 << 20) as usize);
            let got = r.take(limit.saturating_add(1)).read_to_end(&mut out);
            let _ = tx.send(Piped::Out(got.map(|_| out)));
        });
    }
    if let Some(r) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut err = Vec::new();
            let mut r = r;
            let _ = (&mut r).take(STDERR_KEPT).read_to_end(&mut err);
            // Drain the rest so the program never blocks on a full stderr pipe.
            let _ = std::io::copy(&mut r, &mut std::io::sink());
            let _ = tx.send(Piped::Err(err));
        });
    }
    rx
}

/// What [`pipe_threads`] reported by a deadline; `None` for what did not come.
#[derive(Default)]
struct Collected {
    out: Option<std::io::Result<Vec<u8>>>,
    err: Vec<u8>,
    wrote: Option<std::io::Result<()>>,
}

/// The three reports of [`pipe_threads`], as far as they came by `deadline`.
fn collect(rx: &std::sync::mpsc::Receiver<Piped>, deadline: Instant) -> Collected {
    let mut c = Collected::default();
    for _ in 0..3 {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Piped::Out(o)) => c.out = Some(o),
            Ok(Piped::Err(e)) => c.err = e,
            Ok(Piped::In(w)) => c.wrote = Some(w),
            Err(_) => break,
        }
    }
    c
}

/// Waits for the child until `deadline`; `None` if it is still running then.
fn wait_until(
    child: &mut std::process::Child,
    deadline: Instant,
) -> Option<std::process::ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            // The child cannot be waited for: treat it as stuck, so it is killed.
            Err(_) => return None,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        std::thread::sleep(left.min(Duration::from_millis(5)));
    }
}

/// Kills the child's process group (it leads one of its own) and reaps the child.
pub(super) fn kill_group(child: &mut std::process::Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_run_without_a_shell_and_fail_loudly() {
        let cat = Filter::parse("cat", "barman.custom_decompression").expect("cat");
        assert_eq!(cat.run(b"abc", 10, "w").expect("cat"), b"abc");
        let e = cat.run(b"abcdef", 3, "w").expect_err("limit");
        assert!(e.to_string().contains("more than 3 bytes"), "{e}");
        let f = Filter::parse("false", "barman.custom_decompression").expect("false");
        let e = f.run(b"abc", 10, "w").expect_err("false");
        assert!(
            e.to_string()
                .contains("custom_decompression (false) failed"),
            "{e}"
        );
        // Arguments may hold a passphrase: failures name the program only.
        let f = Filter::parse("false --passphrase hunter2", "barman.decryption_command")
            .expect("false");
        let e = f.run(b"abc", 10, "w").expect_err("false");
        assert!(
            e.to_string().contains("(false) failed") && !e.to_string().contains("hunter2"),
            "{e}"
        );
        let missing = Filter::parse("/nonexistent/prog -d", "k").expect("parse");
        assert!(matches!(missing.run(b"", 1, "w"), Err(Error::Config(_))));
        assert_eq!(Filter::parse("  ", "k"), None);
        // `$(...)` is an argument like any other: nothing runs it.
        let echo = Filter::parse("echo $(id)", "k").expect("echo");
        assert_eq!(echo.run(b"", 100, "w").expect("echo"), b"$(id)\n");
    }

    #[test]
    fn a_filter_over_its_time_is_killed_with_what_it_started() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tmp");
        let script = d.path().join("waits");
        // Like a gpg waiting for a passphrase, with a helper of its own.
        std::fs::write(&script, "#!/bin/sh\nsleep 31.4159 &\nsleep 31.4159\n").expect("script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let f = Filter::parse(script.to_str().expect("utf8"), "barman.decryption_command")
            .expect("filter")
            .with_timeout(Duration::from_millis(300));
        let started = Instant::now();
        let e = f.run(b"x", 10, "WAL file w").expect_err("timeout");
        let msg = e.to_string();
        assert!(
            msg.starts_with("WAL file w: barman.decryption_command")
                && msg.contains("did not finish within")
                && msg.contains("barman.command_timeout"),
            "{msg}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        let left = || {
            std::fs::read_dir("/proc")
                .expect("proc")
                .flatten()
                .filter(|p| {
                    std::fs::read(p.path().join("cmdline"))
                        .is_ok_and(|c| c.windows(7).any(|w| w == b"31.4159"))
                })
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while left() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(left(), 0, "the filter's processes outlived its timeout");
    }

    #[test]
    fn a_filter_that_writes_without_end_is_stopped_at_the_limit() {
        let yes = Filter::parse("yes", "barman.custom_decompression").expect("yes");
        let e = yes.run(b"", 1000, "w").expect_err("endless");
        assert!(e.to_string().contains("more than 1000 bytes"), "{e}");
    }
}
