//! `barmans3-dplcompat` driven as Bareos' storage daemon drives its dplcompat program
//! ([`daemon`]), against the suite's Garage: option discovery with an empty environment; a
//! volume labelled, written as chunks by four upload threads while the main thread lists and
//! stats, appended to by rewriting its last chunk, read back until `stat` fails, truncated by
//! removing every part; the watchdog of `program_timeout`; the peer tool (s3cmd 2.4.0, driven
//! as Bareos' s3cmd wrapper drives it) reading our parts and we theirs; `volume get|ls` on the
//! same volumes, and our manifest set aside once the daemon changed a volume; bad input; faults
//! injected between the program and the store; a program killed mid-upload.

mod daemon;
mod failures;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::site::Site;
use crate::common::{data, garage, garage_keys, unique};
use daemon::{Daemon, Outcome, Pace, daemon_parses_list};

/// The daemon's smallest chunk (any `chunksize` at or below 10 MiB becomes this).
const CHUNK: usize = 10 << 20;

/// A device on the test Garage: a barmans3 config (in a scratch site) and a fresh prefix.
struct Device {
    site: Site,
    prefix: String,
    daemon: Daemon,
}

impl Device {
    fn new(name: &str, timeout: Duration) -> Device {
        Self::on(name, timeout, &garage().yaml("unused"))
    }

    /// A device whose config is `yaml` (its `prefix:` is replaced by the device's `prefix`).
    fn on(name: &str, timeout: Duration, yaml: &str) -> Device {
        let prefix = unique(name);
        let site = Site::new(yaml);
        let env = vec![
            ("config".to_string(), site.cfg.display().to_string()),
            ("prefix".to_string(), prefix.clone()),
        ];
        Device {
            site,
            prefix,
            daemon: Daemon { env, timeout },
        }
    }

    fn run(&self, args: &[&str]) -> Outcome {
        self.daemon.run(args)
    }

    fn keys(&self) -> BTreeSet<String> {
        garage_keys(&format!("{}/", self.prefix))
    }

    /// `stat` then `download`, as the device reads a chunk; `None` when `stat` fails.
    fn read_part(&self, vol: &str, part: &str) -> Option<Vec<u8>> {
        let st = self.run(&["stat", vol, part]);
        if st.status != 0 {
            return None;
        }
        let size: usize = strict_size(&st.out);
        let dl = self.run(&["download", vol, part]);
        assert_eq!(dl.ok("download").len(), size, "download of {vol}/{part}");
        Some(dl.out)
    }

    fn list(&self, vol: &str) -> Vec<(String, u64)> {
        let out = self.run(&["list", vol]);
        strict_list(out.ok("list"))
    }
}

/// `stat`'s output, stricter than the daemon's `sscanf("%zu\n")`: digits and one newline.
fn strict_size(out: &[u8]) -> usize {
    let text = std::str::from_utf8(out).expect("utf8");
    let digits = text.strip_suffix('\n').expect("newline");
    assert!(
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
        "stat printed {text:?}"
    );
    digits.parse().expect("size")
}

/// `list`'s output, stricter than the daemon: `NAME SIZE` lines of four-digit names; the
/// daemon's own parser must agree on every non-empty output.
fn strict_list(out: &[u8]) -> Vec<(String, u64)> {
    let text = std::str::from_utf8(out).expect("utf8");
    let parts: Vec<(String, u64)> = text
        .lines()
        .map(|l| {
            let (name, size) = l.split_once(' ').expect("two fields");
            assert!(
                name.len() == 4 && name.bytes().all(|b| b.is_ascii_digit()),
                "{l:?}"
            );
            (name.to_string(), size.parse().expect("size"))
        })
        .collect();
    if !parts.is_empty() {
        assert_eq!(
            daemon_parses_list(out),
            Some(parts.clone()),
            "daemon's parser"
        );
    }
    parts
}

