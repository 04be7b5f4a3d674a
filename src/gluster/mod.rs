//! Gluster cloudsync cold-file archival, `barmans3 archive BRICK --mount MNT --older-than AGE`
//! (spec `gluster-bareos.md` §1). Run on a brick host, it uploads each cold file of the brick,
//! read through a FUSE mount of the whole volume, under the key Gluster's S3 plugin recalls
//! (`<bucketid>/<volume path>`), verifies it, and sets `trusted.glusterfs.csou.complete` through
//! the mount so that posix truncates the file; any cloudsync client reading it later fetches it
//! back.
//!
//! The parts: [`preflight`] proves the volume recalls from our bucket and prefix; [`walk`]
//! crawls the brick; [`run`] takes one file through the per-file algorithm; [`decide`] holds
//! every decision that could lose data, as pure functions; [`facts`], [`xattrs`] and
//! [`openfiles`] gather what they decide on; [`journal`] records each archived file; [`emulate`]
//! stands in for Gluster in the tests. This module validates the run, takes the brick's lock,
//! and drives the crawl and a bounded pool of file workers.

pub mod decide;
pub mod emulate;
pub mod facts;
pub mod journal;
pub mod openfiles;
pub mod preflight;
pub mod report;
pub mod run;
pub mod walk;
pub mod xattrs;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::store::Location;
use crate::store::s3::S3Options;
use crate::transfer::Transfer;
use decide::Budget;
pub use emulate::Emulator;
pub use report::Report;
pub use run::Planned;
use run::{Ctx, Outcome};
use walk::Item;
pub use xattrs::XattrNs;

/// Where the bucketid comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `--volume VOL`: read the volume's cloudsync options with `gluster volume get`.
    Volume(String),
    /// `--bucketid ID`: the volume's `features.s3plugin-bucketid`, given by hand.
    BucketId(String),
}

/// A validated `archive` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveOptions {
    /// The brick directory.
    pub brick: PathBuf,
    /// A FUSE mount of the whole volume.
    pub mount: PathBuf,
    /// Both mtime and ctime must be older than this.
    pub older_than: Duration,
    /// Where the bucketid comes from.
    pub target: Target,
    /// Look, HEAD, report; upload and mark nothing.
    pub dry_run: bool,
    /// Attempt at most this many files.
    pub max_files: Option<u64>,
    /// Attempt at most this many bytes.
    pub max_bytes: Option<u64>,
    /// The journal (default `<state_dir>/archive/<brick-hash>.jsonl`).
    pub journal: Option<PathBuf>,
    /// Read every object back after the upload.
    pub verify_read: bool,
    /// Archive sparse files too.
    pub allow_sparse: bool,
    /// Tests: Gluster's xattrs under `user.` instead of `trusted.`.
    pub xattr_ns: XattrNs,
    /// Tests: the cloudsync emulator instead of a Gluster mount.
    pub emulate: Option<Emulator>,
    /// Tests: pause after the upload until this file, created then, is removed.
    pub pause_after_upload: Option<PathBuf>,
}

/// What a run talks to.
#[derive(Debug)]
pub struct Env {
    /// The engine: uploads, checks and copies all go through it.
    pub transfer: Transfer,
    /// The store's location.
    pub location: Location,
    /// The S3 settings (storage class and encryption are checked).
    pub s3: S3Options,
    /// barmans3's state directory (lock and default journal under `archive/`).
    pub state_dir: PathBuf,
}

/// The bounded queue between the crawl and the workers.
const CRAWL_AHEAD: usize = 64;

/// Runs `archive`. `on_plan` receives each file a dry run would archive.
pub async fn archive(
    opts: ArchiveOptions,
    env: Env,
    on_plan: impl FnMut(&Planned) -> Result<()>,
) -> Result<Report> {
    let brick = root_dir("BRICK", &opts.brick)?;
    let mount = root_dir("--mount", &opts.mount)?;
    let bucketid = check_setup(&opts, &env, &brick, &mount).await?;
    let state = env.state_dir.join("archive");
    let name = brick_hash(&brick);
    let (lock, journal) = if opts.dry_run {
        (None, None)
    } else {
        std::fs::create_dir_all(&state)
            .map_err(|e| Error::io(format!("create {}", state.display()), e))?;
        let lock = crate::lockfile::try_lock_file(
            &state.join(format!("{name}.lock")),
            &format!("archive of brick {}", brick.display()),
        )?;
        let path = opts
            .journal
            .clone()
            .unwrap_or_else(|| state.join(format!("{name}.jsonl")));
        (Some(lock), Some(journal::Journal::open(&path)?))
    };
    let ctx = Arc::new(Ctx {
        ns: opts.xattr_ns,
        prefix: env.location.prefix().to_string(),
        t: env.transfer,
        scratch: state,
        open: openfiles::OpenFiles::default(),
        bucketid,
        brick,
        mount,
        journal,
        opts,
    });
    let report = drive(ctx, on_plan).await;
    drop(lock);
    report
}

