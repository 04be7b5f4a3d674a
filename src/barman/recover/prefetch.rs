//! Pipelined `wal-restore`: PostgreSQL calls `restore_command` once per segment and replays
//! nothing while it waits, so one round trip per 16 MiB would bound recovery. When PostgreSQL
//! asks for segment N (and only during recovery proper: `%p` is `pg_wal/RECOVERYXLOG`, never
//! for pg_rewind), a background prefetcher fetches the next K segments of the timeline
//! PostgreSQL will read them from (following `.history`) into a spool directory, decoded and
//! checked exactly as a direct fetch is; the next calls take their segment from the spool with a
//! rename.
//!
//! The spool never lies: files appear only complete (temp + rename), only after the same checks
//! as a direct fetch (decode, the first page names the segment, the system identifier is the
//! bucket's cluster); it belongs to one server and store (its directory is named after both)
//! and one cluster (it is emptied when the bucket's system identifier changes); entries older
//! than [`MAX_AGE`](super::spool::MAX_AGE) or behind the requested segment are removed, never
//! served. A prefetcher that fails just stops: the call that needs the segment fetches it itself
//! and reports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

pub use super::spool::{Depth, Spool, recently_missing, remember_missing};
use super::spool::{IDLE_EXIT, LOCK, MISSING_TTL};
use super::timeline::{self, Begin};
use super::walrestore::{Decoding, fetch_decoded};
use crate::barman::remote::Remote;
use crate::barman::wal::{self, WalKind};
use crate::error::{Error, Result};
use crate::store::ListRequest;
use crate::transfer::{Expect, Transfer};

