//! Packaging: `scripts/install` staged under a DESTDIR, and the .deb and .rpm that
//! `scripts/package` builds from this test run's own binaries (no second build), checked for
//! every path they must ship with dpkg-deb, lintian and rpm. A missing tool is a failure that
//! says how to install it.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use super::common;

/// scripts/package regenerates target/package-assets: one packaging run at a time.
static PACKAGING: Mutex<()> = Mutex::new(());

/// Where cargo put this run's binaries (target/debug for `cargo test`).
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_barmans3"))
        .parent()
        .expect("binary has a directory")
        .to_path_buf()
}

/// The cargo profile that built [`bin_dir`], and the target directory above it.
fn profile_and_target() -> (String, PathBuf) {
    let dir = bin_dir();
    let name = dir.file_name().expect("profile dir").to_string_lossy();
    let profile = if name == "debug" {
        "dev".to_string()
    } else {
        name.to_string()
    };
    (profile, dir.parent().expect("target dir").to_path_buf())
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

/// Fails, naming the remedy, when `cmd args` does not run.
fn require(cmd: &str, args: &[&str], how: &str) {
    let ok = Command::new(cmd)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "`{cmd} {}` does not run: install it with {how} (scripts/test-deps does)",
        args.join(" ")
    );
}

fn repo_files(dir: &str, suffixes: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(common::repo().join(dir))
        .expect("read repo dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| suffixes.iter().any(|s| n.ends_with(s)))
        .collect();
    v.sort();
    v
}

fn man_pages() -> Vec<String> {
    let v = repo_files("man", &[".1"]);
    assert!(v.len() > 10, "man pages in man/: {v:?}");
    v
}

fn units() -> Vec<String> {
    let v = repo_files("etc/systemd", &[".service", ".timer"]);
    assert!(v.len() >= 6, "units in etc/systemd: {v:?}");
    v
}

fn install(dest: &Path, extra: &[&str]) -> String {
    let out = run(Command::new(common::repo().join("scripts/install"))
        .arg("--destdir")
        .arg(dest)
        .arg("--bin-dir")
        .arg(bin_dir())
        .args(extra));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The uid scripts/install gives the state directories: barman when run as root and it exists.
fn expected_owner() -> u32 {
    let me = fs::metadata("/proc/self").expect("proc").uid();
    let barman = Command::new("id")
        .args(["-u", "barman"])
        .output()
        .ok()
        .filter(|o| o.status.success());
    match barman {
        Some(o) if me == 0 => String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .expect("uid"),
        _ => me,
    }
}

fn assert_mode(path: &Path, mode: u32) {
    let m = fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        m.permissions().mode() & 0o7777,
        mode,
        "mode of {}",
        path.display()
    );
}

/// What a first `scripts/install --destdir D` wrote: every file, and nothing outside D.
fn assert_staged_tree(d: &Path, cron_before: bool) {
    for b in [
        "barmans3",
        "gpbackup_s3_plugin",
        "barmans3-dplcompat",
        "barmans3-wal-restore",
    ] {
        assert_mode(&d.join("usr/local/bin").join(b), 0o755);
    }
    let help = stdout(Command::new(d.join("usr/local/bin/barmans3")).arg("--version"));
    assert!(help.contains("barmans3"), "installed binary runs: {help}");
    for page in man_pages() {
        let p = d.join("usr/local/share/man/man1").join(&page);
        assert_eq!(
            fs::read(&p).expect("man page"),
            fs::read(common::repo().join("man").join(&page)).expect("repo man")
        );
    }
    let completion = fs::read_to_string(d.join("usr/share/bash-completion/completions/barmans3"))
        .expect("completion");
    assert!(
        completion.contains("complete -F") && completion.contains("base-sync"),
        "bash completion: {completion:.200}"
    );
    let cfg = d.join("etc/barmans3/barmans3.yaml");
    assert_eq!(
        fs::read(&cfg).expect("config"),
        fs::read(common::repo().join("etc/barmans3.yaml")).expect("repo config")
    );
    assert_mode(&cfg, 0o600);
    let cron = fs::read_to_string(d.join("etc/cron.d/barmans3")).expect("cron file");
    assert_eq!(
        cron,
        fs::read_to_string(common::repo().join("cron/barmans3")).expect("repo cron")
    );
    for dir in [
        "var/lib/barmans3",
        "var/lib/barmans3/queue",
        "var/lib/barmans3/state",
        "var/log/barmans3",
    ] {
        assert_mode(&d.join(dir), 0o750);
        assert_eq!(
            fs::metadata(d.join(dir)).expect("dir").uid(),
            expected_owner(),
            "owner of {dir}"
        );
    }
    assert_eq!(
        Path::new("/etc/cron.d/barmans3").exists(),
        cron_before,
        "nothing written outside DESTDIR"
    );
}

#[test]
fn install_stages_every_file_under_destdir_and_keeps_an_edited_config() {
    let _host = common::host_paths();
    let dest = tempfile::tempdir().expect("tempdir");
    let d = dest.path();
    let cron_before = Path::new("/etc/cron.d/barmans3").exists();
    let err = install(d, &[]);
    assert!(
        err.contains("wrote"),
        "first install writes the config: {err}"
    );

    assert_staged_tree(d, cron_before);
    let cfg = d.join("etc/barmans3/barmans3.yaml");

    // An admin's edit survives a second run, which here installs the units instead of cron.
    let edited = format!(
        "# edited by the admin\n{}",
        fs::read_to_string(&cfg).expect("config")
    );
    fs::write(&cfg, &edited).expect("edit config");
    let err = install(d, &["--systemd"]);
    assert!(
        err.contains("kept the existing"),
        "second install keeps the config: {err}"
    );
    assert_eq!(fs::read_to_string(&cfg).expect("config"), edited);
    for u in units() {
        let unit = fs::read_to_string(d.join("etc/systemd/system").join(&u)).expect("unit");
        assert_eq!(
            unit,
            fs::read_to_string(common::repo().join("etc/systemd").join(&u)).expect("repo unit")
        );
    }
}

#[test]
fn install_with_another_prefix_points_cron_and_units_at_it() {
    let dest = tempfile::tempdir().expect("tempdir");
    let d = dest.path();
    let err = install(d, &["--prefix", "/usr", "--systemd"]);
    assert!(
        err.contains("post_backup_retry_script = /usr/bin/barmans3 queue-add"),
        "{err}"
    );
    assert_mode(&d.join("usr/bin/barmans3"), 0o755);
    let unit =
        fs::read_to_string(d.join("etc/systemd/system/barmans3-wal-sync.service")).expect("unit");
    assert!(
        unit.contains("ExecStart=/usr/bin/barmans3 wal-sync --all"),
        "{unit}"
    );
    install(d, &["--prefix", "/usr"]);
    let cron = fs::read_to_string(d.join("etc/cron.d/barmans3")).expect("cron");
    assert!(
        cron.contains("\nPATH=/usr/bin:/usr/bin:/bin\n") && !cron.contains("/usr/local"),
        "{cron}"
    );
}

/// Runs scripts/package on this run's binaries; returns the one package it wrote in `out`.
fn package(kind: &str, out: &Path) -> PathBuf {
    let (profile, target) = profile_and_target();
    let _one = PACKAGING.lock().unwrap_or_else(|e| e.into_inner());
    run(Command::new(common::repo().join("scripts/package"))
        .args([kind, "--no-build", "--profile", &profile, "--out"])
        .arg(out)
        .env("CARGO_TARGET_DIR", &target));
    let found: Vec<PathBuf> = fs::read_dir(out)
        .expect("out dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == kind))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one .{kind} in {}: {found:?}",
        out.display()
    );
    found.into_iter().next().expect("package")
}

/// Every path the packages ship, with man pages as `man1/NAME` (the .deb compresses them).
fn expected_paths(unit_dir: &str) -> BTreeSet<String> {
    let mut want: BTreeSet<String> = [
        "/usr/bin/barmans3",
        "/usr/bin/gpbackup_s3_plugin",
        "/usr/bin/barmans3-dplcompat",
        "/usr/bin/barmans3-wal-restore",
        "/usr/share/bash-completion/completions/barmans3",
        "/etc/barmans3/barmans3.yaml",
        "/etc/cron.d/barmans3",
        "/usr/share/doc/barmans3/README.md",
        "/usr/share/doc/barmans3/CHANGELOG.md",
        "/usr/share/doc/barmans3/examples/barmans3.yaml",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    want.extend(
        man_pages()
            .into_iter()
            .map(|p| format!("/usr/share/man/man1/{p}")),
    );
    want.extend(units().into_iter().map(|u| format!("{unit_dir}/{u}")));
    want
}

fn assert_ships(listed: &BTreeSet<String>, want: &BTreeSet<String>, what: &str) {
    let missing: Vec<&String> = want
        .iter()
        .filter(|w| !listed.contains(*w) && !listed.contains(&format!("{w}.gz")))
        .collect();
    assert!(
        missing.is_empty(),
        "{what} lacks {missing:?}; it lists {listed:?}"
    );
}

#[test]
fn deb_ships_every_file_and_lintian_reports_no_error() {
    require(
        "cargo",
        &["deb", "--version"],
        "cargo install --locked cargo-deb",
    );
    require("dpkg-deb", &["--version"], "apt-get install dpkg");
    require("lintian", &["--version"], "apt-get install lintian");
    let out = tempfile::tempdir().expect("tempdir");
    let deb = package("deb", out.path());

    let listing = stdout(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let listed: BTreeSet<String> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_string())
        .collect();
    assert_ships(&listed, &expected_paths("/lib/systemd/system"), "the .deb");
    for b in [
        "./usr/bin/barmans3",
        "./usr/bin/gpbackup_s3_plugin",
        "./usr/bin/barmans3-dplcompat",
        "./usr/bin/barmans3-wal-restore",
    ] {
        let line = listing
            .lines()
            .find(|l| l.ends_with(b))
            .expect("binary listed");
        assert!(line.starts_with("-rwxr-xr-x"), "{line}");
    }
    let conffiles = stdout(
        Command::new("dpkg-deb")
            .arg("--info")
            .arg(&deb)
            .arg("conffiles"),
    );
    for c in ["/etc/barmans3/barmans3.yaml", "/etc/cron.d/barmans3"] {
        assert!(
            conffiles.lines().any(|l| l == c),
            "{c} is a conffile: {conffiles}"
        );
    }
    let postinst = stdout(
        Command::new("dpkg-deb")
            .arg("--info")
            .arg(&deb)
            .arg("postinst"),
    );
    assert!(
        postinst.contains("/var/lib/barmans3/queue") && postinst.contains("/var/log/barmans3"),
        "{postinst}"
    );

    assert_deb_contents_run_from_usr_bin(&deb);
    assert_lintian_clean(&deb);
}

/// The packaged units and cron file run the packaged binary, which runs.
fn assert_deb_contents_run_from_usr_bin(deb: &Path) {
    let root = tempfile::tempdir().expect("tempdir");
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root.path()));
    let unit = fs::read_to_string(
        root.path()
            .join("lib/systemd/system/barmans3-wal-sync.service"),
    )
    .expect("unit");
    assert!(
        unit.contains("ExecStart=/usr/bin/barmans3 wal-sync --all"),
        "{unit}"
    );
    let cron = fs::read_to_string(root.path().join("etc/cron.d/barmans3")).expect("cron");
    assert!(
        cron.contains("\nPATH=/usr/bin:/bin\n") && !cron.contains("/usr/local"),
        "{cron}"
    );
    let version = stdout(Command::new(root.path().join("usr/bin/barmans3")).arg("--version"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
}

/// Warnings are accepted; errors only with an override in packaging/deb/lintian-overrides.
fn assert_lintian_clean(deb: &Path) {
    let lint = Command::new("lintian")
        .arg(deb)
        .output()
        .expect("run lintian");
    let report = String::from_utf8_lossy(&lint.stdout);
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(
        errors.is_empty(),
        "lintian errors:\n{}\nfull report:\n{report}{}",
        errors.join("\n"),
        String::from_utf8_lossy(&lint.stderr)
    );
}

#[test]
fn rpm_ships_every_file_with_config_and_post_install() {
    require(
        "cargo",
        &["generate-rpm", "--version"],
        "cargo install --locked cargo-generate-rpm",
    );
    require("rpm", &["--version"], "apt-get install rpm");
    let out = tempfile::tempdir().expect("tempdir");
    let rpm = package("rpm", out.path());

    let listed: BTreeSet<String> = stdout(Command::new("rpm").arg("-qlp").arg(&rpm))
        .lines()
        .map(String::from)
        .collect();
    assert_ships(
        &listed,
        &expected_paths("/usr/lib/systemd/system"),
        "the .rpm",
    );
    let modes = stdout(
        Command::new("rpm")
            .args(["-qp", "--qf", "[%{FILEMODES:perms} %{FILENAMES}\n]"])
            .arg(&rpm),
    );
    for b in [
        "/usr/bin/barmans3",
        "/usr/bin/gpbackup_s3_plugin",
        "/usr/bin/barmans3-dplcompat",
        "/usr/bin/barmans3-wal-restore",
    ] {
        assert!(
            modes.lines().any(|l| l == format!("-rwxr-xr-x {b}")),
            "{b} executable: {modes}"
        );
    }
    assert!(
        modes
            .lines()
            .any(|l| l == "-rw------- /etc/barmans3/barmans3.yaml"),
        "{modes}"
    );
    let config: BTreeSet<String> =
        stdout(Command::new("rpm").args(["-qp", "--configfiles"]).arg(&rpm))
            .lines()
            .map(String::from)
            .collect();
    for c in ["/etc/barmans3/barmans3.yaml", "/etc/cron.d/barmans3"] {
        assert!(config.contains(c), "{c} is a config file: {config:?}");
    }
    let scripts = stdout(Command::new("rpm").args(["-qp", "--scripts"]).arg(&rpm));
    assert!(
        scripts.contains("postinstall") && scripts.contains("/var/lib/barmans3/queue"),
        "{scripts}"
    );
}

/// The .deb installed into this machine with dpkg -i, the README's walkthrough run from the
/// README's own lines with Barman 3.4 (Debian) and then Barman 3.20 (PyPI), the restored copy
/// started as postgres with every row, the README's NRPE line answering OK, and the package
/// purged (tests/it/e2e/deb.sh). It changes the real system, as a user's install does: run it
/// as root on a throwaway machine (CI is one); it refuses to run where barmans3 is installed.
#[test]
fn the_packaged_readme_walkthrough_restores_and_starts_as_postgres_and_purges() {
    require(
        "cargo",
        &["deb", "--version"],
        "cargo install --locked cargo-deb",
    );
    crate::barman_e2e::require_packages(&[
        ("/usr/lib/postgresql/15/bin/initdb", "postgresql-15"),
        ("/usr/bin/barman", "barman"),
        ("/usr/bin/dpkg", "dpkg"),
        ("/usr/sbin/runuser", "util-linux"),
    ]);
    let venv = Path::new("/opt/barmans3-test/barman-venv/bin");
    assert!(
        venv.join("barman").is_file(),
        "Barman 3.20 is missing from {}: scripts/test-deps installs it",
        venv.display()
    );
    assert_eq!(
        fs::metadata("/proc/self").expect("proc").uid(),
        0,
        "the packaged walkthrough installs the .deb with dpkg -i: run it as root (CI does)"
    );
    let out = tempfile::tempdir().expect("tempdir");
    let deb = package("deb", out.path());
    let deb = deb.to_string_lossy().into_owned();
    // The package owns /usr/bin/barmans3, /etc/barmans3 and /var/lib/barmans3 while it runs.
    let _host = common::host_paths();
    crate::barman_e2e::run_script_with_args("deb.sh", &[&deb], &[]);
    crate::barman_e2e::run_script_with_args(
        "deb.sh",
        &[&deb],
        &[("BARMAN_PATH", &venv.to_string_lossy())],
    );
}
