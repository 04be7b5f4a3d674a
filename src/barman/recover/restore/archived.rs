//! Backups in archive storage classes (GLACIER, DEEP_ARCHIVE): `base-restore --request-restore
//! DAYS` looks at every object the restore needs and asks the store for a readable copy of
//! those still archived, then stops with what to do next; once all are readable, the same
//! command restores. Without it, the first archived object fails the restore with a message
//! that names the object and the option.

use super::manifest;
use crate::barman::manifest::Entry;
use crate::barman::server::Server;
use crate::error::{Error, Result};
use crate::transfer::{Transfer, bounded};

/// Keys of every data object a restore of `id` reads: its files, and those of every backup
/// its incremental chain goes back to.
pub async fn keys_of_chain(srv: &Server, id: &str) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut next = Some(id.to_string());
    while let Some(cur) = next.take() {
        let (info, m) = manifest(srv, &cur).await?;
        keys.extend(m.entries.iter().filter_map(|e| match e {
            Entry::File { path, .. } => Some(srv.remote.backup_key(&cur, path)),
            _ => None,
        }));
        next = info.get("parent_backup_id").map(str::to_string);
        if next.as_deref() == Some(cur.as_str()) {
            break;
        }
    }
    Ok(keys)
}

/// What the objects' states were.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Archived {
    /// Restores asked for now.
    pub requested: usize,
    /// Restores already under way.
    pub ongoing: usize,
}

/// HEADs every key; asks for a `days`-day restore of each archived one not yet asked for.
/// `Ok` when every object is readable now.
pub async fn ensure_readable(t: &Transfer, keys: Vec<String>, days: u32) -> Result<Archived> {
    let states = bounded(keys, t.file_workers(), |key| {
        let t = t.clone();
        async move {
            let m = t.head(&key).await?;
            if !m.needs_restore() {
                return Ok((false, false));
            }
            if m.restore_ongoing() {
                return Ok((true, true));
            }
            t.restore_object(&key, days).await?;
            Ok((true, false))
        }
    })
    .await?;
    let mut a = Archived::default();
    for (archived, ongoing) in states {
        match (archived, ongoing) {
            (true, true) => a.ongoing += 1,
            (true, false) => a.requested += 1,
            _ => {}
        }
    }
    Ok(a)
}

/// The message of a restore that must wait for archived objects.
pub fn waiting(id: &str, a: &Archived) -> Error {
    Error::Failed(format!(
        "backup {id}: {} archived object(s) are not readable yet: restore requested now for {}, already under way for {}; nothing was written. Run the same base-restore again once they are readable (GLACIER: hours; DEEP_ARCHIVE: up to 48 hours)",
        a.requested + a.ongoing,
        a.requested,
        a.ongoing
    ))
}
