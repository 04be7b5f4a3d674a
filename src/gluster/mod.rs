//! Gluster cloudsync cold-file archival (`archive BRICK --mount MNT`). (Being built.)

/// A validated `archive` command line.
#[derive(Debug, Clone, Default)]
pub struct ArchiveOptions {}
