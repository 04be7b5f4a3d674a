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

pub(crate) fn put(site: &Site, key: &str, bytes: &[u8]) {
    let f = site.dir.path().join("upload.tmp");
    std::fs::write(&f, bytes).expect("write");
    let out = site.run(&["store", "put", f.to_str().expect("utf8"), key], &[]);
    assert!(out.status.success(), "put {key}: {}", err(&out));
}

/// Puts real segments `segs` into the bucket.
pub(crate) fn put_segments(site: &Site, segs: std::ops::RangeInclusive<u64>) {
    for seg in segs {
        put(
            site,
            &wal_key(&wal_name(seg)),
            &wal_segment(&wal_name(seg), seg),
        );
    }
}

pub(crate) fn wal_key(name: &str) -> String {
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

pub(crate) fn err(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The files a directory holds (to prove a failure left nothing, not even a temp file).
pub(crate) fn names(dir: &Path) -> Vec<String> {
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
    with_prefetch(&site, 0);
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
    // Segment 3's closed partial does not fill the hole: PostgreSQL would end recovery inside
    // it and never read segment 4.
    let partial = |seg: u64| {
        let mut p = wal_segment(&wal_name(seg), seg);
        p[200_000..].fill(0);
        p
    };
    put(
        &site,
        &format!("{}.partial", wal_key(&wal_name(3))),
        &partial(3),
    );
    let out = restore(&site, &wal_name(3), &dir.join("p"));
    assert_eq!(out.status.code(), Some(200), "{}", err(&out));
    assert!(
        err(&out).contains("only its closed partial"),
        "{}",
        err(&out)
    );
    assert!(!dir.join("p").exists());
    // At the end of the timeline a closed partial is what there is: served for the segment.
    put(
        &site,
        &format!("{}.partial", wal_key(&wal_name(5))),
        &partial(5),
    );
    let out = restore(&site, &wal_name(5), &dir.join("p"));
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    assert!(std::fs::read(dir.join("p")).expect("partial") == partial(5));
    // A partial cut short is refused for its length, not served as the end of the archive.
    put(
        &site,
        &format!("{}.partial", wal_key(&wal_name(5))),
        &partial(5)[..300_000],
    );
    let out = restore(&site, &wal_name(5), &dir.join("q"));
    assert_eq!(out.status.code(), Some(200), "{}", err(&out));
    assert!(err(&out).contains("length is wrong"), "{}", err(&out));
    // The same cut in a compressed partial: lz4 between two blocks (its decoder alone reads
    // that as the end) and snappy between two chunks (its framing has no end mark) decode to a
    // prefix without error; the prefix is refused all the same, never served.
    // lz4 knows its end mark is missing; for snappy the length says it.
    for (codec, cut, why) in [
        ("lz4", lz4_cut(&partial(5)), "truncated"),
        ("snappy", snappy_cut(&partial(5)), "length is wrong"),
    ] {
        put(&site, &format!("{}.partial", wal_key(&wal_name(5))), &cut);
        let out = restore(&site, &wal_name(5), &dir.join("q"));
        assert_eq!(out.status.code(), Some(200), "{codec}: {}", err(&out));
        assert!(err(&out).contains(why), "{codec}: {}", err(&out));
        assert!(!dir.join("q").exists(), "{codec}");
    }
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
    with_prefetch(&site, 0);
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
    // A failing command's arguments may hold a passphrase: not in any message, at any level.
    let cfg = std::fs::read_to_string(&site.cfg).expect("cfg");
    std::fs::write(
        &site.cfg,
        cfg.replace(
            "decryption_command: tail -c +2",
            "decryption_command: false --passphrase PASSPHRASEc0ffee",
        ),
    )
    .expect("cfg");
    std::fs::remove_file(&dest).expect("rm");
    let out = site.run(
        &[
            "-vv",
            "wal-restore",
            "pg",
            &wal_name(1),
            dest.to_str().expect("utf8"),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(200), "{}", err(&out));
    assert!(err(&out).contains("(false) failed"), "{}", err(&out));
    assert!(!err(&out).contains("PASSPHRASEc0ffee"), "{}", err(&out));
    assert!(!dest.exists());
}

/// A data directory as PostgreSQL runs restore_command in it: cwd = PGDATA, %p relative.
pub(crate) fn pgdata(site: &Site) -> std::path::PathBuf {
    let d = site.dir.path().join("pgdata");
    std::fs::create_dir_all(d.join("pg_wal")).expect("pg_wal");
    d
}

/// Runs wal-restore as PostgreSQL does during recovery.
pub(crate) fn recover(site: &Site, pgdata: &Path, name: &str) -> Output {
    std::process::Command::new(crate::common::site::BIN)
        .current_dir(pgdata)
        .args(["--config", site.cfg.to_str().expect("utf8")])
        .args(["wal-restore", "pg", name, "pg_wal/RECOVERYXLOG"])
        .output()
        .expect("run")
}

/// Stops the prefetchers working on `dir` (they otherwise exit on their own when idle).
pub(crate) fn stop_prefetchers(dir: &Path) {
    let needle = dir.display().to_string();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("wal-prefetch") && cmd.contains(&needle) {
            let pid = e.file_name().to_string_lossy().into_owned();
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid])
                .status();
        }
    }
}

