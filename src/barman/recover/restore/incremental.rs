//! An incremental backup (PostgreSQL 17+) is told by its data as well as by its backup.info:
//! a backup.info in the bucket that lost `parent_backup_id` must not turn an incremental
//! backup into a "plain" restore that PostgreSQL then refuses to start. The data says so in
//! three places: relation files named `INCREMENTAL.<relfilenode>`, `backup_label`'s
//! `INCREMENTAL FROM LSN:` line, and the same names in `backup_manifest` (the one place a
//! tar-format backup shows them without unpacking its archives).

use crate::barman::manifest::{Entry, Manifest};
use crate::barman::server::Server;
use crate::error::{Error, Result};
use crate::transfer::Expect;

/// Largest backup_label read.
const LABEL_MAX: u64 = 1 << 20;
/// Largest backup_manifest read.
const MANIFEST_MAX: u64 = 512 << 20;

/// The first entry of `m` that is an incremental relation file.
pub fn incremental_file(m: &Manifest) -> Option<&str> {
    m.entries.iter().find_map(|e| match e {
        Entry::File { path, .. }
            if path
                .rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("INCREMENTAL.")) =>
        {
            Some(path.as_str())
        }
        _ => None,
    })
}

/// `backup_label` names the backup it is an increment of.
pub fn label_says_incremental(label: &[u8]) -> bool {
    String::from_utf8_lossy(label)
        .lines()
        .any(|l| l.starts_with("INCREMENTAL FROM LSN:"))
}

/// `backup_manifest` lists an incremental relation file.
pub fn manifest_lists_incremental(text: &[u8]) -> bool {
    text.windows(b"/INCREMENTAL.".len())
        .any(|w| w == b"/INCREMENTAL.")
}

/// Refuses backup `m` when its data shows it is incremental (it is restored as a plain backup
/// only because its backup.info names no parent). Reads at most its backup_label and its
/// backup_manifest from the bucket, each verified.
pub async fn refuse_if_incremental(srv: &Server, m: &Manifest) -> Result<()> {
    let id = &m.backup_id;
    let refuse = |why: String| {
        Error::Failed(format!(
            "backup {id} is an incremental backup ({why}) but its backup.info in the bucket names no parent_backup_id: it cannot be restored alone, and its chain is unknown; restore its full backup or a complete chain instead"
        ))
    };
    if let Some(path) = incremental_file(m) {
        return Err(refuse(format!("it holds {path}")));
    }
    for (name, max, says) in [
        (
            "backup_label",
            LABEL_MAX,
            label_says_incremental as fn(&[u8]) -> bool,
        ),
        ("backup_manifest", MANIFEST_MAX, manifest_lists_incremental),
    ] {
        for dir in ["data", "pgdata"] {
            let rel = format!("{dir}/{name}");
            let Some(Entry::File { size, crc32c, .. }) = m.entries.iter().find(|e| e.path() == rel)
            else {
                continue;
            };
            if *size > max {
                continue;
            }
            let mut buf = Vec::new();
            let expect = Expect {
                size: Some(*size),
                crc32c: u32::from_str_radix(crc32c, 16).ok(),
            };
            srv.t
                .download_to(&srv.remote.backup_key(id, &rel), &mut buf, expect)
                .await?;
            if says(&buf) {
                return Err(refuse(format!("its {name} says so")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> Entry {
        Entry::File {
            path: path.into(),
            raw: None,
            size: 1,
            mode: 0o600,
            crc32c: "00000001".into(),
            mtime_ns: None,
            ciphertext: None,
        }
    }

    #[test]
    fn incremental_backups_are_told_by_their_data() {
        let m = |paths: &[&str]| Manifest {
            version: 1,
            server: "pg".into(),
            backup_id: "20250101T000000".into(),
            created_at: 0,
            total_bytes: 0,
            entries: paths.iter().map(|p| file(p)).collect(),
        };
        assert_eq!(
            incremental_file(&m(&["data/PG_VERSION", "data/base/5/INCREMENTAL.16384"])),
            Some("data/base/5/INCREMENTAL.16384")
        );
        assert_eq!(
            incremental_file(&m(&["data/PG_VERSION", "data/base/5/16384"])),
            None
        );
        assert_eq!(incremental_file(&m(&["data/INCREMENTAL_notes"])), None);

        let full = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000080\nBACKUP METHOD: streamed\nSTART TIMELINE: 1\n";
        let inc = b"START WAL LOCATION: 0/4000028 (file 000000010000000000000004)\nSTART TIMELINE: 1\nINCREMENTAL FROM LSN: 0/2000028\nINCREMENTAL FROM TLI: 1\n";
        assert!(!label_says_incremental(full));
        assert!(label_says_incremental(inc));

        assert!(manifest_lists_incremental(
            br#"{ "Files": [ { "Path": "base/5/INCREMENTAL.16384", "Size": 8216 } ] }"#
        ));
        assert!(!manifest_lists_incremental(
            br#"{ "Files": [ { "Path": "base/5/16384", "Size": 8192 } ] }"#
        ));
    }
}
