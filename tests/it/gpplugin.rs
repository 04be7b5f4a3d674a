//! The built `gpbackup_s3_plugin`, driven the way gpbackup and its plugin test script drive it:
//! every call is a `bash -c` string, the config is a copy at `/tmp/<timestamp>_<name>.yaml`,
//! the server is the project's Garage. Covers every command and the edge cases of the plugin
//! spec (§9), each with its exit code and message.

use crate::common::site::PLUGIN;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const CHUNK: usize = 5 << 20;

/// One plugin config in /tmp, a HOME for the logs, and a local backup tree.
struct Gp {
    cfg: PathBuf,
    folder: String,
    home: tempfile::TempDir,
    ts: String,
}

impl Drop for Gp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.cfg);
    }
}

fn garage_options(folder: &str) -> String {
    let g = crate::common::garage();
    format!(
        "  endpoint: {}\n  region: garage\n  aws_access_key_id: {}\n  aws_secret_access_key: {}\n  bucket: {}\n  folder: {folder}\n",
        g.endpoint(),
        g.key_id(),
        g.secret(),
        g.bucket()
    )
}

fn timestamp() -> String {
    format!("2024{:010}", rand::random::<u32>())
}

impl Gp {
    /// A config with the Garage connection, `extra` option lines, and a unique folder.
    fn new(name: &str, extra: &str) -> Gp {
        let folder = crate::common::unique(name);
        Gp::with_text(
            name,
            &format!(
                "executablepath: {PLUGIN}\noptions:\n{}{extra}",
                garage_options(&folder)
            ),
            folder,
        )
    }

    fn with_text(name: &str, text: &str, folder: String) -> Gp {
        let ts = timestamp();
        let cfg = PathBuf::from(format!(
            "/tmp/{ts}_{name}-{:08x}.yaml",
            rand::random::<u32>()
        ));
        std::fs::write(&cfg, text).expect("write config");
        std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        let home = tempfile::tempdir().expect("home");
        Gp {
            cfg,
            folder,
            home,
            ts,
        }
    }

    /// The local backup directory of content `c` for this config's timestamp.
    fn dir(&self, c: i32) -> PathBuf {
        self.dir_for(c, &self.ts)
    }

