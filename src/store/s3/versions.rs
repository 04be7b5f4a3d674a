//! A versioned bucket through S3: GetBucketVersioning, ListObjectVersions, Get/Head/
//! DeleteObject by version id, and the per-version Object Lock requests (PutObject with a lock
//! of its own, PutObjectRetention). None of them sends the header that bypasses a governance
//! lock: the lock proof depends on the store refusing them.

use async_trait::async_trait;
use aws_sdk_s3::types::{
    BucketVersioningStatus, EncodingType, ObjectLockMode, ObjectLockRetention,
    ObjectLockRetentionMode,
};
use bytes::Bytes;

use super::errors::{map_err, strip_quotes, to_system_time};
use super::{LockMode, S3Store, urlkey};
use crate::error::{Error, Result};
use crate::store::{
    ByteRange, GetResponse, LockSpec, ObjectMeta, ObjectVersion, VersionMarker, VersionPage,
    Versioning, Versions,
};

#[async_trait]
impl Versions for S3Store {
    async fn versioning(&self) -> Result<Versioning> {
        let sent = self
            .client
            .get_bucket_versioning()
            .bucket(&self.bucket)
            .send()
            .await;
        let out = match sent {
            Ok(out) => out,
            Err(e) => {
                return match map_err("GetBucketVersioning", "", &self.endpoint, e) {
                    // A success the SDK could not read, or a store without the request.
                    Error::Store(f) if matches!(f.status, Some(200..=299 | 501)) => {
                        Ok(Versioning::Unknown)
                    }
                    other => Err(other),
                };
            }
        };
        Ok(match out.status() {
            Some(BucketVersioningStatus::Enabled) => Versioning::Enabled,
            Some(BucketVersioningStatus::Suspended) => Versioning::Suspended,
            _ => Versioning::Off,
        })
    }

    async fn list_versions_page(
        &self,
        prefix: &str,
        after: Option<&VersionMarker>,
    ) -> Result<VersionPage> {
        const OP: &str = "ListObjectVersions";
        let out = self
            .client
            .list_object_versions()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_key_marker(after.map(|m| m.key.clone()))
            .set_version_id_marker(after.map(|m| m.version_id.clone()))
            .encoding_type(EncodingType::Url)
            .send()
            .await
            .map_err(|e| map_err(OP, prefix, &self.endpoint, e))?;
        let encoded = out.encoding_type() == Some(&EncodingType::Url);
        let mut versions = Vec::new();
        for v in out.versions() {
            let (Some(key), Some(id)) = (v.key(), v.version_id()) else {
                continue;
            };
            versions.push(ObjectVersion {
                key: urlkey::decode(OP, key, encoded)?,
                version_id: id.to_string(),
                last_modified: to_system_time(v.last_modified()),
                size: v.size().unwrap_or(0).max(0) as u64,
                etag: v.e_tag().map(strip_quotes),
                delete_marker: false,
            });
        }
        for d in out.delete_markers() {
            let (Some(key), Some(id)) = (d.key(), d.version_id()) else {
                continue;
            };
            versions.push(ObjectVersion {
                key: urlkey::decode(OP, key, encoded)?,
                version_id: id.to_string(),
                last_modified: to_system_time(d.last_modified()),
                size: 0,
                etag: None,
                delete_marker: true,
            });
        }
        let next = match (
            out.is_truncated().unwrap_or(false),
            out.next_key_marker(),
            out.next_version_id_marker(),
        ) {
            (true, Some(k), Some(v)) => Some(VersionMarker {
                key: urlkey::decode(OP, k, encoded)?,
                version_id: v.to_string(),
            }),
            (true, _, _) => {
                return Err(Error::Failed(format!(
                    "{OP} {prefix}: a truncated page without its next markers from {}",
                    self.endpoint
                )));
            }
            _ => None,
        };
        Ok(VersionPage { versions, next })
    }

    async fn get_version(
        &self,
        key: &str,
        version_id: &str,
        range: Option<ByteRange>,
    ) -> Result<GetResponse> {
        self.read(key, Some(version_id), range).await
    }

    async fn head_version(&self, key: &str, version_id: &str) -> Result<ObjectMeta> {
        self.stat(key, Some(version_id)).await
    }

    async fn delete_version(&self, key: &str, version_id: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .version_id(version_id)
            .send()
            .await
            .map_err(|e| map_err("DeleteObject", key, &self.endpoint, e))?;
        Ok(())
    }
}

impl S3Store {
    /// PutObject of a small body with its own lock; the version id it got.
    pub(super) async fn put_with_lock(
        &self,
        key: &str,
        body: Bytes,
        lock: LockSpec,
    ) -> Result<String> {
        let md5 = crate::checksum::md5(&body);
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_md5(crate::checksum::md5_header(&md5))
            .object_lock_mode(match lock.mode {
                LockMode::Governance => ObjectLockMode::Governance,
                LockMode::Compliance => ObjectLockMode::Compliance,
            })
            .object_lock_retain_until_date(aws_smithy_types::DateTime::from(lock.until))
            .body(body.into());
        let out = ssec!(self, req)
            .send()
            .await
            .map_err(|e| map_err("PutObject", key, &self.endpoint, e))?;
        out.version_id().map(str::to_string).ok_or_else(|| {
            Error::Failed(format!(
                "PutObject {key}: {} answered without a version id (is versioning on?)",
                self.endpoint
            ))
        })
    }

    /// PutObjectRetention on one version, without the governance bypass.
    pub(super) async fn put_retention(
        &self,
        key: &str,
        version_id: &str,
        lock: Option<LockSpec>,
    ) -> Result<()> {
        let retention = match lock {
            Some(l) => ObjectLockRetention::builder()
                .mode(match l.mode {
                    LockMode::Governance => ObjectLockRetentionMode::Governance,
                    LockMode::Compliance => ObjectLockRetentionMode::Compliance,
                })
                .retain_until_date(aws_smithy_types::DateTime::from(l.until))
                .build(),
            // An empty retention asks for the lock to be removed.
            None => ObjectLockRetention::builder().build(),
        };
        self.client
            .put_object_retention()
            .bucket(&self.bucket)
            .key(key)
            .version_id(version_id)
            .retention(retention)
            .send()
            .await
            .map_err(|e| map_err("PutObjectRetention", key, &self.endpoint, e))?;
        Ok(())
    }
}
