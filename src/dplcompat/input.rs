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
    use tokio::io::AsyncReadExt;

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
