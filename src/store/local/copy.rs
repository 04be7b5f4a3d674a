//! Bodies that are not in memory on the `file://` backend. Server-side copies: a reflink where
//! the filesystem has them (the copy shares the source's blocks and costs no I/O), else a plain
//! copy; like S3 asked for a checksum on a copy, the "server" computes the CRC32C of what it
//! wrote, so a copy is verified against the caller's expectation exactly as an upload is. File
//! ranges sent as bodies: streamed into place and checked against their integrity value, as a
//! server checks a body.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::{LocalStore, READ_CHUNK, Sidecar, fail};
use crate::checksum;
use crate::error::{Error, Result};
use crate::store::{ByteRange, FileRange, Integrity, PutOptions, PutReceipt};

impl LocalStore {
    pub(super) fn copy_object(
        &self,
        src: &str,
        dst: &str,
        opts: &PutOptions,
    ) -> Result<PutReceipt> {
        let from = self.check_key("CopyObject", src)?;
        let source = self.read_meta("CopyObject", src)?;
        self.check_key("CopyObject", dst)?;
        let (tmp, f) = self.temp_file()?;
        drop(f);
        let copied =
            fs::remove_file(&tmp).and_then(|()| reflink_copy::reflink_or_copy(&from, &tmp));
        if let Err(e) = copied {
            let _ = fs::remove_file(&tmp);
            return Err(super::io("CopyObject", src, e));
        }
        let (crc, size) = match file_crc(&tmp) {
            Ok(v) => v,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(Error::io(format!("read {}", tmp.display()), e));
            }
        };
        if size != source.size {
            let _ = fs::remove_file(&tmp);
            return Err(fail(
                "CopyObject",
                src,
                "InternalError",
                "source changed during the copy",
            ));
        }
        let etag = format!("{crc:08x}{size:016x}");
        let side = Sidecar {
            size,
            etag: etag.clone(),
            crc32c: checksum::crc32c_header(crc),
            metadata: if opts.metadata.is_empty() {
                source.metadata
            } else {
                opts.metadata.clone()
            },
        };
        self.install(dst, &tmp, &side)?;
        Ok(PutReceipt { etag: Some(etag) })
    }

    /// Writes `range` of object `src` to `out`, returning its CRC32C.
    pub(super) fn copy_range(
        &self,
        src: &str,
        range: ByteRange,
        out: &mut fs::File,
    ) -> Result<u32> {
        let from = self.check_key("UploadPartCopy", src)?;
        let source = self.read_meta("UploadPartCopy", src)?;
        if range.is_empty() || range.end > source.size {
            return Err(fail(
                "UploadPartCopy",
                src,
                "InvalidRange",
                format!("bytes {}-{} outside the object", range.start, range.end),
            ));
        }
        let mut f = fs::File::open(&from).map_err(|e| super::io("UploadPartCopy", src, e))?;
        f.seek(SeekFrom::Start(range.start))
            .map_err(|e| super::io("UploadPartCopy", src, e))?;
        let mut left = range.len();
        let mut crc = 0u32;
        let mut buf = vec![0u8; READ_CHUNK];
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = f
                .read(&mut buf[..want])
                .map_err(|e| super::io("UploadPartCopy", src, e))?;
            if n == 0 {
                return Err(fail(
                    "UploadPartCopy",
                    src,
                    "InternalError",
                    "source shrank during the copy",
                ));
            }
            crc = checksum::crc32c_append(crc, &buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| Error::io("write part", e))?;
            left -= n as u64;
        }
        Ok(crc)
    }
}

/// Streams a file range into `out`, checking it against `integrity` as a server checks a body:
/// its CRC32C and length.
pub(super) fn write_range(
    op: &'static str,
    key: &str,
    body: &FileRange,
    integrity: Integrity,
    out: &mut fs::File,
) -> Result<(u32, u64)> {
    let read_err = |e| Error::io(format!("read {}", body.path.display()), e);
    let mut f = fs::File::open(&body.path).map_err(read_err)?;
    f.seek(SeekFrom::Start(body.range.start))
        .map_err(read_err)?;
    let mut left = body.range.len();
    let (mut crc, mut md5) = (0u32, checksum::Md5State::default());
    let mut buf = vec![0u8; READ_CHUNK];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = f.read(&mut buf[..want]).map_err(read_err)?;
        if n == 0 {
            return Err(fail(op, key, "IncompleteBody", "the body ended early"));
        }
        crc = checksum::crc32c_append(crc, &buf[..n]);
        if matches!(integrity, Integrity::Md5(_)) {
            md5.update(&buf[..n]);
        }
        out.write_all(&buf[..n])
            .map_err(|e| Error::io("write body", e))?;
        left -= n as u64;
    }
    out.sync_all().map_err(|e| Error::io("fsync body", e))?;
    match integrity {
        Integrity::Crc32c(want) if want != crc => Err(fail(
            op,
            key,
            "InvalidDigest",
            "CRC32C does not match the body",
        )),
        Integrity::Md5(want) if want != md5.finish() => Err(fail(
            op,
            key,
            "BadDigest",
            "Content-MD5 does not match the body",
        )),
        _ => Ok((crc, body.range.len())),
    }
}

/// CRC32C and length of a file.
fn file_crc(path: &Path) -> std::io::Result<(u32, u64)> {
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; READ_CHUNK];
    let (mut crc, mut size) = (0u32, 0u64);
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((crc, size));
        }
        crc = checksum::crc32c_append(crc, &buf[..n]);
        size += n as u64;
    }
}
