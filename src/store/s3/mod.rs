//! The S3 backend on aws-sdk-s3: the store traits as S3 requests. The core ([`Store`]) is here,
//! multipart uploads in [`multipart`], the capabilities (server-side copy, restore from archive
//! classes, Object Lock) in [`capabilities`]; client construction in [`client`], the bandwidth
//! cap in [`throttle`], the classification of SDK errors in [`errors`]. This directory is the
//! only place that sees SDK types.
//!
//! Every body carries the integrity value the engine computed (CRC32C in
//! `x-amz-checksum-crc32c`, or `Content-MD5`), so the server refuses a corrupted upload; HEAD
//! and GET ask for the stored checksums (`x-amz-checksum-mode`) so downloads can be verified
//! against them, by the engine.

/// Adds the SSE-C headers (`s3.sse: customer`) to a request on an object's content: every
/// builder that writes or reads an object, or one of its parts, has the three setters by name.
macro_rules! ssec {
    ($store:expr, $req:expr) => {
        match &$store.ssec {
            Some(k) => $req
                .sse_customer_algorithm(k.algorithm())
                .sse_customer_key(k.key_base64().expose())
                .sse_customer_key_md5(k.key_md5_base64()),
            None => $req,
        }
    };
}

/// The full-object checksum other than CRC32C that a GetObject or HeadObject output carries
/// ([`read::other_checksum`]): the two outputs are distinct types with the same getters.
macro_rules! other_checksum_of {
    ($out:expr) => {
        other_checksum(
            [
                $out.checksum_crc32(),
                $out.checksum_crc64_nvme(),
                $out.checksum_sha1(),
                $out.checksum_sha256(),
            ],
            $out.checksum_type(),
        )
    };
}

/// The SSE-C headers of a copy's source (CopyObject, UploadPartCopy): the same key, since
/// every object barmans3 writes carries it.
macro_rules! ssec_source {
    ($store:expr, $req:expr) => {
        match &$store.ssec {
            Some(k) => $req
                .copy_source_sse_customer_algorithm(k.algorithm())
                .copy_source_sse_customer_key(k.key_base64().expose())
                .copy_source_sse_customer_key_md5(k.key_md5_base64()),
            None => $req,
        }
    };
}

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
        ssec!($store, req)
    }};
}

/// Starts a request on one multipart upload (UploadPart, UploadPartCopy, Complete-, Abort-,
/// ListParts): five more builder types that share `bucket`, `key` and `upload_id` by name only.
macro_rules! on_upload {
    ($store:expr, $op:ident, $up:expr) => {
        $store
            .client
            .$op()
            .bucket(&$store.bucket)
            .key(&$up.key)
            .upload_id(&$up.id)
    };
}

/// Sends a PutObject or UploadPart request (two more builder types that share their setters by
/// name only) with its body's integrity header, `x-amz-checksum-crc32c` or `Content-MD5`. The
/// body is protected by that signed header; hashing it again for SigV4 would cost a second
/// pass over every byte, so the payload is not signed.
macro_rules! send_body {
    ($store:expr, $req:expr, $integrity:expr, $op:expr, $key:expr) => {
        match $integrity {
            $crate::store::Integrity::None => $req,
            $crate::store::Integrity::Crc32c(c) => {
                $req.checksum_crc32_c($crate::checksum::crc32c_header(c))
            }
            $crate::store::Integrity::Md5(d) => $req.content_md5($crate::checksum::md5_header(&d)),
        }
        .customize()
        .disable_payload_signing()
        .send()
        .await
        .map_err(|e| $crate::store::s3::errors::map_err($op, $key, &$store.endpoint, e))
    };
}

mod body;
mod capabilities;
mod client;
mod errors;
mod multipart;
mod options;
mod read;
mod throttle;
mod urlkey;
mod versions;

pub use options::{
    Addressing, LockMode, ObjectLock, S3Options, Sse, StaticCredentials, validate_endpoint,
};

use read::{S3Body, other_checksum, total_from_content_range};

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::types::{
    ChecksumMode, Delete, EncodingType, ObjectCannedAcl, ObjectIdentifier, ObjectLockMode,
    ServerSideEncryption, StorageClass,
};

use super::{
    Archive, Body, ByteRange, DeleteFailure, GetResponse, ListPage, ListRequest, Multipart,
    ObjectMeta, PutOptions, PutReceipt, Retention, ServerCopy, Store,
};
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
    up: Option<std::sync::Arc<throttle::Limiter>>,
    down: Option<std::sync::Arc<throttle::Limiter>>,
    acl: Option<ObjectCannedAcl>,
    sse: Sse,
    /// `s3.sse: customer`: the key sent with every request on an object's content.
    ssec: Option<crate::crypt::SseCustomerKey>,
    read_timeout: Duration,
    /// The bucket copies read from (`s3.copy_source_bucket`, else this one).
    copy_from: String,
}

impl S3Store {
    /// Deletes `keys` with one DeleteObject each: a key already gone is not a failure, a
    /// refusal is reported as the batch would report it, a retryable error ends the call.
    async fn delete_one_by_one(&self, keys: &[String]) -> Result<Vec<DeleteFailure>> {
        let mut failed = Vec::new();
        for key in keys {
            let sent = self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send();
            match sent
                .await
                .map_err(|e| map_err("DeleteObject", key, &self.endpoint, e))
            {
                Ok(_) | Err(Error::NotFound { .. }) => {}
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => failed.push(DeleteFailure {
                    key: key.clone(),
                    message: e.to_string(),
                }),
            }
        }
        Ok(failed)
    }

