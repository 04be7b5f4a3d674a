//! Carries the data of `restore_data` / `restore_data_subset` to the writer [`super::run`] was
//! given. The transfer engine writes to an async, `Send` writer; the caller's writer is neither,
//! so the engine writes into a small in-memory pipe and the same task copies the pipe, in order,
//! into the caller's writer as bytes arrive.

use std::future::Future;
use std::io::Write;

use tokio::io::{AsyncReadExt, DuplexStream};

use crate::error::{Error, Result};

/// Bytes the pipe holds (and the copy buffer's size): the memory the detour costs, whatever
/// the object's size. Writes to a pipe or terminal take at most this much at a time anyway.
const PIPE: usize = 256 << 10;

/// Runs `work` with the writing end of a pipe whose bytes go to `out`, then flushes `out`.
/// A failed write to `out` is the error returned (the engine then sees a broken pipe and
/// stops); otherwise `work`'s own result is.
pub async fn piped<F, Fut>(out: &mut dyn Write, work: F) -> Result<()>
where
    F: FnOnce(DuplexStream) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let (writer, reader) = tokio::io::duplex(PIPE);
    // `work` owns the writing end and drops it when it ends, which is the copy's end of input.
    let (worked, copied) = tokio::join!(work(writer), copy(reader, out));
    copied.and(worked)
}

/// Copies `from` to `out` until the writing end is gone. The writes to `out` block this task,
/// as a full stdout pipe should: the engine cannot run ahead by more than the pipe holds.
async fn copy(mut from: DuplexStream, out: &mut dyn Write) -> Result<()> {
    let mut buf = vec![0u8; PIPE];
    loop {
        let n = from
            .read(&mut buf)
            .await
            .map_err(|e| Error::io("write output", e))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .map_err(|e| Error::io("write output", e))?;
    }
    // The engine's wording: with the old direct stdout, a deferred write error surfaced in the
    // engine's own flush, so a failure here read "write output" as well.
    out.flush().map_err(|e| Error::io("write output", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn run<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn bytes_arrive_in_order_and_complete() {
        let data: Vec<u8> = (0..3 * PIPE + 17).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        let sent = data.clone();
        run(piped(&mut out, |mut w| async move {
            for chunk in sent.chunks(100_000) {
                w.write_all(chunk).await.expect("write");
            }
            Ok(())
        }))
        .expect("piped");
        assert!(out == data, "{} bytes, want {}", out.len(), data.len());
    }

    #[test]
    fn a_failing_command_keeps_what_it_wrote_and_its_error() {
        let mut out = Vec::new();
        let r = run(piped(&mut out, |mut w| async move {
            w.write_all(b"partial").await.expect("write");
            Err(Error::Failed("gone".into()))
        }));
        assert_eq!(r.expect_err("error").to_string(), "gone");
        assert_eq!(out, b"partial");
    }

    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_to_out_is_the_error_and_stops_the_command() {
        let r = run(piped(&mut Closed, |mut w| async move {
            // Far more than the pipe holds: this only ends because the copy gave up.
            let chunk = vec![7u8; PIPE];
            for _ in 0..64 {
                w.write_all(&chunk)
                    .await
                    .map_err(|e| Error::io("write output", e))?;
            }
            Ok(())
        }));
        let e = r.expect_err("closed");
        assert!(e.to_string().starts_with("write output: "), "{e}");
    }
}
