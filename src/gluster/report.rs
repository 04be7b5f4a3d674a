//! The summary of an `archive` run: what was archived, what each §1.4 reason skipped, what
//! failed, and the exit status that follows from it.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::decide::Reason;
use super::run::Outcome;
use crate::error::Exit;
use crate::units::human_bytes;

/// How many error messages the summary keeps (all are logged as they happen).
const KEPT_ERRORS: usize = 20;

/// The run summary (`--json` prints it, with the request counts).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    /// A dry run: nothing was uploaded or marked.
    pub dry_run: bool,
    /// Files archived (uploaded or reused, verified, marked, confirmed, journaled).
    pub archived: u64,
    /// Their bytes.
    pub archived_bytes: u64,
    /// Of those, files whose object from an earlier unmarked run was reused.
    pub reused: u64,
    /// Dry run: files that would be archived.
    pub would_archive: u64,
    /// Dry run: their bytes.
    pub would_archive_bytes: u64,
    /// Files not archived, by reason; every reason is listed.
    pub skipped: BTreeMap<&'static str, u64>,
    /// Files that failed (each is named in the log).
    pub failed: u64,
    /// `--max-files` or `--max-bytes` ended the run early.
    pub limit_reached: bool,
    /// SIGINT or SIGTERM ended the run early.
    pub interrupted: bool,
    /// Why the run stopped early, when it did.
    pub stopped: Option<String>,
    /// The first error messages.
    pub errors: Vec<String>,
}

impl Report {
    /// An empty report.
    pub fn new(dry_run: bool) -> Self {
        Report {
            dry_run,
            archived: 0,
            archived_bytes: 0,
            reused: 0,
            would_archive: 0,
            would_archive_bytes: 0,
            skipped: Reason::ALL.iter().map(|r| (r.as_str(), 0)).collect(),
            failed: 0,
            limit_reached: false,
            interrupted: false,
            stopped: None,
            errors: Vec::new(),
        }
    }

    /// Counts a skip.
    pub fn skip(&mut self, r: Reason) {
        *self.skipped.entry(r.as_str()).or_default() += 1;
    }

    /// Counts a failure.
    pub fn fail(&mut self, msg: String) {
        tracing::error!("{msg}");
        self.failed += 1;
        if self.errors.len() < KEPT_ERRORS {
            self.errors.push(msg);
        }
    }

    /// Counts one file's outcome; `true` when the run must stop.
    pub fn record(&mut self, o: Outcome) -> bool {
        match o {
            Outcome::Archived { bytes, reused } => self.archived_one(bytes, reused),
            Outcome::Planned(p) => {
                self.would_archive += 1;
                self.would_archive_bytes += p.size;
            }
            Outcome::Skipped(r) => self.skip(r),
            Outcome::Failed(e) => self.fail(e.one_line()),
            Outcome::Stop { archived, error } => {
                if let Some(bytes) = archived {
                    self.archived_one(bytes, false);
                }
                match error {
                    crate::error::Error::Interrupted => self.interrupted = true,
                    e => {
                        self.stopped.get_or_insert_with(|| e.one_line());
                        self.fail(e.one_line());
                    }
                }
                return true;
            }
        }
        false
    }

    fn archived_one(&mut self, bytes: u64, reused: bool) {
        self.archived += 1;
        self.archived_bytes += bytes;
        self.reused += u64::from(reused);
    }

    fn count(&self, r: Reason) -> u64 {
        self.skipped.get(r.as_str()).copied().unwrap_or(0)
    }

    /// 130 when interrupted; 1 when a file failed, the run stopped, or a key was in use
    /// (refusing is right, but someone must look); else 0. Files skipped for any other
    /// reason are the normal course of a run.
    pub fn exit(&self) -> Exit {
        if self.interrupted {
            Exit::Interrupted
        } else if self.failed > 0 || self.stopped.is_some() || self.count(Reason::KeyInUse) > 0 {
            Exit::Failed
        } else {
            Exit::Success
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            write!(
                f,
                "would archive {} files ({})",
                self.would_archive,
                human_bytes(self.would_archive_bytes)
            )?;
        } else {
            write!(
                f,
                "archived {} files ({}), {} reusing an earlier upload",
                self.archived,
                human_bytes(self.archived_bytes),
                self.reused
            )?;
        }
        let skipped: Vec<String> = self
            .skipped
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        if !skipped.is_empty() {
            write!(f, "; skipped: {}", skipped.join(", "))?;
        }
        write!(f, "; failed {}", self.failed)?;
        if self.limit_reached {
            f.write_str("; stopped at the --max-files/--max-bytes limit")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn exit_status_follows_what_happened() {
        let mut r = Report::new(false);
        r.record(Outcome::Skipped(Reason::Open));
        r.record(Outcome::Skipped(Reason::Changed));
        r.record(Outcome::Archived {
            bytes: 5,
            reused: true,
        });
        assert_eq!(r.exit(), Exit::Success);
        assert_eq!(r.skipped["open"], 1);
        assert_eq!(r.skipped["too-young"], 0, "every reason is listed");
        assert_eq!((r.archived, r.archived_bytes, r.reused), (1, 5, 1));

        let mut k = Report::new(false);
        k.record(Outcome::Skipped(Reason::KeyInUse));
        assert_eq!(k.exit(), Exit::Failed);

        let mut s = Report::new(false);
        let stop = s.record(Outcome::Stop {
            archived: Some(3),
            error: Error::Failed("cs.remote differs".into()),
        });
        assert!(stop);
        assert_eq!((s.archived, s.exit()), (1, Exit::Failed));

        let mut i = Report::new(false);
        assert!(i.record(Outcome::Stop {
            archived: None,
            error: Error::Interrupted
        }));
        assert_eq!(i.exit(), Exit::Interrupted);
        assert!(i.to_string().contains("archived 0 files"));
    }
}