    fn dir_for(&self, c: i32, ts: &str) -> PathBuf {
        let d = self
            .home
            .path()
            .join(format!("gpseg{c}/backups/{}/{ts}", &ts[..8]));
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    /// Runs `$PLUGIN <args>` through `bash -c` with `$C` set to the config path.
    fn sh(&self, args: &str, stdin: Option<&Path>) -> Output {
        let script = match stdin {
            Some(p) => format!("\"$P\" {args} < {}", p.display()),
            None => format!("\"$P\" {args}"),
        };
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .env("P", PLUGIN)
            .env("C", &self.cfg)
            .env("HOME", self.home.path())
            .stdin(Stdio::null())
            .output()
            .expect("run bash")
    }

    fn ok(&self, args: &str, stdin: Option<&Path>) -> Vec<u8> {
        let out = self.sh(args, stdin);
        assert!(
            out.status.success(),
            "{args}: exit {:?}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn keys(&self) -> Vec<String> {
        let out = String::from_utf8(self.ok("list_directory $C", None)).expect("utf8");
        out.lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }
}

/// Asserts exit code 1, exactly one stderr line containing `want`, and nothing on stdout.
fn fails(out: &Output, want: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains(want), "{want:?} not in {err:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
}

fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .and_then(|mut f| f.write_all(data))
        .expect("write");
    p
}

#[test]
fn version_probes_answer_exactly() {
    let gp = Gp::new("version", "");
    assert_eq!(gp.ok("plugin_api_version", None), b"0.5.0\n");
    let v = String::from_utf8(gp.ok("--version", None)).expect("utf8");
    let tokens: Vec<&str> = v.trim_end().split(' ').collect();
    assert_eq!(v.lines().count(), 1);
    assert_eq!(tokens.len(), 3, "{v}");
    assert_eq!(&tokens[..2], ["gpbackup_s3_plugin", "version"]);
    fails(
        &gp.sh("plugin_api_version extra", None),
        "Expected 0 arguments",
    );
}

#[test]
fn setup_and_cleanup_accept_every_scope_and_content_id() {
    let gp = Gp::new("scopes", "");
    let dir = gp.dir(-1);
    for verb in ["setup_plugin_for", "cleanup_plugin_for"] {
        for phase in ["backup", "restore"] {
            for scope in ["master", "coordinator", "segment_host", "segment", "other"] {
                for content in [r#"\"-1\""#, r#"\"0\""#, ""] {
                    gp.ok(
                        &format!("{verb}_{phase} $C {} {scope} {content}", dir.display()),
                        None,
                    );
                }
            }
        }
    }
    // The backup probe left an empty report object, and a real report is never overwritten.
    let report = format!("{}/gpbackup_{}_report", dir.display(), gp.ts);
    let key = format!(
        "{}/backups/{}/{}/gpbackup_{}_report",
        gp.folder,
        &gp.ts[..8],
        gp.ts,
        gp.ts
    );
    assert_eq!(gp.keys(), vec![key]);
    std::fs::write(&report, "real report").expect("report");
    gp.ok(&format!("backup_file $C {report}"), None);
    gp.ok(
        &format!("setup_plugin_for_backup $C {} master", dir.display()),
        None,
    );
    std::fs::remove_file(&report).expect("rm");
    gp.ok(&format!("restore_file $C {report}"), None);
    assert_eq!(std::fs::read(&report).expect("read"), b"real report");
    // Scopes that do nothing do not even read the config.
    let absent = Gp::with_text("absent", "", "x".into());
    std::fs::remove_file(&absent.cfg).expect("rm");
    absent.ok("setup_plugin_for_backup $C /a/b/c segment \\\"3\\\"", None);
    absent.ok(
        "cleanup_plugin_for_restore $C /a/b/c master \\\"-1\\\"",
        None,
    );
}

#[test]
fn files_round_trip_and_a_failed_restore_keeps_the_local_file() {
    let gp = Gp::new("files", "");
    let dir = gp.dir(-1);
    let data = crate::common::data(3 * CHUNK / 2, 7);
    let name = format!("gpbackup_{}_metadata.sql", gp.ts);
    let path = write_file(&dir, &name, &data);
    gp.ok(&format!("backup_file $C {}", path.display()), None);
    assert_eq!(std::fs::read(&path).expect("kept"), data, "local file kept");
    std::fs::remove_file(&path).expect("rm");
    gp.ok(&format!("restore_file $C {}", path.display()), None);
    assert_eq!(std::fs::read(&path).expect("restored"), data);

    let other = write_file(&dir, "gpbackup_never_uploaded", b"precious");
    fails(
        &gp.sh(&format!("restore_file $C {}", other.display()), None),
        "not found",
    );
    assert_eq!(std::fs::read(&other).expect("kept"), b"precious");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    fails(
        &gp.sh(&format!("backup_file $C {}/missing", dir.display()), None),
        "missing",
    );
}

#[test]
fn streams_round_trip_at_every_part_boundary() {
    let gp = Gp::new(
        "streams",
        "  backup_multipart_chunksize: 5MB\n  backup_max_concurrent_requests: 3\n  restore_multipart_chunksize: 5MB\n  restore_max_concurrent_requests: 3\n",
    );
    let dir = gp.dir(0);
    let input = tempfile::tempdir().expect("tmp");
    for (i, size) in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7]
        .into_iter()
        .enumerate()
    {
        let data = crate::common::data(size, i as u64 + 100);
        let src = write_file(input.path(), &format!("in{i}"), &data);
        let key = format!("{}/gpbackup_0_{}_{}", dir.display(), gp.ts, 16384 + i);
        let out = gp.ok(&format!("backup_data $C {key}"), Some(&src));
        assert!(out.is_empty(), "backup_data printed {} bytes", out.len());
        let back = gp.ok(&format!("restore_data $C {key}"), None);
        assert!(back == data, "size {size}: restored {} bytes", back.len());
    }