#[test]
fn options_answer_with_an_empty_environment_and_name_no_option_of_the_daemons() {
    let bare = Daemon {
        env: vec![],
        timeout: Duration::from_secs(30),
    };
    let out = bare.run(&["options"]);
    let names = String::from_utf8(out.ok("options").to_vec()).expect("utf8");
    assert!(names.ends_with('\n'));
    let key = |n: &str| -> String {
        n.chars()
            .filter(|c| !matches!(c, '_' | ' ' | '\t' | '\n'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let daemons = [
        "program",
        "programtimeout",
        "chunksize",
        "iothreads",
        "ioslots",
        "retries",
    ];
    for n in names.lines() {
        assert!(
            n.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{n:?} is not an environment name"
        );
        assert!(!daemons.contains(&key(n).as_str()), "{n} is the daemon's");
    }
    for wanted in ["config", "prefix", "storage_class", "bucket"] {
        assert!(names.lines().any(|n| n == wanted), "{wanted}: {names}");
    }
    // The daemon's own environment may hold anything: the answer stays the same.
    let junk = [
        ("RUST_LOG", "trace"),
        ("config", "/nonexistent.yaml"),
        ("timeout", "nonsense"),
        ("BARMANS3_CONFIG", "/nonexistent"),
    ];
    let again = bare.run_with(&["options"], None, Pace::default(), &junk);
    assert_eq!(again.ok("options with junk"), names.as_bytes());
}

/// One chunk of the volume's source.
fn chunk_of(src: &[u8], n: usize) -> &[u8] {
    &src[(n * CHUNK).min(src.len())..((n + 1) * CHUNK).min(src.len())]
}

/// Writes `src` as the device does with `iothreads=4`: four threads take chunk numbers, each
/// runs `stat` (the part must be absent) then `upload`, while this thread lists and stats the
/// volume and checks that a part is only ever seen whole.
fn write_with_four_threads(dev: &Device, vol: &str, src: &[u8]) {
    let count = src.len().div_ceil(CHUNK);
    let next = AtomicUsize::new(0);
    let sizes: BTreeSet<u64> = (0..count).map(|n| chunk_of(src, n).len() as u64).collect();
    let seen = Mutex::new(0usize);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    loop {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        if n >= count {
                            return;
                        }
                        let part = format!("{n:04}");
                        let st = dev.run(&["stat", vol, &part]);
                        assert_ne!(st.status, 0, "stat of a part not yet written");
                        dev.daemon.upload(vol, &part, chunk_of(src, n)).ok("upload");
                    }
                })
            })
            .collect();
        while workers.iter().any(|w| !w.is_finished()) {
            for (name, size) in dev.list(vol) {
                assert!(
                    sizes.contains(&size),
                    "{name} listed with {size} bytes: a partial part"
                );
            }
            let st = dev.run(&["stat", vol, "0000"]);
            if st.status == 0 {
                assert_eq!(strict_size(&st.out), CHUNK, "0000 seen partial");
            }
            *seen.lock().expect("seen") += 1;
        }
        for w in workers {
            w.join().expect("upload thread");
        }
    });
    assert!(*seen.lock().expect("seen") > 0);
}

/// Reads the volume as a restore does: `stat N` + `download N` until `stat` fails.
fn read_volume(dev: &Device, vol: &str) -> (usize, Vec<u8>) {
    let mut all = Vec::new();
    for n in 0.. {
        match dev.read_part(vol, &format!("{n:04}")) {
            Some(bytes) => all.extend_from_slice(&bytes),
            None => return (n, all),
        }
    }
    unreachable!()
}

