//! The prefetcher: one process per recovery, started by the first `restore_command` call that
//! finds none running and alive across calls (PostgreSQL runs one call per segment and replays
//! nothing while it waits), until recovery has asked for nothing for a while. From the segment
//! asked for, the timeline history and one bucket listing it knows what PostgreSQL will ask
//! for next, and keeps those segments in the spool, fetched, decoded and checked exactly as a
//! direct fetch is. How far ahead grows while PostgreSQL finds the spool dry, within
//! `wal_spool_bytes` (a fetch in flight counts as a whole segment).
//!
//! It sleeps until something happens (a request, a fetch ending, a signal, a slow tick) and
//! never spins; SIGTERM or SIGINT end it at once, its unfinished fetches abandoned and their
//! files removed. A fetch that fails is left to the restore_command's own fetch, which
//! reports: a missing segment is tried again after a moment, a transient failure after a
//! growing pause, an object that does not decode to its segment never again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::fetch::{Listed, bucket_system, fetch_segment, list_from};
use super::plan::{self, Failure, Plan};
use super::spool::Spool;
use super::{DEFAULT_SEG, Decoding, Expected};
use crate::barman::cloud::{Stored, stored_wals};
use crate::barman::recover::timeline::{self, Begin};
use crate::barman::server::Server;
use crate::barman::wal::{self, WalKind};
use crate::error::{Error, Result};
use crate::store::ListRequest;

/// How often the prefetcher looks at the spool without being woken: requests wake it through
/// inotify; where inotify does not work (a spool on NFS) it looks more often.
const TICK: Duration = Duration::from_secs(1);
const TICK_WITHOUT_INOTIFY: Duration = Duration::from_millis(50);
/// A listing that is older than this is taken again when it cannot answer for a name ahead.
const RELIST: Duration = Duration::from_secs(2);

/// Prefetch settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Segments fetched ahead at first (`barman.wal_prefetch`).
    pub depth: usize,
    /// Bytes the spool may hold, fetches in flight included (`barman.wal_spool_bytes`).
    pub bytes: u64,
}

/// Runs the prefetcher on `spool`, whose lock the caller took (`_lock`), until recovery has
/// asked for nothing for [`plan::IDLE_EXIT`]; then removes the spool.
pub async fn run(
    server: &Server,
    spool: &Spool,
    _lock: std::fs::File,
    decoding: &Decoding,
    settings: Settings,
) -> Result<()> {
    // What a killed predecessor left: its half-written files, files of older versions.
    let _ = spool.sweep(&|_| false, &|_| true);
    // What was spooled before the machine last started may be torn.
    spool.claim_boot();
    let wake = Arc::new(tokio::sync::Notify::new());
    let watcher = watch(spool, wake.clone());
    let tick = if watcher.is_some() {
        TICK
    } else {
        TICK_WITHOUT_INOTIFY
    };
    let mut p = Prefetcher {
        server: server.clone(),
        spool: spool.clone(),
        decoding: decoding.clone(),
        settings,
        depth: settings.depth.max(1),
        expected: spool.expected(),
        asked_bucket: false,
        chains: BTreeMap::new(),
        listings: BTreeMap::new(),
        held: BTreeMap::new(),
        inflight: tokio::task::JoinSet::new(),
        fetching: BTreeSet::new(),
        last: None,
        asked_at: Instant::now(),
        planned: Plan::default(),
    };
    let started = SystemTime::now();
    loop {
        tokio::select! {
            biased;
            () = server.t.cancel_flag().cancelled() => return Err(Error::Interrupted),
            Some(done) = p.inflight.join_next(), if !p.inflight.is_empty() => p.finished(done),
            () = wake.notified() => {}
            () = tokio::time::sleep(tick) => {}
        }
        let request = spool.wanted();
        let last_ask = request
            .as_ref()
            .map_or(started, |(_, at)| (*at).max(started));
        let since = last_ask.elapsed().unwrap_or_default();
        if plan::idle(since, p.inflight.len()) {
            break;
        }
        if let Some((want, at)) = request {
            p.on_request(&want, at).await;
            p.top_up(&want).await;
        }
    }
    drop(watcher);
    // Idle: PostgreSQL has stopped asking. What is left was never wanted, and a recovered
    // cluster keeps no spool.
    spool.retire();
    Ok(())
}

/// Wakes the loop when a restore_command writes `.want`; `None` where inotify is unavailable.
fn watch(spool: &Spool, wake: Arc<tokio::sync::Notify>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    use notify::event::{AccessKind, AccessMode, EventKind};
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        // Written, not merely read: the loop reads `.want` itself, and waking on its own reads
        // would be a busy loop.
        let written = |e: &notify::Event| {
            matches!(
                e.kind,
                EventKind::Create(_)
                    | EventKind::Modify(_)
                    | EventKind::Access(AccessKind::Close(AccessMode::Write))
            ) && e.paths.iter().any(|p| p.ends_with(".want"))
        };
        if ev.is_ok_and(|e| written(&e)) {
            wake.notify_one();
        }
    })
    .ok()?;
    w.watch(spool.dir(), notify::RecursiveMode::NonRecursive)
        .ok()?;
    Some(w)
}

