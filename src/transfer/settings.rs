//! The transfer engine's settings: part size, concurrency, attempts, and the integrity
//! mechanism of uploads. The config's `s3:` section fills them; the gpbackup plugin sets its own.

/// Which integrity mechanism uploads use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumMode {
    /// CRC32C flexible checksums on every part and object (AWS S3, Garage, recent MinIO).
    WhenSupported,
    /// Content-MD5 only, for servers that reject the newer checksum headers.
    WhenRequired,
}

/// Settings of the transfer engine (`s3.part_size`, `s3.concurrency`, `s3.max_attempts`,
/// `s3.request_checksum`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Configured part size (the engine raises it for very large objects).
    pub part_size: u64,
    /// Parts or ranges in flight at once, per run.
    pub concurrency: usize,
    /// Attempts per request, including the first.
    pub max_attempts: u32,
    /// Integrity mechanism for uploads.
    pub checksum: ChecksumMode,
    /// Objects above this size are copied server-side part by part (S3's single-copy limit;
    /// lowered only by tests).
    pub copy_limit: u64,
    /// Bytes a stream (stdin upload, stream download) may hold in parts or ranges at once
    /// (`s3.stream_memory`); streams size their parts from it, not from `part_size`.
    pub stream_memory: u64,
    /// `s3.request_checksum: auto`: probe the store on the first upload (`checksum` is then
    /// only the fallback), where the run says ([`super::Transfer::with_checksum_probe`]).
    pub probe_checksum: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            part_size: 64 << 20,
            concurrency: 8,
            max_attempts: 5,
            checksum: ChecksumMode::WhenSupported,
            copy_limit: crate::store::limits::MAX_COPY_SIZE,
            probe_checksum: true,
            stream_memory: super::plan::STREAM_MEMORY,
        }
    }
}