    // restore_data_subset: ranges inside one part, across a part boundary, empty, in any order.
    let key = format!("{}/gpbackup_0_{}_{}", dir.display(), gp.ts, 16384 + 5);
    let data = crate::common::data(3 * CHUNK + 7, 105);
    let ranges = [
        (3, 10),
        (CHUNK - 5, CHUNK + 5),
        (100, 100),
        (2 * CHUNK, 3 * CHUNK + 7),
        (0, 1),
    ];
    let mut text = ranges.len().to_string();
    let mut want = Vec::new();
    for (s, e) in ranges {
        text.push_str(&format!(" {s} {e}"));
        want.extend_from_slice(&data[s..e]);
    }
    let offsets = write_file(input.path(), "offsets", text.as_bytes());
    let got = gp.ok(
        &format!("restore_data_subset $C {key} {}", offsets.display()),
        None,
    );
    assert!(
        got == want,
        "subset: {} bytes, want {}",
        got.len(),
        want.len()
    );
    let past = write_file(
        input.path(),
        "past",
        format!("1 0 {}", 3 * CHUNK + 8).as_bytes(),
    );
    fails(
        &gp.sh(
            &format!("restore_data_subset $C {key} {}", past.display()),
            None,
        ),
        "outside the object",
    );
    let bad = write_file(input.path(), "bad", b"2 1 5");
    fails(
        &gp.sh(
            &format!("restore_data_subset $C {key} {}", bad.display()),
            None,
        ),
        "offsets file",
    );
    fails(
        &gp.sh(
            &format!("restore_data $C {}/never_written", dir.display()),
            None,
        ),
        "not found",
    );
}

#[test]
fn delete_backup_removes_one_timestamp_and_leaves_its_siblings() {
    let gp = Gp::new("delete", "");
    let t1 = gp.ts.clone();
    let t2 = format!("{}", t1.parse::<u64>().expect("digits") + 1);
    for ts in [&t1, &t2] {
        for c in [-1, 0, 1] {
            let f = write_file(
                &gp.dir_for(c, ts),
                &format!("gpbackup_{c}_{ts}_toc.yaml"),
                b"x",
            );
            gp.ok(&format!("backup_file $C {}", f.display()), None);
        }
    }
    assert_eq!(gp.keys().len(), 6);
    gp.ok(&format!("delete_backup $C {t1}"), None);
    let left = gp.keys();
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left.iter().all(|k| k.contains(&t2)), "{left:?}");
    // Zero matches is success, and the format is all that is checked.
    gp.ok(&format!("delete_backup $C {t1}"), None);
    gp.ok("delete_backup $C 99998900123456", None);
    for bad in ["badformat", "2024010112000", "202401011200000", "''"] {
        let out = gp.sh(
            &format!("delete_backup /nonexistent/config.yaml {bad}"),
            None,
        );
        fails(&out, "invalid timestamp");
    }
    assert_eq!(gp.keys().len(), 3);
}

