//! Decrypting what Barman encrypted (`encryption = gpg`: a tar backup's `base.tar*.gpg`, every
//! WAL archived while it was on): through `barman.decryption_command`, a program that decrypts
//! stdin to stdout, or through `gpg` with the passphrase Barman's own
//! `encryption_passphrase_command` prints, run once per run by the shell as Barman runs it.
//!
//! The passphrase reaches gpg as the first line of its standard input (`--passphrase-fd 0`: gpg
//! reads that line before it reads any data) and the ciphertext follows on the same pipe: no
//! temporary file, no argument `ps` could show. A whole archive streams through gpg
//! ([`Decryption::stream`]); a gpg that stops making progress for the command timeout is
//! killed with what it started.

use std::io::{Read, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::Filter;
use super::filter::{STDERR_KEPT, kill_group};
use crate::error::{Error, Result, one_line};

/// The key messages name for the passphrase command.
const PASSPHRASE_KEY: &str = "encryption_passphrase_command";
/// The key messages name for gpg run with that passphrase.
const GPG_KEY: &str = "gpg (Barman's encryption = gpg)";

/// How Barman's GPG-encrypted files are decrypted. Clones share the passphrase, read once.
#[derive(Clone)]
pub struct Decryption {
    /// The program that decrypts stdin to stdout.
    filter: Filter,
    /// Where its passphrase comes from, for gpg run by us.
    passphrase: Option<Arc<Passphrase>>,
}

/// Barman's `encryption_passphrase_command` and, once it ran, what it printed.
struct Passphrase {
    /// `sh -c COMMAND`, as Barman runs it.
    command: Filter,
    /// Where the command was configured, for messages (never the command: it may hold secrets).
    source: String,
    value: Mutex<Option<Zeroizing<Vec<u8>>>>,
    /// Why the command must not run (a config others could write), if so.
    refused: Option<String>,
}

impl std::fmt::Debug for Decryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The program only: arguments and the passphrase command may hold secrets.
        f.debug_struct("Decryption")
            .field("program", &self.filter.argv[0])
            .field(
                "passphrase_from",
                &self.passphrase.as_ref().map(|p| &p.source),
            )
            .finish()
    }
}

impl PartialEq for Decryption {
    fn eq(&self, other: &Self) -> bool {
        self.filter == other.filter
            && self.passphrase.as_ref().map(|p| (&p.command, &p.source))
                == other.passphrase.as_ref().map(|p| (&p.command, &p.source))
    }
}

impl Eq for Decryption {}

impl Decryption {
    /// A program that decrypts stdin to stdout (`barman.decryption_command`).
    pub fn command(filter: Filter) -> Decryption {
        Decryption {
            filter,
            passphrase: None,
        }
    }

    /// `gpg` with the passphrase `command` prints (Barman's `encryption_passphrase_command`,
    /// configured in `source`); every run bounded by `timeout`.
    pub fn barman(command: &str, source: String, timeout: Duration) -> Decryption {
        let argv = [
            "gpg",
            "--batch",
            "--yes",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase-fd",
            "0",
            "--decrypt",
        ];
        Decryption {
            filter: Filter {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                key: GPG_KEY,
                timeout,
            },
            passphrase: Some(Arc::new(Passphrase {
                command: Filter {
                    argv: vec!["sh".into(), "-c".into(), command.into()],
                    key: PASSPHRASE_KEY,
                    timeout,
                },
                source,
                value: Mutex::new(None),
                refused: None,
            })),
        }
    }

    /// Barman's passphrase command that must not run, for `why`: only a restore that meets an
    /// encrypted file fails, with `why`; plaintext backups still restore.
    pub fn barman_refused(source: String, why: String, timeout: Duration) -> Decryption {
        let mut d = Decryption::barman("false", source, timeout);
        if let Some(p) = d.passphrase.as_mut().and_then(Arc::get_mut) {
            p.refused = Some(why);
        }
        d
    }

    /// What decrypts, for messages: the setting, never its value.
    pub fn describe(&self) -> String {
        match &self.passphrase {
            Some(p) => format!(
                "gpg with the passphrase of {PASSPHRASE_KEY} in {}",
                p.source
            ),
            None => self.filter.key.to_string(),
        }
    }

    /// Runs the passphrase command now (once per run), so a restore that cannot decrypt fails
    /// before it writes anything.
    pub fn ready(&self) -> Result<()> {
        self.head().map(drop)
    }

