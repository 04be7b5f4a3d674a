//! The prefetch spool as other users and hostile buckets meet it: a spool someone else made or
//! can write to is refused in one line, a spooled file with other bytes than were fetched is
//! never served, two recoveries sharing one configured spool directory each keep their own, the
//! spool holds what `wal_spool_bytes` allows with fetches in flight counted, a decompression
//! bomb is refused at the cluster's segment size and not fetched again, what a killed
//! prefetcher left is cleaned up, and the lean `barmans3-wal-restore` serves the spool itself
//! and hands everything else to barmans3.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::site::{SYSTEM_ID, Site, wal_name, wal_segment};
use crate::walrestore::{
    err, names, pgdata, put, put_segments, recover, spools, stop_prefetchers, wal_key,
    with_prefetch,
};

/// Adds `lines` (YAML, two-space indented) to the config's `barman:` section.
fn with_barman(site: &Site, lines: &str) {
    let cfg = std::fs::read_to_string(&site.cfg).expect("cfg");
    std::fs::write(
        &site.cfg,
        cfg.replace("barman:\n", &format!("barman:\n{lines}")),
    )
    .expect("cfg");
}

/// `global/pg_control` of a cluster with the test segments' system identifier and 1 MiB
/// segments: PostgreSQL 15's, changed, its CRC made right again.
fn pg_control() -> Vec<u8> {
    let crc = barmans3::checksum::crc32c;
    let mut v = std::fs::read(crate::common::repo().join("tests/fixtures/pg_control/pg15-16MiB"))
        .expect("fixture");
    let crc_at = (16..1024)
        .step_by(4)
        .find(|&k| crc(&v[..k]).to_ne_bytes() == v[k..k + 4])
        .expect("crc");
    let seg_at = 4
        + (0..crc_at)
            .step_by(4)
            .find(|&i| {
                v[i..i + 4] == 8192u32.to_ne_bytes()
                    && v[i + 4..i + 8] == (16u32 << 20).to_ne_bytes()
            })
            .expect("segment size");
    v[..8].copy_from_slice(&SYSTEM_ID.to_ne_bytes());
    v[seg_at..seg_at + 4].copy_from_slice(&(1u32 << 20).to_ne_bytes());
    let sum = crc(&v[..crc_at]);
    v[crc_at..crc_at + 4].copy_from_slice(&sum.to_ne_bytes());
    v
}

/// A data directory at `dir` with `pg_wal` and the test cluster's `pg_control`.
fn data_dir(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("pg_wal")).expect("pg_wal");
    std::fs::create_dir_all(dir.join("global")).expect("global");
    std::fs::write(dir.join("global/pg_control"), pg_control()).expect("pg_control");
    dir.to_path_buf()
}

/// Waits up to 10 s for `cond`.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

fn served(pg: &Path, seg: u64) -> bool {
    std::fs::read(pg.join("pg_wal/RECOVERYXLOG"))
        .is_ok_and(|b| b == wal_segment(&wal_name(seg), seg))
}

/// A local site with segments `1..=last` in the bucket and prefetch `depth`, after
/// PostgreSQL's first request (segment 1, exit 0): the site, its data directory and spool base.
fn first_request(depth: usize, last: u64) -> (Site, PathBuf, PathBuf) {
    let site = Site::local();
    with_prefetch(&site, depth);
    put_segments(&site, 1..=last);
    let pg = pgdata(&site);
    let base = pg.join("pg_wal/.barmans3-spool");
    let out = recover(&site, &pg, &wal_name(1));
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    (site, pg, base)
}

fn chown(path: &Path, uid: u32) {
    let ok = std::process::Command::new("chown")
        .arg(uid.to_string())
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "chown {uid} {}: this test runs as root (CI does)",
        path.display()
    );
}

