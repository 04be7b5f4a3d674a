//! Buckets written by Barman's own cloud tools (`barman-cloud-backup`,
//! `barman-cloud-wal-archive`, Barman's S3 backend, CloudNativePG), read and never written:
//!
//! ```text
//! <prefix>/<SERVER>/base/<ID>/backup.info          Barman's, uploaded last: present ⇒ complete
//! <prefix>/<SERVER>/base/<ID>/data.tar[.EXT]       PGDATA, pg_control its last member
//! <prefix>/<SERVER>/base/<ID>/data_0001.tar[.EXT]  further parts past --max-archive-size
//! <prefix>/<SERVER>/base/<ID>/<OID>.tar[.EXT]      one per tablespace (and <OID>_0001...)
//! <prefix>/<SERVER>/wals/<TLI+LOG>/<SEGMENT>[.EXT] segments, .partial, .backup labels
//! <prefix>/<SERVER>/wals/<TLI>.history[.EXT]
//! ```
//!
//! `EXT` is the compression: `gz`, `bz2`, `snappy`, `lz4`, `zst` for archives, the same and
//! `xz` for WAL files. Every part of an archive is a whole tar stream of its own (Barman closes
//! one and opens the next between files), so parts restore in parallel.
//!
//! The decisions here are pure: which archives a backup has and whether that set is whole
//! ([`archives`]), what a stored WAL name is ([`wal_name`]), which one key serves a WAL file
//! ([`stored_wals`]).

pub mod list;
pub mod restore;
pub mod summary;
pub mod verify;

use std::collections::BTreeMap;

use crate::codec::Codec;
use crate::error::{Error, Result};

/// The compressions barman-cloud-wal-archive appends to a WAL file's name.
const WAL_SUFFIXES: [(&str, Codec); 6] = [
    (".gz", Codec::Gzip),
    (".bz2", Codec::Bzip2),
    (".xz", Codec::Xz),
    (".snappy", Codec::Snappy),
    (".lz4", Codec::Lz4),
    (".zst", Codec::Zstd),
];

/// The WAL file name a stored name stands for (`000000010000000000000003.gz` →
/// `000000010000000000000003`), or `None` for anything else. Only one compression suffix is
/// taken off, as Barman does.
pub fn wal_name(stored: &str) -> Option<&str> {
    use crate::barman::wal::classify;
    if classify(stored).is_some() {
        return Some(stored);
    }
    let (name, _) = WAL_SUFFIXES
        .iter()
        .find_map(|(ext, c)| stored.strip_suffix(ext).map(|n| (n, c)))?;
    classify(name).map(|_| name)
}

/// Where a WAL file is stored in a barman-cloud bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Under one key.
    One(String),
    /// Under two keys or more (archived twice with different compressions): the first two.
    Twice(String, String),
}

impl Stored {
    /// The one key, or the refusal every reader gives: which of two stored forms is the WAL
    /// PostgreSQL needs cannot be told, so none is served.
    pub fn key(&self) -> Result<&str> {
        match self {
            Stored::One(k) => Ok(k),
            Stored::Twice(a, b) => Err(Error::Failed(format!(
                "{a} and {b} are both stored for one WAL file: which one is right cannot be told; remove the wrong one from the archive"
            ))),
        }
    }
}

/// Each WAL file name the listed `keys` hold (compression suffix taken off) and where it is
/// stored. The one decision the direct fetch, the prefetcher and the timeline reader share, so
/// that a WAL stored in two forms is refused by all of them and served by none.
pub fn stored_wals<'a>(keys: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, Stored> {
    let mut out: BTreeMap<String, Stored> = BTreeMap::new();
    for key in keys {
        let Some(name) = wal_name(key.rsplit('/').next().unwrap_or(key)) else {
            continue;
        };
        match out.get_mut(name) {
            None => {
                out.insert(name.to_string(), Stored::One(key.to_string()));
            }
            Some(Stored::One(first)) => {
                let first = std::mem::take(first);
                out.insert(name.to_string(), Stored::Twice(first, key.to_string()));
            }
            Some(Stored::Twice(..)) => {}
        }
    }
    out
}

/// Which archive of a backup an object is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The object's key.
    pub key: String,
    /// Tablespace oid, `None` for PGDATA (`data`).
    pub oid: Option<String>,
    /// 0 for `data.tar*`, n for `data_000n.tar*`.
    pub number: u32,
    /// Its compression.
    pub codec: Option<Codec>,
    /// Its size in the bucket.
    pub size: u64,
}

