//! `sync SRC_DIR KEY_PREFIX`: a directory mirrored into the bucket under
//! `<store prefix>/<KEY_PREFIX>/<relative path>`, from a crawl of SRC_DIR or from a list of
//! changed paths (`--files-from`, glusterfind's change lists).
//!
//! The work is split so that what can lose data is pure and tested by tables ([`decide`]), the
//! list is parsed whole before any request ([`list`]), the local side never follows a link or
//! reads an archived Gluster file ([`local`]), the engine work (listing, HEADs, uploads in
//! parallel, deletions last) is in [`run`], and one file's comparison and upload in [`file`].

pub mod decide;
mod file;
pub mod list;
pub mod local;
pub mod record;
pub mod repair;
mod run;

use std::path::PathBuf;

use serde::Serialize;

pub use decide::Compare;
pub use list::ListFormat;
pub use local::XattrNs;
pub use run::sync;

/// S3's limit on a key's length in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// A validated `sync` command line.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The local directory.
    pub src: PathBuf,
    /// The key prefix under the store's prefix: non-empty, no leading or trailing `/`, no
    /// empty, `.` or `..` segment.
    pub key_prefix: String,
    /// How files are compared with objects.
    pub compare: Compare,
    /// `--delete`, with its limits.
    pub delete: Option<DeleteLimits>,
    /// Decide and report, send nothing.
    pub dry_run: bool,
    /// `--files-from`: the changed paths instead of a crawl.
    pub files_from: Option<FileList>,
    /// Where Gluster's cloudsync marks live.
    pub xattr_ns: XattrNs,
    /// The sync record (path, and the sync it belongs to), when the state directory has one:
    /// a crawl's rerun then decides unchanged files from the listing ([`record`]).
    pub record: Option<(PathBuf, String)>,
}

/// The limits of `--delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteLimits {
    /// Keys one run may delete without `force`.
    pub max_deletes: usize,
    /// `--force`.
    pub force: bool,
}

/// A change list and how to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileList {
    /// The list file.
    pub path: PathBuf,
    /// Its format.
    pub format: ListFormat,
    /// glusterfind's field separator (one space by default).
    pub separator: String,
    /// A listed path missing locally is a warning, not a failure.
    pub allow_missing: bool,
}

/// What a sync did (with `dry_run`: would do). Serialised as the `--json` summary.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SyncReport {
    /// Nothing was sent.
    pub dry_run: bool,
    /// Files uploaded (or to upload).
    pub uploaded: u64,
    /// Their bytes.
    pub uploaded_bytes: u64,
    /// Files the bucket already held.
    pub unchanged: u64,
    /// Keys deleted (or to delete), sorted.
    pub deleted: Vec<String>,
    /// Files whose data Gluster's cloudsync archived: never read.
    pub archived: u64,
    /// Symbolic links: never followed, never uploaded.
    pub symlinks: u64,
    /// Devices, fifos and sockets.
    pub special: u64,
    /// Files that disappeared during a crawl (the next run settles them).
    pub vanished: u64,
    /// Listed paths that do not exist locally.
    pub missing: Vec<String>,
    /// Names glusterfind listed split at their commas or with a mangled last component, found
    /// under their real name and sent ([`repair`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recovered: Vec<String>,
    /// One line per failed path.
    pub failed: Vec<String>,
    /// Why `--delete` deleted nothing, if it refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_refused: Option<String>,
    /// With `dry_run`: the keys that would be uploaded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would_upload: Vec<String>,
}

impl SyncReport {
    /// Whether every path was handled: no failure, and no missing path unless allowed.
    pub fn complete(&self, allow_missing: bool) -> bool {
        self.failed.is_empty()
            && (allow_missing || self.missing.is_empty())
            && self.delete_refused.is_none()
    }

    /// One line for the log.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{}{} uploaded ({}), {} unchanged, {} deleted",
            if self.dry_run { "dry run: " } else { "" },
            self.uploaded,
            crate::units::human_bytes(self.uploaded_bytes),
            self.unchanged,
            self.deleted.len()
        );
        for (n, what) in [
            (self.archived, "archived (not read)"),
            (self.symlinks, "symlinks (not followed)"),
            (self.special, "special files"),
            (self.vanished, "vanished"),
            (self.missing.len() as u64, "missing"),
            (self.failed.len() as u64, "failed"),
        ] {
            if n > 0 {
                s.push_str(&format!(", {n} {what}"));
            }
        }
        s
    }
}