/// The prefetcher: keeps `depth.segments` segments ahead of what PostgreSQL wants, until it
/// has been idle for a while. Runs under the spool's lock (a second one exits at once).
pub async fn run(
    t: &Transfer,
    remote: &Remote,
    spool: &Spool,
    decoding: &Decoding,
    depth: Depth,
) -> Result<()> {
    let _lock = match crate::lockfile::try_lock_file(&spool.dir().join(LOCK), "WAL prefetcher") {
        Ok(l) => l,
        Err(Error::Busy(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut p = Prefetcher {
        t: t.clone(),
        remote: remote.clone(),
        spool: spool.clone(),
        decoding: decoding.clone(),
        depth,
        system: spool.identity(),
        chains: BTreeMap::new(),
        missing: BTreeMap::new(),
        inflight: tokio::task::JoinSet::new(),
        fetching: BTreeSet::new(),
    };
    let mut last = (None, Instant::now());
    loop {
        let want = spool.wanted();
        if want != last.0 {
            last = (want.clone(), Instant::now());
        } else if p.inflight.is_empty() && last.1.elapsed() > IDLE_EXIT {
            break;
        }
        let Some(want) = want else { break };
        p.top_up(&want).await;
        p.reap().await;
    }
    // Idle: PostgreSQL has stopped asking. What is left was never wanted.
    for (name, _) in spool.entries() {
        let _ = std::fs::remove_file(spool.dir().join(name));
    }
    Ok(())
}

/// The prefetcher's working state; every fetch it starts is in `inflight` (at most
/// `depth.segments`), never detached.
struct Prefetcher {
    t: Transfer,
    remote: Remote,
    spool: Spool,
    decoding: Decoding,
    depth: Depth,
    system: Option<u64>,
    chains: BTreeMap<u32, Vec<Begin>>,
    missing: BTreeMap<String, Instant>,
    inflight: tokio::task::JoinSet<(String, Result<()>)>,
    fetching: BTreeSet<String>,
}

impl Prefetcher {
    /// Starts fetches for the segments after `want` that are neither spooled, nor being
    /// fetched, nor just found missing, within the count and byte bounds.
    async fn top_up(&mut self, want: &str) {
        let tli = wal::timeline(want).unwrap_or(1);
        if let std::collections::btree_map::Entry::Vacant(e) = self.chains.entry(tli) {
            let chain = latest_chain(&self.t, &self.remote, tli)
                .await
                .unwrap_or_else(|_| vec![Begin { tli, lsn: 0 }]);
            e.insert(chain);
        }
        let seg_size = self.spool.seg_size();
        let ahead = next_names(want, self.depth.segments, seg_size, &self.chains[&tli]);
        let spooled: BTreeSet<String> = self.spool.entries().into_iter().map(|(n, _)| n).collect();
        self.missing.retain(|_, at| at.elapsed() < MISSING_TTL);
        for name in ahead {
            if self.inflight.len() >= self.depth.segments
                || self.spool.held_bytes() >= self.depth.bytes
            {
                return;
            }
            if spooled.contains(&name)
                || self.fetching.contains(&name)
                || self.missing.contains_key(&name)
            {
                continue;
            }
            let marker = self.spool.dir().join(format!("{name}.inflight"));
            let _ = std::fs::write(&marker, b"");
            self.fetching.insert(name.clone());
            let (t, remote, decoding) =
                (self.t.clone(), self.remote.clone(), self.decoding.clone());
            let (dir, system) = (self.spool.dir().to_path_buf(), self.system);
            self.inflight.spawn(async move {
                let r = fetch_into(&t, &remote, &name, &decoding, system, &dir).await;
                let _ = std::fs::remove_file(&marker);
                (name, r)
            });
        }
    }

    /// Collects a finished fetch if one ends soon; a segment that could not be fetched is left
    /// for the restore_command's direct fetch, which reports what is wrong.
    async fn reap(&mut self) {
        let done = tokio::time::timeout(Duration::from_millis(20), self.inflight.join_next()).await;
        let Ok(Some(done)) = done else {
            return;
        };
        let (name, r) = match done {
            Ok(x) => x,
            Err(e) => {
                eprintln!("prefetch task failed: {e}");
                return;
            }
        };
        self.fetching.remove(&name);
        match r {
            Ok(()) => {}
            // Not there (yet): the end of the archive, or not shipped so far.
            Err(Error::NotFound { .. }) => {
                self.missing.insert(name, Instant::now());
            }
            Err(e) => {
                eprintln!(
                    "prefetch {name}: {}; the restore_command fetches it itself",
                    e.one_line()
                );
                self.missing.insert(name, Instant::now());
            }
        }
    }
}

/// Fetches, checks and spools one segment (temp file, rename: never half there).
async fn fetch_into(
    t: &Transfer,
    remote: &Remote,
    name: &str,
    decoding: &Decoding,
    system: Option<u64>,
    dir: &Path,
) -> Result<()> {
    // Only a full segment is spooled: a closed partial ends a timeline and is served by the
    // direct path, which also decides what its absence means.
    let (served, plain) = fetch_decoded(t, remote, name, decoding, system).await?;
    if served.key.ends_with(".partial") {
        return Err(Error::NotFound { key: served.key });
    }
    Spool::at(dir.to_path_buf()).learn_seg_size(served.seg_size);
    // The write and its fsyncs run off the runtime's threads, so the other fetches go on.
    let path = dir.join(name);
    tokio::task::spawn_blocking(move || crate::directio::write_atomic(&path, &plain))
        .await
        .map_err(|e| Error::Failed(format!("spool write task failed: {e}")))?
}

/// The chain of the newest timeline in the bucket that descends from `tli` (one listing, and
/// the history files it needs).
async fn latest_chain(t: &Transfer, remote: &Remote, tli: u32) -> Result<Vec<Begin>> {
    let prefix = remote.wals_prefix();
    let req = ListRequest {
        prefix: prefix.clone(),
        delimiter: Some("/".into()),
        ..Default::default()
    };
    let mut newer: Vec<u32> = t
        .list_all(&req)
        .await?
        .iter()
        .filter_map(|o| o.key.strip_prefix(&prefix))
        .filter(|n| wal::classify(n) == Some(WalKind::History))
        .filter_map(wal::timeline)
        .filter(|x| *x >= tli)
        .collect();
    newer.sort_unstable_by(|a, b| b.cmp(a));
    for candidate in newer {
        let mut buf = Vec::new();
        let key = remote.wal_key(&format!("{candidate:08X}.history"));
        t.download_to(&key, &mut buf, Expect::default()).await?;
        let chain = timeline::chain(candidate, &String::from_utf8_lossy(&buf));
        if chain.iter().any(|b| b.tli == tli) {
            return Ok(chain);
        }
    }
    Ok(vec![Begin { tli, lsn: 0 }])
}

/// The names of the `k` segments after `want`, each on the timeline PostgreSQL will read it
/// from, for segments of `seg` bytes.
pub fn next_names(want: &str, k: usize, seg: u64, chain: &[Begin]) -> Vec<String> {
    let Some(n) = wal::segment_number(want, (1u64 << 32) / seg) else {
        return Vec::new();
    };
    let tli = wal::timeline(want).unwrap_or(1);
    (1..=k as u64)
        .map(|i| {
            let t = timeline::timeline_for(n + i, seg, chain)
                .unwrap_or(tli)
                .max(tli);
            timeline::segment_name(t, n + i, seg)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::barman::recover::spool::DEFAULT_SEG;

    #[test]
    fn prefetch_follows_a_timeline_switch() {
        let chain = timeline::chain(2, "1\t0/7000098\tno recovery target specified\n");
        assert_eq!(
            next_names("000000010000000000000005", 3, DEFAULT_SEG, &chain),
            vec![
                "000000010000000000000006",
                "000000020000000000000007",
                "000000020000000000000008"
            ]
        );
        let flat = [Begin { tli: 1, lsn: 0 }];
        assert_eq!(
            next_names("0000000100000000000000FF", 1, DEFAULT_SEG, &flat),
            vec!["000000010000000100000000"]
        );
        // 1 MiB segments: 4096 to a log file.
        assert_eq!(
            next_names("0000000100000000000000FF", 1, 1 << 20, &flat),
            vec!["000000010000000000000100"]
        );
    }
}
