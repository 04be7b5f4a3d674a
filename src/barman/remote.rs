//! The bucket layout of one Barman server: where each of its objects goes.
//!
//! ```text
//! <prefix>/<SERVER>/identity.json
//! <prefix>/<SERVER>/base/<ID>/<path>              files of base/<ID>/ (data/, <tablespace oid>/)
//! <prefix>/<SERVER>/base/<ID>/barmans3.manifest   ours: every file, dir and symlink (after the data)
//! <prefix>/<SERVER>/base/<ID>/backup.info         Barman's, uploaded last: present ⇒ complete
//! <prefix>/<SERVER>/wals/<hash>/<segment>         as in Barman's wals/ (names unchanged)
//! <prefix>/<SERVER>/wals/<TLI>.history
//! ```
//!
//! barman-cloud's layout has the same two prefixes ([`crate::barman::cloud`] reads it).

use crate::store::join_key;

/// Name of our manifest object inside a backup's prefix.
pub const MANIFEST: &str = "barmans3.manifest";
/// Name of the backup.info object inside a backup's prefix.
pub const INFO: &str = "backup.info";

/// Who wrote a server's keys: barmans3 (`base-sync`, `wal-sync`), or Barman's own cloud tools
/// (`barman-cloud-backup`, `barman-cloud-wal-archive`, Barman's S3 backend, CloudNativePG),
/// which barmans3 only reads ([`crate::barman::cloud`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BucketLayout {
    /// Ours: files as Barman keeps them, our manifest, WAL names unchanged.
    #[default]
    Barmans3,
    /// barman-cloud's: tar archives per backup, WAL names with a compression suffix.
    BarmanCloud,
}

impl BucketLayout {
    /// The name `--layout` takes.
    pub fn name(self) -> &'static str {
        match self {
            BucketLayout::Barmans3 => "barmans3",
            BucketLayout::BarmanCloud => "barman-cloud",
        }
    }
}

/// Keys of one server in the bucket.
#[derive(Debug, Clone)]
pub struct Remote {
    root: String,
    layout: BucketLayout,
}

impl Remote {
    /// The server's keys under the configured prefix.
    pub fn new(prefix: &str, server: &str) -> Self {
        Remote {
            root: join_key(prefix, server),
            layout: BucketLayout::Barmans3,
        }
    }

    /// The same keys, written in `layout`.
    pub fn with_layout(mut self, layout: BucketLayout) -> Self {
        self.layout = layout;
        self
    }

    /// Who wrote these keys.
    pub fn layout(&self) -> BucketLayout {
        self.layout
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
}