#[test]
fn a_volume_labelled_written_appended_read_and_truncated_as_the_daemon_does() {
    let dev = Device::new("dpl-volume", Duration::from_secs(30));
    let vol = "Vol 1";
    // Label: the first chunk is absent and the volume lists empty.
    assert_ne!(dev.run(&["stat", vol, "0000"]).status, 0);
    assert!(dev.list(vol).is_empty());

    let mut src = data(CHUNK * 7 / 2, 27);
    write_with_four_threads(&dev, vol, &src);
    let listed = dev.list(vol);
    assert_eq!(listed.len(), 4);
    assert_eq!(listed.iter().map(|p| p.1).sum::<u64>(), src.len() as u64);
    for (name, size) in &listed {
        assert_eq!(
            strict_size(dev.run(&["stat", vol, name]).ok("stat")) as u64,
            *size
        );
    }

    // Append: the last part is read, filled up and uploaded again under its name, then a new
    // part follows.
    let end: u64 = dev.list(vol).iter().map(|p| p.1).sum();
    let last = format!("{:04}", end as usize / CHUNK);
    let mut buf = dev.read_part(vol, &last).expect("last part");
    let more = data(CHUNK * 3 / 4, 28);
    let fill = CHUNK - buf.len();
    buf.extend_from_slice(&more[..fill]);
    dev.daemon.upload(vol, &last, &buf).ok("re-upload");
    dev.daemon.upload(vol, "0004", &more[fill..]).ok("new part");
    src.extend_from_slice(&more);
    let listed = dev.list(vol);
    for (name, size) in &listed {
        let st = dev.run(&["stat", vol, name]);
        assert_eq!(strict_size(st.ok("stat")) as u64, *size, "stat {name}");
    }
    let sizes: Vec<u64> = listed.iter().map(|p| p.1).collect();
    assert_eq!(
        sizes,
        [
            CHUNK as u64,
            CHUNK as u64,
            CHUNK as u64,
            CHUNK as u64,
            (more.len() - fill) as u64
        ]
    );

    let (count, back) = read_volume(&dev, vol);
    assert_eq!(count, 5, "the first failing stat ends the volume");
    assert!(
        back == src,
        "the volume read back differs from what was written"
    );
    assert_ne!(dev.run(&["download", vol, "0005"]).status, 0);

    // Whatever the daemon's environment says about logging, the data stays the data.
    let loud = [("RUST_LOG", "trace")];
    let p = Pace::default();
    let st = dev.daemon.run_with(&["stat", vol, "0004"], None, p, &loud);
    assert_eq!(st.ok("stat"), format!("{}\n", more.len() - fill).as_bytes());
    let ls = dev.daemon.run_with(&["list", vol], None, p, &loud);
    assert_eq!(strict_list(ls.ok("list")).len(), 5);
    let dl = dev
        .daemon
        .run_with(&["download", vol, "0004"], None, p, &loud);
    assert!(dl.ok("download") == &more[fill..]);

    // barmans3's own volume commands read what the daemon wrote.
    let cfg_prefix = format!("--store=s3://{}/{}", garage().bucket(), dev.prefix);
    let got = dev.site.run(&[&cfg_prefix, "volume", "get", vol, "-"], &[]);
    assert!(
        got.status.success(),
        "volume get: {}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(got.stdout == src, "volume get reads the daemon's volume");
    let ls = dev.site.run(&[&cfg_prefix, "volume", "ls"], &[]);
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(text.contains(vol) && text.contains("no manifest"), "{text}");
    let st = dev.site.run(&[&cfg_prefix, "volume", "status", vol], &[]);
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(
        st.status.success() && text.contains(&format!("5 chunks, {} bytes", src.len())),
        "volume status of a volume the daemon wrote: {text}{}",
        String::from_utf8_lossy(&st.stderr)
    );

    // Relabel: every four-digit part removed in order; the volume is then empty.
    for (name, _) in dev.list(vol) {
        dev.run(&["remove", vol, &name]).ok("remove");
    }
    assert!(dev.list(vol).is_empty());
    assert_ne!(dev.run(&["stat", vol, "0000"]).status, 0);
    assert_ne!(
        dev.run(&["remove", vol, "0000"]).status,
        0,
        "remove of a missing part"
    );
    assert!(dev.keys().is_empty(), "{:?}", dev.keys());
}

#[test]
fn volume_names_are_kept_verbatim_in_the_keys() {
    let dev = Device::new("dpl-names", Duration::from_secs(30));
    let long = format!("L{}", "x".repeat(126));
    let names = ["Vol 1", "a:b.c-d_e", "pool/Full-0001", long.as_str()];
    for (i, vol) in names.iter().enumerate() {
        let body = data(1000 + i, i as u64);
        dev.daemon.upload(vol, "0000", &body).ok(vol);
        assert_eq!(dev.read_part(vol, "0000").expect("part"), body);
    }
    // A volume is not a prefix of another: Full-1 does not list Full-10's parts.
    dev.daemon.upload("Full-10", "0000", b"ten").ok("Full-10");
    assert!(dev.list("Full-1").is_empty());
    let want: BTreeSet<String> = names
        .iter()
        .chain(&["Full-10"])
        .map(|v| format!("{}/{v}/0000", dev.prefix))
        .collect();
    assert_eq!(dev.keys(), want);
}

/// The path of s3cmd 2.4.0 (scripts/test-deps installs it in a venv).
fn s3cmd() -> PathBuf {
    let p = PathBuf::from("/opt/barmans3-test/s3cmd-venv/bin/s3cmd");
    let ok = std::process::Command::new(&p)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("2.4.0"));
    assert!(
        ok,
        "s3cmd 2.4.0 is missing at {}: install it with scripts/test-deps",
        p.display()
    );
    p
}

