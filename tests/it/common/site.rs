//! A generated Barman-like site (a Barman home with server `pg`, a barmans3 config, queue and
//! state) and helpers to fill it, shared by the tests that run the binary on it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_barmans3");
/// The lean restore_command.
pub const LEAN: &str = env!("CARGO_BIN_EXE_barmans3-wal-restore");
pub const PLUGIN: &str = env!("CARGO_BIN_EXE_gpbackup_s3_plugin");

/// A Barman home with one server `pg`, a barmans3 config pointing at `store`, queue and state.
/// The config's last section is `state:` (a line appended to the file lands there).
pub struct Site {
    pub dir: tempfile::TempDir,
    pub cfg: PathBuf,
}

impl Site {
    pub fn new(store_yaml: &str) -> Site {
        let dir = tempfile::tempdir().expect("tmp");
        let home = dir.path().join("barman");
        for d in ["pg/base", "pg/meta", "pg/wals"] {
            std::fs::create_dir_all(home.join(d)).expect("mkdir");
        }
        std::fs::write(
            dir.path().join("barman.conf"),
            format!(
                "[barman]\nbarman_user = root\nbarman_home = {}\n[pg]\nconninfo = x\n",
                home.display()
            ),
        )
        .expect("barman.conf");
        let cfg = dir.path().join("barmans3.yaml");
        std::fs::write(
            &cfg,
            format!(
                "{store_yaml}barman:\n  config: {d}/barman.conf\n{}",
                crate::common::scratch_yaml(dir.path()),
                d = dir.path().display()
            ),
        )
        .expect("config");
        std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        Site { dir, cfg }
    }

    pub fn local() -> Site {
        let s = Site::new("");
        let bucket = s.dir.path().join("bucket");
        std::fs::create_dir_all(&bucket).expect("bucket");
        let text = std::fs::read_to_string(&s.cfg).expect("cfg");
        std::fs::write(
            &s.cfg,
            format!("store: file://{}\n{text}", bucket.display()),
        )
        .expect("w");
        s
    }

    pub fn wals(&self) -> PathBuf {
        self.dir.path().join("barman/pg/wals")
    }

    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(&self.cfg)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run barmans3")
    }

    /// Queues backup `id` as Barman's post-backup hook would, with the hook seeing `status`.
    pub fn queue(&self, id: &str, status: &str) {
        let out = self.run(&["queue-add"], &hook_env(id, status, &[]));
        assert!(
            out.status.success(),
            "queue-add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The cached answer of the checksum probe for this site's store: whether it verifies
    /// CRC32C headers. Panics when no probe has run.
    pub fn probed(&self) -> bool {
        let state = self.dir.path().join("state");
        let cache = std::fs::read_dir(&state)
            .expect("state dir")
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().starts_with("checksum-"))
            .expect("a checksum cache file after the first upload");
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(cache.path()).expect("read")).expect("json");
        v["crc32c_verified"].as_bool().expect("crc32c_verified")
    }

    /// Runs with `--json` and returns the run summary's request counts.
    pub fn requests(&self, args: &[&str]) -> (u64, BTreeMap<String, u64>) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all, &[]);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or("")
            .to_string();
        let v: serde_json::Value = serde_json::from_str(&line).expect("summary JSON");
        let by: BTreeMap<String, u64> = v["requests"]
            .as_object()
            .expect("requests")
            .iter()
            .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
            .collect();
        (v["total_requests"].as_u64().expect("total"), by)
    }
}

pub fn wal_name(seg: u64) -> String {
    format!("{:08X}{:08X}{:08X}", 1, seg / 256, seg % 256)
}

/// Writes `n` small WAL files (segments 1..=n on timeline 1) into `wals/`.
pub fn make_archive(wals: &Path, from: u64, n: u64) {
    for seg in from..from + n {
        let name = wal_name(seg);
        let dir = wals.join(&name[..16]);
        if seg == from || seg % 256 == 0 {
            std::fs::create_dir_all(&dir).expect("hash dir");
        }
        std::fs::write(dir.join(&name), name.as_bytes()).expect("wal");
    }
}

