//! One file through spec §1.3, steps 2 to 9, in order: snapshot S0, the rule for what is at
//! the key, upload through the mount with the file's identity in the object's metadata, verify,
//! snapshot S1, mark through the mount, confirm on the brick, journal. Every decision is one of
//! [`super::decide`]'s pure functions; this module gathers facts and acts on the answers.
//!
//! A file is marked only when the object holds exactly the bytes S0 described and S1 equals
//! S0. Whatever happens before the mark leaves the file as it was (the object, if any, carries
//! the file's gfid, so the next run reuses or overwrites it); after the mark, posix's own check
//! of the mtime refuses a file written since S0.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ArchiveOptions;
use super::decide::{
    self, Confirmed, KeyRule, Reason, Snapshot, brick_verdict, changed, head_mismatch, key_rule,
    object_metadata, recallable, reusable, snapshot_verdict,
};
use super::facts;
use super::journal::{Entry, Journal};
use super::openfiles::{OpenFiles, Scan};
use super::xattrs::{self, XattrNs};
use crate::checksum;
use crate::error::{Error, Result};
use crate::store::{PutOptions, join_key};
use crate::transfer::CopyExpect;
use crate::transfer::{Expect, Transfer};

/// How often the check before the mark looks again at a file that seemed open: a FUSE mount
/// releases the brick fd of our own read asynchronously, shortly after we close it.
const OPEN_RECHECKS: u32 = 5;
const OPEN_RECHECK_DELAY: Duration = Duration::from_millis(200);

/// Everything a run shares between the crawl and the workers.
#[derive(Debug)]
pub struct Ctx {
    /// The validated command line.
    pub opts: ArchiveOptions,
    /// The brick root, canonical.
    pub brick: PathBuf,
    /// The mount root, canonical.
    pub mount: PathBuf,
    /// Where Gluster's xattrs live.
    pub ns: XattrNs,
    /// The S3 plugin's bucketid (`bucket[/prefix]`).
    pub bucketid: String,
    /// The store's key prefix.
    pub prefix: String,
    /// The engine: every request of the run, copies included.
    pub t: Transfer,
    /// `<state_dir>/archive`: where an object copied through this host waits.
    pub scratch: PathBuf,
    /// Open-file scans.
    pub open: OpenFiles,
    /// The journal (none in a dry run).
    pub journal: Option<Journal>,
}

impl Ctx {
    /// A snapshot of the file at `brick` and `mnt` (blocking).
    pub fn snapshot(&self, brick: &Path, mnt: &Path, open: &Scan) -> Result<Snapshot> {
        facts::snapshot(self.ns, brick, mnt, open, self.opts.emulate.is_some())
    }
}

/// What became of one file.
#[derive(Debug)]
pub enum Outcome {
    /// Archived (truncated by Gluster, object verified, journaled).
    Archived {
        /// Bytes.
        bytes: u64,
        /// The object of an earlier, unmarked run was reused.
        reused: bool,
    },
    /// Dry run: would be archived.
    Planned(Planned),
    /// Not archived, for a reason of §1.4.
    Skipped(Reason),
    /// This file failed; the run goes on.
    Failed(Error),
    /// The run must stop (the store is failing, Gluster did not act on a mark as expected, or
    /// posix recorded another path). `archived` says whether the file itself was archived.
    Stop {
        /// The file was archived anyway.
        archived: Option<u64>,
        /// Why.
        error: Error,
    },
}

/// A file a dry run would archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Volume path, with the leading `/`.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// The key it would be uploaded to.
    pub key: String,
}

/// One file's paths.
#[derive(Debug, Clone)]
struct Paths {
    rel: String,
    brick: PathBuf,
    mnt: PathBuf,
    key: String,
}

async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Failed(format!("worker failed: {e}")))?
}

/// Runs steps 2 to 9 for the file at volume path `rel`.
pub async fn archive_file(ctx: Arc<Ctx>, rel: String) -> Outcome {
    let p = Paths {
        brick: ctx.brick.join(&rel),
        mnt: ctx.mount.join(&rel),
        key: join_key(&ctx.prefix, &rel),
        rel,
    };
    match steps(&ctx, &p).await {
        Ok(o) => o,
        Err(e) if facts::is_gone(&e) => Outcome::Skipped(Reason::Changed),
        Err(e @ (Error::Store(_) | Error::Interrupted)) => Outcome::Stop {
            archived: None,
            error: e,
        },
        Err(e) => Outcome::Failed(e),
    }
}

