//! The `sync` command line and its validation into [`SyncOptions`]. The change list itself is
//! data, read and validated by the library before the first request.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::error::{Error, Result};
use crate::filesync::{Compare, DeleteLimits, FileList, ListFormat, SyncOptions, XattrNs};

/// Sync a directory to the bucket, from a crawl or a file list (glusterfind)
///
/// SRC_DIR/PATH goes to the key <store prefix>/KEY_PREFIX/PATH. Without --files-from, SRC_DIR
/// is walked (symbolic links and special files are counted, never
/// followed) and each file is uploaded unless the bucket holds its size and modification time
/// (stored in the object's metadata at upload, so an unchanged file costs one HEAD and is never
/// read; objects written by another tool are compared by content). Files go in parallel,
/// bounded by s3.concurrency; every upload is verified. A file that changes while it is
/// uploaded is sent again once, then reported as failed.
///
/// With --files-from, only the listed paths are handled: glusterfind's NEW and MODIFY upload the
/// file (a directory: everything under it), RENAME OLD NEW uploads NEW, DELETE and the old name
/// of a RENAME are deleted with --delete once they are gone locally. The whole list is checked
/// before the first request: a malformed line exits 2 naming it, and nothing was sent.
/// Files with Gluster cloudsync's trusted.glusterfs.cs.remote are archived: never read (reading
/// would recall them), counted as archived. Run glusterfind post only after exit 0.
///
/// Exit status: 0, every path was handled; 1, a path failed or is missing, or --delete
/// refused; 2, bad arguments or a malformed list (nothing was sent); 130, interrupted.
#[derive(Debug, Clone, Args)]
pub struct SyncArgs {
    /// The local directory to mirror
    pub src_dir: PathBuf,
    /// Where in the bucket, under the configured prefix (e.g. fileserver/home)
    pub key_prefix: String,
    /// Compare content (CRC32C, or the object's checksum) instead of size and modification
    /// time: reads every file of the same size as its object
    #[arg(long)]
    pub checksum: bool,
    /// Delete keys with no local file (with --files-from: DELETEd and renamed-away paths that
    /// are gone locally). Never when SRC_DIR is empty, never after a failure, never a key
    /// uploaded by this run, runs after every upload succeeded
    #[arg(long)]
    pub delete: bool,
    /// With --delete: refuse to delete more than N keys in one run unless --force
    #[arg(long, value_name = "N", default_value_t = 1000, requires = "delete")]
    pub max_deletes: usize,
    /// With --delete: delete more than --max-deletes keys
    #[arg(long, requires = "delete")]
    pub force: bool,
    /// Print what would be uploaded and deleted (keys on stdout); send and delete nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Handle only the paths listed in FILE (relative to SRC_DIR, or absolute under it)
    #[arg(long, value_name = "FILE", requires = "files_format")]
    pub files_from: Option<PathBuf>,
    /// Format of --files-from: lines (one path per line, verbatim), glusterfind (its default
    /// output: TAG PATH, %25 %20 %0A decoded, nothing else, never +), glusterfind-raw (output
    /// of glusterfind --no-encode: no decoding)
    #[arg(long, value_enum, value_name = "FORMAT", requires = "files_from")]
    pub files_format: Option<FormatArg>,
    /// The field separator glusterfind was given (--field-separator) [default: one space]
    #[arg(long, value_name = "STR", requires = "files_from")]
    pub field_separator: Option<String>,
    /// A listed path missing locally is a warning, not a failure (exit 0)
    #[arg(long, requires = "files_from")]
    pub allow_missing: bool,
    /// Namespace of Gluster's cloudsync xattrs: trusted, or user for tests without root
    #[arg(long, hide = true, value_name = "NS", value_parser = ["trusted", "user"])]
    pub xattr_ns: Option<String>,
}

/// `--files-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// One path per line, verbatim
    Lines,
    /// glusterfind's default, encoded output
    Glusterfind,
    /// glusterfind --no-encode output
    GlusterfindRaw,
}

impl SyncArgs {
    /// Checks the arguments and builds the validated options.
    pub fn validate(self) -> Result<SyncOptions> {
        let key_prefix = key_prefix(&self.key_prefix)?;
        let files_from = match (self.files_from, self.files_format) {
            (Some(path), Some(f)) => Some(file_list(
                path,
                f,
                self.field_separator,
                self.allow_missing,
            )?),
            _ => None,
        };
        Ok(SyncOptions {
            src: self.src_dir,
            key_prefix,
            compare: if self.checksum {
                Compare::Checksum
            } else {
                Compare::SizeMtime
            },
            delete: self.delete.then_some(DeleteLimits {
                max_deletes: self.max_deletes,
                force: self.force,
            }),
            dry_run: self.dry_run,
            files_from,
            xattr_ns: xattr_ns(self.xattr_ns.as_deref()),
            // Where the state directory is, the config says: filled in by the run.
            record: None,
        })
    }
}

fn file_list(
    path: PathBuf,
    format: FormatArg,
    separator: Option<String>,
    allow_missing: bool,
) -> Result<FileList> {
    let format = match format {
        FormatArg::Lines => ListFormat::Lines,
        FormatArg::Glusterfind => ListFormat::Glusterfind,
        FormatArg::GlusterfindRaw => ListFormat::GlusterfindRaw,
    };
    if format == ListFormat::Lines && separator.is_some() {
        return Err(Error::Usage(
            "--field-separator is for the glusterfind formats, not --files-format lines".into(),
        ));
    }
    let separator = separator.unwrap_or_else(|| " ".into());
    if separator.is_empty() || separator.contains('\n') {
        return Err(Error::Usage(
            "--field-separator: give the non-empty, one-line string glusterfind was given".into(),
        ));
    }
    Ok(FileList {
        path,
        format,
        separator,
        allow_missing,
    })
}

/// The tests' namespace switch: `--xattr-ns user`, or `BARMANS3_TEST=1` (the same convention as
/// `archive`).
fn xattr_ns(flag: Option<&str>) -> XattrNs {
    match flag {
        Some("user") => XattrNs::User,
        Some(_) => XattrNs::Trusted,
        None if std::env::var("BARMANS3_TEST").is_ok_and(|v| v == "1") => XattrNs::User,
        None => XattrNs::Trusted,
    }
}

/// KEY_PREFIX without its outer slashes; never empty (a sync into the bucket's root would let
/// --delete see every other key), no empty, `.` or `..` segment.
fn key_prefix(raw: &str) -> Result<String> {
    let p = raw.trim_matches('/');
    let bad = p.is_empty() || p.split('/').any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        return Err(Error::Usage(format!(
            "KEY_PREFIX {raw:?}: give a prefix such as fileserver/home (not empty, no //, . or .. segments)"
        )));
    }
    Ok(p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefixes_are_checked() {
        assert_eq!(key_prefix("/files/home/").expect("ok"), "files/home");
        for bad in ["", "/", "a//b", "a/./b", "../x", "a/.."] {
            assert!(key_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn separators_are_checked() {
        let p = PathBuf::from("l");
        assert!(file_list(p.clone(), FormatArg::Lines, Some(" ".into()), false).is_err());
        assert!(
            file_list(
                p.clone(),
                FormatArg::Glusterfind,
                Some(String::new()),
                false
            )
            .is_err()
        );
        let f = file_list(p, FormatArg::Glusterfind, None, true).expect("ok");
        assert_eq!((f.separator.as_str(), f.allow_missing), (" ", true));
    }
}
