//! The decisions of `archive` that can lose data, as pure functions over plain facts: which
//! brick entries may never be archived (spec §1.4), whether a file is cold, whether it changed
//! between its two snapshots (§1.3 step 6), what an object already at the key means (step 3),
//! what posix answers to the mark (§1.1), whether the brick shows the file archived afterwards
//! (step 8), and how far `--max-files`/`--max-bytes` let a run go. Everything here is
//! table-tested; the I/O that gathers the facts lives in `facts.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::checksum;
use crate::store::ObjectMeta;

/// Why a file is not archived. Each is counted in the run summary under [`Reason::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// A process on this host holds the brick inode open.
    Open,
    /// The file changed between the snapshots, or posix refused the mark (EINVAL).
    Changed,
    /// `cs.remote` is set: the data is already remote.
    Archived,
    /// `cs.downloading` is set: a recall is running.
    Downloading,
    /// `cs.object_size` disagrees with the brick size without `cs.remote` (an earlier recall).
    StaleSize,
    /// More links than the file and its `.glusterfs` handle.
    Hardlink,
    /// Fewer allocated blocks than bytes: a recall would write every byte.
    Sparse,
    /// A DHT link file (`dht.linkto`, or mode 01000 with size 0).
    Linkto,
    /// A sharded file (`shard.block-size`).
    Sharded,
    /// A non-zero AFR pending counter: a heal is due.
    AfrPending,
    /// Nothing to archive.
    Empty,
    /// A symlink, device, FIFO or socket.
    NotRegular,
    /// A name the S3 plugin cannot recall (bytes outside `[A-Za-z0-9._~/-]`, or too long).
    UnrecallableName,
    /// Another object is at the key; overwriting it would change what another file recalls.
    KeyInUse,
    /// mtime or ctime newer than `--older-than`.
    TooYoung,
    /// No `trusted.gfid`: not a file Gluster manages.
    NoGfid,
}

impl Reason {
    /// Every reason, in the order the summary lists them.
    pub const ALL: [Reason; 16] = [
        Reason::Open,
        Reason::Changed,
        Reason::Archived,
        Reason::Downloading,
        Reason::StaleSize,
        Reason::Hardlink,
        Reason::Sparse,
        Reason::Linkto,
        Reason::Sharded,
        Reason::AfrPending,
        Reason::Empty,
        Reason::NotRegular,
        Reason::UnrecallableName,
        Reason::KeyInUse,
        Reason::TooYoung,
        Reason::NoGfid,
    ];

    /// The reason code of spec §1.4.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Open => "open",
            Reason::Changed => "changed",
            Reason::Archived => "archived",
            Reason::Downloading => "downloading",
            Reason::StaleSize => "stale-size",
            Reason::Hardlink => "hardlink",
            Reason::Sparse => "sparse",
            Reason::Linkto => "linkto",
            Reason::Sharded => "sharded",
            Reason::AfrPending => "afr-pending",
            Reason::Empty => "empty",
            Reason::NotRegular => "not-regular",
            Reason::UnrecallableName => "unrecallable-name",
            Reason::KeyInUse => "key-in-use",
            Reason::TooYoung => "too-young",
            Reason::NoGfid => "no-gfid",
        }
    }
}

/// What the brick says about one entry: its lstat and its Gluster xattrs (no symlink followed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrickFacts {
    /// A regular file (not a symlink, device, FIFO or socket).
    pub regular: bool,
    /// `st_mode`.
    pub mode: u32,
    /// `st_size`.
    pub size: u64,
    /// `st_blocks` (512-byte units).
    pub blocks: u64,
    /// `st_nlink`.
    pub nlink: u64,
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// `trusted.gfid`, when it is 16 bytes.
    pub gfid: Option<[u8; 16]>,
    /// `trusted.glusterfs.dht.linkto` is present.
    pub linkto: bool,
    /// `trusted.glusterfs.shard.block-size` is present.
    pub sharded: bool,
    /// `trusted.glusterfs.cs.remote`, when present.
    pub cs_remote: Option<String>,
    /// `trusted.glusterfs.cs.downloading` is present.
    pub cs_downloading: bool,
    /// `trusted.glusterfs.cs.object_size`, as stored, when present.
    pub cs_object_size: Option<String>,
    /// Some `trusted.afr.*` counter is non-zero.
    pub afr_pending: bool,
}

