//! The compressed and encrypted forms Barman stores: which one a file is (from its first bytes,
//! or for tar archives from the file name pg_basebackup gave it), streaming decoders for each,
//! and the external commands for what no crate can decode (Barman's `custom` compression, GPG).
//!
//! Barman never renames a compressed WAL, so the content is the only witness of its format:
//! gzip/pigz `1f 8b 08`, bzip2 `BZh`, xz `fd 37 7a 58 5a 00`, zstd `28 b5 2f fd`, lz4 frame
//! `04 22 4d 18`, snappy framing `ff 06 00 00 sNaPpY`. GPG output has no magic of its own; it
//! starts with an OpenPGP packet header, which plain WAL pages and history files never do.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A compression format Barman (or pg_basebackup) writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// gzip (Barman `gzip`, `pygzip`, `pigz`; pg_basebackup `.tar.gz`).
    Gzip,
    /// bzip2 (`bzip2`, `pybzip2`).
    Bzip2,
    /// xz container (`xz`).
    Xz,
    /// zstd frames (`zstd`; `.tar.zst`).
    Zstd,
    /// LZ4 frame format (`lz4`; `.tar.lz4`).
    Lz4,
    /// Snappy framing format (`snappy`).
    Snappy,
}

impl Codec {
    /// Every codec, in the order their magic numbers are tried.
    pub const ALL: [Codec; 6] = [
        Codec::Gzip,
        Codec::Bzip2,
        Codec::Xz,
        Codec::Zstd,
        Codec::Lz4,
        Codec::Snappy,
    ];

    /// The first bytes of a stream in this format.
    pub fn magic(self) -> &'static [u8] {
        match self {
            Codec::Gzip => &[0x1f, 0x8b, 0x08],
            Codec::Bzip2 => b"BZh",
            Codec::Xz => &[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00],
            Codec::Zstd => &[0x28, 0xb5, 0x2f, 0xfd],
            Codec::Lz4 => &[0x04, 0x22, 0x4d, 0x18],
            Codec::Snappy => b"\xff\x06\x00\x00sNaPpY",
        }
    }

    /// Barman's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Bzip2 => "bzip2",
            Codec::Xz => "xz",
            Codec::Zstd => "zstd",
            Codec::Lz4 => "lz4",
            Codec::Snappy => "snappy",
        }
    }

    /// The codec a file of this content starts with, if any.
    pub fn sniff(head: &[u8]) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| head.starts_with(c.magic()))
    }

    /// The codec a tar archive's name says (`base.tar.gz`, `16386.tar.zst`), `Ok(None)` for a
    /// plain `.tar`. Other names are not archives pg_basebackup writes.
    pub fn of_tar_name(name: &str) -> Option<Option<Codec>> {
        let (_, ext) = name.split_once(".tar")?;
        match ext {
            "" => Some(None),
            ".gz" => Some(Some(Codec::Gzip)),
            ".lz4" => Some(Some(Codec::Lz4)),
            ".zst" => Some(Some(Codec::Zstd)),
            ".bz2" => Some(Some(Codec::Bzip2)),
            ".xz" => Some(Some(Codec::Xz)),
            _ => None,
        }
    }

    /// A reader of the decoded bytes of `input`. Concatenated members or frames are all read,
    /// as the command-line tools do.
    pub fn decoder<'a>(self, input: impl Read + Send + 'a) -> Result<Box<dyn Read + Send + 'a>> {
        Ok(match self {
            Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
            Codec::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(input)),
            Codec::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(input)),
            Codec::Zstd => Box::new(
                zstd::stream::read::Decoder::new(input)
                    .map_err(|e| Error::io("start the zstd decoder", e))?,
            ),
            Codec::Lz4 => Box::new(Lz4Stream(lz4_flex::frame::FrameDecoder::new(Lz4Ends::new(
                input,
            )))),
            Codec::Snappy => Box::new(snap::read::FrameDecoder::new(input)),
        })
    }
}

/// Whether content starts like GPG output: an OpenPGP public-key or symmetric-key encrypted
/// session key packet, in the old (`0x84`/`0x85`, `0x8c`/`0x8d`) or new (`0xc1`, `0xc3`) header
/// format. Barman asks `file(1)` the same question.
pub fn looks_encrypted(head: &[u8]) -> bool {
    matches!(head.first(), Some(0x84 | 0x85 | 0x8c | 0x8d | 0xc1 | 0xc3))
}

/// Decodes a whole buffer, refusing output larger than `limit` bytes (a damaged or hostile
/// stream must not exhaust memory). `what` names the file in errors.
pub fn decode_all(codec: Codec, data: &[u8], limit: u64, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    codec
        .decoder(data)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| {
            Error::Failed(format!(
                "{what}: corrupt or truncated {} data: {}",
                codec.name(),
                crate::error::reason(&e)
            ))
        })?;
    if out.len() as u64 > limit {
        return Err(Error::Failed(format!(
            "{what}: {} data decodes to more than {limit} bytes; refusing it",
            codec.name()
        )));
    }
    Ok(out)
}

