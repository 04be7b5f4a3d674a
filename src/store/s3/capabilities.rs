//! The S3 store's capabilities: server-side copies (CopyObject, UploadPartCopy), restores
//! from archive classes (RestoreObject) and Object Lock (the bucket's configuration; one
//! version's retention, in [`super::versions`]).

use async_trait::async_trait;

use super::S3Store;
use super::errors::{map_err, strip_quotes};
use crate::checksum;
use crate::error::{Error, Result};
use crate::store::{
    Archive, LockSpec, ObjectRange, PartReceipt, PutOptions, PutReceipt, Retention, ServerCopy,
    Upload,
};

#[async_trait]
impl ServerCopy for S3Store {
    async fn copy(&self, src: &str, dst: &str, opts: &PutOptions) -> Result<PutReceipt> {
        let req = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(dst)
            .copy_source(copy_source(&self.copy_from, src))
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32C);
        // Metadata given replaces the source's; none given keeps it.
        let req = if opts.metadata.is_empty() {
            req
        } else {
            req.metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        };
        let req = ssec_source!(self, new_object!(self, req, opts));
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

    async fn copy_part(&self, up: &Upload, part: u32, src: &ObjectRange) -> Result<PartReceipt> {
        let dst = &up.key;
        let range = src.range;
        let req = ssec_source!(self, ssec!(self, on_upload!(self, upload_part_copy, up)));
        let out = req
            .part_number(part as i32)
            .copy_source(copy_source(&self.copy_from, &src.key))
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
            part_number: part,
            etag,
            crc32c: result
                .and_then(|r| r.checksum_crc32_c())
                .and_then(checksum::parse_crc32c_header),
            size: range.len(),
        })
    }
}

#[async_trait]
impl Archive for S3Store {
    async fn restore(&self, key: &str, days: u32) -> Result<()> {
        let req = aws_sdk_s3::types::RestoreRequest::builder()
            .days(days as i32)
            .glacier_job_parameters(
                aws_sdk_s3::types::GlacierJobParameters::builder()
                    .tier(aws_sdk_s3::types::Tier::Standard)
                    .build()
                    .map_err(|e| Error::Failed(format!("RestoreObject {key}: {e}")))?,
            )
            .build();
        match self
            .client
            .restore_object()
            .bucket(&self.bucket)
            .key(key)
            .restore_request(req)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match map_err("RestoreObject", key, &self.endpoint, e) {
                Error::Store(f) if f.code.as_deref() == Some("RestoreAlreadyInProgress") => Ok(()),
                other => Err(other),
            },
        }
    }
}

#[async_trait]
impl Retention for S3Store {
    async fn lock_status(&self) -> Result<Option<String>> {
        match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(out) => {
                let Some(c) = out.object_lock_configuration() else {
                    return Ok(None);
                };
                if c.object_lock_enabled().map(|e| e.as_str()) != Some("Enabled") {
                    return Ok(None);
                }
                let default = c.rule().and_then(|r| r.default_retention()).map(|d| {
                    let mode = d.mode().map(|m| m.as_str().to_string()).unwrap_or_default();
                    match (d.days(), d.years()) {
                        (Some(n), _) => format!("default {mode} {n} day(s)"),
                        (_, Some(n)) => format!("default {mode} {n} year(s)"),
                        _ => format!("default {mode}"),
                    }
                });
                Ok(Some(format!(
                    "enabled{}",
                    default.map_or(String::new(), |d| format!(", {d}"))
                )))
            }
            Err(e) => match map_err("GetObjectLockConfiguration", "", &self.endpoint, e) {
                Error::NotFound { .. } => Ok(None),
                Error::Store(f)
                    if f.code.as_deref() == Some("ObjectLockConfigurationNotFoundError")
                        || matches!(f.status, Some(404 | 501)) =>
                {
                    Ok(None)
                }
                other => Err(other),
            },
        }
    }

    async fn put_locked(&self, key: &str, body: bytes::Bytes, lock: LockSpec) -> Result<String> {
        self.put_with_lock(key, body, lock).await
    }

    async fn set_retention(
        &self,
        key: &str,
        version_id: &str,
        lock: Option<LockSpec>,
    ) -> Result<()> {
        self.put_retention(key, version_id, lock).await
    }
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
