//! A piece of an encrypted object received into a file run by run: each run of
//! [`RUN_CHUNKS`] chunks is opened and written as soon as its bytes have arrived, while the
//! next run's arrive, instead of holding the whole piece until its last byte.
//!
//! The GET's connection so never waits for a piece to be opened, and a piece in flight holds
//! two runs (about 2 MiB) rather than its whole length (16 MiB). Each run lands in its own
//! aligned buffer, so its plaintext opens at the buffer's start and goes to the file past the
//! page cache with no copy.

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::checksum;
use crate::crypt::SEALED_CHUNK;
use crate::directio::{AlignedBuf, OutFile};
use crate::error::{Error, Result};
use crate::store::ByteRange;
use crate::transfer::sealed::{RUN_CHUNKS, SealedObject};

/// One run being opened and written off the async workers: its buffer back, the CRC32C and
/// length of its plaintext.
type Opening = JoinHandle<Result<(AlignedBuf, u32, u64)>>;

/// The runs of one piece: the one filling, and at most one being opened and written.
pub(super) struct RunWriter {
    sealed: SealedObject,
    file: Arc<OutFile>,
    /// The stored bytes of the piece.
    range: ByteRange,
    /// Where in the object the filling run starts.
    run_start: u64,
    buf: AlignedBuf,
    opening: Option<Opening>,
    /// CRC32C and length of the plaintext written so far, in order.
    crc: u32,
    len: u64,
}

impl RunWriter {
    pub(super) fn new(sealed: &SealedObject, file: Arc<OutFile>, range: ByteRange) -> RunWriter {
        let mut w = RunWriter {
            sealed: sealed.clone(),
            file,
            range,
            run_start: range.start,
            buf: AlignedBuf::default(),
            opening: None,
            crc: 0,
            len: 0,
        };
        w.buf = AlignedBuf::new(w.run_len());
        w
    }

    /// The stored length of the run starting at `run_start`: whole chunks (the first run of
    /// an object also holds the header), up to the piece's end.
    fn run_len(&self) -> usize {
        let payload = self.sealed.opener.layout().payload_start();
        let header = payload.saturating_sub(self.run_start);
        let len = header + RUN_CHUNKS * SEALED_CHUNK;
        len.min(self.range.end - self.run_start) as usize
    }

