//! Copies between two stores through this host: the source object is read by one engine (in
//! order, a bounded window of ranges, verified as every download is) and written by another as
//! a stream, joined by a small pipe, so nothing touches the disk. Every relay of a run first
//! reserves what it may hold from one [`RelayBudget`] ([`budget`]: the run's buffers stay
//! within `max(s3.stream_memory, 16 MiB)` whatever the number and size of the objects); an
//! object of a WAL's size is moved whole, one verified GET then one PUT.
//!
//! The upload sees the end of its input only once the download has verified the last byte: a
//! source that fails its check, or breaks off, makes the upload fail and be aborted instead of
//! completing a short or wrong object. The bytes received are then compared with the bytes sent.

pub mod budget;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWriteExt, DuplexStream, ReadBuf};

use super::{Expect, Settings, Transfer, Uploaded};
use crate::error::{Error, Result};
use crate::store::PutOptions;
pub use budget::RelayBudget;
use budget::{PIPE, Share};

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

/// What is relayed: the source engine and key, the object's size as the source listed it,
/// what its bytes must be, and the run's budget.
#[derive(Debug, Clone, Copy)]
pub struct RelaySource<'a> {
    /// The engine reading the main store.
    pub engine: &'a Transfer,
    /// The object's key there.
    pub key: &'a str,
    /// Its size (a HEAD's): the relay's share is sized from it, and the download must find it.
    pub size: u64,
    /// What its bytes must be (else the source's own stored checksum says).
    pub expect: Expect,
    /// The run's memory budget.
    pub budget: &'a RelayBudget,
}

impl Transfer {
    /// Copies `src.key` of `src.engine`'s store to `dst` of this one through this host, within
    /// a share of the run's budget, verified on the way in (against `src.expect`, else the
    /// source's own stored checksum) and on the way out (every part's checksum, then the
    /// whole: the bytes written are the bytes read). `opts` gives the new object's kind and
    /// the metadata to keep.
    pub async fn relay_from(
        &self,
        src: RelaySource<'_>,
        dst: &str,
        opts: &PutOptions,
    ) -> Result<Uploaded> {
        let share = budget::share(src.size, src.budget.total(), &self.cfg);
        let _held = src.budget.reserve(share.reserve, &self.cancel).await?;
        let expect = Expect {
            size: Some(src.expect.size.unwrap_or(src.size)),
            ..src.expect
        };
        let (got, sent) = if share.whole {
            self.relay_whole(src.engine, src.key, dst, expect, opts)
                .await?
        } else {
            let source = src.engine.within(&share, true);
            let target = self.within(&share, false);
            target
                .relay_streamed(&source, src.key, dst, expect, opts)
                .await?
        };
        if (sent.size, sent.crc32c) != got {
            return Err(Error::Checksum {
                key: dst.into(),
                expected: format!(
                    "{} bytes, crc32c {:08x} (read from {})",
                    got.0, got.1, src.key
                ),
                actual: format!("{} bytes, crc32c {:08x} sent", sent.size, sent.crc32c),
            });
        }
        Ok(sent)
    }

    /// This engine holding no more than `share` allows: for the download side its ranges and
    /// window, for the upload side its parts in flight.
    fn within(&self, share: &Share, download: bool) -> Transfer {
        let cfg = if download {
            Settings {
                part_size: share.piece,
                stream_memory: share.down,
                ..self.cfg.clone()
            }
        } else {
            Settings {
                stream_memory: share.up,
                ..self.cfg.clone()
            }
        };
        Transfer {
            cfg,
            ..self.clone()
        }
    }

    /// A small object: one GET into memory (verified against the store's checksums, then
    /// against `expect`), one PUT. Returns (size, CRC32C) read and what was sent.
    async fn relay_whole(
        &self,
        source: &Transfer,
        src: &str,
        dst: &str,
        expect: Expect,
        opts: &PutOptions,
    ) -> Result<((u64, u32), Uploaded)> {
        let max = expect.size.unwrap_or(0);
        let (data, got) = source.download_small(src, max).await?;
        let want = (
            expect.size.unwrap_or(got.size),
            expect.crc32c.unwrap_or(got.crc32c),
        );
        if (got.size, got.crc32c) != want {
            return Err(Error::Checksum {
                key: src.into(),
                expected: format!("{} bytes, crc32c {:08x}", want.0, want.1),
                actual: format!("{} bytes, crc32c {:08x} read", got.size, got.crc32c),
            });
        }
        let sent = self.put_bytes_with(dst, data.into(), opts).await?;
        Ok(((got.size, got.crc32c), sent))
    }