/// The prefetcher's working state; every fetch it starts is in `inflight`, never detached.
struct Prefetcher {
    server: Server,
    spool: Spool,
    decoding: Decoding,
    settings: Settings,
    /// How far ahead it looks now.
    depth: usize,
    expected: Expected,
    /// Whether the bucket's identity.json was read (when the spool does not know the system).
    asked_bucket: bool,
    chains: BTreeMap<u32, Vec<Begin>>,
    listings: BTreeMap<u32, (Listed, Instant)>,
    /// Names not to fetch before an instant (`None`: never again), with the failures so far.
    held: BTreeMap<String, (Option<Instant>, u32)>,
    inflight: tokio::task::JoinSet<(String, Result<()>)>,
    fetching: BTreeSet<String>,
    /// The last request seen: the name and when it was written.
    last: Option<(String, SystemTime)>,
    /// When the prefetcher saw it.
    asked_at: Instant,
    /// The last plan.
    planned: Plan,
}

impl Prefetcher {
    /// A request PostgreSQL made: the depth grows if the spool did not have it ready.
    async fn on_request(&mut self, want: &str, at: SystemTime) {
        if self
            .last
            .as_ref()
            .is_some_and(|(w, a)| w == want && *a == at)
        {
            return;
        }
        let spooled: BTreeSet<String> = self.spool.entries().into_iter().map(|e| e.name).collect();
        let dry = plan::ran_dry(want, &self.planned, &spooled);
        self.asked_at = Instant::now();
        self.expected = self.spool.expected();
        let seg = self.seg_size();
        self.depth = plan::next_depth(
            self.depth,
            dry,
            self.settings.depth.max(1),
            seg,
            self.settings.bytes,
        );
        if dry {
            tracing::debug!("{want}: the spool ran dry; looking {} ahead", self.depth);
        }
        if self.expected.system.is_none() && !self.asked_bucket {
            self.asked_bucket = true;
            match bucket_system(&self.server).await {
                Ok(system) => self.expected.system = system,
                Err(e) => tracing::warn!("cannot read the bucket's identity: {}", e.one_line()),
            }
        }
        self.last = Some((want.to_string(), at));
    }

    fn seg_size(&self) -> u64 {
        self.expected.seg_size.unwrap_or(DEFAULT_SEG)
    }

    /// Starts what the plan says, after dropping what PostgreSQL will not ask for.
    async fn top_up(&mut self, want: &str) {
        let seg = self.seg_size();
        let tli = wal::timeline(want).unwrap_or(1);
        if !self.chains.contains_key(&tli) {
            let chain = latest_chain(&self.server, tli).await.unwrap_or_else(|e| {
                tracing::warn!("timeline history: {}", e.one_line());
                vec![Begin { tli, lsn: 0 }]
            });
            self.chains.insert(tli, chain);
        }
        let ahead = plan::next_names(want, self.depth, seg, &self.chains[&tli]);
        let fetching = &self.fetching;
        let kept = self.spool.sweep(&|n| fetching.contains(n), &|e| {
            plan::keep(&e.name, want, &ahead)
        });
        self.refresh_listings(&ahead, seg).await;
        let now = Instant::now();
        self.held.retain(|n, _| n.as_str() >= want);
        let plan = Plan {
            spooled: kept.iter().map(|e| e.name.clone()).collect(),
            spooled_bytes: kept.iter().map(|e| e.len).sum(),
            inflight: self.fetching.clone(),
            held: self
                .held
                .iter()
                .filter(|(_, (until, _))| until.is_none_or(|u| u > now))
                .map(|(n, _)| n.clone())
                .collect(),
            absent: ahead
                .iter()
                .filter(|n| {
                    let tli = wal::timeline(n).unwrap_or(1);
                    self.listings.get(&tli).is_some_and(|(l, _)| l.absent(n))
                })
                .cloned()
                .collect(),
            seg_size: seg,
            budget: self.settings.bytes,
            ahead,
        };
        for name in plan.to_start() {
            self.start(name);
        }
        self.planned = plan;
    }

    /// Lists a timeline again when its listing is missing, or older than the last request and
    /// [`RELIST`] and unable to say whether a name ahead is there (a waiting standby's archive
    /// is listed at most once per request).
    async fn refresh_listings(&mut self, ahead: &[String], seg: u64) {
        let mut firsts: BTreeMap<u32, &String> = BTreeMap::new();
        for n in ahead {
            firsts.entry(wal::timeline(n).unwrap_or(1)).or_insert(n);
        }
        for (tli, first) in firsts {
            let stale = match self.listings.get(&tli) {
                None => true,
                Some((l, at)) => {
                    at.elapsed() >= RELIST
                        && *at < self.asked_at
                        && ahead
                            .iter()
                            .any(|n| wal::timeline(n) == Some(tli) && !l.present.contains_key(n))
                }
            };
            if !stale {
                continue;
            }
            match list_from(&self.server, first, seg).await {
                Ok(l) => {
                    self.listings.insert(tli, (l, Instant::now()));
                }
                Err(e) => tracing::warn!("listing the WAL archive: {}", e.one_line()),
            }
        }
    }

