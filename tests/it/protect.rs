//! Protecting backups on real servers: Object Lock and archive storage classes against moto
//! (Garage implements neither), request-checksum detection against Garage and proxies that
//! ignore or refuse CRC32C headers, the bandwidth cap on Garage, and one clear line with exit 2
//! for bad values of every protection key.

use std::path::Path;
use std::process::Command;

use crate::common::faults::{FaultProxy, Quirk};
use crate::common::moto::moto;
use crate::common::site::{Site, forget_backup, make_archive, write_backup};
use crate::common::{data, garage, unique};

const A: &str = "20261101T010000";
const B: &str = "20261102T010000";

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(site: &Site, args: &[&str]) -> String {
    let out = site.run(args, &[]);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    text(&out)
}

fn head(bucket: &str, key: &str) -> (String, String) {
    moto().head(bucket, key)
}

fn keys(bucket: &str, prefix: &str) -> Vec<String> {
    moto().keys(bucket, prefix)
}

/// A backup with one real data file besides the standard ones, and the WAL it needs.
fn backup(site: &Site, id: &str, seed: u64) -> Vec<u8> {
    write_backup(site, id, "DONE");
    let body = data(300 * 1024, seed);
    let file = site
        .dir
        .path()
        .join("barman/pg/base")
        .join(id)
        .join("data/base/1/16384");
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    std::fs::write(&file, &body).expect("write");
    site.queue(id, "DONE");
    body
}

fn restored(dest: &Path) -> Vec<u8> {
    std::fs::read(dest.join("base/1/16384")).expect("restored data file")
}

#[test]
fn object_lock_retains_every_object_and_full_sync_keeps_retained_backups_whole() {
    let bucket = moto().bucket(true);
    let lock = "  object_lock:\n    mode: governance\n    retain: 1d\n";
    let site = Site::new(&moto().yaml(&bucket, lock));
    let check = ok(&site, &["config", "check"]);
    assert!(
        check.contains("Object Lock on the bucket:") && !check.contains("not enabled"),
        "{check}"
    );
    make_archive(&site.wals(), 3, 2);
    let body_a = backup(&site, A, 1);
    backup(&site, B, 2);
    ok(&site, &["base-sync"]);
    ok(&site, &["wal-sync", "pg", "--full"]);

    // Every object created carries a retain-until date about a day ahead.
    let all = keys(&bucket, "");
    assert!(all.iter().any(|k| k.contains(A)), "{all:?}");
    let (low, high) = (utc("+1 day -5 minutes"), utc("+1 day +5 minutes"));
    for k in &all {
        let (_, until) = head(&bucket, k);
        let at = until.get(..19).unwrap_or("");
        assert!(
            low.as_str() <= at && at <= high.as_str(),
            "{k}: retain-until {until:?}, expected between {low} and {high}"
        );
    }

    // Barman drops backup A: full-sync would delete it, but it is retained.
    forget_backup(&site, A, &[]);
    let before: Vec<String> = keys(&bucket, "")
        .into_iter()
        .filter(|k| k.contains(A))
        .collect();
    let dry = ok(&site, &["full-sync", "pg", "--dry-run"]);
    assert!(
        dry.contains(&format!("backup {A} retained until")),
        "dry run must say the backup is retained: {dry}"
    );
    let run = ok(&site, &["full-sync", "pg"]);
    assert!(run.contains(&format!("backup {A} retained until")), "{run}");
    let after: Vec<String> = keys(&bucket, "")
        .into_iter()
        .filter(|k| k.contains(A))
        .collect();
    assert_eq!(before, after, "a retained backup stays whole");

    let dest = tempfile::tempdir().expect("tmp");
    let d = dest.path().join("pgdata");
    ok(&site, &["base-restore", "pg", A, d.to_str().expect("utf8")]);
    assert_eq!(restored(&d), body_a);
}

/// Now moved by `shift` (as `date -d` reads it), in UTC as `YYYY-MM-DDTHH:MM:SS`.
fn utc(shift: &str) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", shift, "+%Y-%m-%dT%H:%M:%S"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn object_lock_on_a_bucket_without_it_is_a_config_error() {
    let bucket = moto().bucket(false);
    let lock = "  object_lock:\n    mode: compliance\n    retain: 30d\n";
    let site = Site::new(&moto().yaml(&bucket, lock));
    let out = site.run(&["config", "check"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("s3.object_lock"), "{err}");
}

