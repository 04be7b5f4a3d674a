//! The async runtime and signal handling that both entry points share: one runtime builder, and
//! SIGINT/SIGTERM turned into the run's cancellation flag so work aborts its uploads cleanly.

use std::future::Future;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::transfer::Cancel;

/// Builds a multi-threaded runtime and runs `work` on it until it ends. SIGINT and SIGTERM raise
/// the cancel flag handed to `work`, which then aborts its transfers and returns
/// [`Error::Interrupted`].
pub fn block_on<T, F, Fut>(work: F) -> Result<T>
where
    F: FnOnce(Arc<Cancel>) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the async runtime", e))?;
    let cancel = Arc::new(Cancel::default());
    rt.block_on(with_signals(cancel.clone(), work(cancel)))
}

/// Runs `work` until it ends; on SIGINT or SIGTERM, raises the cancel flag and lets `work`
/// abort its uploads and return [`Error::Interrupted`].
pub async fn with_signals<T>(
    cancel: Arc<Cancel>,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| Error::io("install SIGTERM handler", e))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| Error::io("install SIGINT handler", e))?;
    tokio::pin!(work);
    loop {
        tokio::select! {
            r = &mut work => return r,
            _ = term.recv() => cancel.cancel(),
            _ = int.recv() => cancel.cancel(),
        }
    }
}