/// The spool directories under a base.
pub(crate) fn spools(base: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(base)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

pub(crate) fn with_prefetch(site: &Site, depth: usize) {
    let cfg = std::fs::read_to_string(&site.cfg).expect("cfg");
    std::fs::write(
        &site.cfg,
        cfg.replace("barman:\n", &format!("barman:\n  wal_prefetch: {depth}\n")),
    )
    .expect("cfg");
}

#[test]
fn recovery_takes_prefetched_segments_from_the_spool() {
    let site = Site::local();
    with_prefetch(&site, 4);
    // Every other segment compressed: spooled under the checksum of what it decodes to.
    for seg in 1..=12 {
        let plain = wal_segment(&wal_name(seg), seg);
        let stored = if seg % 2 == 0 {
            zstd::encode_all(&plain[..], 3).expect("zstd")
        } else {
            plain
        };
        put(&site, &wal_key(&wal_name(seg)), &stored);
    }
    let pg = pgdata(&site);
    let base = pg.join("pg_wal/.barmans3-spool");
    let (mut from_spool, mut decoded_from_spool) = (0, 0);
    for seg in 1..=12 {
        let out = recover(&site, &pg, &wal_name(seg));
        assert_eq!(out.status.code(), Some(0), "{seg}: {}", err(&out));
        if err(&out).contains("from the prefetch spool") {
            from_spool += 1;
            decoded_from_spool += u32::from(seg % 2 == 0);
        }
        let got = std::fs::read(pg.join("pg_wal/RECOVERYXLOG")).expect("restored");
        assert!(
            got == wal_segment(&wal_name(seg), seg),
            "segment {seg} differs"
        );
        std::fs::remove_file(pg.join("pg_wal/RECOVERYXLOG")).expect("rm");
        // Let the prefetcher run ahead, as replay would.
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        from_spool >= 8 && decoded_from_spool >= 4,
        "only {from_spool} of 12 segments ({decoded_from_spool} of the 6 compressed) came from the spool"
    );
    // The end of the archive is still exit 1.
    let out = recover(&site, &pg, &wal_name(13));
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    stop_prefetchers(&base);
}

#[test]
fn a_killed_prefetch_leaves_nothing_a_later_call_could_serve() {
    let prefix = crate::common::unique("prefetch-kill");
    let site = Site::new(&crate::common::garage().yaml(&prefix));
    with_prefetch(&site, 8);
    // Garage, so fetches take a moment.
    put_segments(&site, 1..=10);
    let pg = pgdata(&site);
    let base = pg.join("pg_wal/.barmans3-spool");
    let out = recover(&site, &pg, &wal_name(1));
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    // Kill the prefetcher in the middle of its downloads.
    std::thread::sleep(std::time::Duration::from_millis(30));
    stop_prefetchers(&base);
    for spool in spools(&base) {
        for e in std::fs::read_dir(&spool).expect("ls").flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            // Entries are named <segment>.<crc32c>; nothing else may hold a segment's bytes.
            let name = file.split('.').next().unwrap_or_default().to_string();
            if name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit()) && file != name {
                let seg = u64::from_str_radix(&name[16..], 16).expect("seg");
                assert!(
                    std::fs::read(e.path()).expect("spooled") == wal_segment(&name, seg),
                    "{name} in the spool is not the whole segment"
                );
            }
        }
    }
    // Every later call gives the exact segment, from the spool or the bucket.
    for seg in 2..=10 {
        let out = recover(&site, &pg, &wal_name(seg));
        assert_eq!(out.status.code(), Some(0), "{seg}: {}", err(&out));
        let got = std::fs::read(pg.join("pg_wal/RECOVERYXLOG")).expect("restored");
        assert!(
            got == wal_segment(&wal_name(seg), seg),
            "segment {seg} differs"
        );
    }
    stop_prefetchers(&base);
}

