//! The WAL side of a verification: the files each backup's chain needs (`begin_wal` to
//! `end_wal` and its timeline's history file, each segment of the backup's own database
//! system) and, for `verify-wal`, the whole archive: listed and checked a page at a time
//! ([`walk`](super::walk)), judged by the pure functions of [`chain`](super::chain), and the
//! recovery window that is left ([`window`](super::window)).

use std::collections::BTreeSet;

use super::chain::{self, Archive, DEFAULT_SEG_SIZE, Lack};
use super::objects::{self, Job, Kind, Passed, Problem};
use super::{Report, read_info, walk, window};
use crate::barman::info::BackupInfo;
use crate::barman::recover::timeline;
use crate::barman::remote::Remote;
use crate::barman::server::Server;
use crate::barman::ship::fullsync::{RemoteBackup, remote_backups};
use crate::barman::wal::{self, WalKind};
use crate::error::Result;
use crate::store::ListRequest;
use crate::transfer::Expect;

/// The segment size a backup.info gives (`xlog_segment_size`), PostgreSQL's default when it
/// gives none or nonsense.
fn seg_size(info: &BackupInfo) -> u64 {
    info.get("xlog_segment_size")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| s.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(s))
        .unwrap_or(DEFAULT_SEG_SIZE)
}

/// Checks that the WAL files a backup needs are in the bucket (problems into `r`) and returns
/// them (and its timeline's history file) as jobs to read.
pub(super) async fn chain_jobs(
    srv: &Server,
    id: &str,
    info: &BackupInfo,
    r: &mut Report,
) -> Result<Vec<Job>> {
    let Server { t, remote, .. } = srv;
    let (Some(begin), Some(end)) = (info.begin_wal(), info.end_wal()) else {
        r.notes.push(format!(
            "backup {id}: backup.info names no begin_wal/end_wal: its WAL chain was not checked"
        ));
        return Ok(Vec::new());
    };
    let mut a = Archive::new(seg_size(info));
    let (Some((tli, first)), Some((end_tli, last))) = (
        chain::position(begin, a.seg_size()).filter(|_| is_segment(begin)),
        chain::position(end, a.seg_size()).filter(|_| is_segment(end)),
    ) else {
        let bad = if is_segment(begin) { end } else { begin };
        r.problems.push(lack_problem(
            remote,
            &a,
            &Lack::Misfit { name: bad.into() },
            Some(id),
        ));
        return Ok(Vec::new());
    };
    list_range(srv, &mut a, &begin[..16], &end[..16]).await?;
    for t_id in BTreeSet::from([tli, end_tli])
        .into_iter()
        .filter(|&x| x > 1)
    {
        let name = format!("{t_id:08X}.history");
        if t.head_opt(&remote.wal_key(&name)).await?.is_some() {
            a.add(&name);
        }
    }
    for lack in chain::backup_lacks(&a, begin, end) {
        r.problems.push(lack_problem(remote, &a, &lack, Some(id)));
    }
    let mut jobs = Vec::new();
    // The backup's own system: after a pg_upgrade the bucket's identity names the new one.
    let system = info
        .get("systemid")
        .and_then(|s| s.trim().parse::<u64>().ok());
    let job = |rel: String| Job {
        system: system.filter(|_| {
            matches!(
                wal::classify(rel.rsplit('/').next().unwrap_or("")),
                Some(WalKind::Segment | WalKind::Partial)
            )
        }),
        key: remote.wal_key(&rel),
        backup: Some(id.to_string()),
        record: None,
    };
    for n in first..=last {
        let on = if n == last { end_tli } else { tli };
        if let Some(stored) = a.stored(on, n) {
            r.wals += 1;
            jobs.extend(wal::relative_path(&stored).map(job));
        }
    }
    jobs.extend(a.histories().map(|x| job(format!("{x:08X}.history"))));
    Ok(jobs)
}

fn is_segment(name: &str) -> bool {
    wal::classify(name) == Some(WalKind::Segment)
}

/// Adds the WAL files of hash directories `from..=to` to `a` (one listing, stopped after `to`).
async fn list_range(srv: &Server, a: &mut Archive, from: &str, to: &str) -> Result<()> {
    let prefix = srv.remote.wals_prefix();
    let req = ListRequest {
        prefix: prefix.clone(),
        // The directory name sorts just before its contents.
        start_after: Some(format!("{prefix}{from}")),
        ..Default::default()
    };
    srv.t
        .list_pages(&req, |objs, _| {
            for o in objs {
                let rel = o.key.strip_prefix(&prefix).unwrap_or("");
                // Past `to`'s directory every later key is too; a short stray name is skipped.
                match rel.get(..16) {
                    Some(d) if d > to => return false,
                    Some(_) => {}
                    None => continue,
                }
                if let Some((_, name)) = rel.split_once('/') {
                    a.add(name);
                }
            }
            true
        })
        .await
}

