//! The S3 backend on aws-sdk-s3: the [`Store`] operations as S3 requests. Client construction
//! is in [`client`], the classification of SDK errors in [`errors`]. This directory is the only
//! place that sees SDK types.
//!
//! Every body carries the integrity value the engine computed (CRC32C in
//! `x-amz-checksum-crc32c`, or `Content-MD5`), so the server refuses a corrupted upload; HEAD
//! and GET ask for the stored checksum (`ChecksumMode::Enabled`) so downloads can be verified
//! against it.

/// Sets what every object barmans3 creates carries (storage class by kind, ACL, encryption,
/// Object Lock, user metadata) on a request that creates one. PutObject, CreateMultipartUpload
/// and CopyObject have separate builder types that share these setters by name only, so this is
/// a macro rather than a function.
macro_rules! new_object {
    ($store:expr, $req:expr, $opts:expr) => {{
        let (sse, kms) = $store.sse();
        let (mode, until) = $store.lock();
        let mut req = $req
            .set_storage_class($store.class($opts.kind))
            .set_acl($store.acl.clone())
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms)
            .set_object_lock_mode(mode)
            .set_object_lock_retain_until_date(until);
        for (k, v) in &$opts.metadata {
            req = req.metadata(k, v);
        }
        req
    }};
}

mod client;
mod errors;
mod options;
mod read;
mod write;

pub use options::{
    Addressing, LockMode, ObjectLock, S3Options, Sse, StaticCredentials, validate_endpoint,
};

use read::{S3Body, total_from_content_range};
use write::file_stream;

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumMode, CompletedMultipartUpload, CompletedPart, Delete, ObjectCannedAcl,
    ObjectIdentifier, ObjectLockMode, ServerSideEncryption, StorageClass,
};
use bytes::Bytes;

use super::{
    ByteRange, ChecksumAlgorithm, DeleteFailure, FileRange, GetResponse, Integrity, ListPage,
    ListRequest, MultipartUpload, ObjectMeta, PartReceipt, PutOptions, PutReceipt, Store,
};
use crate::checksum;
use crate::error::{Error, Result};
use errors::{map_err, strip_quotes, to_system_time};

/// An S3 bucket reached through aws-sdk-s3.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    endpoint: String,
    classes: crate::store::StorageClasses,
    object_lock: Option<ObjectLock>,
    /// `s3.max_bandwidth`, sent and received apart.
    up: Option<std::sync::Arc<crate::store::throttle::Limiter>>,
    down: Option<std::sync::Arc<crate::store::throttle::Limiter>>,
    acl: Option<ObjectCannedAcl>,
    sse: Sse,
    read_timeout: Duration,
}

impl S3Store {
    /// A request body of bytes in memory, metered when a bandwidth cap is set.
    fn bytes_body(&self, b: Bytes) -> ByteStream {
        match &self.up {
            Some(l) => {
                ByteStream::from_body_1_x(crate::store::throttle::Metered::bytes(b, l.clone()))
            }
            None => ByteStream::from(b),
        }
    }

    /// A streamed request body, metered when a bandwidth cap is set.
    fn metered(&self, s: ByteStream) -> ByteStream {
        match &self.up {
            Some(l) => ByteStream::from_body_1_x(crate::store::throttle::Metered::stream(
                s.into_inner(),
                l.clone(),
            )),
            None => s,
        }
    }

    /// The storage class of a new object of `kind`.
    fn class(&self, kind: crate::store::ObjectKind) -> Option<StorageClass> {
        self.classes.for_kind(kind).map(StorageClass::from)
    }

    /// Object Lock mode and retain-until date for an object created now.
    fn lock(&self) -> (Option<ObjectLockMode>, Option<aws_smithy_types::DateTime>) {
        match self.object_lock {
            None => (None, None),
            Some(l) => (
                Some(match l.mode {
                    LockMode::Governance => ObjectLockMode::Governance,
                    LockMode::Compliance => ObjectLockMode::Compliance,
                }),
                Some(aws_smithy_types::DateTime::from(
                    std::time::SystemTime::now() + l.retain,
                )),
            ),
        }
    }

