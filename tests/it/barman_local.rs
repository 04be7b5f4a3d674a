//! The Barman commands on a generated Barman-like tree: request counts of `wal-sync` over large
//! archives (100 000 WALs on a `file://` store, 10 000 on Garage), conflicts, locks, and the
//! queue's decisions for each hook situation.

use std::process::Command;

use crate::common::site::{Site, hook_env, make_archive, wal_name, write_backup};

#[test]
fn no_change_wal_sync_over_100000_wals_is_one_listing() {
    // Requests of wal-sync alone: an explicit checksum mode, so no one-time probe is counted.
    let site = Site::new("s3:\n  request_checksum: when_supported\n");
    let bucket = site.dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).expect("bucket");
    let text = std::fs::read_to_string(&site.cfg).expect("cfg");
    std::fs::write(
        &site.cfg,
        format!("store: file://{}\n{text}", bucket.display()),
    )
    .expect("cfg");
    make_archive(&site.wals(), 1, 100_000);
    std::fs::write(site.wals().join("xlog.db"), "catalogue").expect("xlog.db");
    // The bucket already holds the archive (as after an initial sync).
    let remote = site.dir.path().join("bucket/pg");
    std::fs::create_dir_all(&remote).expect("mkdir");
    let status = Command::new("cp")
        .arg("-al")
        .arg(site.wals())
        .arg(remote.join("wals"))
        .status()
        .expect("cp");
    assert!(status.success());
    std::fs::remove_file(remote.join("wals/xlog.db")).expect("rm");
    // First run: a full reconcile (lists everything, uploads nothing).
    let (_, first) = site.requests(&["wal-sync", "pg"]);
    assert_eq!(first.get("put"), None, "{first:?}");
    // Then a run with nothing new costs one listing, whatever the archive size.
    let (total, by) = site.requests(&["wal-sync", "pg"]);
    eprintln!("no-change wal-sync over 100 000 WALs: {total} request(s) {by:?}");
    assert!(total <= 3, "{total} requests: {by:?}");
    assert_eq!(by.get("put"), None);
    // A new WAL: one listing and one upload; the catalogue is never uploaded.
    make_archive(&site.wals(), 100_001, 1);
    let (total, by) = site.requests(&["wal-sync", "pg"]);
    assert_eq!((total, by.get("put").copied()), (2, Some(1)), "{by:?}");
    assert!(
        site.dir
            .path()
            .join("bucket/pg/wals")
            .join(&wal_name(100_001)[..16])
            .join(wal_name(100_001))
            .is_file()
    );
    assert!(!site.dir.path().join("bucket/pg/wals/xlog.db").exists());
}

#[test]
fn no_change_wal_sync_on_garage_with_10000_wals() {
    let g = crate::common::garage();
    let prefix = crate::common::unique("walreq");
    let site = Site::new(&format!(
        "s3:\n  endpoint: {}\n  region: garage\n  bucket: {}\n  prefix: {prefix}\n  access_key_id: {}\n  secret_access_key: {}\n  concurrency: 16\n  request_checksum: when_supported\n",
        g.endpoint(),
        g.bucket(),
        g.key_id(),
        g.secret()
    ));
    make_archive(&site.wals(), 1, 10_000);
    let (_, first) = site.requests(&["wal-sync", "pg"]);
    assert_eq!(first.get("put"), Some(&10_000), "{first:?}");
    let (total, by) = site.requests(&["wal-sync", "pg"]);
    eprintln!("no-change wal-sync over 10 000 WALs on Garage: {total} request(s) {by:?}");
    assert!(total <= 3, "{total} requests: {by:?}");
    // --full compares everything again and still uploads nothing.
    let (_, full) = site.requests(&["wal-sync", "--full", "pg"]);
    assert_eq!(full.get("put"), None, "{full:?}");
    assert!(full["list"] >= 10, "{full:?}");
}

