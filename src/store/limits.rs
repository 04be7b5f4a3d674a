//! What S3 allows, in one place: part sizes, the number of parts of one object, the keys of one
//! batch delete. The engine sizes parts and batches by these; the config checks against them.

/// Smallest part S3 accepts (except the last part of an upload).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// Largest part S3 accepts.
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// Most parts one multipart upload may have.
pub const MAX_PARTS: u64 = 10_000;
/// Most keys one DeleteObjects request may carry.
pub const MAX_DELETE_BATCH: usize = 1000;
/// Largest object one CopyObject request may copy; larger ones are copied part by part.
pub const MAX_COPY_SIZE: u64 = 5 << 30;
/// Largest object one PutObject request may create.
pub const MAX_PUT_SIZE: u64 = 5 << 30;
