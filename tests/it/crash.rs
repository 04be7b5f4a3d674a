//! Crash safety: `base-sync` of a 2 GiB backup, `wal-sync` of a growing archive and the plugin's
//! `backup_data` are killed with SIGKILL at seeded random moments, at least 20 times each. After
//! one clean run the bucket holds exactly the source bytes, the queue says `.done` and no
//! incomplete multipart upload is left under the prefix.
//!
//! The kill schedule comes from `BARMANS3_CRASH_SEED` (default below), so a failing schedule can
//! be replayed; process timing itself is the operating system's. Garage itself drops an
//! unfinished upload once a newer upload of the same key completes; that the engine aborts such
//! left-overs on its own (as AWS needs) is proven in `tests/transfer.rs` by counting aborts.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::site::{BIN, PLUGIN, Site, make_archive, wal_name, write_backup};
use barmans3::transfer::Expect;
use rand::{Rng, SeedableRng, rngs::StdRng};

const MIB: usize = 1 << 20;
const KILLS: usize = 20;
/// Attempts allowed to reach `KILLS` kills (a run that ends before its kill does not count).
const MAX_ATTEMPTS: usize = 60;

fn rng(test: u64) -> StdRng {
    let seed = std::env::var("BARMANS3_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261122u64);
    eprintln!("crash schedule seed {seed} (set BARMANS3_CRASH_SEED to replay)");
    StdRng::seed_from_u64(seed ^ test)
}

/// Starts `cmd` and sends SIGKILL after `delay`. `None` when the process was still running
/// then; otherwise how long the run took (its stderr is shown; the test output keeps it on
/// failure).
fn kill_after(cmd: &mut Command, delay: Duration) -> Option<Duration> {
    let start = std::time::Instant::now();
    let log = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("crash-{:08x}.log", rand::random::<u32>()));
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + delay;
    let mut alive = true;
    while alive && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5).min(delay));
        alive = child.try_wait().expect("wait").is_none();
    }
    let alive = alive && child.try_wait().expect("wait").is_none();
    let took = start.elapsed();
    let _ = child.kill();
    let status = child.wait().expect("wait");
    if !alive {
        let err = std::fs::read_to_string(&log).unwrap_or_default();
        eprintln!("ended before its kill with {status}: {err}");
    }
    let _ = std::fs::remove_file(&log);
    (!alive).then_some(took)
}

/// Kills `make()`'s command at random moments until it has been killed `KILLS` times while
/// running; `between` runs after every attempt. Delays are drawn from `[0, max)`, and `max`
/// shrinks to the length of any run that ends before its kill, so kills land inside real work
/// as runs get shorter. Returns the kills.
fn kill_loop(
    rng: &mut StdRng,
    max_ms: u64,
    mut make: impl FnMut() -> Command,
    mut between: impl FnMut(),
) -> usize {
    let mut kills = 0;
    let mut max = max_ms;
    for _ in 0..MAX_ATTEMPTS {
        let delay = Duration::from_millis(rng.random_range(0..max));
        match kill_after(&mut make(), delay) {
            None => {
                kills += 1;
                eprintln!("killed after {delay:?}");
            }
            Some(took) => max = max.min((took.as_millis() as u64).max(20)),
        }
        between();
        if kills == KILLS {
            break;
        }
    }
    assert!(
        kills >= KILLS,
        "only {kills} of {MAX_ATTEMPTS} runs were killed while running"
    );
    kills
}

fn garage_yaml(prefix: &str, part_size: &str) -> String {
    let g = crate::common::garage();
    format!(
        "s3:\n  endpoint: {}\n  region: garage\n  bucket: {}\n  prefix: {prefix}\n  access_key_id: {}\n  secret_access_key: {}\n  part_size: {part_size}\n  concurrency: 4\n  max_attempts: 3\n  connect_timeout: 2s\n  read_timeout: 20s\n",
        g.endpoint(),
        g.bucket(),
        g.key_id(),
        g.secret()
    )
}

/// Keys under `prefix` (all pages) and the incomplete multipart uploads there.
fn bucket_state(prefix: &str) -> (BTreeSet<String>, usize) {
    let uploads = crate::common::block_on(async {
        let t = crate::common::garage_transfer().await;
        t.incomplete_uploads(prefix).await.expect("list uploads")
    });
    (crate::common::garage_keys(prefix), uploads.len())
}

