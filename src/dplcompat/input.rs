//! Standard input of an `upload`, guarded so that a chunk that did not arrive whole never
//! becomes the part. The engine publishes the object when its reader reports the end; this
//! reader reports the end only when the storage daemon that started us is still our parent
//! (a daemon that died also closes our stdin), and turns a SIGTERM (the daemon's watchdog)
//! into a read error, so the engine aborts the upload instead of completing it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::transfer::Cancel;

/// Standard input that fails instead of ending when the chunk cannot be whole.
pub struct Guarded<R> {
    inner: R,
    /// Resolves on SIGTERM or SIGINT; polled with every read, so a signal wakes a read that
    /// waits for a daemon that stopped writing.
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    parent: u32,
    /// Whose death ends the chunk too: the process id of our parent now.
    parent_now: fn() -> u32,
    /// Bytes read so far, for the messages.
    read: u64,
}

impl<R> std::fmt::Debug for Guarded<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("parent", &self.parent)
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl<R: AsyncRead + Unpin> Guarded<R> {
    /// Guards `inner`; `cancel` is the run's signal flag.
    pub fn new(inner: R, cancel: Arc<Cancel>) -> Self {
        Self::with_parent(inner, cancel, std::os::unix::process::parent_id)
    }

    /// [`Guarded::new`] with another way to learn the parent (tests).
    pub fn with_parent(inner: R, cancel: Arc<Cancel>, parent_now: fn() -> u32) -> Self {
        Guarded {
            inner,
            stop: Box::pin(async move { cancel.cancelled().await }),
            parent: parent_now(),
            parent_now,
            read: 0,
        }
    }
}

fn broken(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, msg)
}

impl<R: AsyncRead + Unpin> AsyncRead for Guarded<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(broken(format!(
                "stopped by a signal after {} bytes of the chunk: the upload is abandoned",
                self.read
            ))));
        }
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                this.read += n;
                if n == 0 && (this.parent_now)() != this.parent {
                    return Poll::Ready(Err(broken(format!(
                        "standard input ended after {} bytes because the storage daemon (pid {}) went away: the chunk is not stored",
                        this.read, this.parent
                    ))));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// A reader that does not end before a piece of work (`gate`) has succeeded: the work runs
/// while the data arrives (it is polled with every read) and the end of `inner` is held back
/// until it is done. An upload publishes its object only at the end of its input, so the work
/// is done before the object changes, and a failed one is a failed read (nothing published);
/// its error is kept in `failed` for the caller to report as itself.
pub struct EndsAfter<'a, R> {
    inner: R,
    gate: Option<Pin<Box<dyn Future<Output = crate::error::Result<()>> + Send + 'a>>>,
    failed: &'a std::sync::Mutex<Option<crate::error::Error>>,
}

impl<R> std::fmt::Debug for EndsAfter<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndsAfter")
            .field("pending", &self.gate.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a, R> EndsAfter<'a, R> {
    /// `inner`, ending only after `gate` succeeded; its error goes to `failed`.
    pub fn new(
        inner: R,
        gate: impl Future<Output = crate::error::Result<()>> + Send + 'a,
        failed: &'a std::sync::Mutex<Option<crate::error::Error>>,
    ) -> Self {
        EndsAfter {
            inner,
            gate: Some(Box::pin(gate)),
            failed,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for EndsAfter<'_, R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(gate) = this.gate.as_mut()
            && let Poll::Ready(r) = gate.as_mut().poll(cx)
        {
            this.gate = None;
            if let Err(e) = r {
                let line = e.one_line();
                *this.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                return Poll::Ready(Err(broken(line)));
            }
        }
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            // The end, while the gate is pending: its poll above registered our waker.
            Poll::Ready(Ok(())) if room && buf.filled().len() == before && this.gate.is_some() => {
                Poll::Pending
            }
            other => other,
        }
    }
}