#[test]
fn directories_list_and_delete_inside_the_folder_only() {
    let gp = Gp::new("dirs", "");
    let src = tempfile::tempdir().expect("src");
    let tree = src.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).expect("mkdir");
    write_file(&tree, "a", b"alpha");
    write_file(&tree.join("sub"), "b", &crate::common::data(CHUNK + 3, 9));
    gp.ok(
        &format!("backup_directory_parallel $C {} 2", tree.display()),
        None,
    );
    let prefix = tree.display().to_string();
    let restored = gp.home.path().join("restored");
    // restore_directory reads keys under the local path it is given: restore the uploaded tree
    // into a fresh directory by listing it under its own name.
    let out = String::from_utf8(gp.ok(&format!("list_directory $C {prefix}"), None)).expect("utf8");
    assert_eq!(out.lines().count(), 3, "{out}");
    std::fs::remove_dir_all(&tree).expect("rm");
    gp.ok(&format!("restore_directory_parallel $C {prefix} 3"), None);
    assert_eq!(std::fs::read(tree.join("a")).expect("a"), b"alpha");
    assert_eq!(
        std::fs::read(tree.join("b")).expect("b flattened"),
        crate::common::data(CHUNK + 3, 9)
    );
    let _ = restored;

    let f = write_file(&gp.dir(0), "gpbackup_0_x", b"data");
    gp.ok(&format!("backup_file $C {}", f.display()), None);
    for outside in ["''", "/", "t-other", &format!("{}x", gp.folder)] {
        fails(
            &gp.sh(&format!("delete_directory $C {outside}"), None),
            "outside folder",
        );
    }
    assert_eq!(gp.keys().len(), 1);
    gp.ok(&format!("delete_directory $C {}/backups", gp.folder), None);
    assert!(gp.keys().is_empty());
}

#[test]
fn argument_counts_are_checked_for_every_command() {
    let gp = Gp::new("argc", "");
    let counts: &[(&str, usize, usize)] = &[
        ("setup_plugin_for_backup", 3, 4),
        ("setup_plugin_for_restore", 3, 4),
        ("cleanup_plugin_for_backup", 3, 4),
        ("cleanup_plugin_for_restore", 3, 4),
        ("backup_file", 2, 2),
        ("restore_file", 2, 2),
        ("backup_data", 2, 2),
        ("restore_data", 2, 2),
        ("restore_data_subset", 3, 3),
        ("delete_backup", 2, 2),
        ("list_directory", 1, 2),
        ("delete_directory", 2, 2),
    ];
    for (cmd, min, max) in counts {
        for n in [min - 1, max + 1] {
            let args: Vec<String> = (0..n).map(|i| format!("/a/b/c/d{i}")).collect();
            let out = gp.sh(&format!("{cmd} {}", args.join(" ")), None);
            fails(&out, "Invalid number of arguments");
        }
    }
    let out = gp.sh("frobnicate $C", None);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No help topic for 'frobnicate'"));
}

