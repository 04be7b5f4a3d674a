//! Which boot filled a spool: the kernel's boot id, recorded by the prefetcher in `.boot`. Spool
//! files are not fsynced, so a crash of the machine can tear them; a spool of this boot holds
//! only files the prefetcher wrote since the machine started, one of another boot (or of none
//! known) is proven whole again at every call and cleared by the next prefetcher.

use super::{BOOT, FETCH, MARKER_MAX, Spool, parse_entry};
use crate::error::Error;

/// Where Linux says which boot this is: a random UUID, new at every boot.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

impl Spool {
    /// Makes this spool one of this boot, for the prefetcher (it holds the lock): when `.boot`
    /// names another boot, or none, it is removed, every entry is removed (it may have been
    /// torn by a crash), and `.boot` is written only once a fresh listing, read without
    /// ignoring any error, shows none left. Otherwise, or without a boot id, the spool stays
    /// without a marker: every call then proves its segment whole.
    pub fn claim_boot(&self) {
        let now = boot_id();
        if now.is_some() && self.boot() == now {
            return;
        }
        self.remove(BOOT);
        let _ = self.sweep(&|_| false, &|_| false);
        let Some(id) = now else {
            return;
        };
        let written = match self.leftovers() {
            Ok(0) => self.write_marker(BOOT, &id),
            Ok(n) => Err(Error::Failed(format!(
                "{n} files from before could not be removed"
            ))),
            Err(e) => Err(Error::io("list", e.into())),
        };
        if let Err(e) = written {
            tracing::warn!(
                "{}: not marked as this boot's ({}): every segment is read back whole when served",
                self.dir.display(),
                e.one_line()
            );
        }
    }

    /// How many entries and `.fetch-` files the directory holds; any error reading it is one.
    fn leftovers(&self) -> rustix::io::Result<usize> {
        let mut n = 0;
        for e in rustix::fs::Dir::read_from(&*self.fd)? {
            let e = e?;
            let name = e.file_name().to_string_lossy();
            if name.starts_with(FETCH) || parse_entry(&name).is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Whether the prefetcher filled this spool during this boot, so that its entries are as
    /// it wrote them.
    pub(super) fn this_boot(&self) -> bool {
        boot_id().is_some_and(|id| self.boot().as_deref() == Some(id.as_str()))
    }

    /// The boot `.boot` names, if it holds a whole boot id.
    fn boot(&self) -> Option<String> {
        let (text, _) = self.read_marker(BOOT)?;
        valid(&text).then_some(text)
    }
}

/// This boot's id, if the kernel says (a `/proc` that is not mounted says nothing).
fn boot_id() -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(BOOT_ID)
        .ok()?
        .take(MARKER_MAX)
        .read_to_string(&mut text)
        .ok()?;
    let id = text.trim();
    valid(id).then(|| id.to_string())
}

/// A boot id as Linux writes it: 36 characters of lower-case hex digits and dashes.
fn valid(id: &str) -> bool {
    id.len() == 36
        && id
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
pub(super) fn this_boot_id() -> String {
    boot_id().expect("this machine has a boot id")
}
