//! The S3 backend on aws-sdk-s3: client construction (endpoint, region, addressing, credential
//! chain, CA bundle, proxy, timeouts) and the mapping of every SDK error to our classified
//! [`StoreFailure`]. This is the only module that sees SDK types.
//!
//! The SDK's own retries are off (one attempt per call) and its automatic checksums are set to
//! "when required": the transfer engine retries and supplies checksums itself, so every retry is
//! counted and no byte is hashed twice.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumMode, CompletedMultipartUpload, CompletedPart, Delete, ObjectCannedAcl,
    ObjectIdentifier, ServerSideEncryption, StorageClass,
};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use bytes::Bytes;

use super::{
    BodyReader, ByteRange, ChecksumAlgorithm, DeleteFailure, GetResponse, Integrity, ListPage,
    ListRequest, MultipartUpload, ObjectMeta, PartReceipt, PutOptions, PutReceipt, Store,
};
use crate::checksum;
use crate::config::{Addressing, S3Config, Sse};
use crate::error::{Error, Result, StoreFailure, one_line};

/// An S3 bucket reached through aws-sdk-s3.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    endpoint: String,
    storage_class: Option<StorageClass>,
    acl: Option<ObjectCannedAcl>,
    sse: Sse,
    read_timeout: Duration,
}

/// The chain of causes of an error as one line (`a: b: c`), without the debug dump that the
/// SDK's context display appends, and without repeating a cause already included.
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    one_line(&parts.join(": "))
}

fn to_system_time(t: Option<&aws_smithy_types::DateTime>) -> Option<SystemTime> {
    t.and_then(|d| SystemTime::try_from(*d).ok())
}

fn strip_quotes(s: &str) -> String {
    s.trim_matches('"').to_string()
}

/// Turns any SDK error into our classified error. A 404 becomes [`Error::NotFound`] unless the
/// bucket itself is missing.
fn map_err<E>(
    op: &'static str,
    key: &str,
    endpoint: &str,
    err: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_string);
    let (retryable, message) = match &err {
        SdkError::TimeoutError(_) => (true, format!("timed out talking to {endpoint}")),
        SdkError::DispatchFailure(d) => {
            let chain = causes(&err);
            if chain.contains("no providers in chain provided credentials")
                || chain.contains("failed to load credentials")
            {
                return Error::Config(format!(
                    "{op}: no credentials found: set s3.access_key_id and s3.secret_access_key, or s3.profile / AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where a web identity or instance role provides them"
                ));
            }
            if let Some(i) = chain.find("invalid peer certificate") {
                // Not transient: retrying cannot make the certificate trusted.
                let reason = chain[i + "invalid peer certificate".len()..]
                    .trim_start_matches(':')
                    .trim();
                return Error::Config(format!(
                    "{op}: the TLS certificate of {endpoint} is not trusted ({reason}): name the PEM file of the CA that signed it in s3.ca_bundle, or add that CA to the system's trust store"
                ));
            }
            let why = if d.is_timeout() && chain.contains("read timeout") {
                // Connected, then no answer: a stalled server, not an unreachable one.
                "no answer within s3.read_timeout from"
            } else if d.is_timeout() {
                "timed out connecting (s3.connect_timeout) to"
            } else if d.is_io() {
                "connection failed to"
            } else {
                "request could not be sent to"
            };
            (!d.is_user(), format!("{why} {endpoint}: {chain}"))
        }
        SdkError::ResponseError(_) => (
            true,
            format!("incomplete or invalid response from {endpoint}"),
        ),
        SdkError::ConstructionFailure(_) => (false, causes(&err)),
        _ => {
            let retryable = matches!(status, Some(408 | 429 | 500..=599))
                || matches!(
                    code.as_deref(),
                    Some(
                        "SlowDown"
                            | "Throttling"
                            | "ThrottlingException"
                            | "RequestTimeout"
                            | "InternalError"
                            | "ServiceUnavailable"
                            | "RequestTimeTooSkewed"
                    )
                );
            let msg = err
                .message()
                .map(one_line)
                .unwrap_or_else(|| "request refused".to_string());
            (retryable, msg)
        }
    };
    if status == Some(404) && !matches!(code.as_deref(), Some("NoSuchBucket" | "NoSuchUpload")) {
        return Error::NotFound {
            key: key.to_string(),
        };
    }
    if code.as_deref() == Some("NoSuchUpload") {
        return Error::NotFound {
            key: format!("{key} (multipart upload)"),
        };
    }
    Error::Store(StoreFailure {
        op,
        key: key.to_string(),
        status,
        code,
        message,
        retryable,
    })
}

