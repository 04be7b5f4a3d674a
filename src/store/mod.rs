//! The object-store abstraction: small traits that speak our own types, and their backends.
//!
//! The shape follows object_store's: a small required core, multipart apart, and what only
//! some stores can do as capabilities a caller asks for.
//! - [`Store`], the core every backend has: put (one [`Body`] type for bytes and file
//!   ranges), ranged get as a stream, head, one listing page, batch delete.
//! - [`Multipart`], which every backend also has but which is its own trait: create, upload a
//!   part, complete, abort, list parts, list uploads in progress.
//! - Capabilities, each its own trait behind an accessor that answers `None` where the store
//!   cannot: [`ServerCopy`] (CopyObject, UploadPartCopy), [`Archive`] (RestoreObject from an
//!   archive class), [`Retention`] (Object Lock, the bucket's and one version's), [`Versions`]
//!   (a versioned bucket's old versions). A caller that gets `None` says so in its own words;
//!   no method fails silently behind a default. S3-only needs join as capabilities, never as
//!   core methods; per-request headers such as SSE-C keys are a backend's settings, not the
//!   traits'. [`asof`] is a read-only store over another's versions: the bucket as it was.
//!
//! A store that wraps another (the request log and the run's counters in [`reqlog`]) implements
//! every trait it forwards with `#[deny(clippy::missing_trait_methods)]`, so a method added
//! later cannot pass it by silently. No SDK type crosses this boundary. The store does no
//! retries and no part scheduling; that is the engine's.

pub mod asof;
mod body;
mod kind;
pub mod limits;
mod listing;
pub mod local;
mod location;
pub mod lockproof;
pub mod reqlog;
pub mod s3;
mod types;
mod versions;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;

pub use body::{Body, FileRange, Payload};
pub use kind::{ARCHIVE_CLASSES, ObjectKind, STORAGE_CLASSES, StorageClasses};
pub use limits::MAX_DELETE_BATCH;
pub use listing::page_from_sorted;
pub use location::{Location, normalize_prefix, validate_bucket};
pub use types::{
    BodyReader, ByteRange, ChecksumAlgorithm, ChecksumKind, DeleteFailure, GetResponse, Integrity,
    ListPage, ListRequest, MultipartUpload, ObjectMeta, ObjectRange, PartReceipt, PutOptions,
    PutReceipt, StoredChecksum, Upload,
};
pub use versions::{
    AsOfFold, LockSpec, ObjectVersion, VersionAsOf, VersionMarker, VersionPage, Versioning, as_of,
};

/// An object store. Keys are full keys (the caller adds its prefix).
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Human-readable location, for messages (`s3://bucket`, `file:///dir`); never secrets.
    fn describe(&self) -> String;

    /// Writes a whole object in one request.
    async fn put(&self, key: &str, body: Body, opts: &PutOptions) -> Result<PutReceipt>;

    /// Reads an object, or a range of it. A missing key is [`crate::Error::NotFound`].
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetResponse>;

    /// Metadata of an object. A missing key is [`crate::Error::NotFound`].
    async fn head(&self, key: &str) -> Result<ObjectMeta>;

    /// One page of a listing; pass the previous page's `next` as `token`.
    async fn list_page(&self, req: &ListRequest, token: Option<&str>) -> Result<ListPage>;

    /// Deletes up to [`MAX_DELETE_BATCH`] keys; missing keys are not failures.
    async fn delete_batch(&self, keys: &[String]) -> Result<Vec<DeleteFailure>>;

    /// Multipart uploads of this store.
    fn multipart(&self) -> &dyn Multipart;

    /// Server-side copies, where the store makes them.
    fn copier(&self) -> Option<&dyn ServerCopy> {
        None
    }

    /// Restores from archive classes, where the store has them.
    fn archive(&self) -> Option<&dyn Archive> {
        None
    }

    /// Object Lock, where the store has it.
    fn retention(&self) -> Option<&dyn Retention> {
        None
    }

    /// Old versions of objects, where the store keeps them.
    fn versions(&self) -> Option<&dyn Versions> {
        None
    }
}

/// Multipart uploads: an object written as numbered parts, then completed in one request.
#[async_trait]
pub trait Multipart: Send + Sync + fmt::Debug {
    /// Starts an upload of `key` (declaring `opts.part_checksum`).
    async fn create(&self, key: &str, opts: &PutOptions) -> Result<Upload>;

    /// Uploads part `part` (1-based).
    async fn upload_part(&self, up: &Upload, part: u32, body: Body) -> Result<PartReceipt>;

    /// Completes an upload from its parts, in part-number order.
    async fn complete(&self, up: &Upload, parts: &[PartReceipt]) -> Result<PutReceipt>;

    /// Aborts an upload; aborting an unknown upload is not an error.
    async fn abort(&self, up: &Upload) -> Result<()>;

    /// Parts already uploaded (to resume). An unknown upload is NotFound.
    async fn list_parts(&self, up: &Upload) -> Result<Vec<PartReceipt>>;

    /// Uploads in progress under a prefix, all pages.
    async fn list_uploads(&self, prefix: &str) -> Result<Vec<MultipartUpload>>;
}

