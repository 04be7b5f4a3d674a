//! The S3 requests that write objects: puts and parts from memory or streamed from a file,
//! and server-side copies (CopyObject, UploadPartCopy).

use aws_sdk_s3::primitives::ByteStream;

use super::S3Store;
use super::errors::{causes, map_err, strip_quotes};
use crate::checksum;
use crate::error::{Error, Result};
use crate::store::{ByteRange, FileRange, Integrity, PartReceipt, PutOptions, PutReceipt};

impl S3Store {
    pub(super) async fn put_stream(
        &self,
        key: &str,
        body: ByteStream,
        len: u64,
        integrity: Integrity,
        opts: &PutOptions,
    ) -> Result<PutReceipt> {
        let req = new_object!(
            self,
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_length(len as i64)
                .body(body),
            opts
        );
        let req = match integrity {
            Integrity::None => req,
            Integrity::Crc32c(c) => req.checksum_crc32_c(checksum::crc32c_header(c)),
            Integrity::Md5(d) => req.content_md5(checksum::md5_header(&d)),
        };
        // The body is protected by the signed checksum header; hashing it for SigV4 would
        // cost a second pass over every byte.
        let out = req
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| map_err("PutObject", key, &self.endpoint, e))?;
        Ok(PutReceipt {
            etag: out.e_tag().map(strip_quotes),
        })
    }

    pub(super) async fn part_stream(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: ByteStream,
        size: u64,
        integrity: Integrity,
    ) -> Result<PartReceipt> {
        let mut req = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number as i32)
            .content_length(size as i64)
            .body(body);
        let mut crc = None;
        req = match integrity {
            Integrity::None => req,
            Integrity::Crc32c(c) => {
                crc = Some(c);
                req.checksum_crc32_c(checksum::crc32c_header(c))
            }
            Integrity::Md5(d) => req.content_md5(checksum::md5_header(&d)),
        };
        let out = req
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| map_err("UploadPart", key, &self.endpoint, e))?;
        let etag = out
            .e_tag()
            .map(strip_quotes)
            .ok_or_else(|| Error::Failed(format!("UploadPart {key}: no ETag in the answer")))?;
        Ok(PartReceipt {
            part_number,
            etag,
            crc32c: crc,
            size,
        })
    }

    pub(super) async fn copy_object(
        &self,
        src: &str,
        dst: &str,
        opts: &PutOptions,
    ) -> Result<PutReceipt> {
        let req = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(dst)
            .copy_source(copy_source(&self.bucket, src))
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32C);
        // Metadata given replaces the source's; none given keeps it.
        let req = if opts.metadata.is_empty() {
            req
        } else {
            req.metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        };
        let req = new_object!(self, req, opts);
        let out = req
            .send()
            .await
            .map_err(|e| map_err("CopyObject", dst, &self.endpoint, e))?;
        Ok(PutReceipt {
            etag: out
                .copy_object_result()
                .and_then(|r| r.e_tag())
                .map(strip_quotes),
        })
    }

    pub(super) async fn part_copy(
        &self,
        dst: &str,
        upload_id: &str,
        part_number: u32,
        src: &str,
        range: ByteRange,
    ) -> Result<PartReceipt> {
        let out = self
            .client
            .upload_part_copy()
            .bucket(&self.bucket)
            .key(dst)
            .upload_id(upload_id)
            .part_number(part_number as i32)
            .copy_source(copy_source(&self.bucket, src))
            .copy_source_range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await
            .map_err(|e| map_err("UploadPartCopy", dst, &self.endpoint, e))?;
        let result = out.copy_part_result();
        let etag = result
            .and_then(|r| r.e_tag())
            .map(strip_quotes)
            .ok_or_else(|| Error::Failed(format!("UploadPartCopy {dst}: no ETag in the answer")))?;
        Ok(PartReceipt {
            part_number,
            etag,
            crc32c: result
                .and_then(|r| r.checksum_crc32_c())
                .and_then(checksum::parse_crc32c_header),
            size: range.len(),
        })
    }
}

/// Read buffer of a file body: large enough for few read calls, small enough that parts in
/// flight cost little memory.
const FILE_BUFFER: usize = 256 << 10;

/// A request body that reads a file range from the file itself (a fresh handle, so parallel
/// parts never share an offset), again on each retry.
pub(super) async fn file_stream(
    body: &FileRange,
    op: &'static str,
    key: &str,
) -> Result<ByteStream> {
    ByteStream::read_from()
        .path(&body.path)
        .offset(body.range.start)
        .length(aws_sdk_s3::primitives::Length::Exact(body.range.len()))
        .buffer_size(FILE_BUFFER)
        .build()
        .await
        .map_err(|e| {
            Error::Failed(format!(
                "{op} {key}: cannot read {} bytes {}-{}: {}",
                body.path.display(),
                body.range.start,
                body.range.end,
                causes(&e)
            ))
        })
}

/// The `x-amz-copy-source` value: bucket and key, the key percent-encoded except for `/`.
fn copy_source(bucket: &str, key: &str) -> String {
    let mut out = format!("{bucket}/");
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_encodes_the_key() {
        assert_eq!(copy_source("b", "p/a b+ü"), "b/p/a%20b%2B%C3%BC");
    }
}