/// s3cmd as Bareos' s3cmd wrapper runs it: `--no-progress --config S3CFG OP …`.
struct S3cmd {
    cfg: PathBuf,
    url: String,
}

impl S3cmd {
    fn new(dev: &Device) -> S3cmd {
        let g = garage();
        let host = g.endpoint().trim_start_matches("http://");
        let cfg = dev.site.dir.path().join("s3cfg");
        std::fs::write(
            &cfg,
            format!(
                "[default]\naccess_key = {}\nsecret_key = {}\nhost_base = {host}\nhost_bucket = {host}\nbucket_location = garage\nuse_https = False\nsignature_v2 = False\n",
                g.key_id(),
                g.secret()
            ),
        )
        .expect("s3cfg");
        std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        S3cmd {
            cfg,
            url: format!("s3://{}/{}", g.bucket(), dev.prefix),
        }
    }

    fn run(&self, args: &[&str], input: Option<&[u8]>) -> std::process::Output {
        use std::io::Write;
        let mut child = std::process::Command::new(s3cmd())
            .arg("--no-progress")
            .arg("--config")
            .arg(&self.cfg)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("s3cmd");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(input.unwrap_or_default())
            .expect("feed s3cmd");
        drop(stdin);
        let out = child.wait_with_output().expect("s3cmd");
        assert!(
            out.status.success(),
            "s3cmd {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn put(&self, vol: &str, part: &str, body: &[u8]) {
        self.run(
            &["put", "-", &format!("{}/{vol}/{part}", self.url)],
            Some(body),
        );
    }

    fn get(&self, vol: &str, part: &str) -> Vec<u8> {
        self.run(&["get", &format!("{}/{vol}/{part}", self.url), "-"], None)
            .stdout
    }

    /// The wrapper's `list`: `ls` rows with an all-digit size, the part name cut after the
    /// volume's URL.
    fn list(&self, vol: &str) -> Vec<(String, u64)> {
        let dir = format!("{}/{vol}/", self.url);
        let out = self.run(&["ls", &dir], None);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (_date, _time, size) = (f.next()?, f.next()?, f.next()?);
                let url = l[l.find("s3://")?..].to_string();
                let size = size.parse().ok()?;
                Some((url[dir.len()..].to_string(), size))
            })
            .collect()
    }
}

