//! `wal-restore` as a real PostgreSQL 15 drives it (`tests/it/e2e/walrestore-pg.sh`): a closed
//! partial with later segments behind it stops recovery instead of promoting it with half the
//! rows, an upgraded cluster's identity in the bucket does not refuse an old backup's WAL, and
//! a waiting standby's prefetcher sleeps, keeps its spool tidy and ends on SIGTERM.

#[test]
fn real_recoveries_never_promote_early_and_a_waiting_standbys_prefetcher_sleeps() {
    assert!(
        std::path::Path::new("/usr/lib/postgresql/15/bin/initdb").exists(),
        "missing postgresql-15: install with `apt-get install -y postgresql-15` (scripts/test-deps does this)"
    );
    crate::barman_e2e::run_script("walrestore-pg.sh", &[]);
}
