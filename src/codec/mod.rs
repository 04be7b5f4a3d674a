//! The compressed and encrypted forms Barman stores: which one a file is (from its first bytes,
//! or for tar archives from the file name pg_basebackup gave it), streaming decoders for each,
//! and the external commands for what no crate can decode (Barman's `custom` compression, GPG).
//!
//! Barman never renames a compressed WAL, so the content is the only witness of its format:
//! gzip/pigz `1f 8b 08`, bzip2 `BZh`, xz `fd 37 7a 58 5a 00`, zstd `28 b5 2f fd`, lz4 frame
//! `04 22 4d 18`, snappy framing `ff 06 00 00 sNaPpY`. GPG output has no magic of its own; it
//! starts with an OpenPGP packet header, which plain WAL pages and history files never do.

use std::io::Read;

mod filter;
mod gpg;
mod lz4;

pub use filter::{DEFAULT_FILTER_TIMEOUT, Filter};
pub use gpg::{Decrypting, Decryption};
use lz4::{Lz4Ends, Lz4Stream};

use crate::error::{Error, Result};

/// A compression format Barman (or pg_basebackup) writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// gzip (Barman `gzip`, `pygzip`, `pigz`; pg_basebackup `.tar.gz`).
    Gzip,
    /// bzip2 (`bzip2`, `pybzip2`).
    Bzip2,
    /// xz container (`xz`).
    Xz,
    /// zstd frames (`zstd`; `.tar.zst`).
    Zstd,
    /// LZ4 frame format (`lz4`; `.tar.lz4`).
    Lz4,
    /// Snappy framing format (`snappy`).
    Snappy,
}

impl Codec {
    /// Every codec, in the order their magic numbers are tried.
    pub const ALL: [Codec; 6] = [
        Codec::Gzip,
        Codec::Bzip2,
        Codec::Xz,
        Codec::Zstd,
        Codec::Lz4,
        Codec::Snappy,
    ];

    /// The first bytes of a stream in this format.
    pub fn magic(self) -> &'static [u8] {
        match self {
            Codec::Gzip => &[0x1f, 0x8b, 0x08],
            Codec::Bzip2 => b"BZh",
            Codec::Xz => &[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00],
            Codec::Zstd => &[0x28, 0xb5, 0x2f, 0xfd],
            Codec::Lz4 => &[0x04, 0x22, 0x4d, 0x18],
            Codec::Snappy => b"\xff\x06\x00\x00sNaPpY",
        }
    }

    /// Barman's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Bzip2 => "bzip2",
            Codec::Xz => "xz",
            Codec::Zstd => "zstd",
            Codec::Lz4 => "lz4",
            Codec::Snappy => "snappy",
        }
    }

    /// The codec a file of this content starts with, if any.
    pub fn sniff(head: &[u8]) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| head.starts_with(c.magic()))
    }

    /// The codec a tar archive's name says (`base.tar.gz`, `16386.tar.zst`), `Ok(None)` for a
    /// plain `.tar`. Other names are not archives pg_basebackup writes.
    pub fn of_tar_name(name: &str) -> Option<Option<Codec>> {
        let (_, ext) = name.split_once(".tar")?;
        match ext {
            "" => Some(None),
            ".gz" => Some(Some(Codec::Gzip)),
            ".lz4" => Some(Some(Codec::Lz4)),
            ".zst" => Some(Some(Codec::Zstd)),
            ".bz2" => Some(Some(Codec::Bzip2)),
            ".xz" => Some(Some(Codec::Xz)),
            _ => None,
        }
    }

    /// A reader of the decoded bytes of `input`. Concatenated members or frames are all read,
    /// as the command-line tools do.
    pub fn decoder<'a>(self, input: impl Read + Send + 'a) -> Result<Box<dyn Read + Send + 'a>> {
        Ok(match self {
            Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
            Codec::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(input)),
            Codec::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(input)),
            Codec::Zstd => Box::new(
                zstd::stream::read::Decoder::new(input)
                    .map_err(|e| Error::io("start the zstd decoder", e))?,
            ),
            Codec::Lz4 => Box::new(Lz4Stream(lz4_flex::frame::FrameDecoder::new(Lz4Ends::new(
                input,
            )))),
            Codec::Snappy => Box::new(snap::read::FrameDecoder::new(input)),
        })
    }
}

/// Whether content starts like GPG output: an OpenPGP public-key or symmetric-key encrypted
/// session key packet, in the old (`0x84`/`0x85`, `0x8c`/`0x8d`) or new (`0xc1`, `0xc3`) header
/// format. Barman asks `file(1)` the same question.
pub fn looks_encrypted(head: &[u8]) -> bool {
    matches!(head.first(), Some(0x84 | 0x85 | 0x8c | 0x8d | 0xc1 | 0xc3))
}

/// Decodes a whole buffer, refusing output larger than `limit` bytes (a damaged or hostile
/// stream must not exhaust memory). `what` names the file in errors.
pub fn decode_all(codec: Codec, data: &[u8], limit: u64, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    codec
        .decoder(data)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| {
            Error::Failed(format!(
                "{what}: corrupt or truncated {} data: {}",
                codec.name(),
                crate::error::reason(&e)
            ))
        })?;
    if out.len() as u64 > limit {
        return Err(Error::Failed(format!(
            "{what}: {} data decodes to more than {limit} bytes; refusing it",
            codec.name()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn every_magic_is_recognised_and_plain_data_is_not() {
        for c in Codec::ALL {
            let mut head = c.magic().to_vec();
            head.extend_from_slice(&[0; 8]);
            assert_eq!(Codec::sniff(&head), Some(c), "{}", c.name());
        }
        // A PostgreSQL 15 WAL page (magic 0xD110, little-endian) and a history file.
        assert_eq!(Codec::sniff(&[0x10, 0xd1, 0x02, 0x00]), None);
        assert_eq!(Codec::sniff(b"1\t0/3000000\tno recovery target\n"), None);
        assert!(!looks_encrypted(&[0x10, 0xd1]));
        assert!(looks_encrypted(&[0x85, 0x02, 0x0c]));
        assert!(looks_encrypted(&[0xc1, 0xc0]));
    }

    #[test]
    fn tar_names_say_their_codec() {
        assert_eq!(Codec::of_tar_name("base.tar"), Some(None));
        assert_eq!(Codec::of_tar_name("base.tar.gz"), Some(Some(Codec::Gzip)));
        assert_eq!(Codec::of_tar_name("16386.tar.zst"), Some(Some(Codec::Zstd)));
        assert_eq!(Codec::of_tar_name("16386.tar.lz4"), Some(Some(Codec::Lz4)));
        assert_eq!(Codec::of_tar_name("base.tar.gz.gpg"), None);
        assert_eq!(Codec::of_tar_name("backup_manifest"), None);
    }

    #[test]
    fn decoding_is_bounded() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&[7u8; 10_000]).expect("gz");
        let gz = enc.finish().expect("gz");
        assert_eq!(
            decode_all(Codec::Gzip, &gz, 10_000, "x").expect("fits"),
            vec![7u8; 10_000]
        );
        let e = decode_all(Codec::Gzip, &gz, 9_999, "x").expect_err("too big");
        assert!(e.to_string().contains("more than 9999 bytes"), "{e}");
        let e = decode_all(Codec::Gzip, &gz[..gz.len() / 2], 10_000, "w").expect_err("cut");
        assert!(
            e.to_string().starts_with("w: corrupt or truncated gzip"),
            "{e}"
        );
    }
}
