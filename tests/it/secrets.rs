//! Secrets never show: every command of both entry points runs at every verbosity, on success
//! and on failure, with recognisable credentials in the config files, the AWS environment and a
//! proxy URL; stdout, stderr and every log file are searched for them. Zero hits.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::site::{BIN, PLUGIN, Site, hook_env, make_real_archive, write_backup};

const ID: &str = "20261122T080000";
/// Recognisable values that must never be printed anywhere.
const WRONG_SECRET: &str = "WRONGSECRETf00dfeedfacecafe0123456789abcdef0123456789abcdef01234";
const PROXY_PASSWORD: &str = "PROXYPASSWORDc0ffee42";
const ENV_SECRET: &str = "ENVSECRETdeadbeef0123456789abcdef0123456789";
const ENV_TOKEN: &str = "ENVSESSIONTOKENbadc0ffee9876543210";

struct Seen {
    outputs: usize,
    hits: Vec<String>,
}

impl Seen {
    /// Searches one command's stdout and stderr for every marker.
    fn check(&mut self, what: &str, out: &Output, markers: &[&str]) {
        self.outputs += 1;
        for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let text = String::from_utf8_lossy(bytes);
            for m in markers {
                if text.contains(m) {
                    self.hits.push(format!("{what}: {stream} shows {m:?}"));
                }
            }
        }
    }

    /// Searches every file under `dir` (log files).
    fn check_files(&mut self, dir: &Path, markers: &[&str]) -> usize {
        let mut n = 0;
        for e in std::fs::read_dir(dir).into_iter().flatten() {
            let p = e.expect("entry").path();
            if p.is_dir() {
                n += self.check_files(&p, markers);
                continue;
            }
            n += 1;
            let text = String::from_utf8_lossy(&std::fs::read(&p).expect("read log")).into_owned();
            for m in markers {
                if text.contains(m) {
                    self.hits.push(format!("{} shows {m:?}", p.display()));
                }
            }
        }
        n
    }
}

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "AKIAENVKEYIDMARKER01"),
        ("AWS_SECRET_ACCESS_KEY", ENV_SECRET),
        ("AWS_SESSION_TOKEN", ENV_TOKEN),
    ]
}

