//! Operator experience: progress bars only on a terminal, `status`/`check` exit codes in each
//! state, queue administration, config helpers, log file, and the `--help`/man page snapshots.

use std::path::PathBuf;
use std::process::Command;

use crate::common::site::{BIN, Site, make_archive, write_backup};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn progress_bars_appear_on_a_terminal_only() {
    let site = Site::local();
    make_archive(&site.wals(), 1, 40);
    // A pseudo-terminal through script(1): the bar with its objects counter is drawn.
    let cmd = format!("{BIN} --config {} wal-sync pg", site.cfg.display());
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script(1) from util-linux");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(
        tty.contains("objects") && tty.contains('\u{1b}'),
        "no bar on a tty: {tty:?}"
    );
    // Piped (cron): no bar, no escape codes.
    make_archive(&site.wals(), 41, 5);
    let out = site.run(&["wal-sync", "pg"], &[]);
    let err = stderr(&out);
    assert!(out.status.success());
    assert!(
        !err.contains("objects") && !err.contains('\u{1b}'),
        "{err:?}"
    );
    // --no-progress on a terminal: none either.
    make_archive(&site.wals(), 46, 5);
    let cmd = format!(
        "{BIN} --config {} --no-progress wal-sync pg",
        site.cfg.display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("objects"));
}

fn check(site: &Site, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["check"];
    args.extend_from_slice(extra);
    let out = site.run(&args, &[]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_reports_each_state_with_monitoring_codes() {
    let site = Site::local();
    make_archive(&site.wals(), 1, 3);
    assert!(site.run(&["wal-sync", "pg"], &[]).status.success());
    let (code, line) = check(&site, &[]);
    assert_eq!(code, 0, "{line}");
    assert!(
        line.starts_with("BARMANS3 OK - ") && line.contains("| queue_run=0"),
        "{line}"
    );

    // A WAL waiting 1 hour: WARNING at the default 30m, CRITICAL with --wal-critical 45m.
    make_archive(&site.wals(), 4, 1);
    let f = site
        .wals()
        .join("0000000100000000/000000010000000000000004");
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&f)
        .and_then(|h| h.set_modified(hour_ago))
        .expect("mtime");
    let (code, line) = check(&site, &[]);
    assert_eq!(code, 1, "{line}");
    assert!(
        line.starts_with("BARMANS3 WARNING - pg: 1 WAL(s) not shipped"),
        "{line}"
    );
    let (code, _) = check(&site, &["--wal-critical", "45m"]);
    assert_eq!(code, 2);
    assert!(site.run(&["wal-sync", "pg"], &[]).status.success());
    assert_eq!(check(&site, &[]).0, 0);

    // A task in .error: WARNING; queue retry puts it back.
    let id = "20261121T100000";
    write_backup(&site, id, "FAILED");
    site.queue(id, "DONE");
    assert_eq!(site.run(&["base-sync"], &[]).status.code(), Some(1));
    let (code, line) = check(&site, &[]);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains(&format!("task {id} in .error")), "{line}");
    let ls = site.run(&["queue", "ls"], &[]);
    assert!(String::from_utf8_lossy(&ls.stdout).contains("error"));
    write_backup(&site, id, "DONE");
    assert!(site.run(&["queue", "retry", id], &[]).status.success());
    assert!(site.run(&["base-sync"], &[]).status.success());
    assert_eq!(check(&site, &[]).0, 0);
    // Pruning keeps recent .done tasks and removes old ones.
    assert!(
        site.run(&["queue", "prune", "--older-than", "30d"], &[])
            .status
            .success()
    );
    assert!(site.dir.path().join(format!("queue/{id}.done")).exists());
    assert!(
        site.run(&["queue", "prune", "--older-than", "0s"], &[])
            .status
            .success()
    );
    assert!(!site.dir.path().join(format!("queue/{id}.done")).exists());

    // A .running task whose process is gone: CRITICAL.
    let task = format!(
        "{{\"backup_id\":\"20261121T110000\",\"server\":\"pg\",\"pid\":999999999,\"enqueued_at\":{}}}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    );
    std::fs::write(site.dir.path().join("queue/20261121T110000.running"), task).expect("w");
    let (code, line) = check(&site, &[]);
    assert_eq!(code, 2, "{line}");
    assert!(line.contains("stuck in .running"), "{line}");
    let status = site.run(&["status"], &[]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("(gone)") && text.contains("server pg:"),
        "{text}"
    );
}

#[test]
fn an_unreachable_bucket_is_critical() {
    let site = Site::new(
        "s3:\n  endpoint: http://127.0.0.1:1\n  bucket: nowhere\n  access_key_id: a\n  secret_access_key: b\n  max_attempts: 1\n  connect_timeout: 1s\n",
    );
    let (code, line) = check(&site, &[]);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.starts_with("BARMANS3 CRITICAL - bucket unreachable"),
        "{line}"
    );
}

