//! The `volume` command line and its validation. (Being built.)

use clap::Subcommand;

use crate::error::Result;
use crate::volume::VolumeAction;

/// `volume` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum VolumeCommand {
    /// List volumes
    Ls,
}

impl VolumeCommand {
    /// Checks the arguments and builds the validated action.
    pub fn validate(self) -> Result<VolumeAction> {
        Ok(VolumeAction::Ls)
    }
}
