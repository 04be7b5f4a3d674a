//! The values the store traits speak: what is sent with a request (integrity, options), what
//! comes back (object metadata, listing pages, receipts), and the handles of multipart uploads.
//! Our own types only: no SDK type is ever one of these.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ARCHIVE_CLASSES, ObjectKind};
use crate::error::Result;

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

/// A full-object checksum of another kind than CRC32C, which objects written by other tools
/// carry (AWS's SDKs default to CRC32 or CRC64NVME): checked by the engine on a whole-object
/// read, where every byte passes in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumKind {
    /// `x-amz-checksum-crc32` (ISO-HDLC, as zlib's).
    Crc32,
    /// `x-amz-checksum-crc64nvme`.
    Crc64Nvme,
    /// `x-amz-checksum-sha1`.
    Sha1,
    /// `x-amz-checksum-sha256`.
    Sha256,
}

impl ChecksumKind {
    /// The name S3 gives it in its header (`x-amz-checksum-<name>`).
    pub fn name(self) -> &'static str {
        match self {
            ChecksumKind::Crc32 => "crc32",
            ChecksumKind::Crc64Nvme => "crc64nvme",
            ChecksumKind::Sha1 => "sha1",
            ChecksumKind::Sha256 => "sha256",
        }
    }
}

/// The store's full-object checksum of a [`ChecksumKind`]: the value as the server sends it
/// (base64 of the big-endian digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChecksum {
    pub kind: ChecksumKind,
    pub value: String,
}

/// Options of a put, multipart create or copy.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// User metadata (`x-amz-meta-*`), lower-case keys.
    pub metadata: BTreeMap<String, String>,
    /// What the object is, which picks its storage class.
    pub kind: ObjectKind,
    /// The checksum a multipart upload's parts carry, declared when it is created. Only
    /// [`super::Multipart::create`] reads it: a single put declares its checksum with its
    /// body, and a copy always asks the server for CRC32C.
    pub part_checksum: Option<ChecksumAlgorithm>,
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
    /// Another full-object checksum the server reports, the first in [`ChecksumKind`] order
    /// when it reports several (never a composite of parts). Only set by `head` and `get`.
    pub other_checksum: Option<StoredChecksum>,
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
    /// A listing entry: key and size, nothing else known.
    pub fn listed(key: impl Into<String>, size: u64) -> Self {
        ObjectMeta {
            key: key.into(),
            size,
            etag: None,
            last_modified: None,
            crc32c: None,
            other_checksum: None,
            metadata: BTreeMap::new(),
            storage_class: None,
            restore: None,
            retain_until: None,
        }
    }

    /// The store's CRC32C of the whole object, when it keeps one (not a composite of parts).
    pub fn full_crc32c(&self) -> Option<u32> {
        self.crc32c
            .as_deref()
            .and_then(crate::checksum::parse_full_crc32c_header)
    }

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

/// A range of an object in the same store: the source of a part copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRange {
    /// The object's full key.
    pub key: String,
    /// Which bytes.
    pub range: ByteRange,
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

/// A multipart upload: S3 names one by its key and the id it gave it, always both together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// Key being uploaded.
    pub key: String,
    /// Upload id.
    pub id: String,
}

impl Upload {
    /// The upload `id` of `key`.
    pub fn new(key: impl Into<String>, id: impl Into<String>) -> Self {
        Upload {
            key: key.into(),
            id: id.into(),
        }
    }
}

/// An in-progress multipart upload, as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartUpload {
    /// Which upload.
    pub upload: Upload,
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