    /// The bytes gpg reads before the data: the passphrase and a newline (nothing for a
    /// configured command).
    fn head(&self) -> Result<Zeroizing<Vec<u8>>> {
        let Some(p) = &self.passphrase else {
            return Ok(Zeroizing::new(Vec::new()));
        };
        if let Some(why) = &p.refused {
            return Err(Error::Config(why.clone()));
        }
        let mut cached = p.value.lock().unwrap_or_else(|e| e.into_inner());
        if cached.is_none() {
            let what = format!("{PASSPHRASE_KEY} in {}", p.source);
            let out = Zeroizing::new(p.command.run(&[], 4096, &what)?);
            let text = out.trim_ascii();
            if text.is_empty() {
                return Err(Error::Config(format!(
                    "{what} printed no passphrase; it must print the passphrase of the GPG key Barman encrypted to"
                )));
            }
            *cached = Some(Zeroizing::new(text.to_vec()));
        }
        let value = cached.as_deref().map_or(&[][..], Vec::as_slice);
        // Sized up front: a growing vector would leave copies of the passphrase behind.
        let mut head = Zeroizing::new(Vec::with_capacity(value.len() + 1));
        head.extend_from_slice(value);
        head.push(b'\n');
        Ok(head)
    }

    /// Decrypts `data` whole (a WAL file); at most `limit` bytes of output.
    pub fn run(&self, data: &[u8], limit: u64, what: &str) -> Result<Vec<u8>> {
        let head = self.head()?;
        let mut input = Zeroizing::new(Vec::with_capacity(head.len() + data.len()));
        input.extend_from_slice(&head);
        input.extend_from_slice(data);
        self.filter
            .run_owned(input, limit, what)
            .map_err(|e| self.hint(e))
    }

    /// Decrypts `input` as a stream: the returned reader yields the plaintext; call
    /// [`Decrypting::finish`] after its end to learn whether the decryption succeeded.
    pub fn stream(&self, input: impl Read + Send + 'static, what: &str) -> Result<Decrypting> {
        let head = self.head()?;
        let program = &self.filter.argv[0];
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(program)
            .args(&self.filter.argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| {
                Error::Config(format!(
                    "{what}: {}: cannot run {program}: {}",
                    self.filter.key,
                    crate::error::reason(&e)
                ))
            })?;
        let progress = Arc::new(AtomicU64::new(0));
        let (tx, reports) = std::sync::mpsc::sync_channel(2);
        let stdin = child.stdin.take();
        let stderr = child.stderr.take();
        let stdout = child.stdout.take();
        let fed = Arc::clone(&progress);
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            let r = match stdin {
                Some(w) => feed(w, head, input, &fed),
                None => Ok(()),
            };
            let _ = tx2.send(Report::Fed(r));
        });
        std::thread::spawn(move || {
            let mut err = Vec::new();
            if let Some(mut r) = stderr {
                let _ = (&mut r).take(STDERR_KEPT).read_to_end(&mut err);
                let _ = std::io::copy(&mut r, &mut std::io::sink());
            }
            let _ = tx.send(Report::Stderr(err));
        });
        let (stop, stopped) = std::sync::mpsc::channel();
        let watchdog = watch(
            child.id(),
            Arc::clone(&progress),
            self.filter.timeout,
            stopped,
        );
        Ok(Decrypting {
            child,
            stdout,
            progress,
            reports,
            stop: Some(stop),
            watchdog: Some(watchdog),
            what: what.to_string(),
            dec: self.clone(),
        })
    }

    /// The error, with what to do when gpg lacks the secret key.
    fn hint(&self, e: Error) -> Error {
        match e {
            Error::Failed(m) if m.contains("No secret key") => Error::Failed(format!(
                "{m}; import the secret key Barman encrypted to (its encryption_key_id) into the keyring of this user (GNUPGHOME)"
            )),
            Error::Failed(m) if m.contains("Bad passphrase") => Error::Failed(format!(
                "{m}; {} gives another passphrase than the key's",
                self.describe()
            )),
            e => e,
        }
    }
}

/// What the threads around a streaming decryption report.
enum Report {
    /// Whether all of the input reached gpg.
    Fed(std::io::Result<()>),
    /// The start of gpg's standard error.
    Stderr(Vec<u8>),
}