impl S3Store {
    /// Builds a client from the configuration. Fails only on local problems (CA bundle, proxy
    /// URL); credentials and reachability are checked by the first request.
    pub async fn connect(cfg: &S3Config, bucket: &str) -> Result<Self> {
        let endpoint_desc = cfg.endpoint.clone().unwrap_or_else(|| "AWS S3".to_string());
        let https = cfg
            .endpoint
            .as_deref()
            .is_none_or(|e| e.starts_with("https://"));

        let mut trust = TrustStore::default();
        if let Some(ca) = &cfg.ca_bundle {
            let pem = std::fs::read(ca).map_err(|e| {
                Error::Config(format!(
                    "s3.ca_bundle: cannot read {}: {}",
                    ca.display(),
                    crate::error::reason(&e)
                ))
            })?;
            trust = trust.with_pem_certificate(pem);
        }
        let tls_ctx = TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| Error::Config(format!("s3.ca_bundle: {}", one_line(&e.to_string()))))?;
        let proxy_setting = if https {
            &cfg.https_proxy
        } else {
            &cfg.http_proxy
        };
        let proxy = match proxy_setting {
            Some(p) => {
                let key = if https {
                    "s3.https_proxy"
                } else {
                    "s3.http_proxy"
                };
                ProxyConfig::all(p.expose())
                    .map_err(|_| Error::Config(format!("{key}: not a valid proxy URL")))?
            }
            None => ProxyConfig::from_env(),
        };
        let http_client = aws_smithy_http_client::Builder::new().build_with_connector_fn(
            move |settings, components| {
                let mut b = aws_smithy_http_client::Connector::builder();
                b.set_connector_settings(settings.cloned());
                if let Some(c) = components {
                    b.set_sleep_impl(c.sleep_impl());
                }
                b.proxy_config(proxy.clone())
                    .tls_provider(tls::Provider::Rustls(
                        tls::rustls_provider::CryptoMode::AwsLc,
                    ))
                    .tls_context(tls_ctx.clone())
                    .build()
            },
        );

        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(cfg.connect_timeout)
                    .read_timeout(cfg.read_timeout)
                    .build(),
            );
        if let Some(p) = &cfg.profile {
            loader = loader.profile_name(p);
        }
        if let Some(c) = &cfg.credentials {
            loader = loader.credentials_provider(Credentials::new(
                c.access_key_id.expose(),
                c.secret_access_key.expose(),
                c.session_token.as_ref().map(|t| t.expose().to_string()),
                None,
                "barmans3-config",
            ));
        }
        if let Some(r) = &cfg.region {
            loader = loader.region(Region::new(r.clone()));
        }
        let sdk = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&sdk)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if sdk.region().is_none() {
            // S3-compatible servers rarely care; AWS needs a real region from config or env.
            b = b.region(Region::new("us-east-1"));
        }
        if let Some(e) = &cfg.endpoint {
            b = b.endpoint_url(e.trim_end_matches('/'));
        }
        let path_style = match cfg.addressing {
            Addressing::Path | Addressing::BucketInEndpoint => true,
            Addressing::Virtual => false,
            Addressing::Auto => cfg.endpoint.is_some(),
        };
        b = b.force_path_style(path_style);
        if cfg.addressing == Addressing::BucketInEndpoint {
            b = b.interceptor(StripBucket(format!("/{bucket}")));
        }
        Ok(S3Store {
            client: Client::from_conf(b.build()),
            bucket: bucket.to_string(),
            endpoint: endpoint_desc,
            storage_class: cfg.storage_class.as_deref().map(StorageClass::from),
            acl: cfg.acl.as_deref().map(ObjectCannedAcl::from),
            sse: cfg.sse.clone(),
            read_timeout: cfg.read_timeout,
        })
    }

    fn sse(&self) -> (Option<ServerSideEncryption>, Option<String>) {
        match &self.sse {
            Sse::None => (None, None),
            Sse::Aes256 => (Some(ServerSideEncryption::Aes256), None),
            Sse::Kms(k) => (Some(ServerSideEncryption::AwsKms), k.clone()),
        }
    }
}

