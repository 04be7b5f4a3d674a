//! Runs with nothing to send decide from one listing on Garage: a `base-sync` of a backup that
//! is already in the bucket and a `wal-sync --full` of an archive that is, counted by request
//! type (the counts are behaviour, not timing). What changed, locally or in the bucket, is still
//! found and sent (or, for a WAL, reported and never overwritten).

use std::path::Path;

use serde_json::Value;

use crate::common::site::{Site, make_archive, wal_name};
use crate::common::{data, garage, unique};

const A: &str = "20261103T010000";
/// Relation files; with PG_VERSION and pg_control the backup has two more.
const FILES: u64 = 300;

fn site(name: &str) -> Site {
    let g = garage();
    Site::new(&format!(
        "s3:\n  endpoint: {}\n  region: garage\n  bucket: {}\n  prefix: {}\n  access_key_id: {}\n  secret_access_key: {}\n",
        g.endpoint(),
        g.bucket(),
        unique(name),
        g.key_id(),
        g.secret()
    ))
}

fn err(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs with `--json`; the summary line, and the exit code.
fn json(site: &Site, args: &[&str]) -> (Value, Option<i32>, String) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = site.run(&all, &[]);
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_string();
    let v = serde_json::from_str(&line).unwrap_or(Value::Null);
    (v, out.status.code(), err(&out))
}

fn count(v: &Value, op: &str) -> u64 {
    v["requests"][op].as_u64().unwrap_or(0)
}

fn put(path: &Path, body: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, body).expect("write");
}

/// Queues backup A again (as Barman's retry hook would) and runs base-sync.
fn resync(site: &Site) -> Value {
    site.queue(A, "DONE");
    let (v, code, e) = json(site, &["base-sync"]);
    assert_eq!(code, Some(0), "base-sync: {e}");
    v
}

fn store_put(site: &Site, body: &[u8], key: &str) {
    let other = site.dir.path().join("other");
    std::fs::write(&other, body).expect("other");
    let out = site.run(&["store", "put", other.to_str().expect("utf8"), key], &[]);
    assert!(out.status.success(), "{}", err(&out));
}

#[test]
fn a_base_sync_of_a_backup_already_there_decides_from_one_listing() {
    let site = site("nochange-base");
    let dir = site.dir.path().join("barman/pg/base").join(A).join("data");
    put(&dir.join("PG_VERSION"), b"15\n");
    put(&dir.join("global/pg_control"), &data(8192, 9));
    for i in 0..FILES {
        put(
            &dir.join(format!("base/1/{}", 1000 + i)),
            &data(4096 + i as usize, i),
        );
    }
    std::fs::write(
        site.dir
            .path()
            .join(format!("barman/pg/meta/{A}-backup.info")),
        "begin_wal=000000010000000000000003\nend_wal=000000010000000000000003\nstatus=DONE\n",
    )
    .expect("info");
    let first = resync(&site);
    assert_eq!(first["counts"]["already_there"], 0, "{first}");

    // Queued again with nothing changed: one listing of the backup, no HEAD, no data sent.
    let again = resync(&site);
    assert_eq!(again["counts"]["already_there"], FILES + 2, "{again}");
    assert_eq!(count(&again, "head"), 0, "{again}");
    assert!(
        again["total_requests"].as_u64().expect("total") <= 10,
        "{again}"
    );
    assert!(
        again["bytes_up"].as_u64().expect("up") < 256 * 1024,
        "only the manifest and backup.info: {again}"
    );

    // A touched file is compared (one HEAD, a read of the file) and not sent; a rewritten one
    // of the same size is sent.
    let touched = dir.join("base/1/1002");
    std::fs::File::options()
        .write(true)
        .open(&touched)
        .and_then(|h| h.set_modified(std::time::SystemTime::now()))
        .expect("touch");
    put(&dir.join("base/1/1003"), &data(4096 + 3, 777));
    let v = resync(&site);
    assert_eq!(v["counts"]["already_there"], FILES + 1, "{v}");
    assert_eq!(count(&v, "head"), 2, "{v}");

    // Another writer replaces an object with other bytes of the same size: its listed ETag is
    // not the recorded one, so the file is compared and sent back.
    let key = format!("pg/base/{A}/data/base/1/1004");
    store_put(&site, &data(4096 + 4, 555), &key);
    let v = resync(&site);
    assert_eq!(v["counts"]["already_there"], FILES + 1, "{v}");
    assert_eq!(count(&v, "head"), 1, "{v}");

    // The manifest holds every file's CRC32C: a full verify reads the bucket back against it
    // (the backup's WAL is not there, which is all it may find).
    let out = site.run(&["verify", "pg", A], &[]);
    let problems = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(problems.lines().count() > 0, "{}", err(&out));
    assert!(
        problems.lines().all(|l| l.starts_with("wal-missing ")),
        "{problems}"
    );
    let dest = site.dir.path().join("restore");
    let out = site.run(
        &["base-restore", "pg", A, dest.to_str().expect("utf8")],
        &[],
    );
    assert!(out.status.success(), "restore: {}", err(&out));
    for rel in ["base/1/1003", "base/1/1004", "base/1/1299"] {
        assert_eq!(
            std::fs::read(dest.join(rel)).expect("restored"),
            std::fs::read(dir.join(rel)).expect("local"),
            "{rel}"
        );
    }
}

#[test]
fn a_full_wal_sync_with_nothing_changed_only_lists_and_sees_a_replaced_object() {
    let site = site("nochange-wal");
    make_archive(&site.wals(), 1, 600);
    let (v, code, e) = json(&site, &["wal-sync", "pg"]);
    assert_eq!(code, Some(0), "{e}");
    assert_eq!(v["counts"]["uploaded"], 600, "{v}");

    // Nothing changed: the listing's pages and nothing else.
    let (v, code, e) = json(&site, &["wal-sync", "pg", "--full"]);
    assert_eq!(code, Some(0), "{e}");
    assert_eq!(
        (v["total_requests"].as_u64(), count(&v, "list")),
        (Some(1), 1),
        "{v}"
    );

    // Another writer replaces a segment with other bytes of the same size: the listed ETag
    // differs from the ledger's, so a full reconcile compares it and reports it.
    let name = wal_name(300);
    let key = format!("pg/wals/{}/{name}", &name[..16]);
    let mut other = name.clone().into_bytes();
    other[0] = b'9';
    store_put(&site, &other, &key);
    let (_, code, e) = json(&site, &["wal-sync", "pg", "--full"]);
    assert_eq!(code, Some(1), "{e}");
    assert!(
        e.contains(&format!("{name}: same size, other content")),
        "{e}"
    );
    let got = site.dir.path().join("got");
    let out = site.run(&["store", "get", &key, got.to_str().expect("utf8")], &[]);
    assert!(out.status.success(), "{}", err(&out));
    assert_eq!(
        std::fs::read(&got).expect("got"),
        other,
        "never overwritten"
    );

    // The right bytes back (another object, the same content): compared once, then settled.
    store_put(&site, name.as_bytes(), &key);
    let (v, code, e) = json(&site, &["wal-sync", "pg", "--full"]);
    assert_eq!(code, Some(0), "{v} {e}");
    assert!(count(&v, "head") <= 1, "{v}");
    let (v, code, e) = json(&site, &["wal-sync", "pg", "--full"]);
    assert_eq!(code, Some(0), "{e}");
    assert_eq!(v["total_requests"].as_u64(), Some(1), "{v}");
}