/// How long an external filter may run on one file unless configured otherwise
/// (`barman.command_timeout`).
pub const DEFAULT_FILTER_TIMEOUT: Duration = Duration::from_secs(60);

/// The most of a filter's standard error kept for its failure message.
const STDERR_KEPT: u64 = 4096;

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
        let deadline = Instant::now() + self.timeout;
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
        let piped = pipe_threads(&mut child, input.to_vec(), limit);
        let status = wait_until(&mut child, deadline);
        let Some(status) = status else {
            kill_group(&mut child);
            return Err(Error::Failed(format!(
                "{what}: {} ({}) did not finish within {}; killed it (a command waiting for input such as a passphrase never will: give it what it needs non-interactively, or raise barman.command_timeout)",
                self.key,
                self.argv.join(" "),
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
                self.argv.join(" "),
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
                    self.argv.join(" ")
                )));
            }
        };
        if !matches!(wrote, Some(Ok(()))) {
            return Err(Error::Failed(format!(
                "{what}: {} ({}) stopped reading its input",
                self.key,
                self.argv.join(" ")
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
    input: Vec<u8>,
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
            let mut out = Vec::new();
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
fn kill_group(child: &mut std::process::Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The frames of an LZ4 stream, all of them: the decoder ends its output at each frame's end
/// mark, and reads a stream cut between two blocks as a clean end; [`Lz4Ends`] under it tells
/// the real end of the input from the end of a frame, and a cut from an end.
struct Lz4Stream<R: Read>(lz4_flex::frame::FrameDecoder<Lz4Ends<R>>);

impl<R: Read> Read for Lz4Stream<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.0.read(buf)?;
            if n > 0 || buf.is_empty() || self.0.get_ref().eof {
                return Ok(n);
            }
        }
    }
}

/// Passes an LZ4 frame stream through unchanged while following its structure (frame
/// headers, block sizes, end marks, checksums), so that the end of the input anywhere but
/// after a frame's end mark is an error: the decoder itself reads a stream cut between two
/// blocks as a clean end, and a truncated WAL would decode to a prefix.
#[derive(Debug)]
struct Lz4Ends<R> {
    inner: R,
    state: Lz4State,
    /// Bytes of the field being collected (magic, flags, block size).
    field: [u8; 4],
    got: usize,
    /// The frame's FLG byte.
    flags: u8,
    /// Frames completed.
    frames: u64,
    /// Whether the input has ended.
    eof: bool,
}

/// Where in the LZ4 frame format the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lz4State {
    /// Before a frame: its magic number (4 bytes).
    Magic,
    /// FLG and BD (2 bytes).
    Flags,
    /// A block size (4 bytes).
    BlockSize,
    /// Bytes to pass over (the rest of a header, a block, a checksum), then the next state.
    Skip(u64, Lz4Next),
    /// A format this guard does not follow (a legacy or skippable frame): the decoder judges.
    Opaque,
}

/// What follows a [`Lz4State::Skip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lz4Next {
    Block,
    FrameEnd,
}

impl<R> Lz4Ends<R> {
    fn new(inner: R) -> Self {
        Lz4Ends {
            inner,
            state: Lz4State::Magic,
            field: [0; 4],
            got: 0,
            flags: 0,
            frames: 0,
            eof: false,
        }
    }

    /// Follows `data` through the format.
    fn follow(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                Lz4State::Opaque => return,
                Lz4State::Skip(n, next) => {
                    let step = n.min(data.len() as u64);
                    data = &data[step as usize..];
                    self.state = match (n - step, next) {
                        (0, Lz4Next::Block) => Lz4State::BlockSize,
                        (0, Lz4Next::FrameEnd) => {
                            self.frames += 1;
                            Lz4State::Magic
                        }
                        (left, next) => Lz4State::Skip(left, next),
                    };
                }
                Lz4State::Magic | Lz4State::Flags | Lz4State::BlockSize => {
                    let need = if self.state == Lz4State::Flags { 2 } else { 4 };
                    let take = (need - self.got).min(data.len());
                    self.field[self.got..self.got + take].copy_from_slice(&data[..take]);
                    self.got += take;
                    data = &data[take..];
                    if self.got == need {
                        self.got = 0;
                        self.state = self.field_done();
                    }
                }
            }
        }
    }

    /// The state after a complete field.
    fn field_done(&mut self) -> Lz4State {
        let word = u32::from_le_bytes(self.field);
        match self.state {
            Lz4State::Magic if word == 0x184D_2204 => Lz4State::Flags,
            Lz4State::Magic => Lz4State::Opaque,
            Lz4State::Flags => {
                self.flags = self.field[0];
                // Content size (8), dictionary id (4), header checksum (1).
                let rest = 1
                    + if self.flags & 0x08 != 0 { 8 } else { 0 }
                    + if self.flags & 0x01 != 0 { 4 } else { 0 };
                Lz4State::Skip(rest, Lz4Next::Block)
            }
            Lz4State::BlockSize if word == 0 => {
                let checksum = if self.flags & 0x04 != 0 { 4 } else { 0 };
                if checksum == 0 {
                    self.frames += 1;
                    Lz4State::Magic
                } else {
                    Lz4State::Skip(checksum, Lz4Next::FrameEnd)
                }
            }
            Lz4State::BlockSize => {
                let checksum = if self.flags & 0x10 != 0 { 4 } else { 0 };
                Lz4State::Skip(u64::from(word & 0x7FFF_FFFF) + checksum, Lz4Next::Block)
            }
            other => other,
        }
    }

    /// Whether the input may end here.
    fn at_end(&self) -> bool {
        match self.state {
            Lz4State::Opaque => true,
            Lz4State::Magic => self.got == 0 && self.frames > 0,
            _ => false,
        }
    }
}

