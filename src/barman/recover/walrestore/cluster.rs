//! The cluster being recovered, as its own data directory says: `global/pg_control` holds the
//! database system identifier and the WAL segment size. A WAL file is checked against these,
//! not against the bucket's newest `identity.json`: after a pg_upgrade the bucket names the new
//! cluster while an old backup's recovery needs the old one's WAL, and the segment size bounds
//! every decoder before the first segment is fetched.
//!
//! `pg_control` is read as data: it counts only when its CRC-32C is right. Its layout changes
//! between major versions, so nothing here depends on field offsets past the first: the CRC is
//! found where it covers everything before it, and the segment size as the one run of fields
//! every version since 11 writes in this order (`xlog_blcksz`, `xlog_seg_size`, `nameDataLen`
//! = 64, `indexMaxKeys` = 32).

use std::path::{Path, PathBuf};

/// What the data directory says about its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cluster {
    /// The database system identifier.
    pub system: u64,
    /// Bytes per WAL segment.
    pub seg_size: u64,
}

/// `PG_CONTROL_FILE_SIZE`: what PostgreSQL writes; the data sits at the start.
const CONTROL_FILE_SIZE: usize = 8192;
/// Past any version's `ControlFileData`: the CRC is searched before this.
const CRC_SEARCH_END: usize = 1024;

/// The data directory of a restore_command's `%p` (PostgreSQL passes `pg_wal/RECOVERYXLOG`,
/// relative to the data directory it runs in; pg_rewind a path in the target's `pg_wal`): the
/// parent of the `pg_wal` directory the destination is in, if it is in one.
pub fn data_dir_of(dest: &Path) -> Option<PathBuf> {
    let wal_dir = crate::fsutil::parent_dir(dest);
    let abs = std::path::absolute(wal_dir).ok()?;
    (abs.file_name()? == "pg_wal").then(|| abs.parent().map(Path::to_path_buf))?
}

/// The cluster of the data directory `%p` is in, if it has a `pg_control` that proves itself.
pub fn of_destination(dest: &Path) -> Option<Cluster> {
    let control = data_dir_of(dest)?.join("global/pg_control");
    let mut buf = Vec::with_capacity(CONTROL_FILE_SIZE);
    use std::io::Read;
    std::fs::File::open(control)
        .ok()?
        .take(CONTROL_FILE_SIZE as u64)
        .read_to_end(&mut buf)
        .ok()?;
    parse(&buf)
}

/// Reads a `pg_control`: its system identifier and segment size, when its CRC covers them.
pub fn parse(data: &[u8]) -> Option<Cluster> {
    let u32_at = |i: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(data.get(i..i + 4)?.try_into().ok()?))
    };
    let end = crc_offset(data)?;
    let seg_size = (0..end.saturating_sub(12)).step_by(4).find_map(|i| {
        let (blcksz, seg, name_len, index_keys) =
            (u32_at(i)?, u32_at(i + 4)?, u32_at(i + 8)?, u32_at(i + 12)?);
        let fits = blcksz.is_power_of_two()
            && (1024..=32768).contains(&blcksz)
            && seg.is_power_of_two()
            && ((1 << 20)..=(1 << 30)).contains(&seg)
            && name_len == 64
            && index_keys == 32;
        fits.then_some(u64::from(seg))
    })?;
    let system = u64::from_ne_bytes(data.get(..8)?.try_into().ok()?);
    Some(Cluster { system, seg_size })
}

/// Where the CRC sits: the first 4-byte aligned offset whose word is the CRC-32C of all the
/// bytes before it (past the identifier and version fields).
fn crc_offset(data: &[u8]) -> Option<usize> {
    let end = data.len().min(CRC_SEARCH_END);
    let mut crc = crate::checksum::crc32c(data.get(..16)?);
    let mut at = 16;
    while at + 4 <= end {
        let word = u32::from_ne_bytes(data[at..at + 4].try_into().ok()?);
        if word == crc {
            return Some(at);
        }
        crc = crate::checksum::crc32c_append(crc, &data[at..at + 4]);
        at += 4;
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `global/pg_control` of clusters made by `initdb` of PostgreSQL 15 (16 MiB and 64 MiB
    /// segments) and 18.
    const FIXTURES: &[(&[u8], u64, u64)] = &[
        (
            include_bytes!("../../../../tests/fixtures/pg_control/pg15-16MiB"),
            7716175196906151027,
            16 << 20,
        ),
        (
            include_bytes!("../../../../tests/fixtures/pg_control/pg15-64MiB"),
            7716175216507153734,
            64 << 20,
        ),
        (
            include_bytes!("../../../../tests/fixtures/pg_control/pg18-16MiB"),
            7716175242608754220,
            16 << 20,
        ),
    ];

    /// A `pg_control` for `system` with `seg_size` segments: PostgreSQL 15's, changed, with its
    /// CRC made right again.
    pub fn pg_control(system: u64, seg_size: u32) -> Vec<u8> {
        let mut v = FIXTURES[0].0.to_vec();
        let end = crc_offset(&v).expect("crc");
        v[..8].copy_from_slice(&system.to_ne_bytes());
        let at = (0..end)
            .step_by(4)
            .find(|&i| {
                v[i..i + 4] == 8192u32.to_ne_bytes()
                    && v[i + 4..i + 8] == (16u32 << 20).to_ne_bytes()
            })
            .expect("seg size")
            + 4;
        v[at..at + 4].copy_from_slice(&seg_size.to_ne_bytes());
        let crc = crate::checksum::crc32c(&v[..end]);
        v[end..end + 4].copy_from_slice(&crc.to_ne_bytes());
        v
    }

    #[test]
    fn real_control_files_give_their_cluster() {
        for (i, (data, system, seg_size)) in FIXTURES.iter().enumerate() {
            assert_eq!(
                parse(data),
                Some(Cluster {
                    system: *system,
                    seg_size: *seg_size
                }),
                "fixture {i}"
            );
        }
        assert_eq!(
            parse(&pg_control(42, 1 << 20)),
            Some(Cluster {
                system: 42,
                seg_size: 1 << 20
            })
        );
    }

    #[test]
    fn a_control_file_that_does_not_prove_itself_counts_for_nothing() {
        let mut flipped = FIXTURES[0].0.to_vec();
        flipped[3] ^= 1;
        assert_eq!(parse(&flipped), None);
        assert_eq!(parse(&FIXTURES[0].0[..100]), None);
        assert_eq!(parse(&[0u8; 8192]), None);
        assert_eq!(parse(b""), None);
    }

    #[test]
    fn the_data_directory_is_the_parent_of_pg_wal() {
        let d = tempfile::tempdir().expect("tmp");
        let wal = d.path().join("pgdata/pg_wal");
        std::fs::create_dir_all(&wal).expect("pg_wal");
        std::fs::create_dir_all(d.path().join("pgdata/global")).expect("global");
        let dest = wal.join("RECOVERYXLOG");
        assert_eq!(data_dir_of(&dest), Some(d.path().join("pgdata")));
        assert_eq!(of_destination(&dest), None);
        std::fs::write(
            d.path().join("pgdata/global/pg_control"),
            pg_control(7, 16 << 20),
        )
        .expect("control");
        assert_eq!(
            of_destination(&dest),
            Some(Cluster {
                system: 7,
                seg_size: 16 << 20
            })
        );
        assert_eq!(data_dir_of(&d.path().join("elsewhere/RECOVERYXLOG")), None);
    }
}
