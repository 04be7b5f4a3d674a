//! Bytes into the `file://` backend. Server-side copies: a reflink where the filesystem has them
//! (the copy shares the source's blocks and costs no I/O), else a plain copy; like S3 asked for
//! a checksum on a copy, the "server" computes the CRC32C of what it wrote, so a copy is
//! verified against the caller's expectation exactly as an upload is. Request bodies (bytes, or
//! file ranges streamed into place): checked against their integrity value, as a server checks
//! a body.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use async_trait::async_trait;

use super::{LocalStore, READ_CHUNK, Sidecar, fail};
use crate::checksum;
use crate::error::{Error, Result};
use crate::store::{
    Body, ByteRange, FileRange, Integrity, ObjectRange, PartReceipt, Payload, PutOptions,
    PutReceipt, ServerCopy, Upload,
};

#[async_trait]
impl ServerCopy for LocalStore {
    async fn copy(&self, src: &str, dst: &str, opts: &PutOptions) -> Result<PutReceipt> {
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

    async fn copy_part(&self, up: &Upload, part: u32, src: &ObjectRange) -> Result<PartReceipt> {
        let (dir, rec) = self.upload("UploadPartCopy", up, part)?;
        self.store_part(&dir, &rec, part, |f| {
            self.copy_range(&src.key, src.range, f)
                .map(|crc| (crc, src.range.len()))
        })
    }
}

impl LocalStore {
    /// Writes `range` of object `src` to `out`, returning its CRC32C.
    fn copy_range(&self, src: &str, range: ByteRange, out: &mut fs::File) -> Result<u32> {
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

/// Writes a body into `out` and fsyncs it, checking it as a server checks a body: its CRC32C
/// or MD5 against its integrity value, and its length. Returns its CRC32C and length.
pub(super) fn write_body(
    op: &'static str,
    key: &str,
    body: &Body,
    out: &mut fs::File,
) -> Result<(u32, u64)> {
    let mut sums = Sums::for_body(body);
    match &body.payload {
        Payload::Bytes(b) => {
            sums.add(b);
            out.write_all(b).map_err(|e| Error::io("write body", e))?;
        }
        Payload::File(f) => copy_file_range(op, key, f, out, &mut sums)?,
    }
    out.sync_all().map_err(|e| Error::io("fsync body", e))?;
    let crc = sums.crc;
    sums.check(op, key, body.integrity)?;
    Ok((crc, body.len()))
}

/// Streams a file range into `out` through `sums`.
fn copy_file_range(
    op: &'static str,
    key: &str,
    range: &FileRange,
    out: &mut fs::File,
    sums: &mut Sums,
) -> Result<()> {
    let read_err = |e| Error::io(format!("read {}", range.path.display()), e);
    let mut f = fs::File::open(&range.path).map_err(read_err)?;
    f.seek(SeekFrom::Start(range.range.start))
        .map_err(read_err)?;
    let mut left = range.range.len();
    let mut buf = vec![0u8; READ_CHUNK];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = f.read(&mut buf[..want]).map_err(read_err)?;
        if n == 0 {
            return Err(fail(op, key, "IncompleteBody", "the body ended early"));
        }
        sums.add(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| Error::io("write body", e))?;
        left -= n as u64;
    }
    Ok(())
}

/// The CRC32C of a body as it is written, and its MD5 when the body is checked by one.
struct Sums {
    crc: u32,
    md5: Option<checksum::Md5State>,
}

impl Sums {
    fn for_body(body: &Body) -> Self {
        Sums {
            crc: 0,
            md5: matches!(body.integrity, Integrity::Md5(_)).then(Default::default),
        }
    }

    fn add(&mut self, b: &[u8]) {
        self.crc = checksum::crc32c_append(self.crc, b);
        if let Some(m) = &mut self.md5 {
            m.update(b);
        }
    }

    /// Refuses a body whose value differs from the one sent with it.
    fn check(self, op: &'static str, key: &str, integrity: Integrity) -> Result<()> {
        match integrity {
            Integrity::Crc32c(want) if want != self.crc => Err(fail(
                op,
                key,
                "InvalidDigest",
                "CRC32C does not match the body",
            )),
            Integrity::Md5(want) if Some(want) != self.md5.map(|m| m.finish()) => Err(fail(
                op,
                key,
                "BadDigest",
                "Content-MD5 does not match the body",
            )),
            _ => Ok(()),
        }
    }
}

/// CRC32C and length of a file.
fn file_crc(path: &Path) -> std::io::Result<(u32, u64)> {
    checksum::crc32c_of_file(&fs::File::open(path)?)
}
