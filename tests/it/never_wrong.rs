//! Places where a run could report success for what is not so, or act outside its place:
//! Barman's tree touched as the wrong user, a bad task stopping the queue, a file changed while
//! it was uploaded, a dry run that changes things, monitoring that cannot answer in time.

use crate::common::site::{Site, hook_env, write_backup};

fn err(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The tree of a site as (path, owner uid) pairs, to prove a refused run created nothing.
fn tree(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .map(|e| e.path().display().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn commands_that_touch_barmans_tree_run_as_barmans_user_only() {
    let site = Site::local();
    let conf = site.dir.path().join("barman.conf");
    let text = std::fs::read_to_string(&conf).expect("conf");
    // The tree belongs to a user that is not us (the tests run as root).
    std::fs::write(
        &conf,
        text.replace("barman_user = root", "barman_user = nobody"),
    )
    .expect("conf");
    write_backup(&site, "20261122T080000", "DONE");
    let before = tree(site.dir.path());
    for args in [
        vec!["base-sync"],
        vec!["wal-sync", "pg"],
        vec!["full-sync", "pg"],
        vec!["queue-add"],
    ] {
        let out = site.run(&args, &hook_env("20261122T080000", "DONE", &[]));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", err(&out));
        assert!(
            err(&out).contains(&format!("sudo -u nobody barmans3 {}", args[0])),
            "{args:?}: {}",
            err(&out)
        );
    }
    // As a retry hook the refusal is 62, so Barman carries on.
    let out = site.run(
        &["queue-add"],
        &hook_env(
            "20261122T080000",
            "DONE",
            &[
                ("BARMAN_HOOK", "backup_retry_script"),
                ("BARMAN_RETRY", "1"),
            ],
        ),
    );
    assert_eq!(out.status.code(), Some(62), "{}", err(&out));
    assert_eq!(tree(site.dir.path()), before, "a refused run created files");
    // Reading the bucket needs no particular user.
    let out = site.run(&["base-ls", "pg"], &[]);
    assert!(out.status.success(), "{}", err(&out));
}

#[test]
fn a_damaged_task_goes_aside_and_the_queue_goes_on() {
    let site = Site::local();
    let (good, bad) = ("20261122T090000", "20261122T091000");
    write_backup(&site, good, "DONE");
    write_backup(&site, bad, "DONE");
    site.queue(good, "DONE");
    site.queue(bad, "DONE");
    let queue = site.dir.path().join("queue");
    let text = std::fs::read(queue.join(format!("{bad}.run"))).expect("task");
    std::fs::write(queue.join(format!("{bad}.run")), &text[..text.len() / 2]).expect("truncate");
    // The operator views still answer, and name the damaged task.
    let ls = site.run(&["queue", "ls"], &[]);
    assert!(ls.status.success(), "{}", err(&ls));
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(listing.contains(good) && listing.contains(bad), "{listing}");
    let check = site.run(&["check"], &[]);
    let line = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{line}");
    assert!(
        line.starts_with("BARMANS3 WARNING") && line.contains(bad),
        "{line}"
    );
    // base-sync uploads the good one, sets the bad one aside with the reason, exits 1.
    let out = site.run(&["base-sync"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(queue.join(format!("{good}.done")).exists());
    let parked = std::fs::read_to_string(queue.join(format!("{bad}.error"))).expect("error");
    assert!(parked.contains("unreadable task file"), "{parked}");
    assert!(queue.join(format!("{bad}.run.damaged")).exists());
    assert!(!queue.join(format!("{bad}.run")).exists());
}

#[test]
fn check_always_answers_one_line_in_time() {
    // A server that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            held.push(c);
        }
    });
    let site = Site::new(&format!(
        "s3:\n  endpoint: http://127.0.0.1:{port}\n  region: garage\n  bucket: stalled\n  access_key_id: GK00\n  secret_access_key: x\n"
    ));
    let started = std::time::Instant::now();
    let out = site.run(&["check", "--timeout", "1s"], &[]);
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(3), "{line} {}", err(&out));
    assert!(
        line.starts_with("BARMANS3 UNKNOWN - no answer within 1s"),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1, "{line}");
    // The deadline, not the store's retries (5 attempts of 60 s by default), ends it.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // A broken configuration is UNKNOWN too, on one line of stdout.
    std::fs::write(&site.cfg, "s3: [not a map\n").expect("cfg");
    let out = site.run(&["check"], &[]);
    let line = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{line}");
    assert!(
        line.starts_with("BARMANS3 UNKNOWN - ") && line.contains("invalid YAML"),
        "{line}"
    );
}

/// Waits until `path` exists (a state change of a running command), at most 30 s.
fn wait_for(path: &std::path::Path) {
    for _ in 0..3000 {
        if path.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{} never appeared", path.display());
}

#[test]
fn a_file_written_during_its_upload_is_never_called_verified() {
    let prefix = crate::common::unique("changed");
    let site = Site::new(&crate::common::garage().yaml(&prefix));
    let id = "20261122T100000";
    write_backup(&site, id, "DONE");
    let big = site
        .dir
        .path()
        .join(format!("barman/pg/base/{id}/data/base/1/big"));
    std::fs::create_dir_all(big.parent().expect("dir")).expect("mkdir");
    std::fs::write(&big, crate::common::data(200 << 20, 5)).expect("big");
    site.queue(id, "DONE");
    // Write into the file (same size, as dd conv=notrunc does) for as long as base-sync runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, big) = (stop.clone(), big.clone());
        std::thread::spawn(move || {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&big)
                .expect("open");
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                f.write_all_at(&i.to_le_bytes(), (i * 7_777_777) % (200 << 20))
                    .expect("write");
                i += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    let out = site.run(&["base-sync"], &[]);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().expect("writer");
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    let queue = site.dir.path().join("queue");
    let task = std::fs::read_to_string(queue.join(format!("{id}.run"))).expect("still .run");
    assert!(
        task.contains("changed while it was being uploaded"),
        "{task}"
    );
    // Quiet again: the next run uploads it, and the restore gives exactly the final bytes.
    let out = site.run(&["base-sync"], &[]);
    assert!(out.status.success(), "{}", err(&out));
    let dest = site.dir.path().join("restored");
    let out = site.run(
        &["base-restore", "pg", id, dest.to_str().expect("utf8")],
        &[],
    );
    assert!(out.status.success(), "{}", err(&out));
    assert!(
        std::fs::read(dest.join("base/1/big")).expect("restored")
            == std::fs::read(&big).expect("src")
    );
}

#[test]
fn a_backup_barman_fails_during_its_upload_is_never_published_complete() {
    let prefix = crate::common::unique("failed-mid");
    let site = Site::new(&crate::common::garage().yaml(&prefix));
    let id = "20261122T110000";
    write_backup(&site, id, "DONE");
    let big = site
        .dir
        .path()
        .join(format!("barman/pg/base/{id}/data/base/1/big"));
    std::fs::create_dir_all(big.parent().expect("dir")).expect("mkdir");
    std::fs::write(&big, crate::common::data(200 << 20, 6)).expect("big");
    site.queue(id, "DONE");
    let mut child = std::process::Command::new(crate::common::site::BIN)
        .args(["--config", site.cfg.to_str().expect("utf8"), "base-sync"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("base-sync");
    // Once the upload is under way, Barman marks the backup FAILED.
    wait_for(&site.dir.path().join(format!("queue/{id}.running")));
    let info = site
        .dir
        .path()
        .join(format!("barman/pg/meta/{id}-backup.info"));
    let text = std::fs::read_to_string(&info).expect("info");
    std::fs::write(&info, text.replace("status=DONE", "status=FAILED")).expect("fail it");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(1));
    let task =
        std::fs::read_to_string(site.dir.path().join(format!("queue/{id}.error"))).expect(".error");
    assert!(task.contains("FAILED"), "{task}");
    let ls = site.run(&["--json", "base-ls", "pg"], &[]);
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(
        !listing.contains("\"complete\": true"),
        "listed as complete: {listing}"
    );
}

#[test]
fn a_dry_run_changes_nothing() {
    let site = Site::local();
    let id = "20261122T120000";
    write_backup(&site, id, "DONE");
    crate::common::site::make_real_archive(&site.wals(), 1, 3);
    let bucket = site.dir.path().join("bucket");
    // The local store lays out its own directories when first opened.
    assert!(site.run(&["store", "ls"], &[]).status.success());
    let before = tree(&bucket);
    let out = site.run(&["full-sync", "--dry-run", "pg"], &[]);
    assert!(out.status.success(), "{}", err(&out));
    assert_eq!(tree(&bucket), before, "a dry run wrote to the bucket");
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(plan.contains(&format!("upload backup {id}")), "{plan}");
    assert!(
        err(&out).contains("would upload 1 backup(s) and 3 WAL(s)"),
        "{}",
        err(&out)
    );
    // And the real run does what the dry run said.
    let out = site.run(&["full-sync", "--no-delete", "pg"], &[]);
    assert!(out.status.success(), "{}", err(&out));
    assert!(bucket.join(format!("pg/base/{id}/backup.info")).exists());
}

#[test]
fn names_that_are_not_utf8_round_trip_byte_for_byte_or_the_backup_is_refused() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let site = Site::local();
    let id = "20261122T130000";
    write_backup(&site, id, "DONE");
    let data = site.dir.path().join(format!("barman/pg/base/{id}/data"));
    let latin1 = OsStr::from_bytes(b"caf\xe9.txt");
    std::fs::write(data.join(latin1), b"latin-1 name").expect("latin1");
    std::fs::write(data.join("caf\u{e9}.txt"), b"utf-8 name").expect("utf8");
    std::fs::create_dir(data.join(OsStr::from_bytes(b"dir\xff"))).expect("dir");
    site.queue(id, "DONE");
    let out = site.run(&["base-sync"], &[]);
    assert!(out.status.success(), "{}", err(&out));
    let dest = site.dir.path().join("restored");
    let out = site.run(
        &["base-restore", "pg", id, dest.to_str().expect("utf8")],
        &[],
    );
    assert!(out.status.success(), "{}", err(&out));
    assert_eq!(
        std::fs::read(dest.join(latin1)).expect("latin1"),
        b"latin-1 name"
    );
    assert_eq!(
        std::fs::read(dest.join("caf\u{e9}.txt")).expect("utf8"),
        b"utf-8 name"
    );
    assert!(dest.join(OsStr::from_bytes(b"dir\xff")).is_dir());

    // A name that would share its key with another: refused, never .done.
    let id2 = "20261122T140000";
    write_backup(&site, id2, "DONE");
    let data2 = site.dir.path().join(format!("barman/pg/base/{id2}/data"));
    std::fs::write(data2.join(OsStr::from_bytes(b"x\xe9")), b"one").expect("one");
    std::fs::write(data2.join("x%E9"), b"two").expect("two");
    site.queue(id2, "DONE");
    let out = site.run(&["base-sync"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(err(&out).contains("same key"), "{}", err(&out));
    let queue = site.dir.path().join("queue");
    assert!(!queue.join(format!("{id2}.done")).exists());
    assert!(
        !site
            .dir
            .path()
            .join(format!("bucket/pg/base/{id2}/backup.info"))
            .exists()
    );
}

#[test]
fn a_killed_restore_leaves_nothing_postgresql_would_start() {
    let prefix = crate::common::unique("killed-restore");
    let site = Site::new(&crate::common::garage().yaml(&prefix));
    let id = "20261122T150000";
    write_backup(&site, id, "DONE");
    let data = site.dir.path().join(format!("barman/pg/base/{id}/data"));
    std::fs::create_dir_all(data.join("base/1")).expect("mkdir");
    std::fs::write(data.join("base/1/big"), crate::common::data(200 << 20, 9)).expect("big");
    site.queue(id, "DONE");
    assert!(site.run(&["base-sync"], &[]).status.success());
    let dest = site.dir.path().join("restored");
    let mut child = std::process::Command::new(crate::common::site::BIN)
        .args(["--config", site.cfg.to_str().expect("utf8")])
        .args(["base-restore", "pg", id, dest.to_str().expect("utf8")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("restore");
    wait_for(&dest.join("PG_VERSION"));
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    assert!(
        !dest.join("global/pg_control").exists(),
        "a killed restore left pg_control: PostgreSQL could start on a partial directory"
    );
}

#[test]
fn the_restore_command_works_through_the_shell_with_spaces_in_paths() {
    let site = Site::local();
    let id = "20261122T160000";
    write_backup(&site, id, "DONE");
    crate::common::site::make_real_archive(&site.wals(), 1, 1);
    site.queue(id, "DONE");
    assert!(site.run(&["base-sync"], &[]).status.success());
    assert!(site.run(&["wal-sync", "pg"], &[]).status.success());
    // The config lives in a directory with a space and a quote in its name.
    let odd = site.dir.path().join("my conf's dir");
    std::fs::create_dir(&odd).expect("mkdir");
    let cfg = odd.join("b3.yaml");
    std::fs::copy(&site.cfg, &cfg).expect("copy");
    let dest = site.dir.path().join("pgdata");
    let out = std::process::Command::new(crate::common::site::BIN)
        .args(["--config", cfg.to_str().expect("utf8")])
        .args([
            "base-restore",
            "--recovery",
            "pg",
            id,
            dest.to_str().expect("utf8"),
        ])
        .output()
        .expect("restore");
    assert!(out.status.success(), "{}", err(&out));
    assert!(dest.join("recovery.signal").exists());
    let auto = std::fs::read_to_string(dest.join("postgresql.auto.conf")).expect("auto");
    let line = auto
        .lines()
        .rfind(|l| l.starts_with("restore_command = '"))
        .expect("restore_command");
    // Undo postgresql.conf's quoting, substitute %f and %p as PostgreSQL does, run with sh -c.
    let value = line["restore_command = '".len()..line.len() - 1].replace("''", "'");
    // The lean program beside barmans3, with the same arguments but the subcommand.
    let program = value.split(' ').next().expect("program").trim_matches('\'');
    assert_eq!(program, crate::common::site::LEAN, "{value}");
    assert!(!value.contains(" wal-restore "), "{value}");
    let cmd = value
        .replace("%f", "000000010000000000000001")
        .replace("%p", "pg_wal/RECOVERYXLOG");
    std::fs::create_dir_all(dest.join("pg_wal")).expect("pg_wal");
    let run = std::process::Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .current_dir(&dest)
        .output()
        .expect("sh");
    assert!(run.status.success(), "{cmd}: {}", err(&run));
    assert!(dest.join("pg_wal/RECOVERYXLOG").exists());
    assert!(auto.contains("archive_mode = 'off'"), "{auto}");
}

#[test]
fn config_check_tells_unreachable_from_misconfigured() {
    // Nothing listens on port 9: the store cannot be reached, an operation that failed (1).
    let site = Site::new(
        "s3:\n  endpoint: http://127.0.0.1:9\n  region: garage\n  bucket: somebucket\n  access_key_id: GK00\n  secret_access_key: x\n  max_attempts: 1\n  connect_timeout: 1s\n",
    );
    let out = site.run(&["config", "check"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(
        err(&out).contains("cannot reach the store"),
        "{}",
        err(&out)
    );
    // No credentials anywhere: a configuration error (2) that says where to put them. (The
    // instance-metadata lookup is switched off: nothing leaves the machine.)
    let site = Site::new(
        "s3:\n  endpoint: http://127.0.0.1:9\n  region: garage\n  bucket: somebucket\n  max_attempts: 1\n",
    );
    let home = site.dir.path().join("home");
    std::fs::create_dir(&home).expect("home");
    let out = std::process::Command::new(crate::common::site::BIN)
        .args([
            "--config",
            site.cfg.to_str().expect("utf8"),
            "config",
            "check",
        ])
        .env_clear()
        .env("HOME", &home)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    assert!(
        err(&out).contains("no credentials found: set s3.access_key_id"),
        "{}",
        err(&out)
    );
}

/// In the bucket: FULL2 and INC3 (an incremental of FULL2). Barman takes NEW and deletes FULL2
/// and INC3; NEW is busy (its Barman lock held) and only partly in the bucket. full-sync (dry run and
/// real) deletes nothing, says why, and exits 0; once NEW is uploaded, FULL2 and INC3 go
/// together.
#[test]
fn full_sync_deletes_nothing_while_the_newest_backup_is_busy_and_never_leaves_an_orphan() {
    let site = Site::local();
    let (full2, inc3, new) = ("20261123T010000", "20261123T020000", "20261123T030000");
    write_backup(&site, full2, "DONE");
    write_backup(&site, inc3, "DONE");
    let meta = site.dir.path().join("barman/pg/meta");
    let info = |id: &str| meta.join(format!("{id}-backup.info"));
    let text = std::fs::read_to_string(info(inc3)).expect("info");
    std::fs::write(info(inc3), format!("{text}parent_backup_id={full2}\n")).expect("w");
    let out = site.run(&["full-sync", "--no-delete", "pg"], &[]);
    assert!(out.status.success(), "{}", err(&out));
    let bucket = site.dir.path().join("bucket/pg/base");
    for id in [full2, inc3] {
        assert!(
            bucket.join(id).join("backup.info").exists(),
            "{id} not uploaded"
        );
        std::fs::remove_dir_all(site.dir.path().join("barman/pg/base").join(id)).expect("rm");
        std::fs::remove_file(info(id)).expect("rm");
    }
    write_backup(&site, new, "DONE");
    // NEW's upload is under way: part of it is in the bucket, without backup.info.
    let part = site
        .dir
        .path()
        .join("barman/pg/base")
        .join(new)
        .join("data/PG_VERSION");
    let key = format!("pg/base/{new}/data/PG_VERSION");
    let out = site.run(&["store", "put", part.to_str().expect("utf8"), &key], &[]);
    assert!(out.status.success(), "{}", err(&out));
    let lock = std::fs::File::create(site.dir.path().join(format!("barman/.pg-{new}.lock")))
        .expect("lock file");
    lock.lock().expect("hold Barman's lock");
    for args in [
        &["full-sync", "--dry-run", "pg"][..],
        &["full-sync", "pg"][..],
    ] {
        let out = site.run(args, &[]);
        assert!(out.status.success(), "{args:?}: {}", err(&out));
        let plan = String::from_utf8_lossy(&out.stdout);
        assert!(!plan.contains("delete"), "{args:?}: {plan}");
        assert!(
            err(&out).contains(&format!(
                "nothing deleted: {new}, the newest backup Barman has DONE, is not restorable from the bucket"
            )),
            "{args:?}: {}",
            err(&out)
        );
        for id in [full2, inc3] {
            assert!(
                bucket.join(id).join("backup.info").exists(),
                "{args:?} deleted {id}"
            );
        }
    }
    drop(lock);
    let out = site.run(&["full-sync", "pg"], &[]);
    assert!(out.status.success(), "{}", err(&out));
    assert!(bucket.join(new).join("backup.info").exists());
    for id in [full2, inc3] {
        assert!(!bucket.join(id).exists(), "{id} kept: {}", err(&out));
    }
}
