//! The `archive` command line and its validation. (Being built.)

use clap::Args;

use crate::error::Result;

/// `archive` arguments.
#[derive(Debug, Clone, Args)]
pub struct ArchiveArgs {}

impl ArchiveArgs {
    /// Checks the arguments and builds the validated options.
    pub fn validate(self) -> Result<crate::gluster::ArchiveOptions> {
        Ok(crate::gluster::ArchiveOptions::default())
    }
}
