//! Whose WAL a segment is: the system identifier in its first page (`xlp_sysid` of the long
//! page header), read from the first bytes of the stored object, decompressed where a codec's
//! magic says so. A backup's chain is checked against the system identifier of that backup
//! (its backup.info's `systemid`), not the bucket's identity.json: after a pg_upgrade the
//! bucket holds the WAL of two systems, each right for its own backups.

use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::codec::{Codec, looks_encrypted};

/// Stored bytes kept of each checked segment: enough for any codec to give its first page
/// (bzip2 decodes by blocks of up to 900 kB).
pub const HEAD_BYTES: usize = 1 << 20;

/// `XLP_LONG_HEADER`: the first page of a segment carries the long header.
const XLP_LONG_HEADER: u16 = 0x0002;

/// What the first page of a stored segment says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The long header's system identifier, as little- and big-endian readings (the header
    /// check accepts either byte order, as PostgreSQL writes the platform's).
    System(u64, u64),
    /// The stored form cannot be read here (encrypted, or a custom compression).
    Opaque,
    /// Decoded (or plain), but no long page header at the start.
    NoHeader,
}

/// Reads the first page of a stored segment from its first bytes.
pub fn first_page(stored: &[u8]) -> Found {
    let mut page = [0u8; 40];
    let got = match Codec::sniff(stored) {
        Some(c) => match c.decoder(stored) {
            Ok(mut d) => d.read_exact(&mut page).is_ok(),
            Err(_) => false,
        },
        None if looks_encrypted(stored) => return Found::Opaque,
        None => match stored.get(..40) {
            Some(p) => {
                page.copy_from_slice(p);
                true
            }
            None => false,
        },
    };
    let info = u16::from_le_bytes([page[2], page[3]]) | u16::from_be_bytes([page[2], page[3]]);
    let pow2 = |b: &[u8]| {
        let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let w = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        (v != 0 && v.is_power_of_two()) || (w != 0 && w.is_power_of_two())
    };
    if !got || info & XLP_LONG_HEADER == 0 || !pow2(&page[32..36]) || !pow2(&page[36..40]) {
        // A custom compression Barman was configured with looks like this too.
        return if Codec::sniff(stored).is_some() {
            Found::NoHeader
        } else {
            Found::Opaque
        };
    }
    let id: [u8; 8] = page[24..32].try_into().unwrap_or_default();
    Found::System(u64::from_le_bytes(id), u64::from_be_bytes(id))
}

/// Whether what was found contradicts `want`: the segment's system identifier, when another.
pub fn other_system(found: Found, want: u64) -> Option<u64> {
    match found {
        Found::System(le, be) if le != want && be != want => Some(le),
        _ => None,
    }
}

/// A writer that keeps the first [`HEAD_BYTES`] written and drops the rest: a segment is read
/// whole (its stored checksum verified) while only its start stays in memory.
#[derive(Debug, Default)]
pub struct HeadKeeper {
    /// The bytes kept.
    pub kept: Vec<u8>,
}

impl tokio::io::AsyncWrite for HeadKeeper {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        let room = HEAD_BYTES.saturating_sub(me.kept.len()).min(buf.len());
        me.kept.extend_from_slice(&buf[..room]);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A first page of system `sys`, then zeros up to `len`.
    fn segment(sys: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        v[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        v[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        v[24..32].copy_from_slice(&sys.to_le_bytes());
        v[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
        v[36..40].copy_from_slice(&8192u32.to_le_bytes());
        v
    }

    #[test]
    fn the_system_comes_from_the_first_page_plain_or_compressed() {
        let plain = segment(7_301_234_567_890_123_456, 64 << 10);
        assert_eq!(
            other_system(first_page(&plain), 7_301_234_567_890_123_456),
            None
        );
        assert_eq!(
            other_system(first_page(&plain), 42),
            Some(7_301_234_567_890_123_456)
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).expect("gzip");
        let gz = gz.finish().expect("gzip");
        // Only the start of the stored object is kept; it is enough.
        assert_eq!(
            first_page(&gz[..gz.len().min(200)]),
            first_page(&plain),
            "gzip prefix"
        );
        let zst = zstd::encode_all(&plain[..], 3).expect("zstd");
        assert_eq!(
            other_system(first_page(&zst), 42),
            Some(7_301_234_567_890_123_456)
        );
    }

    #[test]
    fn what_cannot_be_read_is_not_a_verdict() {
        assert_eq!(first_page(&[0x85, 1, 2, 3]), Found::Opaque, "gpg");
        assert_eq!(first_page(&[9u8; 100]), Found::Opaque, "custom compression");
        assert_eq!(first_page(b"short"), Found::Opaque);
        let zst = zstd::encode_all(&[1u8; 100][..], 3).expect("zstd");
        assert_eq!(first_page(&zst), Found::NoHeader);
        for f in [Found::Opaque, Found::NoHeader] {
            assert_eq!(other_system(f, 1), None);
        }
    }

    #[tokio::test]
    async fn the_keeper_keeps_the_start_only() {
        use tokio::io::AsyncWriteExt;
        let mut k = HeadKeeper::default();
        k.write_all(&vec![1u8; HEAD_BYTES - 10]).await.expect("w");
        k.write_all(&[2u8; 100]).await.expect("w");
        assert_eq!(k.kept.len(), HEAD_BYTES);
        assert_eq!(&k.kept[HEAD_BYTES - 10..], &[2u8; 10]);
    }
}