fn barmans3(cfg: &Path, args: &[&str], extra: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(cfg)
        .args(args)
        .envs(env())
        .envs(extra.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .expect("run barmans3")
}

fn with_mode_600(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write config");
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
}

#[test]
fn no_command_prints_a_secret_at_any_verbosity() {
    let g = crate::common::garage();
    let prefix = crate::common::unique("secrets");
    let site = Site::new(&g.yaml(&prefix));
    let d = site.dir.path().to_path_buf();
    let logs = d.join("logs");
    let text = std::fs::read_to_string(&site.cfg).expect("cfg");
    with_mode_600(&site.cfg, &format!("{text}  log_dir: {}\n", logs.display()));
    write_backup(&site, ID, "DONE");
    make_real_archive(&site.wals(), 1, 3);
    let real = [g.secret(), g.key_id()];
    let all = [
        g.secret(),
        g.key_id(),
        WRONG_SECRET,
        PROXY_PASSWORD,
        ENV_SECRET,
        ENV_TOKEN,
    ];
    let mut seen = Seen {
        outputs: 0,
        hits: Vec::new(),
    };

    // Request logs of both formats, on success and on failure: keys and sizes, never secrets.
    let reqlogs = d.join("reqlogs");
    std::fs::create_dir_all(&reqlogs).expect("mkdir");
    let droplet_log = reqlogs.join("droplet.csv");
    let extended_log = reqlogs.join("extended.csv");
    // A log refused with a warning (a link someone left): the warning names no secret either.
    let refused_log = reqlogs.join("refused.csv");
    std::fs::write(d.join("not-a-log"), b"").expect("link target");
    std::os::unix::fs::symlink(d.join("not-a-log"), &refused_log).expect("link");
    let (droplet_log, extended_log, refused_log) = (
        droplet_log.to_str().expect("utf8"),
        extended_log.to_str().expect("utf8"),
        refused_log.to_str().expect("utf8"),
    );
    let volume_src = d.join("volume-src");
    std::fs::write(&volume_src, crate::common::data(100_000, 5)).expect("volume src");
    let volume_src = volume_src.to_str().expect("utf8");

    // Every command on a working setup, at every verbosity.
    let mut n = 0;
    for level in ["-q", "", "-v", "-vv"] {
        n += 1;
        let dest = d.join(format!("restore{n}"));
        let wal = d.join(format!("wal{n}"));
        let runs: Vec<Vec<&str>> = vec![
            vec!["config", "check"],
            vec!["queue-add"],
            vec!["base-sync"],
            vec!["wal-sync", "pg"],
            vec!["wal-sync", "--all", "--full"],
            vec!["base-ls", "pg"],
            vec!["--json", "base-ls", "pg"],
            vec!["status"],
            vec!["--json", "status"],
            vec!["check"],
            vec!["full-sync", "pg", "--dry-run"],
            vec!["base-restore", "pg", ID, dest.to_str().expect("utf8")],
            vec![
                "wal-restore",
                "pg",
                "000000010000000000000002",
                wal.to_str().expect("utf8"),
            ],
            vec!["store", "ls"],
            vec!["store", "ls", "--absolute"],
            vec!["store", "uploads"],
            vec!["verify", "pg"],
            vec!["--json", "verify-wal", "--read", "pg"],
            vec!["verify-wal", "pg"],
            vec!["queue", "ls"],
            vec!["--json", "wal-sync", "pg"],
            vec![
                "--request-log",
                droplet_log,
                "volume",
                "put",
                "--resume",
                "V",
                volume_src,
            ],
            vec![
                "--request-log",
                extended_log,
                "--request-log-format",
                "extended",
                "volume",
                "get",
                "V",
                "-",
            ],
            vec!["volume", "status", "V"],
            vec!["volume", "ls"],
            vec!["--request-log", refused_log, "store", "ls"],
        ];
        for mut args in runs {
            if !level.is_empty() {
                args.insert(0, level);
            }
            let hook = hook_env(ID, "DONE", &[]);
            let out = barmans3(&site.cfg, &args, &hook);
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            seen.check(&format!("barmans3 {args:?}"), &out, &all);
        }
    }
    // Help for the program and every subcommand.
    let subs = [
        "queue-add",
        "base-sync",
        "wal-sync",
        "base-ls",
        "full-sync",
        "base-restore",
        "wal-restore",
        "status",
        "check",
        "queue",
        "volume",
        "completions",
        "config",
        "store",
        "gp-plugin",
    ];
    for sub in std::iter::once("--help").chain(subs) {
        let args: Vec<&str> = if sub == "--help" {
            vec!["--help"]
        } else {
            vec![sub, "--help"]
        };
        let out = barmans3(&site.cfg, &args, &[]);
        seen.check(&format!("barmans3 {args:?}"), &out, &all);
    }

    // Failures: a wrong secret, credentials from the environment, an unreachable proxy with a
    // password, each at every verbosity and with the SDK's own trace logging.
    let wrong = d.join("wrong.yaml");
    with_mode_600(
        &wrong,
        &text
            .replace(g.secret(), WRONG_SECRET)
            .replace("max_attempts: 3", "max_attempts: 1"),
    );
    let from_env = d.join("env.yaml");
    let without_keys: String = text
        .lines()
        .filter(|l| !l.contains("access_key_id") && !l.contains("secret_access_key"))
        .map(|l| format!("{l}\n"))
        .collect();
    with_mode_600(&from_env, &without_keys);
    let proxied = d.join("proxy.yaml");
    with_mode_600(
        &proxied,
        &text.replace(
            "  max_attempts: 3\n",
            &format!("  max_attempts: 1\n  http_proxy: http://user:{PROXY_PASSWORD}@127.0.0.1:9\n"),
        ),
    );
    let mut failures = 0;
    for cfg in [&wrong, &from_env, &proxied] {
        for level in ["-q", "", "-v", "-vv", "trace"] {
            for cmd in [
                &["config", "check"][..],
                &["wal-sync", "pg"],
                &["base-ls", "pg"],
                &["store", "ls"],
                &["base-sync"],
                &[
                    "--request-log",
                    extended_log,
                    "--request-log-format",
                    "extended",
                    "volume",
                    "ls",
                ],
            ] {
                let mut args: Vec<&str> = cmd.to_vec();
                let mut extra = Vec::new();
                match level {
                    "" => {}
                    "trace" => extra.push(("RUST_LOG", "trace")),
                    l => args.insert(0, l),
                }
                if cmd == ["base-sync"] {
                    let queued = barmans3(cfg, &["queue-add"], &hook_env(ID, "DONE", &[]));
                    assert!(queued.status.success(), "queue-add");
                }
                let out = barmans3(cfg, &args, &extra);
                assert!(!out.status.success(), "{cfg:?} {args:?} should fail");
                failures += 1;
                // Under RUST_LOG=trace the SDK itself prints the access key id (an identifier,
                // not a secret); secrets stay redacted there too.
                let markers: Vec<&str> = if level == "trace" {
                    all.iter().copied().filter(|m| *m != g.key_id()).collect()
                } else {
                    all.to_vec()
                };
                seen.check(
                    &format!("barmans3 {args:?} with {}", cfg.display()),
                    &out,
                    &markers,
                );
            }
        }
    }

    // The plugin: every command, on success and with a wrong secret, at every log verbosity.
    let home = d.join("gphome");
    std::fs::create_dir_all(&home).expect("home");
    let src = d.join("gpfile");
    std::fs::write(&src, crate::common::data(70_000, 3)).expect("src");
    let key_dir = d.join("backups/20261122/20261122080000");
    std::fs::create_dir_all(&key_dir).expect("key dir");
    let file = key_dir.join("gpbackup_20261122080000_report");
    std::fs::copy(&src, &file).expect("copy");
    let file = file.to_str().expect("utf8").to_string();
    let key_dir_s = key_dir.to_str().expect("utf8").to_string();
    let data_key = format!(
        "{}/backups/20261122/20261122080000/gpbackup_0_20261122080000_1",
        d.display()
    );
    let mut plugin_runs = 0;
    for (secret, ok) in [(g.secret(), true), (WRONG_SECRET, false)] {
        for verbosity in ["error", "info", "verbose", "debug"] {
            let cfg = d.join(format!("gp-{verbosity}-{ok}.yaml"));
            std::fs::write(
                &cfg,
                format!(
                    "executablepath: {PLUGIN}\noptions:\n  endpoint: {}\n  region: garage\n  aws_access_key_id: {}\n  aws_secret_access_key: {secret}\n  aws_session_token: {ENV_TOKEN}\n  bucket: {}\n  folder: {prefix}/gp\n  logger_verbosity: {verbosity}\n",
                    g.endpoint(),
                    g.key_id(),
                    g.bucket()
                ),
            )
            .expect("plugin config");
            let c = cfg.to_str().expect("utf8");
            let calls: Vec<Vec<&str>> = vec![
                vec!["--version"],
                vec!["plugin_api_version"],
                vec!["setup_plugin_for_backup", c, &key_dir_s, "master", "-1"],
                vec!["backup_file", c, &file],
                vec!["restore_file", c, &file],
                vec!["backup_data", c, &data_key],
                vec!["restore_data", c, &data_key],
                vec!["list_directory", c, "backups"],
                vec!["delete_backup", c, "20261122080000"],
            ];
            for call in calls {
                let mut cmd = Command::new(PLUGIN);
                cmd.args(&call).env("HOME", &home).envs(env());
                if call[0] == "backup_data" {
                    cmd.stdin(std::fs::File::open(&src).expect("open"));
                }
                let out = cmd.output().expect("run plugin");
                plugin_runs += 1;
                if ok && call[0] != "restore_data" && call[0] != "restore_file" {
                    // Restores after delete_backup of an earlier round may find nothing.
                    assert!(
                        out.status.success(),
                        "{call:?}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                if !ok && call.len() > 1 && call[0] != "setup_plugin_for_backup" {
                    assert!(
                        !out.status.success(),
                        "{call:?} should fail with a wrong secret"
                    );
                }
                seen.check(
                    &format!("plugin {call:?} ({verbosity}, ok={ok})"),
                    &out,
                    &all,
                );
            }
        }
    }

    let log_files = seen.check_files(&logs, &real)
        + seen.check_files(&home, &all)
        + seen.check_files(&reqlogs, &all);
    assert!(
        log_files >= 2,
        "the barmans3 and plugin logs were written ({log_files} files)"
    );
    eprintln!(
        "searched {} command outputs ({failures} failing runs, {plugin_runs} plugin calls) and {log_files} log files: {} hits",
        seen.outputs,
        seen.hits.len()
    );
    assert!(
        seen.hits.is_empty(),
        "secrets shown:\n{}",
        seen.hits.join("\n")
    );
}