/// Reads an archive's file name: `data.tar.gz`, `16385_0002.tar.snappy`. `None` for names that
/// are not archives (backup.info, anything else beside them).
fn part_name(name: &str) -> Option<(Option<String>, u32, Option<Codec>)> {
    let (stem, ext) = name.split_once(".tar")?;
    let codec = match ext {
        "" => None,
        ".gz" => Some(Codec::Gzip),
        ".bz2" => Some(Codec::Bzip2),
        ".snappy" => Some(Codec::Snappy),
        ".lz4" => Some(Codec::Lz4),
        ".zst" => Some(Codec::Zstd),
        _ => return None,
    };
    let (what, number) = match stem.split_once('_') {
        Some((w, n)) if n.len() == 4 && n.bytes().all(|b| b.is_ascii_digit()) => {
            (w, n.parse().ok().filter(|n| *n > 0)?)
        }
        Some(_) => return None,
        None => (stem, 0),
    };
    let oid = match what {
        "data" => None,
        o if !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit()) => Some(o.to_string()),
        _ => return None,
    };
    Some((oid, number, codec))
}

/// The archives of a backup, by root (`None`: PGDATA, else the tablespace oid), each root's
/// parts in order.
pub type Archives = BTreeMap<Option<String>, Vec<Part>>;

/// The archives of backup `id` from the listing of its prefix (`key`, size) and the tablespace
/// oids its backup.info names. Refuses a backup that is not whole: no `data` archive, a
/// tablespace without its archive, an archive of a tablespace the backup does not have, a part
/// missing between others, two compressions for one archive.
pub fn archives(id: &str, listed: &[(String, u64)], oids: &[String]) -> Result<Archives> {
    let bad = |why: String| Error::Failed(format!("barman-cloud backup {id}: {why}"));
    let mut out: Archives = BTreeMap::new();
    for (key, size) in listed {
        let name = key.rsplit('/').next().unwrap_or(key);
        let Some((oid, number, codec)) = part_name(name) else {
            continue;
        };
        if let Some(o) = &oid
            && !oids.contains(o)
        {
            return Err(bad(format!(
                "{key} is the archive of tablespace {o}, which its backup.info does not name"
            )));
        }
        out.entry(oid.clone()).or_default().push(Part {
            key: key.clone(),
            oid,
            number,
            codec,
            size: *size,
        });
    }
    if !out.contains_key(&None) {
        return Err(bad(
            "no data.tar* archive: the backup is incomplete or not a barman-cloud backup".into(),
        ));
    }
    for o in oids {
        if !out.contains_key(&Some(o.clone())) {
            return Err(bad(format!(
                "tablespace {o} has no archive ({o}.tar*): the backup is incomplete"
            )));
        }
    }
    for parts in out.values_mut() {
        parts.sort_by_key(|p| p.number);
        let root = parts[0].oid.as_deref().unwrap_or("data").to_string();
        for (i, p) in parts.iter().enumerate() {
            if p.number as usize != i {
                return Err(bad(format!(
                    "archive {root} has part {} but not part {i}: the backup is incomplete",
                    p.number
                )));
            }
            if p.codec != parts[0].codec {
                return Err(bad(format!(
                    "{} and {} are compressed differently: not one backup",
                    parts[0].key, p.key
                )));
            }
        }
    }
    Ok(out)
}

/// The tablespace oids of a backup.info's `tablespaces` value, Barman's Python form
/// `[('tbs1', 16385, '/srv/tbs1'), ...]` (or `None`).
pub fn tablespace_oids(value: Option<&str>) -> Vec<String> {
    let Some(v) = value else {
        return Vec::new();
    };
    v.split('(')
        .skip(1)
        .filter_map(|t| {
            // The name is a quoted string that may hold a comma: take the field after its
            // closing quote.
            let q = t.chars().next()?;
            let rest = if q == '\'' || q == '"' {
                let end = t[1..].find(q)? + 1;
                &t[end + 1..]
            } else {
                t
            };
            let field = rest
                .trim_start_matches([',', ' '])
                .split([',', ')'])
                .next()?;
            let oid = field.trim();
            (!oid.is_empty() && oid.bytes().all(|b| b.is_ascii_digit())).then(|| oid.to_string())
        })
        .collect()
}

