//! The object-store abstraction: one small trait that speaks our own types, and its backends.
//!
//! [`Store`] covers what the transfer engine and the producers need from S3: single puts,
//! explicit multipart (create / part / complete / abort / list in progress), ranged gets as a
//! stream, head, paged listing with `start_after` and delimiter, and batch delete. No SDK type
//! crosses this boundary. The store does no retries and no part scheduling; that is the engine's.

mod kind;
pub mod limits;
pub mod local;
mod location;
pub mod reqlog;
pub mod s3;
pub mod throttle;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;

pub use kind::{ARCHIVE_CLASSES, ObjectKind, STORAGE_CLASSES, StorageClasses};
pub use limits::MAX_DELETE_BATCH;
pub use location::{Location, normalize_prefix, validate_bucket};

/// Integrity value sent with a request body; the server verifies it and refuses a mismatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    /// No integrity header.
    None,
    /// CRC32C of the body (`x-amz-checksum-crc32c`).
    Crc32c(u32),
    /// MD5 of the body (`Content-MD5`).
    Md5([u8; 16]),
}

/// Checksum algorithm declared when a multipart upload is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    /// Parts carry CRC32C values; the object gets a composite CRC32C.
    Crc32c,
}

/// Options of a put, multipart create or copy.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// User metadata (`x-amz-meta-*`), lower-case keys.
    pub metadata: BTreeMap<String, String>,
    /// What the object is, which picks its storage class.
    pub kind: ObjectKind,
}

impl PutOptions {
    /// Options for an object of `kind` without metadata.
    pub fn of(kind: ObjectKind) -> Self {
        PutOptions {
            kind,
            ..Default::default()
        }
    }
}

/// What the store knows about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Full key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag without quotes, if known.
    pub etag: Option<String>,
    /// Last modification time, if known.
    pub last_modified: Option<SystemTime>,
    /// CRC32C as the server reports it: base64 of the full-object value, or of the composite
    /// value followed by `-<parts>` for multipart objects. Only set by `head` and `get`.
    pub crc32c: Option<String>,
    /// User metadata. Only set by `head` and `get`.
    pub metadata: BTreeMap<String, String>,
    /// Storage class, when the server names one other than STANDARD. Only set by `head`.
    pub storage_class: Option<String>,
    /// Restore status of an archived object (`x-amz-restore`: `ongoing-request="true"`, or
    /// `"false"` with an expiry date once readable). Only set by `head`.
    pub restore: Option<String>,
    /// Object Lock retain-until date. Only set by `head`.
    pub retain_until: Option<SystemTime>,
}

impl ObjectMeta {
    /// Whether the object must be restored before it can be read: in an archive class with no
    /// finished restore.
    pub fn needs_restore(&self) -> bool {
        self.storage_class
            .as_deref()
            .is_some_and(|c| ARCHIVE_CLASSES.contains(&c))
            && !self
                .restore
                .as_deref()
                .is_some_and(|r| r.contains("ongoing-request=\"false\""))
    }

    /// Whether a restore of the object was asked for and has not finished.
    pub fn restore_ongoing(&self) -> bool {
        self.restore
            .as_deref()
            .is_some_and(|r| r.contains("ongoing-request=\"true\""))
    }
}

impl ObjectMeta {
    /// A listing entry: key and size, nothing else known.
    pub fn listed(key: impl Into<String>, size: u64) -> Self {
        ObjectMeta {
            key: key.into(),
            size,
            etag: None,
            last_modified: None,
            crc32c: None,
            metadata: BTreeMap::new(),
            storage_class: None,
            restore: None,
            retain_until: None,
        }
    }
}

/// A byte range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// A byte range of a local file used as a request body: sent from the file in small buffers,
/// never held whole in memory. The caller computed its integrity value from the same bytes
/// just before; if the file changes in between, the server refuses the body.
#[derive(Debug, Clone)]
pub struct FileRange {
    /// The file (opened again by backends that stream it, so parallel parts never share a
    /// file offset).
    pub path: std::path::PathBuf,
    /// The open file, for positioned reads.
    pub file: Arc<std::fs::File>,
    /// Which bytes.
    pub range: ByteRange,
}

impl FileRange {
    /// Reads the range into memory (backends without a streaming path). A file that is now
    /// shorter is an error.
    pub async fn read(&self) -> Result<Bytes> {
        let (file, range, path) = (self.file.clone(), self.range, self.path.clone());
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; range.len() as usize];
            file.read_exact_at(&mut buf, range.start)
                .map_err(|e| crate::Error::io(format!("read {}", path.display()), e))?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(|e| crate::Error::Failed(format!("read task failed: {e}")))?
    }
}

/// A body being received.
#[async_trait]
pub trait BodyReader: Send + fmt::Debug {
    /// The next chunk, or `None` at the end. A connection lost mid-body is a retryable error.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>>;
}

