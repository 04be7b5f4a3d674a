//! The shared three-node cluster (started once per test process, killed node by node) and the
//! helpers of its tests: a fast 1 GiB content generator, bounded waits, byte comparisons.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::common::site::{BIN, PLUGIN, Site, write_backup};
use crate::common::{repo, start_s3_server};

pub(super) const MIB: u64 = 1 << 20;
/// The node killed mid-upload; clients talk to node 1, which stays up.
pub(super) const VICTIM: u8 = 2;
/// Longer than any healthy run on 2 cores: past it a run has hung, and the test says so.
pub(super) const RUN_LIMIT: Duration = Duration::from_secs(300);

/// A running three-node cluster and the client environment it printed.
pub(super) struct Cluster {
    env: HashMap<String, String>,
    dir: PathBuf,
}

pub(super) fn cluster() -> &'static Cluster {
    static C: OnceLock<Cluster> = OnceLock::new();
    C.get_or_init(|| {
        let (dir, env) = start_s3_server("start-cluster", "garage-cluster");
        Cluster { env, dir }
    })
}

impl Cluster {
    pub(super) fn var(&self, name: &str) -> &str {
        self.env
            .get(&format!("BARMANS3_TEST_S3_{name}"))
            .unwrap_or_else(|| panic!("start-cluster printed no {name}"))
    }

    fn script(&self, verb: &str, nodes: &[u8]) {
        let out = Command::new(repo().join("scripts/s3-server"))
            .arg(verb)
            .arg(&self.dir)
            .args(nodes.iter().map(u8::to_string))
            .output()
            .expect("run scripts/s3-server");
        assert!(
            out.status.success(),
            "{verb} {nodes:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Kills node `n`; it comes back on [`Down::up`], or when the guard drops (a failed test
    /// must not leave the next one a degraded cluster).
    pub(super) fn kill(&self, n: u8) -> Down<'_> {
        self.kill_nodes(&[n])
    }

    /// Kills each of `nodes`, one after the other; they come back together, as [`Cluster::kill`].
    pub(super) fn kill_nodes(&self, nodes: &[u8]) -> Down<'_> {
        let mut down = Down {
            cluster: self,
            nodes: Vec::new(),
        };
        for &n in nodes {
            self.script("kill-node", &[n]);
            down.nodes.push(n);
        }
        down
    }

    /// A barmans3 store config on node 1 with a key prefix.
    pub(super) fn yaml(&self, prefix: &str) -> String {
        self.yaml_at(1, prefix)
    }

    /// A barmans3 store config on node `n` with a key prefix.
    pub(super) fn yaml_at(&self, n: u8, prefix: &str) -> String {
        self.store_yaml(n, prefix, "connect_timeout: 2s\n  read_timeout: 20s")
    }

    /// A store config on node 1 that gives up soon: two attempts of short timeouts per request.
    /// Its uploads are held to 32 MiB/s, so a kill a second into a run of a few hundred MiB
    /// lands mid-upload on any machine: uncapped, a fast one finishes 256 MiB in the moment
    /// between seeing the first bytes stored and the second node's kill.
    pub(super) fn yaml_impatient(&self, prefix: &str) -> String {
        self.store_yaml(
            1,
            prefix,
            "max_attempts: 2\n  connect_timeout: 1s\n  read_timeout: 10s\n  max_bandwidth: 32MiB",
        )
    }

    fn store_yaml(&self, n: u8, prefix: &str, limits: &str) -> String {
        format!(
            "s3:\n  endpoint: {}\n  region: garage\n  bucket: {}\n  prefix: {prefix}\n  access_key_id: {}\n  secret_access_key: {}\n  part_size: 16MiB\n  concurrency: 4\n  {limits}\n",
            self.var(&format!("ENDPOINT_{n}")),
            self.var("BUCKET"),
            self.var("ACCESS_KEY_ID"),
            self.var("SECRET_ACCESS_KEY"),
        )
    }

    /// A gpbackup plugin config on node 1.
    pub(super) fn plugin_yaml(&self, folder: &str) -> String {
        format!(
            "executablepath: {PLUGIN}\noptions:\n  endpoint: {}\n  region: garage\n  aws_access_key_id: {}\n  aws_secret_access_key: {}\n  bucket: {}\n  folder: {folder}\n  backup_multipart_chunksize: 16MB\n  backup_max_concurrent_requests: 3\n  restore_multipart_chunksize: 16MB\n  restore_max_concurrent_requests: 3\n",
            self.var("ENDPOINT_1"),
            self.var("ACCESS_KEY_ID"),
            self.var("SECRET_ACCESS_KEY"),
            self.var("BUCKET"),
        )
    }

    /// Bytes in node `n`'s data directory: grows as blocks reach it.
    pub(super) fn stored(&self, n: u8) -> u64 {
        walkdir::WalkDir::new(self.dir.join(format!("node{n}/data")))
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    }
}

/// Killed nodes, started again by [`Down::up`] or on drop.
pub(super) struct Down<'a> {
    cluster: &'a Cluster,
    nodes: Vec<u8>,
}

impl Down<'_> {
    pub(super) fn up(mut self) {
        let nodes = std::mem::take(&mut self.nodes);
        self.cluster.script("start-node", &nodes);
    }
}

