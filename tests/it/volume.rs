//! `volume` on Garage and file://, run through the binary: the droplet chunk layout and a
//! byte-identical get (whole, ranged, to stdout); `--append` rewriting the last chunk; a
//! deleted middle chunk failing the get unless `--allow-truncated`; volumes without our
//! manifest, ours or hand-made as Bareos makes them; the 10 000-chunk limit; a chunk that
//! cannot be stored failing the put with the state Bareos' `status storage` shows, then
//! `--resume` sending only what is missing; a put through a fault-injecting proxy losing no
//! chunk; and a store that ignores checksum headers found out by the checksum probe.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use bytes::Bytes;

use crate::common::faults::{FaultProxy, Quirk};
use crate::common::site::{BIN, Site};
use crate::common::{Backend, data, garage, on_both, small_transfer, unique};
use barmans3::config::Config;
use barmans3::store::Location;
use barmans3::store::{self, ListRequest, join_key};
use barmans3::transfer::Transfer;

const MIB: usize = 1 << 20;

/// A site on one backend, and a view of its bucket for the test's own checks.
pub struct Vt {
    pub site: Site,
    pub prefix: String,
    backend: Backend,
}

impl Vt {
    pub fn new(backend: Backend, name: &str) -> Vt {
        match backend {
            Backend::Local => Vt {
                site: Site::local(),
                prefix: String::new(),
                backend,
            },
            Backend::Garage => {
                let prefix = unique(name);
                Vt {
                    site: Site::new(&garage().yaml(&prefix)),
                    prefix,
                    backend,
                }
            }
        }
    }

    /// Names the checksum mode instead of `auto`, so a test that counts requests or bytes does
    /// not count the one-time probe.
    pub fn pin_checksums(&self) {
        let line = "s3:\n  request_checksum: when_supported\n";
        let text = std::fs::read_to_string(&self.site.cfg).expect("cfg");
        let text = match text.contains("s3:\n") {
            true => text.replacen("s3:\n", line, 1),
            false => format!("{line}{text}"),
        };
        std::fs::write(&self.site.cfg, text).expect("cfg");
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.site.dir.path().join(name)
    }