    /// GetObject of the current version, or of `version` (a versioned bucket's old one).
    async fn read(
        &self,
        key: &str,
        version: Option<&str>,
        range: Option<ByteRange>,
    ) -> Result<GetResponse> {
        let req = self.client.get_object().bucket(&self.bucket).key(key);
        let mut req = ssec!(self, req.set_version_id(version.map(str::to_string)));
        if let Some(r) = range {
            req = req.range(format!("bytes={}-{}", r.start, r.end.saturating_sub(1)));
        }
        // A whole object's stored checksums, asked for by the header alone: `checksum_mode`
        // would also make the SDK take one over every byte, which the engine takes already
        // (and checks whatever its kind).
        let whole = range.is_none();
        let out = req
            .customize()
            .mutate_request(move |r| {
                if whole {
                    r.headers_mut().insert("x-amz-checksum-mode", "ENABLED");
                }
            })
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
            other_checksum: other_checksum_of!(out),
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

    /// HeadObject of the current version, or of `version`.
    async fn stat(&self, key: &str, version: Option<&str>) -> Result<ObjectMeta> {
        let req = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version.map(str::to_string))
            .checksum_mode(ChecksumMode::Enabled);
        let out = ssec!(self, req)
            .send()
            .await
            .map_err(|e| map_err("HeadObject", key, &self.endpoint, e))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            etag: out.e_tag().map(strip_quotes),
            last_modified: to_system_time(out.last_modified()),
            crc32c: out.checksum_crc32_c().map(str::to_string),
            other_checksum: other_checksum_of!(out),
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

    async fn put(&self, key: &str, body: Body, opts: &PutOptions) -> Result<PutReceipt> {
        let (len, integrity) = (body.len(), body.integrity);
        let req = new_object!(
            self,
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_length(len as i64)
                .body(self.stream(body, "PutObject", key).await?),
            opts
        );
        let out = send_body!(self, req, integrity, "PutObject", key)?;
        Ok(PutReceipt {
            etag: out.e_tag().map(strip_quotes),
        })
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetResponse> {
        self.read(key, None, range).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.stat(key, None).await
    }

    /// Keys come URL-encoded (`encoding-type=url`), so a key holding a character XML 1.0
    /// cannot carry is listed like any other instead of making the whole page unreadable.
    async fn list_page(&self, req: &ListRequest, token: Option<&str>) -> Result<ListPage> {
        const OP: &str = "ListObjectsV2";
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&req.prefix)
            .set_start_after(req.start_after.clone())
            .set_delimiter(req.delimiter.clone())
            .set_max_keys(req.max_keys.map(|m| m.min(1000) as i32))
            .set_continuation_token(token.map(str::to_string))
            .encoding_type(EncodingType::Url)
            .send()
            .await
            .map_err(|e| map_err(OP, &req.prefix, &self.endpoint, e))?;
        let encoded = out.encoding_type() == Some(&EncodingType::Url);
        let mut objects = Vec::with_capacity(out.contents().len());
        for o in out.contents() {
            let Some(key) = o.key() else { continue };
            let key = urlkey::decode(OP, key, encoded)?;
            let mut m = ObjectMeta::listed(&key, o.size().unwrap_or(0).max(0) as u64);
            m.etag = o.e_tag().map(strip_quotes);
            m.last_modified = to_system_time(o.last_modified());
            objects.push(m);
        }
        let prefixes = out
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix())
            .map(|p| urlkey::decode(OP, p, encoded))
            .collect::<Result<Vec<_>>>()?;
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

    /// DeleteObjects names its keys in an XML body, which cannot carry a key holding a control
    /// character (one such key would fail the whole batch): those go one by one by DeleteObject.
    async fn delete_batch(&self, keys: &[String]) -> Result<Vec<DeleteFailure>> {
        let (keys, lone): (Vec<String>, Vec<String>) =
            keys.iter().cloned().partition(|k| urlkey::xml_can_carry(k));
        let mut failed = self.delete_one_by_one(&lone).await?;
        if keys.is_empty() {
            return Ok(failed);
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
        failed.extend(
            out.errors()
                .iter()
                .filter(|e| e.code() != Some("NoSuchKey"))
                .map(|e| DeleteFailure {
                    key: e.key().unwrap_or_default().to_string(),
                    message: format!(
                        "{}: {}",
                        e.code().unwrap_or("Error"),
                        e.message().unwrap_or_default()
                    ),
                }),
        );
        Ok(failed)
    }

    fn multipart(&self) -> &dyn Multipart {
        self
    }

    fn copier(&self) -> Option<&dyn ServerCopy> {
        Some(self)
    }

    fn archive(&self) -> Option<&dyn Archive> {
        Some(self)
    }

    fn retention(&self) -> Option<&dyn Retention> {
        Some(self)
    }

    fn versions(&self) -> Option<&dyn crate::store::Versions> {
        Some(self)
    }
}
