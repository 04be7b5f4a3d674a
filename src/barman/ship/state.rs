//! barmans3's own files under `state.dir`, with one owner for every path: upload
//! journals, the last good base-sync, and per server and per store the wal-sync state and the
//! ledger of WAL files known to be in that store with the same content.
//!
//! WAL state is keyed by the store (endpoint, bucket, prefix): what one bucket holds says
//! nothing about another, so a run against a store without state starts with a full reconcile.
//! Every write goes through [`crate::fsutil::write_atomic`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::clock::now;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fsutil;

/// What identifies a store for the state kept about it.
pub fn store_id(cfg: &Config) -> String {
    cfg.store_id()
}

/// The state directory of one run.
#[derive(Debug, Clone)]
pub struct LocalState {
    dir: PathBuf,
    store: String,
}

/// Per-server, per-store wal-sync state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalState {
    /// The store this state is about (a state for another store is ignored).
    #[serde(default)]
    pub store: String,
    /// Hash directories before this one are complete in the bucket.
    pub window: Option<String>,
    /// Last full reconcile (seconds since the epoch).
    pub last_full: u64,
    /// Last run that finished without error (seconds since the epoch).
    #[serde(default)]
    pub last_success: u64,
    /// Why the last run failed, if it did.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// A WAL file known to be in the store with the content of the local file of this size and
/// modification time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    /// Bytes.
    pub size: u64,
    /// Local modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// CRC32C of the content.
    pub crc32c: u32,
    /// The object's ETag when it was shipped or compared (ledgers written before it was kept
    /// have none): a listing that shows another one means the object was replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// Known files of one hash directory (or of `wals/` itself for history files), by name.
pub type Ledger = BTreeMap<String, Known>;

impl LocalState {
    /// The state under `cfg`'s state directory for `cfg`'s store.
    pub fn new(cfg: &Config) -> Self {
        LocalState {
            dir: cfg.state.dir.clone(),
            store: store_id(cfg),
        }
    }

    /// Creates the state directory.
    pub fn ensure(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io(format!("create state directory {}", self.dir.display()), e))
    }

    /// Upload journals of multipart uploads in progress into this store (two configs may
    /// share a state directory).
    pub fn journal_dir(&self) -> PathBuf {
        self.dir.join("journal").join(self.tag())
    }

    /// A short, stable name of this store for paths.
    fn tag(&self) -> String {
        format!("{:08x}", crate::checksum::crc32c(self.store.as_bytes()))
    }

    /// The lock that keeps two wal-syncs of a server apart (whatever the store).
    pub fn wal_lock(&self, server: &str) -> PathBuf {
        self.dir.join(format!("{server}.wal-sync.lock"))
    }

    /// Where the WAL state of `server` for this store lives.
    fn wal_dir(&self, server: &str) -> PathBuf {
        self.dir.join("wal").join(server).join(self.tag())
    }

    /// Where a `wal-sync --follow` of `server` into this store writes its heartbeat: beside
    /// the store's WAL state, so followers of two stores do not overwrite each other's.
    pub fn heartbeat_path(&self, server: &str) -> PathBuf {
        self.wal_dir(server).join("follow.json")
    }

    /// The recorded wal-sync state of `server` for this store (default when none, or when the
    /// file describes another store).
    pub fn wal_state(&self, server: &str) -> WalState {
        std::fs::read(self.wal_dir(server).join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<WalState>(&b).ok())
            .filter(|s| s.store == self.store)
            .unwrap_or_default()
    }

    /// Records the wal-sync state of `server`.
    pub fn save_wal_state(&self, server: &str, mut st: WalState) -> Result<()> {
        st.store = self.store.clone();
        let dir = self.wal_dir(server);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let json =
            serde_json::to_vec(&st).map_err(|e| Error::Failed(format!("encode state: {e}")))?;
        fsutil::write_atomic(&dir.join("state.json"), &json)
    }

    fn ledger_path(&self, server: &str, hash_dir: &str) -> PathBuf {
        let name = if hash_dir.is_empty() {
            "history"
        } else {
            hash_dir
        };
        self.wal_dir(server)
            .join("ledger")
            .join(format!("{name}.json"))
    }

    /// The ledger of one hash directory (`""`: the history files at the top of `wals/`).
    /// Missing or unreadable means nothing is known: the files are verified again.
    pub fn ledger(&self, server: &str, hash_dir: &str) -> Ledger {
        std::fs::read(self.ledger_path(server, hash_dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Records the ledger of one hash directory.
    pub fn save_ledger(&self, server: &str, hash_dir: &str, ledger: &Ledger) -> Result<()> {
        let path = self.ledger_path(server, hash_dir);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
        }
        let json =
            serde_json::to_vec(ledger).map_err(|e| Error::Failed(format!("encode ledger: {e}")))?;
        fsutil::write_atomic(&path, &json)
    }

    /// Forgets everything known about `server` in this store (a full reconcile rebuilds it).
    pub fn forget_ledgers(&self, server: &str) -> Result<()> {
        let dir = self.wal_dir(server).join("ledger");
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("remove {}", dir.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// Where the records of what base-sync sent of `server`'s backups to this store live
    /// ([`super::present::BaseRecord`]), one file per backup id.
    pub fn base_records(&self, server: &str) -> PathBuf {
        self.dir.join("base").join(server).join(self.tag())
    }

    fn base_sync_stamp(&self) -> PathBuf {
        self.dir.join("base-sync.json")
    }

    /// Records a base-sync run without failures.
    pub fn record_base_sync(&self) -> Result<()> {
        self.ensure()?;
        let stamp = serde_json::json!({ "last_success": now() }).to_string();
        fsutil::write_atomic(&self.base_sync_stamp(), stamp.as_bytes())
    }

    /// When the last base-sync without failures ended (seconds since the epoch).
    pub fn last_base_sync(&self) -> Option<u64> {
        std::fs::read(self.base_sync_stamp())
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["last_success"].as_u64())
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Location;

    fn cfg(dir: &Path, bucket: &str) -> Config {
        let mut c = Config::for_location(Location::Local {
            root: PathBuf::from(format!("/srv/{bucket}")),
        });
        c.state.dir = dir.to_path_buf();
        c
    }

    #[test]
    fn wal_state_and_ledgers_belong_to_their_store() {
        let d = tempfile::tempdir().expect("tmp");
        let a = LocalState::new(&cfg(d.path(), "a"));
        let b = LocalState::new(&cfg(d.path(), "b"));
        a.save_wal_state(
            "pg",
            WalState {
                window: Some("0000000100000005".into()),
                last_full: 7,
                ..Default::default()
            },
        )
        .expect("save");
        assert_eq!(
            a.wal_state("pg").window.as_deref(),
            Some("0000000100000005")
        );
        assert_eq!(
            b.wal_state("pg"),
            WalState::default(),
            "another store knows nothing"
        );
        let mut l = Ledger::new();
        l.insert(
            "x".into(),
            Known {
                size: 1,
                mtime_ns: 2,
                crc32c: 3,
                etag: Some("e".into()),
            },
        );
        a.save_ledger("pg", "0000000100000005", &l).expect("ledger");
        assert_eq!(a.ledger("pg", "0000000100000005"), l);
        assert!(b.ledger("pg", "0000000100000005").is_empty());
        a.forget_ledgers("pg").expect("forget");
        assert!(a.ledger("pg", "0000000100000005").is_empty());
    }
}
