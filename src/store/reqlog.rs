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
//! A log that cannot be written costs a warning, never the run.
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

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    BodyReader, ByteRange, ChecksumAlgorithm, DeleteFailure, FileRange, GetResponse, Integrity,
    ListPage, ListRequest, MultipartUpload, ObjectMeta, PartReceipt, PutOptions, PutReceipt,
    SharedStore, Store,
};
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
    Arc::new(ObservedStore {
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
        }
    }

    /// Droplet's `TYPE;SUBTYPE` for the operation (its `rest.c` calls mapped onto S3's).
    fn droplet(self) -> &'static str {
        match self {
            Op::List | Op::ListParts | Op::ListMultipart => "REQUEST;LIST",
            Op::Copy | Op::UploadPartCopy | Op::Restore => "DATA;PUT",
            Op::Put | Op::UploadPart | Op::CreateMultipart | Op::CompleteMultipart => "DATA;IN",
            Op::Get => "DATA;OUT",
            Op::Head => "DATA;GET",
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

/// Opens the log for appending (0600 when created) and writes the extended header into an
/// empty file, under an exclusive lock so two runs starting at once write it once.
fn open_log(log: &RequestLog) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&log.path)?;
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

/// A store that shows every request it forwards to an observer.
#[derive(Debug)]
struct ObservedStore {
    inner: SharedStore,
    observer: Arc<dyn Observer>,
}

impl ObservedStore {
    /// Announces a request, awaits it and reports its outcome.
    async fn observed<T>(
        &self,
        op: Op,
        key: &str,
        sent: u64,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let req = Request {
            op,
            key,
            attempt: current_attempt().unwrap_or(1),
            sent,
            ranged: false,
            started: Instant::now(),
        };
        self.observer.sending(&req);
        let r = fut.await;
        self.observer.answered(&req, status_of(&req, &r), 0);
        r
    }
}

/// A GET body that reports its request once the body ends, fails or is dropped, with the
/// bytes actually received.
struct ObservedBody {
    inner: Box<dyn BodyReader>,
    observer: Arc<dyn Observer>,
    key: String,
    attempt: u32,
    ranged: bool,
    started: Instant,
    received: u64,
    reported: bool,
}

impl fmt::Debug for ObservedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "observed body of {}", self.key)
    }
}

impl ObservedBody {
    fn report(&mut self) {
        if !self.reported {
            self.reported = true;
            let req = Request {
                op: Op::Get,
                key: &self.key,
                attempt: self.attempt,
                sent: 0,
                ranged: self.ranged,
                started: self.started,
            };
            let status = status_of(&req, &Ok(()));
            self.observer.answered(&req, status, self.received);
        }
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        self.report();
    }
}

#[async_trait]
impl BodyReader for ObservedBody {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        let c = self.inner.next_chunk().await;
        match &c {
            Ok(Some(b)) => self.received += b.len() as u64,
            Ok(None) | Err(_) => self.report(),
        }
        c
    }
}

#[async_trait]
impl Store for ObservedStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        integrity: Integrity,
        opts: &PutOptions,
    ) -> Result<PutReceipt> {
        let n = body.len() as u64;
        let fut = self.inner.put(key, body, integrity, opts);
        self.observed(Op::Put, key, n, fut).await
    }
    async fn put_file(
        &self,
        key: &str,
        body: &FileRange,
        integrity: Integrity,
        opts: &PutOptions,
    ) -> Result<PutReceipt> {
        let fut = self.inner.put_file(key, body, integrity, opts);
        self.observed(Op::Put, key, body.range.len(), fut).await
    }
    async fn upload_part_file(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: &FileRange,
        integrity: Integrity,
    ) -> Result<PartReceipt> {
        let fut = self
            .inner
            .upload_part_file(key, upload_id, part_number, body, integrity);
        self.observed(Op::UploadPart, key, body.range.len(), fut)
            .await
    }
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetResponse> {
        let req = Request {
            op: Op::Get,
            key,
            attempt: current_attempt().unwrap_or(1),
            sent: 0,
            ranged: range.is_some(),
            started: Instant::now(),
        };
        self.observer.sending(&req);
        match self.inner.get(key, range).await {
            // The answer is reported when its body has been read.
            Ok(mut resp) => {
                resp.body = Box::new(ObservedBody {
                    inner: resp.body,
                    observer: self.observer.clone(),
                    key: key.to_string(),
                    attempt: req.attempt,
                    ranged: req.ranged,
                    started: req.started,
                    received: 0,
                    reported: false,
                });
                Ok(resp)
            }
            Err(e) => {
                let r = Err(e);
                self.observer.answered(&req, status_of(&req, &r), 0);
                r
            }
        }
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.observed(Op::Head, key, 0, self.inner.head(key)).await
    }
    async fn list_page(&self, req: &ListRequest, token: Option<&str>) -> Result<ListPage> {
        let fut = self.inner.list_page(req, token);
        self.observed(Op::List, &req.prefix, 0, fut).await
    }
    async fn delete_batch(&self, keys: &[String]) -> Result<Vec<DeleteFailure>> {
        // One request, one line: the key column names the batch's first key.
        let first = keys.first().map(String::as_str).unwrap_or("");
        let fut = self.inner.delete_batch(keys);
        self.observed(Op::Delete, first, 0, fut).await
    }
    async fn create_multipart(
        &self,
        key: &str,
        algorithm: Option<ChecksumAlgorithm>,
        opts: &PutOptions,
    ) -> Result<String> {
        let fut = self.inner.create_multipart(key, algorithm, opts);
        self.observed(Op::CreateMultipart, key, 0, fut).await
    }
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
        integrity: Integrity,
    ) -> Result<PartReceipt> {
        let n = body.len() as u64;
        let fut = self
            .inner
            .upload_part(key, upload_id, part_number, body, integrity);
        self.observed(Op::UploadPart, key, n, fut).await
    }
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[PartReceipt],
    ) -> Result<PutReceipt> {
        let fut = self.inner.complete_multipart(key, upload_id, parts);
        self.observed(Op::CompleteMultipart, key, 0, fut).await
    }
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        let fut = self.inner.abort_multipart(key, upload_id);
        self.observed(Op::AbortMultipart, key, 0, fut).await
    }
    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<PartReceipt>> {
        let fut = self.inner.list_parts(key, upload_id);
        self.observed(Op::ListParts, key, 0, fut).await
    }
    async fn list_multipart(&self, prefix: &str) -> Result<Vec<MultipartUpload>> {
        let fut = self.inner.list_multipart(prefix);
        self.observed(Op::ListMultipart, prefix, 0, fut).await
    }
    async fn object_lock_status(&self) -> Result<Option<String>> {
        let fut = self.inner.object_lock_status();
        self.observed(Op::Head, "", 0, fut).await
    }
    async fn restore_object(&self, key: &str, days: u32) -> Result<()> {
        let fut = self.inner.restore_object(key, days);
        self.observed(Op::Restore, key, 0, fut).await
    }
    async fn copy(&self, src: &str, dst: &str, opts: &PutOptions) -> Result<PutReceipt> {
        let fut = self.inner.copy(src, dst, opts);
        self.observed(Op::Copy, dst, 0, fut).await
    }
    async fn upload_part_copy(
        &self,
        dst: &str,
        upload_id: &str,
        part_number: u32,
        src: &str,
        range: ByteRange,
    ) -> Result<PartReceipt> {
        let fut = self
            .inner
            .upload_part_copy(dst, upload_id, part_number, src, range);
        self.observed(Op::UploadPartCopy, dst, 0, fut).await
    }
}

mod line;
#[cfg(test)]
mod tests;
