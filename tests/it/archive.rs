//! `archive` on Garage and file:// (spec §5): a fake brick (`.glusterfs` handles, `.trashcan`,
//! gfids in `user.*` xattrs) with one file per "never archive" reason; Gluster's posix side
//! played by the hidden `--emulate-cloudsync`, and recall done as `cs_download_task` does it
//! (GET `<bucketid>/<cs.remote>` with `store get`, write back, drop `cs.remote`). Writes during
//! the upload (a stalled part, or the pause hook between upload and mark), a kill between upload
//! and mark, a key in use, a `cs.remote` Gluster recorded elsewhere, dry runs and limits.

use std::fs::{File, FileTimes};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::common::faults::FaultProxy;
use crate::common::site::{BIN, Site};
use crate::common::{Backend, on_both};

const ROOT_GFID: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const DAY: Duration = Duration::from_secs(86400);

/// `user.` name of a Gluster `trusted.` xattr (the tests run with `--xattr-ns user`).
fn user(trusted: &str) -> String {
    format!("user.{}", trusted.trim_start_matches("trusted."))
}

fn attr(path: &Path, trusted: &str) -> Option<String> {
    xattr::get(path, user(trusted))
        .expect("getxattr")
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

fn set_attr(path: &Path, trusted: &str, value: &[u8]) {
    xattr::set(path, user(trusted), value).expect("setxattr");
}

fn gfid_string(g: &[u8]) -> String {
    let h: String = g.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A fake brick: the root's gfid, `.glusterfs/` with a handle link per file, `.trashcan/`.
struct Brick {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Brick {
    fn new() -> Brick {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().join("brick");
        std::fs::create_dir_all(root.join(".glusterfs")).expect("mkdir");
        std::fs::create_dir_all(root.join(".trashcan")).expect("mkdir");
        // Extended attributes are the whole protocol: without them there is no test.
        if let Err(e) = xattr::set(&root, "user.barmans3-probe", b"1") {
            panic!(
                "extended attributes are not supported on {} ({e}): run the tests on ext4 or xfs (tmpfs has user xattrs only since Linux 6.6)",
                root.display()
            );
        }
        set_attr(&root, "trusted.gfid", &ROOT_GFID);
        Brick { _dir: dir, root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// A volume file: content, a random gfid, its `.glusterfs` handle, mtime 60 days ago.
    fn add(&self, rel: &str, data: &[u8]) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, data).expect("write");
        self.adopt(rel);
        backdate(&p);
        p
    }

    /// Gives an existing file a gfid and its handle link.
    fn adopt(&self, rel: &str) -> [u8; 16] {
        let p = self.path(rel);
        let g: [u8; 16] = rand::random();
        set_attr(&p, "trusted.gfid", &g);
        let s = gfid_string(&g);
        let h = self.root.join(".glusterfs").join(&s[..2]).join(&s[2..4]);
        std::fs::create_dir_all(&h).expect("mkdir");
        std::fs::hard_link(&p, h.join(&s)).expect("handle link");
        g
    }
}

fn backdate(p: &Path) {
    File::options()
        .write(true)
        .open(p)
        .and_then(|f| f.set_times(FileTimes::new().set_modified(SystemTime::now() - 60 * DAY)))
        .expect("backdate");
}

/// A brick, a site on the backend, and the bucketid the volume would have.
struct Case {
    site: Site,
    brick: Brick,
    bucketid: String,
}

impl Case {
    fn new(backend: Backend) -> Case {
        let (site, bucketid) = match backend {
            Backend::Local => (Site::local(), "bucket".to_string()),
            Backend::Garage => {
                let g = crate::common::garage();
                let prefix = crate::common::unique("archive");
                (
                    Site::new(&g.yaml(&prefix)),
                    format!("{}/{prefix}", g.bucket()),
                )
            }
        };
        Case {
            site,
            brick: Brick::new(),
            bucketid,
        }
    }

    fn command(&self, extra: &[&str], env: &[(&str, &str)]) -> Command {
        let root = self.brick.root.to_str().expect("utf-8");
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&self.site.cfg);
        c.args(["--json", "archive", root, "--mount", root]);
        if !extra.contains(&"--older-than") {
            c.args(["--older-than", "0s"]);
        }
        c.args([
            "--bucketid",
            &self.bucketid,
            "--xattr-ns",
            "user",
            "--emulate-cloudsync",
        ]);
        c.args(extra)
            .env("BARMANS3_TEST", "1")
            .envs(env.iter().copied());
        c
    }

    fn archive(&self, extra: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(extra, env).output().expect("run archive")
    }

    /// Starts an archive that pauses after its upload; returns once it is paused there.
    fn paused(&self, flag: &Path) -> Child {
        let flag_s = flag.to_str().expect("utf-8");
        let mut child = self
            .command(&[], &[("BARMANS3_TEST_ARCHIVE_PAUSE", flag_s)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn archive");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !flag.exists() {
            if let Some(st) = child.try_wait().expect("wait") {
                let out = child.wait_with_output().expect("output");
                panic!(
                    "archive ended ({st}) before its upload was done: {}",
                    text(&out.stderr)
                );
            }
            assert!(Instant::now() < deadline, "archive never reached the pause");
            std::thread::sleep(Duration::from_millis(10));
        }
        child
    }

    /// The object at `key` (relative to the prefix), or `None`.
    fn object(&self, key: &str) -> Option<Vec<u8>> {
        let dest = self
            .site
            .dir
            .path()
            .join(format!("got-{}", rand::random::<u32>()));
        let out = self
            .site
            .run(&["store", "get", key, dest.to_str().expect("utf-8")], &[]);
        out.status
            .success()
            .then(|| std::fs::read(&dest).expect("read"))
    }

    /// Recall as cloudsync's `cs_download_task` does: GET `<bucketid>/<cs.remote>`, write the
    /// body into the file, drop `cs.remote` (the size xattrs stay, as in Gluster).
    fn recall(&self, rel: &str) -> Vec<u8> {
        let p = self.brick.path(rel);
        let remote = attr(&p, "trusted.glusterfs.cs.remote").expect("archived file has cs.remote");
        let body = self
            .object(&remote)
            .unwrap_or_else(|| panic!("no object at <bucketid>/{remote}"));
        std::fs::write(&p, &body).expect("write back");
        xattr::remove(&p, user("trusted.glusterfs.cs.remote")).expect("drop cs.remote");
        body
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The run summary (`--json`, the last line of stdout).
fn summary(out: &Output) -> serde_json::Value {
    let stdout = text(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("summary {line:?}: {e}; stderr: {}", text(&out.stderr)))
}

fn ok(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "archive failed: {}",
        text(&out.stderr)
    );
    summary(out)
}

fn len(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).expect("stat").len()
}

/// Asserts that `rel` is archived as Gluster leaves it: empty on the brick, the size stat
/// reports in `cs.object_size`, `cs.remote` the volume path.
fn assert_archived(case: &Case, rel: &str, size: usize) {
    let p = case.brick.path(rel);
    assert_eq!(len(&p), 0, "{rel} truncated");
    assert_eq!(
        attr(&p, "trusted.glusterfs.cs.object_size"),
        Some(size.to_string())
    );
    assert_eq!(
        attr(&p, "trusted.glusterfs.cs.remote").as_deref(),
        Some(rel)
    );
}

fn assert_untouched(case: &Case, rel: &str, data: &[u8]) {
    let p = case.brick.path(rel);
    assert_eq!(std::fs::read(&p).expect("read"), data, "{rel} unchanged");
    assert_eq!(
        attr(&p, "trusted.glusterfs.cs.remote"),
        None,
        "{rel} not marked"
    );
}

async fn archives_and_recalls_identical_bytes(b: Backend) {
    let case = Case::new(b);
    let small = crate::common::data(10_000, 1);
    let big = crate::common::data(12 << 20, 2);
    case.brick.add("docs/small.txt", &small);
    case.brick.add("docs/deep/dir/big.bin", &big);
    let v = ok(&case.archive(&["--verify-read"], &[]));
    assert_eq!(v["archived"], 2, "{v}");
    assert_eq!(v["archived_bytes"], (small.len() + big.len()) as u64);
    assert_archived(&case, "docs/small.txt", small.len());
    assert_archived(&case, "docs/deep/dir/big.bin", big.len());

    let journal = std::fs::read_dir(case.site.dir.path().join("state/archive"))
        .expect("state/archive")
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .expect("journal");
    let lines = std::fs::read_to_string(journal.path()).expect("journal");
    let entries: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("journal line"))
        .collect();
    assert_eq!(entries.len(), 2);
    assert!(
        entries
            .iter()
            .any(|e| e["path"] == "/docs/small.txt" && e["size"] == 10_000)
    );

    // Archived files are left alone by the next run.
    let again = ok(&case.archive(&[], &[]));
    assert_eq!(
        (
            again["archived"].as_u64(),
            again["skipped"]["archived"].as_u64()
        ),
        (Some(0), Some(2))
    );

    assert_eq!(case.recall("docs/small.txt"), small);
    assert_eq!(case.recall("docs/deep/dir/big.bin"), big);
    assert_eq!(
        std::fs::read(case.brick.path("docs/deep/dir/big.bin")).expect("read"),
        big
    );
}

/// One file per reason of spec §1.4 (and `no-gfid`), plus one file that is archived.
fn never_archive_fixture(case: &Case) -> (File, Vec<(&'static str, u64)>) {
    let br = &case.brick;
    br.add("data/good.bin", &crate::common::data(100_000, 3));
    br.add("data/linked", b"linked");
    std::fs::hard_link(br.path("data/linked"), br.path("data/linked-too")).expect("link");
    File::create(br.path("data/sparse"))
        .and_then(|f| f.set_len(8 << 20))
        .expect("sparse");
    br.adopt("data/sparse");
    br.add("data/linkto", b"");
    std::fs::set_permissions(
        br.path("data/linkto"),
        std::fs::Permissions::from_mode(0o1000),
    )
    .expect("chmod");
    set_attr(
        &br.path("data/linkto"),
        "trusted.glusterfs.dht.linkto",
        b"vol-client-1\0",
    );
    set_attr(
        &br.add("data/sharded", b"s"),
        "trusted.glusterfs.shard.block-size",
        &[0, 0, 0, 0, 4, 0, 0, 0],
    );
    let afr = br.add("data/afr", b"heal me");
    set_attr(
        &afr,
        "trusted.afr.vol-client-0",
        &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    set_attr(&afr, "trusted.afr.vol-client-1", &[0; 12]);
    let remote = br.add("data/remote", b"");
    set_attr(&remote, "trusted.glusterfs.cs.remote", b"data/remote");
    set_attr(&remote, "trusted.glusterfs.cs.object_size", b"5000");
    set_attr(
        &br.add("data/downloading", b"x"),
        "trusted.glusterfs.cs.downloading",
        b"1",
    );
    set_attr(
        &br.add("data/stale", b"recalled"),
        "trusted.glusterfs.cs.object_size",
        b"999",
    );
    br.add("data/empty", b"");
    std::os::unix::fs::symlink("good.bin", br.path("data/symlink")).expect("symlink");
    br.add("data/a b", b"space");
    std::fs::write(br.path("data/nogfid"), b"made on the brick").expect("w");
    backdate(&br.path("data/nogfid"));
    let held = File::open(br.add("data/open", b"in use")).expect("hold open");
    br.add(".trashcan/deleted", b"old");
    let counts = vec![
        ("hardlink", 2),
        ("sparse", 1),
        ("linkto", 1),
        ("sharded", 1),
        ("afr-pending", 1),
        ("archived", 1),
        ("downloading", 1),
        ("stale-size", 1),
        ("empty", 1),
        ("not-regular", 1),
        ("unrecallable-name", 1),
        ("no-gfid", 1),
        ("open", 1),
        ("changed", 0),
        ("key-in-use", 0),
        ("too-young", 0),
    ];
    (held, counts)
}

fn contents(root: &Path) -> Vec<(PathBuf, Vec<u8>, Option<String>)> {
    walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let p = e.path().to_path_buf();
            let remote = attr(&p, "trusted.glusterfs.cs.remote");
            (p.clone(), std::fs::read(&p).expect("read"), remote)
        })
        .collect()
}

async fn every_never_archive_reason_is_skipped_and_counted(b: Backend) {
    let case = Case::new(b);
    let (_held, counts) = never_archive_fixture(&case);

    // ctime cannot be set back: with 30 days every file that passes the brick checks is young.
    let young = ok(&case.archive(&["--older-than", "30d"], &[]));
    assert_eq!(young["archived"], 0);
    assert_eq!(
        young["skipped"]["too-young"], 2,
        "good.bin and open: {young}"
    );

    let before = contents(&case.brick.root);
    let v = ok(&case.archive(&[], &[]));
    for (reason, n) in counts {
        assert_eq!(v["skipped"][reason], n, "{reason}: {v}");
    }
    assert_eq!(v["archived"], 1, "{v}");
    assert_eq!(v["failed"], 0);
    assert_archived(&case, "data/good.bin", 100_000);
    let good = std::fs::metadata(case.brick.path("data/good.bin")).expect("stat");
    for (p, data, remote) in before {
        // good.bin and its .glusterfs handle are the one archived inode.
        if std::fs::metadata(&p).expect("stat").ino() == good.ino() {
            continue;
        }
        assert!(
            std::fs::read(&p).expect("read") == data,
            "{} changed",
            p.display()
        );
        assert_eq!(
            attr(&p, "trusted.glusterfs.cs.remote"),
            remote,
            "{}",
            p.display()
        );
    }
    assert!(
        case.object(".trashcan/deleted").is_none(),
        ".trashcan is not crawled"
    );
}

async fn a_write_after_the_upload_is_not_marked_and_the_next_run_archives(b: Backend) {
    let case = Case::new(b);
    let data = crate::common::data(300_000, 4);
    let p = case.brick.add("grow.log", &data);
    let flag = case.site.dir.path().join("paused");
    let child = case.paused(&flag);
    let second = case.archive(&[], &[]);
    assert_eq!(
        second.status.code(),
        Some(75),
        "one run per brick: {}",
        text(&second.stderr)
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"one more line\n"))
        .expect("append");
    std::fs::remove_file(&flag).expect("resume");
    let out = child.wait_with_output().expect("wait");
    let v = ok(&out);
    assert_eq!(
        (v["archived"].as_u64(), v["skipped"]["changed"].as_u64()),
        (Some(0), Some(1)),
        "{v}"
    );
    let mut now = data.clone();
    now.extend_from_slice(b"one more line\n");
    assert_untouched(&case, "grow.log", &now);
    assert_eq!(
        case.object("grow.log").as_deref(),
        Some(&data[..]),
        "the object stays"
    );

    let v = ok(&case.archive(&[], &[]));
    assert_eq!(
        (v["archived"].as_u64(), v["reused"].as_u64()),
        (Some(1), Some(0)),
        "{v}"
    );
    assert_eq!(case.recall("grow.log"), now);
}

async fn a_same_size_rewrite_with_its_mtime_put_back_is_caught_by_ctime(b: Backend) {
    let case = Case::new(b);
    let data = crate::common::data(50_000, 5);
    let p = case.brick.add("report.pdf", &data);
    let mtime = std::fs::metadata(&p)
        .expect("stat")
        .modified()
        .expect("mtime");
    let flag = case.site.dir.path().join("paused");
    let child = case.paused(&flag);
    // New bytes of the same length, then `touch -d` back to the old mtime.
    let other = crate::common::data(50_000, 6);
    std::fs::write(&p, &other).expect("rewrite");
    File::options()
        .write(true)
        .open(&p)
        .and_then(|f| f.set_times(FileTimes::new().set_modified(mtime)))
        .expect("touch -d");
    std::fs::remove_file(&flag).expect("resume");
    let v = ok(&child.wait_with_output().expect("wait"));
    assert_eq!(v["skipped"]["changed"], 1, "{v}");
    assert_untouched(&case, "report.pdf", &other);

    let v = ok(&case.archive(&[], &[]));
    assert_eq!(v["archived"], 1, "{v}");
    assert_eq!(case.recall("report.pdf"), other);
}

async fn a_key_in_use_is_refused_and_nothing_is_truncated(b: Backend) {
    let case = Case::new(b);
    let data = crate::common::data(20_000, 7);
    case.brick.add("shared/name.dat", &data);
    case.brick.add("shared/free.dat", b"free");
    // Another file archived under this path before (renamed since, say) still recalls it.
    let theirs = case.site.dir.path().join("theirs");
    std::fs::write(&theirs, b"another file's archived bytes").expect("w");
    let put = case.site.run(
        &[
            "store",
            "put",
            theirs.to_str().expect("utf-8"),
            "shared/name.dat",
        ],
        &[],
    );
    assert!(put.status.success(), "{}", text(&put.stderr));

    let out = case.archive(&[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v = summary(&out);
    assert_eq!(v["skipped"]["key-in-use"], 1, "{v}");
    assert_eq!(v["archived"], 1, "the other file is archived: {v}");
    assert!(text(&out.stderr).contains("key-in-use"));
    assert_untouched(&case, "shared/name.dat", &data);
    assert_eq!(
        case.object("shared/name.dat").as_deref(),
        Some(&b"another file's archived bytes"[..])
    );
}

async fn killed_between_upload_and_mark_the_next_run_reuses_the_object(b: Backend) {
    let case = Case::new(b);
    let data = crate::common::data(7 << 20, 8);
    case.brick.add("video.mp4", &data);
    let flag = case.site.dir.path().join("paused");
    let mut child = case.paused(&flag);
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert_untouched(&case, "video.mp4", &data);
    assert_eq!(case.object("video.mp4").as_deref(), Some(&data[..]));

    let v = ok(&case.archive(&[], &[]));
    assert_eq!(
        (v["archived"].as_u64(), v["reused"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(v["bytes_up"], 0, "nothing sent again: {v}");
    assert_eq!(case.recall("video.mp4"), data);
}

async fn a_cs_remote_gluster_recorded_elsewhere_gets_a_copy_and_exit_1(b: Backend) {
    let case = Case::new(b);
    let data = crate::common::data(30_000, 9);
    case.brick.add("projects/plan.odt", &data);
    case.brick.add("projects/zz-later.odt", b"later");
    let out = case.archive(&[], &[("BARMANS3_TEST_CS_REMOTE_PREFIX", "moved/")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("cs.remote") && err.contains("was copied to"),
        "{err}"
    );
    let v = summary(&out);
    assert_eq!(v["archived"], 1, "the run stops after it: {v}");
    let p = case.brick.path("projects/plan.odt");
    assert_eq!(
        attr(&p, "trusted.glusterfs.cs.remote").as_deref(),
        Some("moved/projects/plan.odt")
    );
    assert_eq!(
        case.recall("projects/plan.odt"),
        data,
        "recall finds the copy"
    );
    assert_untouched(&case, "projects/zz-later.odt", b"later");
}

async fn a_dry_run_changes_nothing(b: Backend) {
    let case = Case::new(b);
    let (_held, _) = never_archive_fixture(&case);
    case.brick.add("data/second.bin", b"second");
    let before = contents(&case.brick.root);
    let out = case.archive(&["--dry-run"], &[]);
    let v = ok(&out);
    assert_eq!(
        (v["would_archive"].as_u64(), v["archived"].as_u64()),
        (Some(2), Some(0)),
        "{v}"
    );
    assert_eq!(v["skipped"]["hardlink"], 2);
    assert_eq!(v["requests"].get("put"), None, "{v}");
    assert_eq!(contents(&case.brick.root), before);
    assert!(case.object("data/good.bin").is_none());
    assert!(
        !case.site.dir.path().join("state/archive").exists(),
        "no lock, no journal"
    );

    // Without --json the plan is on stdout: size, volume path, key.
    let root = case.brick.root.to_str().expect("utf-8");
    let plain = case.site.run(
        &[
            "archive",
            root,
            "--mount",
            root,
            "--older-than",
            "0s",
            "--bucketid",
            &case.bucketid,
            "--xattr-ns",
            "user",
            "--emulate-cloudsync",
            "--dry-run",
        ],
        &[("BARMANS3_TEST", "1")],
    );
    assert!(plain.status.success(), "{}", text(&plain.stderr));
    let plan = text(&plain.stdout);
    assert!(
        plan.lines()
            .any(|l| l.starts_with("100000\t/data/good.bin\t")),
        "{plan}"
    );
    assert_eq!(plan.lines().count(), 2, "{plan}");
}

async fn max_files_and_max_bytes_bound_the_run(b: Backend) {
    let case = Case::new(b);
    for i in 0..5 {
        case.brick.add(&format!("f{i}"), &[b'a' + i as u8; 1000]);
    }
    let v = ok(&case.archive(&["--max-files", "2"], &[]));
    assert_eq!(
        (v["archived"].as_u64(), v["limit_reached"].as_bool()),
        (Some(2), Some(true)),
        "{v}"
    );
    assert_archived(&case, "f0", 1000);
    assert_archived(&case, "f1", 1000);
    let v = ok(&case.archive(&["--max-bytes", "2500"], &[]));
    assert_eq!(
        (v["archived"].as_u64(), v["limit_reached"].as_bool()),
        (Some(2), Some(true)),
        "{v}"
    );
    assert_untouched(&case, "f4", &[b'e'; 1000]);
    let v = ok(&case.archive(&["--max-bytes", "2500"], &[]));
    assert_eq!(
        (v["archived"].as_u64(), v["limit_reached"].as_bool()),
        (Some(1), Some(false)),
        "{v}"
    );
    assert_eq!(case.recall("f4"), vec![b'e'; 1000]);
}

on_both!(
    archives_and_recalls_identical_bytes,
    every_never_archive_reason_is_skipped_and_counted,
    a_write_after_the_upload_is_not_marked_and_the_next_run_archives,
    a_same_size_rewrite_with_its_mtime_put_back_is_caught_by_ctime,
    a_key_in_use_is_refused_and_nothing_is_truncated,
    killed_between_upload_and_mark_the_next_run_reuses_the_object,
    a_cs_remote_gluster_recorded_elsewhere_gets_a_copy_and_exit_1,
    a_dry_run_changes_nothing,
    max_files_and_max_bytes_bound_the_run,
);

#[test]
fn a_write_while_a_part_is_stalled_is_not_marked_and_the_next_run_archives() {
    let g = crate::common::garage();
    let proxy = FaultProxy::start(g.endpoint(), 0.0, 1, Duration::from_secs(3));
    let prefix = crate::common::unique("archive-stall");
    let case = Case {
        site: Site::new(&g.yaml(&prefix).replace(g.endpoint(), &proxy.endpoint)),
        brick: Brick::new(),
        bucketid: format!("{}/{prefix}", g.bucket()),
    };
    let data = crate::common::data(12 << 20, 10);
    let p = case.brick.add("images/disk.img", &data);
    proxy.hold("partNumber=2");
    let mut child = case
        .command(&[], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !proxy.holding() {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "archive ended before part 2"
        );
        assert!(Instant::now() < deadline, "part 2 never reached the proxy");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"written during the upload"))
        .expect("append");
    proxy.release();
    let v = ok(&child.wait_with_output().expect("wait"));
    assert_eq!(
        (v["archived"].as_u64(), v["skipped"]["changed"].as_u64()),
        (Some(0), Some(1)),
        "{v}"
    );
    let mut now = data.clone();
    now.extend_from_slice(b"written during the upload");
    assert_untouched(&case, "images/disk.img", &now);

    let v = ok(&case.archive(&[], &[]));
    assert_eq!(v["archived"], 1, "{v}");
    assert_eq!(case.recall("images/disk.img"), now);
}

/// A `gluster` stand-in on PATH that prints `volume get` output with these option lines and
/// records its arguments.
fn fake_gluster(dir: &Path, options: &str) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let script = format!(
        "#!/bin/sh\necho \"$@\" > {args}\ncat <<'EOF'\nOption                                   Value\n------                                   -----\n{options}EOF\n",
        args = dir.join("gluster-args").display()
    );
    std::fs::write(bin.join("gluster"), script).expect("script");
    std::fs::set_permissions(bin.join("gluster"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `archive` on a file:// site with `--volume VOL` instead of `--bucketid`.
fn with_volume(case: &Case, path_env: &str) -> Output {
    let root = case.brick.root.to_str().expect("utf-8");
    Command::new(BIN)
        .arg("--config")
        .arg(&case.site.cfg)
        .args([
            "--json",
            "archive",
            root,
            "--mount",
            root,
            "--older-than",
            "0s",
        ])
        .args([
            "--volume",
            "vol",
            "--xattr-ns",
            "user",
            "--emulate-cloudsync",
        ])
        .env("BARMANS3_TEST", "1")
        .env("PATH", path_env)
        .output()
        .expect("run")
}

#[test]
fn the_volume_settings_from_gluster_are_checked_before_anything() {
    let good = "features.cloudsync                       on\nfeatures.cloudsync-storetype             cloudsyncs3\nfeatures.s3plugin-seckey                 TOPSECRETKEY\nfeatures.s3plugin-bucketid               bucket\nfeatures.cloudsync-remote-read           off (DEFAULT)\n";
    let refusals = [
        (
            good.replace(
                "cloudsync                       on",
                "cloudsync                       off",
            ),
            "features.cloudsync is not on",
        ),
        (good.replace("cloudsyncs3", "amazons3"), "not cloudsyncs3"),
        (good.replace("off (DEFAULT)", "on"), "remote-read is on"),
        (
            good.replace(
                "bucketid               bucket",
                "bucketid               bucket/sub",
            ),
            "s3plugin-bucketid",
        ),
    ];
    for (opts, want) in refusals {
        let case = Case::new(Backend::Local);
        case.brick.add("a.txt", b"cold");
        let path = fake_gluster(case.site.dir.path(), &opts);
        let out = with_volume(&case, &path);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{want}: {err}");
        assert!(
            err.contains(want) && err.lines().count() == 1,
            "{want}: {err}"
        );
        assert!(!err.contains("TOPSECRETKEY") && !text(&out.stdout).contains("TOPSECRETKEY"));
        assert_untouched(&case, "a.txt", b"cold");
    }
    let case = Case::new(Backend::Local);
    case.brick.add("a.txt", b"cold");
    let path = fake_gluster(case.site.dir.path(), good);
    let v = ok(&with_volume(&case, &path));
    assert_eq!(v["archived"], 1, "{v}");
    let args = std::fs::read_to_string(case.site.dir.path().join("gluster-args")).expect("args");
    assert_eq!(args.trim(), "--mode=script volume get vol all");
}

#[test]
fn without_gluster_installed_volume_is_refused_in_one_line() {
    let case = Case::new(Backend::Local);
    case.brick.add("a.txt", b"cold");
    let out = with_volume(&case, "/nonexistent");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("gluster command") && err.contains("--bucketid"),
        "{err}"
    );
    assert_untouched(&case, "a.txt", b"cold");
}

#[test]
fn setups_that_would_archive_unrecallably_are_refused() {
    let g = crate::common::garage();
    let case = Case::new(Backend::Garage);
    case.brick.add("a.txt", b"cold");
    let root = case.brick.root.to_str().expect("utf-8");
    let sub = case.brick.path("sub");
    std::fs::create_dir_all(&sub).expect("mkdir");
    set_attr(&sub, "trusted.gfid", &[9; 16]);
    let base = [
        "archive",
        root,
        "--older-than",
        "0s",
        "--xattr-ns",
        "user",
        "--emulate-cloudsync",
    ];
    let test = [("BARMANS3_TEST", "1")];
    let cases: Vec<(Vec<&str>, &[(&str, &str)], &str)> = vec![
        (
            vec!["--mount", root, "--bucketid", g.bucket()],
            &test,
            "does not name this store",
        ),
        (
            vec![
                "--mount",
                sub.to_str().expect("utf-8"),
                "--bucketid",
                &case.bucketid,
            ],
            &test,
            "not the volume's root",
        ),
        (
            vec!["--mount", root, "--bucketid", &case.bucketid],
            &[],
            "BARMANS3_TEST=1",
        ),
        (
            vec![
                "--mount",
                root,
                "--bucketid",
                &case.bucketid,
                "--max-files",
                "0",
            ],
            &test,
            "above 0",
        ),
    ];
    for (extra, env, want) in cases {
        let mut args = base.to_vec();
        args.extend(extra);
        let out = case.site.run(&args, env);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{want}: {err}");
        assert!(err.contains(want), "{want}: {err}");
    }
    assert_untouched(&case, "a.txt", b"cold");
    assert!(case.object("a.txt").is_none());
}
