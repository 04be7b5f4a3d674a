//! `sync --files-from` fed by real `glusterfind pre` output, full then incremental, with
//! `--delete`: the prefix ends equal to the volume, byte for byte. Then what glusterfind 10.3
//! itself loses (names split at commas, a mangled non-ASCII MODIFY, a rename and a write in one
//! window listed as a write only) and what barmans3 makes of it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::common::gluster::{Gluster, Layout, Volume, gluster, serial};

/// The changelog rolls over every 2 s (glusterfind's default, 15 s, would make the test slow;
/// 1 s makes `pre` fail at random on duplicate changelog timestamps).
const ROLLOVER: u64 = 2;

/// A glusterfind session on a volume.
struct Session<'a> {
    gl: &'a Gluster,
    name: String,
    vol: Volume,
    out: PathBuf,
}

impl<'a> Session<'a> {
    /// A one-brick volume with its changelog rolling over every [`ROLLOVER`] seconds, and a
    /// session that has started (glusterfind starts it one rollover in the future).
    fn new(gl: &'a Gluster, vol: &str, work: &Path) -> Session<'a> {
        let opts = [("changelog.rollover-time".to_string(), ROLLOVER.to_string())];
        let vol = gl.volume(vol, Layout::Single, &opts);
        let name = format!("{}-s", vol.name);
        let out = gl.glusterfind(&["create", &name, &vol.name, "--force"]);
        assert!(
            out.status.success(),
            "glusterfind create: {}",
            text(&out.stderr)
        );
        let status = Path::new("/var/lib/glusterd/glusterfind")
            .join(&name)
            .join(&vol.name)
            .join("status");
        let start: u64 = std::fs::read_to_string(&status)
            .unwrap_or_else(|e| panic!("{}: {e}", status.display()))
            .trim()
            .parse()
            .expect("session start");
        wait_for("the session to start", Duration::from_secs(30), || {
            epoch() > start + 1
        });
        Session {
            gl,
            name,
            vol,
            out: work.join("changes.txt"),
        }
    }

    /// `glusterfind pre --full`: every file and directory of the volume. It moves the session
    /// to its own end (one rollover ago), so it waits until the changes made `since` are older
    /// than that: else the next incremental list would hold them again.
    fn full(&self, since: SystemTime) -> String {
        settle(since);
        self.pre(&["--full"])
    }

    /// `glusterfind pre` until the list holds every line of `want`.
    fn changes(&self, since: SystemTime, want: &[&str]) -> String {
        settle(since);
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let list = self.pre(&[]);
            let lines: Vec<&str> = list.lines().collect();
            let absent: Vec<&&str> = want.iter().filter(|w| !lines.contains(w)).collect();
            if absent.is_empty() {
                return list;
            }
            assert!(Instant::now() < deadline, "{absent:?} not in {list:?}");
            std::thread::sleep(Duration::from_secs(ROLLOVER));
        }
    }

    fn pre(&self, extra: &[&str]) -> String {
        let out_s = self.out.to_str().expect("utf-8");
        let mut args = vec!["pre", &self.name, &self.vol.name, out_s];
        // --disable-partial: a brick that fails makes pre fail instead of listing less.
        args.extend(["--regenerate-outfile", "--disable-partial"]);
        args.extend_from_slice(extra);
        let out = self.gl.glusterfind(&args);
        assert!(
            out.status.success(),
            "glusterfind pre: {}",
            text(&out.stderr)
        );
        let bytes = std::fs::read(&self.out).expect("list");
        String::from_utf8(bytes).expect("glusterfind writes UTF-8")
    }

