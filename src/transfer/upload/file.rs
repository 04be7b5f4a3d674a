//! File bodies in bounded memory. A range of a file is hashed in a pre-pass (CRC32C, plus MD5
//! where the store needs Content-MD5), reading small buffers, then sent from the file itself:
//! the store streams it and the server checks the body against the value from the pre-pass.
//!
//! Why a pre-pass rather than trailing checksums: the value goes in a header every S3 server
//! verifies (trailers are not understood by all of them), the second read comes from the page
//! cache, and CRC32C runs at several GB/s, so the pass costs little while a part in flight
//! costs a read buffer instead of a whole part. Files up to [`SMALL`] are read once into memory:
//! there the saving is nothing and one read is cheaper than two.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::checksum;
use crate::error::{Error, Result};
use crate::store::{ByteRange, FileRange, Integrity};
use crate::transfer::ChecksumMode;

/// Files up to this size are read into memory and sent from there.
pub(super) const SMALL: u64 = 1 << 20;

/// Buffer of the pre-pass.
const HASH_BUFFER: usize = 256 << 10;

/// CRC32C of a body and the integrity value to send with it.
pub(super) fn integrity_for(mode: ChecksumMode, body: &[u8]) -> (u32, Integrity) {
    let crc = checksum::crc32c(body);
    (crc, integrity_known(mode, crc, body))
}

/// The integrity value to send with a body whose CRC32C is known.
pub(super) fn integrity_known(mode: ChecksumMode, crc: u32, body: &[u8]) -> Integrity {
    match mode {
        ChecksumMode::WhenSupported => Integrity::Crc32c(crc),
        ChecksumMode::WhenRequired => Integrity::Md5(checksum::md5(body)),
    }
}

fn changed(path: &Path) -> Error {
    Error::Failed(format!("{} changed size while being read", path.display()))
}

/// The pre-pass: CRC32C of the range and the integrity value to send with it. A file now
/// shorter than the range has changed, and is an error.
pub(super) async fn hash_range(body: &FileRange, mode: ChecksumMode) -> Result<(u32, Integrity)> {
    let (file, range, path) = (body.file.clone(), body.range, body.path.clone());
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; HASH_BUFFER.min(range.len() as usize).max(1)];
        let (mut crc, mut md5) = (0u32, checksum::Md5State::default());
        let mut at = range.start;
        while at < range.end {
            let n = ((range.end - at) as usize).min(buf.len());
            read_exact_at(&file, &mut buf[..n], at, &path)?;
            crc = checksum::crc32c_append(crc, &buf[..n]);
            if mode == ChecksumMode::WhenRequired {
                md5.update(&buf[..n]);
            }
            at += n as u64;
        }
        Ok(match mode {
            ChecksumMode::WhenSupported => (crc, Integrity::Crc32c(crc)),
            ChecksumMode::WhenRequired => (crc, Integrity::Md5(md5.finish())),
        })
    })
    .await
    .map_err(|e| Error::Failed(format!("read task failed: {e}")))?
}

/// Reads a whole range into memory (small files); a short read means the file changed.
pub(super) async fn read_range(file: Arc<File>, range: ByteRange, path: &Path) -> Result<Bytes> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; range.len() as usize];
        read_exact_at(&file, &mut buf, range.start, &path)?;
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(|e| Error::Failed(format!("read task failed: {e}")))?
}

/// Fills `buf` from `file` at `offset`; a file that ends first has changed.
pub(super) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64, path: &Path) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => return Err(changed(path)),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        }
    }
    Ok(())
}

/// An upload refused by the server (a body that did not match the checksum sent before it, as
/// when the file is written to meanwhile) is reported as the file having changed when it has:
/// a later run uploads it once it is quiet. Anything else stays as it is.
pub(super) fn changed_or(e: Error, before: &std::fs::Metadata, path: &Path) -> Error {
    let refused =
        matches!(&e, Error::Store(f) if !f.retryable && f.status.is_none_or(|s| s == 400));
    let changed = || {
        std::fs::symlink_metadata(path).map_or(true, |now| {
            now.len() != before.len()
                || now.mtime() != before.mtime()
                || now.mtime_nsec() != before.mtime_nsec()
                || now.ctime() != before.ctime()
                || now.ctime_nsec() != before.ctime_nsec()
        })
    };
    if refused && changed() {
        Error::Failed(format!(
            "{} changed while it was being uploaded; the server refused the body ({}); a later run uploads it once it is quiet",
            path.display(),
            e.one_line()
        ))
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pre_pass_equals_the_whole_body_hash_and_notices_a_shorter_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("f");
        let body: Vec<u8> = (0..1_000_003u32).map(|i| (i * 31 % 253) as u8).collect();
        std::fs::write(&path, &body).expect("write");
        let file = Arc::new(File::open(&path).expect("open"));
        let range = ByteRange {
            start: 17,
            end: 900_000,
        };
        let fr = FileRange {
            path: path.clone(),
            file: file.clone(),
            range,
        };
        let slice = &body[17..900_000];
        for mode in [ChecksumMode::WhenSupported, ChecksumMode::WhenRequired] {
            assert_eq!(
                hash_range(&fr, mode).await.expect("hash"),
                integrity_for(mode, slice)
            );
        }
        let long = FileRange {
            range: ByteRange {
                start: 0,
                end: body.len() as u64 + 1,
            },
            ..fr
        };
        let e = hash_range(&long, ChecksumMode::WhenSupported)
            .await
            .expect_err("short");
        assert!(e.to_string().contains("changed size"), "{e}");
        assert!(read_range(file, long.range, &path).await.is_err());
    }
}
