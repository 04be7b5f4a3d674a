//! What a DBA meets in the first hour: the shipped cron file silent on an idle server, `wal-sync
//! --all` beside a busy server, the `--json` forms of the run summary, `status` and `check`,
//! and `status` with the bucket out of reach.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::site::{BIN, Site, make_archive, write_backup};

/// The job lines of a cron.d file: (its environment assignments, each job's command).
fn cron_jobs(text: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut env = Vec::new();
    let mut jobs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((k, v)) = first.split_once('=').filter(|_| !first.starts_with('*')) {
            env.push((k.to_string(), v.to_string()));
            continue;
        }
        // minute hour day month weekday user command…
        let mut rest = line;
        for _ in 0..6 {
            let t = rest.trim_start();
            let end = t
                .find(char::is_whitespace)
                .expect("a cron line has 7 fields");
            rest = &t[end..];
        }
        jobs.push(rest.trim().to_string());
    }
    (env, jobs)
}

/// Runs one cron command as cron would: `sh -c`, the file's PATH (with the built binary first),
/// the site's config through the environment.
fn run_job(site: &Site, env: &[(String, String)], job: &str) -> Output {
    let bin_dir = Path::new(BIN).parent().expect("bin dir");
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(job).env_clear();
    for (k, v) in env {
        let v = if k == "PATH" {
            format!("{}:{v}", bin_dir.display())
        } else {
            v.clone()
        };
        cmd.env(k, v);
    }
    cmd.env("BARMANS3_CONFIG", &site.cfg)
        .env("HOME", site.dir.path())
        .output()
        .expect("sh")
}

/// A second Barman server `pg2` in the site's Barman configuration.
fn add_server(site: &Site, name: &str) {
    for d in ["base", "meta", "wals"] {
        std::fs::create_dir_all(site.dir.path().join("barman").join(name).join(d)).expect("mkdir");
    }
    let conf = site.dir.path().join("barman.conf");
    let mut text = std::fs::read_to_string(&conf).expect("barman.conf");
    text.push_str(&format!("[{name}]\nconninfo = x\n"));
    std::fs::write(conf, text).expect("barman.conf");
}

