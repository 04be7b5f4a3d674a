//! `drill` on real parts: PostgreSQL 15, Debian's Barman and the run's Garage. The steps live in
//! `tests/it/e2e/drill.sh` (a passing drill with its row count and nothing left behind, DEST on
//! an 8 MiB tmpfs refused before the first byte, a failing `--query`, a WAL deleted from the
//! middle of the archive); a missing prerequisite is a failure that says how to install it. The
//! PostgreSQL 18 incremental and Barman 3.20 tar variants run inside `barman-pg18.sh` and
//! `barman-modern.sh`, on the clusters those scripts make.

#[test]
fn drill_restores_replays_checks_and_leaves_nothing_behind_and_fails_on_a_gap_or_a_bad_query() {
    crate::barman_e2e::require_packages(&[
        ("/usr/lib/postgresql/15/bin/initdb", "postgresql-15"),
        ("/usr/bin/barman", "barman"),
        ("/usr/bin/curl", "curl"),
    ]);
    assert!(
        running_as_root(),
        "the drill test runs PostgreSQL as postgres and Barman as barman: run it as root (CI does)"
    );
    crate::barman_e2e::run_script("drill.sh", &[]);
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().map(str::to_string))
        })
        .as_deref()
        == Some("0")
}

/// A drill that stops before it owns DEST (refused as root, or no backup in the bucket) leaves
/// a directory it was given exactly as it was: nothing in it is removed.
#[test]
fn a_drill_that_never_claimed_dest_leaves_what_is_there() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("bucket");
    std::fs::create_dir_all(&store).expect("mkdir");
    let dest = dir.path().join("dest");
    std::fs::create_dir_all(&dest).expect("mkdir");
    std::fs::write(dest.join("precious"), b"keep me").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_barmans3"))
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .args(["drill", "pg", "--dest"])
        .arg(&dest)
        .output()
        .expect("run drill");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("FAILED at pick the backup") || stderr.contains("refuses to run as root"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(dest.join("precious")).expect("still there"),
        b"keep me"
    );
}