/// A directory given on the command line, canonical.
fn root_dir(what: &str, p: &Path) -> Result<PathBuf> {
    let c = p.canonicalize().map_err(|e| {
        Error::Usage(format!(
            "{what} {}: {}",
            p.display(),
            crate::error::reason(&e)
        ))
    })?;
    if !c.is_dir() {
        return Err(Error::Usage(format!(
            "{what} {} is not a directory",
            p.display()
        )));
    }
    Ok(c)
}

/// A short stable name for a brick's lock and journal.
fn brick_hash(brick: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    crate::checksum::hex(&crate::checksum::md5(brick.as_os_str().as_bytes()))[..16].to_string()
}

/// The preflight of spec §1.2; returns the bucketid. Every refusal is a configuration error
/// (exit 2): nothing was touched.
async fn check_setup(
    opts: &ArchiveOptions,
    env: &Env,
    brick: &Path,
    mount: &Path,
) -> Result<String> {
    preflight::check_store(&env.s3, &env.location).map_err(Error::Config)?;
    let bucketid = match &opts.target {
        Target::Volume(vol) => {
            let o = preflight::volume_options(vol).await?;
            preflight::check_volume(vol, &o, &env.location).map_err(Error::Config)?
        }
        Target::BucketId(id) if preflight::bucketid_matches(&env.location, id) => id.clone(),
        Target::BucketId(id) => {
            return Err(Error::Config(format!(
                "--bucketid {id:?} does not name this store: it must be {} ({})",
                preflight::expected_bucketid(&env.location),
                env.location
            )));
        }
    };
    let ns = opts.xattr_ns;
    let brick_gfid = xattrs::gfid_of(ns.get(brick, xattrs::GFID)?);
    preflight::check_root("BRICK", brick, brick_gfid)?;
    if !brick.join(".glusterfs").is_dir() {
        return Err(Error::Config(format!(
            "BRICK {} has no .glusterfs directory: give a brick's root directory",
            brick.display()
        )));
    }
    let mount_gfid = preflight::mount_gfid(ns, mount, opts.emulate.is_some())?;
    preflight::check_root("--mount", mount, mount_gfid)?;
    if opts.emulate.is_none() {
        preflight::check_mount(mount, brick)?;
    }
    Ok(bucketid)
}

/// Feeds the crawl's candidates to at most `file_workers` workers, within the budget, and
/// counts every outcome. Stops taking files on a stop outcome, cancellation or the budget;
/// always joins the workers and the crawl before returning.
async fn drive(ctx: Arc<Ctx>, mut on_plan: impl FnMut(&Planned) -> Result<()>) -> Result<Report> {
    let (tx, rx) = mpsc::channel(CRAWL_AHEAD);
    let crawl = {
        let c = ctx.clone();
        tokio::task::spawn_blocking(move || walk::walk(&c, tx))
    };
    let mut rx = Some(rx);
    let mut set: JoinSet<Outcome> = JoinSet::new();
    let mut report = Report::new(ctx.opts.dry_run);
    let mut budget = Budget {
        max_files: ctx.opts.max_files,
        max_bytes: ctx.opts.max_bytes,
        ..Default::default()
    };
    let mut output_error = None;
    // The first file is archived alone: a setup problem that shows only at the mark (Gluster
    // recording another path, or not acting on it) then stops the run after one file.
    let mut proven = false;
    loop {
        let workers = if proven { ctx.t.file_workers() } else { 1 };
        let take = rx.is_some() && set.len() < workers;
        let event = tokio::select! {
            item = next(&mut rx), if take => Event::Item(item),
            Some(done) = set.join_next(), if !set.is_empty() => Event::Done(done),
            else => break,
        };
        let stop = match event {
            Event::Item(None) => true,
            Event::Item(Some(Item::Skip(r))) => {
                report.skip(r);
                false
            }
            Event::Item(Some(Item::Error(msg))) => {
                report.fail(msg);
                false
            }
            Event::Item(Some(Item::Candidate(c))) => {
                let fits = budget.take(c.size);
                if fits {
                    set.spawn(run::archive_file(ctx.clone(), c.rel));
                } else {
                    report.limit_reached = true;
                }
                !fits
            }
            Event::Done(Err(e)) => {
                report.fail(format!("worker failed: {e}"));
                false
            }
            Event::Done(Ok(outcome)) => {
                proven |= matches!(outcome, Outcome::Archived { .. } | Outcome::Planned(_));
                if let Outcome::Planned(p) = &outcome
                    && output_error.is_none()
                    && let Err(e) = on_plan(p)
                {
                    output_error = Some(e);
                }
                report.record(outcome) || output_error.is_some()
            }
        };
        if stop || ctx.t.cancel_flag().is_cancelled() {
            // Dropping the receiver ends the crawl at its next send.
            rx = None;
        }
    }
    report.interrupted |= ctx.t.cancel_flag().is_cancelled();
    crawl
        .await
        .map_err(|e| Error::Failed(format!("crawl failed: {e}")))?;
    match output_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

enum Event {
    Item(Option<Item>),
    Done(std::result::Result<Outcome, tokio::task::JoinError>),
}

/// The next crawl item; never called without a receiver (the branch is disabled then).
async fn next(rx: &mut Option<mpsc::Receiver<Item>>) -> Option<Item> {
    match rx {
        Some(r) => r.recv().await,
        None => None,
    }
}