/// The answer to a get: metadata and a body stream.
#[derive(Debug)]
pub struct GetResponse {
    /// Object metadata (size is the whole object's size).
    pub meta: ObjectMeta,
    /// The requested bytes.
    pub body: Box<dyn BodyReader>,
}

/// A listing request.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    /// Only keys starting with this.
    pub prefix: String,
    /// Only keys sorting strictly after this.
    pub start_after: Option<String>,
    /// Group keys by this separator after the prefix into common prefixes.
    pub delimiter: Option<String>,
    /// Page size wish (the store may return fewer); `None` means the store's maximum.
    pub max_keys: Option<usize>,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// Objects, in key order.
    pub objects: Vec<ObjectMeta>,
    /// Common prefixes (only with a delimiter), in order.
    pub prefixes: Vec<String>,
    /// Token for the next page, `None` when this was the last.
    pub next: Option<String>,
}

/// A completed part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartReceipt {
    /// 1-based part number.
    pub part_number: u32,
    /// ETag the server returned for the part.
    pub etag: String,
    /// CRC32C of the part, when uploaded with one.
    pub crc32c: Option<u32>,
    /// Size of the part in bytes.
    pub size: u64,
}

/// An in-progress multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartUpload {
    /// Key being uploaded.
    pub key: String,
    /// Upload id.
    pub upload_id: String,
    /// When it was started, if the server says.
    pub initiated: Option<SystemTime>,
}

/// The answer to a successful put or complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutReceipt {
    /// ETag of the new object, without quotes.
    pub etag: Option<String>,
}

/// A key that a batch delete could not remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteFailure {
    /// The key.
    pub key: String,
    /// The server's reason.
    pub message: String,
}

/// An object store. Keys are full keys (the caller adds its prefix).
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Human-readable location, for messages (`s3://bucket`, `file:///dir`); never secrets.
    fn describe(&self) -> String;

    /// Writes a whole object in one request.
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        integrity: Integrity,
        opts: &PutOptions,
    ) -> Result<PutReceipt>;

    /// [`Store::put`] from a file range, streamed. The default reads the range into memory.
    async fn put_file(
        &self,
        key: &str,
        body: &FileRange,
        integrity: Integrity,
        opts: &PutOptions,
    ) -> Result<PutReceipt> {
        let bytes = body.read().await?;
        self.put(key, bytes, integrity, opts).await
    }

    /// [`Store::upload_part`] from a file range, streamed. The default reads it into memory.
    async fn upload_part_file(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: &FileRange,
        integrity: Integrity,
    ) -> Result<PartReceipt> {
        let bytes = body.read().await?;
        self.upload_part(key, upload_id, part_number, bytes, integrity)
            .await
    }

    /// Reads an object, or a range of it. A missing key is [`crate::Error::NotFound`].
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetResponse>;

    /// Metadata of an object. A missing key is [`crate::Error::NotFound`].
    async fn head(&self, key: &str) -> Result<ObjectMeta>;

    /// One page of a listing; pass the previous page's `next` as `token`.
    async fn list_page(&self, req: &ListRequest, token: Option<&str>) -> Result<ListPage>;

    /// Deletes up to [`MAX_DELETE_BATCH`] keys; missing keys are not failures.
    async fn delete_batch(&self, keys: &[String]) -> Result<Vec<DeleteFailure>>;

    /// Starts a multipart upload and returns its id.
    async fn create_multipart(
        &self,
        key: &str,
        algorithm: Option<ChecksumAlgorithm>,
        opts: &PutOptions,
    ) -> Result<String>;

    /// Uploads one part.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
        integrity: Integrity,
    ) -> Result<PartReceipt>;

    /// Completes an upload from its parts, in part-number order.
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[PartReceipt],
    ) -> Result<PutReceipt>;

    /// Aborts an upload; aborting an unknown upload is not an error.
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()>;

    /// Parts already uploaded for an upload (to resume it). An unknown upload is NotFound.
    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<PartReceipt>>;

    /// In-progress uploads under a prefix, all pages.
    async fn list_multipart(&self, prefix: &str) -> Result<Vec<MultipartUpload>>;

    /// The bucket's Object Lock configuration, in words (`None`: not enabled).
    async fn object_lock_status(&self) -> Result<Option<String>> {
        Ok(None)
    }

    /// Asks for a temporary readable copy of an archived object for `days` (S3 RestoreObject).
    /// A restore already in progress is not an error.
    async fn restore_object(&self, key: &str, days: u32) -> Result<()> {
        let _ = days;
        Err(crate::error::Error::Failed(format!(
            "{}: {key} cannot be restored: this store has no archive classes",
            self.describe()
        )))
    }

    /// Copies a whole object inside the store (`src` to `dst`) without sending its bytes
    /// through this host. Objects above the single-copy limit use [`Store::upload_part_copy`].
    async fn copy(&self, src: &str, dst: &str, opts: &PutOptions) -> Result<PutReceipt> {
        let _ = (dst, opts);
        Err(crate::error::Error::Failed(format!(
            "{}: server-side copy of {src} is not supported",
            self.describe()
        )))
    }

    /// Copies `range` of `src` as one part of a multipart upload to `dst`.
    async fn upload_part_copy(
        &self,
        dst: &str,
        upload_id: &str,
        part_number: u32,
        src: &str,
        range: ByteRange,
    ) -> Result<PartReceipt> {
        let _ = (dst, upload_id, part_number, range);
        Err(crate::error::Error::Failed(format!(
            "{}: server-side copy of {src} is not supported",
            self.describe()
        )))
    }
}

