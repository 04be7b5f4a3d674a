//! Checksum arithmetic shared by the engine and the local backend: CRC32C (full-object,
//! combined from pieces, of a whole file, and S3's multipart composite form), MD5, the other
//! full-object checksums S3 stores (CRC32, CRC64NVME, SHA-1, SHA-256), and their wire
//! encodings.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest, Md5};

/// CRC32C of a buffer (hardware accelerated where the CPU has it).
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Continues a CRC32C over more data.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// CRC32C of `a ++ b` from the CRC32C of `a`, of `b`, and the length of `b`.
pub fn crc32c_combine(a: u32, b: u32, len_b: u64) -> u32 {
    crc32c::crc32c_combine(a, b, len_b as usize)
}

/// The value S3 sends in `x-amz-checksum-crc32c`: base64 of the big-endian CRC.
pub fn crc32c_header(crc: u32) -> String {
    B64.encode(crc.to_be_bytes())
}

/// Parses a `x-amz-checksum-crc32c` value without a part suffix.
pub fn parse_crc32c_header(v: &str) -> Option<u32> {
    let bytes = B64.decode(v).ok()?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// The CRC32C of a whole object from a `x-amz-checksum-crc32c` value; `None` for a composite
/// (`<base64>-<parts>`, a checksum of a multipart object's parts, which no read of the whole
/// can be compared with) or a value that does not parse.
pub fn parse_full_crc32c_header(v: &str) -> Option<u32> {
    if v.contains('-') {
        return None;
    }
    parse_crc32c_header(v)
}

/// The CRC32C and length of everything in `f`, from its start to its end (whatever its
/// position).
pub fn crc32c_of_file(f: &std::fs::File) -> std::io::Result<(u32, u64)> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 256 << 10];
    let (mut crc, mut at) = (0u32, 0u64);
    loop {
        let n = match f.read_at(&mut buf, at) {
            Ok(0) => return Ok((crc, at)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        crc = crc32c_append(crc, &buf[..n]);
        at += n as u64;
    }
}

/// S3's composite checksum of a multipart object: CRC32C over the concatenated big-endian part
/// CRCs, base64, then `-<number of parts>`.
pub fn composite_crc32c(part_crcs: &[u32]) -> String {
    let mut buf = Vec::with_capacity(part_crcs.len() * 4);
    for c in part_crcs {
        buf.extend_from_slice(&c.to_be_bytes());
    }
    format!("{}-{}", crc32c_header(crc32c(&buf)), part_crcs.len())
}

/// MD5 of a buffer.
pub fn md5(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

/// `Content-MD5` header value.
pub fn md5_header(d: &[u8; 16]) -> String {
    B64.encode(d)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Incremental MD5, for verifying plain-ETag objects while streaming.
#[derive(Default, Clone)]
pub struct Md5State(Md5);

impl std::fmt::Debug for Md5State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Md5State")
    }
}

impl Md5State {
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    /// Final digest.
    pub fn finish(self) -> [u8; 16] {
        self.0.finalize().into()
    }
}

/// Incremental digest of one of S3's other full-object checksum kinds, for checking a
/// whole-object read against the value the store sent.
#[derive(Clone)]
pub enum StoredDigest {
    Crc32(crc_fast::Digest),
    Crc64Nvme(crc_fast::Digest),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl std::fmt::Debug for StoredDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredDigest")
    }
}

impl StoredDigest {
    /// A fresh digest of `kind`.
    pub fn new(kind: crate::store::ChecksumKind) -> Self {
        use crate::store::ChecksumKind as K;
        use crc_fast::CrcAlgorithm;
        match kind {
            K::Crc32 => Self::Crc32(crc_fast::Digest::new(CrcAlgorithm::Crc32IsoHdlc)),
            K::Crc64Nvme => Self::Crc64Nvme(crc_fast::Digest::new(CrcAlgorithm::Crc64Nvme)),
            K::Sha1 => Self::Sha1(sha1::Sha1::new()),
            K::Sha256 => Self::Sha256(sha2::Sha256::new()),
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Crc32(d) | Self::Crc64Nvme(d) => d.update(data),
            Self::Sha1(d) => Digest::update(d, data),
            Self::Sha256(d) => Digest::update(d, data),
        }
    }

