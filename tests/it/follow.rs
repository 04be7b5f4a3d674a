//! `wal-sync --follow` on both backends: WALs renamed into place reach the bucket while it
//! runs; a file still being written never appears half in the bucket and goes once it is
//! closed; `status` shows the follower; SIGTERM stops it cleanly (exit 0, heartbeat gone); a
//! follower killed outright is reported by `check`; a cron `wal-sync` can run beside it; with
//! `--all`, a server whose upload is stuck does not hold back another server's WALs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::faults::FaultProxy;
use crate::common::site::{BIN, Site, wal_name, wal_segment};
use crate::common::{garage, unique};

/// Reads an object under the server's `wals/`, if it is there.
type Fetch = Box<dyn Fn(&str) -> Option<Vec<u8>>>;

fn site(garage_backend: bool) -> (Site, Fetch) {
    if !garage_backend {
        let s = Site::local();
        let bucket = s.dir.path().join("bucket/pg/wals");
        return (s, Box::new(move |rel| std::fs::read(bucket.join(rel)).ok()));
    }
    let g = garage();
    let prefix = unique("follow");
    let s = Site::new(&format!(
        "s3:\n  endpoint: {}\n  region: garage\n  bucket: {}\n  prefix: {prefix}\n  access_key_id: {}\n  secret_access_key: {}\n",
        g.endpoint(),
        g.bucket(),
        g.key_id(),
        g.secret()
    ));
    let cfg = s.cfg.clone();
    let fetch = move |rel: &str| {
        let out = Command::new(BIN)
            .args(["--config", cfg.to_str().expect("utf8"), "store", "get"])
            .arg(format!("pg/wals/{rel}"))
            .arg("-")
            .output()
            .expect("store get");
        out.status.success().then_some(out.stdout)
    };
    (s, Box::new(fetch))
}

fn start(site: &Site) -> Child {
    start_following(site, "pg")
}