/// Copies inside the store, without the bytes passing through this host.
#[async_trait]
pub trait ServerCopy: Send + Sync + fmt::Debug {
    /// Copies a whole object (`src` to `dst`). The options' metadata replaces the source's
    /// when not empty. Objects above the single-copy limit go part by part instead.
    async fn copy(&self, src: &str, dst: &str, opts: &PutOptions) -> Result<PutReceipt>;

    /// Copies a range of another object as part `part` of an upload.
    async fn copy_part(&self, up: &Upload, part: u32, src: &ObjectRange) -> Result<PartReceipt>;
}

/// Archive storage classes, whose objects must be restored before they can be read.
#[async_trait]
pub trait Archive: Send + Sync + fmt::Debug {
    /// Asks for a temporary readable copy of an archived object for `days` (S3
    /// RestoreObject). A restore already in progress is not an error.
    async fn restore(&self, key: &str, days: u32) -> Result<()>;
}

/// Object Lock: objects that cannot be deleted or overwritten before a date.
#[async_trait]
pub trait Retention: Send + Sync + fmt::Debug {
    /// The bucket's Object Lock configuration, in words (`None`: not enabled).
    async fn lock_status(&self) -> Result<Option<String>>;

    /// Writes a small object locked with `lock` (not the configured lock) and returns the
    /// version id it got.
    async fn put_locked(&self, key: &str, body: bytes::Bytes, lock: LockSpec) -> Result<String>;

    /// Sets one version's retention to `lock`, or removes it (`None`). Never sends the header
    /// that bypasses a governance lock: a lock that holds refuses what would weaken it.
    async fn set_retention(
        &self,
        key: &str,
        version_id: &str,
        lock: Option<LockSpec>,
    ) -> Result<()>;
}

/// A versioned bucket's history: every version and delete marker of every key.
#[async_trait]
pub trait Versions: Send + Sync + fmt::Debug {
    /// Whether the bucket keeps versions.
    async fn versioning(&self) -> Result<Versioning>;

    /// One page of the versions under `prefix`; pass the previous page's `next` as `after`.
    async fn list_versions_page(
        &self,
        prefix: &str,
        after: Option<&VersionMarker>,
    ) -> Result<VersionPage>;

    /// Reads one version of an object, or a range of it; a missing version is NotFound.
    async fn get_version(
        &self,
        key: &str,
        version_id: &str,
        range: Option<ByteRange>,
    ) -> Result<GetResponse>;

    /// Metadata of one version (with its retain-until date); a missing version is NotFound.
    async fn head_version(&self, key: &str, version_id: &str) -> Result<ObjectMeta>;

    /// Deletes one version for good (not a delete marker). Never bypasses a governance lock.
    async fn delete_version(&self, key: &str, version_id: &str) -> Result<()>;
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

/// A key as one line of text: a control character (which could end the line or rewrite the
/// terminal) becomes `\n`, `\r`, `\t`, `\xHH` or `\uHHHH`, and a backslash is doubled, so
/// the form is unambiguous and `printf '%b'` turns it back into the key.
pub fn printable_key(key: &str) -> std::borrow::Cow<'_, str> {
    if !key.chars().any(|c| c == '\\' || c.is_control()) {
        return std::borrow::Cow::Borrowed(key);
    }
    let mut out = String::with_capacity(key.len() + 8);
    for c in key.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `key` relative to `prefix` (as `store get` takes it), or the whole key when it is not
/// under the prefix.
pub fn relative_key<'a>(prefix: &str, key: &'a str) -> &'a str {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() {
        return key;
    }
    key.strip_prefix(p)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_keys_hold_one_line_and_read_back_with_printf() {
        for (key, shown) in [
            (
                "pg/wals/0000000100000000000000A1",
                "pg/wals/0000000100000000000000A1",
            ),
            ("a\n       7 forged", "a\\n       7 forged"),
            ("tab\there\r", "tab\\there\\r"),
            (
                "esc\u{1b}[2J bell\u{7} del\u{7f}",
                "esc\\x1b[2J bell\\x07 del\\x7f",
            ),
            ("nel\u{85}", "nel\\u0085"),
            ("back\\slash\\n", "back\\\\slash\\\\n"),
            ("é ü 日本", "é ü 日本"),
        ] {
            let got = printable_key(key);
            assert_eq!(got, shown, "{key:?}");
            assert!(!got.contains(['\n', '\r']), "{got:?}");
        }
    }

    #[test]
    fn relative_keys_are_what_get_takes() {
        assert_eq!(relative_key("barman", "barman/pg/x"), "pg/x");
        assert_eq!(relative_key("barman/", "barman/pg/x"), "pg/x");
        assert_eq!(relative_key("", "pg/x"), "pg/x");
        assert_eq!(relative_key("barman", "barmanx/pg"), "barmanx/pg");
        for (p, rel) in [("barman", "pg/x"), ("a/b", "c"), ("", "k")] {
            assert_eq!(relative_key(p, &join_key(p, rel)), rel);
        }
    }

    #[test]
    fn join_key_uses_one_slash() {
        assert_eq!(join_key("", "a"), "a");
        assert_eq!(join_key("p", "a"), "p/a");
        assert_eq!(join_key("p/", "/a"), "p/a");
    }
}
