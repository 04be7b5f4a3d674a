//! The crawl of the brick (spec §1.3 step 1): every entry under the brick root on the same
//! filesystem, symlinks never followed, Gluster's own top-level directories (`.glusterfs`,
//! `.trashcan` as glusterfind skips them, and `.shard`) left out, in name order so that a run
//! bounded by `--max-files` is a predictable prefix. Each file is classified by the pure
//! decisions (brick reasons, then coldness and open files through a snapshot) and sent to the
//! run on a bounded channel; the crawl stops when the run hangs up.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tokio::sync::mpsc::Sender;

use super::decide::{Reason, brick_verdict, recallable, snapshot_verdict};
use super::facts;
use super::run::Ctx;

/// Top-level brick directories that hold Gluster's internals, not volume files.
const INTERNAL: [&str; 3] = [".glusterfs", ".trashcan", ".shard"];

/// What the crawl found.
#[derive(Debug)]
pub enum Item {
    /// A file that is never archived now.
    Skip(Reason),
    /// A cold file that passed every check the crawl can make.
    Candidate(Candidate),
    /// An entry that could not be examined.
    Error(String),
}

/// A file to archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Volume path without the leading `/` (checked recallable, so ASCII).
    pub rel: String,
    /// Its size when the crawl saw it.
    pub size: u64,
}

/// Walks the brick until done, cancelled, or the receiver is gone. Blocking.
pub fn walk(ctx: &Ctx, tx: Sender<Item>) {
    let entries = walkdir::WalkDir::new(&ctx.brick)
        .follow_links(false)
        .same_file_system(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            !(e.depth() == 1
                && INTERNAL
                    .iter()
                    .any(|n| e.file_name().as_bytes() == n.as_bytes()))
        });
    for entry in entries {
        if ctx.t.cancel_flag().is_cancelled() {
            return;
        }
        let item = match entry {
            Err(e) => Item::Error(format!("crawl {}: {e}", ctx.brick.display())),
            Ok(e) if e.file_type().is_dir() => continue,
            Ok(e) => match e.path().strip_prefix(&ctx.brick) {
                Ok(rel) => classify(ctx, e.path(), rel),
                Err(_) => continue,
            },
        };
        if tx.blocking_send(item).is_err() {
            return;
        }
    }
}

/// The crawl's verdict on one non-directory entry.
fn classify(ctx: &Ctx, path: &Path, rel: &Path) -> Item {
    let rel_bytes = rel.as_os_str().as_bytes();
    let name_ok = recallable(rel_bytes, &ctx.bucketid);
    let brick = match facts::brick_facts(ctx.ns, path) {
        Ok(f) => f,
        Err(e) if facts::is_gone(&e) => return Item::Skip(Reason::Changed),
        Err(e) => return Item::Error(e.one_line()),
    };
    if let Some(r) = brick_verdict(&brick, name_ok, ctx.opts.allow_sparse) {
        tracing::debug!(path = %rel.display(), reason = r.as_str(), "skipped");
        return Item::Skip(r);
    }
    // recallable() admitted only ASCII bytes.
    let rel = String::from_utf8_lossy(rel_bytes).into_owned();
    let scan = ctx.open.recent();
    let snap = match ctx.snapshot(path, &ctx.mount.join(&rel), &scan) {
        Ok(s) => s,
        Err(e) if facts::is_gone(&e) => return Item::Skip(Reason::Changed),
        Err(e) => return Item::Error(e.one_line()),
    };
    if let Some(r) = snapshot_verdict(&snap, facts::now_ns(), ctx.opts.older_than) {
        tracing::debug!(path = %rel, reason = r.as_str(), "skipped");
        return Item::Skip(r);
    }
    Item::Candidate(Candidate {
        rel,
        size: snap.mnt_size,
    })
}
