//! `--request-log` on Garage and file://: droplet's pricing lines summing to the bytes a volume
//! put sent and a get received, HEADs as `DATA;GET;0`; the extended format read back by a CSV
//! parser (odd keys included); only answered successes in the droplet format and failed
//! attempts in the extended one under injected faults; concurrent runs appending to one log
//! leaving whole lines and one header; an unwritable log costing only a warning; and the
//! gpbackup plugin entrance untouched.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::common::faults::FaultProxy;
use crate::common::site::{BIN, Site};
use crate::common::{Backend, data, garage, on_both, unique};
use crate::volume::{Vt, stderr};

const MIB: u64 = 1 << 20;
const HEADER: [&str; 9] = [
    "unix_ms",
    "command",
    "operation",
    "http_status",
    "attempt",
    "bytes_sent",
    "bytes_received",
    "key",
    "duration_ms",
];

/// Droplet lines: (unix time, "TYPE;SUBTYPE", bytes); panics on any other line.
fn droplet_lines(path: &Path) -> Vec<(u64, String, u64)> {
    let text = std::fs::read_to_string(path).expect("read log");
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split(';').collect();
            assert_eq!(f.len(), 4, "{l:?}");
            let kind = format!("{};{}", f[1], f[2]);
            let known = [
                "REQUEST;LIST",
                "DATA;IN",
                "DATA;OUT",
                "DATA;GET",
                "DATA;PUT",
                "DATA;DELETE",
            ];
            assert!(known.contains(&kind.as_str()), "{l:?}");
            (
                f[0].parse().expect("time"),
                kind,
                f[3].parse().expect("bytes"),
            )
        })
        .collect()
}

fn sum(lines: &[(u64, String, u64)], kind: &str) -> u64 {
    lines.iter().filter(|l| l.1 == kind).map(|l| l.2).sum()
}

/// Extended records, checked against the header; panics if the file is not CSV.
fn extended_records(path: &Path) -> Vec<csv::StringRecord> {
    let mut r = csv::Reader::from_path(path).expect("open log");
    assert_eq!(
        r.headers().expect("header").iter().collect::<Vec<_>>(),
        HEADER
    );
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.expect("CSV record")).collect();
    for row in &rows {
        assert_eq!(row.len(), 9, "{row:?}");
        let _: u64 = row[0].parse().expect("unix_ms");
        let _: u16 = row[3].parse().expect("status");
        assert!(row[4].parse::<u32>().expect("attempt") >= 1);
        let _: u64 = row[5].parse().expect("sent");
        let _: u64 = row[6].parse().expect("received");
        let ms: u64 = row[8].parse().expect("duration_ms");
        // No request of these short runs can have lasted longer than the test itself.
        assert!(ms < 600_000, "{row:?}");
    }
    rows
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

async fn droplet_lines_sum_to_the_bytes_moved(b: Backend) {
    let v = Vt::new(b, "reqlog-droplet");
    // The bytes of the volume alone: no one-time checksum probe among them.
    v.pin_checksums();
    let log = v.path("droplet.csv");
    let l = log.to_str().expect("utf8");
    let src = v.file("src", &data(25 * MIB as usize, 1));
    let before = unix_now();
    v.ok(&["--request-log", l, "volume", "put", "V", &src]);
    let lines = droplet_lines(&log);
    let manifest = v.objects("V").await["barmans3.volume.json"];
    assert_eq!(sum(&lines, "DATA;IN"), 26_214_400 + manifest, "{lines:?}");
    // One HEAD per chunk checks it after its PUT.
    let heads = lines.iter().filter(|l| l.1 == "DATA;GET").count();
    assert_eq!(heads, 3, "{lines:?}");
    assert!(lines.iter().all(|l| l.1 != "DATA;GET" || l.2 == 0));
    assert!(lines.iter().any(|l| l.1 == "REQUEST;LIST"));
    assert!(lines.iter().all(|l| (before..=unix_now()).contains(&l.0)));

    // The get appends its lines: the bytes received, manifest included.
    let n = lines.len();
    v.ok(&["--request-log", l, "volume", "get", "V", "-"]);
    let lines = droplet_lines(&log);
    assert_eq!(sum(&lines[n..], "DATA;OUT"), 26_214_400 + manifest);
    assert_eq!(sum(&lines[n..], "DATA;IN"), 0);
}