#[test]
fn config_helpers_and_the_log_file() {
    let dir = tempfile::tempdir().expect("tmp");
    // config init writes the commented example with mode 600 and never overwrites.
    let out_path = dir.path().join("new.yaml");
    let run = |args: &[&str]| Command::new(BIN).args(args).output().expect("run");
    let out = run(&[
        "config",
        "init",
        "--output",
        out_path.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&out_path).expect("meta").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let again = run(&[
        "config",
        "init",
        "--output",
        out_path.to_str().expect("utf8"),
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("not overwriting"));

    // A BarmanS3 config becomes YAML that loads, with notes on stderr.
    let legacy = dir.path().join("barmans3.conf");
    std::fs::write(
        &legacy,
        "S3_ENDPOINT_URI=\"http://127.0.0.1:9000\"\nS3_BUCKET_URI=\"s3://old-bucket/barman\"\nBARMAN_ROOTPATH=\"/var/lib/barman\"\nBASESYNC_QUEUE=\"/var/run/barmans3/queue.d\"\n",
    )
    .expect("w");
    let out = run(&["config", "import-legacy", legacy.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let notes = stderr(&out);
    assert!(
        notes.contains("tmpfs") && notes.contains("BARMAN_ROOTPATH"),
        "{notes}"
    );
    let yaml = dir.path().join("imported.yaml");
    // It names the host's /var/lib/barmans3/queue; the test's run keeps to its scratch dir.
    let imported = String::from_utf8_lossy(&out.stdout);
    std::fs::write(&yaml, crate::common::into_scratch(&imported, dir.path())).expect("w");
    let ls = run(&["--config", yaml.to_str().expect("utf8"), "queue", "ls"]);
    // It parses: any failure must not be a config error.
    assert_ne!(ls.status.code(), Some(2), "{}", stderr(&ls));

    // log_dir: the run's lines are appended to <log_dir>/barmans3.log.
    let site = Site::local();
    let logs = site.dir.path().join("logs");
    let text = std::fs::read_to_string(&site.cfg).expect("cfg");
    std::fs::write(&site.cfg, format!("{text}  log_dir: {}\n", logs.display())).expect("w");
    make_archive(&site.wals(), 1, 2);
    assert!(site.run(&["wal-sync", "pg"], &[]).status.success());
    let log = std::fs::read_to_string(logs.join("barmans3.log")).expect("log file");
    assert!(
        log.contains("requests=") && !log.contains('\u{1b}'),
        "{log}"
    );

    let out = run(&["completions", "bash"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("wal-sync"));
}

fn snapshot_dir() -> PathBuf {
    crate::common::repo()
}

#[test]
fn help_and_man_pages_match_the_committed_snapshots() {
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let help = Command::new(BIN)
        .arg("--help")
        .env("COLUMNS", "100")
        .output()
        .expect("help");
    let help_path = snapshot_dir().join("tests/it/snapshots/help.txt");
    let mut stale = Vec::new();
    if update {
        std::fs::create_dir_all(help_path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&help_path, &help.stdout).expect("write help");
    } else if std::fs::read(&help_path).ok().as_deref() != Some(&help.stdout[..]) {
        stale.push(help_path.display().to_string());
    }
    let man = snapshot_dir().join("man");
    let pages = barmans3::cli::man_pages();
    assert!(pages.iter().any(|(n, _)| n == "barmans3-wal-sync.1"));
    for (name, text) in &pages {
        let p = man.join(name);
        if update {
            std::fs::create_dir_all(&man).expect("mkdir");
            std::fs::write(&p, text).expect("write man");
        } else if std::fs::read(&p).ok().as_deref() != Some(&text[..]) {
            stale.push(p.display().to_string());
        }
    }
    let committed = std::fs::read_dir(&man).map(|rd| rd.count()).unwrap_or(0);
    assert!(
        stale.is_empty() && committed == pages.len(),
        "out of date: {stale:?} ({committed} pages in man/, {} generated); regenerate with UPDATE_SNAPSHOTS=1 cargo test --test it help_and_man",
        pages.len()
    );
}

#[test]
fn data_commands_end_quietly_when_their_reader_goes_away() {
    let site = Site::local();
    let bucket = site.dir.path().join("bucket");
    for i in 0..3000 {
        let dir = bucket.join(format!("k{}", i % 10));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(format!("object-{i:05}")), b"x").expect("object");
    }
    std::fs::write(bucket.join("big"), vec![9u8; 8 << 20]).expect("big");
    let cfg = site.cfg.display();
    for cmd in [
        format!("{BIN} --config {cfg} store ls"),
        format!("{BIN} --config {cfg} store get big -"),
        format!("{BIN} --config {cfg} completions bash"),
    ] {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "{cmd} | head -c 10 >/dev/null; echo \"status=${{PIPESTATUS[0]}}\" >&2"
            ))
            .output()
            .expect("bash");
        let err = stderr(&out);
        assert!(err.contains("status=0"), "{cmd}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{cmd}: {err}"
        );
    }
}

/// `store ls` prints one line per object whatever its key holds (a control character is
/// escaped, so a key cannot forge a line), and keys as `store get` takes them: relative to the
/// configured prefix, or whole with `--absolute`.
fn store_ls_prints_keys_as_store_get_takes_them(garage_backend: bool) {
    let (site, prefix) = if garage_backend {
        let p = crate::common::unique("ls");
        (
            Site::new(&crate::common::garage().yaml(&p)),
            format!("{p}/"),
        )
    } else {
        (Site::local(), String::new())
    };
    let src = site.dir.path().join("src");
    std::fs::write(&src, b"contents").expect("src");
    let src = src.to_str().expect("utf8");
    // On S3 the key's ESC and newline cannot travel in XML 1.0: the listing asks for them
    // URL-encoded.
    let forged = "k/a\n      999 k/forged\x1b[2J";
    for key in ["k/plain", forged, "k/back\\slash"] {
        let out = site.run(&["store", "put", src, key], &[]);
        assert!(out.status.success(), "put {key:?}: {}", stderr(&out));
    }
    let out = site.run(&["store", "ls", "k/"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let keys: Vec<&str> = text
        .lines()
        .map(|l| l.trim_start().split_once(' ').expect("size key").1)
        .collect();
    assert_eq!(
        keys,
        [
            "k/a\\n      999 k/forged\\x1b[2J",
            "k/back\\\\slash",
            "k/plain"
        ],
        "{text}"
    );
    // What ls prints is what get takes (after printf '%b' where a key holds an escape).
    for (printed, key) in keys.iter().zip([forged, "k/back\\slash", "k/plain"]) {
        let out = Command::new("bash")
            .args(["-c", "printf '%b' \"$1\"", "-", printed])
            .output()
            .expect("bash");
        assert_eq!(String::from_utf8_lossy(&out.stdout), key);
        let got = site.run(&["store", "get", key, "-"], &[]);
        assert_eq!(got.stdout, b"contents", "{printed}: {}", stderr(&got));
    }
    let out = site.run(&["store", "ls", "--absolute", "k/p"], &[]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("8 {prefix}k/plain")
    );
}

#[test]
fn local_store_ls_prints_keys_as_store_get_takes_them() {
    store_ls_prints_keys_as_store_get_takes_them(false);
}

#[test]
fn garage_store_ls_prints_keys_as_store_get_takes_them() {
    store_ls_prints_keys_as_store_get_takes_them(true);
}
