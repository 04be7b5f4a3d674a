//! `verify --layout barman-cloud`: what Barman refuses for cloud backups. Each complete backup's
//! archives are read back whole through their decoders and walked to the end of the tar stream
//! (the stored size and store checksum verified by the download, the codec's and tar's own
//! checks by the walk; barman-cloud records no checksum of its own), the data archive must hold
//! `global/pg_control`, and the WAL segments from the backup's `begin_wal` to its `end_wal`
//! must be in the bucket, with the history file of a later timeline. `--quick` skips the reads.

use std::collections::BTreeMap;
use std::io::Read;

use tokio_util::io::SyncIoBridge;

use super::list::{CloudBackup, backups};
use super::{Part, Stored, archives, stored_wals};
use crate::barman::observe::verify::{Kind, Problem, Report};
use crate::barman::recover::timeline::segment_name;
use crate::barman::remote::INFO;
use crate::barman::server::Server;
use crate::barman::wal;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::store::ListRequest;
use crate::transfer::{Expect, Transfer};

/// Verifies backups `ids` (empty: every complete one) of a barman-cloud bucket.
pub async fn verify(srv: &Server, ids: &[String], quick: bool) -> Result<Report> {
    let mut r = Report::new(&srv.name, "backups", quick);
    let all = backups(srv).await?;
    let mut chosen: Vec<&CloudBackup> = Vec::new();
    if ids.is_empty() {
        chosen.extend(all.iter().filter(|b| b.complete));
    } else {
        for id in ids {
            match all.iter().find(|b| &b.id == id) {
                Some(b) => chosen.push(b),
                None => r.problems.push(problem(
                    Kind::Incomplete,
                    srv.remote.backup_key(id, INFO),
                    id,
                    "no such backup in the bucket".into(),
                )),
            }
        }
    }
    let wals = wal_names(srv).await?;
    for b in chosen {
        if let Some(p) = &b.problem {
            r.problems.push(problem(
                Kind::Incomplete,
                srv.remote.backup_key(&b.id, INFO),
                &b.id,
                p.clone(),
            ));
            continue;
        }
        r.backups.push(b.id.clone());
        if !quick {
            check_archives(srv, b, &mut r).await?;
        }
        check_chain(srv, b, &wals, &mut r);
    }
    r.problems.sort();
    r.problems.dedup();
    Ok(r)
}

fn problem(kind: Kind, key: String, id: &str, detail: String) -> Problem {
    Problem {
        kind,
        key,
        backup: Some(id.to_string()),
        detail,
    }
}

/// Every WAL file name the bucket holds for the server (compression suffixes taken off), and
/// where: a WAL stored in two forms is one no restore will serve.
async fn wal_names(srv: &Server) -> Result<BTreeMap<String, Stored>> {
    let req = ListRequest {
        prefix: srv.remote.wals_prefix(),
        ..Default::default()
    };
    let keys: Vec<String> = srv
        .t
        .list_all(&req)
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect();
    Ok(stored_wals(keys.iter().map(String::as_str)))
}

async fn check_archives(srv: &Server, b: &CloudBackup, r: &mut Report) -> Result<()> {
    let listed = super::list::objects(srv, &b.id).await?;
    let found = archives(&b.id, &listed, &b.tablespaces)?;
    let mut control = false;
    for part in found.into_values().flatten() {
        r.objects += 1;
        match read_archive(&srv.t, &part).await {
            Ok((bytes, has_control)) => {
                r.bytes_read += bytes;
                r.size_only += 1;
                control |= part.oid.is_none() && has_control;
            }
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => r.problems.push(problem(
                Kind::Unreadable,
                part.key.clone(),
                &b.id,
                e.one_line(),
            )),
        }
    }
    if !control
        && !r
            .problems
            .iter()
            .any(|p| p.backup.as_deref() == Some(&b.id))
    {
        r.problems.push(problem(
            Kind::Incomplete,
            srv.remote.backup_prefix(&b.id),
            &b.id,
            "no data archive holds global/pg_control".into(),
        ));
    }
    Ok(())
}

