//! `replicate --to STORE`: a second copy of a server's backups and WAL archive in another
//! store, made from the main store (never from Barman's directories), verified object by
//! object, in the same layout, so the replica restores alone (`--store NAME`).
//!
//! Order, as `base-sync` writes the main store: a backup's files, then our manifest, then its
//! backup.info, so a backup is listed complete on the replica only once everything it needs is
//! there and verified. A run killed anywhere leaves backups without backup.info, which the next
//! run completes (objects already there and verified are not sent again). WAL files follow the
//! backups: the whole archive, or with `--since` from the first WAL of the oldest backup in scope
//! on (and every history file). Nothing on the replica is ever overwritten outside an
//! incomplete backup (a WAL file of another size there is reported as a conflict), nor deleted
//! except by `--prune` ([`prune`]: full-sync's rules, the main store's deletions, the replica's
//! own locks).

pub mod copy;
pub mod plan;
pub mod prune;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use serde::Serialize;

use crate::barman::manifest::{Entry, Manifest};
use crate::barman::remote::{INFO, MANIFEST, Remote};
use crate::barman::server::Server;
use crate::barman::ship::fullsync::remote_backups;
use crate::error::{Error, Result};
use crate::store::{ListRequest, ObjectKind};
pub use copy::{Counts, Pair};
use plan::{Lag, Listed, WalAction};

/// Largest manifest read into memory.
const MAX_MANIFEST: u64 = 256 << 20;

/// What `replicate` did for one server, and where both stores stand afterwards.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerReport {
    /// Server.
    pub server: String,
    /// Backups copied by this run (completed on the replica).
    pub copied: Vec<String>,
    /// WAL files copied by this run.
    pub wals_copied: u64,
    /// WAL files of another size on the replica: never overwritten, to be looked at.
    pub conflicts: Vec<String>,
    /// Each store's holdings.
    pub stores: Vec<Holdings>,
    /// How far the replica is behind the main store.
    pub lag: Lag,
    /// With `--prune`: what was deleted from the replica, spared or retained by its lock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruned: Option<Pruned>,
}

/// What `--prune` did on the replica.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Pruned {
    /// Backups deleted.
    pub backups: Vec<String>,
    /// WAL objects deleted.
    pub wals: u64,
    /// Backups the main store no longer has that the rules keep, with the reason.
    pub spared: Vec<String>,
    /// What the replica's Object Lock keeps for now.
    pub retained: Vec<String>,
}

/// What one store holds of a server.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Holdings {
    /// The store's name (`main` for the configured one).
    pub store: String,
    /// Complete backups, oldest first.
    pub backups: Vec<String>,
    /// First and last WAL segment names.
    pub wal_first: Option<String>,
    /// Last WAL segment name.
    pub wal_last: Option<String>,
    /// WAL files.
    pub wal_files: u64,
}

/// A replica of one server as `status` and `check` see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaView {
    /// Server.
    pub server: String,
    /// The replica's name (`stores:`).
    pub store: String,
    /// How far it is behind the main store.
    pub lag: Lag,
    /// Why it could not be looked at, in one line.
    pub error: Option<String>,
}

/// The replica's view: both stores listed, the lag between them.
pub async fn view(src: &Server, dst: &Server, store: &str) -> ReplicaView {
    let lag = async {
        let (s, d) = (list_server(src).await?, list_server(dst).await?);
        Ok::<_, Error>(plan::lag(&s, &d, None, SystemTime::now()))
    };
    let (lag, error) = match lag.await {
        Ok(l) => (l, None),
        Err(e) => (Lag::default(), Some(e.one_line())),
    };
    ReplicaView {
        server: src.name.clone(),
        store: store.to_string(),
        lag,
        error,
    }
}

