//! How to reach and write to an S3 bucket: endpoint, addressing, credentials, proxies, TLS,
//! timeouts, and what every object created carries (storage classes, Object Lock, ACL,
//! encryption) and the bandwidth cap. The config's `s3:` section is validated into these; the
//! client is built from them ([`super::S3Store::connect`]).

use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;
use crate::store::StorageClasses;

/// How requests address the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// Path style with a custom endpoint (what S3-compatible servers expect), virtual-hosted on AWS.
    Auto,
    /// `https://endpoint/bucket/key`.
    Path,
    /// `https://bucket.endpoint/key`.
    Virtual,
    /// `https://endpoint/key`: the endpoint already names the bucket (gpbackup plugin's
    /// `remove_duplicate_bucket`).
    BucketInEndpoint,
}

/// Server-side encryption requested on writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// No SSE header.
    None,
    /// SSE-S3.
    Aes256,
    /// SSE-KMS with an optional key id.
    Kms(Option<String>),
}

/// Object Lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Users with `s3:BypassGovernanceRetention` may still delete.
    Governance,
    /// Nobody can delete before the date, not even the account root.
    Compliance,
}

/// `s3.object_lock`: every object barmans3 creates is retained this long from its creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    /// Retention mode.
    pub mode: LockMode,
    /// Retention from each object's creation.
    pub retain: Duration,
}

/// Static credentials from the config file.
#[derive(Debug, Clone)]
pub struct StaticCredentials {
    /// Access key id (not secret, but kept out of logs anyway).
    pub access_key_id: Secret,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Optional session token.
    pub session_token: Option<Secret>,
}

/// Connection settings of the S3 backend.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Custom endpoint URL; `None` means AWS.
    pub endpoint: Option<String>,
    /// Signing region.
    pub region: Option<String>,
    /// Addressing style.
    pub addressing: Addressing,
    /// Shared-config profile for the credential chain.
    pub profile: Option<String>,
    /// Static keys; `None` means the full AWS credential chain.
    pub credentials: Option<StaticCredentials>,
    /// Extra PEM CA bundle trusted for TLS.
    pub ca_bundle: Option<PathBuf>,
    /// Proxy for plain-HTTP endpoints.
    pub http_proxy: Option<Secret>,
    /// Proxy for HTTPS endpoints.
    pub https_proxy: Option<Secret>,
    /// Storage classes for new objects (`s3.storage_class`, `s3.storage_classes`).
    pub storage_classes: StorageClasses,
    /// Object Lock retention set on every object created.
    pub object_lock: Option<ObjectLock>,
    /// Bandwidth cap in bytes per second, each direction, shared by the whole process.
    pub max_bandwidth: Option<u64>,
    /// Canned ACL for new objects.
    pub acl: Option<String>,
    /// Server-side encryption.
    pub sse: Sse,
    /// SSE-C (`s3.sse: customer`): the key every request on an object's content carries.
    pub sse_customer: Option<crate::crypt::SseCustomerKey>,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Timeout for a response (or the next body bytes) to arrive.
    pub read_timeout: Duration,
    /// The bucket server-side copies read from (`None`: this one): a replica on the same
    /// endpoint with the same credentials copies from the main bucket without the bytes
    /// passing through this host.
    pub copy_source_bucket: Option<String>,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            endpoint: None,
            region: None,
            addressing: Addressing::Auto,
            profile: None,
            credentials: None,
            ca_bundle: None,
            http_proxy: None,
            https_proxy: None,
            storage_classes: StorageClasses::default(),
            object_lock: None,
            max_bandwidth: None,
            acl: None,
            sse: Sse::None,
            sse_customer: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            copy_source_bucket: None,
        }
    }
}

/// Validates an endpoint URL (`http(s)://host[:port][/]`).
pub fn validate_endpoint(e: &str) -> std::result::Result<(), String> {
    let bad = |why: &str| format!("invalid endpoint URL {e:?}: {why}");
    let uri: http::Uri = e
        .parse()
        .map_err(|_| bad("not a URL, e.g. https://s3.example.com:9000"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("the scheme must be http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    Ok(())
}