async fn the_extended_format_is_csv(b: Backend) {
    let v = Vt::new(b, "reqlog-extended");
    let log = v.path("extended.csv");
    let l = log.to_str().expect("utf8");
    let ext = ["--request-log", l, "--request-log-format", "extended"];
    let src = v.file("src", &data(25 * MIB as usize, 2));
    v.ok(&[&ext[..], &["volume", "put", "V", &src]].concat());
    let odd = "odd,\"key\" with, commas";
    v.ok(&[&ext[..], &["store", "put", &src, odd]].concat());
    let out = v.run(&[&ext[..], &["store", "get", "nothing-here", "-"]].concat());
    assert!(!out.status.success());
    let rows = extended_records(&log);
    let dir = v.key("V/");
    let is_chunk = |k: &str| k.strip_prefix(&dir).is_some_and(|n| n.len() == 4);
    let chunk_bytes: u64 = rows
        .iter()
        .filter(|r| &r[2] == "PutObject" && &r[3] == "200" && is_chunk(&r[7]))
        .map(|r| r[5].parse::<u64>().expect("sent"))
        .sum();
    assert_eq!(chunk_bytes, 26_214_400);
    assert!(
        rows.iter()
            .any(|r| &r[1] == "volume put" && &r[2] == "HeadObject")
    );
    // The odd key comes back exactly, and the missing object as a 404.
    let key = v.key(odd);
    let sent: u64 = rows
        .iter()
        .filter(|r| r[7] == *key && &r[1] == "store put")
        .filter(|r| &r[2] == "PutObject" || &r[2] == "UploadPart")
        .map(|r| r[5].parse::<u64>().expect("sent"))
        .sum();
    assert_eq!(sent, 26_214_400, "the odd key's rows carry its bytes");
    assert!(rows.iter().any(|r| &r[1] == "store get" && &r[3] == "404"));
    let ops: BTreeSet<&str> = rows.iter().map(|r| &r[2]).collect();
    let known = [
        "ListObjectsV2",
        "PutObject",
        "HeadObject",
        "GetObject",
        "DeleteObjects",
        "ListMultipartUploads",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
    ];
    assert!(ops.iter().all(|o| known.contains(o)), "{ops:?}");
}

on_both!(
    droplet_lines_sum_to_the_bytes_moved,
    the_extended_format_is_csv
);