/// `check`'s note on a replica: unreachable, or further behind than `max`.
pub fn judge(r: &ReplicaView, max: std::time::Duration) -> Option<String> {
    if let Some(e) = &r.error {
        return Some(format!(
            "replica {} of {} cannot be read: {e}",
            r.store, r.server
        ));
    }
    (r.lag.seconds > max.as_secs()).then(|| {
        format!(
            "replica {} of {} lags {} ({} object(s), {} bytes; barmans3 replicate --to {} {})",
            r.store,
            r.server,
            crate::units::human_duration(std::time::Duration::from_secs(r.lag.seconds)),
            r.lag.objects,
            r.lag.bytes,
            r.store,
            r.server
        )
    })
}

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct ReplicateOptions {
    /// Only backups with this id or a later one (and the WALs from its first on).
    pub since: Option<String>,
    /// Then delete from the replica what the main store no longer has ([`prune`]).
    pub prune: bool,
    /// With `prune`: more deletions than `barman.max_deletes`.
    pub force: bool,
}

/// Every object of a server, relative to its root (`base/…`, `wals/…`).
pub async fn list_server(srv: &Server) -> Result<BTreeMap<String, Listed>> {
    let root = srv.remote.base_prefix();
    let root = root.strip_suffix("base/").unwrap_or(&root).to_string();
    list_under(srv, root).await
}

/// Every object under `prefix`, relative to it.
async fn list_under(srv: &Server, prefix: String) -> Result<BTreeMap<String, Listed>> {
    let req = ListRequest {
        prefix: prefix.clone(),
        ..Default::default()
    };
    let mut out = BTreeMap::new();
    srv.t
        .list_pages(&req, |objs, _| {
            for o in objs {
                if let Some(rel) = o.key.strip_prefix(&prefix) {
                    out.insert(
                        rel.to_string(),
                        Listed {
                            size: o.size,
                            etag: o.etag,
                            modified: o.last_modified,
                        },
                    );
                }
            }
            true
        })
        .await?;
    Ok(out)
}

/// The holdings of a store from its listing.
pub fn holdings(store: &str, listed: &BTreeMap<String, Listed>) -> Holdings {
    let backups = listed
        .keys()
        .filter_map(|k| k.strip_prefix("base/")?.strip_suffix(&format!("/{INFO}")))
        .filter(|id| !id.contains('/'))
        .map(str::to_string)
        .collect();
    let segments: Vec<&str> = listed
        .keys()
        .filter_map(|k| k.strip_prefix("wals/"))
        .filter_map(|k| k.rsplit('/').next())
        .filter(|n| n.len() >= 24 && n[..24].bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|n| &n[..24])
        .collect();
    Holdings {
        store: store.to_string(),
        backups,
        wal_first: segments.iter().min().map(|s| s.to_string()),
        wal_last: segments.iter().max().map(|s| s.to_string()),
        wal_files: listed.keys().filter(|k| k.starts_with("wals/")).count() as u64,
    }
}

/// Replicates one server from `pair.source` (keys of `src`) to `pair.target` (keys of `dst`).
pub async fn replicate_server(
    pair: &Pair,
    src: &Server,
    dst: &Server,
    target_name: &str,
    opts: &ReplicateOptions,
) -> Result<ServerReport> {
    let backups = remote_backups(src).await?;
    let complete: Vec<String> = backups
        .iter()
        .filter(|b| b.complete)
        .map(|b| b.id.clone())
        .collect();
    let target_done: BTreeSet<String> = remote_backups(dst)
        .await?
        .into_iter()
        .filter(|b| b.complete)
        .map(|b| b.id)
        .collect();
    let mut report = ServerReport {
        server: src.name.clone(),
        ..Default::default()
    };
    for id in plan::backups_to_copy(&complete, &target_done, opts.since.as_deref()) {
        copy_backup(pair, src, &dst.remote, id).await?;
        tracing::info!("{}: backup {id} replicated to {target_name}", src.name);
        report.copied.push(id.clone());
    }
    // With --since, WALs from the first WAL of the oldest backup in scope; else the whole
    // archive, as the main store holds it.
    let floor = opts.since.as_deref().and_then(|since| {
        backups
            .iter()
            .filter(|b| b.complete && b.id.as_str() >= since)
            .find_map(|b| b.begin_wal.clone())
    });
    let (wals, conflicts) = copy_wals(pair, src, dst, floor.as_deref()).await?;
    report.wals_copied = wals;
    report.conflicts = conflicts;
    let (s, d) = (list_server(src).await?, list_server(dst).await?);
    report.lag = plan::lag(&s, &d, floor.as_deref(), SystemTime::now());
    report.stores = vec![holdings("main", &s), holdings(target_name, &d)];
    Ok(report)
}

