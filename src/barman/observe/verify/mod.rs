//! `verify` and `verify-wal`: re-read what the bucket holds and check it against our records,
//! so a backup that can no longer be restored is found by a cron job, not during a restore.
//!
//! `verify SERVER [ID…]` reads each complete backup's backup.info and manifest, then every file
//! the manifest lists in full through the engine (size and CRC32C against the manifest;
//! directories and symbolic links live in the manifest alone), and the WAL files from the
//! backup's `begin_wal` to its `end_wal` (each read and checked against the checksum the store
//! keeps with it) and its timeline's history file. `--quick` replaces the reads with one HEAD
//! per file (size, and the stored CRC32C where the object has a full-object one) and a listing
//! for the WALs. `verify-wal SERVER` lists the whole archive and checks, from the oldest
//! backup's first WAL up to the newest segment, that no segment and no history file is missing
//! ([`chain`]), a page of the listing at a time in memory that does not grow with the archive
//! ([`walk`]). Requests: one listing request per 1000 objects, a GET of each history file, and
//! per WAL object **one** request: the HEAD (only it says whether the store keeps a full-object
//! CRC32C with the object, i.e. whether `--read` can verify it; the listing gave presence and
//! size), or with identities configured the GET of its first bytes that authenticates an
//! encrypted object's header (plus the HEAD for a plaintext object among them); with `--read`
//! the object's GET. Every problem becomes one [`Problem`]; a store that stops answering ends
//! the run with an error instead, since nothing can then be said about what was not read.

pub mod chain;
pub mod objects;
pub mod runs;
mod sysid;
mod walk;
mod wals;
pub mod window;

use std::collections::BTreeSet;

use serde::Serialize;

use crate::barman::info::BackupInfo;
use crate::barman::manifest::{Entry, Manifest};
use crate::barman::remote::{INFO, MANIFEST, Remote};
use crate::barman::server::Server;
use crate::barman::ship::fullsync::{RemoteBackup, remote_backups};
use crate::error::Result;
use crate::transfer::{Expect, Transfer, bounded};
use objects::{Job, Outcome, Passed};
pub use objects::{Kind, Problem};
use wals::{chain_jobs, verify_wal};

/// Objects larger than this are read one at a time, each in parallel ranges (the engine's
/// largest range, 16 MiB, or the part size if smaller): a streamed read holds up to
/// `concurrency` ranges in memory, so many large reads at once would hold many times that.
const LARGE: u64 = 16 << 20;

/// What `verify` and `verify-wal` were asked to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyRequest {
    /// `verify SERVER [ID…] [--quick]`.
    Backups {
        /// Barman server.
        server: String,
        /// Backup ids (checked); empty: every complete backup of the server.
        ids: Vec<String>,
        /// HEAD only.
        quick: bool,
        /// Who wrote the bucket.
        layout: crate::barman::remote::BucketLayout,
    },
    /// `verify-wal SERVER [--read]`.
    Wal {
        /// Barman server.
        server: String,
        /// Read every WAL object against its stored checksum (else one HEAD each).
        read: bool,
    },
}

impl VerifyRequest {
    /// The server checked.
    pub fn server(&self) -> &str {
        match self {
            VerifyRequest::Backups { server, .. } | VerifyRequest::Wal { server, .. } => server,
        }
    }

    /// `backups` or `wal`, as the report and the metrics name the check.
    pub fn check(&self) -> &'static str {
        match self {
            VerifyRequest::Backups { .. } => "backups",
            VerifyRequest::Wal { .. } => "wal",
        }
    }
}

