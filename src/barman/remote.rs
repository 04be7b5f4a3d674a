//! The bucket layout of one Barman server and our per-backup manifest.
//!
//! ```text
//! <prefix>/<SERVER>/identity.json
//! <prefix>/<SERVER>/base/<ID>/<path>              files of base/<ID>/ (data/, <tablespace oid>/)
//! <prefix>/<SERVER>/base/<ID>/barmans3.manifest   ours: every file, dir and symlink (after the data)
//! <prefix>/<SERVER>/base/<ID>/backup.info         Barman's, uploaded last: present ⇒ complete
//! <prefix>/<SERVER>/wals/<hash>/<segment>         as in Barman's wals/ (names unchanged)
//! <prefix>/<SERVER>/wals/<TLI>.history
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::join_key;

/// Name of our manifest object inside a backup's prefix.
pub const MANIFEST: &str = "barmans3.manifest";
/// Name of the backup.info object inside a backup's prefix.
pub const INFO: &str = "backup.info";

/// Keys of one server in the bucket.
#[derive(Debug, Clone)]
pub struct Remote {
    root: String,
}

impl Remote {
    /// The server's keys under the configured prefix.
    pub fn new(prefix: &str, server: &str) -> Self {
        Remote {
            root: join_key(prefix, server),
        }
    }

    /// `<root>/base/` (list with `/` as delimiter for the ids).
    pub fn base_prefix(&self) -> String {
        format!("{}/base/", self.root)
    }

    /// `<root>/base/<id>/`.
    pub fn backup_prefix(&self, id: &str) -> String {
        format!("{}/base/{id}/", self.root)
    }

    /// A file of a backup, by its path relative to `base/<id>/`.
    pub fn backup_key(&self, id: &str, rel: &str) -> String {
        format!("{}/base/{id}/{rel}", self.root)
    }

    /// `<root>/wals/`.
    pub fn wals_prefix(&self) -> String {
        format!("{}/wals/", self.root)
    }

    /// A WAL file by its path relative to `wals/`.
    pub fn wal_key(&self, rel: &str) -> String {
        format!("{}/wals/{rel}", self.root)
    }

    /// `<root>/identity.json`.
    pub fn identity_key(&self) -> String {
        format!("{}/identity.json", self.root)
    }
}

/// One entry of a backup's tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Entry {
    /// A regular file, uploaded under its path.
    File {
        /// Path relative to `base/<id>/`.
        path: String,
        /// Bytes.
        size: u64,
        /// Unix permission bits.
        mode: u32,
        /// CRC32C of the content, 8 hex digits.
        crc32c: String,
    },
    /// A directory (kept so empty ones come back).
    Dir {
        /// Path relative to `base/<id>/`.
        path: String,
        /// Unix permission bits.
        mode: u32,
    },
    /// A symbolic link, stored as a link and never followed.
    Symlink {
        /// Path relative to `base/<id>/`.
        path: String,
        /// Link target as read.
        target: String,
    },
}

impl Entry {
    /// The entry's path.
    pub fn path(&self) -> &str {
        match self {
            Entry::File { path, .. } | Entry::Dir { path, .. } | Entry::Symlink { path, .. } => {
                path
            }
        }
    }
}

/// Our record of an uploaded backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub version: u32,
    /// Barman server.
    pub server: String,
    /// Backup id.
    pub backup_id: String,
    /// When it was written (seconds since the epoch).
    pub created_at: u64,
    /// Sum of file sizes.
    pub total_bytes: u64,
    /// Every entry, sorted by path.
    pub entries: Vec<Entry>,
}

impl Manifest {
    /// Parses and validates a manifest: every path must be relative, without `.`/`..`/empty
    /// components, so nothing it names can land outside a restore directory.
    pub fn parse(bytes: &[u8], key: &str) -> Result<Self> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| Error::Failed(format!("{key}: not a barmans3 manifest: {e}")))?;
        for e in &m.entries {
            check_relative(e.path()).map_err(|why| {
                Error::Failed(format!("{key}: refusing entry {:?}: {why}", e.path()))
            })?;
        }
        Ok(m)
    }
}

/// A path that stays inside the directory it is joined to.
pub fn check_relative(path: &str) -> std::result::Result<(), &'static str> {
    if path.is_empty() || path.starts_with('/') {
        return Err("absolute or empty path");
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("path with '.', '..' or empty components");
    }
    if path.contains('\0') {
        return Err("path with a NUL byte");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_barman_layout() {
        let r = Remote::new("prod", "pg");
        assert_eq!(
            r.backup_key("20261121T220933", "data/PG_VERSION"),
            "prod/pg/base/20261121T220933/data/PG_VERSION"
        );
        assert_eq!(
            r.wal_key("0000000100000000/000000010000000000000005"),
            "prod/pg/wals/0000000100000000/000000010000000000000005"
        );
        assert_eq!(Remote::new("", "pg").identity_key(), "pg/identity.json");
    }

    #[test]
    fn hostile_manifests_are_refused() {
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "data/../../x",
            "data//x",
            "",
            "./x",
        ] {
            let m = format!(
                "{{\"version\":1,\"server\":\"pg\",\"backup_id\":\"x\",\"created_at\":0,\"total_bytes\":0,\"entries\":[{{\"type\":\"dir\",\"path\":{},\"mode\":448}}]}}",
                serde_json::to_string(bad).expect("json")
            );
            assert!(Manifest::parse(m.as_bytes(), "k").is_err(), "{bad}");
        }
    }
}
