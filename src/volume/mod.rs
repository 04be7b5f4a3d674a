//! Bareos droplet-compatible chunked volumes (`volume put|get|ls|status|rm`). (Being built.)

/// A validated `volume` command line.
#[derive(Debug, Clone)]
pub enum VolumeAction {
    /// `volume ls`.
    Ls,
}
