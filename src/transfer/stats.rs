//! One request counter per run: requests by type, bytes up and down, retries, elapsed time.
//! It feeds the run summary and the benchmark. [`CountingStore`] wraps any store so that every
//! request the engine makes is counted in one place, whatever the backend.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;

use crate::error::Result;
/// The store requests counted: the same operations the request log names.
pub use crate::store::reqlog::Op;
use crate::store::{
    BodyReader, ByteRange, ChecksumAlgorithm, DeleteFailure, FileRange, GetResponse, Integrity,
    ListPage, ListRequest, MultipartUpload, ObjectMeta, PartReceipt, PutOptions, PutReceipt,
    SharedStore, Store,
};

const OPS: [(Op, &str); 14] = [
    (Op::Put, "put"),
    (Op::Get, "get"),
    (Op::Head, "head"),
    (Op::List, "list"),
    (Op::Delete, "delete"),
    (Op::CreateMultipart, "create_multipart"),
    (Op::UploadPart, "upload_part"),
    (Op::CompleteMultipart, "complete_multipart"),
    (Op::AbortMultipart, "abort_multipart"),
    (Op::ListParts, "list_parts"),
    (Op::ListMultipart, "list_multipart"),
    (Op::Copy, "copy"),
    (Op::UploadPartCopy, "upload_part_copy"),
    (Op::Restore, "restore"),
];

/// Counters of one run.
#[derive(Debug)]
pub struct Stats {
    requests: [AtomicU64; 14],
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    bytes_copied: AtomicU64,
    retries: AtomicU64,
    started: Instant,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            requests: Default::default(),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            bytes_copied: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            started: Instant::now(),
        }
    }
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Requests by type (only types that were used).
    pub requests: std::collections::BTreeMap<&'static str, u64>,
    /// All requests.
    pub total_requests: u64,
    /// Body bytes sent.
    pub bytes_up: u64,
    /// Body bytes received.
    pub bytes_down: u64,
    /// Bytes of objects the store copied server-side (never sent by this host).
    pub bytes_copied: u64,
    /// Requests repeated after a retryable failure.
    pub retries: u64,
    /// Milliseconds since the run started.
    pub elapsed_ms: u64,
}

impl fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "requests={} up={} down={} retries={} time={:.1}s",
            self.total_requests,
            crate::units::human_bytes(self.bytes_up),
            crate::units::human_bytes(self.bytes_down),
            self.retries,
            self.elapsed_ms as f64 / 1000.0
        )?;
        if self.bytes_copied > 0 {
            write!(
                f,
                " copied-server-side={}",
                crate::units::human_bytes(self.bytes_copied)
            )?;
        }
        Ok(())
    }
}

impl Stats {
    /// Counts one request of a type.
    pub fn request(&self, op: Op) {
        let i = OPS.iter().position(|(o, _)| *o == op).unwrap_or(0);
        self.requests[i].fetch_add(1, Ordering::Relaxed);
    }
    /// Counts one retry.
    pub fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts sent body bytes.
    pub fn up(&self, n: u64) {
        self.bytes_up.fetch_add(n, Ordering::Relaxed);
    }
    /// Counts bytes the store copied server-side.
    pub fn copied(&self, n: u64) {
        self.bytes_copied.fetch_add(n, Ordering::Relaxed);
    }
    /// Counts received body bytes.
    pub fn down(&self, n: u64) {
        self.bytes_down.fetch_add(n, Ordering::Relaxed);
    }
    /// Requests of one type so far.
    pub fn count(&self, op: Op) -> u64 {
        let i = OPS.iter().position(|(o, _)| *o == op).unwrap_or(0);
        self.requests[i].load(Ordering::Relaxed)
    }
    /// A copy of every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut s = StatsSnapshot::default();
        for (i, (_, name)) in OPS.iter().enumerate() {
            let n = self.requests[i].load(Ordering::Relaxed);
            if n > 0 {
                s.requests.insert(name, n);
            }
            s.total_requests += n;
        }
        s.bytes_up = self.bytes_up.load(Ordering::Relaxed);
        s.bytes_down = self.bytes_down.load(Ordering::Relaxed);
        s.bytes_copied = self.bytes_copied.load(Ordering::Relaxed);
        s.retries = self.retries.load(Ordering::Relaxed);
        s.elapsed_ms = self.started.elapsed().as_millis() as u64;
        s
    }
}

