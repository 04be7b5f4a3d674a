//! An unreachable endpoint and a store that refuses us: every command gives up after its
//! bounded retries with one line naming the endpoint, and a queued backup stays retryable for
//! transient causes but goes to `.error` for permanent ones, with the reason in the task.

use crate::common::site::{Site, make_archive, write_backup};

const DOWN: &str = "http://127.0.0.1:1";

fn down_site() -> Site {
    Site::new(&format!(
        "s3:\n  endpoint: {DOWN}\n  region: garage\n  bucket: nowhere\n  access_key_id: a\n  secret_access_key: b\n  max_attempts: 2\n  connect_timeout: 1s\n"
    ))
}

fn queue(site: &Site, id: &str) {
    write_backup(site, id, "DONE");
    site.queue(id, "DONE");
}

#[test]
fn every_command_gives_up_with_one_line_naming_the_endpoint() {
    let site = down_site();
    make_archive(&site.wals(), 1, 2);
    let dest = site.dir.path().join("restore");
    let dest = dest.to_str().expect("utf8");
    let cases: [&[&str]; 5] = [
        &["wal-sync", "pg"],
        &["base-ls", "pg"],
        &["full-sync", "--no-delete", "pg"],
        &["base-restore", "pg", "20261121T100000", dest],
        &["store", "ls"],
    ];
    for args in cases {
        let out = site.run(args, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("barmans3:")).collect();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(errors.len(), 1, "{args:?}: {err}");
        assert!(errors[0].contains("127.0.0.1:1"), "{args:?}: {err}");
    }
    // wal-restore (PostgreSQL's restore_command) fails too, and never reports an absent WAL
    // when it could not ask: a status above 125 makes PostgreSQL abort recovery instead of
    // taking "not found" for the end of the archive and promoting.
    let out = site.run(
        &["wal-restore", "pg", "000000010000000000000001", dest],
        &[],
    );
    assert_eq!(out.status.code(), Some(200));
    assert!(String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:1"));
}

#[test]
fn a_transient_failure_keeps_the_task_and_a_refusal_parks_it() {
    // Unreachable: the task stays .run with the reason, the run exits 1.
    let site = down_site();
    queue(&site, "20261121T100000");
    let out = site.run(&["base-sync"], &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let task = std::fs::read_to_string(site.dir.path().join("queue/20261121T100000.run"))
        .expect("task still .run");
    assert!(
        task.contains("127.0.0.1:1") && task.contains("\"attempts\": 1"),
        "{task}"
    );

    // Wrong keys (403) and a missing bucket: permanent, the task goes to .error with the reason.
    let g = crate::common::garage();
    for (name, bucket, key) in [
        ("forbidden", g.bucket(), "GKnotakey000000000000000"),
        ("nobucket", "no-such-bucket-b3", g.key_id()),
    ] {
        let site = Site::new(&format!(
            "s3:\n  endpoint: {}\n  region: garage\n  bucket: {bucket}\n  access_key_id: {key}\n  secret_access_key: {}\n  max_attempts: 2\n",
            g.endpoint(),
            g.secret()
        ));
        queue(&site, "20261121T110000");
        let out = site.run(&["base-sync"], &[]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let task = std::fs::read_to_string(site.dir.path().join("queue/20261121T110000.error"))
            .unwrap_or_else(|e| panic!("{name}: task not in .error ({e})"));
        assert!(task.contains("last_error"), "{name}: {task}");
        assert!(!task.contains(g.secret()), "{name}: secret in the task");
    }
}
