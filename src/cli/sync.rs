//! The `sync` command line and its validation. (Being built.)

use clap::Args;

use crate::error::Result;

/// `sync` arguments.
#[derive(Debug, Clone, Args)]
pub struct SyncArgs {}

impl SyncArgs {
    /// Checks the arguments and builds the validated options.
    pub fn validate(self) -> Result<crate::filesync::SyncOptions> {
        Ok(crate::filesync::SyncOptions::default())
    }
}