#[test]
fn every_line_of_the_shipped_cron_file_is_silent_twice_on_an_idle_server() {
    let site = Site::local();
    write_backup(&site, "20260101T000000", "DONE");
    site.queue("20260101T000000", "DONE");
    make_archive(&site.wals(), 1, 5);
    let text = std::fs::read_to_string(crate::common::repo().join("cron/barmans3")).expect("cron");
    let (env, jobs) = cron_jobs(&text);
    assert!(jobs.len() >= 4, "the cron file's jobs: {jobs:?}");
    assert!(env.iter().any(|(k, _)| k == "PATH"), "{env:?}");
    for round in 1..=2 {
        for job in &jobs {
            let out = run_job(&site, &env, job);
            assert!(
                out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
                "round {round}, {job:?}: exit {:?}, stdout {:?}, stderr {:?} (cron would mail this)",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // The jobs did their work: the backup and every WAL are in the bucket.
    let bucket = site.dir.path().join("bucket/pg");
    assert!(bucket.join("base/20260101T000000").is_dir(), "no backup");
    let wals = bucket.join("wals/0000000100000000");
    let n = std::fs::read_dir(&wals).map_or(0, |d| d.count());
    assert_eq!(n, 5, "WALs in {}", wals.display());
}

#[test]
fn wal_sync_all_skips_a_busy_server_in_one_line_and_is_busy_only_when_all_are() {
    let site = Site::local();
    add_server(&site, "pg2");
    make_archive(&site.wals(), 1, 3);
    let state = site.dir.path().join("state");
    std::fs::create_dir_all(&state).expect("mkdir");
    let lock = std::fs::File::create(state.join("pg.wal-sync.lock")).expect("lock file");
    lock.lock().expect("hold the lock");
    // pg busy, pg2 synced: success, one line about pg.
    let out = site.run(&["wal-sync", "--all"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let about_pg: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains("wal-sync pg2:") && !l.contains("INFO done:"))
        .collect();
    assert_eq!(
        about_pg,
        ["barmans3 wal-sync: skipped pg (another run holds the lock)"],
        "{err}"
    );
    assert!(
        !site.dir.path().join("bucket/pg").exists(),
        "uploaded while busy"
    );
    // Quiet: nothing at all.
    let out = site.run(&["-q", "wal-sync", "--all"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stderr.is_empty() && out.stdout.is_empty(), "{out:?}");
    // Both busy: 75, one line; silent under -q.
    let lock2 = std::fs::File::create(state.join("pg2.wal-sync.lock")).expect("lock file");
    lock2.lock().expect("hold the lock");
    let out = site.run(&["wal-sync", "--all"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = site.run(&["-q", "wal-sync", "--all"], &[]);
    assert_eq!(out.status.code(), Some(75));
    assert!(out.stderr.is_empty(), "{out:?}");
    drop((lock, lock2));
    assert!(site.run(&["-q", "wal-sync", "--all"], &[]).status.success());
    assert!(site.dir.path().join("bucket/pg/wals").is_dir());
}

fn json_last(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text:?}"))
}

#[test]
fn json_summaries_carry_the_commands_own_counts() {
    let site = Site::local();
    make_archive(&site.wals(), 1, 4);
    write_backup(&site, "20260101T000000", "DONE");
    site.queue("20260101T000000", "DONE");
    let out = site.run(&["--json", "wal-sync", "pg"], &[]);
    assert!(out.status.success(), "{out:?}");
    let v = json_last(&out);
    assert_eq!(v["counts"]["uploaded"], 4, "{v}");
    assert_eq!(v["counts"]["checked"], 4, "{v}");
    assert!(v["total_requests"].as_u64().is_some(), "{v}");
    let out = site.run(&["--json", "base-sync"], &[]);
    assert!(out.status.success(), "{out:?}");
    let v = json_last(&out);
    assert_eq!(
        (
            &v["counts"]["done"],
            &v["counts"]["waiting"],
            &v["counts"]["failed"]
        ),
        (&1.into(), &0.into(), &0.into()),
        "{v}"
    );
    // check --json: the verdict as one object.
    let out = site.run(&["--json", "check"], &[]);
    let v = json_last(&out);
    assert_eq!(v["state"], "OK", "{v}");
    assert_eq!(v["code"], 0);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        v["output"]
            .as_str()
            .unwrap_or("")
            .starts_with("BARMANS3 OK"),
        "{v}"
    );
    // status --json: the bucket as a documented object.
    let out = site.run(&["--json", "status"], &[]);
    assert!(out.status.success(), "{out:?}");
    let v = json_last(&out);
    assert_eq!(
        v["bucket"],
        serde_json::json!({"reachable": true, "error": null})
    );
}

#[test]
fn status_without_the_bucket_keeps_the_local_facts_and_fails() {
    // Nothing listens on port 1: every request is refused at once.
    let site = Site::new(
        "s3:\n  endpoint: http://127.0.0.1:1\n  region: x\n  bucket: nobucket\n  access_key_id: AKIAEXAMPLE\n  secret_access_key: notasecret\n  max_attempts: 1\n  connect_timeout: 1s\n  request_checksum: when_supported\n",
    );
    make_archive(&site.wals(), 1, 2);
    let out = site.run(&["status"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}{err}");
    assert!(text.contains("bucket: UNREACHABLE"), "{text}");
    assert!(
        text.contains("server pg: newest WAL here 000000010000000000000002"),
        "{text}"
    );
    assert!(err.contains("the bucket cannot be reached"), "{err}");
    let out = site.run(&["--json", "status"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let v = json_last(&out);
    assert_eq!(v["bucket"]["reachable"], false, "{v}");
    assert!(
        v["bucket"]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{v}"
    );
    assert_eq!(v["servers"][0]["server"], "pg", "{v}");
}

#[test]
fn each_verbosity_level_adds_its_own_lines() {
    let site = Site::local();
    let mut seg = 1;
    let mut run = |level: &str| {
        make_archive(&site.wals(), seg, 1);
        seg += 1;
        let mut args = vec![level, "wal-sync", "pg"];
        args.retain(|a| !a.is_empty());
        let out = site.run(&args, &[]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let quiet = run("-q");
    assert_eq!(quiet, "");
    let normal = run("");
    assert!(
        normal.contains(" INFO ") && normal.contains("1 uploaded"),
        "{normal}"
    );
    assert!(
        !normal.contains("DEBUG") && !normal.contains("TRACE"),
        "{normal}"
    );
    let v = run("-v");
    assert!(v.contains("DEBUG") && v.contains("uploaded ("), "{v}");
    assert!(v.contains("DEBUG configuration "), "{v}");
    assert!(!v.contains("TRACE"), "{v}");
    let vv = run("-vv");
    assert!(vv.contains("TRACE") && vv.contains("PutObject"), "{vv}");
}

/// Every `section.key` of our config that the README, the example config, the man pages or
/// `--help` name, as (section, key).
fn named_keys(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for section in ["s3", "state", "barman", "transfer"] {
        let pat = format!("{section}.");
        let mut from = 0;
        while let Some(i) = text[from..].find(&pat) {
            let at = from + i;
            from = at + pat.len();
            let before = text[..at].chars().next_back().unwrap_or(' ');
            if before.is_alphanumeric() || matches!(before, '.' | '/' | '_' | '-') {
                continue;
            }
            let key: String = text[from..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !key.is_empty()
                && !matches!(
                    key.as_str(),
                    "conf" | "d" | "yaml" | "sh" | "amazonaws" | "example"
                )
            {
                out.push((section.to_string(), key));
            }
        }
    }
    out
}

#[test]
fn every_config_key_the_docs_name_exists() {
    let raw =
        std::fs::read_to_string(crate::common::repo().join("src/config/raw.rs")).expect("raw");
    let mut texts = vec![
        std::fs::read_to_string(crate::common::repo().join("README.md")).expect("README"),
        std::fs::read_to_string(crate::common::repo().join("etc/barmans3.yaml")).expect("example"),
    ];
    texts.extend(help_texts().into_iter().map(|(_, h)| h));
    let mut wrong = Vec::new();
    for t in &texts {
        for (section, key) in named_keys(t) {
            let field = format!("    {key}: ");
            if section == "transfer" || !raw.contains(&field) {
                wrong.push(format!("{section}.{key}"));
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "keys named in the docs that the config does not have: {wrong:?}"
    );
}

/// `--help` of the binary and of every visible subcommand: (the words after `barmans3`, the text).
pub fn help_texts() -> Vec<(Vec<String>, String)> {
    use clap::CommandFactory;
    fn walk(cmd: &mut clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
        out.push((path.clone(), cmd.render_long_help().to_string()));
        for sub in cmd.get_subcommands_mut() {
            if sub.is_hide_set() || sub.get_name() == "help" {
                continue;
            }
            let mut p = path.clone();
            p.push(sub.get_name().to_string());
            walk(sub, p, out);
        }
    }
    let mut out = Vec::new();
    let mut cmd = barmans3::cli::Cli::command();
    cmd.build();
    walk(&mut cmd, vec![], &mut out);
    out
}

#[test]
fn help_and_messages_name_installed_paths_not_the_source_tree() {
    let source_only = [
        "etc/barmans3.yaml",
        "etc/systemd",
        "scripts/",
        "CHANGELOG.md",
        "cron/barmans3",
    ];
    for (path, text) in help_texts() {
        for s in source_only {
            assert!(
                !text.contains(s),
                "barmans3 {path:?} --help names {s}:\n{text}"
            );
        }
    }
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/barmans3.yaml", "status"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("barmans3 config init"), "{err}");
    for s in source_only {
        assert!(!err.contains(s), "{err}");
    }
}

/// The man pages say what `--help` says, in the sections a DBA looks for, refer only to pages
/// that are installed, and render without warnings. (That man/ holds exactly what the
/// definitions generate is `operator::help_and_man_pages_match_the_committed_snapshots`.)
#[test]
fn man_pages_match_help_and_render_without_warnings() {
    let dir = crate::common::repo().join("man");
    let generated = barmans3::cli::man_pages();
    let mut shipped: Vec<String> = std::fs::read_dir(&dir)
        .expect("man/")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".1"))
        .collect();
    shipped.sort();
    let mut names: Vec<String> = generated.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(
        shipped, names,
        "man/ and the commands differ (UPDATE_SNAPSHOTS=1 regenerates)"
    );
    let helps = help_texts();
    for (name, text) in &generated {
        let page = String::from_utf8_lossy(text);
        assert_eq!(
            std::fs::read_to_string(dir.join(name)).expect("read"),
            page,
            "man/{name} is stale (UPDATE_SNAPSHOTS=1 regenerates)"
        );
        // Every option --help lists is on the page (the Bareos dplcompat program is a binary
        // of its own, with its own page).
        let Some((path, help)) = helps.iter().find(|(p, _)| {
            std::iter::once("barmans3".to_string())
                .chain(p.iter().cloned())
                .collect::<Vec<_>>()
                .join("-")
                == name.trim_end_matches(".1")
        }) else {
            assert_eq!(name, "barmans3-dplcompat.1", "no --help for {name}");
            continue;
        };
        // The synopsis as typed, and the sections a DBA looks for.
        let words = std::iter::once("barmans3".to_string())
            .chain(path.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            page.contains(&format!(
                "\n.SH SYNOPSIS\n\\fB{}\\fR",
                words.replace('-', "\\-")
            )),
            "{name}: {words}"
        );
        for s in [
            "DESCRIPTION",
            "\"GLOBAL OPTIONS\"",
            "\"EXIT STATUS\"",
            "FILES",
            "\"SEE ALSO\"",
        ] {
            assert!(page.contains(&format!(".SH {s}\n")), "{name} lacks {s}");
        }
        for word in help.split_whitespace() {
            if let Some(long) = word.strip_prefix("--") {
                let long: String = long
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                if !long.is_empty() && help.contains(&format!("  --{long}")) {
                    let roff = format!("\\-\\-{}", long.replace('-', "\\-"));
                    assert!(page.contains(&roff), "{name} lacks --{long}");
                }
            }
        }
        // Only pages that exist are referred to.
        for part in page.split("\\fB").skip(1) {
            if let Some(r) = part
                .split("\\fR(1)")
                .next()
                .filter(|r| r.starts_with("barmans3"))
            {
                if !part.contains("\\fR(1)") {
                    continue;
                }
                let file = format!("{}.1", r.replace("\\-", "-"));
                assert!(
                    shipped.contains(&file),
                    "{name} refers to {file}, not installed"
                );
            }
        }
        let out = Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-l"])
            .arg(dir.join(name))
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_FORMATTING", "0")
            .output()
            .expect("man (apt-get install man-db groff-base)");
        assert!(out.status.success(), "man -l {name}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.trim().is_empty(), "man -l {name} warns:\n{err}");
    }
}

#[test]
fn config_check_reads_barmans_hook_lines() {
    let site = Site::local();
    let conf = site.dir.path().join("barman.conf");
    let base = std::fs::read_to_string(&conf).expect("barman.conf");
    // No hook: a warning, still OK.
    let out = site.run(&["config", "check"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("no hook queues the backups of pg"), "{err}");
    // Durations in the units the file uses, not thousands of seconds.
    let printed = String::from_utf8_lossy(&out.stdout);
    let long_secs = printed.split_whitespace().find(|w| {
        w.strip_suffix('s')
            .is_some_and(|n| n.len() >= 4 && n.bytes().all(|b| b.is_ascii_digit()))
    });
    assert_eq!(long_secs, None, "{printed}");
    assert!(
        printed.contains(": 7d\n") || printed.contains(": 1d\n"),
        "{printed}"
    );
    // The walkthrough's old path on a packaged install: refused, with the reason and the fix.
    std::fs::write(
        &conf,
        format!("{base}post_backup_retry_script = /nonexistent/bin/barmans3 queue-add\n"),
    )
    .expect("w");
    let out = site.run(&["config", "check"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("/nonexistent/bin/barmans3 does not exist")
            && err.contains("never returns")
            && err.contains(&format!("use {BIN} queue-add")),
        "{err}"
    );
    // The installed binary: OK, no warning.
    std::fs::write(
        &conf,
        format!("{base}post_backup_retry_script = {BIN} queue-add\n"),
    )
    .expect("w");
    let out = site.run(&["config", "check"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn base_restore_says_what_postgres_will_need() {
    let site = Site::local();
    write_backup(&site, "20260101T000000", "DONE");
    site.queue("20260101T000000", "DONE");
    assert!(site.run(&["-q", "base-sync"], &[]).status.success());
    // As root, into a root-owned directory, with the run's own mode 600 config.
    let dest = site.dir.path().join("restore");
    let out = site.run(
        &["-q", "base-restore", "--recovery", "pg", "20260101T000000"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "DEST is required: {out:?}");
    let out = Command::new(BIN)
        .args(["-q", "--config"])
        .arg(&site.cfg)
        .args(["base-restore", "--recovery", "pg", "20260101T000000"])
        .arg(&dest)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("is owned by root") && err.contains("chown -R postgres:"),
        "{err}"
    );
    assert!(
        err.contains("which postgres cannot read") && err.contains("--recovery-config"),
        "{err}"
    );
    // A config postgres can read, named in the restore_command.
    let readable = site.dir.path().join("restore.yaml");
    std::fs::write(&readable, "store: file:///nonexistent\n").expect("w");
    std::fs::set_permissions(
        &readable,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    std::fs::set_permissions(
        site.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let dest2 = site.dir.path().join("restore2");
    let out = Command::new(BIN)
        .args(["-q", "--config"])
        .arg(&site.cfg)
        .args(["base-restore", "--recovery", "--recovery-config"])
        .arg(&readable)
        .args(["pg", "20260101T000000"])
        .arg(&dest2)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("cannot read"), "{err}");
    let auto = std::fs::read_to_string(dest2.join("postgresql.auto.conf")).expect("auto.conf");
    assert!(
        auto.contains(&format!("--config {}", readable.display()))
            && !auto.contains(&site.cfg.display().to_string()),
        "{auto}"
    );
}

#[test]
fn another_user_is_told_it_cannot_read_the_queue_not_that_it_cannot_create_it() {
    let site = Site::local();
    let root = site.dir.path();
    make_archive(&site.wals(), 1, 1);
    // The queue exists and is Barman's; the config (no secrets: file://) is readable by all.
    std::fs::create_dir_all(root.join("queue")).expect("queue");
    std::fs::set_permissions(
        root.join("queue"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod");
    // A store this user may write (file://), so only the queue is Barman's.
    std::fs::set_permissions(
        root.join("bucket"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::fs::set_permissions(
        &site.cfg,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    let text = std::fs::read_to_string(&site.cfg).expect("cfg");
    std::fs::write(
        &site.cfg,
        text.replace(
            &format!("queue_dir: {}/queue", root.display()),
            &format!("queue_dir: {}/queue/sub", root.display()),
        ),
    )
    .expect("cfg");
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "--config",
        ])
        .arg(&site.cfg)
        .arg("status")
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot read queue directory") && err.contains("sudo -u barman"),
        "{err}"
    );
    assert!(!err.contains("create queue directory"), "{err}");
}

#[test]
fn base_ls_names_an_unknown_server_and_fits_a_terminal() {
    let site = Site::local();
    let out = site.run(&["base-ls", "pgg"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown Barman server \"pgg\""), "{err}");
    // Known but empty: one line on stderr, the header on stdout, success.
    let out = site.run(&["base-ls", "pg"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("no backups for pg in file://"), "{err}");
    write_backup(&site, "20260101T000000", "DONE");
    site.queue("20260101T000000", "DONE");
    assert!(site.run(&["-q", "base-sync"], &[]).status.success());
    let out = site.run(&["base-ls", "pg"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("20260101T000000"), "{text}");
    for line in text.lines() {
        assert!(
            line.chars().count() <= 100,
            "{} columns: {line}",
            line.chars().count()
        );
    }
    assert!(!String::from_utf8_lossy(&out.stderr).contains("no backups"));
}

#[test]
fn queue_retry_of_a_backup_complete_in_the_bucket_needs_force() {
    let site = Site::local();
    write_backup(&site, "20260101T000000", "DONE");
    site.queue("20260101T000000", "DONE");
    assert!(site.run(&["-q", "base-sync"], &[]).status.success());
    let out = site.run(&["queue", "retry", "20260101T000000"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("already complete in the bucket") && err.contains("--force"),
        "{err}"
    );
    let queue = site.dir.path().join("queue");
    assert!(
        queue.join("20260101T000000.done").exists() && !queue.join("20260101T000000.run").exists()
    );
    let out = site.run(&["queue", "retry", "--force", "20260101T000000"], &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(queue.join("20260101T000000.run").exists());
}

#[test]
fn check_warns_about_a_done_backup_missing_from_the_bucket_past_the_grace() {
    let site = Site::local();
    make_archive(&site.wals(), 1, 3);
    assert!(site.run(&["-q", "wal-sync", "pg"], &[]).status.success());
    // DONE just now, never queued: within barman.hook_grace (2h), OK.
    write_backup(&site, "20260101T000000", "DONE");
    let out = site.run(&["check"], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // Three hours later: WARNING, and status says it.
    let info = site
        .dir
        .path()
        .join("barman/pg/meta/20260101T000000-backup.info");
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&info)
        .and_then(|f| f.set_modified(past))
        .expect("set mtime");
    let out = site.run(&["check"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("backup 20260101T000000 DONE in Barman for 3h and not in the bucket"),
        "{text}"
    );
    let out = site.run(&["status"], &[]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("backup 20260101T000000: DONE in Barman for 3h"),
        "{out:?}"
    );
    // full-sync uploads it; the warning goes.
    assert!(
        site.run(&["-q", "full-sync", "pg", "--no-delete"], &[])
            .status
            .success()
    );
    let out = site.run(&["check"], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
