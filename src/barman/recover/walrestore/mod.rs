//! `wal-restore`, PostgreSQL's `restore_command`, as one service: [`serve`] takes one
//! [`Request`] and answers with an [`Outcome`]. The application maps the outcome onto the exit
//! status PostgreSQL reads (in one function) and injects, through a [`Launcher`], how to start
//! the prefetcher and how to reach the bucket.
//!
//! PostgreSQL reads exit status 1 as "not in the archive" and may then end recovery and
//! promote, so [`Outcome::Absent`] comes back only for a file verifiably absent under every
//! name it may be stored under, and never at a gap (a later segment of the same timeline is in
//! the bucket). Every other failure is [`Outcome::Failed`], which must abort recovery.
//!
//! One call, during recovery proper (`%p` is `pg_wal/RECOVERYXLOG`): record the request in
//! the [`spool`], make sure the [`prefetch`]er runs, and take the segment from the spool when
//! it is there or arriving. That path builds no async runtime and no store client and lists
//! nothing; it keeps the checks of the spool and the file (the spool's owner and mode, the
//! file's first page, size and age, and its whole CRC-32C unless the prefetcher filled the spool
//! during this boot). Otherwise, and for every other file, the bucket is reached (only then is the
//! engine built) and the file fetched directly ([`fetch`]). The lean program
//! (`barmans3-wal-restore`) runs the spool's part alone ([`serve_spooled`]) and hands anything
//! else to the full one. Segments are checked against the cluster being recovered as its data
//! directory's `pg_control` says ([`cluster`]): its system identifier, and its segment size,
//! which also bounds every decoder; without one, the bucket's `identity.json`.

pub mod cluster;
mod decode;
mod fetch;
pub mod plan;
pub mod prefetch;
pub mod spool;

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

pub use decode::{
    Decoding, Limits, MAX_TEXT_BYTES, MAX_WAL_BYTES, SEGMENT_HEAD, check, check_segment_head,
    check_system, decode, is_system, segment_size,
};
pub use fetch::{bucket_system, fetch_decoded};
use spool::Spool;

use crate::barman::server::Server;
use crate::barman::wal::{self, WalKind};
use crate::error::{Error, Result};
use crate::transfer::Transfer;

/// The segment size PostgreSQL uses unless initdb was told otherwise.
pub const DEFAULT_SEG: u64 = 16 << 20;
/// How often a call waiting for a segment the prefetcher is fetching looks again.
const POLL: Duration = Duration::from_millis(2);

/// What a WAL file must be to be served: of this database system, with segments of this
/// size, where known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expected {
    /// The database system identifier.
    pub system: Option<u64>,
    /// Bytes per segment.
    pub seg_size: Option<u64>,
}

/// What the spool's name tells apart for one store: the same keys read as another layout, or
/// as the bucket was at another time (`--as-of`), are other files, so two such recoveries
/// never share a spool.
pub fn spool_store_id(
    store: &str,
    layout: crate::barman::remote::BucketLayout,
    as_of: Option<std::time::SystemTime>,
) -> String {
    let mut id = store.to_string();
    if layout == crate::barman::remote::BucketLayout::BarmanCloud {
        id.push_str(" barman-cloud");
    }
    if let Some(t) = as_of {
        id.push_str(" as of ");
        id.push_str(&crate::store::asof::format_time(t));
    }
    id
}

/// One `restore_command` call, validated.
#[derive(Debug, Clone)]
pub struct Request {
    /// The Barman server.
    pub server: String,
    /// The file PostgreSQL asks for (`%f`).
    pub name: String,
    /// Where it goes (`%p`).
    pub dest: PathBuf,
    /// The store's key prefix.
    pub prefix: String,
    /// The store, as the spool's name tells stores apart.
    pub store_id: String,
    /// How stored files are decoded.
    pub decoding: Decoding,
    /// Whether segments are prefetched (`barman.wal_prefetch` > 0).
    pub prefetch: bool,
    /// The configured spool directory (`barman.wal_spool_dir`).
    pub spool_base: Option<PathBuf>,
    /// How long to wait for a segment the prefetcher is fetching.
    pub patience: Duration,
    /// Who wrote the bucket.
    pub layout: crate::barman::remote::BucketLayout,
}