pub(super) async fn verify_wal(srv: &Server, read: bool) -> Result<Report> {
    let Server { remote, name, .. } = srv;
    let mut r = Report::new(name, "wal", !read);
    let listed = remote_backups(srv).await?;
    let complete: Vec<&RemoteBackup> = listed.iter().filter(|b| b.complete).collect();
    let size = match complete.first() {
        Some(b) => match read_info(srv, &b.id).await? {
            Ok(info) => seg_size(&info),
            Err(p) => {
                r.problems.push(p);
                DEFAULT_SEG_SIZE
            }
        },
        None => {
            r.notes.push(
                "no complete backup in the bucket: the archive was checked from its oldest WAL"
                    .into(),
            );
            DEFAULT_SEG_SIZE
        }
    };
    let mut a = Archive::new(size);
    let walked = walk::walk(srv, &mut a, &mut r, read).await?;
    let chains = read_histories(srv, &a, &mut r).await?;
    let at = |n: &Option<String>| n.as_deref().and_then(|n| chain::position(n, size));
    let start = complete
        .first()
        .and_then(|b| at(&b.begin_wal))
        .map(|(_, n)| n);
    let ends: Vec<(u32, u64)> = complete.iter().filter_map(|b| at(&b.end_wal)).collect();
    for lack in chain::archive_lacks(&a, start, &ends, &chains) {
        let mut p = lack_problem(remote, &a, &lack, None);
        if let Lack::Segments { tli, first, last } = lack {
            let needing: Vec<&str> = complete
                .iter()
                .filter(|b| {
                    let (Some((bt, s)), Some((_, e))) = (at(&b.begin_wal), at(&b.end_wal)) else {
                        return false;
                    };
                    bt == tli && s <= last && e >= first
                })
                .map(|b| b.id.as_str())
                .collect();
            if !needing.is_empty() {
                p.detail
                    .push_str(&format!("; needed by backup(s) {}", needing.join(", ")));
            }
        }
        r.problems.push(p);
    }
    r.window = recovery_window(a, &chains, &complete, &walked.damaged);
    if !read && r.size_only > 0 {
        r.notes.push(format!(
            "{} WAL object(s) carry no full-object CRC32C (multipart uploads, or written without one): a read (--read) verifies them against their composite checksum or size only",
            r.size_only
        ));
    }
    Ok(r)
}

/// The window a recovery can use: the archive without the files found missing, damaged or
/// unreadable (`damaged`, their names).
fn recovery_window(
    mut a: Archive,
    chains: &[Vec<timeline::Begin>],
    complete: &[&RemoteBackup],
    damaged: &[String],
) -> Option<window::Window> {
    for name in damaged {
        a.forget(name);
    }
    let spans: Vec<window::Span> = complete
        .iter()
        .filter_map(|b| {
            Some(window::Span {
                id: b.id.clone(),
                begin: b.begin_wal.clone()?,
                end: b.end_wal.clone()?,
            })
        })
        .collect();
    window::window(&a, chains, &spans)
}

/// Reads every history file (verified against its stored checksum) into its timeline chain.
async fn read_histories(
    srv: &Server,
    a: &Archive,
    r: &mut Report,
) -> Result<Vec<Vec<timeline::Begin>>> {
    let Server { t, remote, .. } = srv;
    let mut chains = Vec::new();
    for tli in a.histories() {
        let job = Job {
            key: remote.wal_key(&format!("{tli:08X}.history")),
            backup: None,
            record: None,
            system: None,
        };
        let mut buf = Vec::new();
        match t.download_to(&job.key, &mut buf, Expect::default()).await {
            Ok(d) => {
                r.tally(Passed::Read { bytes: d.size });
                chains.push(timeline::chain(tli, &String::from_utf8_lossy(&buf)));
            }
            Err(e) => r.problems.push(objects::classify(&job, e)?),
        }
    }
    Ok(chains)
}

/// A [`Lack`] as a problem line.
fn lack_problem(remote: &Remote, a: &Archive, lack: &Lack, backup: Option<&str>) -> Problem {
    let needed = backup.map_or(String::new(), |b| format!(" (backup {b} needs it)"));
    let (kind, rel, detail) = match lack {
        Lack::Segments { tli, first, last } => {
            let (f, l) = (a.name(*tli, *first), a.name(*tli, *last));
            let detail = if first == last {
                format!("WAL segment not in the bucket{needed}")
            } else {
                format!(
                    "{} WAL segments not in the bucket, {f} to {l}{needed}",
                    last - first + 1
                )
            };
            (Kind::WalMissing, format!("{}/{f}", &f[..16]), detail)
        }
        Lack::History { tli } => (
            Kind::HistoryMissing,
            format!("{tli:08X}.history"),
            format!(
                "timeline {tli}'s history file is not in the bucket: recovery cannot follow the switch to timeline {tli}{needed}"
            ),
        ),
        Lack::Misfit { name } => (
            Kind::WalName,
            wal::relative_path(name).unwrap_or_else(|| name.clone()),
            format!(
                "not a WAL segment name for {} segments (xlog_segment_size in backup.info){needed}",
                crate::units::human_bytes(a.seg_size())
            ),
        ),
    };
    Problem {
        kind,
        key: remote.wal_key(&rel),
        backup: backup.map(str::to_string),
        detail,
    }
}
