//! Which boot filled a spool: the kernel's boot id, recorded by the prefetcher in `.boot`. Spool
//! files are not fsynced, so a crash of the machine can tear them; a spool of this boot holds
//! only files the prefetcher wrote since the machine started, one of another boot (or of none
//! known) is proven whole again at every call and cleared by the next prefetcher.

use super::{BOOT, MARKER_MAX, Spool};

/// Where Linux says which boot this is: a random UUID, new at every boot.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

impl Spool {
    /// Makes this spool one of this boot, for the prefetcher (it holds the lock): when `.boot`
    /// names another boot, or none, every entry is removed first (it may have been torn by a
    /// crash), then `.boot` is written. Without a boot id the marker is removed: every call
    /// then proves its segment whole.
    pub fn claim_boot(&self) {
        let now = boot_id();
        if now.is_some() && self.boot() == now {
            return;
        }
        let _ = self.sweep(&|_| false, &|_| false);
        match now {
            Some(id) => {
                if let Err(e) = self.write_marker(BOOT, &id) {
                    tracing::warn!("{}", e.one_line());
                }
            }
            None => self.remove(BOOT),
        }
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