/// A store wrapper that counts every request and every body byte.
#[derive(Debug, Clone)]
pub struct CountingStore {
    inner: SharedStore,
    stats: Arc<Stats>,
}

impl CountingStore {
    /// Wraps a store.
    pub fn new(inner: SharedStore, stats: Arc<Stats>) -> Self {
        CountingStore { inner, stats }
    }
}

#[derive(Debug)]
struct CountingBody {
    inner: Box<dyn BodyReader>,
    stats: Arc<Stats>,
}

#[async_trait]
impl BodyReader for CountingBody {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        let c = self.inner.next_chunk().await?;
        if let Some(b) = &c {
            self.stats.down(b.len() as u64);
        }
        Ok(c)
    }
}

#[async_trait]
impl Store for CountingStore {
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
        self.stats.request(Op::Put);
        let n = body.len() as u64;
        let r = self.inner.put(key, body, integrity, opts).await?;
        self.stats.up(n);
        Ok(r)
    }
    async fn put_file(
        &self,
        key: &str,
        body: &FileRange,
        integrity: Integrity,
        opts: &PutOptions,
    ) -> Result<PutReceipt> {
        self.stats.request(Op::Put);
        let r = self.inner.put_file(key, body, integrity, opts).await?;
        self.stats.up(body.range.len());
        Ok(r)
    }
    async fn upload_part_file(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: &FileRange,
        integrity: Integrity,
    ) -> Result<PartReceipt> {
        self.stats.request(Op::UploadPart);
        let r = self
            .inner
            .upload_part_file(key, upload_id, part_number, body, integrity)
            .await?;
        self.stats.up(body.range.len());
        Ok(r)
    }
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetResponse> {
        self.stats.request(Op::Get);
        let mut r = self.inner.get(key, range).await?;
        r.body = Box::new(CountingBody {
            inner: r.body,
            stats: self.stats.clone(),
        });
        Ok(r)
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.stats.request(Op::Head);
        self.inner.head(key).await
    }
    async fn list_page(&self, req: &ListRequest, token: Option<&str>) -> Result<ListPage> {
        self.stats.request(Op::List);
        self.inner.list_page(req, token).await
    }
    async fn delete_batch(&self, keys: &[String]) -> Result<Vec<DeleteFailure>> {
        self.stats.request(Op::Delete);
        self.inner.delete_batch(keys).await
    }
    async fn create_multipart(
        &self,
        key: &str,
        algorithm: Option<ChecksumAlgorithm>,
        opts: &PutOptions,
    ) -> Result<String> {
        self.stats.request(Op::CreateMultipart);
        self.inner.create_multipart(key, algorithm, opts).await
    }
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
        integrity: Integrity,
    ) -> Result<PartReceipt> {
        self.stats.request(Op::UploadPart);
        let n = body.len() as u64;
        let r = self
            .inner
            .upload_part(key, upload_id, part_number, body, integrity)
            .await?;
        self.stats.up(n);
        Ok(r)
    }
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[PartReceipt],
    ) -> Result<PutReceipt> {
        self.stats.request(Op::CompleteMultipart);
        self.inner.complete_multipart(key, upload_id, parts).await
    }
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        self.stats.request(Op::AbortMultipart);
        self.inner.abort_multipart(key, upload_id).await
    }
    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<PartReceipt>> {
        self.stats.request(Op::ListParts);
        self.inner.list_parts(key, upload_id).await
    }
    async fn list_multipart(&self, prefix: &str) -> Result<Vec<MultipartUpload>> {
        self.stats.request(Op::ListMultipart);
        self.inner.list_multipart(prefix).await
    }
    async fn object_lock_status(&self) -> Result<Option<String>> {
        self.stats.request(Op::Head);
        self.inner.object_lock_status().await
    }
    async fn restore_object(&self, key: &str, days: u32) -> Result<()> {
        self.stats.request(Op::Restore);
        self.inner.restore_object(key, days).await
    }
    async fn copy(&self, src: &str, dst: &str, opts: &PutOptions) -> Result<PutReceipt> {
        self.stats.request(Op::Copy);
        self.inner.copy(src, dst, opts).await
    }
    async fn upload_part_copy(
        &self,
        dst: &str,
        upload_id: &str,
        part_number: u32,
        src: &str,
        range: ByteRange,
    ) -> Result<PartReceipt> {
        self.stats.request(Op::UploadPartCopy);
        self.inner
            .upload_part_copy(dst, upload_id, part_number, src, range)
            .await
    }
}