    /// Takes arriving bytes; a run that is complete is handed to be opened and written.
    pub(super) async fn feed(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let want = self.run_len() - self.buf.len();
            if want == 0 {
                // The receiver stops a body at the range's length; past it is a broken reader.
                return Err(Error::Failed("bytes past the end of a piece".into()));
            }
            let n = self.buf.fill(&data[..want.min(data.len())]);
            data = &data[n..];
            if self.buf.len() == self.run_len() {
                self.hand_on().await?;
            }
        }
        Ok(())
    }

    /// Hands the filled run on (after the one before it is done) and starts the next.
    async fn hand_on(&mut self) -> Result<()> {
        self.wait().await?;
        let run = ByteRange {
            start: self.run_start,
            end: self.run_start + self.buf.len() as u64,
        };
        self.run_start = run.end;
        let next = if run.end < self.range.end {
            AlignedBuf::new(self.run_len())
        } else {
            AlignedBuf::default()
        };
        let mut buf = std::mem::replace(&mut self.buf, next);
        let (sealed, file) = (self.sealed.clone(), self.file.clone());
        self.opening = Some(tokio::task::spawn_blocking(move || {
            let mut crc = 0;
            let at = sealed.open_piece_in_place(run, buf.filled_mut(), false, |off, p| {
                crc = checksum::crc32c_append(crc, p);
                file.write_all_at(p, off)
                    .map_err(|e| Error::io("write downloaded data", e))
            })?;
            Ok((buf, crc, at.len() as u64))
        }));
        Ok(())
    }

    /// Waits for the run being opened, if any, and counts its plaintext.
    async fn wait(&mut self) -> Result<()> {
        let Some(task) = self.opening.take() else {
            return Ok(());
        };
        let (buf, crc, len) = task
            .await
            .map_err(|e| Error::Failed(format!("open task failed: {e}")))??;
        buf.recycle();
        self.crc = checksum::crc32c_combine(self.crc, crc, len);
        self.len += len;
        Ok(())
    }

    /// After the piece's last byte: the CRC32C and length of its plaintext, every run written.
    pub(super) async fn finish(mut self) -> Result<(u32, u64)> {
        // The receiver checked the piece's length: its last run was full, and handed on.
        debug_assert!(self.buf.is_empty());
        self.wait().await?;
        Ok((self.crc, self.len))
    }

    /// After a failure: waits for the run being opened (never left running detached) and
    /// drops what it made; the piece is read again whole or the download fails.
    pub(super) async fn abandon(mut self) {
        let _ = self.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypt::{CHUNK, Fault};
    use crate::transfer::sealed::split_sealed;
    use crate::transfer::sealed::tests::sealed_object;

    /// Feeds `stored` to a writer for `range` in deliveries of `step` bytes.
    async fn write_piece(
        obj: &SealedObject,
        file: &Arc<OutFile>,
        range: ByteRange,
        stored: &[u8],
        step: usize,
    ) -> Result<(u32, u64)> {
        let mut w = RunWriter::new(obj, file.clone(), range);
        for d in stored[range.start as usize..range.end as usize].chunks(step) {
            if let Err(e) = w.feed(d).await {
                w.abandon().await;
                return Err(e);
            }
        }
        w.finish().await
    }

    #[tokio::test]
    async fn pieces_fed_in_any_deliveries_write_the_plaintext_at_its_offsets() {
        // Runs of 16 chunks: pieces of 40 chunks (three runs, the first with the header), the
        // last short; deliveries that cut runs and chunks anywhere.
        let (plain, sealed, obj, whole) = sealed_object(90 * CHUNK + 77, 239);
        let dir = tempfile::tempdir().expect("tmp");
        for step in [7777, 1 << 20, 3 * SEALED_CHUNK as usize + 1] {
            let path = dir.path().join(format!("out-{step}"));
            let file = Arc::new(OutFile::create_new(&path, 0o600).expect("create"));
            let pieces = split_sealed(&whole, obj.opener.layout(), 40 * SEALED_CHUNK);
            assert_eq!(pieces.len(), 3);
            for (_, r) in &pieces {
                let (crc, len) = write_piece(&obj, &file, *r, &sealed, step)
                    .await
                    .expect("piece");
                let at = obj.plain_offset(r.start) as usize;
                let want = &plain[at..at + len as usize];
                assert_eq!(crc, checksum::crc32c(want), "step {step}");
            }
            file.sync_all().expect("sync");
            drop(file);
            assert!(std::fs::read(&path).expect("read") == plain, "step {step}");
        }
    }

    #[tokio::test]
    async fn a_damaged_chunk_fails_its_piece_and_nothing_is_left_running() {
        let (_, sealed, obj, whole) = sealed_object(40 * CHUNK, 241);
        let mut bad = sealed.to_vec();
        let at = obj.chunk_range(20).start as usize + 9;
        bad[at] ^= 1;
        let dir = tempfile::tempdir().expect("tmp");
        let file = Arc::new(OutFile::create_new(&dir.path().join("o"), 0o600).expect("create"));
        let e = write_piece(&obj, &file, whole[0], &bad, 65_000)
            .await
            .expect_err("damaged");
        match e {
            Error::Crypt(c) => assert_eq!(c.fault, Fault::ChunkAuth { chunk: 20 }),
            other => panic!("not a crypt error: {other}"),
        }
        // Every task the writer started has ended: only this test holds the file.
        assert_eq!(Arc::strong_count(&file), 1);
    }

    #[tokio::test]
    async fn a_body_cut_while_a_run_is_being_opened_waits_for_it() {
        let (_, sealed, obj, whole) = sealed_object(40 * CHUNK, 233);
        let dir = tempfile::tempdir().expect("tmp");
        let file = Arc::new(OutFile::create_new(&dir.path().join("o"), 0o600).expect("create"));
        let mut w = RunWriter::new(&obj, file.clone(), whole[0]);
        // One run and a half: the first is handed on, then the body ends (a truncation).
        let cut =
            (obj.opener.layout().payload_start() + RUN_CHUNKS * SEALED_CHUNK * 3 / 2) as usize;
        w.feed(&sealed[..cut]).await.expect("feed");
        assert!(w.opening.is_some(), "the first run is being opened");
        w.abandon().await;
        assert_eq!(
            Arc::strong_count(&file),
            1,
            "a run's task outlived the piece"
        );
    }
}