/// A file fetched from the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Bytes decoded.
    pub bytes: u64,
    /// The bucket key it came from (a `.partial` when the full segment is absent).
    pub key: String,
    /// The format it was stored in (`plain`, `zstd`, `gpg+zstd`, `custom`, ...).
    pub stored_as: String,
    /// The cluster's WAL segment size, as the first page of a segment says.
    pub seg_size: Option<u64>,
}

/// What was placed at `%p`, from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// A segment the prefetcher had spooled, and its size.
    Spool(u64),
    /// A file fetched from the bucket by this call.
    Bucket(Fetched),
}

/// The answer to one request.
#[derive(Debug)]
pub enum Outcome {
    /// The file is at `%p`.
    Served(Served),
    /// The file is in the bucket under no name it may have, and no later segment of its
    /// timeline is: the end of the archive, a timeline that does not exist.
    Absent,
    /// Anything else: recovery must stop.
    Failed(Error),
}

/// Work on the bucket: a future that owns the engine it is given and may borrow the caller's
/// data.
pub type Job<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// What the application provides: how to start the prefetcher, and the bucket.
pub trait Launcher {
    /// The command that runs the prefetcher on the spool at `spool`.
    fn prefetcher(&self, spool: &Path) -> std::process::Command;

    /// Runs `job` with an engine on the bucket; the runtime and the store client are built
    /// only when this is called.
    fn on_bucket<'a, T>(&self, job: impl FnOnce(Transfer) -> Job<'a, T>) -> Result<T>;
}

/// Serves one `restore_command` call.
pub fn serve(req: &Request, launcher: &impl Launcher) -> Outcome {
    match attempt(req, launcher) {
        Ok(Some(s)) => Outcome::Served(s),
        Ok(None) => Outcome::Absent,
        Err(e) => Outcome::Failed(e),
    }
}

/// The lean entry point's part of a call (`barmans3-wal-restore`): the segment from the spool,
/// when it is there or arriving, with every check [`serve`] makes, and the prefetcher started
/// by `prefetcher`. `None` (and any error) leaves the request to [`serve`], in the full
/// program, which repeats what was done here harmlessly and answers for the rest.
pub fn serve_spooled(
    req: &Request,
    prefetcher: &dyn Fn(&Path) -> std::process::Command,
) -> Result<Option<u64>> {
    let Some(sp) = wal::classify(&req.name).map_or(Ok(None), |kind| spool_of(req, kind))? else {
        return Ok(None);
    };
    let cluster = cluster::of_destination(&req.dest);
    let mut expected = expected_of(cluster);
    match through_spool(&sp, req, cluster.is_some(), &mut expected, prefetcher)? {
        Some(Some(Served::Spool(n))) => Ok(Some(n)),
        _ => Ok(None),
    }
}

/// The request's spool, when it has one: segments of a recovery that prefetches.
fn spool_of(req: &Request, kind: WalKind) -> Result<Option<Spool>> {
    if !req.prefetch || kind != WalKind::Segment {
        return Ok(None);
    }
    Spool::path_for(
        req.spool_base.as_deref(),
        &req.server,
        &req.store_id,
        &req.dest,
    )
    .map(|dir| Spool::open(&dir))
    .transpose()
}

/// What the data directory being recovered says a segment must be.
fn expected_of(cluster: Option<cluster::Cluster>) -> Expected {
    cluster.map_or_else(Expected::default, |c| Expected {
        system: Some(c.system),
        seg_size: Some(c.seg_size),
    })
}