#[test]
fn bad_configs_fail_before_any_network_call() {
    // Nothing listens on port 1: a config that got as far as the network would say so.
    let ok = "  endpoint: http://127.0.0.1:1\n  bucket: bkt\n  folder: f\n";
    let cases: &[(&str, String, &str)] = &[
        (
            "unparsable",
            "executablepath: /x\noptions: [unclosed\n".into(),
            "not valid YAML",
        ),
        (
            "list",
            "executablepath: /x\noptions:\n  - a\n".into(),
            "options must be a mapping",
        ),
        (
            "unknown",
            format!("executablepath: /x\noptions:\n{ok}  restore_subsets: \"on\"\n"),
            "unknown option \"restore_subsets\"",
        ),
        (
            "duplicate",
            format!("executablepath: /x\noptions:\n{ok}  bucket: other\n"),
            "duplicate",
        ),
        (
            "no options",
            "executablepath: /x\n".into(),
            "options is missing",
        ),
        (
            "empty exe",
            format!("executablepath: \"\"\noptions:\n{ok}"),
            "executablepath is missing or empty",
        ),
        (
            "no bucket",
            "executablepath: /x\noptions:\n  folder: f\n  region: r\n".into(),
            "bucket is required",
        ),
        (
            "no folder",
            "executablepath: /x\noptions:\n  bucket: bkt\n  region: r\n".into(),
            "folder is required",
        ),
        (
            "no region",
            "executablepath: /x\noptions:\n  bucket: bkt\n  folder: f\n".into(),
            "region",
        ),
        (
            "one key",
            format!("executablepath: /x\noptions:\n{ok}  aws_access_key_id: AKIAONLY\n"),
            "aws_secret_access_key",
        ),
        (
            "100M",
            format!("executablepath: /x\noptions:\n{ok}  backup_multipart_chunksize: 100M\n"),
            "\"100M\"",
        ),
        (
            "bare",
            format!("executablepath: /x\noptions:\n{ok}  restore_multipart_chunksize: 500\n"),
            "\"500\"",
        ),
        (
            "MiB",
            format!("executablepath: /x\noptions:\n{ok}  backup_multipart_chunksize: 5MiB\n"),
            "\"5MiB\"",
        ),
        (
            "1MB",
            format!("executablepath: /x\noptions:\n{ok}  backup_multipart_chunksize: 1MB\n"),
            "from 5MB to 5GB",
        ),
        (
            "0MB",
            format!("executablepath: /x\noptions:\n{ok}  restore_multipart_chunksize: 0MB\n"),
            "from 5MB to 5GB",
        ),
        (
            "zero conc",
            format!("executablepath: /x\noptions:\n{ok}  backup_max_concurrent_requests: 0\n"),
            "backup_max_concurrent_requests",
        ),
        (
            "On",
            format!("executablepath: /x\noptions:\n{ok}  encryption: On\n"),
            "encryption",
        ),
        (
            "dup bucket flag",
            format!("executablepath: /x\noptions:\n{ok}  remove_duplicate_bucket: yes\n"),
            "remove_duplicate_bucket",
        ),
    ];
    for (name, text, want) in cases {
        let gp = Gp::with_text("bad", text, "f".into());
        let out = gp.sh("backup_data $C /d/backups/20240101/20240101000000/f", None);
        fails(&out, want);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("127.0.0.1:1"),
            "{name}: reached the network: {err}"
        );
        assert!(!err.contains("AKIAONLY"), "{name}: leaked a key: {err}");
    }
    // Every problem at once, on one line.
    let gp = Gp::with_text(
        "many",
        "executablepath: /x\noptions:\n  encryption: maybe\n",
        "f".into(),
    );
    let out = gp.sh("restore_file $C /d/backups/20240101/20240101000000/f", None);
    for want in [
        "bucket is required",
        "folder is required",
        "region",
        "encryption",
    ] {
        fails(&out, want);
    }
    let gp = Gp::new("missing", "");
    std::fs::remove_file(&gp.cfg).expect("rm");
    fails(
        &gp.sh("backup_file $C /d/backups/2024/2024/f", None),
        "cannot read plugin config",
    );
}

#[test]
fn typed_scalars_odd_folders_and_short_paths() {
    for (i, folder) in ["a/b/", "/a/b", "a//b"].into_iter().enumerate() {
        let unique = crate::common::unique("typed");
        let text = format!(
            "executablepath: {PLUGIN}\noptions:\n{}  backup_max_concurrent_requests: 2\n  remove_duplicate_bucket: false\n  backup_plugin_version: 1.3\n  pgport: \"5432\"\n  restore_max_concurrent_requests: 4\n",
            garage_options(&format!("{unique}/{folder}"))
        );
        let gp = Gp::with_text("typed", &text, format!("{unique}/a/b"));
        let f = write_file(&gp.dir(i as i32), "gpbackup_toc.yaml", b"toc");
        gp.ok(&format!("backup_file $C {}", f.display()), None);
        let keys = gp.keys();
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert!(
            keys[0].starts_with(&format!("{unique}/a/b/backups/")),
            "{keys:?}"
        );
        gp.ok(&format!("delete_backup $C {}", gp.ts), None);
        assert!(gp.keys().is_empty());
    }
    let gp = Gp::new("short", "");
    let out = gp.sh("backup_data $C a/b/c", None);
    fails(&out, "fewer than 4 path components");
    // A relative path with four components is a key like any other.
    let input = tempfile::tempdir().expect("tmp");
    let src = write_file(input.path(), "in", b"relative");
    gp.ok(
        "backup_data $C backups/20240101/20240101000000/rel",
        Some(&src),
    );
    assert_eq!(
        gp.ok("restore_data $C backups/20240101/20240101000000/rel", None),
        b"relative"
    );
}

