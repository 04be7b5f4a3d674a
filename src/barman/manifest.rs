//! Our record of an uploaded backup (`barmans3.manifest`): every file with its size, mode and
//! CRC32C, every directory (so empty ones come back) and every symbolic link (stored as a link,
//! never followed). Its presence, with backup.info, makes "complete in the bucket" provable.
//!
//! Paths are what the key names: UTF-8 relative to `base/<id>/`. A local name that is not UTF-8
//! gets a key with its undecodable bytes written `%XX` and the exact bytes in `raw`, so it
//! restores byte for byte; [`check_unique`] refuses a backup whose names would collide.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::transfer::Ciphertext;

/// One entry of a backup's tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Entry {
    /// A regular file, uploaded under its path.
    File {
        /// Path relative to `base/<id>/` (the key's tail).
        path: String,
        /// The local path's bytes (base64), when they are not UTF-8.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        raw: Option<String>,
        /// Bytes.
        size: u64,
        /// Unix permission bits.
        mode: u32,
        /// CRC32C of the content, 8 hex digits.
        crc32c: String,
        /// Modification time when uploaded (ns since the epoch), so a later backup can tell a
        /// hard link to this very file, unchanged since, without reading it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mtime_ns: Option<i64>,
        /// With encryption on: the object as this host sent it, so a later backup's
        /// server-side copy of it is checked against what was sent, not the server's word.
        /// Absent in manifests of unencrypted backups and of older versions.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ciphertext: Option<CiphertextRecord>,
    },
    /// A directory (kept so empty ones come back).
    Dir {
        /// Path relative to `base/<id>/`.
        path: String,
        /// The local path's bytes (base64), when they are not UTF-8.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        raw: Option<String>,
        /// Unix permission bits.
        mode: u32,
    },
    /// A symbolic link, stored as a link and never followed.
    Symlink {
        /// Path relative to `base/<id>/`.
        path: String,
        /// The local path's bytes (base64), when they are not UTF-8.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        raw: Option<String>,
        /// Link target as read (lossy for a target that is not UTF-8: restores never use it).
        target: String,
    },
}

/// An encrypted file's object as sent: its stored size and the CRC32C of its stored bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiphertextRecord {
    /// Stored bytes.
    pub size: u64,
    /// CRC32C of the stored bytes, 8 hex digits.
    pub crc32c: String,
    /// The recipients it was sealed to ([`crate::crypt::Recipients::fingerprint`], 8 hex
    /// digits); absent in records of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients: Option<String>,
}

impl CiphertextRecord {
    /// The record of what the engine sent, sealed to the recipients of `fingerprint`.
    pub fn of(c: Ciphertext, fingerprint: Option<u32>) -> Self {
        CiphertextRecord {
            size: c.size,
            crc32c: format!("{:08x}", c.crc32c),
            recipients: fingerprint.map(|f| format!("{f:08x}")),
        }
    }

    /// The recipients' fingerprint, when recorded and well formed.
    pub fn recipients(&self) -> Option<u32> {
        u32::from_str_radix(self.recipients.as_deref()?, 16).ok()
    }

    /// What the record says, `None` when its CRC32C does not parse (then nothing is copied).
    pub fn parse(&self) -> Option<Ciphertext> {
        let crc32c = u32::from_str_radix(&self.crc32c, 16).ok()?;
        Some(Ciphertext {
            size: self.size,
            crc32c,
        })
    }
}

impl Entry {
    /// The entry's path (the key's tail).
    pub fn path(&self) -> &str {
        match self {
            Entry::File { path, .. } | Entry::Dir { path, .. } | Entry::Symlink { path, .. } => {
                path
            }
        }
    }

    fn raw(&self) -> Option<&str> {
        match self {
            Entry::File { raw, .. } | Entry::Dir { raw, .. } | Entry::Symlink { raw, .. } => {
                raw.as_deref()
            }
        }
    }

    /// The local path relative to the backup directory, byte for byte as it was.
    pub fn local_path(&self) -> Result<PathBuf> {
        match self.raw() {
            None => Ok(PathBuf::from(self.path())),
            Some(b) => B64
                .decode(b)
                .map(|bytes| PathBuf::from(OsString::from_vec(bytes)))
                .map_err(|e| Error::Failed(format!("{}: bad raw path: {e}", self.path()))),
        }
    }
}

/// The key tail and raw bytes for a local relative path: UTF-8 as is; otherwise the invalid
/// bytes as `%XX` and the exact bytes kept for the restore.
pub fn encode_path(rel: &OsStr) -> (String, Option<String>) {
    let bytes = rel.as_bytes();
    if let Ok(s) = std::str::from_utf8(bytes) {
        return (s.to_string(), None);
    }
    let mut key = String::new();
    for chunk in bytes.utf8_chunks() {
        key.push_str(chunk.valid());
        for b in chunk.invalid() {
            key.push_str(&format!("%{b:02X}"));
        }
    }
    (key, Some(B64.encode(bytes)))
}

