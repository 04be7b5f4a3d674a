//! Buckets written by Barman's own cloud tools, read by barmans3 `--layout barman-cloud`, on
//! real parts: Barman 3.20's barman-cloud-backup and barman-cloud-wal-archive (the PyPI venv,
//! with boto3) writing a real PostgreSQL 15 to Garage. The steps are in
//! `tests/it/e2e/barman-cloud.sh`.

/// Where scripts/test-deps installs Barman from PyPI.
const VENV: &str = "/opt/barmans3-test/barman-venv";

#[test]
fn barman_cloud_backups_list_restore_and_replay_and_hostile_rows_are_refused() {
    crate::barman_e2e::require_packages(&[("/usr/lib/postgresql/15/bin/initdb", "postgresql-15")]);
    let ok = std::process::Command::new(format!("{VENV}/bin/python"))
        .args(["-c", "import boto3, snappy"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{VENV} lacks Barman's cloud tools (boto3, python-snappy): run scripts/test-deps as root"
    );
    crate::barman_e2e::run_script("barman-cloud.sh", &[("BARMAN_VENV", VENV)]);
}
