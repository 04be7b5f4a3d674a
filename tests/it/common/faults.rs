//! A fault-injecting HTTP proxy for tests: sits on 127.0.0.1 between a client and the test S3
//! server, handles one request per connection (it answers `Connection: close`), and with a
//! seeded probability answers 503 SlowDown or 500, drops the connection mid-request or
//! mid-response, or stalls past the client's timeout. Counts what it injected.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// Requests seen.
    pub requests: Arc<AtomicU64>,
    /// Faults injected.
    pub faults: Arc<AtomicU64>,
    /// A request to hold back on purpose (see [`FaultProxy::hold`]).
    pub hold: Arc<Hold>,
    _rt: tokio::runtime::Runtime,
}

/// Holds the first request whose request line contains a pattern, after its body arrived and
/// before it is forwarded, until released: a deterministic "stalled part".
#[derive(Debug, Default)]
pub struct Hold {
    pattern: std::sync::Mutex<Option<String>>,
    held: std::sync::atomic::AtomicBool,
    released: tokio::sync::Notify,
}

impl Hold {
    async fn wait_if_matches(&self, head: &[u8]) {
        let line =
            String::from_utf8_lossy(head.split(|b| *b == b'\n').next().unwrap_or(&[])).into_owned();
        let take = {
            let mut p = self.pattern.lock().expect("hold");
            let hit = p.as_deref().is_some_and(|pat| line.contains(pat));
            if hit {
                *p = None;
            }
            hit
        };
        if take {
            let released = self.released.notified();
            self.held.store(true, Ordering::SeqCst);
            released.await;
        }
    }
}

/// How a proxy departs from the store behind it, whatever the fault rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quirk {
    /// Forwards everything.
    None,
    /// Answers server-side copies with 501 NotImplemented.
    RefuseCopies,
    /// Answers server-side copies with 500 InternalError, every time.
    FailCopies,
    /// Accepts a request with a CRC32C header without storing or checking it (200).
    IgnoreChecksums,
    /// Refuses a request with a CRC32C header (400 InvalidArgument).
    RejectChecksums,
    /// Refuses every delete (DeleteObject, DeleteObjects) with 403 AccessDenied, as a key
    /// without delete rights does.
    RefuseDeletes,
    /// Refuses every PutObjectRetention with 403 AccessDenied in AWS's words for a lock
    /// refusal, as AWS refuses shortening or removing a lock without the governance bypass
    /// (moto accepts them).
    EnforceRetention,
    /// [`Quirk::EnforceRetention`], and answers a DELETE of an object version with 204 without
    /// forwarding it: a store that accepts a lock and still lets the DELETE through.
    AllowVersionDeletes,
    /// Refuses every DELETE of an object version and every PutObjectRetention with a bare 403
    /// AccessDenied ("Access Denied"), as AWS answers credentials without
    /// `s3:DeleteObjectVersion` and `s3:PutObjectRetention`, lock or no lock.
    DenyAsIam,
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    SlowDown,
    Internal,
    DropRequest,
    DropResponse,
    Stall,
}

async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(p + 4);
        }
        let mut chunk = [0u8; 16384];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// Rewrites a head's Connection header to `close`.