#[test]
fn encryption_and_missing_bucket() {
    let g = crate::common::garage();
    let hostport = g.endpoint().trim_start_matches("http://");
    let base = |enc: &str, endpoint: &str, bucket: &str| {
        format!(
            "executablepath: {PLUGIN}\noptions:\n  endpoint: {endpoint}\n  region: garage\n  aws_access_key_id: {}\n  aws_secret_access_key: {}\n  bucket: {bucket}\n  folder: {}\n  encryption: {enc}\n",
            g.key_id(),
            g.secret(),
            crate::common::unique("enc")
        )
    };
    let input = tempfile::tempdir().expect("tmp");
    let src = write_file(input.path(), "in", b"over plain http");
    let gp = Gp::with_text("plain", &base("off", hostport, g.bucket()), "f".into());
    gp.ok(
        "backup_data $C /x/backups/20240101/20240101000000/f",
        Some(&src),
    );
    // "on" with a scheme-less endpoint means TLS, which the plain-HTTP server cannot speak.
    let gp = Gp::with_text("tls", &base("on", hostport, g.bucket()), "f".into());
    let out = gp.sh(
        "backup_data $C /x/backups/20240101/20240101000000/f",
        Some(&src),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("https://{hostport}")));
    // A scheme in the endpoint wins over "off".
    let https = format!("https://{hostport}");
    let gp = Gp::with_text("scheme", &base("off", &https, g.bucket()), "f".into());
    let out = gp.sh(
        "backup_data $C /x/backups/20240101/20240101000000/f",
        Some(&src),
    );
    assert_eq!(out.status.code(), Some(1));

    let gp = Gp::with_text(
        "nobucket",
        &base("off", g.endpoint(), "no-such-bucket-x1"),
        "f".into(),
    );
    let dir = gp.dir(-1);
    fails(
        &gp.sh(
            &format!("setup_plugin_for_backup $C {} master", dir.display()),
            None,
        ),
        "no-such-bucket-x1",
    );
    let f = write_file(&dir, "file", b"x");
    fails(
        &gp.sh(&format!("backup_file $C {}", f.display()), None),
        "NoSuchBucket",
    );
}

#[test]
fn logs_go_to_gpadminlogs_or_to_stderr_without_home() {
    let gp = Gp::new("logs", "");
    let dir = gp.dir(0);
    fails(
        &gp.sh(&format!("restore_data $C {}/absent", dir.display()), None),
        "not found",
    );
    let logs = gp.home.path().join("gpAdminLogs");
    let file = std::fs::read_dir(&logs)
        .expect("gpAdminLogs created")
        .filter_map(|e| e.ok())
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("gpbackup_s3_plugin_")
        })
        .expect("log file");
    let text = std::fs::read_to_string(file.path()).expect("read log");
    let line = text
        .lines()
        .find(|l| l.contains("[ERROR]"))
        .expect("error line");
    assert!(
        line.contains(" gpbackup_s3_plugin:") && line.contains("-[ERROR]:-restore_data"),
        "{line}"
    );

    // HOME unset or unwritable: the data path still works, the log goes to stderr.
    let input = tempfile::tempdir().expect("tmp");
    let src = write_file(input.path(), "in", b"no home");
    let key = format!("{}/nohome", dir.display());
    for home in ["unset HOME;", "HOME=/proc/nonexistent"] {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "{home} \"$P\" backup_data \"$C\" {key} < {}",
                src.display()
            ))
            .env("P", PLUGIN)
            .env("C", &gp.cfg)
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "{home}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("{home} \"$P\" restore_data \"$C\" {key}.absent"))
            .env("P", PLUGIN)
            .env("C", &gp.cfg)
            .output()
            .expect("bash");
        fails(&out, "-[ERROR]:-restore_data");
    }
}

