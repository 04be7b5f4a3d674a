//! Watching a store's requests ([`observe`], [`Observer`]), and the observer behind
//! `--request-log FILE` ([`wrap`]): one line per request, for cost accounting.
//!
//! Two formats. `droplet` writes what Bareos' droplet library writes to its pricing file
//! (`unix_time;TYPE;SUBTYPE;bytes`, successful requests only), so scripts made for droplet's CSV
//! read ours. `extended` is a CSV with a header and one line per attempt that got an answer
//! (providers bill those, failed ones included): time, command, operation, HTTP status, attempt,
//! bytes sent and received, key, and the request's duration (a GET's until its body was read;
//! last, so scripts written for the first eight columns keep working).
//!
//! The file is opened with `O_APPEND` and every line goes out in one `write(2)`, so runs
//! appending to the same file at once never interleave inside a line and a crash leaves whole
//! lines. Only operation names, sizes and keys are written: never a credential, header or URL.
//! A log that cannot be written costs a warning, never the run. The file is often in `/tmp`, so
//! a symbolic link there is not followed, a FIFO never makes the run wait, and only a regular
//! file of this user (or root) is written; anything else is the same one warning and no log.
//!
//! What the status column can know: a successful request is logged with the status S3 gives
//! that operation (200; 206 for a ranged GET; 204 for an abort), since the store layer sees our
//! typed result rather than the HTTP response; a refusal with the status the server sent; a
//! missing object as 404. A request that got no answer (connection refused or reset, timeout)
//! has no line. On `file://` stores the same statuses stand for the local outcome.

use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use super::SharedStore;
use crate::error::{Error, Result};
#[cfg(test)]
use line::field;
use line::line;

/// The header line of the extended format.
pub const EXTENDED_HEADER: &str =
    "unix_ms,command,operation,http_status,attempt,bytes_sent,bytes_received,key,duration_ms\n";

/// Line format of the request log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Bareos droplet's pricing lines: `unix_time;TYPE;SUBTYPE;bytes`.
    Droplet,
    /// CSV with a header: time, command, operation, status, attempt, bytes, key, duration.
    Extended,
}

/// Where and how to log requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLog {
    /// The file lines are appended to.
    pub path: PathBuf,
    /// Line format.
    pub format: LogFormat,
}

tokio::task_local! {
    static ATTEMPT: u32;
}

/// Runs `fut` as attempt `n` (1-based) of a request: the retry loop announces each attempt so
/// that store wrappers can tell a first request from a repeat.
pub async fn attempt_scope<F: Future>(n: u32, fut: F) -> F::Output {
    ATTEMPT.scope(n, fut).await
}

/// The attempt number of the request being made, `None` outside a retry loop.
pub fn current_attempt() -> Option<u32> {
    ATTEMPT.try_with(|a| *a).ok()
}

/// Wraps `store` so that every request is logged, when a log is asked for.
pub fn wrap(store: SharedStore, log: Option<&RequestLog>) -> SharedStore {
    match log {
        None => store,
        Some(log) => observe(store, Arc::new(FileLog::open(log, command_of(args())))),
    }
}

/// Wraps `store` so that `observer` sees every request it forwards.
pub fn observe(store: SharedStore, observer: Arc<dyn Observer>) -> SharedStore {
    Arc::new(observed::ObservedStore {
        inner: store,
        observer,
    })
}

/// Something that watches the requests a store makes: the request log, a volume's status, the
/// run's counters.
pub trait Observer: Send + Sync + fmt::Debug {
    /// A request is about to be sent.
    fn sending(&self, _req: &Request<'_>) {}
    /// A request ended: with the HTTP status of its answer, or `None` when no answer came back
    /// (see the module's note on what the status can know); `received` body bytes.
    fn answered(&self, req: &Request<'_>, status: Option<u16>, received: u64);
}

/// One request as observers see it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The operation.
    pub op: Op,
    /// The key (a listing's prefix; a batch delete's first key).
    pub key: &'a str,
    /// 1-based attempt, from the retry loop.
    pub attempt: u32,
    /// Body bytes sent.
    pub sent: u64,
    /// Whether a GET asked for a range.
    pub ranged: bool,
    /// When it was sent (a GET ends when its body has been read).
    pub started: Instant,
}

/// This process's arguments (lossy: a name that is not UTF-8 must not stop the run).
fn args() -> Vec<String> {
    std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// The barmans3 command a process runs, from its arguments: the first word that is not an
/// option or an option's value, with the second for command families (`volume put`).
fn command_of(args: impl IntoIterator<Item = String>) -> String {
    const WITH_VALUE: [&str; 4] = [
        "--config",
        "--store",
        "--request-log",
        "--request-log-format",
    ];
    const FAMILIES: [&str; 4] = ["volume", "store", "queue", "config"];
    let mut words = Vec::new();
    let mut it = args.into_iter().skip(1);
    while let Some(a) = it.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            it.next();
        } else if !a.starts_with('-') {
            words.push(a);
            if words.len() == 2 || !FAMILIES.contains(&words[0].as_str()) {
                break;
            }
        }
    }
    words.join(" ")
}