/// What a verification found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Server.
    pub server: String,
    /// `backups` or `wal`.
    pub check: &'static str,
    /// HEAD only (`--quick`).
    pub quick: bool,
    /// Backups checked.
    pub backups: Vec<String>,
    /// Objects checked (backup files, and without `--quick` the WAL files of their chains).
    pub objects: u64,
    /// Bytes read back.
    pub bytes_read: u64,
    /// Objects whose CRC32C was compared.
    pub crc32c_checked: u64,
    /// Objects of which only the size could be compared.
    pub size_only: u64,
    /// WAL files found where they were needed.
    pub wals: u64,
    /// WAL objects found by HEAD to carry a full-object CRC32C (a read is verified against it).
    pub stored_crc32c: u64,
    /// `--quick`: encrypted objects whose age header opened and gave the recorded plaintext
    /// size (their chunks are read only without `--quick`).
    pub headers_opened: u64,
    /// WAL segments read whose system identifier could not be compared with their backup's
    /// (encrypted, or a custom compression).
    pub system_unchecked: u64,
    /// `verify-wal`: the span a recovery can actually reach with what is in the bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<window::Window>,
    /// What is wrong, sorted by kind and key.
    pub problems: Vec<Problem>,
    /// `verify-wal`: problems with WAL objects found past the first
    /// [`walk::KEPT_PROBLEMS`], counted and not listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub unlisted: u64,
    /// What the operator should know besides (skipped backups, assumptions).
    pub notes: Vec<String>,
}

impl Report {
    /// An empty report of `check` on `server`.
    pub fn new(server: &str, check: &'static str, quick: bool) -> Self {
        Report {
            server: server.to_string(),
            check,
            quick,
            ..Report::default()
        }
    }

    /// Nothing wrong was found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.unlisted == 0
    }

    /// Problems found, listed or not.
    pub fn problem_count(&self) -> u64 {
        self.problems.len() as u64 + self.unlisted
    }

    fn tally(&mut self, passed: Passed) {
        self.objects += 1;
        match passed {
            Passed::Read { bytes } => {
                self.bytes_read += bytes;
                self.crc32c_checked += 1;
            }
            Passed::ReadSizeOnly { bytes } => {
                self.bytes_read += bytes;
                self.size_only += 1;
            }
            Passed::HeadCrc32c => self.crc32c_checked += 1,
            Passed::HeadSizeOnly => self.size_only += 1,
            Passed::HeadStoredCrc32c => self.stored_crc32c += 1,
            Passed::HeadOpened => self.headers_opened += 1,
            Passed::ReadSystemOpaque { bytes, crc32c } => {
                self.bytes_read += bytes;
                if crc32c {
                    self.crc32c_checked += 1;
                } else {
                    self.size_only += 1;
                }
                self.system_unchecked += 1;
            }
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Runs a verification.
pub async fn verify(t: &Transfer, prefix: &str, req: &VerifyRequest) -> Result<Report> {
    let srv = Server::new(t, prefix, req.server());
    let mut r = match req {
        VerifyRequest::Backups {
            ids,
            quick,
            layout: crate::barman::remote::BucketLayout::BarmanCloud,
            ..
        } => {
            let srv = srv.with_layout(crate::barman::remote::BucketLayout::BarmanCloud);
            crate::barman::cloud::verify::verify(&srv, ids, *quick).await?
        }
        VerifyRequest::Backups { ids, quick, .. } => verify_backups(&srv, ids, *quick).await?,
        VerifyRequest::Wal { read, .. } => verify_wal(&srv, *read).await?,
    };
    r.problems.sort();
    r.problems.dedup();
    Ok(r)
}

async fn verify_backups(srv: &Server, ids: &[String], quick: bool) -> Result<Report> {
    let Server { t, remote, name } = srv;
    let mut r = Report::new(name, "backups", quick);
    let listed = remote_backups(srv).await?;
    let chosen = choose(remote, &listed, ids, &mut r);
    let mut jobs = Vec::new();
    let mut queued = BTreeSet::new();
    for b in chosen {
        let (info, m) = match read_backup(srv, &b.id).await? {
            Ok(x) => x,
            Err(p) => {
                r.problems.push(p);
                continue;
            }
        };
        r.backups.push(b.id.clone());
        jobs.extend(file_jobs(remote, &m, &mut r));
        for j in chain_jobs(srv, &b.id, &info, &mut r).await? {
            if !quick && queued.insert(j.key.clone()) {
                jobs.push(j);
            }
        }
    }
    run_jobs(t, jobs, quick, &mut r).await?;
    if r.system_unchecked > 0 {
        r.notes.push(format!(
            "{} WAL segment(s) are stored encrypted or with a custom compression: their system identifier was not compared with their backup's",
            r.system_unchecked
        ));
    }
    if quick && r.size_only > 0 {
        r.notes.push(format!(
            "{} object(s) carry no full-object CRC32C (multipart uploads, or written without one): only their size was compared; run without --quick to read them",
            r.size_only
        ));
    }
    Ok(r)
}

/// The backups to check: the ids asked for, or every complete one. An id that is not complete
/// in the bucket, an incremental backup whose parent is not, and a server without any complete
/// backup are problems; incomplete backups nobody asked for are notes (an upload may be under
/// way).
fn choose<'a>(
    remote: &Remote,
    listed: &'a [RemoteBackup],
    ids: &[String],
    r: &mut Report,
) -> Vec<&'a RemoteBackup> {
    let incomplete = |id: &str, detail: &str| Problem {
        kind: Kind::Incomplete,
        key: remote.backup_prefix(id),
        backup: Some(id.to_string()),
        detail: detail.to_string(),
    };
    let mut chosen: Vec<&RemoteBackup> = Vec::new();
    if ids.is_empty() {
        for b in listed {
            if b.complete {
                chosen.push(b);
            } else {
                r.notes.push(format!(
                    "backup {} is not complete in the bucket (an upload under way or interrupted; base-sync completes it): not checked",
                    b.id
                ));
            }
        }
        if chosen.is_empty() {
            r.problems.push(Problem {
                kind: Kind::Incomplete,
                key: remote.base_prefix(),
                backup: None,
                detail: "no complete backup of this server in the bucket".into(),
            });
        }
    }
    for id in ids {
        match listed.iter().find(|b| &b.id == id) {
            None => r
                .problems
                .push(incomplete(id, "the backup is not in the bucket")),
            Some(b) if !b.complete => r.problems.push(incomplete(
                id,
                "backup.info or barmans3.manifest is missing: the upload did not finish (base-sync completes it)",
            )),
            Some(b) if !chosen.iter().any(|c| c.id == b.id) => chosen.push(b),
            Some(_) => {}
        }
    }
    for b in &chosen {
        if let Some(p) = &b.parent
            && !listed.iter().any(|x| &x.id == p && x.complete)
        {
            r.problems.push(incomplete(
                p,
                &format!(
                    "parent of incremental backup {} is not complete in the bucket: that backup cannot be restored",
                    b.id
                ),
            ));
        }
    }
    chosen
}

