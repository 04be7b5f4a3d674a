//! `wal-restore` as PostgreSQL runs it: exit 0 with the file at `%p`, exit 1 only for a file
//! verifiably absent, and a status above 125 (200) for everything else, with nothing at `%p`.
//! The stored WALs are the fixtures made by the real tools (tests/fixtures/wal), uploaded with
//! `store put` into a `file://` store.

use std::path::Path;
use std::process::Output;

use crate::common::site::{Site, wal_name, wal_segment};

const SEG: &str = "000000010000000000000003";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(crate::common::repo().join("tests/fixtures/wal").join(name)).expect("fixture")
}

fn put(site: &Site, key: &str, bytes: &[u8]) {
    let f = site.dir.path().join("upload.tmp");
    std::fs::write(&f, bytes).expect("write");
    let out = site.run(&["store", "put", f.to_str().expect("utf8"), key], &[]);
    assert!(out.status.success(), "put {key}: {}", err(&out));
}

fn wal_key(name: &str) -> String {
    if name.ends_with(".history") {
        format!("pg/wals/{name}")
    } else {
        format!("pg/wals/{}/{name}", &name[..16])
    }
}

fn restore(site: &Site, name: &str, dest: &Path) -> Output {
    site.run(
        &["wal-restore", "pg", name, dest.to_str().expect("utf8")],
        &[],
    )
}

fn err(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The files a directory holds (to prove a failure left nothing, not even a temp file).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn every_compression_restores_the_same_segment_and_damage_aborts_recovery() {
    let site = Site::local();
    let pg_wal = site.dir.path().join("pg_wal");
    std::fs::create_dir(&pg_wal).expect("pg_wal");
    let mut restored: Option<Vec<u8>> = None;
    for f in [
        "segment.gzip-cli",
        "segment.bzip2-cli",
        "segment.xz-cli",
        "segment.zstd-cli",
        "segment.zstd-barman",
        "segment.lz4-cli",
        "segment.lz4-barman",
        "segment.snappy-barman",
    ] {
        let stored = fixture(f);
        put(&site, &wal_key(SEG), &stored);
        let dest = pg_wal.join("RECOVERYXLOG");
        let out = restore(&site, SEG, &dest);
        assert_eq!(out.status.code(), Some(0), "{f}: {}", err(&out));
        let got = std::fs::read(&dest).expect("restored");
        assert_eq!(got.len(), 1 << 20, "{f}");
        match &restored {
            None => restored = Some(got),
            Some(first) => assert!(*first == got, "{f} restores other bytes"),
        }
        std::fs::remove_file(&dest).expect("rm");

        // Truncated: a clear line, status 200, nothing at %p, no temp file left.
        put(&site, &wal_key(SEG), &stored[..stored.len() / 2]);
        let out = restore(&site, SEG, &dest);
        assert_eq!(out.status.code(), Some(200), "{f} truncated: {}", err(&out));
        assert!(err(&out).contains(SEG), "{f}: {}", err(&out));
        assert!(names(&pg_wal).is_empty(), "{f}: {:?}", names(&pg_wal));
    }
}

#[test]
fn only_a_verifiably_absent_file_is_not_found() {
    let site = Site::local();
    let dir = site.dir.path().join("pg_wal");
    std::fs::create_dir(&dir).expect("pg_wal");
    for seg in [1, 2, 4] {
        put(
            &site,
            &wal_key(&wal_name(seg)),
            &wal_segment(&wal_name(seg), seg),
        );
    }
    // The end of the archive and the next timeline's history: exit 1, quietly.
    for name in [wal_name(5), "00000002.history".to_string()] {
        let out = restore(&site, &name, &dir.join("x"));
        assert_eq!(out.status.code(), Some(1), "{name}: {}", err(&out));
    }
    // A gap (segment 3 missing, 4 present): ending recovery here would lose segment 4.
    let out = restore(&site, &wal_name(3), &dir.join("x"));
    assert_eq!(out.status.code(), Some(200), "{}", err(&out));
    assert!(err(&out).contains("gap"), "{}", err(&out));
    // Segment 3's closed partial fills the hole: it is served for the segment.
    let partial = wal_segment(&wal_name(3), 3)[..200_000].to_vec();
    put(
        &site,
        &format!("{}.partial", wal_key(&wal_name(3))),
        &partial,
    );
    let out = restore(&site, &wal_name(3), &dir.join("p"));
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    assert!(std::fs::read(dir.join("p")).expect("partial") == partial);
    // Another segment's bytes under this name: refused.
    put(&site, &wal_key(&wal_name(6)), &wal_segment(&wal_name(7), 7));
    let out = restore(&site, &wal_name(6), &dir.join("y"));
    assert_eq!(out.status.code(), Some(200), "{}", err(&out));
    assert!(!dir.join("y").exists());
    // A history file is text.
    put(
        &site,
        &wal_key("00000002.history"),
        b"1\t0/5000000\tno recovery target specified\n",
    );
    let out = restore(&site, "00000002.history", &dir.join("h"));
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
}

#[test]
fn a_bare_destination_name_is_written_in_the_current_directory() {
    let site = Site::local();
    put(&site, &wal_key(&wal_name(1)), &wal_segment(&wal_name(1), 1));
    let cwd = site.dir.path().join("cwd");
    std::fs::create_dir(&cwd).expect("cwd");
    let out = std::process::Command::new(crate::common::site::BIN)
        .current_dir(&cwd)
        .args(["--config", site.cfg.to_str().expect("utf8")])
        .args(["wal-restore", "pg", &wal_name(1), "RECOVERYXLOG"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    assert_eq!(names(&cwd), vec!["RECOVERYXLOG"]);
    // The same for `store get KEY FILE`.
    let out = std::process::Command::new(crate::common::site::BIN)
        .current_dir(&cwd)
        .args(["--config", site.cfg.to_str().expect("utf8")])
        .args(["store", "get", &wal_key(&wal_name(1)), "outfile"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    assert_eq!(names(&cwd), vec!["RECOVERYXLOG", "outfile"]);
}

#[test]
fn encrypted_and_custom_wals_need_their_commands() {
    let site = Site::local();
    let seg = wal_segment(&wal_name(1), 1);
    // "Encrypted": an OpenPGP packet tag, then the segment; the configured "decryption"
    // strips the tag byte (tail), so the plumbing is what is tested.
    let mut enc = vec![0x85];
    enc.extend_from_slice(&seg);
    put(&site, &wal_key(&wal_name(1)), &enc);
    let dest = site.dir.path().join("w");
    let out = restore(&site, &wal_name(1), &dest);
    assert_eq!(out.status.code(), Some(200), "{}", err(&out));
    assert!(
        err(&out).contains("barman.decryption_command"),
        "{}",
        err(&out)
    );
    assert!(!dest.exists());
    // A custom format with a magic: 0xEE 0xEF, then the segment.
    let mut custom = vec![0xEE, 0xEF];
    custom.extend_from_slice(&wal_segment(&wal_name(2), 2));
    put(&site, &wal_key(&wal_name(2)), &custom);
    let cfg = std::fs::read_to_string(&site.cfg).expect("cfg");
    std::fs::write(
        &site.cfg,
        cfg.replace(
            "barman:\n",
            "barman:\n  decryption_command: tail -c +2\n  custom_decompression: tail -c +3\n  custom_compression_magic: 0xeeef\n",
        ),
    )
    .expect("cfg");
    let out = restore(&site, &wal_name(1), &dest);
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    assert!(std::fs::read(&dest).expect("w") == seg);
    let out = restore(&site, &wal_name(2), &dest);
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
}