impl Drop for Down<'_> {
    fn drop(&mut self) {
        if !self.nodes.is_empty() {
            let _ = Command::new(repo().join("scripts/s3-server"))
                .arg("start-node")
                .arg(&self.cluster.dir)
                .args(self.nodes.iter().map(u8::to_string))
                .output();
        }
    }
}

/// One test at a time on the shared cluster; a failed test's poison does not stop the next.
pub(super) fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `len` bytes of content that differs in every MiB (a random MiB stamped with its index), made
/// as fast as memory copies so 1 GiB costs no test time, and regenerated for comparisons.
pub(super) struct Pattern {
    block: Vec<u8>,
    len: u64,
    pos: u64,
}

impl Pattern {
    pub(super) fn new(seed: u64, len: u64) -> Pattern {
        Pattern {
            block: crate::common::data(MIB as usize, seed),
            len,
            pos: 0,
        }
    }
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let off = (self.pos % MIB) as usize;
        let n = buf
            .len()
            .min(MIB as usize - off)
            .min((self.len - self.pos) as usize);
        buf[..n].copy_from_slice(&self.block[off..off + n]);
        let stamp = (self.pos / MIB).to_le_bytes();
        if off < 8 {
            let end = (off + n).min(8);
            buf[..end - off].copy_from_slice(&stamp[off..end]);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

pub(super) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]).expect("read") {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// Whether both readers yield the same bytes, compared a MiB at a time.
pub(super) fn same(mut a: impl Read, mut b: impl Read) -> bool {
    let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    loop {
        let (na, nb) = (read_full(&mut a, &mut ba), read_full(&mut b, &mut bb));
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

/// Waits for `child`, killing it and failing the test past [`RUN_LIMIT`].
pub(super) fn wait_bounded(child: &mut Child, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            panic!("{what} still running after {RUN_LIMIT:?} with a node down: it hung");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A failed run says why in exactly one error line (`marker` starts it), never a panic.
pub(super) fn one_clear_line(status: ExitStatus, err: &str, marker: &str) {
    let errors: Vec<&str> = err.lines().filter(|l| l.contains(marker)).collect();
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(errors.len(), 1, "one error line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    eprintln!("failed clearly with the node down: {}", errors[0]);
}

pub(super) fn files_under(root: &Path) -> BTreeSet<PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.expect("walk"))
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            e.path()
                .strip_prefix(root)
                .expect("under root")
                .to_path_buf()
        })
        .collect()
}

pub(super) fn open(p: &Path) -> std::fs::File {
    std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `base-restore` of `id` into a fresh directory gives exactly the files of `data`.
pub(super) fn restore_matches(site: &Site, id: &str, data: &Path, name: &str) {
    let dest = site.dir.path().join(name);
    let out = site.run(
        &["base-restore", "pg", id, dest.to_str().expect("utf8")],
        &[],
    );
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = files_under(data);
    assert_eq!(files_under(&dest), files, "{name}: the restored files");
    for f in &files {
        assert!(
            same(open(&data.join(f)), open(&dest.join(f))),
            "{name}: {} differs",
            f.display()
        );
    }
    std::fs::remove_dir_all(&dest).expect("rm restore");
}

/// A Barman backup `id` of 1 GiB in three relation files; returns its data directory.
pub(super) fn one_gib_backup(site: &Site, id: &str) -> PathBuf {
    backup_of(
        site,
        id,
        &[
            ("16400", 512 * MIB, 1),
            ("16400.1", 384 * MIB, 2),
            ("16410", 128 * MIB - 12345, 3),
        ],
    )
}

/// A Barman backup `id` whose relation files are `(name, length, seed)` of [`Pattern`];
/// returns its data directory.
pub(super) fn backup_of(site: &Site, id: &str, files: &[(&str, u64, u64)]) -> PathBuf {
    write_backup(site, id, "DONE");
    let data = site.dir.path().join("barman/pg/base").join(id).join("data");
    let rel = data.join("base/16384");
    std::fs::create_dir_all(&rel).expect("mkdir");
    for &(name, len, seed) in files {
        let mut f = std::fs::File::create(rel.join(name)).expect("create");
        std::io::copy(&mut Pattern::new(seed, len), &mut f).expect("write");
    }
    std::fs::write(
        site.dir.path().join("barman/pg/identity.json"),
        r#"{"systemid": "7311111111111111111", "version": "15.18"}"#,
    )
    .expect("identity");
    data
}

/// Starts `base-sync` in the background, its stderr going to `log`.
pub(super) fn spawn_base_sync(site: &Site, log: &Path) -> Child {
    Command::new(BIN)
        .arg("--config")
        .arg(&site.cfg)
        .arg("base-sync")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("spawn base-sync")
}

/// Waits until node 1 stored `bytes` more than `before`, failing if `child` ends first.
pub(super) fn wait_stored(c: &Cluster, before: u64, bytes: u64, child: &mut Child, log: &Path) {
    while c.stored(1) < before + bytes {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "base-sync ended before the nodes were killed: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The queue files of backup `id` (`<id>.run`, `<id>.done`, …).
pub(super) fn queue_states(queue: &Path, id: &str) -> Vec<String> {
    std::fs::read_dir(queue)
        .expect("queue")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(id))
        .collect()
}
