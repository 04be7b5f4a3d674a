//! Test support: a real Garage started through `scripts/s3-server` (once for the whole run,
//! stopped when the test process exits), stores for both backends, unique prefixes.

pub mod faults;
pub mod gluster;
pub mod moto;
pub mod site;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use barmans3::config::Config;
use barmans3::store::Location;
use barmans3::store::{self, ListRequest, ObjectMeta, SharedStore};
use barmans3::transfer::Settings;
use barmans3::transfer::Transfer;

/// A running Garage and the client environment it printed.
#[derive(Debug)]
pub struct Garage {
    pub env: HashMap<String, String>,
}

impl Garage {
    pub fn endpoint(&self) -> &str {
        &self.env["BARMANS3_TEST_S3_ENDPOINT"]
    }
    pub fn bucket(&self) -> &str {
        &self.env["BARMANS3_TEST_S3_BUCKET"]
    }
    pub fn key_id(&self) -> &str {
        &self.env["BARMANS3_TEST_S3_ACCESS_KEY_ID"]
    }
    pub fn secret(&self) -> &str {
        &self.env["BARMANS3_TEST_S3_SECRET_ACCESS_KEY"]
    }
    /// A barmans3 YAML config for this server with a key prefix.
    pub fn yaml(&self, prefix: &str) -> String {
        format!(
            "s3:\n  endpoint: {}\n  region: garage\n  bucket: {}\n  prefix: {prefix}\n  access_key_id: {}\n  secret_access_key: {}\n  part_size: 5MiB\n  concurrency: 4\n  max_attempts: 3\n  connect_timeout: 2s\n  read_timeout: 20s\n",
            self.endpoint(),
            self.bucket(),
            self.key_id(),
            self.secret()
        )
    }
    pub fn config(&self, prefix: &str) -> Config {
        Config::parse(&self.yaml(prefix), None).expect("test config is valid")
    }
}

/// The host directory the defaults name (queue, state): a test never writes there, since a
/// root-owned directory it created would outlive it on a machine that installs the package later.
pub const HOST_STATE: &str = "/var/lib/barmans3";

/// Held by the tests that install into the host (the packaged walkthrough: /usr/bin, /etc,
/// /var/lib/barmans3) and by those that look at the host's paths, so neither sees the other.
pub static HOST_PATHS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`HOST_PATHS`] (a test that panicked holding it leaves it usable).
pub fn host_paths() -> std::sync::MutexGuard<'static, ()> {
    HOST_PATHS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The config lines that keep a run's own files (task queue; state: journals, ledgers, locks, the
/// checksum probe's cache) inside `dir`. Every config a test writes for the binary names them.
pub fn scratch_yaml(dir: &Path) -> String {
    format!(
        "state:\n  dir: {d}/state\n  queue_dir: {d}/queue\n",
        d = dir.display()
    )
}

/// A config that names the host's directories (an imported one), with them moved under `dir`.
pub fn into_scratch(yaml: &str, dir: &Path) -> String {
    yaml.replace(HOST_STATE, &dir.display().to_string())
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Garage of this test process. A missing server is a failure with the remedy, never a skip.
pub fn garage() -> &'static Garage {
    static G: OnceLock<Garage> = OnceLock::new();
    G.get_or_init(|| Garage {
        env: start_s3_server("start", "garage").1,
    })
}

/// Runs `scripts/s3-server VERB DIR --owner-pid <this process>` (`start`, `start-cluster`) with
/// a fresh DIR under the test tmpdir, and returns DIR and the `KEY=VALUE` lines it printed. The
/// servers stop, and their data goes, when this test process ends.
pub fn start_s3_server(verb: &str, name: &str) -> (PathBuf, HashMap<String, String>) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let out = std::process::Command::new(repo().join("scripts/s3-server"))
        .arg(verb)
        .arg(&dir)
        .arg("--owner-pid")
        .arg(std::process::id().to_string())
        .output()
        .expect("run scripts/s3-server");
    assert!(
        out.status.success(),
        "scripts/s3-server {verb} could not start Garage: {}\nInstall it with: scripts/test-deps (or scripts/s3-server install: cargo install --locked garage --version 2.5.0)",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    (dir, env)
}

pub fn unique(name: &str) -> String {
    format!("t-{name}-{:08x}", rand::random::<u32>())
}

/// Runs each case (an `async fn(Backend)`) against both backends: one test per case in
/// `mod local` and one in `mod garage`.
macro_rules! on_both {
    ($($case:ident),* $(,)?) => {
        mod local {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case(super::Backend::Local).await })*
        }
        mod garage {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case(super::Backend::Garage).await })*
        }
    };
}
pub(crate) use on_both;

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Local,
    Garage,
}

/// A store of the given backend, a prefix unique to the test, and the temp dir that must live
/// as long as the store.
pub async fn open(
    backend: Backend,
    name: &str,
) -> (SharedStore, String, Option<tempfile::TempDir>) {
    let prefix = unique(name);
    match backend {
        Backend::Local => {
            let dir = tempfile::tempdir().expect("tempdir");
            let cfg = Config::for_location(Location::Local {
                root: dir.path().to_path_buf(),
            });
            (
                store::open(&cfg.location, &cfg.s3)
                    .await
                    .expect("open local"),
                prefix,
                Some(dir),
            )
        }
        Backend::Garage => {
            let cfg = garage().config(&prefix);
            (
                store::open(&cfg.location, &cfg.s3)
                    .await
                    .expect("open garage"),
                prefix,
                None,
            )
        }
    }
}