#[test]
fn a_spool_of_another_server_or_timeline_is_never_served() {
    let site = Site::local();
    with_prefetch(&site, 2);
    put(&site, &wal_key(&wal_name(5)), &wal_segment(&wal_name(5), 5));
    let pg = pgdata(&site);
    let base = pg.join("pg_wal/.barmans3-spool");
    // What an earlier recovery of another server left, and a segment of another timeline:
    // valid-looking files under names this recovery could ask for.
    let other = base.join("other-00000000");
    std::fs::create_dir_all(&other).expect("other");
    std::fs::write(other.join(wal_name(5)), wal_segment(&wal_name(5), 999)).expect("planted");
    // First call: the real segment, and this server's spool comes into being.
    let out = recover(&site, &pg, &wal_name(5));
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    assert!(
        std::fs::read(pg.join("pg_wal/RECOVERYXLOG")).expect("wal") == wal_segment(&wal_name(5), 5)
    );
    stop_prefetchers(&base);
    let mine = spools(&base)
        .into_iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("pg-"))
        })
        .expect("this server's spool");
    let tli2 = "000000020000000000000006";
    std::fs::write(mine.join(tli2), wal_segment(tli2, 6)).expect("planted");
    let out = recover(&site, &pg, "000000010000000000000006");
    assert_eq!(
        out.status.code(),
        Some(1),
        "another timeline's file was served: {}",
        err(&out)
    );
    stop_prefetchers(&base);
}

#[test]
fn a_decryption_command_that_never_ends_is_stopped_and_recovery_aborted() {
    let site = Site::local();
    with_prefetch(&site, 0);
    // "Encrypted" (an OpenPGP packet tag first), and a "decryption" that waits forever, like a
    // gpg asking for a passphrase nobody will type.
    let mut enc = vec![0x85];
    enc.extend_from_slice(&wal_segment(&wal_name(1), 1));
    put(&site, &wal_key(&wal_name(1)), &enc);
    let cfg = std::fs::read_to_string(&site.cfg).expect("cfg");
    std::fs::write(
        &site.cfg,
        cfg.replace(
            "barman:\n",
            "barman:\n  decryption_command: sleep 600\n  command_timeout: 1s\n",
        ),
    )
    .expect("cfg");
    let dest = site.dir.path().join("w");
    let started = std::time::Instant::now();
    let out = restore(&site, &wal_name(1), &dest);
    assert_eq!(out.status.code(), Some(200), "{}", err(&out));
    assert!(
        err(&out).contains("did not finish within 1s"),
        "{}",
        err(&out)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(!dest.exists());
}

/// `data` as an lz4 frame (64 KiB blocks) cut after its third block, before the end mark.
fn lz4_cut(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let info = lz4_flex::frame::FrameInfo::new().block_size(lz4_flex::frame::BlockSize::Max64KB);
    let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
    enc.write_all(data).expect("lz4");
    let frame = enc.finish().expect("lz4");
    // Magic, FLG, BD and the header checksum; then blocks of a size word and their bytes.
    let mut at = 7;
    for _ in 0..3 {
        let size = u32::from_le_bytes(frame[at..at + 4].try_into().expect("size"));
        at += 4 + (size & 0x7FFF_FFFF) as usize;
    }
    assert!(at < frame.len() - 4, "the frame has more than three blocks");
    frame[..at].to_vec()
}

/// `data` in snappy framing cut after its third chunk.
fn snappy_cut(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = snap::write::FrameEncoder::new(Vec::new());
    enc.write_all(data).expect("snappy");
    let stream = enc.into_inner().expect("snappy");
    // The stream identifier, then chunks of a type byte, a 3-byte length and their bytes.
    let mut at = 10;
    for _ in 0..3 {
        let len = u32::from_le_bytes([stream[at + 1], stream[at + 2], stream[at + 3], 0]);
        at += 4 + len as usize;
    }
    assert!(at < stream.len(), "the stream has more than three chunks");
    stream[..at].to_vec()
}
