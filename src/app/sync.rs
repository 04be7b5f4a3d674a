//! Runs `sync`: config, engine, report, exit code. (Being built.)

use std::sync::Arc;

use super::invocation::Options;
use crate::error::{Error, Exit, Result};
use crate::transfer::Cancel;

pub(super) async fn run(o: Options, action: crate::filesync::SyncOptions, cancel: Arc<Cancel>) -> Result<Exit> {
    let _ = (o, action, cancel);
    Err(Error::Usage("sync is not available yet".into()))
}