    fn sse(&self) -> (Option<ServerSideEncryption>, Option<String>) {
        match &self.sse {
            Sse::None => (None, None),
            Sse::Aes256 => (Some(ServerSideEncryption::Aes256), None),
            Sse::Kms(k) => (Some(ServerSideEncryption::AwsKms), k.clone()),
        }
    }
}

#[async_trait]
impl Store for S3Store {
    fn describe(&self) -> String {
        format!("s3://{} at {}", self.bucket, self.endpoint)
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        integrity: Integrity,
        opts: &PutOptions,
    ) -> Result<PutReceipt> {
        let len = body.len() as u64;
        self.put_stream(key, self.bytes_body(body), len, integrity, opts)
            .await
    }

    async fn put_file(
        &self,
        key: &str,
        body: &FileRange,
        integrity: Integrity,
        opts: &PutOptions,
    ) -> Result<PutReceipt> {
        let stream = self.metered(file_stream(body, "PutObject", key).await?);
        self.put_stream(key, stream, body.range.len(), integrity, opts)
            .await
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetResponse> {
        let mut req = self.client.get_object().bucket(&self.bucket).key(key);
        if let Some(r) = range {
            req = req.range(format!("bytes={}-{}", r.start, r.end.saturating_sub(1)));
        } else {
            req = req.checksum_mode(ChecksumMode::Enabled);
        }
        let out = req
            .send()
            .await
            .map_err(|e| map_err("GetObject", key, &self.endpoint, e))?;
        let len = out.content_length().unwrap_or(0).max(0) as u64;
        let size = out
            .content_range()
            .and_then(total_from_content_range)
            .unwrap_or(len);
        let meta = ObjectMeta {
            key: key.to_string(),
            size,
            etag: out.e_tag().map(strip_quotes),
            last_modified: to_system_time(out.last_modified()),
            crc32c: out.checksum_crc32_c().map(str::to_string),
            metadata: out
                .metadata()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            storage_class: None,
            restore: None,
            retain_until: None,
        };
        Ok(GetResponse {
            meta,
            body: Box::new(S3Body {
                stream: out.body,
                limiter: self.down.clone(),
                key: key.to_string(),
                endpoint: self.endpoint.clone(),
                read_timeout: self.read_timeout,
            }),
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|e| map_err("HeadObject", key, &self.endpoint, e))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            etag: out.e_tag().map(strip_quotes),
            last_modified: to_system_time(out.last_modified()),
            crc32c: out.checksum_crc32_c().map(str::to_string),
            metadata: out
                .metadata()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            storage_class: out.storage_class().map(|c| c.as_str().to_string()),
            restore: out.restore().map(str::to_string),
            retain_until: to_system_time(out.object_lock_retain_until_date()),
        })
    }