/// A recall writes every byte back; a file whose blocks fall short of its size by more than
/// this would grow on the brick by that much.
const SPARSE_SLACK: u64 = 1 << 20;

/// The sticky bit DHT sets on its link files.
const LINKTO_MODE: u32 = 0o1000;

/// The first §1.4 reason the brick facts give, in a fixed order; `None` when the file may be
/// archived as far as the brick can tell. `name_ok` is [`recallable`]'s answer.
pub fn brick_verdict(f: &BrickFacts, name_ok: bool, allow_sparse: bool) -> Option<Reason> {
    let checks = [
        (!f.regular, Reason::NotRegular),
        (
            f.linkto || (f.mode & LINKTO_MODE != 0 && f.size == 0),
            Reason::Linkto,
        ),
        (f.cs_remote.is_some(), Reason::Archived),
        (f.cs_downloading, Reason::Downloading),
        (
            f.cs_object_size
                .as_deref()
                .is_some_and(|s| s.trim().parse::<u64>().ok() != Some(f.size)),
            Reason::StaleSize,
        ),
        (f.sharded, Reason::Sharded),
        (f.afr_pending, Reason::AfrPending),
        // The `.glusterfs/xx/yy/<gfid>` handle is the second link of every file.
        (f.nlink > 2, Reason::Hardlink),
        (f.gfid.is_none(), Reason::NoGfid),
        (!name_ok, Reason::UnrecallableName),
        (f.size == 0, Reason::Empty),
        (
            !allow_sparse && f.blocks.saturating_mul(512) < f.size.saturating_sub(SPARSE_SLACK),
            Reason::Sparse,
        ),
    ];
    checks.into_iter().find(|(hit, _)| *hit).map(|(_, r)| r)
}

/// Whether an AFR changelog value (3 × u32 big-endian: data, metadata, entry) has a pending
/// counter. Any non-zero byte counts, whatever the length: a value we do not understand is
/// treated as pending.
pub fn afr_pending(value: &[u8]) -> bool {
    value.iter().any(|b| *b != 0)
}

/// The S3 plugin writes `<bucketid>/<path>` verbatim into a 4096-byte resource buffer and the
/// URL, without percent-encoding: only these bytes survive, and the whole must stay short.
const MAX_RESOURCE: usize = 4000;

/// Whether the S3 plugin can recall a file at volume path `rel` (no leading `/`) from
/// `bucketid`.
pub fn recallable(rel: &[u8], bucketid: &str) -> bool {
    !rel.is_empty()
        && bucketid.len() + 1 + rel.len() < MAX_RESOURCE
        && rel
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'/' | b'-'))
}

/// The state of a file at one moment (§1.3 steps 2 and 6): through the mount, size and times;
/// on the brick, identity and size; and whether a process holds it open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Size through the mount.
    pub mnt_size: u64,
    /// mtime through the mount, ns since the epoch.
    pub mtime_ns: i128,
    /// ctime through the mount, ns since the epoch.
    pub ctime_ns: i128,
    /// Size on the brick.
    pub brick_size: u64,
    /// Device of the brick inode.
    pub brick_dev: u64,
    /// Brick inode number.
    pub brick_ino: u64,
    /// `trusted.gfid`.
    pub gfid: [u8; 16],
    /// The gfid the mount shows at the same path: the file we read and mark through the mount
    /// must be the brick's file.
    pub mnt_gfid: [u8; 16],
    /// A process on this host holds the brick inode open.
    pub open: bool,
}

impl Snapshot {
    /// The mtime in whole seconds, the value of the mark (posix compares seconds only).
    pub fn mtime_secs(&self) -> i64 {
        self.mtime_ns.div_euclid(1_000_000_000) as i64
    }
}

/// Whether a snapshot allows archiving now: too young (by mtime **or** ctime, so `touch -d`
/// cannot make a fresh file look cold), brick and mount disagreeing on the file or its size,
/// or open.
pub fn snapshot_verdict(s: &Snapshot, now_ns: i128, older_than: Duration) -> Option<Reason> {
    let age = older_than.as_nanos() as i128;
    if now_ns - s.mtime_ns < age || now_ns - s.ctime_ns < age {
        return Some(Reason::TooYoung);
    }
    if s.mnt_gfid != s.gfid || s.mnt_size != s.brick_size {
        return Some(Reason::Changed);
    }
    s.open.then_some(Reason::Open)
}