/// Refuses entries whose keys collide (two local names that encode to the same key, or a name
/// listed twice): one of them would overwrite the other in the bucket.
pub fn check_unique<'a>(paths: impl IntoIterator<Item = &'a str>) -> Result<()> {
    let mut seen = BTreeSet::new();
    for p in paths {
        if !seen.insert(p) {
            return Err(Error::Failed(format!(
                "two files of the backup map to the same key {p:?} (a name that is not UTF-8 next to one spelled with %XX); rename one of them"
            )));
        }
    }
    Ok(())
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
    /// Parses and validates a manifest: every path (and raw path) must be relative, without
    /// `.`/`..`/empty components, so nothing it names can land outside a restore directory.
    pub fn parse(bytes: &[u8], key: &str) -> Result<Self> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| Error::Failed(format!("{key}: not a barmans3 manifest: {e}")))?;
        for e in &m.entries {
            let refuse =
                |why: &str| Error::Failed(format!("{key}: refusing entry {:?}: {why}", e.path()));
            check_relative(e.path()).map_err(refuse)?;
            let local = e.local_path().map_err(|_| refuse("bad raw path"))?;
            check_relative_bytes(local.as_os_str().as_bytes()).map_err(refuse)?;
        }
        check_unique(m.entries.iter().map(Entry::path))?;
        Ok(m)
    }
}

/// A path that stays inside the directory it is joined to.
pub fn check_relative(path: &str) -> std::result::Result<(), &'static str> {
    check_relative_bytes(path.as_bytes())
}

fn check_relative_bytes(path: &[u8]) -> std::result::Result<(), &'static str> {
    if path.is_empty() || path.starts_with(b"/") {
        return Err("absolute or empty path");
    }
    if path
        .split(|b| *b == b'/')
        .any(|c| c.is_empty() || c == b"." || c == b"..")
    {
        return Err("path with '.', '..' or empty components");
    }
    if path.contains(&0) {
        return Err("path with a NUL byte");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(entries: &str) -> Vec<u8> {
        format!(
            "{{\"version\":1,\"server\":\"pg\",\"backup_id\":\"x\",\"created_at\":0,\"total_bytes\":0,\"entries\":[{entries}]}}"
        )
        .into_bytes()
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
            let m = manifest(&format!(
                "{{\"type\":\"dir\",\"path\":{},\"mode\":448}}",
                serde_json::to_string(bad).expect("json")
            ));
            assert!(Manifest::parse(&m, "k").is_err(), "{bad}");
        }
        // A harmless key with a hostile raw path.
        let m = manifest(&format!(
            "{{\"type\":\"dir\",\"path\":\"data/x\",\"raw\":\"{}\",\"mode\":448}}",
            B64.encode(b"data/../../etc")
        ));
        assert!(Manifest::parse(&m, "k").is_err());
        // The same key twice.
        let twice = "{\"type\":\"dir\",\"path\":\"data\",\"mode\":448}";
        assert!(Manifest::parse(&manifest(&format!("{twice},{twice}")), "k").is_err());
    }

    #[test]
    fn names_that_are_not_utf8_round_trip_byte_for_byte() {
        let name = OsStr::from_bytes(b"data/caf\xe9.txt");
        let (key, raw) = encode_path(name);
        assert_eq!(key, "data/caf%E9.txt");
        let e = Entry::Dir {
            path: key,
            raw,
            mode: 0o700,
        };
        assert_eq!(e.local_path().expect("raw").as_os_str(), name);
        let (plain, none) = encode_path(OsStr::new("data/café.txt"));
        assert_eq!((plain.as_str(), none), ("data/café.txt", None));
        // Old manifests (no raw field) still parse.
        let m = manifest(
            "{\"type\":\"file\",\"path\":\"data/PG_VERSION\",\"size\":3,\"mode\":384,\"crc32c\":\"00000000\"}",
        );
        assert!(Manifest::parse(&m, "k").is_ok());
    }

    #[test]
    fn the_ciphertext_record_round_trips_and_old_entries_have_none() {
        let c = Ciphertext {
            size: 5 << 20,
            crc32c: 0x0abc_def1,
        };
        let rec = CiphertextRecord::of(c, Some(0x1234));
        assert_eq!(rec.crc32c, "0abcdef1");
        assert_eq!(rec.parse(), Some(c));
        assert_eq!(rec.recipients(), Some(0x1234));
        assert_eq!(CiphertextRecord::of(c, None).recipients(), None);
        let e = Entry::File {
            path: "data/base/1/1".into(),
            raw: None,
            size: 3,
            mode: 0o600,
            crc32c: "00000001".into(),
            mtime_ns: Some(1),
            ciphertext: Some(rec),
        };
        let json = serde_json::to_string(&e).expect("json");
        assert!(
            json.contains(
                "\"ciphertext\":{\"size\":5242880,\"crc32c\":\"0abcdef1\",\"recipients\":\"00001234\"}"
            ),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Entry>(&json).expect("back"), e);
        let old =
            "{\"type\":\"file\",\"path\":\"x\",\"size\":3,\"mode\":384,\"crc32c\":\"00000000\"}";
        let Entry::File { ciphertext, .. } = serde_json::from_str(old).expect("old") else {
            panic!("a file");
        };
        assert_eq!(ciphertext, None);
        let bad = CiphertextRecord {
            size: 1,
            crc32c: "xyz".into(),
            recipients: Some("not hex".into()),
        };
        assert_eq!(bad.parse(), None);
        assert_eq!(bad.recipients(), None);
    }

    #[test]
    fn colliding_names_are_refused() {
        let (a, ra) = encode_path(OsStr::from_bytes(b"caf\xe9"));
        let entries = [
            Entry::Dir {
                path: a,
                raw: ra,
                mode: 0o700,
            },
            Entry::Dir {
                path: "caf%E9".into(),
                raw: None,
                mode: 0o700,
            },
        ];
        assert!(check_unique(entries.iter().map(Entry::path)).is_err());
    }
}
