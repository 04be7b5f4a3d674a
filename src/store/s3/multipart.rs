//! Multipart uploads on S3: CreateMultipartUpload (declaring the parts' checksum), UploadPart
//! from the one body type, CompleteMultipartUpload, AbortMultipartUpload, and the paged
//! ListParts and ListMultipartUploads.

use async_trait::async_trait;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, EncodingType};

use super::errors::{map_err, strip_quotes, to_system_time};
use super::{S3Store, urlkey};
use crate::checksum;
use crate::error::{Error, Result};
use crate::store::{
    Body, ChecksumAlgorithm, Integrity, Multipart, MultipartUpload, PartReceipt, PutOptions,
    PutReceipt, Upload,
};

#[async_trait]
impl Multipart for S3Store {
    async fn create(&self, key: &str, opts: &PutOptions) -> Result<Upload> {
        let mut req = new_object!(
            self,
            self.client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(key),
            opts
        );
        if opts.part_checksum == Some(ChecksumAlgorithm::Crc32c) {
            req = req.checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32C);
        }
        let out = req
            .send()
            .await
            .map_err(|e| map_err("CreateMultipartUpload", key, &self.endpoint, e))?;
        let id = out.upload_id().ok_or_else(|| {
            Error::Failed(format!(
                "CreateMultipartUpload {key}: no upload id in the answer"
            ))
        })?;
        Ok(Upload::new(key, id))
    }

    async fn upload_part(&self, up: &Upload, part: u32, body: Body) -> Result<PartReceipt> {
        let (size, integrity) = (body.len(), body.integrity);
        let req = on_upload!(self, upload_part, up)
            .part_number(part as i32)
            .content_length(size as i64)
            .body(self.stream(body, "UploadPart", &up.key).await?);
        let crc = match integrity {
            Integrity::Crc32c(c) => Some(c),
            _ => None,
        };
        let out = send_body!(self, req, integrity, "UploadPart", &up.key)?;
        let etag = out.e_tag().map(strip_quotes).ok_or_else(|| {
            Error::Failed(format!("UploadPart {}: no ETag in the answer", up.key))
        })?;
        Ok(PartReceipt {
            part_number: part,
            etag,
            crc32c: crc,
            size,
        })
    }

    async fn complete(&self, up: &Upload, parts: &[PartReceipt]) -> Result<PutReceipt> {
        let completed = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.part_number as i32)
                    .e_tag(format!("\"{}\"", p.etag))
                    .set_checksum_crc32_c(p.crc32c.map(checksum::crc32c_header))
                    .build()
            })
            .collect();
        let out = on_upload!(self, complete_multipart_upload, up)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| map_err("CompleteMultipartUpload", &up.key, &self.endpoint, e))?;
        Ok(PutReceipt {
            etag: out.e_tag().map(strip_quotes),
        })
    }

    async fn abort(&self, up: &Upload) -> Result<()> {
        match on_upload!(self, abort_multipart_upload, up).send().await {
            Ok(_) => Ok(()),
            Err(e) => match map_err("AbortMultipartUpload", &up.key, &self.endpoint, e) {
                Error::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn list_parts(&self, up: &Upload) -> Result<Vec<PartReceipt>> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = on_upload!(self, list_parts, up)
                .set_part_number_marker(marker.clone())
                .send()
                .await
                .map_err(|e| map_err("ListParts", &up.key, &self.endpoint, e))?;
            for p in page.parts() {
                out.push(PartReceipt {
                    part_number: p.part_number().unwrap_or(0).max(0) as u32,
                    etag: p.e_tag().map(strip_quotes).unwrap_or_default(),
                    crc32c: p.checksum_crc32_c().and_then(checksum::parse_crc32c_header),
                    size: p.size().unwrap_or(0).max(0) as u64,
                });
            }
            match (
                page.is_truncated().unwrap_or(false),
                page.next_part_number_marker(),
            ) {
                (true, Some(m)) if Some(m) != marker.as_deref() => marker = Some(m.to_string()),
                _ => break,
            }
        }
        out.sort_by_key(|p| p.part_number);
        Ok(out)
    }

    async fn list_uploads(&self, prefix: &str) -> Result<Vec<MultipartUpload>> {
        const OP: &str = "ListMultipartUploads";
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .encoding_type(EncodingType::Url)
                .send()
                .await
                .map_err(|e| map_err(OP, prefix, &self.endpoint, e))?;
            // Keys and the next key marker come URL-encoded when the server says so, for the
            // reason the object listing asks for it (see `urlkey`).
            let encoded = page.encoding_type() == Some(&EncodingType::Url);
            for u in page.uploads() {
                if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
                    out.push(MultipartUpload {
                        upload: Upload::new(urlkey::decode(OP, k, encoded)?, id),
                        initiated: to_system_time(u.initiated()),
                    });
                }
            }
            if !page.is_truncated().unwrap_or(false) {
                break;
            }
            let next = (
                page.next_key_marker()
                    .map(|m| urlkey::decode(OP, m, encoded))
                    .transpose()?,
                page.next_upload_id_marker().map(str::to_string),
            );
            if next.0.is_none() || (next.0 == key_marker && next.1 == id_marker) {
                break;
            }
            (key_marker, id_marker) = next;
        }
        Ok(out)
    }
}
