//! The Barman commands with `encryption:` on, through the binary on a file:// bucket: base-sync
//! and wal-sync store only age objects (the Go `age` tool opens them to Barman's bytes),
//! base-restore and wal-restore give the original bytes back, `store get --raw` returns what is
//! stored, and a host holding only a later key refuses the old backup with one line naming the
//! setting, exit 2, and no file restored.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use age::secrecy::ExposeSecret;
use age::x25519;

use crate::common::data;
use crate::common::site::{Site, make_real_archive, wal_name, write_backup};

const MAGIC: &[u8] = b"age-encryption.org/v1\n";

fn err(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn key_file(dir: &Path, name: &str, id: &x25519::Identity) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{}\n", id.to_string().expose_secret())).expect("key");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

/// Replaces the config's `encryption:` section (the last one) with this one.
fn set_encryption(site: &Site, to: &x25519::Identity, id_file: &Path) {
    let text = std::fs::read_to_string(&site.cfg).expect("cfg");
    let base = text
        .split("encryption:\n")
        .next()
        .expect("text")
        .to_string();
    std::fs::write(
        &site.cfg,
        format!(
            "{base}encryption:\n  recipients: [{}]\n  identity_file: {}\n",
            to.to_public(),
            id_file.display()
        ),
    )
    .expect("cfg");
}

fn files(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

#[test]
fn barman_backups_and_wals_round_trip_encrypted() {
    let site = Site::local();
    let keys = tempfile::tempdir().expect("keys");
    let a = x25519::Identity::generate();
    let a_file = key_file(keys.path(), "a.key", &a);
    set_encryption(&site, &a, &a_file);
    let id = "20261206T100000";
    write_backup(&site, id, "DONE");
    let data_dir = site.dir.path().join(format!("barman/pg/base/{id}/data"));
    let big = data_dir.join("base/1/big");
    std::fs::create_dir_all(big.parent().expect("dir")).expect("mkdir");
    std::fs::write(&big, data(12 << 20, 7)).expect("big");
    make_real_archive(&site.wals(), 1, 3);
    site.queue(id, "DONE");
    let out = site.run(&["wal-sync", "pg"], &[]);
    assert!(out.status.success(), "wal-sync: {}", err(&out));
    let out = site.run(&["base-sync"], &[]);
    assert!(out.status.success(), "base-sync: {}", err(&out));

    // Only age objects in the bucket: data files, WALs, manifests, backup.info.
    let bucket = site.dir.path().join("bucket");
    let stored = files(&bucket.join("pg"));
    assert!(stored.len() >= 7, "{stored:?}");
    for f in &stored {
        let bytes = std::fs::read(f).expect("read");
        assert!(bytes.starts_with(MAGIC), "{} is not encrypted", f.display());
    }
    let stored_big = bucket.join(format!("pg/base/{id}/data/base/1/big"));
    let opened = Command::new("/usr/bin/age")
        .arg("-d")
        .arg("-i")
        .arg(&a_file)
        .arg(&stored_big)
        .output()
        .expect("age (scripts/test-deps installs it)");
    assert!(opened.status.success(), "age -d: {}", err(&opened));
    assert!(
        opened.stdout == std::fs::read(&big).expect("big"),
        "Go age opens it"
    );

    // store get --raw: the stored bytes; store get: the plaintext.
    let key = format!("pg/base/{id}/data/base/1/big");
    let raw = site.run(&["store", "get", "--raw", &key, "-"], &[]);
    assert!(raw.status.success(), "{}", err(&raw));
    assert!(raw.stdout == std::fs::read(&stored_big).expect("stored"));
    let plain = site.run(&["store", "get", &key, "-"], &[]);
    assert!(plain.stdout == std::fs::read(&big).expect("big"));

    // Restores give Barman's bytes back.
    let dest = site.dir.path().join("restored");
    let out = site.run(
        &["base-restore", "pg", id, dest.to_str().expect("utf8")],
        &[],
    );
    assert!(out.status.success(), "base-restore: {}", err(&out));
    for rel in ["PG_VERSION", "global/pg_control", "base/1/big"] {
        assert!(
            std::fs::read(dest.join(rel)).expect("restored")
                == std::fs::read(data_dir.join(rel)).expect("src"),
            "{rel}"
        );
    }
    for seg in 1..=3 {
        let name = wal_name(seg);
        let to = site.dir.path().join(format!("wal-{seg}"));
        let out = site.run(
            &["wal-restore", "pg", &name, to.to_str().expect("utf8")],
            &[],
        );
        assert!(out.status.success(), "wal-restore {name}: {}", err(&out));
        let src = site.wals().join(&name[..16]).join(&name);
        assert!(
            std::fs::read(&to).expect("wal") == std::fs::read(src).expect("src"),
            "{name}"
        );
    }

    // Key rotation: a host holding only key B refuses the backup made under A, by name.
    let b = x25519::Identity::generate();
    let b_file = key_file(keys.path(), "b.key", &b);
    set_encryption(&site, &b, &b_file);
    let dest = site.dir.path().join("restored-b");
    let out = site.run(
        &["base-restore", "pg", id, dest.to_str().expect("utf8")],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    let e = err(&out);
    assert!(e.contains("encryption.identity_file"), "{e}");
    assert!(
        !e.contains(a.to_string().expose_secret()) && !e.contains(b.to_string().expose_secret())
    );
    assert!(
        !dest.exists() || files(&dest).is_empty(),
        "nothing restored: {:?}",
        files(&dest)
    );
    let to = site.dir.path().join("wal-b");
    let out = site.run(
        &[
            "wal-restore",
            "pg",
            &wal_name(1),
            to.to_str().expect("utf8"),
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(200),
        "wal-restore must be fatal: {}",
        err(&out)
    );
    assert!(
        err(&out).contains("encryption.identity_file"),
        "{}",
        err(&out)
    );
    assert!(!to.exists());
}

/// `archive` refuses `encryption:` (Gluster's recall cannot decrypt); volumes encrypt
/// (tests/it/crypt_volume.rs).
#[test]
fn archive_refuses_to_run_with_encryption() {
    let site = Site::local();
    let keys = tempfile::tempdir().expect("keys");
    let a = x25519::Identity::generate();
    let a_file = key_file(keys.path(), "a.key", &a);
    set_encryption(&site, &a, &a_file);
    let brick = tempfile::tempdir().expect("brick");
    let root = brick.path().to_str().expect("utf8");
    std::fs::write(brick.path().join("f"), b"cold data").expect("src");
    let args = [
        "archive",
        "--mount",
        root,
        "--older-than",
        "1d",
        "--volume",
        "gv",
        root,
    ];
    let out = site.run(&args, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    let e = err(&out);
    assert!(e.contains("encryption") && e.contains("cloudsync"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(
        files(&site.dir.path().join("bucket")).is_empty(),
        "nothing stored"
    );
}

/// `config check` with `encryption:` writes a probe object, reads it back and says whether the
/// identities open it; it shows the recipients' public keys and never a secret key; identities
/// that do not open it are exit 2 naming the file; a host without identities is told it can
/// write but not restore. The probe never stays in the bucket.
#[test]
fn config_check_opens_a_probe_object_and_shows_only_public_keys() {
    let site = Site::local();
    let keys = tempfile::tempdir().expect("keys");
    let (a, b) = (x25519::Identity::generate(), x25519::Identity::generate());
    let (a_file, b_file) = (
        key_file(keys.path(), "a.key", &a),
        key_file(keys.path(), "b.key", &b),
    );
    let secret = |id: &x25519::Identity| id.to_string().expose_secret().to_string();
    let check = || site.run(&["config", "check"], &[]);

    set_encryption(&site, &a, &a_file);
    let out = check();
    let (text, e) = (String::from_utf8_lossy(&out.stdout).into_owned(), err(&out));
    assert!(out.status.success(), "{e}");
    assert!(
        e.contains(&format!("a probe object sealed to {}", a.to_public()))
            && e.contains(&format!("opens with {}", a_file.display())),
        "{e}"
    );
    assert!(text.contains(&a.to_public().to_string()), "{text}");
    for shown in [&text, &e] {
        assert!(!shown.contains("AGE-SECRET-KEY") && !shown.contains(&secret(&a)));
    }

    // Sealed to A, opened with B only: the identities cannot read what this host writes.
    let cfg = std::fs::read_to_string(&site.cfg).expect("cfg");
    std::fs::write(
        &site.cfg,
        cfg.replace(&a_file.display().to_string(), &b_file.display().to_string()),
    )
    .expect("cfg");
    let out = check();
    let e = err(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("do not open a probe object") && e.contains(&b_file.display().to_string()),
        "{e}"
    );
    assert_eq!(e.lines().filter(|l| l.contains("probe")).count(), 1, "{e}");
    assert!(!e.contains("AGE-SECRET-KEY"), "{e}");

    // A host that only writes.
    let cfg = std::fs::read_to_string(&site.cfg).expect("cfg");
    let base = cfg.split("encryption:\n").next().expect("text").to_string();
    std::fs::write(
        &site.cfg,
        format!("{base}encryption:\n  recipients: [{}]\n", a.to_public()),
    )
    .expect("cfg");
    let out = check();
    let e = err(&out);
    assert!(out.status.success(), "{e}");
    assert!(e.contains("can write but not restore"), "{e}");
    assert!(
        files(&site.dir.path().join("bucket")).is_empty(),
        "no probe left in the bucket"
    );
}

/// Bareos' dplcompat program with `encryption:` in its config: volume parts must stay readable
/// by Bareos' other wrappers (s3cmd, the AWS CLI), which cannot decrypt, so every operation that
/// reads or writes refuses with exit 2 and one line naming the setting, and nothing is stored.
#[test]
fn the_dplcompat_program_refuses_a_config_with_encryption() {
    use std::io::Write;
    let site = Site::local();
    let keys = tempfile::tempdir().expect("keys");
    let a = x25519::Identity::generate();
    let a_file = key_file(keys.path(), "a.key", &a);
    set_encryption(&site, &a, &a_file);
    let prog = env!("CARGO_BIN_EXE_barmans3-dplcompat");
    for args in [
        &["upload", "Full-0001", "0001"][..],
        &["download", "Full-0001", "0001"],
        &["stat", "Full-0001", "0001"],
        &["list", "Full-0001"],
        &["testconnection"],
    ] {
        let mut child = Command::new(prog)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("config", &site.cfg)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("barmans3-dplcompat");
        if let Some(mut w) = child.stdin.take() {
            // The refusal may come before the chunk is read: a closed pipe is fine here.
            let _ = w.write_all(&data(1 << 20, 5));
        }
        let out = child.wait_with_output().expect("wait");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", err(&out));
        let e = err(&out);
        assert!(
            e.contains("encryption:") && e.contains("barmans3-dplcompat"),
            "{args:?}: {e}"
        );
        assert_eq!(e.trim_end().lines().count(), 1, "{args:?}: {e}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
    assert!(
        files(&site.dir.path().join("bucket")).is_empty(),
        "nothing stored"
    );
}

/// `verify --quick` on an encrypted bucket: each object's age header is read and
/// authenticated (never its chunks) and the plaintext size it gives is compared with the
/// manifest; an altered header and a truncated object are reported by name, a full `verify`
/// reads them and agrees.
#[test]
fn verify_quick_opens_only_the_headers_of_encrypted_objects() {
    let site = Site::local();
    let keys = tempfile::tempdir().expect("keys");
    let a = x25519::Identity::generate();
    let a_file = key_file(keys.path(), "a.key", &a);
    set_encryption(&site, &a, &a_file);
    let id = "20261206T110000";
    write_backup(&site, id, "DONE");
    let data_dir = site.dir.path().join(format!("barman/pg/base/{id}/data"));
    std::fs::create_dir_all(data_dir.join("base/1")).expect("mkdir");
    std::fs::write(data_dir.join("base/1/big"), data(6 << 20, 3)).expect("big");
    std::fs::write(data_dir.join("base/1/small"), data(300_000, 4)).expect("small");
    make_real_archive(&site.wals(), 1, 3);
    site.queue(id, "DONE");
    let out = site.run(&["wal-sync", "pg"], &[]);
    assert!(out.status.success(), "wal-sync: {}", err(&out));
    let out = site.run(&["base-sync"], &[]);
    assert!(out.status.success(), "base-sync: {}", err(&out));
    let json = |out: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout).expect("JSON on stdout")
    };
    let out = site.run(&["--json", "verify", "--quick", "pg", id], &[]);
    assert!(
        out.status.success(),
        "verify --quick: {}{}",
        err(&out),
        String::from_utf8_lossy(&out.stdout)
    );
    let v = json(&out);
    let n = v["objects"].as_u64().expect("objects");
    assert!(n >= 4, "{v}");
    assert_eq!(v["headers_opened"], n, "every object by its header: {v}");
    assert_eq!(v["problems"], serde_json::json!([]), "{v}");
    // Headers only: far less read than the 6 MiB file alone.
    let down = v["bytes_down"].as_u64().expect("bytes_down");
    assert!(down < 1 << 20, "read {down} bytes: {v}");

    // One character of the header's MAC altered, one object cut short.
    let bucket = site
        .dir
        .path()
        .join(format!("bucket/pg/base/{id}/data/base/1"));
    let mut big = std::fs::read(bucket.join("big")).expect("big");
    let mac = big
        .windows(4)
        .position(|w| w == b"\n---")
        .expect("MAC line")
        + 6;
    big[mac] = if big[mac] == b'A' { b'B' } else { b'A' };
    std::fs::write(bucket.join("big"), &big).expect("tamper");
    let small = std::fs::read(bucket.join("small")).expect("small");
    std::fs::write(bucket.join("small"), &small[..small.len() - 70_000]).expect("truncate");
    for args in [&["verify", "--quick", "pg", id][..], &["verify", "pg", id]] {
        let out = site.run(args, &[]);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", err(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        let line = |name: &str| text.lines().find(|l| l.contains(name)).map(str::to_string);
        let b = line("base/1/big").unwrap_or_else(|| panic!("{args:?}: big not named: {text}"));
        assert!(b.starts_with("decrypt "), "{args:?}: {b}");
        let s = line("base/1/small").unwrap_or_else(|| panic!("{args:?}: small not named: {text}"));
        assert!(
            s.starts_with("size ") || s.starts_with("decrypt "),
            "{args:?}: {s}"
        );
    }
}