#[test]
fn a_different_remote_wal_is_an_error_and_is_not_overwritten() {
    let site = Site::local();
    make_archive(&site.wals(), 1, 3);
    let name = wal_name(2);
    let remote = site.dir.path().join("bucket/pg/wals").join(&name[..16]);
    std::fs::create_dir_all(&remote).expect("mkdir");
    std::fs::write(remote.join(&name), b"other bytes, other size").expect("w");
    let out = site.run(&["wal-sync", "pg"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("differ from the bucket") && err.contains(&name),
        "{err}"
    );
    assert_eq!(
        std::fs::read(remote.join(&name)).expect("r"),
        b"other bytes, other size"
    );
}

#[test]
fn overlapping_wal_syncs_leave_the_second_idle() {
    let site = Site::local();
    make_archive(&site.wals(), 1, 3);
    let state = site.dir.path().join("state");
    std::fs::create_dir_all(&state).expect("mkdir");
    let lock = std::fs::File::create(state.join("pg.wal-sync.lock")).expect("lock file");
    lock.lock().expect("hold the lock");
    let out = site.run(&["wal-sync", "pg"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(
        err.contains("another wal-sync for server pg is running"),
        "{err}"
    );
    assert!(
        !site.dir.path().join("bucket/pg").exists(),
        "uploaded while busy"
    );
    drop(lock);
    assert!(site.run(&["wal-sync", "pg"], &[]).status.success());
    let out = site.run(&["wal-sync", "nosuch"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown Barman server \"nosuch\""));
}

fn queue_files(site: &Site) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(site.dir.path().join("queue"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn the_queue_follows_barman_status_at_sync_time() {
    let site = Site::local();
    let (a, b, c) = ("20261121T100000", "20261121T110000", "20261121T120000");
    write_backup(&site, a, "WAITING_FOR_WALS");
    write_backup(&site, b, "FAILED");
    for (id, st) in [(a, "WAITING_FOR_WALS"), (b, "FAILED")] {
        let out = site.run(
            &["queue-add"],
            &hook_env(id, st, &[("BARMAN_ERROR", "it's \"$HOME\" broken")]),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        queue_files(&site),
        vec![format!("{a}.run"), format!("{b}.error")]
    );
    // Waiting for WALs: nothing uploaded, task kept, exit 0.
    let out = site.run(&["base-sync"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        queue_files(&site),
        vec![format!("{a}.run"), format!("{b}.error")]
    );
    assert!(!site.dir.path().join("bucket/pg/base").exists());
    // Barman marks it DONE: the next base-sync uploads it, backup.info last.
    write_backup(&site, a, "DONE");
    assert!(site.run(&["base-sync"], &[]).status.success());
    assert_eq!(
        queue_files(&site),
        vec![format!("{a}.done"), format!("{b}.error")]
    );
    let remote = site.dir.path().join("bucket/pg/base").join(a);
    for f in ["data/PG_VERSION", "barmans3.manifest", "backup.info"] {
        assert!(remote.join(f).is_file(), "{f}");
    }
    // Not a marker file in Barman's directories.
    assert!(
        !site
            .dir
            .path()
            .join("barman/pg/base")
            .join(a)
            .join("data/pg_wal/.barmans3")
            .exists()
    );
    // A backup Barman removed before the sync: the task goes to .error and the run fails.
    let out = site.run(&["queue-add"], &hook_env(c, "DONE", &[]));
    assert!(out.status.success());
    let out = site.run(&["base-sync"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is gone"));
    let task = std::fs::read_to_string(site.dir.path().join(format!("queue/{c}.error")))
        .expect("error task");
    assert!(
        task.contains("is gone") && task.contains("\"attempts\": 0"),
        "{task}"
    );
}

#[test]
fn queue_add_refuses_wrong_hooks_with_barman_exit_codes() {
    let site = Site::local();
    let id = "20261121T100000";
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<i32>, &'a str);
    let cases: &[Case] = &[
        (&[("BARMAN_PHASE", "pre")], Some(2), "post_backup_script"),
        (&[("BARMAN_HOOK", "archive_script")], Some(2), "BARMAN_HOOK"),
        (&[("BARMAN_BACKUP_ID", "")], Some(2), "BARMAN_BACKUP_ID"),
        (
            &[("BARMAN_BACKUP_ID", "../../x")],
            Some(2),
            "BARMAN_BACKUP_ID",
        ),
        (
            &[
                ("BARMAN_RETRY", "1"),
                ("BARMAN_HOOK", "backup_retry_script"),
                ("BARMAN_PHASE", "pre"),
            ],
            Some(62),
            "post_backup_script",
        ),
    ];
    for (extra, code, msg) in cases {
        let out = site.run(&["queue-add"], &hook_env(id, "DONE", extra));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), *code, "{extra:?}: {err}");
        assert!(
            err.contains(msg) && err.lines().count() == 1,
            "{extra:?}: {err}"
        );
    }
    assert!(queue_files(&site).is_empty());
    // The retry hook with a good environment queues and exits 0.
    let out = site.run(
        &["queue-add"],
        &hook_env(
            id,
            "DONE",
            &[
                ("BARMAN_RETRY", "1"),
                ("BARMAN_HOOK", "backup_retry_script"),
            ],
        ),
    );
    assert!(out.status.success());
    // A broken config as a retry hook: 62, so Barman is never blocked.
    std::fs::write(&site.cfg, "s3: [").expect("w");
    let out = site.run(
        &["queue-add"],
        &hook_env(
            id,
            "DONE",
            &[
                ("BARMAN_RETRY", "1"),
                ("BARMAN_HOOK", "backup_retry_script"),
            ],
        ),
    );
    assert_eq!(out.status.code(), Some(62));
}

#[test]
fn two_base_syncs_at_once_process_each_task_once() {
    let site = Site::local();
    let ids = ["20261121T100000", "20261121T110000", "20261121T120000"];
    for id in ids {
        write_backup(&site, id, "DONE");
        let out = site.run(&["queue-add"], &hook_env(id, "DONE", &[]));
        assert!(out.status.success());
    }
    // Two runs started together: one works the queue, the other finds the lock held and
    // exits 75 without touching anything (or, if it came second, finds nothing left to do).
    let spawn = || {
        Command::new(crate::common::site::BIN)
            .arg("--config")
            .arg(&site.cfg)
            .arg("base-sync")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    );
    let codes = [a.status.code(), b.status.code()];
    assert!(codes.contains(&Some(0)), "{codes:?}");
    assert!(
        codes.iter().all(|c| matches!(c, Some(0) | Some(75))),
        "{codes:?}"
    );
    for id in ids {
        let task = std::fs::read_to_string(site.dir.path().join(format!("queue/{id}.done")))
            .expect("done once");
        assert!(
            task.contains("\"attempts\": 1"),
            "{id} worked more than once: {task}"
        );
    }
    // A held queue lock: the second run reports it.
    let lock = std::fs::File::create(site.dir.path().join("queue/.base-sync.lock")).expect("f");
    lock.lock().expect("hold");
    let out = site.run(&["base-sync"], &[]);
    assert_eq!(out.status.code(), Some(75));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another base-sync is running"));
}