fn same_file(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).expect("open a"),
        std::fs::File::open(b).expect("open b"),
    );
    let (mut ba, mut bb) = (vec![0u8; 4 * MIB], vec![0u8; 4 * MIB]);
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).expect("read") {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// Writes `len` bytes of distinct, incompressible content (a random block stamped per MiB).
fn write_big(path: &Path, len: usize, seed: u64) {
    use std::io::Write;
    let block = crate::common::data(MIB, seed);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut left = len;
    let mut i = 0u64;
    while left > 0 {
        let mut b = block.clone();
        b[..8].copy_from_slice(&i.to_le_bytes());
        let n = left.min(MIB);
        f.write_all(&b[..n]).expect("write");
        left -= n;
        i += 1;
    }
    f.flush().expect("flush");
}

fn files_under(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("ls") {
            let p = e.expect("entry").path();
            let ft = std::fs::symlink_metadata(&p).expect("stat").file_type();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let rel = p.strip_prefix(root).expect("under root");
                out.insert(rel.to_str().expect("utf8").to_string());
            }
        }
    }
    out
}

#[test]
fn base_sync_of_a_two_gib_backup_survives_kill_9() {
    let _disk = crate::common::heavy_disk();
    let prefix = crate::common::unique("crash-base");
    let site = Site::new(&garage_yaml(&prefix, "16MiB"));
    // The backup, the restore beside it, and the server's copy (on the same disk here).
    crate::common::need_free(site.dir.path(), 6 << 30);
    let id = "20261122T030000";
    write_backup(&site, id, "DONE");
    let base = site.dir.path().join("barman/pg/base").join(id);
    let rel = base.join("data/base/16384");
    std::fs::create_dir_all(&rel).expect("mkdir");
    // Above base-sync's one-PUT limit (1 GiB, PostgreSQL's default segment; a build with
    // larger segments makes such files): a resumable multipart upload. The others go in one
    // PUT each.
    write_big(&rel.join("16400"), (1 << 30) + 4 * MIB, 1);
    write_big(&rel.join("16400.1"), (1 << 30) - 12345, 2);
    write_big(&rel.join("16410"), 50 * MIB + 3, 3);
    for i in 0..200 {
        std::fs::write(
            rel.join(format!("{}", 20000 + i)),
            crate::common::data(8192 * (i % 4 + 1), i as u64),
        )
        .expect("small");
    }
    std::fs::write(
        site.dir.path().join("barman/pg/identity.json"),
        r#"{"systemid": "7311111111111111111", "version": "15.18"}"#,
    )
    .expect("identity");
    site.queue(id, "DONE");
    let queue = site.dir.path().join("queue");

    let mut rng = rng(1);
    let mut cycles = 0;
    let kills = kill_loop(
        &mut rng,
        5000,
        || {
            let mut c = Command::new(BIN);
            c.arg("--config").arg(&site.cfg).arg("base-sync");
            c
        },
        || {
            assert!(
                !queue.join(format!("{id}.error")).exists(),
                "a killed run must never mark the task failed"
            );
            // A run that finished before its kill completes a cycle: start the backup over
            // (objects deleted, task queued again) so every kill hits real work.
            if queue.join(format!("{id}.done")).exists() {
                cycles += 1;
                crate::common::block_on(async {
                    crate::common::garage_transfer()
                        .await
                        .delete_prefix(&format!("{prefix}/pg/"))
                        .await
                        .expect("delete")
                });
                site.queue(id, "DONE");
            }
        },
    );

    let out = site.run(&["base-sync"], &[]);
    assert!(
        out.status.success(),
        "clean run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let states: Vec<_> = std::fs::read_dir(&queue)
        .expect("queue")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(id))
        .collect();
    assert_eq!(
        states,
        vec![format!("{id}.done")],
        "queue after the clean run"
    );

    // Exactly the source files plus our manifest and backup.info, and nothing half-uploaded.
    let backup_prefix = format!("{prefix}/pg/base/{id}/");
    let (keys, uploads) = bucket_state(&prefix);
    let mut want: BTreeSet<String> = files_under(&base)
        .into_iter()
        .map(|r| format!("{backup_prefix}{r}"))
        .collect();
    want.insert(format!("{backup_prefix}barmans3.manifest"));
    want.insert(format!("{backup_prefix}backup.info"));
    want.insert(format!("{prefix}/pg/identity.json"));
    assert_eq!(keys, want, "objects in the bucket");
    assert_eq!(uploads, 0, "incomplete multipart uploads under the prefix");

    let dest = site.dir.path().join("restored");
    let out = site.run(
        &["base-restore", "pg", id, dest.to_str().expect("utf8")],
        &[],
    );
    assert!(
        out.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = base.join("data");
    let files = files_under(&data);
    assert_eq!(files_under(&dest), files);
    for f in &files {
        assert!(
            same_file(&data.join(f), &dest.join(f)),
            "{f} differs after restore"
        );
    }
    eprintln!(
        "base-sync: {kills} kills survived ({cycles} uploads finished between kills); {} files, 0 bytes lost, 0 orphaned uploads",
        files.len()
    );
}

#[test]
fn wal_sync_of_a_growing_archive_survives_kill_9() {
    let prefix = crate::common::unique("crash-wal");
    let site = Site::new(&garage_yaml(&prefix, "5MiB"));
    let wals = site.wals();
    // Small WALs from earlier, then 12 MiB segments (3 parts each) arriving between runs.
    make_archive(&wals, 1, 40);
    let mut next = 41u64;
    let add = |next: &mut u64, n: u64| {
        for seg in *next..*next + n {
            let name = wal_name(seg);
            let dir = wals.join(&name[..16]);
            std::fs::create_dir_all(&dir).expect("hash dir");
            std::fs::write(dir.join(&name), crate::common::data(12 * MIB, seg)).expect("wal");
        }
        *next += n;
    };
    add(&mut next, 4);
    let mut rng = rng(2);
    let kills = kill_loop(
        &mut rng,
        1500,
        || {
            let mut c = Command::new(BIN);
            c.arg("--config").arg(&site.cfg).args(["wal-sync", "pg"]);
            c
        },
        || add(&mut next, 2),
    );
    let out = site.run(&["wal-sync", "pg"], &[]);
    assert!(
        out.status.success(),
        "clean run: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (keys, uploads) = bucket_state(&prefix);
    let local = files_under(&wals);
    let want: BTreeSet<String> = local
        .iter()
        .map(|r| format!("{prefix}/pg/wals/{r}"))
        .collect();
    assert_eq!(keys, want, "objects in the bucket");
    assert_eq!(uploads, 0, "incomplete multipart uploads under the prefix");
    crate::common::block_on(async {
        let t = crate::common::garage_transfer().await;
        for r in &local {
            let mut got = Vec::new();
            t.download_to(
                &format!("{prefix}/pg/wals/{r}"),
                &mut got,
                Expect::default(),
            )
            .await
            .expect("get");
            assert!(
                got == std::fs::read(wals.join(r)).expect("src"),
                "{r} differs"
            );
        }
    });
    eprintln!(
        "wal-sync: {kills} kills survived; {} WALs, 0 bytes lost, 0 orphaned uploads",
        local.len()
    );
}

#[test]
fn plugin_backup_data_survives_kill_9() {
    let g = crate::common::garage();
    let dir = tempfile::tempdir().expect("tmp");
    let folder = crate::common::unique("crash-gp");
    let cfg = dir.path().join("gp.yaml");
    std::fs::write(
        &cfg,
        format!(
            "executablepath: {PLUGIN}\noptions:\n  endpoint: {}\n  region: garage\n  aws_access_key_id: {}\n  aws_secret_access_key: {}\n  bucket: {}\n  folder: {folder}\n  backup_multipart_chunksize: 5MB\n  backup_max_concurrent_requests: 3\n",
            g.endpoint(),
            g.key_id(),
            g.secret(),
            g.bucket(),
        ),
    )
    .expect("config");
    let src = dir.path().join("stream");
    write_big(&src, 160 * MIB + 77, 9);
    let key = "/data/backups/20261122/20261122030000/gpbackup_0_20261122030000_16401";
    let plugin = |args: &[&str]| {
        let mut c = Command::new(PLUGIN);
        c.args(args).env("HOME", dir.path());
        c
    };
    let cfg_s = cfg.to_str().expect("utf8");
    let mut rng = rng(3);
    let kills = kill_loop(
        &mut rng,
        2500,
        || {
            let mut c = plugin(&["backup_data", cfg_s, key]);
            c.stdin(std::fs::File::open(&src).expect("open"));
            c
        },
        || {},
    );
    let status = plugin(&["backup_data", cfg_s, key])
        .stdin(std::fs::File::open(&src).expect("open"))
        .status()
        .expect("backup_data");
    assert!(status.success(), "clean backup_data");

    let (keys, uploads) = bucket_state(&format!("{folder}/"));
    let object =
        format!("{folder}/backups/20261122/20261122030000/gpbackup_0_20261122030000_16401");
    assert_eq!(keys, BTreeSet::from([object]), "objects in the bucket");
    assert_eq!(uploads, 0, "incomplete multipart uploads under the folder");
    let back = dir.path().join("back");
    let status = plugin(&["restore_data", cfg_s, key])
        .stdout(std::fs::File::create(&back).expect("create"))
        .status()
        .expect("restore_data");
    assert!(status.success(), "restore_data");
    assert!(same_file(&src, &back), "restored stream differs");
    eprintln!("backup_data: {kills} kills survived; 0 bytes lost, 0 orphaned uploads");
}