#[test]
fn a_spool_someone_else_made_or_can_write_to_is_refused_in_one_line() {
    let (site, pg, base) = first_request(2, 3);
    stop_prefetchers(&base);
    let spool = spools(&base).pop().expect("spool");
    let mode = std::fs::metadata(&spool)
        .expect("stat")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "{}", spool.display());
    std::fs::remove_file(pg.join("pg_wal/RECOVERYXLOG")).expect("rm");
    for (what, fragment) in [
        ("writable by others", "writable by other users"),
        ("another user's", "belongs to uid 65534"),
    ] {
        if what == "writable by others" {
            std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o777))
                .expect("chmod");
        } else {
            std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o700))
                .expect("chmod");
            chown(&spool, 65534);
        }
        let out = recover(&site, &pg, &wal_name(2));
        assert_eq!(out.status.code(), Some(200), "{what}: {}", err(&out));
        let e = err(&out);
        assert!(
            e.contains(fragment) && e.contains("barman.wal_spool_dir"),
            "{what}: {e}"
        );
        assert_eq!(e.trim().lines().count(), 1, "{what}: {e}");
        assert!(!pg.join("pg_wal/RECOVERYXLOG").exists(), "{what}");
    }
    chown(&spool, 0);
    let out = recover(&site, &pg, &wal_name(2));
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    assert!(served(&pg, 2));
    stop_prefetchers(&base);
}

#[test]
fn a_spooled_file_with_other_bytes_than_were_fetched_before_a_restart_is_never_served() {
    let (site, pg, base) = first_request(4, 5);
    // Wait for segment 2 in the spool, then change bytes past its first page, as a crash of
    // the machine can leave a file that was never fsynced.
    let entry = |spool: &Path| {
        names(spool)
            .into_iter()
            .find(|n| n.starts_with(&format!("{}.", wal_name(2))))
    };
    let spool = spools(&base).pop().expect("spool");
    assert!(
        eventually(|| entry(&spool).is_some()),
        "{:?}",
        names(&spool)
    );
    stop_prefetchers(&base);
    // The prefetcher filled it during this boot; the restart is a boot id it did not see.
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot id");
    let marker = spool.join(".boot");
    assert_eq!(
        std::fs::read_to_string(&marker).expect(".boot"),
        boot.trim()
    );
    std::fs::write(&marker, "00000000-0000-4000-8000-000000000000").expect("restart");
    let file = spool.join(entry(&spool).expect("entry"));
    let mut forged = std::fs::read(&file).expect("spooled");
    forged[5000] ^= 0xFF;
    std::fs::write(&file, &forged).expect("forge");
    // Holding the prefetcher's lock keeps the call from starting one, whose first act (the
    // spool is not this boot's) would remove the file before the call could judge it.
    let lock = std::fs::File::options()
        .read(true)
        .write(true)
        .open(spool.join(".prefetch.lock"))
        .expect("lock file");
    lock.lock().expect("lock");
    let out = recover(&site, &pg, &wal_name(2));
    drop(lock);
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    assert!(served(&pg, 2), "the forged file was served");
    assert!(err(&out).contains("discarded, not served"), "{}", err(&out));
    stop_prefetchers(&base);
}

