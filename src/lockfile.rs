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
    // 0600, as Barman creates its own locks: one owner, nobody else's business. A spool or
    // queue may sit where others can write: never through a link, never waiting on a FIFO.
    let f = crate::fsutil::open_regular(
        path,
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_never_taken_through_a_link_or_on_a_fifo() {
        let d = crate::fsutil::hostile_dir();
        // Nobody reads the FIFO: the open fails at once instead of waiting for a reader.
        for (name, why) in [("link", "symbolic link"), ("fifo", "FIFO")] {
            let e = try_lock_file(&d.path().join(name), "test").expect_err(name);
            assert!(e.to_string().contains(why), "{name}: {e}");
        }
        let held = try_lock_file(&d.path().join("ok.lock"), "test").expect("a plain lock");
        let busy = try_lock_file(&d.path().join("ok.lock"), "test").expect_err("held");
        assert!(matches!(busy, Error::Busy(_)), "{busy}");
        drop(held);
    }
}