/// The database system identifier of the test cluster (identity.json and every WAL segment).
pub const SYSTEM_ID: u64 = 7311111111111111111;

/// A WAL segment as PostgreSQL writes it with 1 MiB segments (`initdb --wal-segsize=1`): the
/// first page's long header names this segment (address, segment size), the rest is data.
/// `wal-restore` checks that header, so stand-ins of other bytes are refused.
pub fn wal_segment(name: &str, seed: u64) -> Vec<u8> {
    const SEG: u64 = 1 << 20;
    let tli = u32::from_str_radix(&name[..8], 16).expect("tli");
    let log = u64::from_str_radix(&name[8..16], 16).expect("log");
    let seg = u64::from_str_radix(&name[16..24], 16).expect("seg");
    let addr = (log * ((1u64 << 32) / SEG) + seg) * SEG;
    let mut v = super::data(SEG as usize, seed);
    v[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    v[2..4].copy_from_slice(&2u16.to_le_bytes());
    v[4..8].copy_from_slice(&tli.to_le_bytes());
    v[8..16].copy_from_slice(&addr.to_le_bytes());
    v[24..32].copy_from_slice(&SYSTEM_ID.to_le_bytes());
    v[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
    v[36..40].copy_from_slice(&8192u32.to_le_bytes());
    v
}

/// Writes `n` real 1 MiB WAL segments (segments from..from+n on timeline 1, `from + n` < 256)
/// into `wals/`.
pub fn make_real_archive(wals: &Path, from: u64, n: u64) {
    for seg in from..from + n {
        let name = wal_name(seg);
        let dir = wals.join(&name[..16]);
        std::fs::create_dir_all(&dir).expect("hash dir");
        std::fs::write(dir.join(&name), wal_segment(&name, seg)).expect("wal");
    }
}

pub fn write_backup(site: &Site, id: &str, status: &str) {
    let base = site.dir.path().join("barman/pg/base").join(id);
    std::fs::create_dir_all(base.join("data/pg_wal")).expect("mkdir");
    std::fs::create_dir_all(base.join("data/global")).expect("mkdir");
    std::fs::write(base.join("data/PG_VERSION"), "15\n").expect("w");
    std::fs::write(base.join("data/global/pg_control"), [7u8; 8192]).expect("w");
    std::fs::write(
        site.dir.path().join(format!("barman/pg/meta/{id}-backup.info")),
        format!("begin_wal=000000010000000000000003\nend_wal=000000010000000000000003\nstatus={status}\n"),
    )
    .expect("info");
}

/// Barman deleted backup `id` and the WAL segments `segs` (of timeline 1) from its own
/// directories, as its retention does.
pub fn forget_backup(site: &Site, id: &str, segs: &[u64]) {
    std::fs::remove_dir_all(site.dir.path().join("barman/pg/base").join(id)).expect("rm");
    std::fs::remove_file(
        site.dir
            .path()
            .join(format!("barman/pg/meta/{id}-backup.info")),
    )
    .expect("rm info");
    let seg_dir = site.wals().join("0000000100000000");
    for seg in segs {
        std::fs::remove_file(seg_dir.join(wal_name(*seg))).expect("rm wal");
    }
}

/// The environment Barman gives a `post_backup_script` for backup `id` of server `pg`, with
/// `extra` variables replacing or adding to it.
pub fn hook_env<'a>(
    id: &'a str,
    status: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![
        ("BARMAN_PHASE", "post"),
        ("BARMAN_HOOK", "backup_script"),
        ("BARMAN_RETRY", "0"),
        ("BARMAN_SERVER", "pg"),
        ("BARMAN_BACKUP_ID", id),
        ("BARMAN_STATUS", status),
        ("BARMAN_ERROR", ""),
    ];
    for (k, val) in extra {
        v.retain(|(key, _)| key != k);
        v.push((k, val));
    }
    v
}