/// Reads one part whole through its decoder and tar: bytes read, and whether it holds
/// `global/pg_control`.
async fn read_archive(t: &Transfer, part: &Part) -> Result<(u64, bool)> {
    let (mut writer, reader) = tokio::io::duplex(4 << 20);
    let bridge = SyncIoBridge::new(reader);
    let codec = part.codec;
    let what = part.key.clone();
    let walk = tokio::task::spawn_blocking(move || walk(bridge, codec, &what));
    let downloaded = t
        .download_to(
            &part.key,
            &mut writer,
            Expect {
                size: Some(part.size),
                crc32c: None,
            },
        )
        .await;
    drop(writer);
    let walked = walk
        .await
        .map_err(|e| Error::Failed(format!("archive check failed: {e}")))?;
    match (downloaded, walked) {
        (Ok(_), w) => w.map(|c| (part.size, c)),
        (Err(Error::Io { context, .. }), Err(w)) if context == "write output" => Err(w),
        (Err(d), _) => Err(d),
    }
}

fn walk(input: impl Read + Send, codec: Option<Codec>, what: &str) -> Result<bool> {
    let bad = |why: String| Error::Failed(format!("{what}: {why}"));
    let reader: Box<dyn Read + Send> = match codec {
        Some(c) => c.decoder(input)?,
        None => Box::new(input),
    };
    let mut archive = ::tar::Archive::new(reader);
    let mut control = false;
    for entry in archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {}", crate::error::reason(&e))))?
    {
        let mut entry =
            entry.map_err(|e| bad(format!("damaged archive: {}", crate::error::reason(&e))))?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        control |= path.trim_start_matches("./") == "global/pg_control";
        std::io::copy(&mut entry, &mut std::io::sink()).map_err(|e| {
            bad(format!(
                "damaged archive data: {}",
                crate::error::reason(&e)
            ))
        })?;
    }
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(|e| {
        bad(format!(
            "damaged data after the archive: {}",
            crate::error::reason(&e)
        ))
    })?;
    Ok(control)
}

/// The segment numbers from `begin` to `end`, when backup.info (bucket data) names a range
/// PostgreSQL can write: a power-of-two segment size of 1 MiB to 1 GiB, `end` not before
/// `begin`, and at most a million segments (so a hostile file cannot make the check loop for
/// ever).
fn chain_range(seg: u64, begin: &str, end: &str) -> Option<(u64, u64)> {
    const MAX_SEGMENTS: u64 = 1_000_000;
    if !seg.is_power_of_two() || !(1 << 20..=1 << 30).contains(&seg) {
        return None;
    }
    let per_log = (1u64 << 32) / seg;
    let first = wal::segment_number(begin, per_log)?;
    let last = wal::segment_number(end, per_log)?;
    (first <= last && last - first < MAX_SEGMENTS).then_some((first, last))
}