    /// A larger object: the download written in order into the pipe, the upload reading it as
    /// a stream. Returns (size, CRC32C) read and what was sent.
    async fn relay_streamed(
        &self,
        source: &Transfer,
        src: &str,
        dst: &str,
        expect: Expect,
        opts: &PutOptions,
    ) -> Result<((u64, u32), Uploaded)> {
        let (mut w, r) = tokio::io::duplex(PIPE as usize);
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
        match (got, sent) {
            (Ok(got), sent) => Ok(((got.size, got.crc32c), sent?)),
            // The upload stopped reading (the replica refused it): its error is the cause,
            // the download's broken pipe only the symptom.
            (Err(Error::Io { context, .. }), Err(up)) if context == "write output" => Err(up),
            // Otherwise the source's error says why; the upload's is only its consequence.
            (Err(down), _) => Err(down),
        }
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
        let budget = RelayBudget::new(0);
        let from = RelaySource {
            engine: &src,
            key: "k",
            size: data.len() as u64,
            expect,
            budget: &budget,
        };
        let sent = dst
            .relay_from(from, "copy/k", &PutOptions::default())
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
        let budget = RelayBudget::new(0);
        // Moved whole, and streamed.
        for len in [1000usize, 7 << 20, 12 << 20] {
            let data = vec![3u8; len];
            src.put_bytes("k", data.into(), Default::default())
                .await
                .expect("test step");
            let wrong = Expect {
                size: Some(len as u64),
                crc32c: Some(1),
            };
            let from = RelaySource {
                engine: &src,
                key: "k",
                size: len as u64,
                expect: wrong,
                budget: &budget,
            };
            let e = dst
                .relay_from(from, "copy/k", &PutOptions::default())
                .await
                .expect_err("must fail");
            assert!(matches!(e, Error::Checksum { .. }), "{e}");
            assert!(!b.path().join("copy/k").exists(), "{len}");
        }
    }

    #[tokio::test]
    async fn many_relays_share_a_small_budget_without_deadlock() {
        let (a, b) = (
            tempfile::tempdir().expect("test step"),
            tempfile::tempdir().expect("test step"),
        );
        let (src, dst) = (engine(a.path()), engine(b.path()));
        // Large objects (streamed, each reserving half the budget) and small ones (moved
        // whole), all at once: more relays than the budget holds.
        let sizes: Vec<usize> = (0..10)
            .map(|i| if i % 2 == 0 { (11 << 20) + i } else { 3 << 20 })
            .collect();
        for (i, len) in sizes.iter().enumerate() {
            let data = vec![i as u8; *len];
            src.put_bytes(&format!("k{i}"), data.into(), Default::default())
                .await
                .expect("test step");
        }
        let budget = Arc::new(RelayBudget::new(0));
        let mut set = tokio::task::JoinSet::new();
        for (i, len) in sizes.iter().enumerate() {
            let (src, dst, budget, len) = (src.clone(), dst.clone(), budget.clone(), *len);
            set.spawn(async move {
                let key = format!("k{i}");
                let from = RelaySource {
                    engine: &src,
                    key: &key,
                    size: len as u64,
                    expect: Expect::default(),
                    budget: &budget,
                };
                let sent = dst
                    .relay_from(from, &format!("copy/k{i}"), &PutOptions::default())
                    .await;
                (i, sent)
            });
        }
        let all = async {
            let mut out = Vec::new();
            while let Some(r) = set.join_next().await {
                out.push(r.expect("join"));
            }
            out
        };
        let done = tokio::time::timeout(std::time::Duration::from_secs(60), all)
            .await
            .expect("the relays finish: none waits for memory another one holds");
        assert_eq!(done.len(), sizes.len());
        for (i, r) in done {
            assert_eq!(r.expect("relayed").size, sizes[i] as u64);
            let back = std::fs::read(b.path().join(format!("copy/k{i}"))).expect("copy");
            assert!(back.len() == sizes[i] && back.iter().all(|x| *x == i as u8));
        }
        // Every reservation was given back.
        let cancel = crate::transfer::Cancel::default();
        drop(
            budget
                .reserve(budget.total(), &cancel)
                .await
                .expect("all free"),
        );
    }
}
