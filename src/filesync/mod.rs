//! `sync SRC_DIR KEY_PREFIX`: a directory mirrored into the bucket, from a crawl or a
//! glusterfind change list. (Being built.)

/// A validated `sync` command line.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {}