/// The WAL a backup needs, begin_wal to end_wal on its timeline, and that timeline's history.
fn check_chain(srv: &Server, b: &CloudBackup, wals: &BTreeMap<String, Stored>, r: &mut Report) {
    let (Some(begin), Some(end)) = (b.begin_wal.as_deref(), b.end_wal.as_deref()) else {
        r.notes.push(format!(
            "backup {}: no begin_wal/end_wal in its backup.info; its WAL was not checked",
            b.id
        ));
        return;
    };
    let seg = b
        .segment_size
        .unwrap_or(crate::barman::recover::walrestore::DEFAULT_SEG);
    let tli = wal::timeline(begin).unwrap_or(1);
    let range = chain_range(seg, begin, end);
    let Some((first, last)) = range else {
        r.problems.push(problem(
            Kind::WalMissing,
            srv.remote.wals_prefix(),
            &b.id,
            format!(
                "backup.info's WAL range ({begin} to {end}, segment size {seg}) is not one PostgreSQL writes; its WAL was not checked"
            ),
        ));
        return;
    };
    let (mut missing, mut first_missing) = (0u64, None);
    for n in first..=last {
        let name = segment_name(tli, n, seg);
        match wals.get(&name).map(Stored::key) {
            Some(Ok(_)) => r.wals += 1,
            Some(Err(e)) => r.problems.push(problem(
                Kind::WalMissing,
                srv.remote.wal_key(&format!("{}/{name}", &name[..16])),
                &b.id,
                format!("{e}: no restore serves it"),
            )),
            None => {
                missing += 1;
                first_missing.get_or_insert(name);
            }
        }
    }
    if let Some(m) = first_missing {
        r.problems.push(problem(
            Kind::WalMissing,
            srv.remote.wal_key(&format!("{}/{m}", &m[..16])),
            &b.id,
            format!(
                "{missing} WAL segment(s) the backup needs ({begin} to {end}) are not in the bucket, from {m}"
            ),
        ));
    }
    if tli > 1 {
        let h = format!("{tli:08X}.history");
        let why = match wals.get(&h).map(Stored::key) {
            Some(Ok(_)) => None,
            Some(Err(e)) => Some(format!("{e}: no restore serves it")),
            None => Some(format!(
                "the history file of timeline {tli} is not in the bucket"
            )),
        };
        if let Some(why) = why {
            r.problems.push(problem(
                Kind::HistoryMissing,
                srv.remote.wal_key(&h),
                &b.id,
                why,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_gz(names: &[&str]) -> Vec<u8> {
        let mut b = ::tar::Builder::new(Vec::new());
        for n in names {
            let data = vec![7u8; 50_000];
            let mut h = ::tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_path(n).expect("path");
            h.set_cksum();
            b.append(&h, data.as_slice()).expect("append");
        }
        let tar = b.into_inner().expect("tar");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &tar).expect("gz");
        enc.finish().expect("gz")
    }

    #[test]
    fn an_archive_is_walked_to_its_end_and_pg_control_is_found() {
        let gz = tar_gz(&["PG_VERSION", "global/pg_control"]);
        assert!(walk(gz.as_slice(), Some(Codec::Gzip), "a").expect("whole"));
        let gz = tar_gz(&["PG_VERSION"]);
        assert!(!walk(gz.as_slice(), Some(Codec::Gzip), "a").expect("whole"));
        let e = walk(&gz[..gz.len() / 2], Some(Codec::Gzip), "cut").expect_err("truncated");
        assert!(e.to_string().starts_with("cut: "), "{e}");
    }

    #[test]
    fn a_wal_of_the_chain_stored_in_two_forms_is_a_problem() {
        let d = tempfile::tempdir().expect("tmp");
        let store =
            std::sync::Arc::new(crate::store::local::LocalStore::open(d.path()).expect("store"));
        let t = Transfer::new(store, crate::transfer::Settings::default());
        let srv = Server::new(&t, "p", "pg");
        let b = CloudBackup {
            id: "20260101T000000".into(),
            begin_wal: Some("000000010000000000000002".into()),
            end_wal: Some("000000010000000000000003".into()),
            ..Default::default()
        };
        let w = "p/pg/wals/0000000100000000/";
        let keys = [
            format!("{w}000000010000000000000002.gz"),
            format!("{w}000000010000000000000003"),
            format!("{w}000000010000000000000003.snappy"),
        ];
        let wals = stored_wals(keys.iter().map(String::as_str));
        let mut r = Report::new("pg", "backups", false);
        check_chain(&srv, &b, &wals, &mut r);
        assert_eq!(r.wals, 1);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        let p = &r.problems[0];
        assert_eq!(p.kind, Kind::WalMissing);
        assert!(p.key.ends_with("000000010000000000000003"), "{p:?}");
        assert!(p.detail.contains("both stored for one WAL file"), "{p:?}");
    }

    #[test]
    fn a_wal_range_postgresql_cannot_write_is_refused_not_walked() {
        let mib16 = 16 << 20;
        let a = "000000010000000000000002";
        let b = "000000010000000100000003";
        assert_eq!(super::chain_range(mib16, a, a), Some((2, 2)));
        assert_eq!(super::chain_range(mib16, a, b), Some((2, 256 + 3)));
        assert_eq!(super::chain_range(0, a, b), None, "zero segment size");
        assert_eq!(
            super::chain_range(3 << 20, a, b),
            None,
            "not a power of two"
        );
        assert_eq!(super::chain_range(8 << 30, a, b), None, "above 1 GiB");
        assert_eq!(super::chain_range(mib16, b, a), None, "end before begin");
        let far = "0000000100FFFFFF000000FF";
        assert_eq!(
            super::chain_range(mib16, a, far),
            None,
            "billions of segments"
        );
    }
}
