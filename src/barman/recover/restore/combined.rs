//! pg_combinebackup's output is checked, not trusted: it writes a `backup_manifest` for the
//! directory it made (every file with its size and, by default, its CRC32C), and a combined
//! directory that does not match it, such as a relation file left out by a tool that still
//! exited 0, fails the restore before PostgreSQL could ever start on it.
//!
//! PostgreSQL writes a CRC32C checksum as the hex of the value's bytes in the host's order
//! (`pg_checksum_final` copies the integer), so it is compared the same way. Files with another
//! checksum algorithm (SHA-2, chosen only by hand) are checked by size.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// What the check found: files checked, and of them how many by size only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checked {
    /// Files listed in the manifest and found right.
    pub files: usize,
    /// Of them, checked by size only (no CRC32C in the manifest).
    pub size_only: usize,
}

/// Largest `backup_manifest` read (a million files take about 200 MB).
const MANIFEST_MAX: u64 = 1 << 30;

/// Checks every file `dir/backup_manifest` lists: present, a regular file (through the
/// tablespace links pg_combinebackup made), the listed size and CRC32C.
pub fn check(dir: &Path) -> Result<Checked> {
    let path = dir.join("backup_manifest");
    let bad = |why: String| {
        Error::Failed(format!(
            "the combined backup in {} does not match the backup_manifest pg_combinebackup wrote: {why}",
            dir.display()
        ))
    };
    let mut text = Vec::new();
    std::fs::File::open(&path)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))?
        .take(MANIFEST_MAX + 1)
        .read_to_end(&mut text)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    if text.len() as u64 > MANIFEST_MAX {
        return Err(bad("backup_manifest is larger than 1 GiB".into()));
    }
    let v: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| bad(format!("backup_manifest is not JSON: {e}")))?;
    let files = v
        .get("Files")
        .and_then(|f| f.as_array())
        .ok_or_else(|| bad("backup_manifest lists no \"Files\"".into()))?;
    let mut out = Checked::default();
    for f in files {
        let rel = manifest_path(f).ok_or_else(|| bad(format!("an entry without a path: {f}")))?;
        if rel.split('/').any(|c| c == ".." || c.is_empty()) || rel.starts_with('/') {
            return Err(bad(format!("an entry with an unsafe path: {rel:?}")));
        }
        let size = f.get("Size").and_then(|s| s.as_u64());
        let crc = match f.get("Checksum-Algorithm").and_then(|a| a.as_str()) {
            Some(a) if a.eq_ignore_ascii_case("CRC32C") => {
                f.get("Checksum").and_then(|c| c.as_str())
            }
            _ => None,
        };
        let file = dir.join(&rel);
        let meta = std::fs::metadata(&file).map_err(|e| bad(format!("{rel}: {e}")))?;
        if !meta.is_file() {
            return Err(bad(format!("{rel} is not a regular file")));
        }
        if let Some(size) = size.filter(|s| *s != meta.len()) {
            return Err(bad(format!(
                "{rel} has {} bytes, the manifest says {size}",
                meta.len()
            )));
        }
        match crc {
            Some(want) => {
                let got = crc_of(&file)?;
                if !got.eq_ignore_ascii_case(want) {
                    return Err(bad(format!(
                        "{rel}: CRC32C {got}, the manifest says {want}"
                    )));
                }
            }
            None => out.size_only += 1,
        }
        out.files += 1;
    }
    Ok(out)
}

/// An entry's path: `Path`, or `Encoded-Path` (hex of the raw bytes).
fn manifest_path(f: &serde_json::Value) -> Option<String> {
    if let Some(p) = f.get("Path").and_then(|p| p.as_str()) {
        return Some(p.to_string());
    }
    let hex = f.get("Encoded-Path")?.as_str()?;
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// The CRC32C of a file as PostgreSQL's manifest spells it: the hex of its bytes in host order.
pub fn crc_of(file: &Path) -> Result<String> {
    let mut f =
        std::fs::File::open(file).map_err(|e| Error::io(format!("open {}", file.display()), e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut crc = 0u32;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io(format!("read {}", file.display()), e))?;
        if n == 0 {
            break;
        }
        crc = crate::checksum::crc32c_append(crc, &buf[..n]);
    }
    Ok(crate::checksum::hex(&crc.to_ne_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(dir: &Path, files: &[(&str, u64, Option<String>)]) {
        let entries: Vec<serde_json::Value> = files
            .iter()
            .map(|(p, size, crc)| match crc {
                Some(c) => serde_json::json!({"Path": p, "Size": size, "Last-Modified": "x",
                    "Checksum-Algorithm": "CRC32C", "Checksum": c}),
                None => serde_json::json!({"Path": p, "Size": size, "Last-Modified": "x"}),
            })
            .collect();
        let m = serde_json::json!({"PostgreSQL-Backup-Manifest-Version": 2, "Files": entries});
        std::fs::write(dir.join("backup_manifest"), m.to_string()).expect("manifest");
    }

    #[test]
    fn the_combined_directory_must_match_its_manifest() {
        let d = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(d.path().join("base/5")).expect("dirs");
        std::fs::write(d.path().join("PG_VERSION"), b"18\n").expect("w");
        std::fs::write(d.path().join("base/5/1259"), vec![7u8; 8192]).expect("w");
        let crc = |p: &str| Some(crc_of(&d.path().join(p)).expect("crc"));
        let ok = [
            ("PG_VERSION", 3, crc("PG_VERSION")),
            ("base/5/1259", 8192, crc("base/5/1259")),
        ];
        manifest(d.path(), &ok);
        assert_eq!(
            check(d.path()).expect("ok"),
            Checked {
                files: 2,
                size_only: 0
            }
        );
        type Case<'a> = (&'a str, Vec<(&'a str, u64, Option<String>)>, &'a str);
        let cases: Vec<Case> = vec![
            (
                "a relation file missing",
                vec![
                    ok[0].clone(),
                    ok[1].clone(),
                    ("base/5/2619", 8192, Some("00000000".into())),
                ],
                "base/5/2619",
            ),
            ("a wrong size", vec![("base/5/1259", 8191, None)], "8191"),
            (
                "a wrong CRC32C",
                vec![("base/5/1259", 8192, Some("deadbeef".into()))],
                "deadbeef",
            ),
            (
                "a path out of the directory",
                vec![("../x", 1, None)],
                "unsafe",
            ),
            (
                "a directory where a file is listed",
                vec![("base/5", 1, None)],
                "regular",
            ),
        ];
        for (name, files, says) in cases {
            manifest(d.path(), &files);
            let e = check(d.path()).expect_err(name);
            assert!(e.to_string().contains(says), "{name}: {e}");
        }
        std::fs::write(d.path().join("backup_manifest"), b"{}").expect("w");
        assert!(check(d.path()).is_err(), "no Files");
        std::fs::remove_file(d.path().join("backup_manifest")).expect("rm");
        assert!(check(d.path()).is_err(), "no manifest");
    }

    /// PostgreSQL's manifest spells a CRC32C as the bytes of the value in host order: the
    /// CRC32C of "123456789" is 0xe3069283, little-endian "839206e3".
    #[test]
    fn crc32c_is_spelled_as_postgresql_does() {
        let d = tempfile::tempdir().expect("tmp");
        let f = d.path().join("f");
        std::fs::write(&f, b"123456789").expect("w");
        let want = if cfg!(target_endian = "little") {
            "839206e3"
        } else {
            "e3069283"
        };
        assert_eq!(crc_of(&f).expect("crc"), want);
    }
}