/// Standard input for the runtime: a pipe (what the daemon gives an upload) read without a
/// blocking thread, so a signal ends a read that waits and the runtime's shutdown never waits
/// for one; anything else (a file in tests) through tokio's own stdin.
pub fn stdin() -> Box<dyn AsyncRead + Unpin + Send> {
    use std::os::fd::AsFd;
    let pipe = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .and_then(tokio::net::unix::pipe::Receiver::from_owned_fd);
    match pipe {
        Ok(p) => Box::new(p),
        Err(_) => Box::new(tokio::io::stdin()),
    }
}

/// Puts standard output and standard error back into blocking mode. [`stdout`] and [`stdin`]
/// make the daemon's pipes non-blocking for the runtime, and that mode belongs to the pipe, not
/// to our descriptor: stderr is the same pipe as stdout, so without this a message written
/// after a download would be lost to `EAGAIN` whenever the daemon had not yet read the last
/// bytes. A blocking write waits for the daemon to read, or fails when it is gone.
pub fn blocking_again() {
    use rustix::fs::OFlags;
    use std::os::fd::AsFd;
    let (out, err) = (std::io::stdout(), std::io::stderr());
    for fd in [out.as_fd(), err.as_fd()] {
        if let Ok(flags) = rustix::fs::fcntl_getfl(fd)
            && flags.contains(OFlags::NONBLOCK)
        {
            let _ = rustix::fs::fcntl_setfl(fd, flags - OFlags::NONBLOCK);
        }
    }
}

/// Standard output for the runtime, as [`stdin`]: the daemon's pipe written without a blocking
/// thread, else tokio's own stdout.
pub fn stdout() -> Box<dyn AsyncWrite + Unpin + Send> {
    use std::os::fd::AsFd;
    let pipe = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .and_then(tokio::net::unix::pipe::Sender::from_owned_fd);
    match pipe {
        Ok(p) => Box::new(p),
        Err(_) => Box::new(tokio::io::stdout()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn the_input_ends_only_after_its_gate_and_a_failed_gate_is_a_failed_read() {
        let failed = std::sync::Mutex::new(None);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let gate = async move {
            rx.await.expect("sender kept");
            Ok(())
        };
        let mut r = EndsAfter::new(&b"chunk"[..], gate, &failed);
        let mut v = Vec::new();
        let early = tokio::time::timeout(Duration::from_millis(50), r.read_to_end(&mut v)).await;
        assert!(early.is_err(), "the end came before the gate");
        assert_eq!(v, b"chunk", "the data itself is not held back");
        tx.send(()).expect("gate waits");
        r.read_to_end(&mut v).await.expect("ends after the gate");
        assert_eq!(v, b"chunk");

        let gate = async { Err(crate::error::Error::Failed("the manifest stays".into())) };
        let mut r = EndsAfter::new(&b"chunk"[..], gate, &failed);
        let e = r
            .read_to_end(&mut Vec::new())
            .await
            .expect_err("gate failed");
        assert!(e.to_string().contains("the manifest stays"), "{e}");
        assert!(failed.lock().expect("lock").is_some());
    }

    #[tokio::test]
    async fn the_end_counts_only_while_the_parent_lives() {
        let cancel = Arc::new(Cancel::default());
        let mut ok = Guarded::with_parent(&b"chunk"[..], cancel.clone(), || 7);
        let mut v = Vec::new();
        ok.read_to_end(&mut v).await.expect("parent alive");
        assert_eq!(v, b"chunk");

        static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        fn dies() -> u32 {
            // The first call is at the start (pid 7); the daemon is gone by the end (init).
            match CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 => 7,
                _ => 1,
            }
        }
        let mut orphan = Guarded::with_parent(&b"chu"[..], cancel.clone(), dies);
        let e = orphan
            .read_to_end(&mut Vec::new())
            .await
            .expect_err("orphan");
        assert!(e.to_string().contains("after 3 bytes"), "{e}");

        cancel.cancel();
        let mut stopped = Guarded::with_parent(&b"chunk"[..], cancel, || 7);
        let e = stopped
            .read_to_end(&mut Vec::new())
            .await
            .expect_err("signal");
        assert!(e.to_string().contains("signal"), "{e}");
    }
}
