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
    block_on_with(Threads::PerCore, work)
}

/// The threads a run's runtime works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// A worker thread per core.
    PerCore,
    /// A worker thread per core, at most this many: a run whose parallelism is bounded
    /// elsewhere (a few requests at once) gains nothing from more.
    AtMost(usize),
    /// The calling thread alone: for a run of a request or two, where starting a worker per
    /// core (and waking them) costs more than the run itself.
    One,
}

/// [`block_on`] on a runtime with these threads.
pub fn block_on_with<T, F, Fut>(threads: Threads, work: F) -> Result<T>
where
    F: FnOnce(Arc<Cancel>) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut b = match threads {
        Threads::One => tokio::runtime::Builder::new_current_thread(),
        Threads::PerCore | Threads::AtMost(_) => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Threads::AtMost(n) = threads {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        b.worker_threads(cores.min(n).max(1));
    }
    raise_open_files();
    let rt = b
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the async runtime", e))?;
    let cancel = Arc::new(Cancel::default());
    rt.block_on(with_signals(cancel.clone(), work(cancel)))
}

/// The open-files limit a run asks for: what 32 files in flight per request slot need with
/// `s3.concurrency` up to 80, and no more, since every child (gpg, postgres, a filter)
/// inherits it and some close every descriptor up to it.
const OPEN_FILES_WANTED: u64 = 8192;

/// Raises this process's soft limit of open files towards [`OPEN_FILES_WANTED`] (once, never
/// past the hard limit, never lower): the soft limit is often 1024 where the hard one is far
/// higher, and a restore of many small files has a connection and a file open for each in
/// flight. Where it cannot be raised, [`crate::transfer::Transfer::file_workers`] keeps within
/// what there is.
pub fn raise_open_files() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let lim = getrlimit(Resource::Nofile);
        let Some(now) = lim.current else {
            return;
        };
        // `None` is no limit.
        let want = lim
            .maximum
            .map_or(OPEN_FILES_WANTED, |m| m.min(OPEN_FILES_WANTED));
        if want > now {
            let raised = Rlimit {
                current: Some(want),
                ..lim
            };
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                tracing::debug!("cannot raise the open files limit: {e}");
            }
        }
    });
}

/// The files this process may have open (its soft limit), if it has one.
pub fn open_files_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
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

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(threads: Threads) -> (usize, std::thread::ThreadId) {
        block_on_with(threads, |_| async {
            let n = tokio::runtime::Handle::current().metrics().num_workers();
            let on = tokio::spawn(async { std::thread::current().id() })
                .await
                .expect("task ran");
            Ok((n, on))
        })
        .expect("runtime ran")
    }

    #[test]
    fn a_runtime_has_the_threads_asked_for() {
        let caller = std::thread::current().id();
        assert_eq!(workers(Threads::One), (1, caller), "tasks on the caller");
        let (n, on) = workers(Threads::AtMost(1));
        assert_eq!(n, 1);
        assert_ne!(on, caller, "tasks on a worker");
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        assert_eq!(workers(Threads::PerCore).0, cores);
        assert_eq!(workers(Threads::AtMost(usize::MAX)).0, cores);
    }
}