#[test]
fn two_recoveries_sharing_a_spool_directory_each_keep_their_own() {
    let site = Site::local();
    let shared = site.dir.path().join("shared");
    std::fs::create_dir(&shared).expect("shared");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    with_prefetch(&site, 4);
    with_barman(&site, &format!("  wal_spool_dir: {}\n", shared.display()));
    put_segments(&site, 1..=12);
    let a = data_dir(&site.dir.path().join("a"));
    let b = data_dir(&site.dir.path().join("b"));
    let mut from_spool = [0, 0];
    // Interleaved and at different places in the archive: each must keep its own spool.
    for i in 1..=6 {
        for (k, (pg, seg)) in [(&a, i), (&b, i + 6)].into_iter().enumerate() {
            let out = recover(&site, pg, &wal_name(seg));
            assert_eq!(out.status.code(), Some(0), "{seg}: {}", err(&out));
            assert!(served(pg, seg), "segment {seg} differs");
            if err(&out).contains("from the prefetch spool") {
                from_spool[k] += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    assert_eq!(spools(&shared).len(), 2, "{:?}", spools(&shared));
    assert!(
        from_spool.iter().all(|n| *n >= 3),
        "segments from the spool (of 6 each): {from_spool:?}"
    );
    stop_prefetchers(&shared);
}

#[test]
fn the_spool_holds_what_wal_spool_bytes_allows_with_fetches_in_flight_counted() {
    let prefix = crate::common::unique("spool-bytes");
    let site = Site::new(&crate::common::garage().yaml(&prefix));
    with_prefetch(&site, 16);
    with_barman(&site, "  wal_spool_bytes: 4MiB\n");
    put_segments(&site, 1..=24);
    let pg = data_dir(&site.dir.path().join("pgdata"));
    let base = pg.join("pg_wal/.barmans3-spool");
    // Every 2 ms: the bytes spooled, and a segment for each fetch in flight.
    let (stop, worst) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let sampler = {
        let (stop, worst, base) = (stop.clone(), worst.clone(), base.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut held = 0;
                for spool in spools(&base) {
                    for e in std::fs::read_dir(&spool).into_iter().flatten().flatten() {
                        let n = e.file_name().to_string_lossy().into_owned();
                        let seg_named =
                            n.len() >= 24 && n[..24].bytes().all(|b| b.is_ascii_hexdigit());
                        if n.starts_with(".fetch-") || n.ends_with(".inflight") {
                            held += 1 << 20;
                        } else if seg_named {
                            held += e.metadata().map_or(0, |m| m.len());
                        }
                    }
                }
                worst.fetch_max(held, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    for seg in 1..=24 {
        let out = recover(&site, &pg, &wal_name(seg));
        assert_eq!(out.status.code(), Some(0), "{seg}: {}", err(&out));
        assert!(served(&pg, seg), "segment {seg} differs");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    stop_prefetchers(&base);
    let worst = worst.load(Ordering::Relaxed);
    assert!(
        worst <= 4 << 20,
        "the spool held {worst} bytes with 4 MiB allowed"
    );
    assert!(
        worst >= 1 << 20,
        "nothing was ever prefetched ({worst} bytes)"
    );
}

#[test]
fn a_decompression_bomb_is_refused_at_the_segment_size_and_not_fetched_again() {
    let site = Site::local();
    with_prefetch(&site, 4);
    put_segments(&site, 1..=2);
    // 64 MiB of zeros in a few KiB: a 1 MiB segment's name on it.
    let bomb = zstd::encode_all(std::io::repeat(0).take(64 << 20), 19).expect("zstd");
    put(&site, &wal_key(&wal_name(3)), &bomb);
    let pg = data_dir(&site.dir.path().join("pgdata"));
    let base = pg.join("pg_wal/.barmans3-spool");
    for seg in 1..=2 {
        let out = recover(&site, &pg, &wal_name(seg));
        assert_eq!(out.status.code(), Some(0), "{seg}: {}", err(&out));
        // PostgreSQL moves the file away once replayed.
        std::fs::remove_file(pg.join("pg_wal/RECOVERYXLOG")).expect("rm");
    }
    let out = recover(&site, &pg, &wal_name(3));
    assert_eq!(out.status.code(), Some(200), "{}", err(&out));
    assert!(
        err(&out).contains("more than 1048576 bytes"),
        "the decoder was not bounded by the segment size: {}",
        err(&out)
    );
    assert!(!pg.join("pg_wal/RECOVERYXLOG").exists());
    // The prefetcher met it once (after segment 2) and does not fetch it in a loop.
    std::thread::sleep(Duration::from_secs(5));
    let spool = spools(&base).pop().expect("spool");
    let log = std::fs::read_to_string(spool.join(".prefetch.log")).unwrap_or_default();
    let tries = log.lines().filter(|l| l.contains(&wal_name(3))).count();
    assert!(tries <= 1, "the bomb was fetched {tries} times:\n{log}");
    stop_prefetchers(&base);
}

#[test]
fn what_a_killed_prefetcher_left_is_removed_by_the_next() {
    let (site, pg, base) = first_request(2, 4);
    stop_prefetchers(&base);
    let spool = spools(&base).pop().expect("spool");
    // A fetch cut by SIGKILL, and what older versions left.
    for junk in [
        format!(".fetch-{}", wal_name(9)),
        format!("{}.missing", wal_name(9)),
        format!("{}.inflight", wal_name(9)),
    ] {
        std::fs::write(spool.join(junk), b"x").expect("junk");
    }
    // Wait for the previous prefetcher's start to be past, then a call starts a new one.
    std::thread::sleep(Duration::from_secs(3));
    let out = recover(&site, &pg, &wal_name(2));
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    let clean = || names(&spool).iter().all(|n| !n.contains(&wal_name(9)));
    assert!(eventually(clean), "left behind: {:?}", names(&spool));
    stop_prefetchers(&base);
}

/// The lean restore_command serves a spooled segment itself, without running the barmans3
/// beside it, and hands every other request to that barmans3 with the arguments it was given;
/// without one beside it (one on the `PATH` is never used) it still serves the spool, and fails
/// anything else as fatal (200).
#[test]
fn the_lean_restore_command_serves_the_spool_itself_and_hands_the_rest_over() {
    let (site, pg, base) = first_request(8, 5);
    let spool = spools(&base).pop().expect("spool");
    let spooled = |seg: u64| {
        eventually(|| {
            names(&spool)
                .iter()
                .any(|n| n.starts_with(&format!("{}.", wal_name(seg))))
        })
    };
    // A copy of the lean program beside a barmans3 that records each call and runs the real one.
    let dir = tempfile::tempdir().expect("tmp");
    let lean = dir.path().join("barmans3-wal-restore");
    std::fs::copy(crate::common::site::LEAN, &lean).expect("copy");
    let calls = dir.path().join("calls");
    let script = |path: &Path, body: String| {
        std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("script");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    let full = dir.path().join("barmans3");
    script(
        &full,
        format!(
            "printf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"",
            calls.display(),
            crate::common::site::BIN
        ),
    );
    // And one on the PATH, which must never run.
    let on_path = dir.path().join("on-path");
    std::fs::create_dir(&on_path).expect("mkdir");
    script(
        &on_path.join("barmans3"),
        format!("echo \"path $*\" >> '{}'", calls.display()),
    );
    let path = format!(
        "{}:{}",
        on_path.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let cfg = site.cfg.to_str().expect("utf8");
    let call = |args: &[&str]| {
        let _ = std::fs::remove_file(pg.join("pg_wal/RECOVERYXLOG"));
        let _ = std::fs::remove_file(&calls);
        std::process::Command::new(&lean)
            .current_dir(&pg)
            .env("PATH", &path)
            .args(["--config", cfg])
            .args(args)
            .args(["pg_wal/RECOVERYXLOG"])
            .output()
            .expect("run")
    };
    // The calls of the full program to serve a request (a prefetcher it starts is another).
    let handed = || {
        std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("wal-restore"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };

    assert!(spooled(2), "{:?}", names(&spool));
    let out = call(&["pg", &wal_name(2)]);
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    assert!(served(&pg, 2), "segment 2 at %p");
    assert!(
        err(&out).contains("from the prefetch spool"),
        "{}",
        err(&out)
    );
    assert_eq!(handed(), "", "a spooled segment was handed over");

    let out = call(&["pg", "00000002.history"]);
    assert_eq!(out.status.code(), Some(1), "absent: {}", err(&out));
    assert_eq!(
        handed(),
        format!("wal-restore --config {cfg} pg 00000002.history pg_wal/RECOVERYXLOG\n")
    );
    // An option only the full program knows sends even a spooled segment there.
    assert!(spooled(3), "{:?}", names(&spool));
    let out = call(&["-v", "pg", &wal_name(3)]);
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    assert!(served(&pg, 3), "segment 3 at %p");
    assert_eq!(
        handed(),
        format!(
            "wal-restore --config {cfg} -v pg {} pg_wal/RECOVERYXLOG\n",
            wal_name(3)
        )
    );

    // No barmans3 beside it (the one on the PATH is not used): the spool still serves; the rest
    // is fatal.
    std::fs::remove_file(&full).expect("rm");
    assert!(spooled(4), "{:?}", names(&spool));
    let out = call(&["pg", &wal_name(4)]);
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    assert!(served(&pg, 4), "segment 4 at %p");
    let out = call(&["pg", "00000002.history"]);
    assert_eq!(out.status.code(), Some(200), "{}", err(&out));
    assert!(
        err(&out).contains(&format!("cannot run {}", full.display()))
            && err(&out).contains("aborting recovery"),
        "{}",
        err(&out)
    );
    assert!(!pg.join("pg_wal/RECOVERYXLOG").exists());
    let calls = std::fs::read_to_string(&calls).unwrap_or_default();
    assert!(
        !calls.contains("path "),
        "the barmans3 on the PATH ran: {calls}"
    );
    stop_prefetchers(&base);
}
