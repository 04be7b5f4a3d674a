//! The real GlusterFS of the tests (Debian's glusterfs-server): one glusterd per machine, started
//! by `scripts/gluster-server` once per test process and stopped when the process exits (or
//! cleared by the next start after a crash). Volumes are created on demand, one set per test,
//! with bricks and mounts in the server's scratch directory. glusterd serialises its own
//! transactions and glusterfind sessions are stateful, so the Gluster tests of a process run one
//! at a time ([`serial`]); other processes wait for the machine's lock in the script.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::repo;

/// The running glusterd: the scratch directory of its bricks, mounts and logs.
#[derive(Debug)]
pub struct Gluster {
    pub dir: PathBuf,
    /// The host name bricks are created on (it resolves to a loopback address).
    pub host: String,
}

/// The test process's Gluster. A missing package or device is a failure that says how to
/// install it, never a skip.
pub fn gluster() -> &'static Gluster {
    static G: OnceLock<Gluster> = OnceLock::new();
    G.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("gluster-{}", std::process::id()));
        let out = Command::new(repo().join("scripts/gluster-server"))
            .arg("start")
            .arg(&dir)
            .arg("--owner-pid")
            .arg(std::process::id().to_string())
            .output()
            .expect("run scripts/gluster-server");
        assert!(
            out.status.success(),
            "scripts/gluster-server could not start GlusterFS: {}\nInstall it with: scripts/test-deps (apt-get install glusterfs-server python3-pyxattr), as root with /dev/fuse",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = String::from_utf8_lossy(&out.stdout).into_owned();
        let get = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("gluster-server printed no {k}: {env}"))
                .to_string()
        };
        Gluster {
            dir: PathBuf::from(get("GLUSTER_DIR")),
            host: get("GLUSTER_HOST"),
        }
    })
}

/// One Gluster test at a time in this process (a failed test does not block the others).
pub fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a volume's bricks are arranged (all on this host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One brick.
    Single,
    /// Two bricks holding the same files.
    Replica2,
    /// Two bricks sharing the files by name hash.
    Distribute2,
}

/// A started, FUSE-mounted volume.
#[derive(Debug)]
pub struct Volume {
    pub name: String,
    pub bricks: Vec<PathBuf>,
    pub mnt: PathBuf,
}

impl Volume {
    /// The brick path of a volume file on brick `i`.
    pub fn on_brick(&self, i: usize, rel: &str) -> PathBuf {
        self.bricks[i].join(rel)
    }
}

/// The options of a cloudsync volume whose S3 plugin would recall from `bucketid`: the store
/// type Debian ships no plugin for (the mark-and-truncate is Gluster's own; recall is not), and
/// the two performance translators that otherwise crash the client on an archived file or hide
/// a bare open from the brick.
pub fn cloudsync(bucketid: &str) -> Vec<(String, String)> {
    [
        ("features.cloudsync", "on"),
        ("features.cloudsync-storetype", "cloudsyncs3"),
        ("features.s3plugin-bucketid", bucketid),
        ("performance.quick-read", "off"),
        ("performance.open-behind", "off"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Gluster {
    /// Runs `gluster --mode=script ARGS`; glusterd's "another transaction is in progress" is
    /// retried for a bounded time. Panics with the CLI's message on any other failure.
    pub fn cli(&self, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new("gluster")
                .arg("--mode=script")
                .args(args)
                .output()
                .expect("run gluster");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.success() {
                return text;
            }
            assert!(
                text.contains("Another transaction is in progress") && Instant::now() < deadline,
                "gluster {args:?} failed: {text}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Creates, configures and starts volume `name`, then mounts it. Every option is set before
    /// the mount: with cloudsync on and no store plugin, a client reconfigured while mounted
    /// crashes.
    pub fn volume(&self, name: &str, layout: Layout, options: &[(String, String)]) -> Volume {
        let n = if layout == Layout::Single { 1 } else { 2 };
        let bricks: Vec<PathBuf> = (1..=n)
            .map(|i| self.dir.join("bricks").join(format!("{name}{i}")))
            .collect();
        let specs: Vec<String> = bricks
            .iter()
            .map(|b| format!("{}:{}", self.host, b.display()))
            .collect();
        let mut args = vec!["volume", "create", name];
        if layout == Layout::Replica2 {
            args.extend(["replica", "2"]);
        }
        args.extend(specs.iter().map(String::as_str));
        // Bricks on the root filesystem, and two replicas on one host, need "force".
        args.push("force");
        self.cli(&args);
        for (k, v) in options {
            self.cli(&["volume", "set", name, k, v]);
        }
        self.cli(&["volume", "start", name]);
        let mnt = self.dir.join("mnt").join(name);
        self.mount(&format!("localhost:/{name}"), &mnt);
        Volume {
            name: name.to_string(),
            bricks,
            mnt,
        }
    }

    /// FUSE-mounts `source` (`localhost:/VOL` or `localhost:/VOL/SUBDIR`) on `mnt`.
    pub fn mount(&self, source: &str, mnt: &Path) {
        let out = Command::new(repo().join("scripts/gluster-server"))
            .arg("mount")
            .arg(&self.dir)
            .arg(source)
            .arg(mnt)
            .output()
            .expect("run gluster-server mount");
        assert!(
            out.status.success(),
            "mount {source}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Unmounts `mnt`.
    pub fn umount(&self, mnt: &Path) {
        let out = Command::new("umount").arg(mnt).output().expect("umount");
        assert!(
            out.status.success(),
            "umount {}: {}",
            mnt.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The process id of the brick process serving `brick` of `vol`.
    pub fn brick_pid(&self, vol: &str, brick: &Path) -> u32 {
        // glusterd names it HOST + the brick path with '/' as '-': vm-tmp-x-bricks-rep2.pid
        let name = format!(
            "{}{}",
            self.host,
            brick.display().to_string().replace('/', "-")
        );
        let file = Path::new("/var/run/gluster/vols")
            .join(vol)
            .join(format!("{name}.pid"));
        std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .trim()
            .parse()
            .expect("pid")
    }

    /// Runs `glusterfind ARGS`.
    pub fn glusterfind(&self, args: &[&str]) -> Output {
        Command::new("glusterfind")
            .args(args)
            .output()
            .expect("run glusterfind")
    }
}

/// Polls `ok` every 100 ms until it holds; panics naming `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
