//! Barman's `backup.info` (`key=value` lines, `None` for null) and where to find it: `meta/`
//! (Barman ≥ 3.13.2) first, then inside the backup directory (older Barman).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::conf::ServerDirs;

/// A parsed backup.info. Unknown keys are kept; values stay text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupInfo {
    /// Every key with its raw value (`None` → absent).
    pub fields: BTreeMap<String, String>,
}

impl BackupInfo {
    /// Parses the text; never fails (blank lines, comments and lines without `=` are skipped).
    pub fn parse(text: &str) -> Self {
        let fields = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .filter(|(_, v)| v.trim() != "None")
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        BackupInfo { fields }
    }

    /// A field's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// `status` (`DONE`, `WAITING_FOR_WALS`, `FAILED`, ...), empty when missing.
    pub fn status(&self) -> &str {
        self.get("status").unwrap_or("")
    }

    /// First WAL segment the backup needs.
    pub fn begin_wal(&self) -> Option<&str> {
        self.get("begin_wal")
    }

    /// Last WAL segment the backup needs.
    pub fn end_wal(&self) -> Option<&str> {
        self.get("end_wal")
    }

    /// `size` in bytes.
    pub fn size(&self) -> Option<u64> {
        self.get("size").and_then(|s| s.parse().ok())
    }
}

/// Where a backup's backup.info is, if anywhere: `meta/<id>-backup.info`, then
/// `base/<id>/backup.info`.
pub fn locate(dirs: &ServerDirs, id: &str) -> Option<PathBuf> {
    [
        dirs.meta_dir().join(format!("{id}-backup.info")),
        dirs.base_dir.join(id).join("backup.info"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// Whether Barman marked the backup as being deleted (`delete_this` annotation, either layout).
pub fn being_deleted(dirs: &ServerDirs, id: &str) -> bool {
    dirs.meta_dir().join(format!("{id}-delete_this")).exists()
        || dirs
            .base_dir
            .join(id)
            .join("annotations/delete_this")
            .exists()
}

/// Reads and parses a backup.info file.
pub fn read(path: &Path) -> std::io::Result<BackupInfo> {
    std::fs::read_to_string(path).map(|t| BackupInfo::parse(&t))
}

/// Local backup ids: directories in `base/` and `<id>-backup.info` files in `meta/`. Errors
/// when `base/` cannot be listed (a missing directory is an error, not "no backups").
pub fn local_backup_ids(dirs: &ServerDirs) -> std::io::Result<Vec<String>> {
    let mut ids = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(&dirs.base_dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type()?.is_dir() && is_backup_id(&name) {
            ids.insert(name);
        }
    }
    if let Ok(rd) = std::fs::read_dir(dirs.meta_dir()) {
        for e in rd {
            let name = e?.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix("-backup.info")
                && is_backup_id(id)
            {
                ids.insert(id.to_string());
            }
        }
    }
    Ok(ids.into_iter().collect())
}

/// `YYYYMMDDTHHMMSS`.
pub fn is_backup_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 15
        && b[8] == b'T'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 8 || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_barman_lines() {
        let i = BackupInfo::parse(
            "backup_label='START WAL LOCATION: 0/3000028\\n'\nbegin_wal=000000010000000000000003\nend_wal=000000010000000000000004\nerror=None\nsize=30998627\nstatus=DONE\n\n# comment\ntablespaces=[('t1', 16386, '/srv/t1')]\n",
        );
        assert_eq!(i.status(), "DONE");
        assert_eq!(i.begin_wal(), Some("000000010000000000000003"));
        assert_eq!(i.size(), Some(30998627));
        assert_eq!(i.get("error"), None);
        assert!(i.get("tablespaces").is_some_and(|t| t.contains("16386")));
    }

    #[test]
    fn backup_ids() {
        assert!(is_backup_id("20261121T220933"));
        for bad in [
            "20261121220933",
            "20261121T22093",
            "2026112xT220933",
            "../x",
            "",
        ] {
            assert!(!is_backup_id(bad), "{bad}");
        }
    }
}
