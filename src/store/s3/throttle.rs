//! The bandwidth cap (`s3.max_bandwidth`): one limiter per direction for the whole process, so
//! every part in flight shares it. Bodies are metered in chunks of at most [`CHUNK`] bytes as
//! they are sent or received, so the rate holds within a chunk's worth over any interval, not
//! only on average over whole parts.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// Largest piece of a body released at once.
pub const CHUNK: usize = 256 << 10;

/// A shared rate (bytes per second) with a small burst allowance.
#[derive(Debug)]
pub struct Limiter {
    rate: f64,
    burst: Duration,
    next: Mutex<Instant>,
}

impl Limiter {
    /// A limiter of `bytes_per_sec`.
    pub fn new(bytes_per_sec: u64) -> Arc<Self> {
        Arc::new(Limiter {
            rate: bytes_per_sec.max(1) as f64,
            burst: Duration::from_millis(50),
            next: Mutex::new(Instant::now()),
        })
    }

    /// Books `n` bytes and says how long to wait before sending them.
    pub fn reserve(&self, n: usize) -> Duration {
        let now = Instant::now();
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        // Idle time earns at most the burst allowance.
        let start = (*next).max(now.checked_sub(self.burst).unwrap_or(now));
        *next = start + Duration::from_secs_f64(n as f64 / self.rate);
        start.saturating_duration_since(now)
    }

    /// Waits until `n` more bytes fit the rate.
    pub async fn take(&self, n: usize) {
        let wait = self.reserve(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// What a metered body reads from.
enum Source {
    Bytes(Bytes),
    Stream(SdkBody),
}

/// A request body released no faster than its limiter allows.
pub struct Metered {
    source: Source,
    limiter: Arc<Limiter>,
    /// A piece booked with the limiter, released when `wait` ends.
    booked: Option<(Bytes, Pin<Box<tokio::time::Sleep>>)>,
    /// What is left of a piece larger than [`CHUNK`], not booked yet.
    rest: Option<Bytes>,
}

impl std::fmt::Debug for Metered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metered").finish_non_exhaustive()
    }
}

impl Metered {
    /// A metered body of bytes in memory.
    pub fn bytes(b: Bytes, limiter: Arc<Limiter>) -> Self {
        Metered {
            source: Source::Bytes(b),
            limiter,
            booked: None,
            rest: None,
        }
    }

    /// A metered body over another body (a file stream).
    pub fn stream(b: SdkBody, limiter: Arc<Limiter>) -> Self {
        Metered {
            source: Source::Stream(b),
            limiter,
            booked: None,
            rest: None,
        }
    }

    /// The next bytes of the source, not yet cut to [`CHUNK`].
    fn next_piece(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, aws_smithy_types::body::Error>>> {
        if let Some(p) = self.rest.take() {
            return Poll::Ready(Some(Ok(p)));
        }
        match &mut self.source {
            Source::Bytes(b) if b.is_empty() => Poll::Ready(None),
            Source::Bytes(b) => Poll::Ready(Some(Ok(std::mem::take(b)))),
            Source::Stream(s) => loop {
                match Pin::new(&mut *s).poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                    Poll::Ready(Some(Ok(f))) => {
                        if let Ok(data) = f.into_data() {
                            return Poll::Ready(Some(Ok(data)));
                        }
                    }
                }
            },
        }
    }
}

impl Body for Metered {
    type Data = Bytes;
    type Error = aws_smithy_types::body::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some((_, wait)) = &mut this.booked {
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let (piece, _) = this.booked.take().expect("booked");
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        let mut piece = match this.next_piece(cx) {
            Poll::Ready(Some(Ok(p))) => p,
            other => return other.map(|o| o.map(|r| r.map(Frame::data))),
        };
        if piece.len() > CHUNK {
            this.rest = Some(piece.split_off(CHUNK));
        }
        let wait = this.limiter.reserve(piece.len());
        if wait.is_zero() {
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        let mut sleep = Box::pin(tokio::time::sleep(wait));
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        this.booked = Some((piece, sleep));
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.booked.is_none()
            && self.rest.is_none()
            && match &self.source {
                Source::Bytes(b) => b.is_empty(),
                Source::Stream(s) => s.is_end_stream(),
            }
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.booked.as_ref().map_or(0, |(p, _)| p.len() as u64)
            + self.rest.as_ref().map_or(0, |p| p.len() as u64);
        let mut h = match &self.source {
            Source::Bytes(b) => SizeHint::with_exact(b.len() as u64),
            Source::Stream(s) => s.size_hint(),
        };
        // Upper first: a lower bound above the upper one panics.
        if let Some(u) = h.upper() {
            h.set_upper(u + held);
        }
        h.set_lower(h.lower() + held);
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookings_follow_the_rate() {
        let l = Limiter::new(1 << 20);
        let first = l.reserve(1 << 20);
        assert!(first <= Duration::from_millis(1), "{first:?}");
        let second = l.reserve(512 << 10);
        assert!(
            second > Duration::from_millis(900) && second <= Duration::from_millis(1001),
            "{second:?}"
        );
        let third = l.reserve(1);
        assert!(third > Duration::from_millis(1400), "{third:?}");
    }
}