/// What differs between S0 and S1 (step 6), or `None` when the file may be marked.
pub fn changed(s0: &Snapshot, s1: &Snapshot) -> Option<&'static str> {
    let diffs = [
        (s0.gfid != s1.gfid, "gfid"),
        (s1.mnt_gfid != s1.gfid, "the file the mount shows"),
        (
            s0.brick_ino != s1.brick_ino || s0.brick_dev != s1.brick_dev,
            "brick inode",
        ),
        (s0.mnt_size != s1.mnt_size, "size"),
        (s0.brick_size != s1.brick_size, "brick size"),
        (s0.mtime_ns != s1.mtime_ns, "mtime"),
        (s0.ctime_ns != s1.ctime_ns, "ctime"),
        (s1.open, "opened"),
    ];
    diffs.into_iter().find(|(d, _)| *d).map(|(_, what)| what)
}

/// User metadata names on archived objects (`x-amz-meta-barmans3-*`).
pub mod meta {
    /// The file's gfid, as a UUID.
    pub const GFID: &str = "barmans3-gfid";
    /// mtime of S0, `<seconds>.<nanoseconds>`.
    pub const MTIME: &str = "barmans3-mtime";
    /// Size in bytes.
    pub const SIZE: &str = "barmans3-size";
    /// CRC32C of the whole file, base64 as in `x-amz-checksum-crc32c`.
    pub const CRC32C: &str = "barmans3-crc32c";
}

/// A gfid as Gluster prints it (`glusterfs.gfid.string`).
pub fn gfid_string(g: &[u8; 16]) -> String {
    let h = checksum::hex(g);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// `<seconds>.<nanoseconds>` of a time in ns since the epoch.
pub fn mtime_string(ns: i128) -> String {
    format!(
        "{}.{:09}",
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000)
    )
}

/// The metadata an archived object carries.
pub fn object_metadata(s0: &Snapshot, crc32c: u32) -> BTreeMap<String, String> {
    BTreeMap::from([
        (meta::GFID.to_string(), gfid_string(&s0.gfid)),
        (meta::MTIME.to_string(), mtime_string(s0.mtime_ns)),
        (meta::SIZE.to_string(), s0.mnt_size.to_string()),
        (meta::CRC32C.to_string(), checksum::crc32c_header(crc32c)),
    ])
}

/// What is at the key before the upload (step 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRule {
    /// Nothing: upload.
    Absent,
    /// Our own upload of this very file (same gfid), left unmarked by an earlier run: reuse it
    /// if it holds the file's current bytes, else overwrite it.
    Ours,
    /// Anything else: refuse. A renamed or unlinked archived file keeps its old `cs.remote`,
    /// and overwriting the object would change what that file recalls.
    InUse,
}

/// Step 3's rule for the object `head` found at the key of the file with this gfid.
pub fn key_rule(head: Option<&ObjectMeta>, gfid: &[u8; 16]) -> KeyRule {
    match head {
        None => KeyRule::Absent,
        Some(h) if h.metadata.get(meta::GFID) == Some(&gfid_string(gfid)) => KeyRule::Ours,
        Some(_) => KeyRule::InUse,
    }
}

/// Whether our earlier object can stand for the file as S0 shows it: the recorded size and
/// mtime are S0's, and the object's bytes are the file's (`same_bytes`: the CRC32C of the
/// file when the store's checksum proved the object equal to it) with the recorded CRC32C.
pub fn reusable(head: &ObjectMeta, s0: &Snapshot, same_bytes: Option<u32>) -> bool {
    let m = &head.metadata;
    let Some(crc) = same_bytes else {
        return false;
    };
    head.size == s0.mnt_size
        && m.get(meta::SIZE) == Some(&s0.mnt_size.to_string())
        && m.get(meta::MTIME) == Some(&mtime_string(s0.mtime_ns))
        && m.get(meta::CRC32C) == Some(&checksum::crc32c_header(crc))
}