    /// `glusterfind post`, then a wait until a change made now cannot land in the changelog
    /// named by the brick's new start: the next incremental `pre` skips that changelog as read
    /// already, yet after a `--full` list it never was (the brick's start is then the second its
    /// crawl began), so a change made in that second would be listed by neither. On a quiet
    /// machine `pre --full`, the sync and `post` all fit in that second.
    fn post(&self) {
        let out = self.gl.glusterfind(&["post", &self.name, &self.vol.name]);
        assert!(
            out.status.success(),
            "glusterfind post: {}",
            text(&out.stderr)
        );
        let start = self.brick_start();
        wait_for(
            "the changelog of the brick's start to roll over",
            Duration::from_secs(30),
            || epoch() > start + ROLLOVER,
        );
    }

    /// The brick's session start, from glusterfind's `<brick path>.status` (one brick).
    fn brick_start(&self) -> u64 {
        let dir = Path::new("/var/lib/glusterd/glusterfind")
            .join(&self.name)
            .join(&self.vol.name);
        let status = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("session entry").path())
            .find(|p| p.extension() == Some("status".as_ref()))
            .unwrap_or_else(|| panic!("no brick status in {}", dir.display()));
        std::fs::read_to_string(&status)
            .unwrap_or_else(|e| panic!("{}: {e}", status.display()))
            .trim()
            .parse()
            .expect("brick start")
    }

    /// `sync MNT vol --files-from LIST` (or a crawl without it) with `--json` and `args`.
    fn sync(&self, site: &Site, list: bool, args: &[&str]) -> serde_json::Value {
        let mnt = self.vol.mnt.to_str().expect("utf-8");
        let out_s = self.out.to_str().expect("utf-8");
        let mut all = vec!["--json", "sync", mnt, "vol"];
        if list {
            all.extend(["--files-from", out_s, "--files-format", "glusterfind"]);
        }
        all.extend_from_slice(args);
        ok("sync", &site.run(&all, &[]))
    }
}

/// Waits until changes made at `since` can be listed: glusterfind reads changelogs up to one
/// rollover ago, and a change is in the changelog that rolls over after it.
fn settle(since: SystemTime) {
    let ready = since + Duration::from_secs(2 * ROLLOVER + 1);
    if let Ok(d) = ready.duration_since(SystemTime::now()) {
        std::thread::sleep(d);
    }
}

fn epoch() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The prefix holds exactly the volume's files, byte for byte.
fn assert_mirror(prefix: &str, mnt: &Path) {
    let (local, remote) = (files_of(mnt), objects_under(prefix, "vol"));
    let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&remote), names(&local), "keys");
    assert!(remote == local, "contents differ");
}

fn deleted(v: &serde_json::Value, prefix: &str) -> Vec<String> {
    let mut d: Vec<String> = v["deleted"]
        .as_array()
        .expect("deleted")
        .iter()
        .map(|k| {
            k.as_str()
                .expect("key")
                .replace(&format!("{prefix}/vol/"), "")
        })
        .collect();
    d.sort();
    d
}

#[test]
fn full_and_incremental_lists_keep_the_prefix_equal_to_the_volume() {
    let _one = serial();
    let gl = gluster();
    let (site, prefix, _) = site("gl-find");
    let s = Session::new(gl, "gf", site.dir.path());
    let m = &s.vol.mnt;
    for (rel, body) in [
        ("dirA/f1", "one"),
        ("dirA/sub/f2", "two"),
        ("a b.txt", "space"),
        ("50%.txt", "percent"),
        ("nl\nname", "newline"),
        ("x+y", "plus"),
        ("gone", "to delete"),
    ] {
        put(m, rel, body.as_bytes());
    }
    let full = s.full(SystemTime::now());
    for line in [
        "NEW a%20b.txt",
        "NEW 50%25.txt",
        "NEW nl%0Aname",
        "NEW x+y",
        "NEW dirA",
    ] {
        assert!(full.lines().any(|l| l == line), "{line:?} in {full:?}");
    }
    s.sync(&site, true, &["--delete"]);
    assert_mirror(&prefix, m);
    s.post();

    std::fs::rename(m.join("dirA"), m.join("dir A2")).expect("rename dir");
    std::fs::remove_file(m.join("gone")).expect("rm");
    put(m, "new file", b"new");
    put(m, "100%new", b"new percent");
    put(m, "nl\nnew", b"new newline");
    append(&m.join("x+y"), b" and more");
    let list = s.changes(
        SystemTime::now(),
        &[
            "RENAME dirA dir%20A2",
            "DELETE gone",
            "NEW new%20file",
            "NEW 100%25new",
            "NEW nl%0Anew",
            "MODIFY x+y",
        ],
    );
    let v = s.sync(&site, true, &["--delete"]);
    assert_eq!(
        deleted(&v, &prefix),
        ["dirA/f1", "dirA/sub/f2", "gone"],
        "{v}\n{list}"
    );
    assert_mirror(&prefix, m);
    s.post();
}