    /// Starts fetching `name` into the spool.
    fn start(&mut self, name: String) {
        let listing = self
            .listings
            .get(&wal::timeline(&name).unwrap_or(1))
            .map(|(l, _)| l);
        // A segment stored in two forms: refused here as the direct fetch refuses it.
        let refusal = listing
            .and_then(|l| l.refused.get(&name))
            .and_then(|s| s.key().err());
        if let Some(e) = refusal {
            self.failed(name, e);
            return;
        }
        let listed = listing.and_then(|l| l.present.get(&name).cloned());
        let pending = match self.spool.begin(&name) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("prefetch {name}: {}", e.one_line());
                return;
            }
        };
        self.fetching.insert(name.clone());
        let (server, decoding, expected) =
            (self.server.clone(), self.decoding.clone(), self.expected);
        self.inflight.spawn(async move {
            let r = match fetch_segment(&server, &name, listed, &decoding, expected).await {
                // The write runs off the runtime's threads, so the other fetches go on.
                Ok((plain, crc)) => {
                    tokio::task::spawn_blocking(move || pending.finish_with(&plain, crc))
                        .await
                        .unwrap_or_else(|e| Err(Error::Failed(format!("spool write failed: {e}"))))
                }
                Err(e) => Err(e),
            };
            (name, r)
        });
    }

    /// Collects a finished fetch: a failed name is held back as [`plan::retry_after`] says.
    fn finished(
        &mut self,
        done: std::result::Result<(String, Result<()>), tokio::task::JoinError>,
    ) {
        let (name, r) = match done {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("prefetch task failed: {e}");
                return;
            }
        };
        self.fetching.remove(&name);
        match r {
            Ok(()) => {
                self.held.remove(&name);
            }
            Err(Error::Interrupted) => {}
            Err(e) => self.failed(name, e),
        }
    }

    /// A fetch of `name` that failed with `e`: held back as [`plan::retry_after`] says.
    fn failed(&mut self, name: String, e: Error) {
        let failure = match e {
            Error::NotFound { .. } => Failure::Missing,
            e @ (Error::Store(_) | Error::Io { .. }) => {
                tracing::warn!("prefetch {name}: {}; trying again later", e.one_line());
                Failure::Transient
            }
            e => {
                tracing::warn!(
                    "prefetch {name}: {}; not fetching it again (the restore_command fetches it itself and reports)",
                    e.one_line()
                );
                Failure::Refused
            }
        };
        let attempts = self.held.get(&name).map_or(0, |(_, n)| *n) + 1;
        let until = plan::retry_after(failure, attempts).map(|d| Instant::now() + d);
        self.held.insert(name, (until, attempts));
    }
}

/// The chain of the newest timeline in the bucket that descends from `tli` (one listing, and
/// the history files it needs).
async fn latest_chain(s: &Server, tli: u32) -> Result<Vec<Begin>> {
    let prefix = s.remote.wals_prefix();
    let req = ListRequest {
        prefix: prefix.clone(),
        delimiter: Some("/".into()),
        ..Default::default()
    };
    let cloud = s.remote.layout() == crate::barman::remote::BucketLayout::BarmanCloud;
    let keys: Vec<String> =
        s.t.list_all(&req)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
    // Name → its key (in barman-cloud's layout the name carries the compression, and a history
    // file stored in two forms is refused as the direct fetch refuses it).
    let stored: BTreeMap<String, Stored> = if cloud {
        stored_wals(keys.iter().map(String::as_str))
    } else {
        keys.iter()
            .filter_map(|k| Some((k.strip_prefix(&prefix)?.to_string(), Stored::One(k.clone()))))
            .collect()
    };
    // Timeline → the key of its history file.
    let mut newer: Vec<(u32, String)> = Vec::new();
    for (n, st) in &stored {
        if wal::classify(n) != Some(WalKind::History) {
            continue;
        }
        if let Some(t) = wal::timeline(n).filter(|t| *t >= tli) {
            newer.push((t, st.key()?.to_string()));
        }
    }
    newer.sort_unstable_by(|a, b| b.cmp(a));
    for (candidate, key) in newer {
        // A history file is a line per ancestor: bounded like every text WAL file.
        let (buf, _) =
            s.t.download_small(&key, super::decode::MAX_TEXT_BYTES)
                .await?;
        // barman-cloud compresses history files too.
        let buf = match crate::codec::Codec::sniff(&buf).filter(|_| cloud) {
            Some(c) => crate::codec::decode_all(c, &buf, super::decode::MAX_TEXT_BYTES, &key)?,
            None => buf,
        };
        let chain = timeline::chain(candidate, &String::from_utf8_lossy(&buf));
        if chain.iter().any(|b| b.tli == tli) {
            return Ok(chain);
        }
    }
    Ok(vec![Begin { tli, lsn: 0 }])
}
