//! One file of a sync: decided from the listing, the sync record, the object's metadata or its
//! content ([`decide`] says which), then sent with its stamp in the object's metadata, and sent
//! once more if it changed while it was read.

use std::path::PathBuf;

use super::decide::{self, Compare, Known, Sent, Stored, Verdict};
use super::local::{self, Probe, Stamp, XattrNs};
use crate::error::{Error, Result};
use crate::store::PutOptions;
use crate::transfer::Transfer;

/// One file to compare and maybe send.
#[derive(Debug, Clone)]
pub(super) struct FileJob {
    pub(super) rel: String,
    pub(super) path: PathBuf,
    pub(super) key: String,
    pub(super) stamp: Stamp,
    pub(super) known: Known,
    /// The listed object's ETag (crawl).
    pub(super) etag: Option<String>,
    /// What the sync record holds for this file.
    pub(super) sent: Option<Sent>,
}

/// What became of one file.
#[derive(Debug)]
pub(super) enum Outcome {
    Uploaded {
        key: String,
        bytes: u64,
        sent: Option<Sent>,
    },
    /// With what the record may say about it from now on.
    Unchanged(Option<Sent>),
    WouldUpload {
        key: String,
        bytes: u64,
    },
    /// It is gone (or no longer a regular file) since it was looked at.
    Vanished,
    Failed(String),
}

/// One file: decide from the listing, the object's metadata or its content, then send it.
pub(super) async fn sync_file(
    t: &Transfer,
    job: FileJob,
    compare: Compare,
    dry_run: bool,
    ns: XattrNs,
) -> Result<Outcome> {
    let stored = if t.encrypts() {
        Stored::Sealed
    } else {
        Stored::Plain
    };
    let mut verdict = decide::by_listing(&job.stamp, job.known, stored);
    if verdict == Verdict::Head {
        verdict = decide::by_record(&job.stamp, job.etag.as_deref(), job.sent.as_ref(), compare);
        if verdict == Verdict::Unchanged {
            return Ok(Outcome::Unchanged(job.sent));
        }
    }
    if verdict == Verdict::Head {
        let head = t.head_opt(&job.key).await?;
        verdict = decide::by_metadata(&job.stamp, head.as_ref(), compare, stored);
        // Unchanged by its metadata: the object carries this stamp, as one we sent would.
        if verdict == Verdict::Unchanged {
            let etag = head.as_ref().and_then(|h| h.etag.as_deref());
            return Ok(Outcome::Unchanged(Sent::new(&job.stamp, etag)));
        }
    }
    if verdict == Verdict::CompareContent {
        verdict = match compare_content(t, &job).await {
            Ok(v) => v,
            Err(e @ Error::Io { .. }) => return Ok(Outcome::Failed(e.one_line())),
            Err(e) => return Err(e),
        };
    }
    match verdict {
        // Same content, but the object does not carry the stamp: not for the record.
        Verdict::Unchanged => Ok(Outcome::Unchanged(None)),
        _ if dry_run => Ok(Outcome::WouldUpload {
            key: job.key,
            bytes: job.stamp.size,
        }),
        _ => upload_stable(t, job, ns).await,
    }
}

/// Whether the object holds the file's bytes ([`Verdict::Unchanged`]) or not
/// ([`Verdict::Upload`]). An encrypted object is opened and its plaintext compared; one that
/// does not open (altered, or sealed to keys this host no longer holds) is not the file, and a
/// host without identities, which cannot open it, sends the file: sending is always safe.
async fn compare_content(t: &Transfer, job: &FileJob) -> Result<Verdict> {
    if t.encrypts() && !t.opens_sealed() {
        return Ok(Verdict::Upload);
    }
    match t.same_as_local(&job.key, &job.path).await {
        Ok(Some(_)) => Ok(Verdict::Unchanged),
        Ok(None) => Ok(Verdict::Upload),
        Err(Error::Crypt(e)) => {
            tracing::warn!("{e}; {} is sent again", job.path.display());
            Ok(Verdict::Upload)
        }
        Err(e) => Err(e),
    }
}

/// Uploads a file with its stamp in the object's metadata, then checks it did not change
/// meanwhile. The stamp is taken before the read, so an object of a file that changed carries
/// an old mtime and the next run sends it again; here it is sent once more, and a second change
/// is a failure of this file.
pub(super) async fn upload_stable(t: &Transfer, job: FileJob, ns: XattrNs) -> Result<Outcome> {
    let mut before = job.stamp;
    for attempt in 0..2 {
        t.progress().add_work(1, before.size);
        let opts = PutOptions {
            metadata: decide::metadata_for(&before),
            ..Default::default()
        };
        let sent = t.upload_file_with(&job.path, &job.key, None, &opts).await;
        let after = match local::probe(&job.path, ns) {
            Probe::File(s) => s,
            _ => return Ok(Outcome::Vanished),
        };
        if after == before {
            return match sent {
                Ok(up) => Ok(Outcome::Uploaded {
                    sent: Sent::new(&before, up.etag.as_deref()),
                    key: job.key,
                    bytes: up.size,
                }),
                Err(e @ Error::Io { .. }) => Ok(Outcome::Failed(e.one_line())),
                Err(e) => Err(e),
            };
        }
        if attempt == 0 {
            tracing::warn!(
                "{} changed while being uploaded; sending it again",
                job.path.display()
            );
        }
        before = after;
    }
    Ok(Outcome::Failed(format!(
        "{} changed while being uploaded, twice; a later run sends it once it is quiet",
        job.path.display()
    )))
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