    /// Writes a local file.
    pub fn file(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.path(name);
        std::fs::write(&p, bytes).expect("write file");
        p.to_str().expect("utf8").to_string()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.site.run(args, &[])
    }

    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out
    }

    /// The test's own engine on the site's bucket (keys are full keys).
    pub async fn transfer(&self) -> Transfer {
        let cfg = match self.backend {
            Backend::Local => Config::for_location(Location::Local {
                root: self.site.dir.path().join("bucket"),
            }),
            Backend::Garage => garage().config(&self.prefix),
        };
        let st = store::open(&cfg.location, &cfg.s3).await.expect("open");
        Transfer::new(st, small_transfer())
    }

    pub fn key(&self, rel: &str) -> String {
        join_key(&self.prefix, rel)
    }

    /// Objects under `<VOL>/`, by name relative to it.
    pub async fn objects(&self, vol: &str) -> BTreeMap<String, u64> {
        let dir = format!("{}/", self.key(vol));
        let req = ListRequest {
            prefix: dir.clone(),
            ..Default::default()
        };
        let t = self.transfer().await;
        t.list_all(&req)
            .await
            .expect("list")
            .into_iter()
            .map(|o| (o.key[dir.len()..].to_string(), o.size))
            .collect()
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_line(out: &Output, n: usize) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().nth(n).unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// The chunks of a volume, without manifest and marker.
fn chunks(objects: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    objects
        .iter()
        .filter(|(k, _)| k.len() == 4)
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

async fn layout_and_identical_get(b: Backend) {
    let v = Vt::new(b, "vol-layout");
    let body = data(25 * MIB, 1);
    let src = v.file("src", &body);
    let out = v.ok(&["--json", "volume", "put", "Full-0001", &src]);
    let report = json_line(&out, 0);
    assert_eq!(report["chunks"], 3);
    assert_eq!(report["total"], 25 * MIB);
    let objects = v.objects("Full-0001").await;
    let m = 10 * MIB as u64;
    let want = [("0000", m), ("0001", m), ("0002", 5 * MIB as u64)];
    let want: Vec<(String, u64)> = want.iter().map(|(k, s)| (k.to_string(), *s)).collect();
    assert_eq!(chunks(&objects), want);
    assert!(objects.contains_key("barmans3.volume.json"), "{objects:?}");
    // Droplet's directory marker on S3; a file:// store has the directory itself.
    assert_eq!(
        objects.contains_key(""),
        matches!(b, Backend::Garage),
        "{objects:?}"
    );

    let dest = v.path("dest");
    v.ok(&["volume", "get", "Full-0001", dest.to_str().expect("utf8")]);
    assert!(std::fs::read(&dest).expect("dest") == body, "file differs");
    let out = v.ok(&["volume", "get", "Full-0001", "-"]);
    assert!(out.stdout == body, "stdout differs");
    // A range across a chunk boundary, to stdout.
    let (off, len) = (10 * MIB - 100, MIB + 200);
    let (o, l) = (off.to_string(), len.to_string());
    let out = v.ok(&[
        "volume",
        "get",
        "Full-0001",
        "-",
        "--offset",
        &o,
        "--length",
        &l,
    ]);
    assert!(out.stdout[..] == body[off..off + len], "range differs");
    let past = (25 * MIB).to_string();
    let out = v.run(&[
        "volume",
        "get",
        "Full-0001",
        "-",
        "--offset",
        &past,
        "--length",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    let out = v.ok(&["volume", "status", "Full-0001"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(": put done at "), "{text}");
    assert!(
        text.ends_with(
            "Backend connection is working.\nInflight chunks: 0\nNo pending IO flush requests.\n"
        ),
        "{text}"
    );
    let out = v.ok(&["volume", "ls"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Full-0001") && text.contains("26214400") && text.contains("complete"),
        "{text}"
    );
}

async fn append_rewrites_the_last_chunk(b: Backend) {
    let v = Vt::new(b, "vol-append");
    let (one, two) = (data(25 * MIB, 2), data(7 * MIB, 3));
    let (a, c) = (v.file("a", &one), v.file("b", &two));
    v.ok(&["volume", "put", "V", &a]);
    let out = v.ok(&["--json", "volume", "put", "V", &c, "--append"]);
    let r = json_line(&out, 0);
    // 0002 rewritten whole (5 + 5 MiB), 0003 new; 0000 and 0001 untouched.
    assert_eq!(
        (r["chunks_sent"].as_u64(), r["chunks_reused"].as_u64()),
        (Some(2), Some(0)),
        "{r}"
    );
    assert_eq!(r["operation"], "append");
    let m = 10 * MIB as u64;
    let sizes: Vec<u64> = chunks(&v.objects("V").await)
        .into_iter()
        .map(|c| c.1)
        .collect();
    assert_eq!(sizes, [m, m, m, 2 * MIB as u64]);
    let out = v.ok(&["volume", "get", "V", "-"]);
    let mut both = one.clone();
    both.extend_from_slice(&two);
    assert!(out.stdout == both, "appended volume differs");
    // A plain put never overwrites an existing volume.
    let out = v.run(&["volume", "put", "V", &a]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
}

async fn a_missing_chunk_fails_the_get(b: Backend) {
    let v = Vt::new(b, "vol-gap");
    let body = data(25 * MIB, 4);
    v.ok(&["volume", "put", "V", &v.file("src", &body)]);
    let t = v.transfer().await;
    t.delete_keys(&[v.key("V/0001")])
        .await
        .expect("delete 0001");
    let dest = v.path("dest");
    let d = dest.to_str().expect("utf8");
    let out = v.run(&["volume", "get", "V", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("chunk 0001 is missing"),
        "{}",
        stderr(&out)
    );
    assert!(!dest.exists(), "nothing written on failure");
    let out = v.ok(&["volume", "get", "V", d, "--allow-truncated"]);
    assert!(stderr(&out).contains("WARN"), "{}", stderr(&out));
    let got = std::fs::read(&dest).expect("dest");
    assert!(
        got.len() == 10 * MIB && got[..] == body[..10 * MIB],
        "the first chunk only"
    );
    // The last chunk gone: no gap, but our manifest says three.
    t.delete_keys(&[v.key("V/0002")])
        .await
        .expect("delete 0002");
    let out = v.run(&["volume", "get", "V", d]);
    assert!(
        stderr(&out).contains("our manifest lists 3 chunks"),
        "{}",
        stderr(&out)
    );
}

async fn volumes_without_our_manifest_are_read(b: Backend) {
    let v = Vt::new(b, "vol-nomanifest");
    let body = data(25 * MIB, 5);
    v.ok(&["volume", "put", "V", &v.file("src", &body)]);
    let t = v.transfer().await;
    t.delete_keys(&[v.key("V/barmans3.volume.json")])
        .await
        .expect("delete");
    let out = v.ok(&["volume", "get", "V", "-"]);
    assert!(out.stdout == body, "readable without manifest");

    // Chunks as Bareos writes them (its chunk size 10 MiB), with droplet's marker on S3.
    let parts = [data(10 * MIB, 6), data(10 * MIB, 7), b"end".to_vec()];
    if matches!(b, Backend::Garage) {
        t.put_bytes(&v.key("Bareos-7/"), Bytes::new(), BTreeMap::new())
            .await
            .expect("marker");
    }
    for (i, p) in parts.iter().enumerate() {
        let key = v.key(&format!("Bareos-7/{i:04}"));
        t.put_bytes(&key, Bytes::from(p.clone()), BTreeMap::new())
            .await
            .expect("chunk");
    }
    let out = v.ok(&["volume", "get", "Bareos-7", "-"]);
    assert!(out.stdout == parts.concat(), "Bareos-made volume differs");
    let out = v.ok(&["volume", "ls"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("Bareos-7 ") && l.contains("no manifest")),
        "{text}"
    );
    // Appending to it takes Bareos' chunk size from 0000 and writes our manifest.
    v.ok(&[
        "volume",
        "put",
        "Bareos-7",
        &v.file("more", b"+more"),
        "--append",
    ]);
    let out = v.ok(&["volume", "get", "Bareos-7", "-"]);
    assert!(
        out.stdout == [parts.concat(), b"+more".to_vec()].concat(),
        "appended"
    );
    let objects = v.objects("Bareos-7").await;
    assert_eq!(objects.get("0002"), Some(&8));
    // rm without our manifest needs --force; then nothing of the volume is left.
    t.delete_keys(&[v.key("Bareos-7/barmans3.volume.json")])
        .await
        .expect("delete");
    let out = v.run(&["volume", "rm", "Bareos-7"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(v.objects("Bareos-7").await.len(), objects.len() - 1);
    v.ok(&["volume", "rm", "Bareos-7", "--force"]);
    assert!(v.objects("Bareos-7").await.is_empty());
}

/// On file:// a directory where chunk 0001's file would go makes its PUT fail for good (on
/// Garage, the fault-proxy test below breaks chunks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_chunk_is_kept_pending_and_resume_sends_only_it() {
    let v = Vt::new(Backend::Local, "vol-resume");
    let body = data(25 * MIB, 8);
    let src = v.file("src", &body);
    let blocker = v.site.dir.path().join("bucket/V/0001/x");
    std::fs::create_dir_all(blocker.parent().expect("dir")).expect("mkdir");
    std::fs::write(&blocker, b"x").expect("blocker");
    let out = v.run(&["volume", "put", "V", &src]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let objects = v.objects("V").await;
    assert!(
        objects.contains_key("0000") && objects.contains_key("0002"),
        "{objects:?}"
    );
    assert!(
        !objects.contains_key("barmans3.volume.json"),
        "no manifest after a failure"
    );

    let out = v.ok(&["volume", "status", "V"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains(": put failed at "), "{text}");
    // The connection line tells whether the last request answered, which is chunk 0001's
    // failure or another chunk's success depending on how the tasks were scheduled.
    assert!(
        [
            "Backend connection is working.",
            "Backend connection is not working."
        ]
        .contains(&lines[1]),
        "{text}"
    );
    assert_eq!(
        lines[2..],
        [
            "Inflight chunks: 0",
            "Pending IO flush requests:",
            "   /V/0001 - 10485760 (try=1)"
        ],
        "{text}"
    );
    let out = v.ok(&["--json", "volume", "status", "V"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("state JSON");
    assert_eq!(s["state"], "failed");

    std::fs::remove_dir_all(blocker.parent().expect("dir")).expect("unblock");
    let out = v.ok(&["--json", "volume", "put", "V", &src, "--resume"]);
    let r = json_line(&out, 0);
    assert_eq!(
        (r["chunks_sent"].as_u64(), r["chunks_reused"].as_u64()),
        (Some(1), Some(2)),
        "{r}"
    );
    let out = v.ok(&["volume", "get", "V", "-"]);
    assert!(out.stdout == body, "resumed volume differs");
    let out = v.ok(&["volume", "status", "V"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("No pending IO flush requests."));
}

on_both!(
    layout_and_identical_get,
    append_rewrites_the_last_chunk,
    a_missing_chunk_fails_the_get,
    volumes_without_our_manifest_are_read,
);

#[test]
fn the_ten_thousand_chunk_limit() {
    let v = Vt::new(Backend::Local, "vol-limit");
    let body = data(10_000 * 1024 + 5, 9);
    let src = v.file("src", &body);
    let small = ["--chunk-size", "1KiB", "--allow-small-chunks"];
    // A file that needs chunk 10000 is refused before anything is sent.
    let mut args = vec!["volume", "put", "V", src.as_str()];
    args.extend(small);
    let out = v.run(&args);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("need more than 10000 chunks")
            && stderr(&out).contains("--chunk-size 10MiB"),
        "{}",
        stderr(&out)
    );
    assert!(!v.site.dir.path().join("bucket/V").exists(), "nothing sent");
    // Below 10 MiB without the hidden override: refused.
    let out = v.run(&["volume", "put", "V", &src, "--chunk-size", "1MiB"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // Stdin: chunks 0000-9999 are stored, then the put fails before chunk 10000, naming a
    // chunk size that fits.
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&v.site.cfg)
        .args(["volume", "put", "V", "-"])
        .args(small)
        .stdin(std::fs::File::open(&src).expect("open"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("10240005 bytes need more than 10000 chunks"),
        "{}",
        stderr(&out)
    );
    let dir = v.site.dir.path().join("bucket/V");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 10_000, "chunks 0000-9999 and no manifest");
    assert!(names.iter().all(|n| n.len() == 4) && names.contains(&"9999".to_string()));
}

#[test]
fn no_chunk_is_lost_to_faults_and_resume_completes() {
    let g = garage();
    let prefix = unique("vol-faults");
    let yaml = |endpoint: &str, attempts: u32| {
        format!(
            "s3:\n  endpoint: {endpoint}\n  region: garage\n  bucket: {}\n  prefix: {prefix}\n  access_key_id: {}\n  secret_access_key: {}\n  concurrency: 4\n  max_attempts: {attempts}\n  connect_timeout: 2s\n  read_timeout: 2s\n",
            g.bucket(),
            g.key_id(),
            g.secret()
        )
    };
    let site = Site::new(&yaml("http://127.0.0.1:9", 1));
    let body = data(25 * MIB, 10);
    let src = site.dir.path().join("src");
    std::fs::write(&src, &body).expect("src");
    let src = src.to_str().expect("utf8");
    let put = |endpoint: &str, attempts: u32, extra: &[&str]| {
        std::fs::write(&site.cfg, format!("{}barman:\n  config: /nonexistent\nstate:\n  dir: {d}/state\n  queue_dir: {d}/queue\n", yaml(endpoint, attempts), d = site.dir.path().display())).expect("cfg");
        let mut args = vec![
            "--json",
            "volume",
            "put",
            "V",
            src,
            "--chunk-size",
            "1MiB",
            "--allow-small-chunks",
        ];
        args.extend_from_slice(extra);
        site.run(&args, &[])
    };
    // A harsh proxy and one attempt per request: the put fails, keeping what it stored.
    let harsh = FaultProxy::start(g.endpoint(), 0.15, 20261128, Duration::from_secs(3));
    let out = put(&harsh.endpoint, 1, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(harsh.counts().1 > 0, "faults were injected");
    let stored = std::fs::read(site.dir.path().join("state/volume/V.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .map_or(0, |s| {
            assert_eq!(s["state"], "failed", "{s}");
            s["chunks_stored"].as_u64().unwrap_or(0)
        });
    // A milder one with retries: --resume completes, reusing every chunk stored before.
    let mild = FaultProxy::start(g.endpoint(), 0.10, 7, Duration::from_secs(3));
    let out = put(&mild.endpoint, 10, &["--resume"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = json_line(&out, 0);
    let (sent, reused) = (
        r["chunks_sent"].as_u64().expect("sent"),
        r["chunks_reused"].as_u64().expect("reused"),
    );
    eprintln!("failed run stored {stored} chunks; the resume sent {sent} and kept {reused}");
    assert_eq!(sent + reused, 25, "{r}");
    assert!(
        reused >= stored,
        "every chunk stored by the failed run is kept: {r}, {stored}"
    );
    // Read back directly from Garage: byte-identical.
    std::fs::write(
        &site.cfg,
        format!(
            "{}barman:\n  config: /nonexistent\nstate:\n  dir: {d}/state\n  queue_dir: {d}/queue\n",
            g.yaml(&prefix),
            d = site.dir.path().display()
        ),
    )
    .expect("cfg");
    let out = site.run(&["volume", "get", "V", "-"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == body, "volume differs after faults");
}

#[test]
fn volume_put_probes_a_store_that_ignores_checksum_headers_and_sends_content_md5() {
    // The store takes CRC32C headers without checking them (or storing the body): only the
    // checksum probe of `s3.request_checksum: auto` finds that out and switches to Content-MD5.
    let g = garage();
    let proxy = FaultProxy::with_quirk(g.endpoint(), Quirk::IgnoreChecksums);
    let prefix = unique("vol-probe");
    let v = Vt {
        site: Site::new(&g.yaml(&prefix).replace(g.endpoint(), &proxy.endpoint)),
        prefix,
        backend: Backend::Garage,
    };
    let body = data(25 * MIB, 14);
    let src = v.file("src", &body);
    let out = v.ok(&["--json", "volume", "put", "V", &src]);
    assert_eq!(json_line(&out, 0)["chunks"], 3);
    assert!(
        !v.site.probed(),
        "the probe found the store does not verify"
    );
    let chunks = chunks(&crate::common::block_on(v.objects("V")));
    assert_eq!(chunks.len(), 3, "every chunk stored: {chunks:?}");
    let out = v.ok(&["volume", "get", "V", "-"]);
    assert!(out.stdout == body, "volume differs");
}