fn attempt(req: &Request, launcher: &impl Launcher) -> Result<Option<Served>> {
    let kind = wal::classify(&req.name).ok_or_else(|| fetch::not_a_wal_name(&req.name))?;
    let cluster = cluster::of_destination(&req.dest);
    let mut spool = spool_of(req, kind)?;
    let mut expected = expected_of(cluster);
    if let Some(sp) = &spool {
        let prefetcher = |dir: &Path| launcher.prefetcher(dir);
        match through_spool(sp, req, cluster.is_some(), &mut expected, &prefetcher) {
            Ok(Some(answer)) => return Ok(answer),
            Ok(None) => {}
            // An idle prefetcher retired the spool under this request: fetch directly.
            Err(_) if sp.removed() => spool = None,
            Err(e) => return Err(e),
        }
    }
    let fetched = launcher.on_bucket(|t| {
        let server = Server::new(&t, &req.prefix, &req.server).with_layout(req.layout);
        Box::pin(async move { direct(&server, req, expected).await })
    });
    match fetched {
        Ok((f, learned)) => {
            if let Some(sp) = &spool
                && learned != expected
                && let Err(e) = sp.set_expected(learned)
                && !sp.removed()
            {
                return Err(e);
            }
            Ok(Some(Served::Bucket(f)))
        }
        // PostgreSQL asks for files that may not exist (the next timeline's history, the end
        // of the archive): the answer is remembered for a moment.
        Err(Error::NotFound { .. }) => {
            if let Some(sp) = &spool {
                sp.remember_missing(&req.name);
            }
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The spool's part of a request: `Some` is the answer (served from the spool, or found missing
/// moments ago), `None` sends the request to the bucket.
fn through_spool(
    sp: &Spool,
    req: &Request,
    has_cluster: bool,
    expected: &mut Expected,
    prefetcher: &dyn Fn(&Path) -> std::process::Command,
) -> Result<Option<Option<Served>>> {
    if has_cluster {
        sp.set_expected(*expected)?;
    } else {
        *expected = sp.expected();
    }
    if let Some(n) = from_spool(sp, req, expected, prefetcher)? {
        return Ok(Some(Some(Served::Spool(n))));
    }
    Ok(sp.recently_missing(&req.name).then_some(None))
}

/// Records the request, makes sure the prefetcher runs, and takes the segment from the spool
/// if it is there, or once the prefetcher has it (while it is fetching it, until the fetch is
/// as old as the request's patience); `None` when it must be fetched directly. The wait is
/// bounded by the fetch's age, not the call's, so no fetch is waited for twice: not by the lean
/// program and the full one it hands a call to, nor by a call PostgreSQL makes again.
fn from_spool(
    sp: &Spool,
    req: &Request,
    expected: &Expected,
    prefetcher: &dyn Fn(&Path) -> std::process::Command,
) -> Result<Option<u64>> {
    sp.want(&req.name)?;
    sp.start_prefetcher(|| prefetcher(sp.dir()))?;
    loop {
        if let Some(n) = sp.take(&req.name, &req.dest, expected)? {
            return Ok(Some(n));
        }
        let arriving = sp
            .fetch_age(&req.name)
            .is_some_and(|age| age < req.patience)
            && sp.prefetcher_running();
        if !arriving {
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}

/// The direct fetch: the file from the bucket, checked against the cluster (the bucket's
/// identity when nothing local says which it is), at `%p`. Returns what was learnt of the
/// cluster too.
async fn direct(s: &Server, req: &Request, mut expected: Expected) -> Result<(Fetched, Expected)> {
    if expected.system.is_none() {
        expected.system = bucket_system(s).await?;
    }
    let (fetched, plain) = fetch_decoded(s, &req.name, &req.decoding, expected).await?;
    let dest = req.dest.clone();
    tokio::task::spawn_blocking(move || place(&dest, |f| f.write_all(&plain)))
        .await
        .map_err(|e| Error::Failed(format!("write task failed: {e}")))??;
    expected.seg_size = expected.seg_size.or(fetched.seg_size);
    Ok((fetched, expected))
}

/// Puts a file at `dest` atomically (a temp file beside it, renamed): PostgreSQL never sees
/// part of one. Not fsynced: PostgreSQL reads it at once, asks again after a crash, and makes
/// durable itself what it keeps.
pub(crate) fn place(
    dest: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = crate::fsutil::temp_path_for(dest);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| write(&mut f))
        .and_then(|()| std::fs::rename(&tmp, dest));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("write {}", dest.display()), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::time::Instant;

    /// A launcher with no bucket: counts how often one was wanted, answers "not there".
    struct NoBucket {
        asked: Cell<u32>,
    }

    impl Launcher for NoBucket {
        fn prefetcher(&self, _spool: &Path) -> std::process::Command {
            std::process::Command::new("true")
        }

        fn on_bucket<'a, T>(&self, _job: impl FnOnce(Transfer) -> Job<'a, T>) -> Result<T> {
            self.asked.set(self.asked.get() + 1);
            Err(Error::NotFound { key: "k".into() })
        }
    }

    fn request(pgdata: &Path, name: &str) -> Request {
        Request {
            server: "pg".into(),
            name: name.into(),
            dest: pgdata.join("pg_wal/RECOVERYXLOG"),
            prefix: String::new(),
            store_id: "file:///bucket".into(),
            decoding: Decoding::default(),
            prefetch: true,
            spool_base: None,
            patience: Duration::from_secs(1),
            layout: Default::default(),
        }
    }

    const SEG: &str = "000000010000000000000005";

    /// A data directory under `d` without `pg_control`, a request for [`SEG`] into it, and
    /// the request's spool (its directory, opened).
    fn spooled_request(d: &Path) -> (std::path::PathBuf, Request, std::path::PathBuf, Spool) {
        let pgdata = d.join("pgdata");
        std::fs::create_dir_all(pgdata.join("pg_wal")).expect("pg_wal");
        let req = request(&pgdata, SEG);
        let dir = Spool::path_for(None, "pg", &req.store_id, &req.dest).expect("dir");
        let sp = Spool::open(&dir).expect("spool");
        (pgdata, req, dir, sp)
    }

    #[test]
    fn a_spooled_segment_is_served_without_the_bucket() {
        let d = tempfile::tempdir().expect("tmp");
        let pgdata = d.path().join("pgdata");
        std::fs::create_dir_all(pgdata.join("pg_wal")).expect("pg_wal");
        std::fs::create_dir_all(pgdata.join("global")).expect("global");
        std::fs::write(
            pgdata.join("global/pg_control"),
            cluster::tests::pg_control(7311111111111111111, 1 << 20),
        )
        .expect("control");
        let req = request(&pgdata, SEG);
        let dir = Spool::path_for(None, "pg", &req.store_id, &req.dest).expect("dir");
        let sp = Spool::open(&dir).expect("spool");
        let mut data = decode::tests::segment(SEG, 1 << 20);
        data[24..32].copy_from_slice(&7311111111111111111u64.to_le_bytes());
        sp.begin(SEG).expect("begin").finish(&data).expect("spool");
        let l = NoBucket {
            asked: Cell::new(0),
        };
        let out = serve(&req, &l);
        assert!(
            matches!(out, Outcome::Served(Served::Spool(n)) if n == 1 << 20),
            "{out:?}"
        );
        assert_eq!(
            l.asked.get(),
            0,
            "the bucket was reached for a spooled segment"
        );
        assert!(std::fs::read(&req.dest).expect("served") == data);
        // What the data directory says of its cluster is recorded for the prefetcher.
        assert_eq!(
            sp.expected(),
            Expected {
                system: Some(7311111111111111111),
                seg_size: Some(1 << 20)
            }
        );
    }

    /// A call waits for a segment being fetched only until the fetch is as old as its
    /// patience, whoever waited before it: a fetch begun longer ago is not waited for at all.
    #[test]
    fn a_fetch_is_waited_for_until_it_is_as_old_as_the_patience() {
        let d = tempfile::tempdir().expect("tmp");
        let (_, req, dir, sp) = spooled_request(d.path());
        // The prefetcher runs (holds the lock) and is fetching the segment.
        let _running = sp.lock().expect("lock").expect("free");
        let _pending = sp.begin(SEG).expect("begin");
        let began = |ago: Duration| {
            std::fs::File::options()
                .write(true)
                .open(dir.join(format!(".fetch-{SEG}")))
                .and_then(|f| f.set_modified(std::time::SystemTime::now() - ago))
                .expect("mtime");
        };
        let l = NoBucket {
            asked: Cell::new(0),
        };
        began(Duration::from_secs(5));
        let t = Instant::now();
        assert!(matches!(serve(&req, &l), Outcome::Absent));
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(l.asked.get(), 1, "fetched directly");
        // Begun 700 ms ago with a patience of 1 s: about 300 ms more, not a whole second.
        std::thread::sleep(Duration::from_millis(2100)); // past `.missing`'s moment
        began(Duration::from_millis(700));
        let t = Instant::now();
        assert!(matches!(serve(&req, &l), Outcome::Absent));
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_millis(800),
            "{waited:?}"
        );
        assert_eq!(l.asked.get(), 2);
    }

    #[test]
    fn absence_is_asked_of_the_bucket_once_and_remembered_a_moment() {
        let d = tempfile::tempdir().expect("tmp");
        let pgdata = d.path().join("pgdata");
        std::fs::create_dir_all(pgdata.join("pg_wal")).expect("pg_wal");
        let l = NoBucket {
            asked: Cell::new(0),
        };
        let req = request(&pgdata, SEG);
        assert!(matches!(serve(&req, &l), Outcome::Absent));
        assert!(matches!(serve(&req, &l), Outcome::Absent));
        assert_eq!(l.asked.get(), 1);
        // Files other than segments do not use the spool.
        let history = request(&pgdata, "00000002.history");
        assert!(matches!(serve(&history, &l), Outcome::Absent));
        assert_eq!(l.asked.get(), 2);
    }

    /// An idle prefetcher removes the spool; a request that opened it just before is served
    /// from the bucket, not failed (which would abort recovery).
    #[test]
    fn a_spool_retired_under_a_request_sends_it_to_the_bucket() {
        let d = tempfile::tempdir().expect("tmp");
        let (pgdata, req, _, sp) = spooled_request(d.path());
        sp.want(SEG).expect("want");
        assert!(!sp.removed());
        sp.retire();
        assert!(sp.removed(), "retired");
        assert!(
            !pgdata.join("pg_wal/.barmans3-spool").exists(),
            "the default spool base is removed with its last spool"
        );
        // Removed between the request's open and its use: the prefetcher's start meets it.
        let l = RetiresSpool(NoBucket {
            asked: Cell::new(0),
        });
        let out = serve(&req, &l);
        assert!(matches!(out, Outcome::Absent), "{out:?}");
        assert_eq!(l.0.asked.get(), 1, "the bucket was asked");
    }

    /// Removes the spool when asked for its prefetcher, as an idle one retiring would.
    struct RetiresSpool(NoBucket);

    impl Launcher for RetiresSpool {
        fn prefetcher(&self, spool: &Path) -> std::process::Command {
            std::fs::remove_dir_all(spool).expect("retire");
            self.0.prefetcher(spool)
        }

        fn on_bucket<'a, T>(&self, job: impl FnOnce(Transfer) -> Job<'a, T>) -> Result<T> {
            self.0.on_bucket(job)
        }
    }

    #[test]
    fn a_spool_others_can_write_to_fails_the_call() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tmp");
        let pgdata = d.path().join("pgdata");
        std::fs::create_dir_all(pgdata.join("pg_wal")).expect("pg_wal");
        let req = request(&pgdata, SEG);
        let dir = Spool::path_for(None, "pg", &req.store_id, &req.dest).expect("dir");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let l = NoBucket {
            asked: Cell::new(0),
        };
        let out = serve(&req, &l);
        assert!(
            matches!(&out, Outcome::Failed(Error::Config(m)) if m.contains("writable by other users")),
            "{out:?}"
        );
        assert_eq!(l.asked.get(), 0);
    }
}
