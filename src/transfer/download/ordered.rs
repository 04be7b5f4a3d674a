//! The ordered output of a stream download: pieces handed on strictly in order as they
//! arrive (copied into a writer, or passed whole to a reader on another thread), and, when the
//! object's check is an MD5 of whole parts, the MD5 of each part computed from the bytes as
//! they go, so a part need not be held whole to be checked.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, Read};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::checksum::Md5State;
use crate::error::{Error, Result};
use crate::store::ByteRange;

/// MD5s of units (parts, or the whole object) cut into pieces, fed in writing order.
pub(super) struct InOrderMd5 {
    /// The unit of each piece.
    units: Vec<usize>,
    state: Md5State,
    /// (index of a unit's last piece, the unit's MD5).
    done: Vec<(usize, [u8; 16])>,
}

impl InOrderMd5 {
    pub(super) fn new(pieces: &[(usize, ByteRange)]) -> Self {
        InOrderMd5 {
            units: pieces.iter().map(|(u, _)| *u).collect(),
            state: Md5State::default(),
            done: Vec::new(),
        }
    }

    /// Piece `index` was written (pieces come strictly in order).
    fn written(&mut self, index: usize, data: &[u8]) {
        self.state.update(data);
        let unit = self.units[index];
        if self.units.get(index + 1) != Some(&unit) {
            let d = std::mem::take(&mut self.state).finish();
            self.done.push((index, d));
        }
    }

    /// Each unit's MD5, placed on its last piece.
    pub(super) fn finish(self) -> Vec<(usize, [u8; 16])> {
        self.done
    }
}

/// Where the pieces of a stream download go, strictly in order.
pub trait PieceOut: Send {
    /// Takes the next piece.
    fn put(&mut self, data: Bytes) -> impl Future<Output = std::io::Result<()>> + Send;
    /// Every piece was put.
    fn finish(&mut self) -> impl Future<Output = std::io::Result<()>> + Send;
}

/// A writer as a piece output: each piece is copied into it.
pub(super) struct Writes<'a, W>(pub &'a mut W);

impl<W: AsyncWrite + Unpin + Send> PieceOut for Writes<'_, W> {
    async fn put(&mut self, data: Bytes) -> std::io::Result<()> {
        self.0.write_all(&data).await
    }

    async fn finish(&mut self) -> std::io::Result<()> {
        self.0.flush().await
    }
}

/// The sending end of [`piece_channel`]: pieces pass whole, without a copy.
#[derive(Debug)]
pub struct PieceSender(mpsc::Sender<Bytes>);

impl PieceOut for PieceSender {
    async fn put(&mut self, data: Bytes) -> std::io::Result<()> {
        self.0.send(data).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the reader stopped reading")
        })
    }

    async fn finish(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The reading end of [`piece_channel`], for a blocking thread: the pieces in order, then the
/// end of input once the sender is dropped (after a failed download too: the short input is
/// the reader's error, the download's the cause).
#[derive(Debug)]
pub struct PieceReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

/// A download's pieces handed from the async side to a blocking reader, at most `depth`
/// waiting: the bytes the receiver of each GET gathered are the bytes the reader reads.
pub fn piece_channel(depth: usize) -> (PieceSender, PieceReader) {
    let (tx, rx) = mpsc::channel(depth.max(1));
    let reader = PieceReader {
        rx,
        current: Bytes::new(),
    };
    (PieceSender(tx), reader)
}

impl BufRead for PieceReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(piece) => self.current = piece,
                None => break,
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, n: usize) {
        self.current.advance(n);
    }
}

impl Read for PieceReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Hands on the pieces that are next in order.
pub(super) async fn flush<O: PieceOut>(
    out: &mut Option<&mut O>,
    waiting: &mut BTreeMap<usize, Bytes>,
    next_write: &mut usize,
    md5: &mut Option<InOrderMd5>,
) -> Result<()> {
    let Some(o) = out.as_mut() else {
        waiting.clear();
        return Ok(());
    };
    while let Some(d) = waiting.remove(next_write) {
        if let Some(m) = md5.as_mut() {
            m.written(*next_write, &d);
        }
        o.put(d).await.map_err(|e| Error::io("write output", e))?;
        *next_write += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum;

    #[test]
    fn the_reader_gets_every_piece_in_order_then_the_end() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        let (mut tx, mut rx) = piece_channel(1);
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            rx.read_to_end(&mut all).map(|_| all)
        });
        rt.block_on(async {
            for piece in [&b"ab"[..], b"", b"cde", b"f"] {
                tx.put(Bytes::from_static(piece)).await.expect("put");
            }
        });
        drop(tx);
        assert_eq!(reader.join().expect("reader").expect("read"), b"abcdef");
    }

    #[test]
    fn a_reader_that_stops_fails_the_next_put() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        let (mut tx, rx) = piece_channel(1);
        drop(rx);
        let e = rt
            .block_on(tx.put(Bytes::from_static(b"x")))
            .expect_err("nobody reads");
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn md5_of_each_unit_from_its_pieces_in_order() {
        let r = |start, end| ByteRange { start, end };
        // Unit 0 in two pieces, unit 1 in one.
        let pieces = [(0, r(0, 3)), (0, r(3, 5)), (1, r(5, 7))];
        let mut m = InOrderMd5::new(&pieces);
        m.written(0, b"abc");
        m.written(1, b"de");
        m.written(2, b"fg");
        assert_eq!(
            m.finish(),
            vec![(1, checksum::md5(b"abcde")), (2, checksum::md5(b"fg"))]
        );
    }
}