    /// The value as S3 sends it: base64 of the big-endian digest.
    pub fn finish(self) -> String {
        match self {
            // A CRC32 is the low half of crc-fast's u64.
            Self::Crc32(d) => B64.encode((d.finalize() as u32).to_be_bytes()),
            Self::Crc64Nvme(d) => B64.encode(d.finalize().to_be_bytes()),
            Self::Sha1(d) => B64.encode(d.finalize()),
            Self::Sha256(d) => B64.encode(d.finalize()),
        }
    }
}

/// The digest of `kind` of a whole buffer, as S3 sends it.
pub fn stored_digest(kind: crate::store::ChecksumKind, data: &[u8]) -> String {
    let mut d = StoredDigest::new(kind);
    d.update(data);
    d.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_composite_checksum_is_no_whole_object_crc() {
        let h = crc32c_header(0x8A91_36AA);
        assert_eq!(parse_full_crc32c_header(&h), Some(0x8A91_36AA));
        assert_eq!(parse_full_crc32c_header(&format!("{h}-3")), None);
        assert_eq!(parse_full_crc32c_header("not base64!"), None);
    }

    #[test]
    fn crc32c_known_value() {
        // RFC 3720 test vector: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    }

    #[test]
    fn combine_equals_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (a, b) = data.split_at(12_345);
        assert_eq!(
            crc32c_combine(crc32c(a), crc32c(b), b.len() as u64),
            crc32c(&data)
        );
        assert_eq!(crc32c_append(crc32c(a), b), crc32c(&data));
    }

    #[test]
    fn header_round_trip_and_composite_shape() {
        let c = crc32c(b"hello");
        assert_eq!(parse_crc32c_header(&crc32c_header(c)), Some(c));
        assert!(composite_crc32c(&[1, 2, 3]).ends_with("-3"));
        assert_eq!(parse_crc32c_header("!!"), None);
    }

    #[test]
    fn a_files_crc_is_of_all_of_it_whatever_its_position() {
        use std::io::Seek;
        let d = tempfile::tempdir().expect("tmp");
        for size in [0usize, 1, 300_001, (1 << 20) + 12_345] {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 % 253) as u8).collect();
            let path = d.path().join(format!("f{size}"));
            std::fs::write(&path, &data).expect("write");
            let mut f = std::fs::File::open(&path).expect("open");
            f.seek(std::io::SeekFrom::End(0)).expect("seek");
            assert_eq!(
                crc32c_of_file(&f).expect("crc"),
                (crc32c(&data), size as u64),
                "{size} bytes"
            );
        }
    }

    #[test]
    fn stored_digests_match_the_published_check_values() {
        use crate::store::ChecksumKind as K;
        let hex_of = |kind, data: &[u8]| hex(&B64.decode(stored_digest(kind, data)).expect("b64"));
        // The CRC catalogue's check values over "123456789".
        assert_eq!(hex_of(K::Crc32, b"123456789"), "cbf43926");
        assert_eq!(hex_of(K::Crc64Nvme, b"123456789"), "ae8b14860a799888");
        // FIPS 180's "abc".
        assert_eq!(
            hex_of(K::Sha1, b"abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex_of(K::Sha256, b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Fed in pieces, the same value.
        for kind in [K::Crc32, K::Crc64Nvme, K::Sha1, K::Sha256] {
            let mut d = StoredDigest::new(kind);
            d.update(b"1234");
            d.update(b"56789");
            assert_eq!(d.finish(), stored_digest(kind, b"123456789"));
        }
    }

    #[test]
    fn md5_of_empty() {
        assert_eq!(hex(&md5(b"")), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