#[test]
fn what_glusterfind_loses_is_put_back_or_left_for_the_crawl() {
    let _one = serial();
    let gl = gluster();
    let (site, prefix, _) = site("gl-lossy");
    let s = Session::new(gl, "gfl", site.dir.path());
    let m = &s.vol.mnt;
    for (rel, body) in [
        ("c,d", "comma"),
        ("dir,e/f", "in a comma dir"),
        ("ünï", "non-ascii"),
        ("mv,me", "to rename"),
        ("r1", "renamed and written"),
        ("keep", "to delete"),
    ] {
        put(m, rel, body.as_bytes());
    }
    // A full list is not split: every name comes through.
    let full = s.full(SystemTime::now());
    assert!(full.lines().any(|l| l == "NEW c,d"), "{full}");
    s.sync(&site, true, &["--delete"]);
    assert_mirror(&prefix, m);
    s.post();

    append(&m.join("c,d"), b" written");
    append(&m.join("ünï"), b" written");
    std::fs::rename(m.join("mv,me"), m.join("plain")).expect("rename");
    std::fs::rename(m.join("r1"), m.join("r2")).expect("rename");
    append(&m.join("r2"), b" written");
    std::fs::remove_file(m.join("keep")).expect("rm");
    put(m, "n,ew", b"new with a comma");
    // What glusterfind 10.3 really writes for those changes.
    let list = s.changes(
        SystemTime::now(),
        &[
            "MODIFY c",
            "MODIFY d",
            "MODIFY \u{c3}\u{bc}n\u{c3}\u{af}",
            "RENAME mv plain",
            "RENAME me plain",
            "MODIFY r2",
            "DELETE keep",
            "NEW n",
            "NEW ew",
        ],
    );
    assert!(!list.contains("r1"), "the rename of r1 is lost: {list}");
    let v = s.sync(&site, true, &["--delete"]);
    let mut recovered: Vec<&str> = v["recovered"]
        .as_array()
        .expect("recovered")
        .iter()
        .map(|n| n.as_str().expect("name"))
        .collect();
    recovered.sort();
    assert_eq!(recovered, ["c,d", "n,ew", "ünï"], "{v}");
    assert_eq!(v["missing"], serde_json::json!([]), "{v}");
    assert_eq!(deleted(&v, &prefix), ["keep"], "{v}");
    // Every file of the volume is in the bucket, as it is now; the old names of the renamed
    // files stay, since the list cannot prove them gone.
    let (local, remote) = (files_of(m), objects_under(&prefix, "vol"));
    for (rel, body) in &local {
        assert!(remote.get(rel) == Some(body), "{rel} as it is now");
    }
    let stale: Vec<&String> = remote.keys().filter(|k| !local.contains_key(*k)).collect();
    assert_eq!(stale, ["mv,me", "r1"]);
    // The crawl removes them.
    let v = s.sync(&site, false, &["--delete"]);
    assert_eq!(deleted(&v, &prefix), ["mv,me", "r1"], "{v}");
    assert_mirror(&prefix, m);
    s.post();
}