/// Downloads a small object of backup `id` (verified against its stored checksum); a failure
/// that is a problem comes back as one.
async fn fetch(
    srv: &Server,
    id: &str,
    name: &str,
) -> Result<std::result::Result<Vec<u8>, Problem>> {
    let job = Job {
        key: srv.remote.backup_key(id, name),
        backup: Some(id.to_string()),
        record: None,
        system: None,
    };
    let mut buf = Vec::new();
    match srv
        .t
        .download_to(&job.key, &mut buf, Expect::default())
        .await
    {
        Ok(_) => Ok(Ok(buf)),
        Err(e) => objects::classify(&job, e).map(Err),
    }
}

/// Reads a backup's backup.info.
pub(super) async fn read_info(
    srv: &Server,
    id: &str,
) -> Result<std::result::Result<BackupInfo, Problem>> {
    Ok(fetch(srv, id, INFO)
        .await?
        .map(|b| BackupInfo::parse(&String::from_utf8_lossy(&b))))
}

/// Reads a backup's backup.info and manifest.
async fn read_backup(
    srv: &Server,
    id: &str,
) -> Result<std::result::Result<(BackupInfo, Manifest), Problem>> {
    let info = match read_info(srv, id).await? {
        Ok(i) => i,
        Err(p) => return Ok(Err(p)),
    };
    let bytes = match fetch(srv, id, MANIFEST).await? {
        Ok(b) => b,
        Err(p) => return Ok(Err(p)),
    };
    let key = srv.remote.backup_key(id, MANIFEST);
    let bad = |detail: String| Problem {
        kind: Kind::Manifest,
        key: key.clone(),
        backup: Some(id.to_string()),
        detail,
    };
    Ok(match Manifest::parse(&bytes, &key) {
        Ok(m) if m.backup_id == id => Ok((info, m)),
        Ok(m) => Err(bad(format!("describes backup {}", m.backup_id))),
        Err(e) => Err(bad(e.one_line())),
    })
}

