//! The ordered writer of a stream download: pieces written strictly in order as they arrive,
//! and, when the object's check is an MD5 of whole parts, the MD5 of each part computed from
//! the bytes as they are written, so a part need not be held whole to be checked.

use std::collections::BTreeMap;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};

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

/// Writes the pieces that are next in order.
pub(super) async fn flush<W: AsyncWrite + Unpin + Send>(
    writer: &mut Option<&mut W>,
    waiting: &mut BTreeMap<usize, Bytes>,
    next_write: &mut usize,
    md5: &mut Option<InOrderMd5>,
) -> Result<()> {
    let Some(w) = writer.as_mut() else {
        waiting.clear();
        return Ok(());
    };
    while let Some(d) = waiting.remove(next_write) {
        if let Some(m) = md5.as_mut() {
            m.written(*next_write, &d);
        }
        w.write_all(&d)
            .await
            .map_err(|e| Error::io("write output", e))?;
        *next_write += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum;

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