/// What is wrong with the object a HEAD shows for S0's file with this CRC32C (step 5), or
/// `None`: its size, the gfid and CRC32C it carries, and the store's own full-object CRC32C
/// when it reports one (a composite value was already checked when the upload completed).
pub fn head_mismatch(h: &ObjectMeta, s0: &Snapshot, crc: u32) -> Option<String> {
    let want_crc = checksum::crc32c_header(crc);
    if h.size != s0.mnt_size {
        return Some(format!("{} bytes, expected {}", h.size, s0.mnt_size));
    }
    if h.metadata.get(meta::GFID) != Some(&gfid_string(&s0.gfid)) {
        return Some(format!("gfid {:?}", h.metadata.get(meta::GFID)));
    }
    if h.metadata.get(meta::CRC32C) != Some(&want_crc) {
        return Some(format!(
            "recorded CRC32C {:?}",
            h.metadata.get(meta::CRC32C)
        ));
    }
    match h.crc32c.as_deref() {
        Some(c) if !c.contains('-') && c != want_crc => {
            Some(format!("CRC32C {c}, expected {want_crc}"))
        }
        _ => None,
    }
}

/// Whether posix refuses the mark: `strncmp(current, value, strlen(value)) > 0` with
/// `current` the file's mtime in seconds as a decimal string (`posix-inode-fd-ops.c`). A string
/// compare: only an mtime that sorts later is caught, and a shorter one never is.
pub fn posix_refuses_mark(current: &str, value: &str) -> bool {
    let (c, v) = (current.as_bytes(), value.as_bytes());
    for (i, &vb) in v.iter().enumerate() {
        let cb = c.get(i).copied().unwrap_or(0);
        if cb != vb {
            return cb > vb;
        }
        if cb == 0 {
            return false;
        }
    }
    false
}

/// What the brick shows after the mark (step 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmed {
    /// Truncated, `cs.remote` is our key's suffix, `cs.object_size` is S0's size.
    Archived,
    /// Truncated with another `cs.remote`: the object must also be at that key.
    RemoteDiffers(String),
    /// The mark was not acted on as expected; the reason.
    NotArchived(String),
}

/// Checks the brick after the mark: `cs.remote` equal to `expected_remote`, size 0, and
/// `cs.object_size` equal to the size S0 saw.
pub fn confirm(
    expected_remote: &str,
    s0_size: u64,
    brick_size: u64,
    cs_remote: Option<&str>,
    object_size: Option<&str>,
) -> Confirmed {
    let Some(remote) = cs_remote else {
        return Confirmed::NotArchived(
            "no cs.remote after the mark: the mount did not act on it (is cloudsync enabled?)"
                .into(),
        );
    };
    if remote != expected_remote {
        return Confirmed::RemoteDiffers(remote.to_string());
    }
    if brick_size != 0 {
        return Confirmed::NotArchived(format!(
            "cs.remote is set but the brick still holds {brick_size} bytes"
        ));
    }
    match object_size.map(str::trim) {
        Some(s) if s == s0_size.to_string() => Confirmed::Archived,
        other => Confirmed::NotArchived(format!("cs.object_size is {other:?}, expected {s0_size}")),
    }
}

/// How much of the run `--max-files` and `--max-bytes` still allow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    /// At most this many files attempted.
    pub max_files: Option<u64>,
    /// At most this many bytes attempted.
    pub max_bytes: Option<u64>,
    /// Files taken so far.
    pub files: u64,
    /// Bytes taken so far.
    pub bytes: u64,
}

impl Budget {
    /// Takes a file of `size` bytes if the limits allow it. The first file that does not fit
    /// ends the run (a run is a prefix of the walk; the next run finds those files archived and
    /// goes further), so a limit never makes a run skip around.
    pub fn take(&mut self, size: u64) -> bool {
        let files_ok = self.max_files.is_none_or(|m| self.files < m);
        let bytes_ok = self
            .max_bytes
            .is_none_or(|m| self.bytes.saturating_add(size) <= m);
        if files_ok && bytes_ok {
            self.files += 1;
            self.bytes = self.bytes.saturating_add(size);
        }
        files_ok && bytes_ok
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
