//! LZ4 frame streams read whole and only whole: every frame of a concatenated stream, and a
//! stream that ends anywhere but after a frame's end mark is an error, where the decoder alone
//! would return a prefix.

use std::io::Read;

/// The frames of an LZ4 stream, all of them: the decoder ends its output at each frame's end
/// mark, and reads a stream cut between two blocks as a clean end; [`Lz4Ends`] under it tells
/// the real end of the input from the end of a frame, and a cut from an end.
pub(super) struct Lz4Stream<R: Read>(pub(super) lz4_flex::frame::FrameDecoder<Lz4Ends<R>>);

impl<R: Read> Read for Lz4Stream<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.0.read(buf)?;
            if n > 0 || buf.is_empty() || self.0.get_ref().eof {
                return Ok(n);
            }
        }
    }
}

/// Passes an LZ4 frame stream through unchanged while following its structure (frame
/// headers, block sizes, end marks, checksums), so that the end of the input anywhere but
/// after a frame's end mark is an error: the decoder itself reads a stream cut between two
/// blocks as a clean end, and a truncated WAL would decode to a prefix.
#[derive(Debug)]
pub(super) struct Lz4Ends<R> {
    inner: R,
    state: Lz4State,
    /// Bytes of the field being collected (magic, flags, block size).
    field: [u8; 4],
    got: usize,
    /// The frame's FLG byte.
    flags: u8,
    /// Frames completed.
    frames: u64,
    /// Whether the input has ended.
    eof: bool,
}

/// Where in the LZ4 frame format the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lz4State {
    /// Before a frame: its magic number (4 bytes).
    Magic,
    /// FLG and BD (2 bytes).
    Flags,
    /// A block size (4 bytes).
    BlockSize,
    /// Bytes to pass over (the rest of a header, a block, a checksum), then the next state.
    Skip(u64, Lz4Next),
    /// A format this guard does not follow (a legacy or skippable frame): the decoder judges.
    Opaque,
}

/// What follows a [`Lz4State::Skip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lz4Next {
    Block,
    FrameEnd,
}

impl<R> Lz4Ends<R> {
    pub(super) fn new(inner: R) -> Self {
        Lz4Ends {
            inner,
            state: Lz4State::Magic,
            field: [0; 4],
            got: 0,
            flags: 0,
            frames: 0,
            eof: false,
        }
    }

    /// Follows `data` through the format.
    fn follow(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                Lz4State::Opaque => return,
                Lz4State::Skip(n, next) => {
                    let step = n.min(data.len() as u64);
                    data = &data[step as usize..];
                    self.state = match (n - step, next) {
                        (0, Lz4Next::Block) => Lz4State::BlockSize,
                        (0, Lz4Next::FrameEnd) => {
                            self.frames += 1;
                            Lz4State::Magic
                        }
                        (left, next) => Lz4State::Skip(left, next),
                    };
                }
                Lz4State::Magic | Lz4State::Flags | Lz4State::BlockSize => {
                    let need = if self.state == Lz4State::Flags { 2 } else { 4 };
                    let take = (need - self.got).min(data.len());
                    self.field[self.got..self.got + take].copy_from_slice(&data[..take]);
                    self.got += take;
                    data = &data[take..];
                    if self.got == need {
                        self.got = 0;
                        self.state = self.field_done();
                    }
                }
            }
        }
    }

    /// The state after a complete field.
    fn field_done(&mut self) -> Lz4State {
        let word = u32::from_le_bytes(self.field);
        match self.state {
            Lz4State::Magic if word == 0x184D_2204 => Lz4State::Flags,
            Lz4State::Magic => Lz4State::Opaque,
            Lz4State::Flags => {
                self.flags = self.field[0];
                // Content size (8), dictionary id (4), header checksum (1).
                let rest = 1
                    + if self.flags & 0x08 != 0 { 8 } else { 0 }
                    + if self.flags & 0x01 != 0 { 4 } else { 0 };
                Lz4State::Skip(rest, Lz4Next::Block)
            }
            Lz4State::BlockSize if word == 0 => {
                let checksum = if self.flags & 0x04 != 0 { 4 } else { 0 };
                if checksum == 0 {
                    self.frames += 1;
                    Lz4State::Magic
                } else {
                    Lz4State::Skip(checksum, Lz4Next::FrameEnd)
                }
            }
            Lz4State::BlockSize => {
                let checksum = if self.flags & 0x10 != 0 { 4 } else { 0 };
                Lz4State::Skip(u64::from(word & 0x7FFF_FFFF) + checksum, Lz4Next::Block)
            }
            other => other,
        }
    }

    /// Whether the input may end here.
    fn at_end(&self) -> bool {
        match self.state {
            Lz4State::Opaque => true,
            Lz4State::Magic => self.got == 0 && self.frames > 0,
            _ => false,
        }
    }
}

impl<R: Read> Read for Lz4Ends<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.eof = n == 0 && !buf.is_empty();
        if self.eof && !self.at_end() {
            // Not UnexpectedEof: the decoder takes that for a clean end between blocks.
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the lz4 stream ends before its end mark (truncated)",
            ));
        }
        self.follow(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use crate::codec::{Codec, decode_all};
    use std::io::Write;

    #[test]
    fn lz4_frames_must_end_with_their_end_mark() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let info = lz4_flex::frame::FrameInfo::new()
            .block_size(lz4_flex::frame::BlockSize::Max64KB)
            .block_checksums(true)
            .content_checksum(true);
        let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(&data).expect("lz4");
        let frame = enc.finish().expect("lz4");
        // Two frames in a row decode to both.
        let two = [frame.clone(), frame.clone()].concat();
        let got = decode_all(Codec::Lz4, &two, 1 << 20, "w").expect("two");
        assert!(
            got == [data.clone(), data.clone()].concat(),
            "{} bytes",
            got.len()
        );
        // Cut before the end mark (after the last block) or before the content checksum.
        for cut in [frame.len() - 8, frame.len() - 4, frame.len() - 1] {
            let e = decode_all(Codec::Lz4, &frame[..cut], 1 << 20, "w").expect_err("cut");
            assert!(e.to_string().contains("truncated"), "{cut}: {e}");
        }
        assert_eq!(
            decode_all(Codec::Lz4, &frame, 1 << 20, "w").expect("whole"),
            data
        );
    }
}