/// Writes the passphrase line, then the input, counting bytes as progress. Dropping the input
/// at the end (or on a broken pipe) tells the download its reader is gone.
fn feed(
    mut w: impl Write,
    head: Zeroizing<Vec<u8>>,
    mut input: impl Read,
    progress: &AtomicU64,
) -> std::io::Result<()> {
    w.write_all(&head)?;
    drop(head);
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        progress.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Kills the process group of `pid` when `progress` stands still for `timeout`; ends when
/// `stop` is dropped. Says whether it killed.
fn watch(
    pid: u32,
    progress: Arc<AtomicU64>,
    timeout: Duration,
    stop: Receiver<()>,
) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        let mut seen = progress.load(Ordering::Relaxed);
        let mut since = Instant::now();
        loop {
            match stop.recv_timeout(Duration::from_millis(200)) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return false,
            }
            let now = progress.load(Ordering::Relaxed);
            if now != seen {
                (seen, since) = (now, Instant::now());
            } else if since.elapsed() >= timeout {
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                return true;
            }
        }
    })
}

/// A decryption in flight: read the plaintext, then [`Decrypting::finish`].
pub struct Decrypting {
    child: Child,
    stdout: Option<ChildStdout>,
    progress: Arc<AtomicU64>,
    reports: Receiver<Report>,
    /// Dropped to end the watchdog.
    stop: Option<Sender<()>>,
    watchdog: Option<std::thread::JoinHandle<bool>>,
    what: String,
    dec: Decryption,
}

impl std::fmt::Debug for Decrypting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decrypting")
            .field("what", &self.what)
            .field("pid", &self.child.id())
            .finish()
    }
}

impl Read for Decrypting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(out) = self.stdout.as_mut() else {
            return Ok(0);
        };
        let n = out.read(buf)?;
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// How long gpg may take to exit once its output ended, and its reports to come.
const GRACE: Duration = Duration::from_secs(5);

impl Decrypting {
    /// After the plaintext was read to its end: whether gpg decrypted all of it (its exit
    /// status, the whole input fed, no stall). Bounded in time; gpg is killed if it lingers.
    pub fn finish(mut self) -> Result<()> {
        let rest = self
            .stdout
            .as_mut()
            .map(|o| std::io::copy(o, &mut std::io::sink()));
        self.stdout = None;
        self.outcome(GRACE, rest.is_some_and(|r| r.is_ok_and(|n| n > 0)))
    }

    /// Why the decryption failed, when gpg did (asked after the reader of the plaintext
    /// stopped early): `Some` once gpg has exited unsuccessfully on its own within a short
    /// wait. A gpg still running or done well is no cause; it is stopped when this goes.
    pub fn failure(mut self) -> Option<Error> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) if s.success() => return None,
                Ok(Some(_)) => return self.outcome(GRACE, false).err(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => return None,
            }
        }
    }

    fn outcome(&mut self, grace: Duration, trailing: bool) -> Result<()> {
        let deadline = Instant::now() + grace;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => break None,
            }
        };
        let (mut fed, mut stderr) = (None, None);
        while fed.is_none() || stderr.is_none() {
            match self
                .reports
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Report::Fed(r)) => fed = Some(r),
                Ok(Report::Stderr(e)) => stderr = Some(e),
                Err(_) => break,
            }
        }
        if status.is_none() {
            kill_group(&mut self.child);
        }
        self.stop = None;
        let killed = self
            .watchdog
            .take()
            .is_some_and(|w| w.join().unwrap_or(false));
        let (what, key) = (&self.what, self.dec.filter.key);
        let program = &self.dec.filter.argv[0];
        let status = match status {
            Some(s) if !killed => s,
            _ => {
                return Err(Error::Failed(format!(
                    "{what}: {key} ({program}) made no progress within {}; killed it (raise barman.command_timeout if the storage is that slow)",
                    crate::units::human_duration(self.dec.filter.timeout)
                )));
            }
        };
        if !status.success() {
            let stderr = stderr.unwrap_or_default();
            return Err(self.dec.hint(Error::Failed(format!(
                "{what}: {key} ({program}) failed with {status}: {}",
                one_line(&String::from_utf8_lossy(&stderr))
            ))));
        }
        if trailing {
            return Err(Error::Failed(format!(
                "{what}: {key} ({program}) wrote more after the end of the archive; refusing it"
            )));
        }
        match fed {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(Error::Failed(format!(
                "{what}: {key} ({program}) stopped reading the encrypted data: {}",
                crate::error::reason(&e)
            ))),
            None => Err(Error::Failed(format!(
                "{what}: {key} ({program}) exited before all of the encrypted data arrived"
            ))),
        }
    }
}

impl Drop for Decrypting {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            kill_group(&mut self.child);
        }
    }
}

#[cfg(test)]
#[path = "gpg_tests.rs"]
mod tests;
