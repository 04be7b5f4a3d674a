//! A versioned bucket as it was at a time (`--as-of`): a read-only store over another store's
//! [`Versions`]. Listings show each key's newest version not newer than the time (delete markers
//! hide a key, as they did then); GET and HEAD read that version by its id. Everything that
//! would write is refused: a restore from the past never changes the bucket.
//!
//! A store without versions, or a bucket that never had versioning on, is refused with one
//! line on first use: its objects are only the current ones, and reading them "as of" a time
//! would restore today's bytes under yesterday's name. The version listing of a prefix is read
//! whole once and kept for the run (pages of it are cut from memory, so a listing's pages agree
//! with each other); a key read without a listing first costs one listing of that key.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;

use super::{
    Body, ByteRange, DeleteFailure, GetResponse, ListPage, ListRequest, Multipart, MultipartUpload,
    ObjectMeta, PartReceipt, PutOptions, PutReceipt, SharedStore, Store, Upload, VersionAsOf,
    Versioning, Versions, as_of, page_from_sorted,
};
use crate::error::{Error, Result};

/// Wraps `inner` so that it reads as the bucket was at `time`.
pub fn wrap(inner: SharedStore, time: SystemTime) -> SharedStore {
    Arc::new(AsOfStore {
        inner,
        time,
        checked: tokio::sync::OnceCell::new(),
        listed: Mutex::new(HashMap::new()),
        keys: Mutex::new(HashMap::new()),
    })
}

/// The time in RFC 3339 (UTC; fractions of a second only when there are), as `--as-of`
/// takes it back: what messages show and what a child process is handed.
pub fn format_time(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// A store read as of a time.
struct AsOfStore {
    inner: SharedStore,
    time: SystemTime,
    /// Set once the bucket has been seen to keep versions.
    checked: tokio::sync::OnceCell<()>,
    /// Each listed prefix's keys as of the time, sorted.
    listed: Mutex<HashMap<String, Arc<Vec<ObjectMeta>>>>,
    /// Each key's version as of the time (`None`: the key did not exist then).
    keys: Mutex<HashMap<String, Option<String>>>,
}

impl fmt::Debug for AsOfStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.describe())
    }
}

impl AsOfStore {
    /// The inner store's versions, once the bucket is known to keep them.
    async fn versions(&self) -> Result<&dyn Versions> {
        let v = self.inner.versions().ok_or_else(|| {
            Error::Config(format!(
                "--as-of: {} keeps no object versions; it reads old versions of a versioned S3 bucket",
                self.inner.describe()
            ))
        })?;
        self.checked
            .get_or_try_init(|| async {
                match v.versioning().await? {
                    Versioning::Enabled | Versioning::Suspended => Ok(()),
                    Versioning::Off => Err(Error::Config(format!(
                        "--as-of: {} has never had versioning enabled, so it keeps no older versions to read",
                        self.inner.describe()
                    ))),
                }
            })
            .await?;
        Ok(v)
    }

    /// The keys under `prefix` as of the time, read once per prefix.
    async fn view(&self, prefix: &str) -> Result<Arc<Vec<ObjectMeta>>> {
        if let Some(v) = lock(&self.listed).get(prefix) {
            return Ok(v.clone());
        }
        let versions = self.versions().await?;
        let mut entries = Vec::new();
        let mut after = None;
        loop {
            let page = versions.list_versions_page(prefix, after.as_ref()).await?;
            entries.extend(page.versions);
            match page.next {
                Some(n) if Some(&n) != after.as_ref() => after = Some(n),
                Some(_) => {
                    return Err(Error::Failed(format!(
                        "ListObjectVersions {prefix}: {} repeated its page marker",
                        self.inner.describe()
                    )));
                }
                None => break,
            }
        }
        let view: Vec<VersionAsOf> = as_of(&entries, self.time);
        let mut keys = lock(&self.keys);
        for v in &view {
            keys.insert(v.meta.key.clone(), Some(v.version_id.clone()));
        }
        drop(keys);
        let metas = Arc::new(view.into_iter().map(|v| v.meta).collect::<Vec<_>>());
        lock(&self.listed).insert(prefix.to_string(), metas.clone());
        Ok(metas)
    }

    /// The version of `key` to read, or NotFound when the key did not exist at the time.
    async fn version_of(&self, key: &str) -> Result<String> {
        let known = lock(&self.keys).get(key).cloned();
        let found = match known {
            Some(v) => v,
            None => {
                self.view(key).await?;
                let mut keys = lock(&self.keys);
                keys.entry(key.to_string()).or_insert(None).clone()
            }
        };
        found.ok_or_else(|| Error::NotFound {
            key: key.to_string(),
        })
    }

    fn read_only(&self, what: &str, key: &str) -> Error {
        Error::Usage(format!(
            "{what} {}: {} is read-only",
            super::printable_key(key),
            self.describe()
        ))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl Store for AsOfStore {
    fn describe(&self) -> String {
        format!("{} as of {}", self.inner.describe(), format_time(self.time))
    }

    async fn put(&self, key: &str, _body: Body, _opts: &PutOptions) -> Result<PutReceipt> {
        Err(self.read_only("PutObject", key))
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetResponse> {
        let version = self.version_of(key).await?;
        let mut resp = self
            .versions()
            .await?
            .get_version(key, &version, range)
            .await?;
        resp.meta.key = key.to_string();
        Ok(resp)
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let version = self.version_of(key).await?;
        self.versions().await?.head_version(key, &version).await
    }

    async fn list_page(&self, req: &ListRequest, token: Option<&str>) -> Result<ListPage> {
        let view = self.view(&req.prefix).await?;
        Ok(page_from_sorted(&view, req, token))
    }

    async fn delete_batch(&self, keys: &[String]) -> Result<Vec<DeleteFailure>> {
        let first = keys.first().map(String::as_str).unwrap_or("");
        Err(self.read_only("DeleteObjects", first))
    }

    fn multipart(&self) -> &dyn Multipart {
        self
    }
}

/// Multipart uploads write; as of a past time there are none in progress.
#[async_trait]
impl Multipart for AsOfStore {
    async fn create(&self, key: &str, _opts: &PutOptions) -> Result<Upload> {
        Err(self.read_only("CreateMultipartUpload", key))
    }

    async fn upload_part(&self, up: &Upload, _part: u32, _body: Body) -> Result<PartReceipt> {
        Err(self.read_only("UploadPart", &up.key))
    }

    async fn complete(&self, up: &Upload, _parts: &[PartReceipt]) -> Result<PutReceipt> {
        Err(self.read_only("CompleteMultipartUpload", &up.key))
    }

    async fn abort(&self, up: &Upload) -> Result<()> {
        Err(self.read_only("AbortMultipartUpload", &up.key))
    }

    async fn list_parts(&self, up: &Upload) -> Result<Vec<PartReceipt>> {
        Err(Error::NotFound {
            key: up.key.clone(),
        })
    }

    async fn list_uploads(&self, _prefix: &str) -> Result<Vec<MultipartUpload>> {
        Ok(Vec::new())
    }
}
