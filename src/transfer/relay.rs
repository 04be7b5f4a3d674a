//! Copies between two stores through this host: the source object is read by one engine (in
//! order, a bounded window of ranges, verified as every download is) and written by another as
//! a stream (at most `concurrency` part buffers), joined by a small pipe, so memory stays
//! bounded whatever the size and nothing touches the disk.
//!
//! The upload sees the end of its input only once the download has verified the last byte: a
//! source that fails its check, or breaks off, makes the upload fail and be aborted instead of
//! completing a short or wrong object. The bytes received are then compared with the bytes sent.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWriteExt, DuplexStream, ReadBuf};

use super::{Expect, Transfer, Uploaded};
use crate::error::{Error, Result};
use crate::store::PutOptions;

/// The pipe between the download and the upload: enough for a few network reads.
const PIPE: usize = 1 << 20;

/// The upload's end of the pipe: its end of input is an error unless the download finished
/// verified.
struct Gated {
    inner: DuplexStream,
    verified: Arc<AtomicBool>,
}

impl AsyncRead for Gated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                if this.verified.load(Ordering::SeqCst) {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(std::io::Error::other(
                        "the source ended before it was read whole and verified",
                    )))
                }
            }
            other => other,
        }
    }
}

impl Transfer {
    /// Copies `src` of `source`'s store to `dst` of this one through this host, verified on
    /// the way in (against `expect`, else the source's own stored checksum) and on the way out
    /// (every part's checksum, then the whole: the bytes written are the bytes read). `opts`
    /// gives the new object's kind and the metadata to keep.
    pub async fn relay_from(
        &self,
        source: &Transfer,
        src: &str,
        dst: &str,
        expect: Expect,
        opts: &PutOptions,
    ) -> Result<Uploaded> {
        let (mut w, r) = tokio::io::duplex(PIPE);
        let verified = Arc::new(AtomicBool::new(false));
        let reader = Gated {
            inner: r,
            verified: verified.clone(),
        };
        let down = async move {
            let got = source.download_to(src, &mut w, expect).await;
            if got.is_ok() {
                // Flushed before the flag, so the upload cannot see the end early.
                let _ = w.flush().await;
                verified.store(true, Ordering::SeqCst);
            }
            drop(w);
            got
        };
        let up = self.upload_stream_with(reader, dst, opts);
        let (got, sent) = tokio::join!(down, up);
        // The source's error says why; the upload's is only its consequence.
        let got = got?;
        let sent = sent?;
        if (sent.size, sent.crc32c) != (got.size, got.crc32c) {
            return Err(Error::Checksum {
                key: dst.into(),
                expected: format!(
                    "{} bytes, crc32c {:08x} (read from {src})",
                    got.size, got.crc32c
                ),
                actual: format!("{} bytes, crc32c {:08x} sent", sent.size, sent.crc32c),
            });
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;
    use crate::transfer::Settings;

    fn engine(dir: &std::path::Path) -> Transfer {
        let store = Arc::new(LocalStore::open(dir).expect("store"));
        Transfer::new(
            store,
            Settings {
                part_size: 5 << 20,
                concurrency: 2,
                ..Settings::default()
            },
        )
    }

    #[tokio::test]
    async fn a_relay_copies_every_byte_and_verifies_it() {
        let (a, b) = (
            tempfile::tempdir().expect("test step"),
            tempfile::tempdir().expect("test step"),
        );
        let (src, dst) = (engine(a.path()), engine(b.path()));
        // Above one part, so the target is written in parts.
        let data: Vec<u8> = (0..12u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
        src.put_bytes("k", data.clone().into(), Default::default())
            .await
            .expect("test step");
        let crc = crate::checksum::crc32c(&data);
        let expect = Expect {
            size: Some(data.len() as u64),
            crc32c: Some(crc),
        };
        let sent = dst
            .relay_from(&src, "k", "copy/k", expect, &PutOptions::default())
            .await
            .expect("test step");
        assert_eq!((sent.size, sent.crc32c), (data.len() as u64, crc));
        assert!(sent.parts > 1);
        let back = std::fs::read(b.path().join("copy/k")).expect("test step");
        assert_eq!(back, data);
    }

    #[tokio::test]
    async fn a_source_that_fails_its_check_leaves_no_object() {
        let (a, b) = (
            tempfile::tempdir().expect("test step"),
            tempfile::tempdir().expect("test step"),
        );
        let (src, dst) = (engine(a.path()), engine(b.path()));
        for len in [1000usize, 7 << 20] {
            let data = vec![3u8; len];
            src.put_bytes("k", data.into(), Default::default())
                .await
                .expect("test step");
            let wrong = Expect {
                size: Some(len as u64),
                crc32c: Some(1),
            };
            let e = dst
                .relay_from(&src, "k", "copy/k", wrong, &PutOptions::default())
                .await
                .expect_err("must fail");
            assert!(matches!(e, Error::Checksum { .. }), "{e}");
            assert!(!b.path().join("copy/k").exists(), "{len}");
        }
    }
}