#[test]
fn concurrent_runs_leave_whole_lines_and_one_header() {
    let v = Vt::new(Backend::Local, "reqlog-concurrent");
    let src = v.file("src", &data(MIB as usize, 3));
    for format in ["extended", "droplet"] {
        let log = v.path(&format!("{format}.csv"));
        let children: Vec<std::process::Child> = (0..6)
            .map(|i| {
                std::process::Command::new(BIN)
                    .arg("--config")
                    .arg(&v.site.cfg)
                    .args(["--request-log", log.to_str().expect("utf8")])
                    .args(["--request-log-format", format])
                    .args(["volume", "put", &format!("{format}-{i}"), &src])
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn")
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().expect("wait");
            assert!(out.status.success(), "{}", stderr(&out));
        }
        if format == "extended" {
            let text = std::fs::read_to_string(&log).expect("log");
            assert_eq!(text.matches("unix_ms,").count(), 1, "one header:\n{text}");
            let rows = extended_records(&log);
            let chunk_puts = rows
                .iter()
                .filter(|r| &r[2] == "PutObject" && r[7].ends_with("/0000"))
                .count();
            assert_eq!(chunk_puts, 6, "{rows:?}");
        } else {
            let lines = droplet_lines(&log);
            let chunk_ins = lines
                .iter()
                .filter(|l| l.1 == "DATA;IN" && l.2 == MIB)
                .count();
            assert_eq!(chunk_ins, 6, "{lines:?}");
        }
    }
}

#[test]
fn under_faults_droplet_logs_successes_and_extended_logs_every_answer() {
    let g = garage();
    let proxy = FaultProxy::start(g.endpoint(), 0.2, 20261129, Duration::from_secs(3));
    let prefix = unique("reqlog-faults");
    // An explicit checksum mode: the lines counted are the volumes' alone, no one-time probe.
    let site = Site::new(&format!(
        "s3:\n  endpoint: {}\n  region: garage\n  bucket: {}\n  prefix: {prefix}\n  access_key_id: {}\n  secret_access_key: {}\n  concurrency: 4\n  max_attempts: 10\n  connect_timeout: 2s\n  read_timeout: 2s\n  request_checksum: when_supported\n",
        proxy.endpoint,
        g.bucket(),
        g.key_id(),
        g.secret()
    ));
    let src = site.dir.path().join("src");
    std::fs::write(&src, data(25 * MIB as usize, 4)).expect("src");
    let src = src.to_str().expect("utf8");
    let small = ["--chunk-size", "1MiB", "--allow-small-chunks"];
    let (droplet, extended) = (site.dir.path().join("d.csv"), site.dir.path().join("e.csv"));
    for (vol, log, format) in [("V1", &droplet, "droplet"), ("V2", &extended, "extended")] {
        let l = log.to_str().expect("utf8");
        let mut args = vec!["--request-log", l, "--request-log-format", format];
        args.extend(["volume", "put", vol, src]);
        args.extend(small);
        let out = site.run(&args, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(proxy.counts().1 > 0, "faults were injected");
    let lines = droplet_lines(&droplet);
    let ins: Vec<u64> = lines
        .iter()
        .filter(|l| l.1 == "DATA;IN")
        .map(|l| l.2)
        .collect();
    // 25 chunks of 1 MiB, each logged once however often it was tried, and the manifest.
    assert_eq!(ins.iter().filter(|&&n| n == MIB).count(), 25, "{ins:?}");
    assert_eq!(
        ins.iter().filter(|&&n| n != MIB && n != 0).count(),
        1,
        "{ins:?}"
    );
    let rows = extended_records(&extended);
    let failed = rows.iter().filter(|r| r[3].starts_with('5')).count();
    let repeats = rows.iter().filter(|r| &r[4] != "1").count();
    assert!(
        failed > 0 && repeats > 0,
        "{failed} failed answers, {repeats} repeats"
    );
    let stored_chunks = rows
        .iter()
        .filter(|r| &r[2] == "PutObject" && r[3].starts_with('2') && r[5] == *"1048576")
        .count();
    assert_eq!(stored_chunks, 25);
}

#[test]
fn an_unwritable_log_is_a_warning_and_the_plugin_is_untouched() {
    let site = Site::local();
    let bad = site.dir.path().join("no/such/dir/log.csv");
    let out = site.run(
        &["--request-log", bad.to_str().expect("utf8"), "store", "ls"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("request log") && stderr(&out).contains("WARN"),
        "{}",
        stderr(&out)
    );

    let log = site.dir.path().join("plugin.csv");
    let plain = std::process::Command::new(BIN)
        .args(["gp-plugin", "plugin_api_version"])
        .output()
        .expect("plugin");
    let logged = std::process::Command::new(BIN)
        .args([
            "--request-log",
            log.to_str().expect("utf8"),
            "gp-plugin",
            "plugin_api_version",
        ])
        .output()
        .expect("plugin");
    assert!(plain.status.success() && logged.status.success());
    assert_eq!(plain.stdout, logged.stdout);
    assert!(
        !log.exists(),
        "the plugin's own command line decides what it does"
    );
}

/// Runs barmans3 on `site` and waits at most `bound` for it: a run that would block forever
/// (on a FIFO nobody reads) fails the test instead of hanging it.
fn run_bounded(site: &Site, args: &[&str], bound: Duration) -> std::process::Output {
    let mut child = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&site.cfg)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + bound;
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} still running after {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// The effective uid of this process.
fn euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("Uid: line")
}

/// A request log where others can write (`/tmp`) is opened only if it is this user's (or
/// root's) regular file: a symbolic link is not followed (its target is left as it was), a
/// FIFO never holds the run (with no reader, or with one, which gets nothing), another user's
/// file is not written. Each costs exactly one warning line, and the run succeeds.
#[test]
fn a_log_that_is_not_our_own_regular_file_costs_one_warning_and_writes_nothing() {
    assert_eq!(
        euid(),
        0,
        "this test gives a file to another user and runs as root, as a cron job would: run it as root (CI does)"
    );
    let site = Site::local();
    let d = site.dir.path();
    let victim = d.join("precious");
    std::fs::write(&victim, b"root's own file\n").expect("victim");
    let link = d.join("link.csv");
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");
    let fifo = d.join("fifo.csv");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.expect("mkfifo").success());
    let theirs = d.join("theirs.csv");
    std::fs::write(&theirs, b"").expect("theirs");
    std::os::unix::fs::chown(&theirs, Some(4242), Some(4242)).expect("chown");
    std::fs::write(d.join("src"), b"some bytes").expect("src");
    let src = d.join("src");
    let src = src.to_str().expect("utf8");

    let check = |log: &Path, why: &str| {
        let l = log.to_str().expect("utf8");
        let args = ["--request-log", l, "--request-log-format", "extended"];
        let args = [&args[..], &["store", "put", src, "k"]].concat();
        let out = run_bounded(&site, &args, Duration::from_secs(60));
        let err = stderr(&out);
        assert!(out.status.success(), "{log:?}: {err}");
        let warnings: Vec<&str> = err.lines().filter(|x| x.contains("request log")).collect();
        assert_eq!(warnings.len(), 1, "{log:?}: {err}");
        assert!(
            warnings[0].contains("WARN") && warnings[0].contains(why),
            "{log:?}: {err}"
        );
    };
    check(&link, "symbolic link");
    check(&fifo, "FIFO");
    check(&theirs, "owned by uid 4242");
    assert_eq!(
        std::fs::read(&victim).expect("victim"),
        b"root's own file\n"
    );
    assert!(std::fs::symlink_metadata(&link).expect("link").is_symlink());
    assert_eq!(std::fs::metadata(&theirs).expect("theirs").len(), 0);

    // With a reader waiting on the FIFO, the open succeeds, and what it opened is refused.
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("reader");
    check(&fifo, "not a regular file");
    let mut got = Vec::new();
    let _ = reader.read_to_end(&mut got);
    assert!(got.is_empty(), "the FIFO's reader got {got:?}");
}
