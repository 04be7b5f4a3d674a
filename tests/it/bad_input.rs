//! One table of bad input for every entry point: configuration files, command lines, Barman hook
//! environments, gpbackup plugin calls and hostile bucket content. Each case states its exit
//! code and a fragment of its message, and is checked to have written and deleted nothing:
//! neither in the bucket (every key, size and ETag under the prefix) nor on disk (every path,
//! size and mtime under the site), apart from the one effect a case may name.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::site::{BIN, PLUGIN, Site, hook_env, make_archive, wal_name, write_backup};
use barmans3::barman::manifest::{Entry, Manifest};
use barmans3::checksum;
use bytes::Bytes;

const GOOD_ID: &str = "20261122T010000";

/// How a case is run.
enum Call {
    /// barmans3 with the site's config and these arguments and extra environment.
    Barmans3(Vec<String>, Vec<(&'static str, String)>),
    /// barmans3 with a config file of this text and mode (written fresh) and these arguments.
    WithConfig(String, u32, Vec<String>),
    /// gpbackup_s3_plugin with these arguments (`{cfg}` is the plugin config, `{bad}` a config
    /// of the case's own text).
    Plugin(Vec<String>, Option<String>),
}

struct Case {
    name: &'static str,
    call: Call,
    code: i32,
    fragment: &'static str,
    /// A path under the site that this case is expected to create (its only effect).
    creates: Option<&'static str>,
    /// A directory under the site whose files this case may change (a run recording its own
    /// failure for monitoring), and a fragment the changed files must hold.
    records: Option<(&'static str, &'static str)>,
}

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn barmans3(a: &str) -> Call {
    Call::Barmans3(args(a), Vec::new())
}

fn hook(extra: &[(&'static str, &'static str)]) -> Call {
    let env = hook_env("20261122T070000", "DONE", extra)
        .into_iter()
        .filter(|(_, v)| *v != "<unset>")
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    Call::Barmans3(args("queue-add"), env)
}

fn case(name: &'static str, call: Call, code: i32, fragment: &'static str) -> Case {
    Case {
        name,
        call,
        code,
        fragment,
        creates: None,
        records: None,
    }
}

/// Every key under `prefix` with its size and ETag.
fn bucket_snapshot(prefix: &str) -> BTreeMap<String, (u64, Option<String>)> {
    crate::common::block_on(async {
        let t = crate::common::garage_transfer().await;
        crate::common::list_garage(&t, prefix)
            .await
            .into_iter()
            .map(|o| (o.key, (o.size, o.etag)))
            .collect()
    })
}

/// Every path under `root` with its size and mtime, skipping the plugin's log directory.
fn disk_snapshot(root: &Path) -> BTreeMap<PathBuf, (u64, i128)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("ls") {
            let p = e.expect("entry").path();
            if p.ends_with("gpAdminLogs") {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).expect("stat");
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128);
            if m.is_dir() {
                stack.push(p.clone());
                out.insert(p, (0, 0));
            } else {
                out.insert(p, (m.len(), mtime));
            }
        }
    }
    out
}

/// Puts a backup under `id` whose manifest holds `entries` and whose objects are `files`.
fn put_backup(prefix: &str, id: &str, entries: Vec<Entry>, files: &[(&str, Vec<u8>)], info: bool) {
    let info = info.then_some("status=DONE\nbegin_wal=000000010000000000000003\n");
    put_backup_with(prefix, id, entries, files, info);
}

/// [`put_backup`] with this backup.info (none when `None`).
fn put_backup_with(
    prefix: &str,
    id: &str,
    entries: Vec<Entry>,
    files: &[(&str, Vec<u8>)],
    info: Option<&str>,
) {
    let m = Manifest {
        version: 1,
        server: "pg".into(),
        backup_id: id.into(),
        created_at: 0,
        total_bytes: files.iter().map(|f| f.1.len() as u64).sum(),
        entries,
    };
    crate::common::block_on(async {
        let t = crate::common::garage_transfer().await;
        let key = |rel: &str| format!("{prefix}/pg/base/{id}/{rel}");
        for (rel, body) in files {
            t.put_bytes(&key(rel), Bytes::from(body.clone()), BTreeMap::new())
                .await
                .expect("put file");
        }
        let json = serde_json::to_vec(&m).expect("manifest");
        t.put_bytes(
            &key("barmans3.manifest"),
            Bytes::from(json),
            BTreeMap::new(),
        )
        .await
        .expect("put manifest");
        if let Some(info) = info {
            t.put_bytes(
                &key("backup.info"),
                Bytes::from(info.as_bytes().to_vec()),
                BTreeMap::new(),
            )
            .await
            .expect("put info");
        }
    });
}