#[test]
fn storage_classes_by_kind_and_archived_backups_restored_on_request() {
    let bucket = moto().bucket(false);
    let classes =
        "  storage_class: STANDARD_IA\n  storage_classes:\n    base: GLACIER\n    wal: STANDARD\n";
    let site = Site::new(&moto().yaml(&bucket, classes));
    make_archive(&site.wals(), 3, 1);
    let body = backup(&site, A, 3);
    ok(&site, &["base-sync"]);
    ok(&site, &["wal-sync", "pg", "--full"]);
    let all = keys(&bucket, "");
    let data_key = all
        .iter()
        .find(|k| k.ends_with("base/1/16384"))
        .expect("data key");
    assert_eq!(head(&bucket, data_key).0, "GLACIER");
    let info = all
        .iter()
        .find(|k| k.ends_with("backup.info"))
        .expect("backup.info key");
    assert_eq!(
        head(&bucket, info).0,
        "STANDARD_IA",
        "metadata is never archived"
    );
    let wal = all.iter().find(|k| k.contains("/wals/")).expect("wal key");
    assert_eq!(head(&bucket, wal).0, "STANDARD");

    // Archived: the restore says what to do and writes nothing PostgreSQL could start on.
    let dest = tempfile::tempdir().expect("tmp");
    let d = dest.path().join("pgdata");
    let ds = d.to_str().expect("utf8");
    let out = site.run(&["base-restore", "pg", A, ds], &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--request-restore"), "{}", text(&out));
    assert!(!d.join("PG_VERSION").exists(), "nothing startable is left");

    let out = site.run(
        &["base-restore", "pg", A, ds, "--request-restore", "1"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("restore requested now for"),
        "{}",
        text(&out)
    );
    assert!(!d.join("PG_VERSION").exists());

    // moto makes a requested restore readable at once: the same command now completes.
    ok(&site, &["base-restore", "pg", A, ds]);
    assert_eq!(restored(&d), body);
}

fn garage_site(endpoint: &str, extra: &str) -> Site {
    let g = garage();
    Site::new(&format!(
        "s3:\n  endpoint: {endpoint}\n  region: garage\n  bucket: {}\n  prefix: {}\n  access_key_id: {}\n  secret_access_key: {}\n  part_size: 5MiB\n{extra}",
        g.bucket(),
        unique("protect"),
        g.key_id(),
        g.secret()
    ))
}

#[test]
fn checksum_auto_detects_crc32c_and_falls_back_to_md5_where_it_is_not_verified() {
    for quirk in [Quirk::None, Quirk::IgnoreChecksums, Quirk::RejectChecksums] {
        let proxy = FaultProxy::with_quirk(garage().endpoint(), quirk);
        let site = garage_site(&proxy.endpoint, "");
        let body = backup(&site, A, 4);
        ok(&site, &["base-sync"]);
        assert_eq!(site.probed(), quirk == Quirk::None, "{quirk:?}");
        let dest = tempfile::tempdir().expect("tmp");
        let d = dest.path().join("pgdata");
        ok(&site, &["base-restore", "pg", A, d.to_str().expect("utf8")]);
        assert_eq!(restored(&d), body, "{quirk:?}");
        let check = ok(&site, &["config", "check"]);
        let want = if quirk == Quirk::None {
            "CRC32C"
        } else {
            "Content-MD5"
        };
        assert!(
            check.contains(&format!("request checksums (auto): {want}")),
            "{quirk:?}: {check}"
        );
    }
}

#[test]
fn a_probe_object_left_by_an_interrupted_run_is_removed_by_the_next() {
    // The first run's probe cannot delete its object (as when killed between PUT and DELETE);
    // it still uploads, and the next run, probing again, leaves nothing behind.
    let proxy = FaultProxy::with_quirk(garage().endpoint(), Quirk::RefuseDeletes);
    let site = garage_site(&proxy.endpoint, "");
    let src = site.dir.path().join("src");
    std::fs::write(&src, data(1000, 9)).expect("write");
    let src = src.to_str().expect("utf8");
    ok(&site, &["store", "put", src, "one"]);
    let yaml = std::fs::read_to_string(&site.cfg).expect("config");
    let prefix = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("prefix: "))
        .expect("prefix")
        .to_string();
    let left = crate::common::garage_keys(&prefix);
    assert!(
        left.iter().any(|k| k.contains("checksum-probe")),
        "the refused delete leaves the probe object: {left:?}"
    );
    std::fs::write(
        &site.cfg,
        yaml.replace(&proxy.endpoint, garage().endpoint()),
    )
    .expect("cfg");
    ok(&site, &["store", "put", src, "two"]);
    assert_eq!(
        crate::common::garage_keys(&prefix),
        [format!("{prefix}/one"), format!("{prefix}/two")].into(),
        "only the uploaded objects remain"
    );
}

#[test]
fn bandwidth_cap_moves_the_same_bytes() {
    let site = garage_site(garage().endpoint(), "  max_bandwidth: 4MiB\n");
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("src");
    let body = data(6 << 20, 5);
    std::fs::write(&src, &body).expect("write");
    ok(
        &site,
        &["store", "put", src.to_str().expect("utf8"), "capped/obj"],
    );
    let back = dir.path().join("back");
    ok(
        &site,
        &["store", "get", "capped/obj", back.to_str().expect("utf8")],
    );
    assert_eq!(std::fs::read(&back).expect("read"), body);
}

#[test]
fn bad_protection_values_get_one_line_and_exit_2() {
    let cases = [
        (
            "  object_lock:\n    mode: forever\n    retain: 1d\n",
            "s3.object_lock.mode",
        ),
        (
            "  object_lock:\n    mode: governance\n    retain: 2h\n",
            "s3.object_lock.retain",
        ),
        (
            "  object_lock:\n    mode: governance\n",
            "s3.object_lock.retain",
        ),
        ("  storage_class: COLD\n", "s3.storage_class"),
        (
            "  storage_classes:\n    base: FROZEN\n",
            "s3.storage_classes.base",
        ),
        (
            "  storage_classes:\n    meta: GLACIER\n",
            "s3.storage_classes.meta",
        ),
        (
            "  storage_classes:\n    logs: GLACIER\n",
            "s3.storage_classes",
        ),
        ("  max_bandwidth: 1KiB\n", "s3.max_bandwidth"),
        ("  max_bandwidth: fast\n", "s3.max_bandwidth"),
        ("  request_checksum: sometimes\n", "s3.request_checksum"),
    ];
    for (extra, key) in cases {
        let site = garage_site(garage().endpoint(), extra);
        let out = site.run(&["config", "check"], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{extra}: one line: {err}");
        assert!(err.contains(key), "{extra}: names {key}: {err}");
    }
}