/// A follower of `server` (or `--all`).
fn start_following(site: &Site, server: &str) -> Child {
    Command::new(BIN)
        .args([
            "--config",
            site.cfg.to_str().expect("utf8"),
            "-v",
            "wal-sync",
            server,
            "--follow",
            "--poll",
            "30s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn follower")
}

/// Writes a WAL as Barman does: a temporary name in the hash directory, renamed into place.
fn archive(wals: &Path, seg: u64) -> (String, Vec<u8>) {
    let name = wal_name(seg);
    let dir = wals.join(&name[..16]);
    std::fs::create_dir_all(&dir).expect("hash dir");
    let body = wal_segment(&name, seg);
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, &body).expect("tmp");
    std::fs::rename(&tmp, dir.join(&name)).expect("rename");
    (format!("{}/{name}", &name[..16]), body)
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(mut child: Child) -> String {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("read");
    assert!(status.success(), "exit {status:?} after SIGTERM: {err}");
    err
}

/// The follower's heartbeat: beside its WAL state, in the directory of its store.
fn heartbeat(site: &Site) -> PathBuf {
    let stores = site.dir.path().join("state/wal/pg");
    let dirs: Vec<_> = std::fs::read_dir(&stores)
        .map(|d| d.map(|e| e.expect("entry").path()).collect())
        .unwrap_or_default();
    match &dirs[..] {
        [one] => one.join("follow.json"),
        [] => stores.join("<none yet>/follow.json"),
        more => panic!("one store expected: {more:?}"),
    }
}

fn follows_and_ships_as_wals_appear(garage_backend: bool) {
    let (site, fetch) = site(garage_backend);
    let wals = site.wals();
    let (early, early_body) = archive(&wals, 1);
    let child = start(&site);
    wait_for(
        "a WAL there before the start",
        Duration::from_secs(30),
        || fetch(&early).as_deref() == Some(&early_body[..]),
    );
    for seg in 2..=6 {
        let (rel, body) = archive(&wals, seg);
        wait_for(&rel, Duration::from_secs(30), || {
            fetch(&rel).as_deref() == Some(&body[..])
        });
    }

    // A file being written (not renamed into place, still open): never half in the bucket.
    let name = wal_name(7);
    let body = wal_segment(&name, 7);
    let path = wals.join(&name[..16]).join(&name);
    let rel = format!("{}/{name}", &name[..16]);
    let mut f = std::fs::File::create(&path).expect("create");
    f.write_all(&body[..body.len() / 2]).expect("half");
    f.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        fetch(&rel).is_none(),
        "a half-written WAL reached the bucket"
    );
    f.write_all(&body[body.len() / 2..]).expect("rest");
    drop(f);
    wait_for("the WAL once closed", Duration::from_secs(30), || {
        fetch(&rel).as_deref() == Some(&body[..])
    });

    // status shows it; a cron wal-sync beside it works (the lock is per cycle).
    let out = site.run(&["status"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("following: pid"), "{text}");
    let out = site.run(&["wal-sync", "pg"], &[]);
    assert!(
        out.status.success(),
        "cron wal-sync beside the follower: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert!(heartbeat(&site).is_file());
    let err = stop(child);
    assert!(err.contains("stopped"), "{err}");
    assert!(
        !heartbeat(&site).exists(),
        "the heartbeat stays after a clean stop"
    );
}

#[test]
fn local_follows_and_ships_as_wals_appear() {
    follows_and_ships_as_wals_appear(false);
}

#[test]
fn garage_follows_and_ships_as_wals_appear() {
    follows_and_ships_as_wals_appear(true);
}

/// A writer that closes the file early and then writes on (a hand `cp`, NFS): the follower
/// ships the first part at the first close, then the whole file once it has grown, instead of
/// pinning the early object as a conflict; a cron run beside it agrees.
fn a_wal_closed_early_and_written_on_is_shipped_whole(garage_backend: bool) {
    let (site, fetch) = site(garage_backend);
    let wals = site.wals();
    let name = wal_name(3);
    let body = wal_segment(&name, 3);
    std::fs::create_dir_all(wals.join(&name[..16])).expect("hash dir");
    let path = wals.join(&name[..16]).join(&name);
    let rel = format!("{}/{name}", &name[..16]);
    let child = start(&site);
    let half = body.len() / 2;
    std::fs::write(&path, &body[..half]).expect("first half, closed");
    wait_for(
        "the first half, shipped at its close",
        Duration::from_secs(30),
        || fetch(&rel).is_some_and(|b| b.len() == half),
    );
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("reopen");
    f.write_all(&body[half..]).expect("the rest");
    drop(f);
    wait_for(
        "the whole file, shipped again",
        Duration::from_secs(30),
        || fetch(&rel).as_deref() == Some(&body[..]),
    );
    // A cron run compares everything (it may meet the follower's lock mid-cycle: try again).
    wait_for(
        "a cron wal-sync beside the follower",
        Duration::from_secs(30),
        || {
            let out = site.run(&["wal-sync", "pg", "--full"], &[]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() || err.contains("is running"),
                "the grown WAL is no conflict: {err}"
            );
            out.status.success()
        },
    );
    let err = stop(child);
    assert!(err.contains("shipping it again"), "{err}");
    assert!(!err.contains("differ from the bucket"), "{err}");
}

#[test]
fn local_ships_a_wal_closed_early_and_written_on_whole() {
    a_wal_closed_early_and_written_on_is_shipped_whole(false);
}

#[test]
fn garage_ships_a_wal_closed_early_and_written_on_whole() {
    a_wal_closed_early_and_written_on_is_shipped_whole(true);
}

#[test]
fn a_killed_follower_is_reported_by_check() {
    let (site, fetch) = site(false);
    let (rel, body) = archive(&site.wals(), 1);
    let mut child = start(&site);
    wait_for("first WAL", Duration::from_secs(30), || {
        fetch(&rel).as_deref() == Some(&body[..])
    });
    wait_for("heartbeat", Duration::from_secs(10), || {
        heartbeat(&site).is_file()
    });
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let out = site.run(&["check"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("no wal-sync --follow runs") && text.contains("--forget-follower pg"),
        "{text}"
    );
    let out = site.run(&["status"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no follower runs"), "{text}");
    // The documented way to clear it: the warning goes, the heartbeat with it.
    let out = site.run(&["status", "--forget-follower", "pg"], &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(!heartbeat(&site).exists());
    let out = site.run(&["check"], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = site.run(&["status", "--forget-follower", "pg"], &[]);
    assert_eq!(out.status.code(), Some(2), "nothing to forget: {out:?}");
}

#[test]
fn follow_refuses_bad_arguments() {
    let site = Site::local();
    let out = site.run(&["wal-sync", "pg", "--follow", "--full"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = site.run(&["wal-sync", "pg", "--poll", "5s"], &[]);
    assert_eq!(out.status.code(), Some(2), "--poll without --follow");
    let out = site.run(&["wal-sync", "nosuch", "--follow"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown Barman server"));
}

/// Two servers followed by one `--all` process through a proxy: the upload of a WAL of `pg` is
/// held at the proxy (a stuck connection), and a WAL of `pg2` written meanwhile still reaches
/// the bucket; once released, `pg`'s goes too.
#[test]
fn a_stuck_server_does_not_hold_back_another() {
    let g = garage();
    let proxy = FaultProxy::start(g.endpoint(), 0.0, 0, Duration::ZERO);
    let site = Site::new(&format!(
        "s3:\n  endpoint: {}\n  region: garage\n  bucket: {}\n  prefix: {}\n  access_key_id: {}\n  secret_access_key: {}\n  read_timeout: 120s\n",
        proxy.endpoint,
        g.bucket(),
        unique("follow-two"),
        g.key_id(),
        g.secret()
    ));
    let conf = site.dir.path().join("barman.conf");
    let text = std::fs::read_to_string(&conf).expect("barman.conf");
    std::fs::write(&conf, format!("{text}[pg2]\nconninfo = x\n")).expect("pg2");
    let wals2 = site.dir.path().join("barman/pg2/wals");
    std::fs::create_dir_all(&wals2).expect("pg2 wals");
    let fetch = |key: &str| {
        let out = site.run(&["store", "get", key, "-"], &[]);
        out.status.success().then_some(out.stdout)
    };

    let child = start_following(&site, "--all");
    let (rel, body) = archive(&site.wals(), 1);
    wait_for("pg's first WAL", Duration::from_secs(30), || {
        fetch(&format!("pg/wals/{rel}")).as_deref() == Some(&body[..])
    });
    let name = wal_name(2);
    proxy.hold(&format!("/pg/wals/{}/{name}", &name[..16]));
    let (stuck, stuck_body) = archive(&site.wals(), 2);
    wait_for("pg's second WAL held", Duration::from_secs(30), || {
        proxy.holding()
    });
    let (rel2, body2) = archive(&wals2, 7);
    wait_for(
        "pg2's WAL while pg is stuck",
        Duration::from_secs(15),
        || fetch(&format!("pg2/wals/{rel2}")).as_deref() == Some(&body2[..]),
    );
    assert!(proxy.holding(), "pg's upload was released too early");
    proxy.release();
    wait_for(
        "pg's second WAL once released",
        Duration::from_secs(30),
        || fetch(&format!("pg/wals/{stuck}")).as_deref() == Some(&stuck_body[..]),
    );
    let err = stop(child);
    assert!(err.contains("stopped"), "{err}");
}
