//! Advisory lock files: one run at a time per queue, server, spool or volume. The lock is taken
//! without waiting, so a second run reports the first and does nothing instead of queueing
//! behind it; the operating system drops it when the holder exits, however it exits.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};

/// Opens (creating) a lock file and takes an exclusive lock without waiting; busy ⇒
/// [`Error::Busy`] naming `what`.
pub fn try_lock_file(path: &Path, what: &str) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // 0600, as Barman creates its own locks: one owner, nobody else's business.
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("open lock {}", path.display()), e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Busy(format!(
            "another {what} is running (lock {} is held); this run did nothing",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::io(format!("lock {}", path.display()), e))
        }
    }
}