pub fn small_transfer() -> Settings {
    Settings {
        part_size: 5 << 20,
        concurrency: 4,
        max_attempts: 3,
        ..Settings::default()
    }
}

/// Held by each test that writes gigabytes, so that at most one does at a time: together they
/// would need the sum of their sizes free (the run's disk peak on a small CI disk), one at a
/// time the largest. Taken before the test writes, and its free space checked after.
pub fn heavy_disk() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fails at once, saying so, when the filesystem of `dir` has less than `bytes` free: a test
/// that writes gigabytes would otherwise fail later with an error that reads like a defect.
pub fn need_free(dir: &Path, bytes: u64) {
    let st = rustix::fs::statvfs(dir).expect("statvfs");
    let free = st.f_bavail * st.f_frsize;
    assert!(
        free >= bytes,
        "this test needs {} MiB free under {} and has {} MiB: free some space or point TMPDIR \
         at a larger filesystem",
        bytes >> 20,
        dir.display(),
        free >> 20
    );
}

pub fn data(len: usize, seed: u64) -> Vec<u8> {
    // Deterministic, incompressible enough, cheap.
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Runs a future to completion on a fresh runtime, for tests that are not async themselves.
pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// A transfer engine on the test Garage's bucket, without a prefix (keys are full keys).
pub async fn garage_transfer() -> Transfer {
    let st = store::open(&garage().config("").location, &garage().config("").s3)
        .await
        .expect("open store");
    Transfer::new(st, small_transfer())
}

/// The keys under `prefix` in the test Garage's bucket, from a fresh client.
pub fn garage_keys(prefix: &str) -> BTreeSet<String> {
    block_on(async {
        let t = garage_transfer().await;
        list_garage(&t, prefix)
            .await
            .into_iter()
            .map(|o| o.key)
            .collect()
    })
}

/// Every object under `prefix` in the test Garage's bucket.
pub async fn list_garage(t: &Transfer, prefix: &str) -> Vec<ObjectMeta> {
    t.list_all(&ListRequest {
        prefix: prefix.to_string(),
        start_after: None,
        delimiter: None,
        max_keys: None,
    })
    .await
    .expect("list")
}

/// A second bucket on the test Garage, for replication: the test key may read and write it
/// (so copies between the two buckets can be server-side), and a key of its own reaches only
/// it (so copies made with that key must pass through the client).
#[derive(Debug)]
pub struct SecondBucket {
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
}

impl Garage {
    /// Runs Garage's admin CLI against this server.
    fn admin(&self, args: &[&str]) -> String {
        let home = std::env::var("CARGO_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
            });
        let bin = ["/usr/local/bin/garage", "/usr/bin/garage"]
            .into_iter()
            .map(PathBuf::from)
            .chain([home.join("bin/garage")])
            .find(|p| p.exists())
            .expect("the garage binary (scripts/test-deps installs it)");
        let out = std::process::Command::new(bin)
            .arg("-c")
            .arg(&self.env["BARMANS3_TEST_S3_CONFIG"])
            .args(args)
            .output()
            .expect("run garage");
        assert!(
            out.status.success(),
            "garage {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The second bucket (made once per test process).
    pub fn second_bucket(&self) -> &'static SecondBucket {
        static B: OnceLock<SecondBucket> = OnceLock::new();
        B.get_or_init(|| {
            let b = SecondBucket {
                bucket: "barmans3-replica".into(),
                key_id: format!("GK{:024x}", rand::random::<u128>() >> 32),
                secret: format!(
                    "{:032x}{:032x}",
                    rand::random::<u128>(),
                    rand::random::<u128>()
                ),
            };
            self.admin(&["bucket", "create", &b.bucket]);
            self.admin(&[
                "key",
                "import",
                "--yes",
                "-n",
                "barmans3-replica",
                &b.key_id,
                &b.secret,
            ]);
            for key in ["barmans3-test", "barmans3-replica"] {
                self.admin(&[
                    "bucket", "allow", "--read", "--write", "--owner", &b.bucket, "--key", key,
                ]);
            }
            b
        })
    }

    /// A `stores:` entry for the second bucket: with the test key (`own_key` false: server-side
    /// copies possible) or with its own key (copies streamed).
    pub fn second_store_yaml(&self, name: &str, prefix: &str, own_key: bool) -> String {
        let b = self.second_bucket();
        let (id, secret) = if own_key {
            (b.key_id.as_str(), b.secret.as_str())
        } else {
            (self.key_id(), self.secret())
        };
        format!(
            "stores:\n  {name}:\n    s3:\n      endpoint: {}\n      region: garage\n      bucket: {}\n      prefix: {prefix}\n      access_key_id: {id}\n      secret_access_key: {secret}\n      part_size: 5MiB\n      concurrency: 4\n      max_attempts: 3\n      connect_timeout: 2s\n      read_timeout: 20s\n",
            self.endpoint(),
            b.bucket
        )
    }
}