#[test]
fn parts_cross_between_our_program_and_s3cmd_byte_for_byte() {
    let dev = Device::new("dpl-s3cmd", Duration::from_secs(30));
    let s3 = S3cmd::new(&dev);
    // Ours to theirs: a multipart part (above the config's 5 MiB part size) and a small one.
    let ours = [data(CHUNK, 1), data(4321, 2)];
    for (i, body) in ours.iter().enumerate() {
        dev.daemon
            .upload("Ours 1", &format!("{i:04}"), body)
            .ok("upload");
    }
    assert_eq!(s3.list("Ours 1"), dev.list("Ours 1"));
    for (i, body) in ours.iter().enumerate() {
        assert!(
            s3.get("Ours 1", &format!("{i:04}")) == *body,
            "s3cmd reads part {i}"
        );
    }
    // Theirs to ours: s3cmd streams stdin in 15 MiB parts (multipart above that).
    let theirs = [data(20_000_000, 3), data(743, 4)];
    for (i, body) in theirs.iter().enumerate() {
        s3.put("Theirs", &format!("{i:04}"), body);
    }
    assert_eq!(dev.list("Theirs"), s3.list("Theirs"));
    let (count, back) = read_volume(&dev, "Theirs");
    assert_eq!(count, 2);
    assert!(back == theirs.concat(), "our program reads s3cmd's parts");

    // The wrapper's own device options, only program= changed: the s3cmd configuration is read.
    let switched = Device {
        daemon: Daemon {
            env: vec![
                ("s3cfg".into(), s3.cfg.display().to_string()),
                ("base_url".into(), s3.url.clone()),
                ("s3cmd_prog".into(), s3cmd().display().to_string()),
            ],
            timeout: Duration::from_secs(30),
        },
        prefix: dev.prefix.clone(),
        site: Site::new(""),
    };
    switched.run(&["testconnection"]).ok("testconnection");
    let (count, back) = read_volume(&switched, "Theirs");
    assert!(count == 2 && back == theirs.concat(), "read with the s3cfg");
    let more = data(3000, 7);
    switched
        .daemon
        .upload("Theirs", "0002", &more)
        .ok("upload with the s3cfg");
    assert!(s3.get("Theirs", "0002") == more);
}

#[test]
fn our_manifest_is_forgotten_once_the_daemon_changes_a_volume() {
    let dev = Device::new("dpl-manifest", Duration::from_secs(30));
    let s3 = S3cmd::new(&dev);
    let store = format!("--store=s3://{}/{}", garage().bucket(), dev.prefix);
    let src = data(CHUNK + CHUNK / 2, 5);
    let file = dev.site.dir.path().join("src");
    std::fs::write(&file, &src).expect("src");
    let put = dev.site.run(
        &[&store, "volume", "put", "V", file.to_str().expect("utf8")],
        &[],
    );
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let manifest = format!("{}/V/barmans3.volume.json", dev.prefix);
    assert!(dev.keys().contains(&manifest));
    // The daemon restores what `volume put` wrote, and `list` shows only the chunks.
    assert_eq!(dev.list("V").len(), 2);
    let (count, back) = read_volume(&dev, "V");
    assert!(
        count == 2 && back == src,
        "the program reads volume put's volume"
    );

    // Another program (s3cmd, as Bareos' wrapper) rewrites the last chunk: same size, new bytes.
    let mut changed = src.clone();
    let tail = data(CHUNK / 2, 6);
    changed[CHUNK..].copy_from_slice(&tail);
    s3.put("V", "0001", &tail);
    let got = dev.site.run(&[&store, "volume", "get", "V", "-"], &[]);
    let err = String::from_utf8_lossy(&got.stderr);
    assert!(got.status.success(), "volume get after a rewrite: {err}");
    assert!(
        got.stdout == changed,
        "volume get returns the chunks as they are now"
    );
    assert!(err.contains("no longer describes"), "{err}");
    let ls = dev.site.run(&[&store, "volume", "ls"], &[]);
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(text.contains("manifest out of date"), "{text}");
    let rm = dev.site.run(&[&store, "volume", "rm", "V"], &[]);
    assert!(!rm.status.success(), "rm of a changed volume needs --force");

    // Our program removes the manifest before it changes a part.
    dev.daemon.upload("V", "0001", &tail).ok("upload");
    assert!(!dev.keys().contains(&manifest), "{:?}", dev.keys());
    let got = dev.site.run(&[&store, "volume", "get", "V", "-"], &[]);
    assert!(got.status.success() && got.stdout == changed);
}