/// Peak RSS (KiB) of one plugin run, measured by a python3 parent through getrusage.
fn peak_rss_kib(gp: &Gp, args: &str, stdin: &Path) -> u64 {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import resource,subprocess,sys\n\
             with open(sys.argv[1],'rb') as f:\n  r=subprocess.run(sys.argv[2:],stdin=f)\n\
             print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)",
        )
        .arg(stdin)
        .args(["bash", "-c", &format!("exec \"$P\" {args}")])
        .env("P", PLUGIN)
        .env("C", &gp.cfg)
        .env("HOME", gp.home.path())
        .output()
        .expect("python3 (installed by scripts/test)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let kib: u64 = it.next().and_then(|v| v.parse().ok()).expect("rss");
    assert_eq!(
        it.next(),
        Some("0"),
        "plugin failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    kib
}

#[test]
fn parallel_streams_with_default_chunking_allocate_lazily() {
    // Defaults: 500MB parts, 6 at once. The reference preallocates 3000 MiB per process; here a
    // stream costs what it carries. 8 processes at once, as gpbackup runs one per segment.
    let gp = Gp::new("rss", "");
    let input = tempfile::tempdir().expect("tmp");
    let small = write_file(input.path(), "small", &crate::common::data(10 << 10, 1));
    let medium = write_file(input.path(), "medium", &crate::common::data(24 << 20, 2));
    let dir = gp.dir(0);
    let peaks: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (gp, dir) = (&gp, &dir);
                let src = if i % 2 == 0 {
                    small.clone()
                } else {
                    medium.clone()
                };
                s.spawn(move || {
                    peak_rss_kib(
                        gp,
                        &format!("backup_data $C {}/stream{i}", dir.display()),
                        &src,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for (i, kib) in peaks.iter().enumerate() {
        let carried = if i % 2 == 0 { 10 << 10 } else { 24 << 20 };
        let bound = (2 * carried + (64 << 20)) / 1024;
        eprintln!("stream {i}: {} bytes, peak RSS {} MiB", carried, kib / 1024);
        assert!(*kib <= bound, "stream {i}: peak {kib} KiB > {bound} KiB");
    }
    for i in 0..8 {
        let want = if i % 2 == 0 { 10 << 10 } else { 24 << 20 };
        let got = gp.ok(
            &format!("restore_data $C {}/stream{i}", dir.display()),
            None,
        );
        assert_eq!(got.len(), want);
    }
}

#[test]
fn a_filtered_restore_with_restore_subset_on_reads_exactly_its_ranges() {
    // gprestore calls restore_data_subset only when the plugin config says restore_subset: "on"
    // (gpbackup utils/plugin.go CanRestoreSubset); the helper writes the offsets file as
    // `N s1 e1 s2 e2 …` without a newline.
    let gp = Gp::new(
        "subset",
        "  restore_subset: \"on\"\n  backup_multipart_chunksize: 5MB\n  restore_multipart_chunksize: 5MB\n",
    );
    let dir = gp.dir(0);
    let input = tempfile::tempdir().expect("tmp");
    let data = crate::common::data(12 << 20, 1212);
    let src = write_file(input.path(), "stream", &data);
    let key = format!("{}/gpbackup_0_{}_17000", dir.display(), gp.ts);
    gp.ok(&format!("backup_data $C {key}"), Some(&src));
    let offsets = write_file(
        input.path(),
        "offsets",
        b"3 0 100 6000000 6000100 12000000 12582912",
    );
    let got = gp.ok(
        &format!("restore_data_subset $C {key} {}", offsets.display()),
        None,
    );
    let mut want = data[0..100].to_vec();
    want.extend_from_slice(&data[6_000_000..6_000_100]);
    want.extend_from_slice(&data[12_000_000..12_582_912]);
    assert!(got == want, "{} bytes, want {}", got.len(), want.len());
    // Every other command accepts the option too; a bad value is one clear line.
    gp.ok("list_directory $C", None);
    let bad = Gp::new("subset-bad", "  restore_subset: maybe\n");
    fails(&bad.sh("list_directory $C", None), "restore_subset");
}

#[test]
fn encrypted_streams_files_and_ranges_round_trip() {
    use age::secrecy::ExposeSecret;
    use std::os::unix::fs::PermissionsExt;
    let keys = tempfile::tempdir().expect("keys");
    let id = age::x25519::Identity::generate();
    let to = write_file(
        keys.path(),
        "to.txt",
        format!("{}\n", id.to_public()).as_bytes(),
    );
    let key_file = write_file(
        keys.path(),
        "id.key",
        format!("{}\n", id.to_string().expose_secret()).as_bytes(),
    );
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let gp = Gp::new(
        "age",
        &format!(
            "  backup_multipart_chunksize: 5MB\n  restore_multipart_chunksize: 5MB\n  age_recipients_file: {}\n  age_identity_file: {}\n",
            to.display(),
            key_file.display()
        ),
    );
    // The same folder without keys: sees what is stored, cannot open it.
    let plain = Gp::with_text(
        "age-plain",
        &format!(
            "executablepath: {PLUGIN}\noptions:\n{}",
            garage_options(&gp.folder)
        ),
        gp.folder.clone(),
    );
    let dir = gp.dir(0);
    let input = tempfile::tempdir().expect("tmp");
    let data = crate::common::data(3 * CHUNK + 7, 77);
    let src = write_file(input.path(), "in", &data);
    let key = format!("{}/gpbackup_0_{}_16384", dir.display(), gp.ts);
    gp.ok(&format!("backup_data $C {key}"), Some(&src));
    assert!(gp.ok(&format!("restore_data $C {key}"), None) == data);
    let out = plain.sh(&format!("restore_data $C {key}"), None);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("identity"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // restore_data_subset reads plaintext ranges from the chunks they touch.
    let ranges = [
        (3, 10),
        (CHUNK - 5, CHUNK + 70_000),
        (2 * CHUNK, 3 * CHUNK + 7),
        (0, 1),
    ];
    let mut text = ranges.len().to_string();
    let mut want = Vec::new();
    for (s, e) in ranges {
        text.push_str(&format!(" {s} {e}"));
        want.extend_from_slice(&data[s..e]);
    }
    let offsets = write_file(input.path(), "offsets", text.as_bytes());
    let got = gp.ok(
        &format!("restore_data_subset $C {key} {}", offsets.display()),
        None,
    );
    assert!(
        got == want,
        "subset: {} bytes, want {}",
        got.len(),
        want.len()
    );
    // Files (metadata, TOC) too.
    let meta_dir = gp.dir(-1);
    let body = crate::common::data(CHUNK / 2 + 3, 78);
    let path = write_file(
        &meta_dir,
        &format!("gpbackup_{}_metadata.sql", gp.ts),
        &body,
    );
    gp.ok(&format!("backup_file $C {}", path.display()), None);
    std::fs::remove_file(&path).expect("rm");
    gp.ok(&format!("restore_file $C {}", path.display()), None);
    assert_eq!(std::fs::read(&path).expect("restored"), body);
    // A plaintext object in the same folder (written without keys, or swapped in): read as
    // what it is by default (a mixed bucket), refused with age_require_encrypted: on.
    let swapped = format!("{}/gpbackup_0_{}_16385", dir.display(), gp.ts);
    plain.ok(&format!("backup_data $C {swapped}"), Some(&src));
    assert!(gp.ok(&format!("restore_data $C {swapped}"), None) == data);
    let strict = Gp::with_text(
        "age-strict",
        &format!(
            "{}  age_require_encrypted: on\n",
            std::fs::read_to_string(&gp.cfg).expect("cfg")
        ),
        gp.folder.clone(),
    );
    fails(
        &strict.sh(&format!("restore_data $C {swapped}"), None),
        "age_require_encrypted",
    );
    assert!(strict.ok(&format!("restore_data $C {key}"), None) == data);
    let bad = Gp::new("age-require-alone", "  age_require_encrypted: on\n");
    fails(
        &bad.sh("list_directory $C", None),
        "age_require_encrypted needs age_recipients_file",
    );
}