async fn steps(ctx: &Arc<Ctx>, p: &Paths) -> Result<Outcome> {
    // Step 2: S0, taken now rather than when the crawl passed, with every check again.
    let s0 = match s0(ctx, p).await? {
        Ok(s) => s,
        Err(r) => return Ok(Outcome::Skipped(r)),
    };
    // Step 3: what is at the key.
    let head = ctx.t.head_opt(&p.key).await?;
    let rule = key_rule(head.as_ref(), &s0.gfid);
    if rule == KeyRule::InUse {
        tracing::error!(
            path = %p.rel, key = %p.key,
            "key-in-use: another object is at the key; it is left alone and the file is not archived (an archived file renamed or deleted may still recall from it)"
        );
        return Ok(Outcome::Skipped(Reason::KeyInUse));
    }
    if ctx.opts.dry_run {
        return Ok(Outcome::Planned(Planned {
            path: format!("/{}", p.rel),
            size: s0.mnt_size,
            key: p.key.clone(),
        }));
    }
    let (crc, reused) = match (rule, head) {
        (KeyRule::Ours, Some(h)) => {
            // Read the file only when the object's record describes S0's file.
            let recorded = h.metadata.get(decide::meta::CRC32C);
            let same = match recorded.and_then(|c| checksum::parse_crc32c_header(c)) {
                Some(c) if reusable(&h, &s0, Some(c)) => {
                    ctx.t.same_as_local(&p.key, &p.mnt).await?
                }
                _ => None,
            };
            if reusable(&h, &s0, same) {
                (same, true)
            } else {
                (upload(ctx, p, &s0).await?, false)
            }
        }
        _ => (upload(ctx, p, &s0).await?, false),
    };
    let Some(crc) = crc else {
        return Ok(Outcome::Skipped(Reason::Changed));
    };
    // Step 5.
    verify(ctx, &p.key, &s0, crc).await?;
    pause_for_tests(ctx).await?;
    mark_and_confirm(ctx, p, &s0, crc, reused).await
}

/// Step 2: the snapshot, and the §1.4 verdicts on it.
async fn s0(ctx: &Arc<Ctx>, p: &Paths) -> Result<std::result::Result<Snapshot, Reason>> {
    let c = ctx.clone();
    let p = p.clone();
    blocking(move || {
        let f = facts::brick_facts(c.ns, &p.brick)?;
        let name_ok = recallable(p.rel.as_bytes(), &c.bucketid);
        if let Some(r) = brick_verdict(&f, name_ok, c.opts.allow_sparse) {
            return Ok(Err(r));
        }
        let s = c.snapshot(&p.brick, &p.mnt, &c.open.recent())?;
        Ok(
            match snapshot_verdict(&s, facts::now_ns(), c.opts.older_than) {
                Some(r) => Err(r),
                None => Ok(s),
            },
        )
    })
    .await
}