/// One backup: its files, then the manifest, then backup.info.
async fn copy_backup(pair: &Pair, srv: &Server, dst: &Remote, id: &str) -> Result<()> {
    let src = &srv.remote;
    let mkey = src.backup_key(id, MANIFEST);
    // Read through the engine that opens an encrypted manifest; copied below as stored.
    let (bytes, _) = srv.t.download_small(&mkey, MAX_MANIFEST).await?;
    let manifest = Manifest::parse(&bytes, &mkey)?;
    if manifest.backup_id != id {
        return Err(Error::Failed(format!(
            "{mkey}: the manifest is of backup {}, not {id}",
            manifest.backup_id
        )));
    }
    let jobs: Vec<(String, String, (u64, u32))> = manifest
        .entries
        .iter()
        .filter_map(|e| match e {
            // The stored bytes: the ciphertext as sent when the file went up encrypted, else
            // the file itself.
            Entry::File {
                path,
                ciphertext: Some(c),
                ..
            } => Some((path, c.size, &c.crc32c)),
            Entry::File {
                path, size, crc32c, ..
            } => Some((path, *size, crc32c)),
            _ => None,
        })
        .map(|(path, size, crc)| {
            let crc = u32::from_str_radix(crc, 16).map_err(|_| {
                Error::Failed(format!(
                    "{mkey}: {path}: bad CRC32C {crc:?} in the manifest"
                ))
            })?;
            Ok((
                src.backup_key(id, path),
                dst.backup_key(id, path),
                (size, crc),
            ))
        })
        .collect::<Result<_>>()?;
    let workers = pair.target.file_workers();
    crate::transfer::bounded(jobs, workers, |(s, d, rec)| {
        let pair = pair.clone();
        async move {
            pair.copy(&s, &d, Some(rec), ObjectKind::Base)
                .await
                .map(|_| ())
        }
    })
    .await?;
    for name in [MANIFEST, INFO] {
        let (s, d) = (src.backup_key(id, name), dst.backup_key(id, name));
        pair.copy(&s, &d, None, ObjectKind::Meta).await?;
    }
    Ok(())
}

/// WAL files in scope that the replica lacks; returns how many were copied and the conflicts.
async fn copy_wals(
    pair: &Pair,
    src: &Server,
    dst: &Server,
    floor: Option<&str>,
) -> Result<(u64, Vec<String>)> {
    let (have, want) = (
        list_under(dst, dst.remote.wals_prefix()).await?,
        list_under(src, src.remote.wals_prefix()).await?,
    );
    let mut conflicts = Vec::new();
    let mut jobs = Vec::new();
    for (rel, o) in &want {
        if !plan::wal_in_scope(rel, floor) {
            continue;
        }
        match plan::wal_action(o, have.get(rel)) {
            WalAction::Present => {
                pair.counts.present.fetch_add(1, Ordering::Relaxed);
            }
            WalAction::Conflict => conflicts.push(dst.remote.wal_key(rel)),
            WalAction::Send => jobs.push((src.remote.wal_key(rel), dst.remote.wal_key(rel))),
            // The same size under another ETag: the same bytes only if the checksums say so.
            // A WAL is never rewritten, so anything else (or no checksum to tell by) is a
            // conflict, reported and left as it is, never overwritten.
            WalAction::Compare => {
                let (s, d) = (src.remote.wal_key(rel), dst.remote.wal_key(rel));
                if pair.same_as(&s, &d).await? == Some(true) {
                    pair.counts.present.fetch_add(1, Ordering::Relaxed);
                } else {
                    conflicts.push(d);
                }
            }
        }
    }
    let workers = pair.target.file_workers();
    let sent = crate::transfer::bounded(jobs, workers, |(s, d)| {
        let pair = pair.clone();
        async move { pair.copy(&s, &d, None, ObjectKind::Wal).await }
    })
    .await?;
    Ok((sent.into_iter().filter(|s| *s).count() as u64, conflicts))
}
