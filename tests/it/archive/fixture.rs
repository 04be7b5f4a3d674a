//! The fake brick and the helpers of the `archive` tests: Gluster's xattrs in `user.*`, a site
//! on either backend, running `archive` with the test switches, and recall as cloudsync does it.

use std::fs::{File, FileTimes};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::common::Backend;
use crate::common::faults::FaultProxy;
use crate::common::site::{BIN, Site};

pub(super) const ROOT_GFID: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub(super) const DAY: Duration = Duration::from_secs(86400);

/// `user.` name of a Gluster `trusted.` xattr (the tests run with `--xattr-ns user`).
pub(super) fn user(trusted: &str) -> String {
    format!("user.{}", trusted.trim_start_matches("trusted."))
}

pub(super) fn attr(path: &Path, trusted: &str) -> Option<String> {
    xattr::get(path, user(trusted))
        .expect("getxattr")
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

pub(super) fn set_attr(path: &Path, trusted: &str, value: &[u8]) {
    xattr::set(path, user(trusted), value).expect("setxattr");
}

pub(super) fn gfid_string(g: &[u8]) -> String {
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
pub(super) struct Brick {
    _dir: tempfile::TempDir,
    pub(super) root: PathBuf,
}

impl Brick {
    pub(super) fn new() -> Brick {
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

    pub(super) fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// A volume file: content, a random gfid, its `.glusterfs` handle, mtime 60 days ago.
    pub(super) fn add(&self, rel: &str, data: &[u8]) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, data).expect("write");
        self.adopt(rel);
        backdate(&p);
        p
    }

    /// Gives an existing file a gfid and its handle link.
    pub(super) fn adopt(&self, rel: &str) -> [u8; 16] {
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

pub(super) fn backdate(p: &Path) {
    File::options()
        .write(true)
        .open(p)
        .and_then(|f| f.set_times(FileTimes::new().set_modified(SystemTime::now() - 60 * DAY)))
        .expect("backdate");
}

/// A brick, a site on the backend, and the bucketid the volume would have.
pub(super) struct Case {
    pub(super) site: Site,
    pub(super) brick: Brick,
    pub(super) bucketid: String,
}

impl Case {
    /// A case on Garage with every request through `proxy`.
    pub(super) fn through(proxy: &FaultProxy, name: &str) -> Case {
        let g = crate::common::garage();
        let prefix = crate::common::unique(name);
        Case {
            site: Site::new(&g.yaml(&prefix).replace(g.endpoint(), &proxy.endpoint)),
            brick: Brick::new(),
            bucketid: format!("{}/{prefix}", g.bucket()),
        }
    }

    pub(super) fn new(backend: Backend) -> Case {
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

    pub(super) fn command(&self, extra: &[&str], env: &[(&str, &str)]) -> Command {
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

    pub(super) fn archive(&self, extra: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(extra, env).output().expect("run archive")
    }

    /// Starts an archive that pauses after its upload; returns once it is paused there.
    pub(super) fn paused(&self, flag: &Path) -> Child {
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
    pub(super) fn object(&self, key: &str) -> Option<Vec<u8>> {
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
    pub(super) fn recall(&self, rel: &str) -> Vec<u8> {
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

pub(super) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The run summary (`--json`, the last line of stdout).
pub(super) fn summary(out: &Output) -> serde_json::Value {
    let stdout = text(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("summary {line:?}: {e}; stderr: {}", text(&out.stderr)))
}

pub(super) fn ok(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "archive failed: {}",
        text(&out.stderr)
    );
    summary(out)
}

pub(super) fn len(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).expect("stat").len()
}

/// Asserts that `rel` is archived as Gluster leaves it: empty on the brick, the size stat
/// reports in `cs.object_size`, `cs.remote` the volume path.
pub(super) fn assert_archived(case: &Case, rel: &str, size: usize) {
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

pub(super) fn assert_untouched(case: &Case, rel: &str, data: &[u8]) {
    let p = case.brick.path(rel);
    assert_eq!(std::fs::read(&p).expect("read"), data, "{rel} unchanged");
    assert_eq!(
        attr(&p, "trusted.glusterfs.cs.remote"),
        None,
        "{rel} not marked"
    );
}

/// One file per reason of spec §1.4 (and `no-gfid`), plus one file that is archived.
pub(super) fn never_archive_fixture(case: &Case) -> (File, Vec<(&'static str, u64)>) {
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

pub(super) fn contents(root: &Path) -> Vec<(PathBuf, Vec<u8>, Option<String>)> {
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
