//! The Barman path end to end on real parts: PostgreSQL 15, Barman (Debian package) and Garage.
//! The steps live in `tests/it/e2e/barman.sh`; this test checks the prerequisites (a missing one
//! is a failure that says how to install it, never a skip) and runs the script.

use std::process::Command;

#[test]
fn backup_sync_restore_and_retention_on_real_postgresql_and_barman() {
    let missing: Vec<&str> = [
        ("/usr/lib/postgresql/15/bin/initdb", "postgresql-15"),
        ("/usr/bin/barman", "barman"),
    ]
    .into_iter()
    .filter(|(p, _)| !std::path::Path::new(p).exists())
    .map(|(_, pkg)| pkg)
    .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?}: install with `apt-get install -y postgresql-15 barman` (scripts/test does this)"
    );
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().map(str::to_string))
        });
    assert_eq!(
        uid.as_deref(),
        Some("0"),
        "the Barman end-to-end test runs PostgreSQL as postgres and Barman as barman: run it as root (CI does)"
    );
    let g = crate::common::garage();
    let out = Command::new("bash")
        .arg(crate::common::repo().join("tests/it/e2e/barman.sh"))
        .env("BARMANS3_BIN", env!("CARGO_BIN_EXE_barmans3"))
        .envs(g.env.iter())
        .output()
        .expect("run tests/it/e2e/barman.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success() && stderr.contains("E2E OK"),
        "end-to-end script failed (exit {:?})\nstdout: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout)
    );
}
