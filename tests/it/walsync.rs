//! `wal-sync` never counts a WAL as shipped unless the bucket holds its very bytes, and its
//! state belongs to one store: a file of the same size with other content is a conflict that
//! `check` reports, and another store starts with a full reconcile.

use crate::common::site::{Site, make_real_archive, wal_name, wal_segment};

fn err(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn key(seg: u64) -> String {
    let n = wal_name(seg);
    format!("pg/wals/{}/{n}", &n[..16])
}

#[test]
fn a_same_size_wal_with_other_content_is_a_conflict_that_check_reports() {
    let site = Site::local();
    make_real_archive(&site.wals(), 1, 3);
    // What a re-initialised server under the same prefix finds: segment 2 is in the bucket with
    // the same size and other bytes.
    let other = site.dir.path().join("other");
    std::fs::write(&other, wal_segment(&wal_name(2), 999)).expect("other");
    let out = site.run(
        &["store", "put", other.to_str().expect("utf8"), &key(2)],
        &[],
    );
    assert!(out.status.success(), "{}", err(&out));
    let out = site.run(&["wal-sync", "pg", "--full"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(
        err(&out).contains("same size, other content"),
        "{}",
        err(&out)
    );
    // Never overwritten; the others went.
    let stored = std::fs::read(site.dir.path().join("bucket").join(key(2))).expect("stored");
    assert!(stored == wal_segment(&wal_name(2), 999));
    assert!(site.dir.path().join("bucket").join(key(3)).exists());
    // Monitoring sees it.
    let out = site.run(&["check"], &[]);
    let line = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{line}");
    assert!(
        line.contains("CRITICAL") && line.contains("other content"),
        "{line}"
    );
    // Once the bucket holds the right bytes, the next run is clean.
    let right = site.wals().join(&key(2)[8..]);
    let out = site.run(
        &["store", "put", right.to_str().expect("utf8"), &key(2)],
        &[],
    );
    assert!(out.status.success(), "{}", err(&out));
    let out = site.run(&["wal-sync", "pg"], &[]);
    assert!(out.status.success(), "{}", err(&out));
    assert_eq!(site.run(&["check"], &[]).status.code(), Some(0));
}

#[test]
fn wal_sync_state_belongs_to_its_store() {
    let site = Site::local();
    make_real_archive(&site.wals(), 1, 5);
    let out = site.run(&["wal-sync", "pg"], &[]);
    assert!(out.status.success(), "{}", err(&out));
    // A second run against the same store: one listing, nothing compared or sent.
    let (total, by) = site.requests(&["wal-sync", "pg"]);
    assert_eq!(total, 1, "{by:?}");
    // Another (empty) store: a full reconcile ships everything there.
    let other = site.dir.path().join("bucket2");
    std::fs::create_dir(&other).expect("bucket2");
    let url = format!("file://{}", other.display());
    let out = site.run(&["--store", &url, "wal-sync", "pg"], &[]);
    assert!(out.status.success(), "{}", err(&out));
    assert!(err(&out).contains("5 uploaded"), "{}", err(&out));
    for seg in 1..=5 {
        assert!(
            other.join(key(seg)).exists(),
            "segment {seg} not in the second store"
        );
    }
    let out = site.run(&["--store", &url, "status"], &[]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 pending"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_wal_already_in_the_bucket_with_the_same_bytes_is_compared_once() {
    let site = Site::local();
    make_real_archive(&site.wals(), 1, 3);
    // Put the right bytes there first, as a migration from BarmanS3 would find them.
    for seg in 1..=3 {
        let f = site.wals().join(&key(seg)[8..]);
        let out = site.run(&["store", "put", f.to_str().expect("utf8"), &key(seg)], &[]);
        assert!(out.status.success(), "{}", err(&out));
    }
    let (_, by) = site.requests(&["wal-sync", "pg"]);
    assert_eq!(by.get("head"), Some(&3), "each compared once: {by:?}");
    assert_eq!(by.get("put"), None, "nothing sent again: {by:?}");
    let (total, by) = site.requests(&["wal-sync", "pg", "--full"]);
    assert_eq!(total, 1, "known now: {by:?}");
}
