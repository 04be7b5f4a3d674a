//! Building the SDK client from our settings: TLS trust (system roots plus an optional CA
//! bundle), proxy, timeouts, credentials, region, endpoint and addressing style.
//!
//! Two choices shape everything the engine does: the SDK's own retries are off (one attempt
//! per call; the engine retries, so every retry is counted and bounded by our config), and its
//! automatic checksums are "when required" (the engine computes CRC32C or MD5 of each body once
//! and sends it; the server checks it, so nothing is hashed twice). Requests are signed with
//! SigV4 by the SDK after our interceptor has fixed the path, so the signature covers what is
//! sent.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::types::ObjectCannedAcl;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};

use super::S3Store;
use super::{Addressing, S3Options};
use crate::error::{Error, Result, one_line};

impl S3Store {
    /// Builds a client from the configuration. Fails only on local problems (CA bundle, proxy
    /// URL); credentials and reachability are checked by the first request.
    pub async fn connect(cfg: &S3Options, bucket: &str) -> Result<Self> {
        let http_client = http_client(cfg)?;
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
        // S3-compatible servers are reached path-style (no wildcard DNS needed); AWS itself
        // virtual-hosted, as it requires for new buckets.
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
            endpoint: cfg.endpoint.clone().unwrap_or_else(|| "AWS S3".to_string()),
            classes: cfg.storage_classes.clone(),
            object_lock: cfg.object_lock,
            up: cfg.max_bandwidth.map(super::throttle::Limiter::new),
            down: cfg.max_bandwidth.map(super::throttle::Limiter::new),
            acl: cfg.acl.as_deref().map(ObjectCannedAcl::from),
            sse: cfg.sse.clone(),
            ssec: cfg.sse_customer.clone(),
            read_timeout: cfg.read_timeout,
            copy_from: cfg
                .copy_source_bucket
                .clone()
                .unwrap_or_else(|| bucket.to_string()),
        })
    }
}

/// The HTTP client: rustls with the system roots and the configured CA bundle (verification is
/// never off), and the proxy for the endpoint's scheme (else the environment's).
fn http_client(cfg: &S3Options) -> Result<aws_smithy_runtime_api::client::http::SharedHttpClient> {
    let https = cfg
        .endpoint
        .as_deref()
        .is_none_or(|e| e.starts_with("https://"));
    // Loading the system roots reads and parses every certificate in /etc/ssl/certs, several
    // milliseconds that every wal-restore call (one process per WAL segment) would pay. A
    // plain-HTTP endpoint reached without a TLS proxy never needs them.
    let tls_proxy = [&cfg.http_proxy, &cfg.https_proxy].iter().any(|p| {
        p.as_ref()
            .is_some_and(|p| p.expose().starts_with("https://"))
    }) || [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|p| p.starts_with("https://")));
    let mut trust = TrustStore::default().with_native_roots(https || tls_proxy);
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
    let (setting, key) = if https {
        (&cfg.https_proxy, "s3.https_proxy")
    } else {
        (&cfg.http_proxy, "s3.http_proxy")
    };
    let proxy = match setting {
        // The proxy URL may carry a password: the message never repeats it.
        Some(p) => ProxyConfig::all(p.expose())
            .map_err(|_| Error::Config(format!("{key}: not a valid proxy URL")))?,
        None => ProxyConfig::from_env(),
    };
    Ok(
        aws_smithy_http_client::Builder::new().build_with_connector_fn(
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
        ),
    )
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
