//! One request counter per run: requests by type, bytes up and down, retries, elapsed time.
//! It feeds the run summary and the benchmark. [`counting`] wraps any store so that every
//! request the engine makes is counted in one place, whatever the backend.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::store::SharedStore;
/// The store requests counted: the same operations the request log names.
pub use crate::store::reqlog::Op;
use crate::store::reqlog::{self, Observer, Request};

const OPS: [(Op, &str); 16] = [
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
    (Op::ListVersions, "list_versions"),
    (Op::PutRetention, "put_retention"),
];

/// Counters of one run.
#[derive(Debug)]
pub struct Stats {
    requests: [AtomicU64; 16],
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

/// Counts every request and every body byte of a store: an [`Observer`] on the request log's
/// forwarding wrapper, so both see the same requests. A request counts when it is sent; its
/// body bytes when it is answered with success (sent) or as they were read (received).
#[derive(Debug)]
struct Counter(Arc<Stats>);

impl Observer for Counter {
    fn sending(&self, req: &Request<'_>) {
        self.0.request(req.op);
    }
    fn answered(&self, req: &Request<'_>, status: Option<u16>, received: u64) {
        // -vv: every request, as the request log would record it.
        tracing::trace!(
            "{} {} attempt {}: {} ({} B sent, {} B received, {} ms)",
            req.op.name(),
            req.key,
            req.attempt,
            status.map_or("no answer".to_string(), |s| s.to_string()),
            req.sent,
            received,
            req.started.elapsed().as_millis()
        );
        if status.is_some_and(|s| (200..300).contains(&s)) {
            self.0.up(req.sent);
        }
        self.0.down(received);
    }
}

/// `inner`, with every request and body byte counted into `stats`.
pub fn counting(inner: SharedStore, stats: Arc<Stats>) -> SharedStore {
    reqlog::observe(inner, Arc::new(Counter(stats)))
}