/// Step 4: reads the file once for its CRC32C (the object's metadata carries it, so it must
/// be known before the upload), then uploads it through the mount. `None` when the bytes
/// read or sent are not the file S0 described.
async fn upload(ctx: &Arc<Ctx>, p: &Paths, s0: &Snapshot) -> Result<Option<u32>> {
    let mnt = p.mnt.clone();
    let (crc, len) = blocking(move || crc_of(&mnt)).await?;
    if len != s0.mnt_size || len != s0.brick_size {
        return Ok(None);
    }
    let opts = PutOptions {
        metadata: object_metadata(s0, crc),
        ..Default::default()
    };
    ctx.t.progress().add_work(1, len);
    let up = match ctx.t.upload_file_with(&p.mnt, &p.key, None, &opts).await {
        Ok(up) => up,
        // A file that shrank under the engine's reads is a change, not a failure.
        Err(e) if size_now(&p.mnt) != Some(s0.mnt_size) => {
            tracing::info!(path = %p.rel, error = %e.one_line(), "changed during the upload");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    Ok((up.size == len && up.crc32c == crc).then_some(crc))
}

fn size_now(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path).ok().map(|m| m.len())
}

/// CRC32C and length of a file, read once.
fn crc_of(path: &Path) -> Result<(u32, u64)> {
    let f =
        std::fs::File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    checksum::crc32c_of_file(&f).map_err(|e| Error::io(format!("read {}", path.display()), e))
}

/// Step 5: HEAD the object; with `--verify-read`, read it whole and compare its CRC32C.
async fn verify(ctx: &Ctx, key: &str, s0: &Snapshot, crc: u32) -> Result<()> {
    let h = ctx.t.head(key).await?;
    if let Some(what) = head_mismatch(&h, s0, crc) {
        return Err(Error::Checksum {
            key: key.into(),
            expected: "the object just uploaded".into(),
            actual: what,
        });
    }
    if ctx.opts.verify_read {
        let expect = Expect {
            size: Some(s0.mnt_size),
            crc32c: Some(crc),
        };
        ctx.t
            .download_to(key, &mut tokio::io::sink(), expect)
            .await?;
    }
    Ok(())
}

/// The tests' hook between upload and mark: create the named file, wait until it is gone.
async fn pause_for_tests(ctx: &Ctx) -> Result<()> {
    let Some(flag) = ctx.opts.pause_after_upload.clone() else {
        return Ok(());
    };
    std::fs::write(&flag, b"").map_err(|e| Error::io(format!("create {}", flag.display()), e))?;
    while flag.exists() {
        if ctx.t.cancel_flag().is_cancelled() {
            return Err(Error::Interrupted);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Steps 6 to 9.
async fn mark_and_confirm(
    ctx: &Arc<Ctx>,
    p: &Paths,
    s0: &Snapshot,
    crc: u32,
    reused: bool,
) -> Result<Outcome> {
    let (c, q, s) = (ctx.clone(), p.clone(), *s0);
    let marked = blocking(move || mark(&c, &q, &s)).await?;
    if let Some(why) = marked {
        tracing::info!(path = %p.rel, why, "changed before the mark; left as it was");
        return Ok(Outcome::Skipped(Reason::Changed));
    }
    let (c, q) = (ctx.clone(), p.clone());
    let after = blocking(move || -> Result<_> {
        let size = std::fs::symlink_metadata(&q.brick)
            .map_err(|e| Error::io(format!("stat {}", q.brick.display()), e))?
            .len();
        let remote = c.ns.get_text(&q.brick, xattrs::CS_REMOTE)?;
        let object_size = c.ns.get_text(&q.brick, xattrs::CS_OBJECT_SIZE)?;
        Ok((size, remote, object_size))
    })
    .await?;
    let (size, remote, object_size) = after;
    match decide::confirm(
        &p.rel,
        s0.mnt_size,
        size,
        remote.as_deref(),
        object_size.as_deref(),
    ) {
        Confirmed::Archived => {}
        Confirmed::RemoteDiffers(other) => {
            let copied = copy_to_recorded(ctx, p, s0, crc, &other).await;
            if let Ok(dst) = &copied {
                journal(ctx, p, s0, crc, dst).await?;
            }
            return Ok(Outcome::Stop {
                archived: Some(s0.mnt_size),
                error: remote_differs(p, &other, &copied),
            });
        }
        Confirmed::NotArchived(why) => {
            return Ok(Outcome::Stop {
                archived: None,
                error: Error::Failed(format!("/{}: {why}", p.rel)),
            });
        }
    }
    journal(ctx, p, s0, crc, &p.key).await?;
    tracing::info!(path = %p.rel, key = %p.key, size = s0.mnt_size, reused, "archived");
    Ok(Outcome::Archived {
        bytes: s0.mnt_size,
        reused,
    })
}

/// Steps 6 and 7: S1 must equal S0, then the mark with S0's mtime seconds. Returns why the
/// file was not marked, or `None` once posix took the mark. Blocking.
fn mark(ctx: &Ctx, p: &Paths, s0: &Snapshot) -> Result<Option<&'static str>> {
    let mut since = Instant::now();
    let mut s1 = ctx.snapshot(&p.brick, &p.mnt, &ctx.open.since(since))?;
    for _ in 1..OPEN_RECHECKS {
        if !s1.open {
            break;
        }
        std::thread::sleep(OPEN_RECHECK_DELAY);
        since = Instant::now();
        s1 = ctx.snapshot(&p.brick, &p.mnt, &ctx.open.since(since))?;
    }
    if let Some(what) = changed(s0, &s1) {
        return Ok(Some(what));
    }
    // Decimal ASCII, no NUL: posix compares strlen(value) bytes of the current mtime string.
    let value = s0.mtime_secs().to_string();
    let result = match &ctx.opts.emulate {
        Some(emu) => emu.mark(&p.brick, &p.rel, &value),
        None => ctx.ns.set(&p.mnt, xattrs::CSOU_COMPLETE, value.as_bytes()),
    };
    match result {
        Ok(()) => Ok(None),
        // posix: not LOCAL any more, or an mtime later than S0's.
        Err(e) if e.raw_os_error() == Some(22) => Ok(Some("posix refused the mark (EINVAL)")),
        Err(e) => Err(Error::io(
            format!("set {} on {}", xattrs::CSOU_COMPLETE, p.mnt.display()),
            e,
        )),
    }
}

/// Step 8's repair: posix recorded `remote` instead of our path, so the file now recalls from
/// `<bucketid>/<remote>`. Copies the object there (never over another file's object) and
/// verifies it; returns the new key.
async fn copy_to_recorded(
    ctx: &Ctx,
    p: &Paths,
    s0: &Snapshot,
    crc: u32,
    remote: &str,
) -> Result<String> {
    let dst = join_key(&ctx.prefix, remote);
    if let Some(h) = ctx.t.head_opt(&dst).await?
        && key_rule(Some(&h), &s0.gfid) == KeyRule::InUse
    {
        return Err(Error::Failed(format!(
            "{dst} holds another object, left alone; the file recalls from it until fixed by hand (its data is in {})",
            p.key
        )));
    }
    let opts = PutOptions {
        metadata: object_metadata(s0, crc),
        ..Default::default()
    };
    let expect = CopyExpect {
        size: s0.mnt_size,
        crc32c: crc,
        ciphertext: None,
    };
    match ctx.t.copy_object(&p.key, &dst, expect, opts.clone()).await {
        Ok(()) => {}
        Err(Error::Interrupted) => return Err(Error::Interrupted),
        Err(e) => {
            tracing::warn!(
                src = %p.key, dst = %dst, error = %e.one_line(),
                "no verified server-side copy; the object goes through this host"
            );
            relay(ctx, &p.key, &dst, expect, &opts).await?;
        }
    }
    verify(ctx, &dst, s0, crc).await?;
    Ok(dst)
}

/// A copy through this host, for stores that cannot make one we can verify: the object is
/// downloaded (verified against `expect`) into a temporary file in the state directory, then
/// uploaded from it. The file's own data is no longer on the brick, so the object is the
/// only source.
async fn relay(
    ctx: &Ctx,
    src: &str,
    dst: &str,
    expect: CopyExpect,
    opts: &PutOptions,
) -> Result<()> {
    let name = checksum::hex(&checksum::md5(dst.as_bytes()));
    let tmp = ctx.scratch.join(format!("relay-{}", &name[..16]));
    let want = Expect {
        size: Some(expect.size),
        crc32c: Some(expect.crc32c),
    };
    let sent = match ctx.t.download_file(src, &tmp, want).await {
        Ok(_) => ctx.t.upload_file_with(&tmp, dst, None, opts).await,
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&tmp);
    let up = sent?;
    if up.size != expect.size || up.crc32c != expect.crc32c {
        return Err(Error::Checksum {
            key: dst.into(),
            expected: checksum::crc32c_header(expect.crc32c),
            actual: checksum::crc32c_header(up.crc32c),
        });
    }
    Ok(())
}

/// The error that stops the run after posix recorded `remote` for file `p`, with what the
/// copy achieved.
fn remote_differs(p: &Paths, remote: &str, copied: &Result<String>) -> Error {
    let what = format!(
        "/{}: Gluster recorded cs.remote {remote:?} instead of {:?} (was the file renamed while it was marked?)",
        p.rel, p.rel
    );
    match copied {
        Ok(dst) => Error::Failed(format!(
            "{what}; the object was copied to {dst} and verified, so the file recalls from there"
        )),
        Err(e) => Error::Failed(format!(
            "{what}; copying the object there failed, so the file cannot be recalled until it is copied by hand: {}",
            e.one_line()
        )),
    }
}

/// Step 9: the journal line, fsynced, for the object at `key`.
async fn journal(ctx: &Arc<Ctx>, p: &Paths, s0: &Snapshot, crc: u32, key: &str) -> Result<()> {
    let entry = Entry {
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        path: format!("/{}", p.rel),
        gfid: decide::gfid_string(&s0.gfid),
        size: s0.mnt_size,
        mtime: decide::mtime_string(s0.mtime_ns),
        key: key.to_string(),
        crc32c: checksum::crc32c_header(crc),
    };
    let c = ctx.clone();
    blocking(move || match &c.journal {
        Some(j) => j.append(&entry),
        None => Ok(()),
    })
    .await
}