fn file(path: &str, body: &[u8]) -> Entry {
    Entry::File {
        path: path.into(),
        raw: None,
        size: body.len() as u64,
        mode: 0o600,
        crc32c: format!("{:08x}", checksum::crc32c(body)),
        mtime_ns: None,
        ciphertext: None,
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn dir(path: &str) -> Entry {
    Entry::Dir {
        path: path.into(),
        raw: None,
        mode: 0o700,
    }
}

/// A synced site, a plugin config and hostile content in the bucket.
struct Fixture {
    site: Site,
    prefix: String,
    plugin_cfg: PathBuf,
    good_yaml: String,
}

fn fixture() -> Fixture {
    let g = crate::common::garage();
    let prefix = crate::common::unique("bad");
    let good_yaml = g.yaml(&prefix);
    let site = Site::new(&good_yaml);
    write_backup(&site, GOOD_ID, "DONE");
    let data = site
        .dir
        .path()
        .join("barman/pg/base")
        .join(GOOD_ID)
        .join("data");
    std::fs::write(data.join("big"), crate::common::data(6 << 20, 1)).expect("big");
    site.queue(GOOD_ID, "DONE");
    make_archive(&site.wals(), 1, 3);
    for a in [&["base-sync"][..], &["wal-sync", "pg"][..]] {
        let out = site.run(a, &[]);
        assert!(
            out.status.success(),
            "{a:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Hostile backups: paths escaping the restore directory, a truncated object, a checksum
    // mismatch, and one without backup.info.
    let body = crate::common::data(100_000, 2);
    // A data directory PostgreSQL could start from: PG_VERSION and pg_control besides data/f.
    let version = b"15\n".to_vec();
    let good = |id| {
        (
            vec![
                dir("data"),
                dir("data/global"),
                file("data/PG_VERSION", &version),
                file("data/f", &body),
                file("data/global/pg_control", &version),
            ],
            vec![
                ("data/PG_VERSION", version.clone()),
                ("data/f", body.clone()),
                ("data/global/pg_control", version.clone()),
            ],
            id,
        )
    };
    // Every object as the manifest says, but data/f's replaced.
    let with_f = |f: Vec<u8>| {
        vec![
            ("data/PG_VERSION", version.clone()),
            ("data/f", f),
            ("data/global/pg_control", version.clone()),
        ]
    };
    let (mut e, f, _) = good("");
    e.push(file("data/../../escaped", b"x"));
    put_backup(&prefix, "20261122T020000", e, &f, true);
    let (mut e, f, _) = good("");
    e.push(file("/tmp/barmans3-absolute", b"x"));
    put_backup(&prefix, "20261122T030000", e, &f, true);
    let (e, _, _) = good("");
    put_backup(
        &prefix,
        "20261122T040000",
        e,
        &with_f(body[..50_000].to_vec()),
        true,
    );
    let (e, _, _) = good("");
    let mut flipped = body.clone();
    flipped[4242] ^= 0x40;
    put_backup(&prefix, "20261122T050000", e, &with_f(flipped), true);
    let (e, f, _) = good("");
    put_backup(&prefix, "20261122T060000", e, &f, false);

    // A WAL that is in the bucket with other bytes than the local one.
    let conflict = wal_name(4);
    crate::common::block_on(async {
        crate::common::garage_transfer()
            .await
            .put_bytes(
                &format!("{prefix}/pg/wals/{}/{conflict}", &conflict[..16]),
                Bytes::from_static(b"other bytes"),
                BTreeMap::new(),
            )
            .await
            .expect("put wal");
    });
    make_archive(&site.wals(), 4, 1);
    // WAL 5: the same size as the local one, other bytes.
    let same_size = wal_name(5);
    crate::common::block_on(async {
        crate::common::garage_transfer()
            .await
            .put_bytes(
                &format!("{prefix}/pg/wals/{}/{same_size}", &same_size[..16]),
                Bytes::from(vec![b'X'; same_size.len()]),
                BTreeMap::new(),
            )
            .await
            .expect("put wal");
    });
    make_archive(&site.wals(), 5, 1);
    // WAL 6: the bucket holds the first half of the local file, which no run of ours shipped
    // (no ledger entry): a prefix, but not provably our own, so never replaced.
    make_archive(&site.wals(), 6, 1);
    let grown = wal_name(6);
    let local = std::fs::read(site.wals().join(&grown[..16]).join(&grown)).expect("wal 6");
    crate::common::block_on(async {
        crate::common::garage_transfer()
            .await
            .put_bytes(
                &format!("{prefix}/pg/wals/{}/{grown}", &grown[..16]),
                Bytes::from(local[..local.len() / 2].to_vec()),
                BTreeMap::new(),
            )
            .await
            .expect("put wal");
    });
    // wal-restore's hostile objects: segment 7 only as a closed partial with segment 8 behind
    // it (a gap), and segment 10 a zstd bomb; a data directory whose pg_control (16 MiB
    // segments) bounds the decoder.
    crate::common::block_on(async {
        let t = crate::common::garage_transfer().await;
        let key = |n: &str| format!("{prefix}/pg/wals/{}/{n}", &n[..16]);
        let bomb =
            zstd::encode_all(std::io::Read::take(std::io::repeat(0), 64 << 20), 19).expect("bomb");
        for (k, body) in [
            (
                key(&format!("{}.partial", wal_name(7))),
                Bytes::from(vec![0u8; 100]),
            ),
            (key(&wal_name(8)), Bytes::from(vec![0u8; 100])),
            (key(&wal_name(10)), Bytes::from(bomb)),
        ] {
            t.put_bytes(&k, body, BTreeMap::new())
                .await
                .expect("put wal");
        }
    });
    let pgc = site.dir.path().join("pgc");
    std::fs::create_dir_all(pgc.join("global")).expect("pgc");
    std::fs::create_dir_all(pgc.join("pg_wal")).expect("pgc");
    std::fs::copy(
        crate::common::repo().join("tests/fixtures/pg_control/pg15-16MiB"),
        pgc.join("global/pg_control"),
    )
    .expect("pg_control");

    // Links that lead outside DEST, an entry under a link, names that collide.
    let outside = site.dir.path().join("outside");
    let link = |path: &str, target: &str| Entry::Symlink {
        path: path.into(),
        raw: None,
        target: target.into(),
    };
    let (mut e, f, _) = good("");
    e.push(link("data/esc", &outside.display().to_string()));
    e.push(link("data/esc/planted", "/etc/shadow"));
    put_backup(&prefix, "20261122T130000", e, &f, true);
    let (mut e, f, _) = good("");
    e.push(link("data/pg_hba.conf", "/etc/passwd"));
    put_backup(&prefix, "20261122T140000", e, &f, true);
    let (mut e, f, _) = good("");
    e.push(dir("16386"));
    e.push(link("data/pg_tblspc/16386", "/srv/tbs"));
    e.push(file("data/pg_tblspc/16386/planted", b"x"));
    put_backup(&prefix, "20261122T150000", e, &f, true);
    let (mut e, f, _) = good("");
    e.push(Entry::Dir {
        path: "data/caf%E9".into(),
        raw: Some(base64_of(b"data/caf\xe9")),
        mode: 0o700,
    });
    e.push(dir("data/caf%E9"));
    put_backup(&prefix, "20261122T160000", e, &f, true);

    // Incremental backups (PostgreSQL 17+) the bucket misdescribes: one whose backup.info
    // lost parent_backup_id (its data says incremental), one whose parent is not in the bucket.
    let (mut e, mut f, _) = good("");
    e.push(file("data/base/5/INCREMENTAL.16384", b"inc"));
    f.push(("data/base/5/INCREMENTAL.16384", b"inc".to_vec()));
    put_backup(&prefix, "20261122T170000", e, &f, true);
    let (e, f, _) = good("");
    put_backup_with(
        &prefix,
        "20261122T180000",
        e,
        &f,
        Some("status=DONE\nbegin_wal=000000010000000000000003\nparent_backup_id=20261122T000001\n"),
    );

    put_cloud_rows(&prefix, &outside);

    let plugin_cfg = site.dir.path().join("gp.yaml");
    std::fs::write(
        &plugin_cfg,
        format!(
            "executablepath: {PLUGIN}\noptions:\n  endpoint: {}\n  region: garage\n  aws_access_key_id: {}\n  aws_secret_access_key: {}\n  bucket: {}\n  folder: {prefix}/gp\n",
            g.endpoint(),
            g.key_id(),
            g.secret(),
            g.bucket()
        ),
    )
    .expect("plugin config");
    std::fs::create_dir_all(site.dir.path().join("gphome")).expect("home");
    // What another user can leave where a request log is asked for: a link to a file of ours,
    // a FIFO, a file of their own (the tests run as root, as CI does).
    let shared = site.dir.path().join("shared");
    std::fs::create_dir(&shared).expect("shared");
    std::fs::write(shared.join("victim"), b"ours\n").expect("victim");
    std::os::unix::fs::symlink(shared.join("victim"), shared.join("link.csv")).expect("link");
    let fifo = Command::new("mkfifo").arg(shared.join("fifo.csv")).status();
    assert!(fifo.expect("mkfifo").success());
    std::fs::write(shared.join("theirs.csv"), b"").expect("theirs");
    std::os::unix::fs::chown(shared.join("theirs.csv"), Some(4242), None).expect("chown (root)");
    std::fs::create_dir(shared.join("logdir")).expect("logdir");
    let log = shared.join("logdir/barmans3.log");
    std::os::unix::fs::symlink(shared.join("victim"), log).expect("log link");
    Fixture {
        site,
        prefix,
        plugin_cfg,
        good_yaml,
    }
}

/// The server of the barman-cloud rows (`--layout barman-cloud`), beside `pg` in the prefix.
const CLOUD: &str = "cpg";

/// A gzip tar of `(path, kind, body or link target)` entries, as barman-cloud-backup stores
/// an archive.
fn cloud_tar(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    use std::io::Write;
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, arg) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(0o600);
        let body: &[u8] = if kind.is_file() { arg.as_bytes() } else { b"" };
        if !kind.is_file() && !kind.is_dir() {
            h.set_link_name(arg).expect("link name");
        }
        h.set_size(body.len() as u64);
        h.set_path(path).expect("path");
        h.set_cksum();
        b.append(&h, body).expect("append");
    }
    let tar = b.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    gz.finish().expect("gzip")
}

fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(body).expect("gzip");
    gz.finish().expect("gzip")
}

/// Hostile rows in barman-cloud's layout: link chains in the data archive (a symlink to a
/// symlink, a hard link to a symlink, a file through a chain of tablespace links), a WAL of
/// another segment under a segment's name, one WAL stored in two forms.
fn put_cloud_rows(prefix: &str, outside: &Path) {
    use tar::EntryType as T;
    let out = outside.display().to_string();
    let info = |tbs: &str| {
        format!(
            "backup_label=None\nbegin_wal=000000010000000000000002\nend_wal=000000010000000000000002\nstatus=DONE\ntablespaces={tbs}\nversion=150000\n"
        )
    };
    let base = [
        ("PG_VERSION", T::Regular, "15\n"),
        ("global/", T::Directory, ""),
        ("global/pg_control", T::Regular, "ctl"),
    ];
    let with = |extra: &[(&'static str, T, &str)]| {
        let mut e: Vec<(&str, T, &str)> = base.to_vec();
        // The hostile entries before pg_control, where an extraction meets them first.
        e.splice(2..2, extra.iter().cloned());
        cloud_tar(&e)
    };
    let k = |rest: &str| format!("{prefix}/{CLOUD}/{rest}");
    let seg = |n: u64| {
        let w = wal_name(n);
        format!("wals/{}/{w}", &w[..16])
    };
    let objects: Vec<(String, Vec<u8>)> = vec![
        (
            k("base/20261123T010000/backup.info"),
            info("None").into_bytes(),
        ),
        (
            k("base/20261123T010000/data.tar.gz"),
            with(&[
                ("l1", T::Symlink, "l2"),
                ("l2", T::Symlink, &out),
                ("l1/planted", T::Regular, "x"),
            ]),
        ),
        (
            k("base/20261123T020000/backup.info"),
            info("None").into_bytes(),
        ),
        (
            k("base/20261123T020000/data.tar.gz"),
            with(&[("h", T::Link, "s"), ("s", T::Symlink, "/etc/passwd")]),
        ),
        (
            k("base/20261123T030000/backup.info"),
            info("[('t', 16390, '/srv/t')]").into_bytes(),
        ),
        (
            k("base/20261123T030000/data.tar.gz"),
            with(&[
                ("pg_tblspc/16391", T::Symlink, &out),
                ("pg_tblspc/16390", T::Symlink, "16391"),
                ("pg_tblspc/16390/planted", T::Regular, "x"),
            ]),
        ),
        (
            k("base/20261123T030000/16390.tar.gz"),
            cloud_tar(&[("PG_15_202209061/", T::Directory, "")]),
        ),
        // Segment 3's name, segment 4's bytes.
        (
            k(&format!("{}.gz", seg(3))),
            gzip(&crate::common::site::wal_segment(&wal_name(4), 4)),
        ),
        // Segment 5 twice: plain and gzip.
        (
            k(&seg(5)),
            crate::common::site::wal_segment(&wal_name(5), 5),
        ),
        (
            k(&format!("{}.gz", seg(5))),
            gzip(&crate::common::site::wal_segment(&wal_name(5), 5)),
        ),
    ];
    crate::common::block_on(async {
        let t = crate::common::garage_transfer().await;
        for (key, body) in objects {
            t.put_bytes(&key, Bytes::from(body), BTreeMap::new())
                .await
                .expect("put barman-cloud row");
        }
    });
}

/// The barman-cloud rows of the table: refused, never exit 0, nothing written.
fn cloud_cases() -> Vec<Case> {
    let restore = |id: &str, dest: &str| {
        barmans3(&format!(
            "base-restore --layout barman-cloud {CLOUD} {id} {{dir}}/{dest}"
        ))
    };
    vec![
        case(
            "barman-cloud: a symlink to a symlink in the data archive",
            restore("20261123T010000", "rc1"),
            1,
            "refusing entry \"l1\"",
        ),
        case(
            "barman-cloud: a hard link to a symlink in the data archive",
            restore("20261123T020000", "rc2"),
            1,
            "refusing entry \"h\"",
        ),
        case(
            "barman-cloud: a file through a chain of tablespace links",
            restore("20261123T030000", "rc3"),
            1,
            "a tablespace link in the archive",
        ),
        case(
            "barman-cloud: a WAL of another segment under a segment's name",
            barmans3(&format!(
                "wal-restore --layout barman-cloud {CLOUD} {} {{dir}}/wc3",
                wal_name(3)
            )),
            200,
            "not the start of this WAL segment",
        ),
        case(
            "barman-cloud: one WAL stored in two forms",
            barmans3(&format!(
                "wal-restore --layout barman-cloud {CLOUD} {} {{dir}}/wc5",
                wal_name(5)
            )),
            200,
            "both stored for one WAL file",
        ),
        case(
            "barman-cloud: catalog-restore",
            barmans3(&format!("catalog-restore --layout barman-cloud {CLOUD}")),
            2,
            "reads a barman-cloud bucket's catalog itself",
        ),
    ]
}

fn run(fx: &Fixture, call: &Call) -> Output {
    let d = fx.site.dir.path();
    let fill = |a: &[String]| -> Vec<String> {
        a.iter()
            .map(|s| {
                s.replace("{cfg}", fx.plugin_cfg.to_str().expect("utf8"))
                    .replace("{bad}", d.join("bad-gp.yaml").to_str().expect("utf8"))
                    .replace("{dir}", d.to_str().expect("utf8"))
            })
            .collect()
    };
    match call {
        Call::Barmans3(a, env) => fx.site.run(
            &fill(a).iter().map(String::as_str).collect::<Vec<_>>(),
            &env.iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        ),
        Call::WithConfig(text, mode, a) => {
            let p = d.join("bad.yaml");
            let _ = std::fs::remove_file(&p);
            let _ = std::fs::remove_dir(&p);
            if text == "<directory>" {
                std::fs::create_dir(&p).expect("mkdir");
            } else if text != "<missing>" {
                std::fs::write(&p, text).expect("write");
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
                    .expect("chmod");
            }
            let out = Command::new(BIN)
                .arg("--config")
                .arg(&p)
                .args(fill(a))
                .env_remove("BARMANS3_CONFIG")
                .output()
                .expect("run");
            let _ = std::fs::remove_file(&p);
            let _ = std::fs::remove_dir(&p);
            out
        }
        Call::Plugin(a, bad) => {
            let p = d.join("bad-gp.yaml");
            if let Some(text) = bad {
                std::fs::write(&p, text).expect("write");
            }
            let out = Command::new(PLUGIN)
                .args(fill(a))
                .env("HOME", d.join("gphome"))
                .stdin(std::process::Stdio::null())
                .output()
                .expect("run plugin");
            let _ = std::fs::remove_file(&p);
            out
        }
    }
}

fn cases(fx: &Fixture) -> Vec<Case> {
    let good = fx.good_yaml.clone();
    let cfg = |from: &str, to: &str| {
        assert!(good.contains(from), "{from:?} not in the config");
        Call::WithConfig(
            fx.site_cfg_text().replace(from, to),
            0o600,
            args("wal-sync pg"),
        )
    };
    let g = crate::common::garage();
    let barman_part = std::fs::read_to_string(&fx.site.cfg)
        .expect("cfg")
        .split_once("barman:")
        .map(|(_, b)| format!("barman:{b}"))
        .expect("barman section");
    let full =
        |s3: String| Call::WithConfig(format!("{s3}{barman_part}"), 0o600, args("wal-sync pg"));
    let gp = std::fs::read_to_string(&fx.plugin_cfg).expect("gp cfg");
    let gp_bad = |from: &str, to: &str| {
        assert!(gp.contains(from), "{from:?} not in the plugin config");
        Call::Plugin(
            args("backup_file {bad} /a/b/c/d/e"),
            Some(gp.replace(from, to)),
        )
    };
    let ts = "/data/backups/20261122/20261122010101/gpbackup_0_20261122010101_1";
    vec![
        // Configuration.
        case(
            "config missing",
            Call::WithConfig("<missing>".into(), 0o600, args("wal-sync pg")),
            2,
            "bad.yaml",
        ),
        case(
            "config unreadable",
            Call::WithConfig("<directory>".into(), 0o600, args("wal-sync pg")),
            2,
            "bad.yaml",
        ),
        case(
            "config bad YAML",
            Call::WithConfig("s3: [unclosed\n".into(), 0o600, args("wal-sync pg")),
            2,
            "invalid YAML",
        ),
        case("config unknown key", cfg("region:", "regoin:"), 2, "regoin"),
        case(
            "config wrong type",
            cfg("concurrency: 4", "concurrency: many"),
            2,
            "s3.concurrency",
        ),
        case(
            "config zero concurrency",
            cfg("concurrency: 4", "concurrency: 0"),
            2,
            "s3.concurrency",
        ),
        case(
            "config bad size",
            cfg("part_size: 5MiB", "part_size: 5 parsecs"),
            2,
            "s3.part_size",
        ),
        case(
            "config size below S3 minimum",
            cfg("part_size: 5MiB", "part_size: 1MiB"),
            2,
            "s3.part_size",
        ),
        case(
            "config one PUT above S3's limit",
            Call::WithConfig(
                fx.site_cfg_text()
                    .replace("barman:\n", "barman:\n  one_put_max: 6GiB\n"),
                0o600,
                args("wal-sync pg"),
            ),
            2,
            "barman.one_put_max",
        ),
        case(
            "config bad duration",
            cfg("connect_timeout: 2s", "connect_timeout: soon"),
            2,
            "s3.connect_timeout",
        ),
        case(
            "config bad URL",
            cfg(g.endpoint(), "ftp//nowhere"),
            2,
            "s3.endpoint",
        ),
        case(
            "config missing bucket",
            full(good.replace(&format!("  bucket: {}\n", g.bucket()), "")),
            2,
            "s3.bucket",
        ),
        case(
            "config nonexistent bucket",
            cfg(
                &format!("bucket: {}", g.bucket()),
                "bucket: no-such-bucket-here",
            ),
            1,
            "no-such-bucket-here",
        ),
        case(
            "config wrong keys",
            cfg(g.secret(), &"0".repeat(64)),
            1,
            "check the access key",
        ),
        case(
            "config group-readable secrets",
            Call::WithConfig(good.clone() + &barman_part, 0o640, args("wal-sync pg")),
            2,
            "chmod 600",
        ),
        case(
            "config missing barman.conf",
            Call::WithConfig(
                fx.site_cfg_text().replace("/barman.conf", "/nowhere.conf"),
                0o600,
                args("wal-sync pg"),
            ),
            2,
            "nowhere.conf",
        ),
        case(
            "config bad store URL",
            Call::WithConfig(
                format!("store: ftp://x/y\n{barman_part}"),
                0o600,
                args("wal-sync pg"),
            ),
            2,
            "store",
        ),
        // Command lines.
        case(
            "cli unknown server",
            barmans3("wal-sync nosuch"),
            2,
            "nosuch",
        ),
        case("cli server missing", barmans3("wal-sync"), 2, "SERVER"),
        case(
            "cli follow polling in a busy loop",
            barmans3("wal-sync pg --follow --poll 0s"),
            2,
            "--poll",
        ),
        case(
            "cli extra argument",
            barmans3("wal-sync pg extra"),
            2,
            "extra",
        ),
        case(
            "cli unknown subcommand",
            barmans3("frobnicate"),
            2,
            "frobnicate",
        ),
        case(
            "cli bad backup id",
            barmans3("base-restore pg latest-ish {dir}/r1"),
            2,
            "latest-ish",
        ),
        case(
            "cli backup id not in bucket",
            barmans3("base-restore pg 20200101T000000 {dir}/r2"),
            1,
            "20200101T000000",
        ),
        case(
            "cli restore destination missing",
            barmans3("base-restore pg 20261122T010000"),
            2,
            "DEST",
        ),
        case(
            "cli restore into non-empty dir",
            barmans3("base-restore pg 20261122T010000 {dir}/barman"),
            2,
            "not empty",
        ),
        case(
            "cli bad --tablespace",
            Call::Barmans3(
                vec![
                    "base-restore".into(),
                    "pg".into(),
                    GOOD_ID.into(),
                    "{dir}/r3".into(),
                    "--tablespace".into(),
                    "nonsense".into(),
                ],
                vec![],
            ),
            2,
            "--tablespace",
        ),
        // A restore_command that is wrong must stop recovery, never read as "end of archive".
        case(
            "cli bad WAL name",
            barmans3("wal-restore pg ../../etc/passwd {dir}/w1"),
            200,
            "not a WAL file name",
        ),
        case(
            "hostile bucket: a partial with later segments behind it",
            barmans3(&format!("wal-restore pg {} {{dir}}/w7", wal_name(7))),
            200,
            "only its closed partial",
        ),
        case(
            "hostile bucket: a decompression bomb",
            barmans3(&format!(
                "wal-restore pg {} {{dir}}/pgc/pg_wal/w10",
                wal_name(10)
            )),
            200,
            "more than 16777216 bytes",
        ),
        case(
            "config zero command_timeout",
            Call::WithConfig(
                good.clone()
                    + &barman_part.replace("barman:\n", "barman:\n  command_timeout: 0s\n"),
                0o600,
                args("wal-restore pg 000000010000000000000001 {dir}/w1"),
            ),
            200,
            "barman.command_timeout",
        ),
        case(
            "cli bad duration",
            barmans3("check --wal-warning soon"),
            2,
            "--wal-warning",
        ),
        case(
            "cli queue retry bad id",
            barmans3("queue retry ../x"),
            2,
            "../x",
        ),
        case(
            "cli queue prune bad age",
            barmans3("queue prune --older-than forever"),
            2,
            "--older-than",
        ),
        // Barman hook environment.
        case(
            "hook missing BARMAN_BACKUP_ID",
            hook(&[("BARMAN_BACKUP_ID", "<unset>")]),
            2,
            "BARMAN_BACKUP_ID",
        ),
        case(
            "hook traversal in BARMAN_BACKUP_ID",
            hook(&[("BARMAN_BACKUP_ID", "../../etc")]),
            2,
            "BARMAN_BACKUP_ID",
        ),
        case(
            "hook wrong phase",
            hook(&[("BARMAN_PHASE", "pre")]),
            2,
            "BARMAN_PHASE",
        ),
        case(
            "hook wrong hook",
            hook(&[("BARMAN_HOOK", "archive_script")]),
            2,
            "BARMAN_HOOK",
        ),
        case(
            "hook missing server",
            hook(&[("BARMAN_SERVER", "<unset>")]),
            2,
            "BARMAN_SERVER",
        ),
        case(
            "hook retry script, bad id",
            hook(&[
                ("BARMAN_HOOK", "backup_retry_script"),
                ("BARMAN_BACKUP_ID", "x"),
            ]),
            62,
            "BARMAN_BACKUP_ID",
        ),
        case(
            "hook retry script in the pre phase",
            hook(&[
                ("BARMAN_HOOK", "backup_retry_script"),
                ("BARMAN_RETRY", "1"),
                ("BARMAN_PHASE", "pre"),
            ]),
            62,
            "BARMAN_PHASE",
        ),
        Case {
            name: "hook FAILED with quotes and $ in BARMAN_ERROR",
            call: hook(&[
                ("BARMAN_STATUS", "FAILED"),
                (
                    "BARMAN_ERROR",
                    "it's \"bad\" $(touch /tmp/pwned) `id` $HOME",
                ),
            ]),
            code: 0,
            fragment: "",
            creates: Some("queue/20261122T070000.error"),
            records: None,
        },
        // A request log that is not our own regular file: one warning, no log, the run goes on.
        case(
            "request log a symbolic link",
            barmans3("--request-log {dir}/shared/link.csv store ls"),
            0,
            "symbolic link",
        ),
        case(
            "request log a FIFO nobody reads",
            barmans3("--request-log {dir}/shared/fifo.csv store ls"),
            0,
            "FIFO",
        ),
        case(
            "request log another user's file",
            barmans3("--request-log {dir}/shared/theirs.csv store ls"),
            0,
            "owned by uid 4242",
        ),
        case(
            "log file a symbolic link",
            Call::WithConfig(
                fx.site_cfg_text().replace(
                    "  queue_dir:",
                    &format!(
                        "  log_dir: {}/shared/logdir\n  queue_dir:",
                        fx.site.dir.path().display()
                    ),
                ),
                0o600,
                args("wal-sync pg"),
            ),
            1,
            "barmans3.log: is a symbolic link, which is not followed",
        ),
        // gpbackup plugin calls.
        case(
            "plugin unknown command",
            Call::Plugin(args("frobnicate {cfg}"), None),
            3,
            "No help topic for 'frobnicate'",
        ),
        case(
            "plugin too few arguments",
            Call::Plugin(args("backup_file {cfg}"), None),
            1,
            "backup_file",
        ),
        case(
            "plugin too many arguments",
            Call::Plugin(args("delete_backup {cfg} 20261122010101 extra"), None),
            1,
            "delete_backup",
        ),
        case(
            "plugin bad timestamp",
            Call::Plugin(args("delete_backup {cfg} 2026"), None),
            1,
            "2026",
        ),
        case(
            "plugin missing config",
            Call::Plugin(args("backup_file {dir}/nope.yaml /a/b/c/d/e"), None),
            1,
            "nope.yaml",
        ),
        case(
            "plugin bad chunk size",
            gp_bad("folder:", "backup_multipart_chunksize: 100M\n  folder:"),
            1,
            "backup_multipart_chunksize",
        ),
        case(
            "plugin unknown option",
            gp_bad("folder:", "regoin: x\n  folder:"),
            1,
            "regoin",
        ),
        case(
            "plugin missing bucket option",
            gp_bad(&format!("  bucket: {}\n", g.bucket()), ""),
            1,
            "bucket",
        ),
        case(
            "plugin restore of a missing object",
            Call::Plugin(vec!["restore_data".into(), "{cfg}".into(), ts.into()], None),
            1,
            "gpbackup_0_20261122010101_1",
        ),
        case(
            "plugin short path",
            Call::Plugin(args("backup_file {cfg} /a/b"), None),
            1,
            "/a/b",
        ),
        // Hostile bucket content.
        case(
            "bucket manifest with ..",
            barmans3("base-restore pg 20261122T020000 {dir}/r4"),
            1,
            "refusing entry",
        ),
        case(
            "bucket manifest with absolute path",
            barmans3("base-restore pg 20261122T030000 {dir}/r5"),
            1,
            "refusing entry",
        ),
        case(
            "bucket truncated object",
            barmans3("base-restore pg 20261122T040000 {dir}/r6"),
            1,
            "data/f",
        ),
        case(
            "bucket checksum mismatch",
            barmans3("base-restore pg 20261122T050000 {dir}/r7"),
            1,
            "checksum mismatch",
        ),
        case(
            "bucket backup without backup.info",
            barmans3("base-restore pg 20261122T060000 {dir}/r8"),
            1,
            "not complete",
        ),
        Case {
            records: Some(("state/wal", "differ from the bucket")),
            ..case(
                "bucket WAL with other bytes",
                barmans3("wal-sync pg"),
                1,
                "differ",
            )
        },
        // Hostile bucket content, second round: links that would lead a restore (run as root)
        // outside DEST, names that are not UTF-8, a WAL of the same size with other bytes.
        case(
            "bucket link chain out of DEST",
            barmans3("base-restore pg 20261122T130000 {dir}/r9"),
            1,
            "only pg_tblspc/<oid> may be a link",
        ),
        case(
            "bucket link to an absolute path",
            barmans3("base-restore pg 20261122T140000 {dir}/r10"),
            1,
            "where PostgreSQL keeps none",
        ),
        case(
            "bucket entry under a tablespace link",
            barmans3("base-restore pg 20261122T150000 {dir}/r11"),
            1,
            "under the link",
        ),
        case(
            "bucket names that are not UTF-8, colliding",
            barmans3("base-restore pg 20261122T160000 {dir}/r12"),
            1,
            "same key",
        ),
        // Third round: incremental chains the bucket misdescribes.
        case(
            "bucket incremental without parent_backup_id",
            barmans3("base-restore pg 20261122T170000 {dir}/r13"),
            1,
            "is an incremental backup (it holds data/base/5/INCREMENTAL.16384)",
        ),
        case(
            "bucket incremental without its parent: base-restore",
            barmans3("base-restore pg 20261122T180000 {dir}/r14"),
            1,
            "its chain needs 20261122T000001",
        ),
        case(
            "bucket incremental without its parent: catalog-restore",
            barmans3("catalog-restore pg --backup 20261122T180000"),
            1,
            "its chain needs 20261122T000001",
        ),
        Case {
            records: Some(("state/wal", "other content")),
            ..case(
                "bucket WAL of the same size with other bytes",
                barmans3("wal-sync pg --full"),
                1,
                "same size, other content",
            )
        },
        Case {
            records: Some(("state/wal", "in the bucket")),
            ..case(
                "bucket WAL that is the start of ours, not shipped by us",
                barmans3("wal-sync pg --full"),
                1,
                "000000010000000000000006: 24 bytes here, 12 in the bucket",
            )
        },
    ]
}

impl Fixture {
    fn site_cfg_text(&self) -> String {
        std::fs::read_to_string(&self.site.cfg).expect("cfg")
    }
}

#[test]
fn every_bad_input_fails_clearly_and_changes_nothing() {
    let fx = fixture();
    let g = crate::common::garage();
    let mut all = cases(&fx);
    all.extend(cloud_cases());
    assert!(all.len() >= 40, "{} cases", all.len());
    let mut failures = Vec::new();
    for c in &all {
        let bucket = bucket_snapshot(&format!("{}/", fx.prefix));
        let disk = disk_snapshot(fx.site.dir.path());
        let out = run(&fx, &c.call);
        let code = out.status.code().unwrap_or(-1);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!(
            "{:<48} exit {code:>2}: {}",
            c.name,
            err.lines().last().unwrap_or("")
        );
        let mut problems = Vec::new();
        if code != c.code {
            problems.push(format!("exit {code}, want {}", c.code));
        }
        if !err.contains(c.fragment) {
            problems.push(format!("message lacks {:?}", c.fragment));
        }
        if c.code != 0 && err.trim().is_empty() {
            problems.push("no message".into());
        }
        if err.contains(g.secret()) || stdout.contains(g.secret()) {
            problems.push("secret in the output".into());
        }
        if bucket_snapshot(&format!("{}/", fx.prefix)) != bucket {
            problems.push("the bucket changed".into());
        }
        let mut after = disk_snapshot(fx.site.dir.path());
        if let Some((dir, fragment)) = c.records {
            let root = fx.site.dir.path().join(dir);
            let recorded: Vec<PathBuf> = after
                .keys()
                .filter(|k| k.starts_with(&root) && disk.get(*k) != after.get(*k))
                .cloned()
                .collect();
            if !recorded
                .iter()
                .any(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains(fragment)))
            {
                problems.push(format!("no record holding {fragment:?} under {dir}"));
            }
            for p in recorded {
                after.insert(p.clone(), disk.get(&p).cloned().unwrap_or_default());
            }
        }
        if let Some(rel) = c.creates {
            let p = fx.site.dir.path().join(rel);
            if after.remove(&p).is_none() {
                problems.push(format!("{rel} was not created"));
            } else if c.name.contains("BARMAN_ERROR") {
                let task = std::fs::read_to_string(&p).expect("task");
                if !task.contains("$(touch /tmp/pwned) `id` $HOME") {
                    problems.push(format!("BARMAN_ERROR not kept literally: {task}"));
                }
            }
            std::fs::remove_file(&p).expect("undo the expected effect");
        }
        if after != disk {
            let changed: Vec<_> = after
                .keys()
                .filter(|k| disk.get(*k) != after.get(*k))
                .chain(disk.keys().filter(|k| !after.contains_key(*k)))
                .collect();
            problems.push(format!("disk changed: {changed:?}"));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n    stderr: {}",
                c.name,
                problems.join("; "),
                err.trim().replace('\n', "\n            ")
            ));
        }
    }
    assert!(
        !Path::new("/tmp/pwned").exists(),
        "BARMAN_ERROR was executed"
    );
    eprintln!("{} bad inputs tried", all.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

/// Puts a backup into a `Site::local()` bucket through `store put`.
fn put_local(site: &Site, id: &str, entries: Vec<Entry>, files: &[(&str, Vec<u8>)], info: &str) {
    let m = Manifest {
        version: 1,
        server: "pg".into(),
        backup_id: id.into(),
        created_at: 0,
        total_bytes: files.iter().map(|f| f.1.len() as u64).sum(),
        entries,
    };
    let json = serde_json::to_vec(&m).expect("manifest");
    let objects = files
        .iter()
        .map(|(rel, body)| (rel.to_string(), body.clone()))
        .chain([
            ("barmans3.manifest".to_string(), json),
            ("backup.info".to_string(), info.as_bytes().to_vec()),
        ]);
    let tmp = tempfile::NamedTempFile::new().expect("tmp");
    for (rel, body) in objects {
        std::fs::write(tmp.path(), body).expect("w");
        let key = format!("pg/base/{id}/{rel}");
        let src = tmp.path().display().to_string();
        let out = site.run(&["store", "put", &src, &key], &[]);
        assert!(
            out.status.success(),
            "put {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Modes from the bucket are narrowed: a setuid "shell", a world-writable data directory and a
/// sticky world-writable subdirectory come back as at most 0750, with one line that says so.
#[test]
fn setuid_sticky_and_world_writable_modes_from_the_bucket_are_narrowed() {
    let site = Site::local();
    let version = b"15\n".to_vec();
    let shell = b"#!/bin/sh\nexec /bin/sh -p\n".to_vec();
    let with_mode = |e: Entry, m: u32| match e {
        Entry::File {
            path,
            raw,
            size,
            crc32c,
            mtime_ns,
            ciphertext,
            ..
        } => Entry::File {
            path,
            raw,
            size,
            mode: m,
            crc32c,
            mtime_ns,
            ciphertext,
        },
        Entry::Dir { path, raw, .. } => Entry::Dir { path, raw, mode: m },
        other => other,
    };
    let id = "20261122T190000";
    put_local(
        &site,
        id,
        vec![
            with_mode(dir("data"), 0o777),
            with_mode(dir("data/global"), 0o700),
            with_mode(dir("data/pg_stat_tmp"), 0o1777),
            file("data/PG_VERSION", &version),
            with_mode(file("data/sh", &shell), 0o4755),
            with_mode(file("data/pg_hba.conf", b"x"), 0o666),
            file("data/global/pg_control", &version),
        ],
        &[
            ("data/PG_VERSION", version.clone()),
            ("data/sh", shell.clone()),
            ("data/pg_hba.conf", b"x".to_vec()),
            ("data/global/pg_control", version.clone()),
        ],
        "status=DONE\nbegin_wal=000000010000000000000003\n",
    );
    let dest = site.dir.path().join("restored");
    let out = site.run(
        &["base-restore", "pg", id, &dest.display().to_string()],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let mode = |rel: &str| {
        std::fs::symlink_metadata(dest.join(rel))
            .expect(rel)
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode(""), 0o750, "DEST");
    assert_eq!(mode("pg_stat_tmp"), 0o750);
    assert_eq!(mode("sh"), 0o750);
    assert_eq!(mode("pg_hba.conf"), 0o640);
    assert_eq!(mode("PG_VERSION"), 0o600);
    assert!(
        err.contains("4 mode(s) from the bucket narrowed"),
        "no line counting the narrowed modes: {err}"
    );
}

/// A full backup A, its incremental B, an incremental whose parent is not in the bucket, and
/// an incremental whose backup.info lost parent_backup_id.
fn chains_in(site: &Site) {
    let version = b"18\n".to_vec();
    let files = |extra: &[(&'static str, &'static [u8])]| {
        let mut e = vec![
            dir("data"),
            dir("data/global"),
            file("data/PG_VERSION", &version),
            file("data/global/pg_control", &version),
        ];
        let mut f = vec![
            ("data/PG_VERSION", version.clone()),
            ("data/global/pg_control", version.clone()),
        ];
        for (p, b) in extra {
            e.push(file(p, b));
            f.push((*p, b.to_vec()));
        }
        (e, f)
    };
    let info = |parent: Option<&str>| {
        format!(
            "status=DONE\nversion=180000\nbegin_wal=000000010000000000000003\n{}",
            parent.map_or(String::new(), |p| format!("parent_backup_id={p}\n"))
        )
    };
    let inc: &[(&str, &[u8])] = &[("data/base/5/INCREMENTAL.16384", b"inc")];
    for (id, parent, extra) in [
        ("20261122T200000", None, &[][..]),
        ("20261122T210000", Some("20261122T200000"), inc),
        ("20261122T220000", Some("20261122T000001"), inc),
        ("20261122T230000", None, inc),
    ] {
        let (e, f) = files(extra);
        put_local(site, id, e, &f, &info(parent));
    }
}

#[test]
fn incremental_backups_the_bucket_misdescribes_are_never_restored_alone() {
    let site = Site::local();
    chains_in(&site);
    let err = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    // base-ls: an orphan is not complete, and says what it lacks.
    let ls = site.run(&["--json", "base-ls", "pg"], &[]);
    let v: serde_json::Value = serde_json::from_slice(&ls.stdout).expect("json");
    let row = |id: &str| {
        v.as_array()
            .expect("rows")
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .expect(id)
    };
    assert_eq!(row("20261122T210000")["complete"], true, "{v}");
    assert_eq!(row("20261122T220000")["complete"], false, "{v}");
    assert_eq!(row("20261122T220000")["files_complete"], true, "{v}");
    assert_eq!(
        row("20261122T220000")["chain_gap"],
        "20261122T000001",
        "{v}"
    );
    let text = site.run(&["base-ls", "pg"], &[]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("no (its chain needs 20261122T000001)"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    // base-restore of an incremental whose backup.info lost its parent: refused, nothing written.
    let dest = site.dir.path().join("r");
    let out = site.run(
        &[
            "base-restore",
            "pg",
            "20261122T230000",
            &dest.display().to_string(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(
        err(&out).contains("is an incremental backup"),
        "{}",
        err(&out)
    );
    assert!(!dest.exists());
    // catalog-restore of the orphan: refused before anything is written.
    let barman = site.dir.path().join("barman/pg");
    let out = site.run(
        &[
            "catalog-restore",
            "--layout",
            "meta",
            "--backup",
            "20261122T220000",
            "pg",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(
        err(&out).contains("its chain needs 20261122T000001"),
        "{}",
        err(&out)
    );
    assert!(
        walkdir::WalkDir::new(&barman)
            .into_iter()
            .filter_map(|e| e.ok())
            .all(|e| e.file_type().is_dir()),
        "catalog-restore wrote files though it refused"
    );
    // catalog-restore of the incremental alone brings its parent.
    let out = site.run(
        &[
            "catalog-restore",
            "--layout",
            "meta",
            "--backup",
            "20261122T210000",
            "pg",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", err(&out));
    for id in ["20261122T200000", "20261122T210000"] {
        assert!(
            barman.join(format!("meta/{id}-backup.info")).exists(),
            "{id}: {}",
            err(&out)
        );
    }
    // The full rebuild leaves the orphan out and names it.
    let site = Site::local();
    chains_in(&site);
    let out = site.run(&["catalog-restore", "--layout", "meta", "pg"], &[]);
    assert!(out.status.success(), "{}", err(&out));
    let meta = site.dir.path().join("barman/pg/meta");
    assert!(!meta.join("20261122T220000-backup.info").exists());
    assert!(meta.join("20261122T210000-backup.info").exists());
    assert!(
        err(&out)
            .contains("backup 20261122T220000 is incremental and its chain needs 20261122T000001"),
        "{}",
        err(&out)
    );
}