/// A shared store handle.
pub type SharedStore = Arc<dyn Store>;

/// Opens the store at `location`; `s3` says how to reach it when it is a bucket.
pub async fn open(location: &Location, s3: &s3::S3Options) -> Result<SharedStore> {
    Ok(match location {
        Location::Local { root } => Arc::new(local::LocalStore::open(root)?),
        Location::S3 { bucket, .. } => Arc::new(s3::S3Store::connect(s3, bucket).await?),
    })
}

/// Joins a prefix and a relative key with exactly one '/'.
pub fn join_key(prefix: &str, rel: &str) -> String {
    match (prefix.is_empty(), rel.is_empty()) {
        (true, _) => rel.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!(
            "{}/{}",
            prefix.trim_end_matches('/'),
            rel.trim_start_matches('/')
        ),
    }
}

/// Builds the next listing page from an ordered key set: the shared logic of backends that
/// list by themselves (local store, test mock). `entries` must be sorted by key.
pub fn page_from_sorted(
    entries: &[ObjectMeta],
    req: &ListRequest,
    token: Option<&str>,
) -> ListPage {
    let max = req.max_keys.unwrap_or(1000).clamp(1, 1000);
    let after = token.or(req.start_after.as_deref());
    let start = match after {
        Some(a) => entries.partition_point(|e| e.key.as_str() <= a),
        None => entries.partition_point(|e| e.key.as_str() < req.prefix.as_str()),
    };
    let mut page = ListPage::default();
    let mut last: Option<String> = None;
    let mut i = start;
    while i < entries.len() {
        let e = &entries[i];
        if !e.key.starts_with(&req.prefix) {
            if e.key.as_str() > req.prefix.as_str() {
                break;
            }
            i += 1;
            continue;
        }
        if page.objects.len() + page.prefixes.len() >= max {
            page.next = last.clone();
            return page;
        }
        let rest = &e.key[req.prefix.len()..];
        match req
            .delimiter
            .as_deref()
            .and_then(|d| rest.find(d).map(|p| (d, p)))
        {
            Some((d, pos)) => {
                let cp = format!("{}{}", req.prefix, &rest[..pos + d.len()]);
                // Skip every key under this common prefix; the token is the prefix itself
                // followed by the highest char, so the next page starts after them.
                while i < entries.len() && entries[i].key.starts_with(&cp) {
                    i += 1;
                }
                last = Some(format!("{cp}\u{10FFFF}"));
                page.prefixes.push(cp);
            }
            None => {
                last = Some(e.key.clone());
                page.objects.push(e.clone());
                i += 1;
            }
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(keys: &[&str]) -> Vec<ObjectMeta> {
        let mut v: Vec<_> = keys.iter().map(|k| ObjectMeta::listed(*k, 1)).collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    #[test]
    fn join_key_uses_one_slash() {
        assert_eq!(join_key("", "a"), "a");
        assert_eq!(join_key("p", "a"), "p/a");
        assert_eq!(join_key("p/", "/a"), "p/a");
    }

    #[test]
    fn pages_follow_prefix_start_after_and_delimiter() {
        let e = entries(&["a/1", "a/2", "a/x/1", "a/x/2", "a/y", "b/1"]);
        let req = ListRequest {
            prefix: "a/".into(),
            delimiter: Some("/".into()),
            ..Default::default()
        };
        let p = page_from_sorted(&e, &req, None);
        let keys: Vec<_> = p.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["a/1", "a/2", "a/y"]);
        assert_eq!(p.prefixes, ["a/x/"]);
        assert!(p.next.is_none());

        let req = ListRequest {
            prefix: "a/".into(),
            start_after: Some("a/2".into()),
            max_keys: Some(1),
            ..Default::default()
        };
        let p = page_from_sorted(&e, &req, None);
        assert_eq!(p.objects[0].key, "a/x/1");
        let p2 = page_from_sorted(&e, &req, p.next.as_deref());
        assert_eq!(p2.objects[0].key, "a/x/2");
    }
}