fn close_head(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

async fn error_response(c: &mut TcpStream, status: &str, code: &str) {
    error_saying(c, status, code, "injected").await;
}

async fn error_saying(c: &mut TcpStream, status: &str, code: &str, message: &str) {
    let body = format!(
        "<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = c.write_all(resp.as_bytes()).await;
    let _ = c.shutdown().await;
}

/// A PutObjectRetention (`head` lowercased).
fn is_retention(head: &str) -> bool {
    head.starts_with("put ")
        && head
            .split(' ')
            .nth(1)
            .is_some_and(|t| t.contains("?retention") || t.contains("&retention"))
}

/// A DELETE of one object version (`head` lowercased).
fn is_version_delete(head: &str) -> bool {
    head.starts_with("delete ")
        && head
            .split(' ')
            .nth(1)
            .is_some_and(|t| t.contains("versionid="))
}

async fn handle(
    mut c: TcpStream,
    upstream: String,
    fault: Option<Fault>,
    stall: Duration,
    quirk: Quirk,
    hold: Arc<Hold>,
) {
    let mut buf = Vec::new();
    let Some(head_len) = read_head(&mut c, &mut buf).await else {
        return;
    };
    let body_len = content_length(&buf[..head_len]);
    let head = String::from_utf8_lossy(&buf[..head_len]).to_ascii_lowercase();
    let has_crc = head.contains("\r\nx-amz-checksum-crc32c:");
    match quirk {
        Quirk::RefuseCopies if head.contains("\r\nx-amz-copy-source:") => {
            return error_response(&mut c, "501 Not Implemented", "NotImplemented").await;
        }
        Quirk::FailCopies if head.contains("\r\nx-amz-copy-source:") => {
            return error_response(&mut c, "500 Internal Server Error", "InternalError").await;
        }
        Quirk::RefuseDeletes if head.starts_with("delete ") || head.contains("?delete") => {
            return error_response(&mut c, "403 Forbidden", "AccessDenied").await;
        }
        Quirk::EnforceRetention | Quirk::AllowVersionDeletes if is_retention(&head) => {
            let by_lock = "Access Denied because object protected by object lock.";
            return error_saying(&mut c, "403 Forbidden", "AccessDenied", by_lock).await;
        }
        Quirk::DenyAsIam if is_retention(&head) || is_version_delete(&head) => {
            return error_saying(&mut c, "403 Forbidden", "AccessDenied", "Access Denied").await;
        }
        Quirk::AllowVersionDeletes if is_version_delete(&head) => {
            let resp = "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            let _ = c.write_all(resp.as_bytes()).await;
            let _ = c.shutdown().await;
            return;
        }
        Quirk::RejectChecksums if has_crc => {
            return error_response(&mut c, "400 Bad Request", "InvalidArgument").await;
        }
        Quirk::IgnoreChecksums if has_crc => {
            // Take the whole body, store nothing, say yes: a store that does not verify.
            while buf.len() < head_len + body_len {
                let mut chunk = vec![0u8; 1 << 16];
                match c.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let resp = "HTTP/1.1 200 OK\r\nETag: \"00000000000000000000000000000000\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            let _ = c.write_all(resp.as_bytes()).await;
            let _ = c.shutdown().await;
            return;
        }
        _ => {}
    }
    match fault {
        Some(Fault::SlowDown) => return error_response(&mut c, "503 Slow Down", "SlowDown").await,
        Some(Fault::Internal) => {
            return error_response(&mut c, "500 Internal Server Error", "InternalError").await;
        }
        Some(Fault::DropRequest) => return,
        Some(Fault::Stall) => {
            tokio::time::sleep(stall).await;
            return;
        }
        _ => {}
    }
    while buf.len() < head_len + body_len {
        let mut chunk = vec![0u8; 1 << 16];
        match c.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    hold.wait_if_matches(&buf[..head_len]).await;
    let Ok(mut u) = TcpStream::connect(&upstream).await else {
        return;
    };
    let mut req = close_head(&buf[..head_len]);
    req.extend_from_slice(&buf[head_len..]);
    if u.write_all(&req).await.is_err() {
        return;
    }
    let mut resp = Vec::new();
    let Some(rhead) = read_head(&mut u, &mut resp).await else {
        return;
    };
    let mut out = close_head(&resp[..rhead]);
    out.extend_from_slice(&resp[rhead..]);
    let rbody = content_length(&resp[..rhead]);
    if let Some(Fault::DropResponse) = fault {
        // Send the head and at most half the body, then drop the connection.
        let keep = (rhead.min(out.len())) + rbody / 2;
        let _ = c.write_all(&out[..keep.min(out.len())]).await;
        return;
    }
    if c.write_all(&out).await.is_err() {
        return;
    }
    let _ = tokio::io::copy(&mut u, &mut c).await;
    let _ = c.shutdown().await;
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`http://host:port`) injecting a fault into `rate` of the
    /// requests (0.0..1.0), chosen by `seed`. Stalls last `stall`.
    pub fn start(upstream: &str, rate: f64, seed: u64, stall: Duration) -> FaultProxy {
        Self::start_with(upstream, rate, seed, stall, Quirk::None)
    }

    /// A proxy that injects nothing but answers every server-side copy (CopyObject,
    /// UploadPartCopy) with 501 NotImplemented, as stores without copies do.
    pub fn refusing_copies(upstream: &str) -> FaultProxy {
        Self::start_with(upstream, 0.0, 0, Duration::ZERO, Quirk::RefuseCopies)
    }

    /// A proxy that injects nothing but behaves as a store that does not understand CRC32C
    /// checksum headers: it answers a request carrying one with `quirk`.
    pub fn with_quirk(upstream: &str, quirk: Quirk) -> FaultProxy {
        Self::start_with(upstream, 0.0, 0, Duration::ZERO, quirk)
    }

    fn start_with(
        upstream: &str,
        rate: f64,
        seed: u64,
        stall: Duration,
        quirk: Quirk,
    ) -> FaultProxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let upstream = upstream.trim_start_matches("http://").to_string();
        let (requests, faults) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (r, f) = (requests.clone(), faults.clone());
        let hold = Arc::new(Hold::default());
        let h = hold.clone();
        rt.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            loop {
                let Ok((c, _)) = listener.accept().await else {
                    return;
                };
                r.fetch_add(1, Ordering::Relaxed);
                let fault = rng
                    .random_bool(rate)
                    .then(|| match rng.random_range(0..10) {
                        0..=2 => Fault::SlowDown,
                        3..=4 => Fault::Internal,
                        5..=6 => Fault::DropRequest,
                        7..=8 => Fault::DropResponse,
                        _ => Fault::Stall,
                    });
                if fault.is_some() {
                    f.fetch_add(1, Ordering::Relaxed);
                }
                tokio::spawn(handle(c, upstream.clone(), fault, stall, quirk, h.clone()));
            }
        });
        FaultProxy {
            endpoint,
            requests,
            faults,
            hold,
            _rt: rt,
        }
    }

    /// Holds the next request whose request line contains `pattern` (e.g. `partNumber=2`)
    /// until [`FaultProxy::release`].
    pub fn hold(&self, pattern: &str) {
        *self.hold.pattern.lock().expect("hold") = Some(pattern.to_string());
    }

    /// Whether the held request has arrived.
    pub fn holding(&self) -> bool {
        self.hold.held.load(Ordering::SeqCst)
    }

    /// Lets the held request through.
    pub fn release(&self) {
        self.hold.released.notify_waiters();
    }

    /// (requests, faults) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.faults.load(Ordering::Relaxed),
        )
    }
}