/// Removes the `/<bucket>` path segment of path-style requests, for endpoints that already
/// point at the bucket. Runs before signing, so the signature covers the final path.
#[derive(Debug)]
struct StripBucket(String);

impl aws_sdk_s3::config::Intercept for StripBucket {
    fn name(&self) -> &'static str {
        "StripBucket"
    }

    fn modify_before_signing(
        &self,
        ctx: &mut aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut<'_>,
        _rc: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> std::result::Result<(), aws_sdk_s3::error::BoxError> {
        let req = ctx.request_mut();
        let uri: http::Uri = req.uri().parse()?;
        let path = uri.path();
        let rest = match path.strip_prefix(self.0.as_str()) {
            Some(r) if r.is_empty() || r.starts_with('/') => r,
            _ => return Ok(()),
        };
        let rest = if rest.is_empty() { "/" } else { rest };
        let pq = match uri.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_string(),
        };
        let mut parts = uri.into_parts();
        parts.path_and_query = Some(pq.parse()?);
        let new = http::Uri::from_parts(parts)?;
        req.set_uri(new.to_string())?;
        Ok(())
    }
}

#[derive(Debug)]
struct S3Body {
    stream: ByteStream,
    key: String,
    endpoint: String,
    read_timeout: Duration,
}

#[async_trait]
impl BodyReader for S3Body {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        let lost = |message: String| {
            Error::Store(StoreFailure {
                op: "GetObject",
                key: self.key.clone(),
                status: None,
                code: None,
                message,
                retryable: true,
            })
        };
        match tokio::time::timeout(self.read_timeout, self.stream.next()).await {
            Err(_) => Err(lost(format!(
                "body stalled for {:?} from {}",
                self.read_timeout, self.endpoint
            ))),
            Ok(None) => Ok(None),
            Ok(Some(Ok(b))) => Ok(Some(b)),
            Ok(Some(Err(e))) => Err(lost(format!(
                "body truncated from {}: {}",
                self.endpoint,
                causes(&e)
            ))),
        }
    }
}

/// Parses the total size out of `Content-Range: bytes a-b/total`.
fn total_from_content_range(cr: &str) -> Option<u64> {
    cr.rsplit_once('/').and_then(|(_, t)| t.parse().ok())
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
        let (sse, kms) = self.sse();
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(body.len() as i64)
            .body(ByteStream::from(body))
            .set_storage_class(self.storage_class.clone())
            .set_acl(self.acl.clone())
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms);
        for (k, v) in &opts.metadata {
            req = req.metadata(k, v);
        }
        req = match integrity {
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
        };
        Ok(GetResponse {
            meta,
            body: Box::new(S3Body {
                stream: out.body,
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
        let (sse, kms) = self.sse();
        let mut req = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_storage_class(self.storage_class.clone())
            .set_acl(self.acl.clone())
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms);
        if algorithm == Some(ChecksumAlgorithm::Crc32c) {
            req = req.checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32C);
        }
        for (k, v) in &opts.metadata {
            req = req.metadata(k, v);
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
        let size = body.len() as u64;
        let mut req = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number as i32)
            .content_length(size as i64)
            .body(ByteStream::from(body));
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_total() {
        assert_eq!(total_from_content_range("bytes 0-9/100"), Some(100));
        assert_eq!(total_from_content_range("bytes */100"), Some(100));
        assert_eq!(total_from_content_range("garbage"), None);
    }
}
