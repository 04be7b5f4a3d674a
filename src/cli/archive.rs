//! The `archive` command line and its validation into [`ArchiveOptions`]. The test-only
//! switches (`--xattr-ns`, `--emulate-cloudsync`, the pause hook) are hidden and refused unless
//! `BARMANS3_TEST=1`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args};

use crate::error::{Error, Result};
use crate::gluster::{ArchiveOptions, Emulator, Target, XattrNs};

/// `archive` arguments.
#[derive(Debug, Clone, Args)]
#[command(
    group(ArgGroup::new("target").required(true).args(["volume", "bucketid"])),
    after_long_help = AFTER_HELP
)]
pub struct ArchiveArgs {
    /// The brick directory on this host (the brick's root, with its .glusterfs). Run once per
    /// replica set, on one of its bricks
    #[arg(value_name = "BRICK")]
    pub brick: PathBuf,
    /// A FUSE mount of the whole volume on this host, with cloudsync on: files are read and
    /// marked through it, never through the brick
    #[arg(long, value_name = "MNT")]
    pub mount: PathBuf,
    /// Archive only files whose mtime and ctime are both older than AGE (e.g. 30d, 12h)
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    pub older_than: Duration,
    /// The Gluster volume: its cloudsync settings are read with `gluster volume get VOL all`
    /// and must name the S3 plugin (cloudsyncs3) and this store's bucket and prefix
    #[arg(long, value_name = "VOL")]
    pub volume: Option<String>,
    /// The volume's features.s3plugin-bucketid (`bucket` or `bucket/prefix`), instead of
    /// asking gluster; it must name this store's bucket and prefix. With a file:// store any
    /// single name is accepted
    #[arg(long, value_name = "ID")]
    pub bucketid: Option<String>,
    /// Crawl, HEAD each key and print what would be archived (size, volume path, key);
    /// upload, mark and write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Stop after N files have been taken for archival
    #[arg(long, value_name = "N")]
    pub max_files: Option<u64>,
    /// Stop before the file that would take the run past SIZE bytes (binary units: 10G)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_bytes: Option<u64>,
    /// Append one JSON line per archived file here [default:
    /// <state_dir>/archive/<brick-hash>.jsonl]
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
    /// After each upload, read the object back whole and compare its CRC32C
    #[arg(long)]
    pub verify_read: bool,
    /// Also archive sparse files (a recall writes every byte and can fill the brick)
    #[arg(long)]
    pub allow_sparse: bool,
    /// Tests only: Gluster's trusted.* xattrs are read and written as user.*
    #[arg(long, hide = true, value_name = "NS", value_parser = ["trusted", "user"])]
    pub xattr_ns: Option<String>,
    /// Tests only: the mount is the brick itself, and the mark is applied by an emulation of
    /// Gluster's posix translator
    #[arg(long, hide = true)]
    pub emulate_cloudsync: bool,
}

const AFTER_HELP: &str = "\
How a file is archived: on the brick, the file must be a regular file with a gfid, one link \
besides its .glusterfs handle, not sparse, not a DHT link file, not sharded, with no AFR heal \
pending, not already remote, open by no process on this host, and named with only \
[A-Za-z0-9._~/-]. Through the mount, its size, mtime and ctime are taken (S0), the key \
<bucketid>/<path> is checked (an object there that is not this file's is never overwritten: \
key-in-use, exit 1), the file is uploaded with its gfid, mtime, size and CRC32C as metadata and \
verified, and taken again (S1). Only if S1 equals S0 is trusted.glusterfs.csou.complete set \
through the mount, with S0's mtime, so that Gluster refuses it for a file written meanwhile; \
the brick must then show the file truncated with our path in cs.remote. Each archived file is \
appended to the journal. Every skipped file is counted by reason in the summary (--json).

Cautions: any read through a cloudsync client recalls the file whole, backups over FUSE or \
gfapi included; recall uses AWS V2 signatures, so the store must accept them (AWS regions that \
are V4-only and Garage cannot recall); a write that lands between Gluster's own mtime check \
and its truncate is lost (a Gluster limitation, made rare by coldness and the open-file check).

Exit status: 0 when every file was archived or skipped for a reason of its own; 1 when a file \
failed, a key was in use, or Gluster recorded another path (the object is then copied there); \
2 for a refused setup (nothing touched); 75 when another archive of this brick runs; 130 when \
interrupted.";

fn parse_age(s: &str) -> std::result::Result<Duration, String> {
    crate::units::parse_duration(s)
}

fn parse_size(s: &str) -> std::result::Result<u64, String> {
    crate::units::parse_size(s)
}

/// Whether the test-only switches are allowed.
fn test_mode() -> bool {
    std::env::var_os("BARMANS3_TEST").is_some_and(|v| v == "1")
}

impl ArchiveArgs {
    /// Checks the arguments and builds the validated options.
    pub fn validate(self) -> Result<ArchiveOptions> {
        let test = test_mode();
        if !test && (self.xattr_ns.is_some() || self.emulate_cloudsync) {
            return Err(Error::Usage(
                "--xattr-ns and --emulate-cloudsync are for barmans3's own tests (BARMANS3_TEST=1)"
                    .into(),
            ));
        }
        if self.max_files == Some(0) || self.max_bytes == Some(0) {
            return Err(Error::Usage(
                "--max-files and --max-bytes must be above 0 (use --dry-run to archive nothing)"
                    .into(),
            ));
        }
        let target = match (self.volume, self.bucketid) {
            (Some(v), None) if !v.is_empty() => Target::Volume(v),
            (None, Some(id)) if !id.is_empty() => Target::BucketId(id),
            _ => {
                return Err(Error::Usage(
                    "give either --volume VOL or --bucketid ID, not empty".into(),
                ));
            }
        };
        let xattr_ns = match self.xattr_ns.as_deref() {
            Some("user") => XattrNs::User,
            _ => XattrNs::Trusted,
        };
        let env = |k: &str| test.then(|| std::env::var_os(k)).flatten();
        let emulate = self.emulate_cloudsync.then(|| Emulator {
            ns: xattr_ns,
            remote_prefix: env("BARMANS3_TEST_CS_REMOTE_PREFIX")
                .map(|v| v.to_string_lossy().into_owned())
                .unwrap_or_default(),
        });
        Ok(ArchiveOptions {
            brick: self.brick,
            mount: self.mount,
            older_than: self.older_than,
            target,
            dry_run: self.dry_run,
            max_files: self.max_files,
            max_bytes: self.max_bytes,
            journal: self.journal,
            verify_read: self.verify_read,
            allow_sparse: self.allow_sparse,
            xattr_ns,
            emulate,
            pause_after_upload: env("BARMANS3_TEST_ARCHIVE_PAUSE").map(PathBuf::from),
        })
    }
}