/// S3 operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // The names are S3's operation names.
pub enum Op {
    Put,
    Get,
    Head,
    List,
    Delete,
    CreateMultipart,
    UploadPart,
    CompleteMultipart,
    AbortMultipart,
    ListParts,
    ListMultipart,
    Copy,
    UploadPartCopy,
    Restore,
    ListVersions,
    PutRetention,
}

impl Op {
    /// S3's name of the operation.
    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "PutObject",
            Op::Get => "GetObject",
            Op::Head => "HeadObject",
            Op::List => "ListObjectsV2",
            Op::Delete => "DeleteObjects",
            Op::CreateMultipart => "CreateMultipartUpload",
            Op::UploadPart => "UploadPart",
            Op::CompleteMultipart => "CompleteMultipartUpload",
            Op::AbortMultipart => "AbortMultipartUpload",
            Op::ListParts => "ListParts",
            Op::ListMultipart => "ListMultipartUploads",
            Op::Copy => "CopyObject",
            Op::UploadPartCopy => "UploadPartCopy",
            Op::Restore => "RestoreObject",
            Op::ListVersions => "ListObjectVersions",
            Op::PutRetention => "PutObjectRetention",
        }
    }

    /// Droplet's `TYPE;SUBTYPE` for the operation (its `rest.c` calls mapped onto S3's).
    fn droplet(self) -> &'static str {
        match self {
            Op::List | Op::ListParts | Op::ListMultipart | Op::ListVersions => "REQUEST;LIST",
            Op::Copy | Op::UploadPartCopy | Op::Restore => "DATA;PUT",
            Op::Put | Op::UploadPart | Op::CreateMultipart | Op::CompleteMultipart => "DATA;IN",
            Op::Get => "DATA;OUT",
            Op::Head | Op::PutRetention => "DATA;GET",
            Op::Delete | Op::AbortMultipart => "DATA;DELETE",
        }
    }
}

/// The HTTP status an outcome stands for, or `None` when no answer came back.
fn status_of<T>(req: &Request<'_>, r: &Result<T>) -> Option<u16> {
    match r {
        Ok(_) if req.op == Op::AbortMultipart => Some(204),
        Ok(_) if req.ranged => Some(206),
        Ok(_) => Some(200),
        Err(Error::NotFound { .. }) => Some(404),
        Err(Error::Store(f)) => f.status,
        Err(_) => None,
    }
}

/// The request log file.
struct FileLog {
    path: PathBuf,
    file: Option<File>,
    format: LogFormat,
    command: String,
    warned: AtomicBool,
}

impl fmt::Debug for FileLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request log {} ({:?})", self.path.display(), self.format)
    }
}

impl FileLog {
    fn open(log: &RequestLog, command: String) -> FileLog {
        let mut sink = FileLog {
            path: log.path.clone(),
            file: None,
            format: log.format,
            command,
            warned: AtomicBool::new(false),
        };
        match open_log(log) {
            Ok(f) => sink.file = Some(f),
            Err(e) => sink.warn(&e),
        }
        sink
    }

    fn warn(&self, e: &std::io::Error) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "request log {}: {}; requests are not being logged",
                self.path.display(),
                crate::error::reason(e)
            );
        }
    }
}

impl Observer for FileLog {
    fn answered(&self, req: &Request<'_>, status: Option<u16>, received: u64) {
        let (Some(file), Some(status)) = (&self.file, status) else {
            return;
        };
        let now = SystemTime::now();
        let took = req.started.elapsed();
        let Some(text) = line(self.format, &self.command, now, req, status, received, took) else {
            return;
        };
        if let Err(e) = append(file, text.as_bytes()) {
            self.warn(&e);
        }
    }
}

/// Opens the log for appending (0600 when created; never through a symbolic link, never
/// waiting on a FIFO, only a regular file of this user or root: it is often in `/tmp`) and
/// writes the extended header into an empty file, under an exclusive lock so two runs
/// starting at once write it once.
fn open_log(log: &RequestLog) -> std::io::Result<File> {
    let file = crate::fsutil::open_append_owned(&log.path)?;
    if log.format == LogFormat::Extended {
        file.lock()?;
        let result = match file.metadata() {
            Ok(m) if m.len() == 0 => append(&file, EXTENDED_HEADER.as_bytes()),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        file.unlock()?;
        result?;
    }
    Ok(file)
}

/// One `write(2)` of a whole line on an `O_APPEND` file: the kernel places it at the end in one
/// piece, whatever other writers do. A short write (a full disk) finishes the line rather than
/// leave half of one for the next line to run into.
fn append(mut file: &File, line: &[u8]) -> std::io::Result<()> {
    let n = file.write(line)?;
    if n < line.len() {
        file.write_all(&line[n..])?;
        return Err(std::io::Error::other("short write"));
    }
    Ok(())
}

mod line;
mod observed;
#[cfg(test)]
mod tests;