impl<R: Read> Read for Lz4Ends<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.eof = n == 0 && !buf.is_empty();
        if self.eof && !self.at_end() {
            // Not UnexpectedEof: the decoder takes that for a clean end between blocks.
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the lz4 stream ends before its end mark (truncated)",
            ));
        }
        self.follow(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_magic_is_recognised_and_plain_data_is_not() {
        for c in Codec::ALL {
            let mut head = c.magic().to_vec();
            head.extend_from_slice(&[0; 8]);
            assert_eq!(Codec::sniff(&head), Some(c), "{}", c.name());
        }
        // A PostgreSQL 15 WAL page (magic 0xD110, little-endian) and a history file.
        assert_eq!(Codec::sniff(&[0x10, 0xd1, 0x02, 0x00]), None);
        assert_eq!(Codec::sniff(b"1\t0/3000000\tno recovery target\n"), None);
        assert!(!looks_encrypted(&[0x10, 0xd1]));
        assert!(looks_encrypted(&[0x85, 0x02, 0x0c]));
        assert!(looks_encrypted(&[0xc1, 0xc0]));
    }

    #[test]
    fn tar_names_say_their_codec() {
        assert_eq!(Codec::of_tar_name("base.tar"), Some(None));
        assert_eq!(Codec::of_tar_name("base.tar.gz"), Some(Some(Codec::Gzip)));
        assert_eq!(Codec::of_tar_name("16386.tar.zst"), Some(Some(Codec::Zstd)));
        assert_eq!(Codec::of_tar_name("16386.tar.lz4"), Some(Some(Codec::Lz4)));
        assert_eq!(Codec::of_tar_name("base.tar.gz.gpg"), None);
        assert_eq!(Codec::of_tar_name("backup_manifest"), None);
    }

    #[test]
    fn decoding_is_bounded() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&[7u8; 10_000]).expect("gz");
        let gz = enc.finish().expect("gz");
        assert_eq!(
            decode_all(Codec::Gzip, &gz, 10_000, "x").expect("fits"),
            vec![7u8; 10_000]
        );
        let e = decode_all(Codec::Gzip, &gz, 9_999, "x").expect_err("too big");
        assert!(e.to_string().contains("more than 9999 bytes"), "{e}");
        let e = decode_all(Codec::Gzip, &gz[..gz.len() / 2], 10_000, "w").expect_err("cut");
        assert!(
            e.to_string().starts_with("w: corrupt or truncated gzip"),
            "{e}"
        );
    }

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

    #[test]
    fn lz4_frames_must_end_with_their_end_mark() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let info = lz4_flex::frame::FrameInfo::new()
            .block_size(lz4_flex::frame::BlockSize::Max64KB)
            .block_checksums(true)
            .content_checksum(true);
        let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(&data).expect("lz4");
        let frame = enc.finish().expect("lz4");
        // Two frames in a row decode to both.
        let two = [frame.clone(), frame.clone()].concat();
        let got = decode_all(Codec::Lz4, &two, 1 << 20, "w").expect("two");
        assert!(
            got == [data.clone(), data.clone()].concat(),
            "{} bytes",
            got.len()
        );
        // Cut before the end mark (after the last block) or before the content checksum.
        for cut in [frame.len() - 8, frame.len() - 4, frame.len() - 1] {
            let e = decode_all(Codec::Lz4, &frame[..cut], 1 << 20, "w").expect_err("cut");
            assert!(e.to_string().contains("truncated"), "{cut}: {e}");
        }
        assert_eq!(
            decode_all(Codec::Lz4, &frame, 1 << 20, "w").expect("whole"),
            data
        );
    }
}