/// One job per file of the manifest; an entry without a readable CRC32C is a problem.
fn file_jobs(remote: &Remote, m: &Manifest, r: &mut Report) -> Vec<Job> {
    let mut jobs = Vec::new();
    for e in &m.entries {
        let Entry::File {
            path, size, crc32c, ..
        } = e
        else {
            continue;
        };
        let key = remote.backup_key(&m.backup_id, path);
        match u32::from_str_radix(crc32c, 16) {
            Ok(crc) if crc32c.len() == 8 => jobs.push(Job {
                key,
                backup: Some(m.backup_id.clone()),
                record: Some((*size, crc)),
                system: None,
            }),
            _ => r.problems.push(Problem {
                kind: Kind::Manifest,
                key,
                backup: Some(m.backup_id.clone()),
                detail: format!("the manifest's CRC32C {crc32c:?} is not 8 hex digits"),
            }),
        }
    }
    jobs
}

/// Checks every job: full reads (large objects one at a time, each in parallel ranges; the
/// rest `file_workers` at once) or HEADs with `quick`.
pub(super) async fn run_jobs(
    t: &Transfer,
    jobs: Vec<Job>,
    quick: bool,
    r: &mut Report,
) -> Result<()> {
    let large = t.config().part_size.min(LARGE);
    let (big, small): (Vec<Job>, Vec<Job>) = jobs
        .into_iter()
        .partition(|j| !quick && j.record.is_some_and(|(s, _)| s > large));
    if !quick {
        let bytes = big
            .iter()
            .chain(&small)
            .filter_map(|j| j.record)
            .map(|(s, _)| s);
        t.progress()
            .add_work((big.len() + small.len()) as u64, bytes.sum());
    }
    let check = |job: Job| {
        let t = t.clone();
        async move {
            let outcome: Outcome = if quick {
                objects::head(&t, &job).await?
            } else {
                objects::read(&t, &job).await?
            };
            Ok(outcome)
        }
    };
    let (a, b) = tokio::join!(
        bounded(big, 1, check),
        bounded(small, t.file_workers(), check)
    );
    for outcome in a?.into_iter().chain(b?) {
        match outcome {
            Ok(p) => r.tally(p),
            Err(p) => {
                r.objects += 1;
                r.problems.push(p);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(id: &str, complete: bool, parent: Option<&str>) -> RemoteBackup {
        RemoteBackup::sketch(id, "DONE", complete, parent)
    }

    fn run(listed: &[RemoteBackup], ids: &[&str]) -> (Vec<String>, Vec<String>, usize) {
        let mut r = Report::default();
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        let chosen = choose(&Remote::new("p", "pg"), listed, &ids, &mut r);
        let problems = r.problems.iter().map(|p| p.to_string()).collect();
        (
            chosen.iter().map(|b| b.id.clone()).collect(),
            problems,
            r.notes.len(),
        )
    }

    #[test]
    fn which_backups_are_checked_and_what_is_a_problem() {
        let (a, b, c) = ("20260101T000000", "20260102T000000", "20260103T000000");
        let listed = [
            backup(a, true, None),
            backup(b, false, None),
            backup(c, true, Some(b)),
        ];
        // Every complete one; the incomplete one is a note (an upload may be under way), but an
        // incremental backup whose parent is incomplete cannot be restored: a problem.
        let (chosen, problems, notes) = run(&listed, &[]);
        assert_eq!(chosen, [a, c]);
        assert_eq!(notes, 1);
        assert_eq!(
            problems,
            [format!(
                "incomplete p/pg/base/{b}/: parent of incremental backup {c} is not complete in the bucket: that backup cannot be restored"
            )]
        );
        // Asked for by id: an incomplete or absent backup is a problem; a repeat is checked once.
        let (chosen, problems, notes) = run(&listed, &[a, a, b, "20991231T000000"]);
        assert_eq!(chosen, [a]);
        assert_eq!(notes, 0);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with(&format!("incomplete p/pg/base/{b}/: backup.info")));
        assert!(problems[1].ends_with("the backup is not in the bucket"));
        // Nothing complete at all: a problem, never a silent success.
        let (chosen, problems, _) = run(&[backup(b, false, None)], &[]);
        assert!(chosen.is_empty());
        assert_eq!(
            problems,
            ["incomplete p/pg/base/: no complete backup of this server in the bucket"]
        );
    }
}
