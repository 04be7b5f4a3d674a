//! A versioned bucket's history on moto: the Object Lock proof (`config check --lock-proof`)
//! against moto itself, and through proxies that make it refuse retention changes as AWS does,
//! or let the DELETE of a locked version through; `--as-of` reading a bucket whose backup file
//! and WAL were overwritten and whose backup.info was deleted after the time, as it was.

use std::process::{Command, Output};
use std::time::Duration;

use crate::common::data;
use crate::common::faults::{FaultProxy, Quirk};
use crate::common::moto::moto;
use crate::common::site::{Site, make_real_archive, wal_name, wal_segment, write_backup};

const A: &str = "20261101T010000";
const CANARY: &str = ".barmans3-lock-proof";

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(site: &Site, args: &[&str]) -> String {
    let out = site.run(args, &[]);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn boto(snippet: &str) -> String {
    moto().boto(snippet)
}

/// The canary's versions (delete markers apart: the proof's control places and removes one).
fn canary_versions(bucket: &str) -> usize {
    boto(&format!(
        "r=s.list_object_versions(Bucket='{bucket}', Prefix='{CANARY}'); print(len(r.get('Versions', [])))"
    ))
    .parse()
    .expect("count")
}

fn lock_site(bucket: &str, mode: &str, endpoint: &str) -> Site {
    let yaml = moto().yaml(
        bucket,
        &format!("  object_lock:\n    mode: {mode}\n    retain: 1d\n"),
    );
    Site::new(&yaml.replace(&moto().endpoint, endpoint))
}

#[test]
fn lock_proof_names_what_the_store_allows_and_says_lock_holds_only_when_all_is_refused() {
    let bucket = moto().bucket(true);

    // moto itself refuses the DELETE of a locked version but accepts any retention change.
    let site = lock_site(&bucket, "governance", &moto().endpoint);
    let out = site.run(&["config", "check", "--lock-proof"], &[]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        said.contains("DELETE of the locked version: refused (AccessDenied)"),
        "{said}"
    );
    // moto's refusal reads like IAM's; the control shows the credentials may delete versions.
    assert!(
        said.contains("control, removing a delete marker by version id: allowed"),
        "{said}"
    );
    assert!(
        said.contains("shortening its retain-until date: ALLOWED"),
        "{said}"
    );
    assert!(
        said.contains("removing its governance lock without the bypass header: ALLOWED"),
        "{said}"
    );
    assert!(
        said.contains("lock does not hold: the store allowed shortening"),
        "{said}"
    );

    // Refusing retention changes as AWS does: every attempt refused, the lock holds. The
    // canary moto unlocked above is removed, so checks do not pile up versions.
    let aws_like = FaultProxy::with_quirk(&moto().endpoint, Quirk::EnforceRetention);
    let site = lock_site(&bucket, "governance", &aws_like.endpoint);
    let out = site.run(&["config", "check", "--lock-proof"], &[]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        said.lines().filter(|l| l.contains(": refused (")).count(),
        3,
        "{said}"
    );
    assert_eq!(said.lines().last(), Some("lock holds"), "{said}");
    assert_eq!(
        canary_versions(&bucket),
        1,
        "the unlocked canary was removed"
    );

    // Credentials without the permissions: the same bare AccessDenied moto gives for its lock,
    // but the controls are refused too, so nothing is claimed of the lock.
    let iam = FaultProxy::with_quirk(&moto().endpoint, Quirk::DenyAsIam);
    let site = lock_site(&bucket, "governance", &iam.endpoint);
    let out = site.run(&["config", "check", "--lock-proof"], &[]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        said.contains("control, removing a delete marker by version id: denied (AccessDenied)"),
        "{said}"
    );
    assert!(
        said.contains(
            "DELETE of the locked version: no verdict (refused (AccessDenied), and so was"
        ),
        "{said}"
    );
    assert!(
        said.contains(
            "shortening its retain-until date: no verdict (refused (AccessDenied), and so was"
        ),
        "{said}"
    );
    assert!(!said.contains("lock holds"), "{said}");
    assert!(
        said.lines()
            .last()
            .is_some_and(|l| l.starts_with("lock not proven")),
        "{said}"
    );
    assert_eq!(canary_versions(&bucket), 2, "both locked canaries are kept");

    // A store that accepts the lock and lets the DELETE through: exit 1, naming the DELETE.
    let leaky = FaultProxy::with_quirk(&moto().endpoint, Quirk::AllowVersionDeletes);
    let site = lock_site(&bucket, "compliance", &leaky.endpoint);
    let out = site.run(&["config", "check", "--lock-proof"], &[]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        said.contains("DELETE of the locked version: ALLOWED"),
        "{said}"
    );
    assert!(
        said.contains("shortening its retain-until date: refused"),
        "{said}"
    );
    assert!(
        !said.contains("removing its governance lock"),
        "compliance: {said}"
    );
    assert_eq!(
        said.lines().last(),
        Some("lock does not hold: the store allowed DELETE of the locked version"),
        "{said}"
    );
    // The three canaries are still locked: nothing was removed.
    assert_eq!(canary_versions(&bucket), 3);
}

#[test]
fn lock_proof_without_a_configured_lock_is_a_config_error() {
    let bucket = moto().bucket(true);
    let site = Site::new(&moto().yaml(&bucket, ""));
    let out = site.run(&["config", "check", "--lock-proof"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("s3.object_lock"), "{err}");
}

/// Now in RFC 3339 (UTC, whole seconds), as `--as-of` takes it.
fn now_utc() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn put(site: &Site, key: &str, bytes: &[u8]) {
    let f = site.dir.path().join("upload.tmp");
    std::fs::write(&f, bytes).expect("write");
    ok(site, &["store", "put", f.to_str().expect("utf8"), key]);
}

#[test]
fn as_of_reads_a_versioned_bucket_as_it_was_before_it_was_tampered_with() {
    let bucket = moto().bucket(false);
    boto(&format!(
        "s.put_bucket_versioning(Bucket='{bucket}', VersioningConfiguration={{'Status': 'Enabled'}})"
    ));
    let site = Site::new(&moto().yaml(&bucket, ""));
    make_real_archive(&site.wals(), 3, 2);
    write_backup(&site, A, "DONE");
    let body = data(300 * 1024, 7);
    let file = site
        .dir
        .path()
        .join("barman/pg/base")
        .join(A)
        .join("data/base/1/16384");
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    std::fs::write(&file, &body).expect("write");
    site.queue(A, "DONE");
    ok(&site, &["base-sync"]);
    ok(&site, &["wal-sync", "pg", "--full"]);

    // S3 dates have whole seconds: the time falls strictly between the writes and the attack.
    std::thread::sleep(Duration::from_millis(1100));
    let t = now_utc();
    std::thread::sleep(Duration::from_millis(1100));

    let data_key = format!("pg/base/{A}/data/base/1/16384");
    put(&site, &data_key, &data(300 * 1024, 99));
    let wal = wal_name(3);
    put(
        &site,
        &format!("pg/wals/{}/{wal}", &wal[..16]),
        &wal_segment(&wal, 1234),
    );
    let info = boto(&format!(
        "r=s.list_objects_v2(Bucket='{bucket}', Prefix='pg/')\nprint([o['Key'] for o in r['Contents'] if '{A}' in o['Key'] and o['Key'].endswith('backup.info')][0])"
    ));
    boto(&format!("s.delete_object(Bucket='{bucket}', Key='{info}')"));

    // Today the backup is incomplete (its backup.info is gone); as of T it is complete.
    let line = |out: String| {
        out.lines()
            .find(|l| l.starts_with(A))
            .map(|l| l.split_whitespace().last().unwrap_or("").to_string())
    };
    assert_eq!(line(ok(&site, &["base-ls", "pg"])), Some("no".into()));
    assert_eq!(
        line(ok(&site, &["base-ls", "pg", "--as-of", &t])),
        Some("yes".into())
    );

    // Restored as of T: the file as it was, not the overwritten one.
    let dest = tempfile::tempdir().expect("tmp");
    let d = dest.path().join("pgdata");
    ok(
        &site,
        &[
            "base-restore",
            "pg",
            A,
            d.to_str().expect("utf8"),
            "--as-of",
            &t,
        ],
    );
    assert!(std::fs::read(d.join("base/1/16384")).expect("restored") == body);

    // The WAL as it was (today's version is another segment's bytes under its name).
    let got = dest.path().join("wal");
    ok(
        &site,
        &[
            "wal-restore",
            "pg",
            &wal,
            got.to_str().expect("utf8"),
            "--as-of",
            &t,
        ],
    );
    assert!(std::fs::read(&got).expect("wal") == wal_segment(&wal, 3));

    // verify checks the backup as it was, whole.
    ok(&site, &["verify", "pg", A, "--as-of", &t]);
    // And writes nothing: the bucket still has the tampered objects.
    let now = site.run(&["verify", "pg", A], &[]);
    assert!(
        !now.status.success(),
        "today's bucket lacks the backup: {}",
        text(&now)
    );
}

#[test]
fn as_of_is_refused_in_one_line_where_there_are_no_versions() {
    let bucket = moto().bucket(false);
    let site = Site::new(&moto().yaml(&bucket, ""));
    put(
        &site,
        "pg/base/20261101T010000/backup.info",
        b"status=DONE\n",
    );
    let out = site.run(&["base-ls", "pg", "--as-of", "2026-11-30T12:00:00Z"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("--as-of") && err.contains("versioning"),
        "{err}"
    );

    let local = Site::local();
    let out = local.run(&["base-ls", "pg", "--as-of", "2026-11-30T12:00:00Z"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("keeps no object versions"),
        "{}",
        text(&out)
    );

    let out = local.run(&["base-ls", "pg", "--as-of", "yesterday"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("RFC 3339"), "{}", text(&out));
}

/// Files named `lock-proof-*` anywhere under the site's directory.
fn proof_records(site: &Site) -> Vec<std::path::PathBuf> {
    walkdir::WalkDir::new(site.dir.path())
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("lock-proof-"))
        .map(|e| e.path().to_path_buf())
        .collect()
}

#[test]
fn check_proves_the_lock_once_a_day_and_reports_its_line() {
    let bucket = moto().bucket(true);
    let aws_like = FaultProxy::with_quirk(&moto().endpoint, Quirk::EnforceRetention);
    let site = lock_site(&bucket, "governance", &aws_like.endpoint);
    let out = site.run(&["check"], &[]);
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(line.contains("lock holds (lock proof"), "{}", text(&out));
    assert_eq!(canary_versions(&bucket), 1);
    assert_eq!(
        proof_records(&site).len(),
        1,
        "recorded in the state directory"
    );
    // Within the day: the recorded result, no new canary.
    let out = site.run(&["check"], &[]);
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(line.contains("lock holds (lock proof"), "{}", text(&out));
    assert_eq!(canary_versions(&bucket), 1, "not proven twice in a day");
    let status = ok(&site, &["status"]);
    assert!(
        status.contains("object lock: lock holds (lock proof"),
        "{status}"
    );

    // A store that lets the DELETE through: CRITICAL, naming it.
    let leaky = FaultProxy::with_quirk(&moto().endpoint, Quirk::AllowVersionDeletes);
    let site = lock_site(&bucket, "governance", &leaky.endpoint);
    let out = site.run(&["check"], &[]);
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(line.starts_with("BARMANS3 CRITICAL"), "{line}");
    assert!(
        line.contains("lock does not hold: the store allowed DELETE of the locked version"),
        "{line}"
    );
}