    async fn list_page(&self, req: &ListRequest, token: Option<&str>) -> Result<ListPage> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&req.prefix)
            .set_start_after(req.start_after.clone())
            .set_delimiter(req.delimiter.clone())
            .set_max_keys(req.max_keys.map(|m| m.min(1000) as i32))
            .set_continuation_token(token.map(str::to_string))
            .send()
            .await
            .map_err(|e| map_err("ListObjectsV2", &req.prefix, &self.endpoint, e))?;
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                let mut m = ObjectMeta::listed(o.key()?, o.size().unwrap_or(0).max(0) as u64);
                m.etag = o.e_tag().map(strip_quotes);
                m.last_modified = to_system_time(o.last_modified());
                Some(m)
            })
            .collect();
        let prefixes = out
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix().map(str::to_string))
            .collect();
        let next = if out.is_truncated().unwrap_or(false) {
            out.next_continuation_token().map(str::to_string)
        } else {
            None
        };
        Ok(ListPage {
            objects,
            prefixes,
            next,
        })
    }

    async fn delete_batch(&self, keys: &[String]) -> Result<Vec<DeleteFailure>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let ids = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Failed(format!("DeleteObjects: {e}")))?;
        let delete = Delete::builder()
            .set_objects(Some(ids))
            .quiet(true)
            .build()
            .map_err(|e| Error::Failed(format!("DeleteObjects: {e}")))?;
        let out = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| map_err("DeleteObjects", &keys[0], &self.endpoint, e))?;
        Ok(out
            .errors()
            .iter()
            .filter(|e| e.code() != Some("NoSuchKey"))
            .map(|e| DeleteFailure {
                key: e.key().unwrap_or_default().to_string(),
                message: format!(
                    "{}: {}",
                    e.code().unwrap_or("Error"),
                    e.message().unwrap_or_default()
                ),
            })
            .collect())
    }

    async fn create_multipart(
        &self,
        key: &str,
        algorithm: Option<ChecksumAlgorithm>,
        opts: &PutOptions,
    ) -> Result<String> {
        let mut req = new_object!(
            self,
            self.client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(key),
            opts
        );
        if algorithm == Some(ChecksumAlgorithm::Crc32c) {
            req = req.checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32C);
        }
        let out = req
            .send()
            .await
            .map_err(|e| map_err("CreateMultipartUpload", key, &self.endpoint, e))?;
        out.upload_id().map(str::to_string).ok_or_else(|| {
            Error::Failed(format!(
                "CreateMultipartUpload {key}: no upload id in the answer"
            ))
        })
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
        integrity: Integrity,
    ) -> Result<PartReceipt> {
        let len = body.len() as u64;
        let stream = self.bytes_body(body);
        self.part_stream(key, upload_id, part_number, stream, len, integrity)
            .await
    }

    async fn upload_part_file(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: &FileRange,
        integrity: Integrity,
    ) -> Result<PartReceipt> {
        let stream = self.metered(file_stream(body, "UploadPart", key).await?);
        self.part_stream(
            key,
            upload_id,
            part_number,
            stream,
            body.range.len(),
            integrity,
        )
        .await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[PartReceipt],
    ) -> Result<PutReceipt> {
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
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| map_err("CompleteMultipartUpload", key, &self.endpoint, e))?;
        Ok(PutReceipt {
            etag: out.e_tag().map(strip_quotes),
        })
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match map_err("AbortMultipartUpload", key, &self.endpoint, e) {
                Error::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<PartReceipt>> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .set_part_number_marker(marker.clone())
                .send()
                .await
                .map_err(|e| map_err("ListParts", key, &self.endpoint, e))?;
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

    async fn list_multipart(&self, prefix: &str) -> Result<Vec<MultipartUpload>> {
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
                .send()
                .await
                .map_err(|e| map_err("ListMultipartUploads", prefix, &self.endpoint, e))?;
            for u in page.uploads() {
                if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
                    out.push(MultipartUpload {
                        key: k.to_string(),
                        upload_id: id.to_string(),
                        initiated: to_system_time(u.initiated()),
                    });
                }
            }
            if !page.is_truncated().unwrap_or(false) {
                break;
            }
            let next = (
                page.next_key_marker().map(str::to_string),
                page.next_upload_id_marker().map(str::to_string),
            );
            if next.0.is_none() || (next.0 == key_marker && next.1 == id_marker) {
                break;
            }
            (key_marker, id_marker) = next;
        }
        Ok(out)
    }

    async fn copy(&self, src: &str, dst: &str, opts: &PutOptions) -> Result<PutReceipt> {
        self.copy_object(src, dst, opts).await
    }

    async fn object_lock_status(&self) -> Result<Option<String>> {
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

    async fn restore_object(&self, key: &str, days: u32) -> Result<()> {
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

    async fn upload_part_copy(
        &self,
        dst: &str,
        upload_id: &str,
        part_number: u32,
        src: &str,
        range: ByteRange,
    ) -> Result<PartReceipt> {
        self.part_copy(dst, upload_id, part_number, src, range)
            .await
    }
}