/// The compression of a backup, as its data archive's name says.
pub fn compression_of(a: &Archives) -> &'static str {
    a.get(&None)
        .and_then(|p| p.first())
        .and_then(|p| p.codec)
        .map_or("none", Codec::name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(names: &[&str]) -> Vec<(String, u64)> {
        names
            .iter()
            .map(|n| (format!("p/pg/base/20260101T000000/{n}"), 10))
            .collect()
    }

    #[test]
    fn stored_wal_names_lose_one_compression_suffix() {
        let seg = "000000010000000000000003";
        assert_eq!(wal_name(seg), Some(seg));
        for ext in ["gz", "bz2", "xz", "snappy", "lz4", "zst"] {
            assert_eq!(wal_name(&format!("{seg}.{ext}")), Some(seg));
        }
        assert_eq!(
            wal_name("000000010000000000000003.partial.gz"),
            Some("000000010000000000000003.partial")
        );
        assert_eq!(wal_name("00000002.history.zst"), Some("00000002.history"));
        assert_eq!(
            wal_name("000000010000000000000003.00000028.backup.gz"),
            Some("000000010000000000000003.00000028.backup")
        );
        for not in [
            "000000010000000000000003.gz.gz",
            "000000010000000000000003.rar",
            "00000001000000000000003.gz",
            "backup.info",
        ] {
            assert_eq!(wal_name(not), None, "{not}");
        }
    }

    #[test]
    fn a_wal_stored_in_two_forms_is_served_by_no_one() {
        let w = "p/pg/wals/0000000100000000/";
        let seg = "000000010000000000000003";
        let keys = [
            format!("{w}{seg}"),
            format!("{w}{seg}.gz"),
            format!("{w}{seg}.00000028.backup.gz"),
            format!("{w}000000010000000000000004.snappy"),
            format!("{w}000000010000000000000005.partial"),
            format!("{w}000000010000000000000006.zst"),
            format!("{w}000000010000000000000006.lz4"),
            format!("{w}000000010000000000000006"),
            format!("{w}not-a-wal.gz"),
        ];
        // The order a listing gives must not decide which form wins: both orders refuse.
        for order in [keys.to_vec(), keys.iter().rev().cloned().collect()] {
            let s = stored_wals(order.iter().map(String::as_str));
            let e = s[seg].key().expect_err("two forms");
            assert!(
                e.to_string().contains("both stored for one WAL file"),
                "{e}"
            );
            assert!(e.to_string().contains(&format!("{seg}.gz")), "{e}");
            assert!(s["000000010000000000000006"].key().is_err());
            assert_eq!(
                s["000000010000000000000004"].key().expect("one"),
                format!("{w}000000010000000000000004.snappy")
            );
            assert_eq!(
                s[&format!("{seg}.00000028.backup")].key().expect("one"),
                format!("{w}{seg}.00000028.backup.gz")
            );
            assert!(s["000000010000000000000005.partial"].key().is_ok());
            assert_eq!(s.len(), 5, "{s:?}");
        }
    }

    #[test]
    fn a_whole_backup_has_its_parts_in_order() {
        let a = archives(
            "i",
            &listed(&[
                "backup.info",
                "data_0001.tar.snappy",
                "data.tar.snappy",
                "16385.tar.snappy",
                "data_0002.tar.snappy",
            ]),
            &["16385".into()],
        )
        .expect("whole");
        let data: Vec<u32> = a[&None].iter().map(|p| p.number).collect();
        assert_eq!(data, vec![0, 1, 2]);
        assert_eq!(a[&Some("16385".into())].len(), 1);
        assert_eq!(compression_of(&a), "snappy");
    }

    #[test]
    fn a_backup_that_is_not_whole_is_refused() {
        let oids = ["16385".to_string()];
        for (names, why) in [
            (vec!["backup.info"], "no data.tar"),
            (vec!["data.tar.gz"], "tablespace 16385 has no archive"),
            (
                vec!["data.tar.gz", "16385.tar.gz", "data_0002.tar.gz"],
                "has part 2 but not part 1",
            ),
            (
                vec!["data.tar.gz", "16385.tar.gz", "data_0001.tar.bz2"],
                "compressed differently",
            ),
            (
                vec!["data.tar.gz", "16385.tar.gz", "16999.tar.gz"],
                "does not name",
            ),
        ] {
            let e = archives("i", &listed(&names), &oids).expect_err(why);
            assert!(e.to_string().contains(why), "{names:?}: {e}");
        }
    }

    #[test]
    fn archive_names_are_read_strictly() {
        assert_eq!(part_name("data.tar"), Some((None, 0, None)));
        assert_eq!(
            part_name("16385_0003.tar.zst"),
            Some((Some("16385".into()), 3, Some(Codec::Zstd)))
        );
        for not in [
            "data.tar.gpg",
            "data_1.tar.gz",
            "data_0000.tar.gz",
            "base.tar.gz",
            "backup.info",
            "x_0001.tar",
        ] {
            assert_eq!(part_name(not), None, "{not}");
        }
    }

    #[test]
    fn tablespace_oids_are_read_from_barmans_form() {
        assert_eq!(
            tablespace_oids(Some(
                "[('tbs1', 16385, '/srv/t1'), ('a,b', 16390, '/srv/t2')]"
            )),
            vec!["16385".to_string(), "16390".to_string()]
        );
        assert!(tablespace_oids(Some("None")).is_empty());
        assert!(tablespace_oids(None).is_empty());
    }
}
