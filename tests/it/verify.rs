//! `verify` and `verify-wal` on Garage and file://: a generated Barman site is shipped with
//! `wal-sync` and `base-sync` through the binary, then each problem is planted in the bucket
//! (a missing file, a truncated object, an object changed in place with its size kept, a missing
//! WAL of a backup's chain, a missing timeline history file) and must be reported on its own
//! line with exit 1; a clean bucket verifies with exit 0.

use std::process::Output;

use barmans3::store::{Body, Integrity, PutOptions, SharedStore};

use crate::common::site::{SYSTEM_ID, Site, make_real_archive, wal_segment, write_backup};
use crate::common::{Backend, garage, on_both, unique};

const ID: &str = "20261121T100000";
const ID2: &str = "20261122T100000";

/// A site and its bucket, with the means to tamper with the bucket behind barmans3's back.
struct Shipped {
    site: Site,
    /// The store's prefix ("" for file://).
    prefix: String,
    /// Garage, opened without a prefix (keys are full keys); `None` for file://.
    store: Option<SharedStore>,
}

impl Shipped {
    async fn new(b: Backend) -> Shipped {
        match b {
            Backend::Local => Shipped {
                site: Site::local(),
                prefix: String::new(),
                store: None,
            },
            Backend::Garage => {
                let prefix = unique("verify");
                let cfg = garage().config("");
                let store = barmans3::store::open(&cfg.location, &cfg.s3)
                    .await
                    .expect("open garage");
                let site = Site::new(&garage().yaml(&prefix));
                // Backup files above the part size go up in parts, so --quick meets a
                // composite checksum.
                let text = std::fs::read_to_string(&site.cfg).expect("cfg");
                let text = text.replace("barman:\n", "barman:\n  one_put_max: 5MiB\n");
                std::fs::write(&site.cfg, text).expect("cfg");
                Shipped {
                    site,
                    prefix,
                    store: Some(store),
                }
            }
        }
    }

    /// The full key of `rel` (relative to the configured prefix).
    fn key(&self, rel: &str) -> String {
        barmans3::store::join_key(&self.prefix, rel)
    }

    async fn remove(&self, rel: &str) {
        match &self.store {
            None => std::fs::remove_file(self.site.dir.path().join("bucket").join(rel))
                .expect("remove from the bucket"),
            Some(s) => {
                let failed = s.delete_batch(&[self.key(rel)]).await.expect("delete");
                assert!(failed.is_empty(), "{failed:?}");
            }
        }
    }

    /// Replaces an object's bytes: on file:// by writing the file in place (the store's own
    /// record of it goes stale, as with bit rot); on Garage by a plain PUT.
    async fn replace(&self, rel: &str, body: Vec<u8>) {
        match &self.store {
            None => std::fs::write(self.site.dir.path().join("bucket").join(rel), body)
                .expect("write into the bucket"),
            Some(s) => {
                let body = Body::bytes(body.into(), Integrity::None);
                s.put(&self.key(rel), body, &PutOptions::default())
                    .await
                    .expect("put");
            }
        }
    }

    async fn read(&self, rel: &str) -> Vec<u8> {
        let out = self.site.run(&["store", "get", rel, "-"], &[]);
        assert!(out.status.success(), "store get {rel}: {}", err(&out));
        out.stdout
    }

    fn run(&self, args: &[&str]) -> Output {
        self.site.run(args, &[])
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", err(&out));
        out
    }
}

fn err(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

/// A DONE backup `id` of server `pg` with a 12 MiB file (multipart on Garage), a 1 MiB file,
/// and the small files of [`write_backup`]; its backup.info names `begin`..`end` and 1 MiB
/// segments, as the archive [`make_real_archive`] writes.
fn backup(site: &Site, id: &str, begin: &str, end: &str, timeline: u32) {
    write_backup(site, id, "DONE");
    let data = site.dir.path().join("barman/pg/base").join(id).join("data");
    std::fs::create_dir_all(data.join("base/1")).expect("mkdir");
    std::fs::write(data.join("base/1/16384"), crate::common::data(12 << 20, 1)).expect("w");
    std::fs::write(data.join("base/1/1259"), crate::common::data(1 << 20, 2)).expect("w");
    std::fs::write(
        site.dir.path().join(format!("barman/pg/meta/{id}-backup.info")),
        format!(
            "backup_id={id}\nstatus=DONE\nbegin_wal={begin}\nend_wal={end}\ntimeline={timeline}\nxlog_segment_size=1048576\n"
        ),
    )
    .expect("backup.info");
    site.queue(id, "DONE");
}

/// Segments 1..=8 of timeline 1 and a backup needing 3..=5, shipped.
fn ship(s: &Shipped) {
    make_real_archive(&s.site.wals(), 1, 8);
    backup(
        &s.site,
        ID,
        "000000010000000000000003",
        "000000010000000000000005",
        1,
    );
    s.ok(&["wal-sync", "pg"]);
    s.ok(&["base-sync"]);
}

async fn a_clean_backup_and_archive_verify(b: Backend) {
    let s = Shipped::new(b).await;
    ship(&s);
    let out = s.ok(&["verify", "pg"]);
    assert!(lines(&out).is_empty(), "{:?}", lines(&out));
    assert!(err(&out).contains("no problem found"), "{}", err(&out));
    let v = json(&s.ok(&["--json", "verify", "pg"]));
    assert_eq!(v["ok"], true);
    assert_eq!(v["backups"], serde_json::json!([ID]));
    // Four data files, three WAL segments (3..=5): every one read back and checked by CRC32C.
    assert_eq!(v["objects"], 7, "{v}");
    assert_eq!(v["crc32c_checked"], 7, "{v}");
    assert_eq!(v["wals"], 3, "{v}");
    let data_bytes = 8192 + 3 + (12 << 20) + (1 << 20);
    assert_eq!(v["bytes_read"], data_bytes + 3 * (1 << 20), "{v}");
    assert!(v["requests"]["get"].as_u64().is_some_and(|n| n >= 7), "{v}");
    // --quick: HEADs only, nothing read back.
    let q = json(&s.ok(&["--json", "verify", "--quick", "pg", ID]));
    assert_eq!(q["objects"], 4, "{q}");
    assert_eq!(
        q["crc32c_checked"].as_u64().expect("n") + q["size_only"].as_u64().expect("n"),
        4
    );
    assert_eq!(q["bytes_read"], 0, "{q}");
    assert!(
        q["requests"]["head"].as_u64().is_some_and(|n| n >= 4),
        "{q}"
    );
    // One request per file: no GET of a file's first bytes when it has its recorded size.
    assert!(q["requests"]["get"].as_u64().unwrap_or(0) < 4, "{q}");
    if matches!(b, Backend::Garage) {
        // The 12 MiB file went up in 5 MiB parts: its checksum is composite, so size only.
        assert!(q["size_only"].as_u64().is_some_and(|n| n >= 1), "{q}");
        let out = s.ok(&["verify", "--quick", "pg"]);
        assert!(
            err(&out).contains("only their size was compared"),
            "{}",
            err(&out)
        );
    }
    let out = s.ok(&["verify-wal", "pg"]);
    assert!(lines(&out).is_empty(), "{:?}", lines(&out));
    // -q, as from cron: nothing at all on success, so no mail.
    for args in [&["-q", "verify", "pg"][..], &["-q", "verify-wal", "pg"]] {
        let out = s.ok(args);
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "{}",
            err(&out)
        );
    }
    // A backup that is not there is a problem; a malformed id is a usage error.
    let out = s.run(&["verify", "pg", "20991231T000000"]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert_eq!(
        lines(&out),
        [format!(
            "incomplete {}: the backup is not in the bucket",
            s.key("pg/base/20991231T000000/")
        )]
    );
    assert_eq!(s.run(&["verify", "pg", "latest"]).status.code(), Some(2));
    // A server with nothing in the bucket is not "verified".
    let out = s.run(&["verify", "other"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        lines(&out)[0].starts_with("incomplete "),
        "{:?}",
        lines(&out)
    );
}

async fn verify_finds_missing_truncated_and_changed_files(b: Backend) {
    let s = Shipped::new(b).await;
    ship(&s);
    let base = format!("pg/base/{ID}/data");
    s.remove(&format!("{base}/PG_VERSION")).await;
    s.replace(&format!("{base}/global/pg_control"), vec![7u8; 100])
        .await;
    let mut changed = s.read(&format!("{base}/base/1/1259")).await;
    changed[4096] ^= 0x01;
    s.replace(&format!("{base}/base/1/1259"), changed).await;

    let out = s.run(&["verify", "pg"]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    let got = lines(&out);
    let missing = format!(
        "missing {}: not in the bucket",
        s.key(&format!("{base}/PG_VERSION"))
    );
    let size = format!(
        "size {}: 100 bytes in the store, the manifest says 8192 bytes",
        s.key(&format!("{base}/global/pg_control"))
    );
    let checksum = format!("checksum {}: ", s.key(&format!("{base}/base/1/1259")));
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0], missing);
    assert_eq!(got[1], size);
    assert!(got[2].starts_with(&checksum), "{got:?}");
    assert!(err(&out).contains("3 PROBLEM(S) found"), "{}", err(&out));
    let v = json(&s.run(&["--json", "verify", "pg"]));
    assert_eq!(v["ok"], false);
    let kinds: Vec<&str> = v["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["missing", "size", "checksum"]);
    assert_eq!(v["problems"][0]["backup"], ID);

    // HEAD only: the missing and the truncated file; the change in place only where the store
    // keeps a full-object checksum of the new bytes (never a false alarm either way).
    let out = s.run(&["verify", "--quick", "pg"]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    let got = lines(&out);
    assert_eq!(got[..2], [missing, size], "{got:?}");
    assert!(
        got.len() == 2 || (got.len() == 3 && got[2].starts_with(&checksum)),
        "{got:?}"
    );
}

async fn verify_finds_a_missing_wal_in_a_backups_chain(b: Backend) {
    let s = Shipped::new(b).await;
    ship(&s);
    let wal = "pg/wals/0000000100000000/000000010000000000000004";
    s.remove(wal).await;
    let want = format!(
        "wal-missing {}: WAL segment not in the bucket (backup {ID} needs it)",
        s.key(wal)
    );
    for args in [&["verify", "pg"][..], &["verify", "--quick", "pg", ID]] {
        let out = s.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", err(&out));
        assert_eq!(lines(&out), std::slice::from_ref(&want), "{args:?}");
    }
    let out = s.run(&["verify-wal", "pg"]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert_eq!(
        lines(&out),
        [format!(
            "wal-missing {}: WAL segment not in the bucket; needed by backup(s) {ID}",
            s.key(wal)
        )]
    );
    // A run of missing segments past the backup is one line.
    for n in [6, 7] {
        s.remove(&format!(
            "pg/wals/0000000100000000/00000001000000000000000{n}"
        ))
        .await;
    }
    let out = s.run(&["verify-wal", "pg"]);
    let got = lines(&out);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        got[1],
        format!(
            "wal-missing {}: 2 WAL segments not in the bucket, 000000010000000000000006 to 000000010000000000000007",
            s.key("pg/wals/0000000100000000/000000010000000000000006")
        )
    );
}

async fn verify_wal_finds_a_missing_history_file(b: Backend) {
    let s = Shipped::new(b).await;
    // Timeline 1 to segment 5; the switch to timeline 2 at 0/500000 (the start of segment 5 of
    // 1 MiB segments), timeline 2 from segment 5 on, and a second backup on timeline 2.
    make_real_archive(&s.site.wals(), 1, 5);
    let dir = s.site.wals().join("0000000200000000");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for n in 5..=7 {
        let name = format!("0000000200000000000000{n:02X}");
        std::fs::write(dir.join(&name), wal_segment(&name, n)).expect("wal");
    }
    std::fs::write(
        s.site.wals().join("00000002.history"),
        "1\t0/500000\tno recovery target specified\n",
    )
    .expect("history");
    backup(
        &s.site,
        ID,
        "000000010000000000000002",
        "000000010000000000000003",
        1,
    );
    backup(
        &s.site,
        ID2,
        "000000020000000000000006",
        "000000020000000000000006",
        2,
    );
    s.ok(&["wal-sync", "pg"]);
    s.ok(&["base-sync"]);
    let out = s.ok(&["verify-wal", "pg"]);
    assert!(lines(&out).is_empty(), "{:?}", lines(&out));
    s.ok(&["verify", "pg"]);

    s.remove("pg/wals/00000002.history").await;
    let key = s.key("pg/wals/00000002.history");
    let out = s.run(&["verify-wal", "pg"]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert_eq!(
        lines(&out),
        [format!(
            "history-missing {key}: timeline 2's history file is not in the bucket: recovery cannot follow the switch to timeline 2"
        )]
    );
    let out = s.run(&["verify", "pg"]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert_eq!(
        lines(&out),
        [format!(
            "history-missing {key}: timeline 2's history file is not in the bucket: recovery cannot follow the switch to timeline 2 (backup {ID2} needs it)"
        )]
    );
    // The last segment of timeline 1 before the switch is needed too.
    s.remove("pg/wals/0000000100000000/000000010000000000000004")
        .await;
    let got = lines(&s.run(&["verify-wal", "pg"]));
    assert!(
        got.iter().any(|l| l.starts_with(&format!(
            "wal-missing {}",
            s.key("pg/wals/0000000100000000/000000010000000000000004")
        ))),
        "{got:?}"
    );
}

/// verify-wal reads what nothing else reads: a segment damaged after the newest backup's end
/// (which `verify` of the backup never needs) is found by `--read`, and the recovery window
/// stops before it. Without `--read`, one HEAD per object.
async fn verify_wal_reads_every_segment_and_reports_the_window(b: Backend) {
    let s = Shipped::new(b).await;
    ship(&s);
    let seg = |n: u64| format!("00000001000000000000000{n}");
    let window = |out: &Output| {
        let v = json(out);
        (
            v["window"]["from_wal"].as_str().unwrap_or("").to_string(),
            v["window"]["to_wal"].as_str().unwrap_or("").to_string(),
        )
    };
    let quick = s.ok(&["--json", "verify-wal", "pg"]);
    let v = json(&quick);
    assert_eq!(window(&quick), (seg(5), seg(8)), "{v}");
    assert_eq!(
        v["stored_crc32c"].as_u64().expect("n") + v["size_only"].as_u64().expect("n"),
        8,
        "one HEAD per segment: {v}"
    );
    assert!(
        v["requests"]["head"].as_u64().is_some_and(|n| n >= 8),
        "{v}"
    );
    // One request per WAL object: the listing gave its size, so nothing of its body is read
    // (the GETs left are the backup's own metadata).
    assert!(
        v["requests"]["get"].as_u64().unwrap_or(0) < 8,
        "no GET per WAL object: {v}"
    );
    assert_eq!(v["bytes_read"], 0, "{v}");
    let read = s.ok(&["--json", "verify-wal", "--read", "pg"]);
    let v = json(&read);
    assert_eq!(v["bytes_read"], 8 << 20, "{v}");
    assert_eq!(window(&read), (seg(5), seg(8)), "{v}");
    let out = s.ok(&["verify-wal", "pg"]);
    assert!(
        err(&out).contains(&format!(
            "recoverable from {} (end of backup {ID}) to {}",
            seg(5),
            seg(8)
        )),
        "{}",
        err(&out)
    );

    // One flipped byte in segment 7, after the backup's end: the backup verifies (it does not
    // need segment 7), the archive read back does not.
    let rel = format!("pg/wals/0000000100000000/{}", seg(7));
    let mut bytes = s.read(&rel).await;
    bytes[300_000] ^= 0x10;
    s.replace(&rel, bytes).await;
    s.ok(&["verify", "pg"]);
    let out = s.run(&["--json", "verify-wal", "--read", "pg"]);
    let v = json(&out);
    match b {
        // file:// keeps the checksum it was written with: bit rot shows.
        Backend::Local => {
            assert_eq!(out.status.code(), Some(1), "{}", err(&out));
            assert_eq!(v["problems"][0]["kind"], "checksum", "{v}");
            assert_eq!(v["problems"][0]["key"], s.key(&rel), "{v}");
            assert_eq!(window(&out), (seg(5), seg(6)), "{v}");
            let out = s.run(&["verify-wal", "--read", "pg"]);
            assert!(lines(&out)[0].starts_with(&format!("checksum {}: ", s.key(&rel))));
            assert!(
                err(&out).contains(&format!("to {} (newest", seg(6))),
                "{}",
                err(&out)
            );
        }
        // Garage cannot be given bit rot: a PUT stores the new bytes with their own checksum.
        // A segment gone ends the window the same way.
        Backend::Garage => {
            s.remove(&rel).await;
            let out = s.run(&["--json", "verify-wal", "pg"]);
            let v = json(&out);
            assert_eq!(out.status.code(), Some(1), "{v}");
            assert_eq!(v["problems"][0]["kind"], "wal-missing", "{v}");
            assert_eq!(window(&out), (seg(5), seg(6)), "{v}");
        }
    }
}

/// A backup's chain is checked against that backup's database system (backup.info), not the
/// bucket's identity.json: after a pg_upgrade the identity names the new system and the old
/// backups still verify; a planted segment of another system is found.
async fn verify_checks_chain_segments_against_the_backups_system(b: Backend) {
    let s = Shipped::new(b).await;
    make_real_archive(&s.site.wals(), 1, 8);
    backup(
        &s.site,
        ID,
        "000000010000000000000003",
        "000000010000000000000005",
        1,
    );
    let info = s
        .site
        .dir
        .path()
        .join(format!("barman/pg/meta/{ID}-backup.info"));
    let mut text = std::fs::read_to_string(&info).expect("info");
    text.push_str(&format!("systemid={SYSTEM_ID}\n"));
    std::fs::write(&info, text).expect("info");
    s.ok(&["wal-sync", "pg"]);
    s.ok(&["base-sync"]);
    // The bucket's identity now names another system (a pg_upgrade and a new base-sync).
    let identity = s.site.dir.path().join("identity.json");
    std::fs::write(&identity, "{\"systemid\": \"7399999999999999999\"}").expect("identity");
    s.ok(&[
        "store",
        "put",
        identity.to_str().expect("utf8"),
        "pg/identity.json",
    ]);
    let out = s.ok(&["verify", "pg"]);
    assert!(lines(&out).is_empty(), "{:?}", lines(&out));

    // Segment 4 replaced (through barmans3, so its stored checksum is right) by a segment of
    // the same name from another system.
    let name = "000000010000000000000004";
    let mut other = wal_segment(name, 4);
    other[24..32].copy_from_slice(&7_322_222_222_222_222_222u64.to_le_bytes());
    let planted = s.site.dir.path().join("planted");
    std::fs::write(&planted, &other).expect("planted");
    let rel = format!("pg/wals/0000000100000000/{name}");
    s.ok(&["store", "put", planted.to_str().expect("utf8"), &rel]);
    let out = s.run(&["verify", "pg"]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert_eq!(
        lines(&out),
        [format!(
            "wal-system {}: belongs to database system 7322222222222222222, the backup to {SYSTEM_ID} (its backup.info): recovery of the backup cannot use it",
            s.key(&rel)
        )]
    );
    assert_eq!(
        json(&s.run(&["--json", "verify", "pg"]))["problems"][0]["backup"],
        ID
    );
}

/// Objects whose keys hold an ESC and a newline (characters XML 1.0 cannot carry, planted by
/// whoever can write the bucket) beside a server's WAL and backups: the listings still read
/// (on S3 they ask for URL-encoded keys), so wal-sync, verify and base-ls work on, and a stray
/// key is printed escaped, never as a line of its own.
async fn keys_xml_cannot_carry_do_not_stop_the_listings(b: Backend) {
    let s = Shipped::new(b).await;
    ship(&s);
    let planted = [
        "pg/wals/0000000100000000/\x1b[2J\nforged",
        "pg/base/\x1b]0;x\x07",
        "pg/base/20261121T100000/data/evil\x1b\n",
    ];
    for rel in planted {
        s.replace(rel, b"planted".to_vec()).await;
    }
    let out = s.ok(&["store", "ls", "pg/"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("pg/wals/0000000100000000/\\x1b[2J\\nforged"),
        "{text}"
    );
    assert!(
        text.contains("pg/base/20261121T100000/data/evil\\x1b\\n"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "{text}");
    // A new segment is shipped past the planted key.
    make_real_archive(&s.site.wals(), 9, 1);
    s.ok(&["wal-sync", "pg"]);
    let out = s.ok(&[
        "store",
        "ls",
        "pg/wals/0000000100000000/000000010000000000000009",
    ]);
    assert_eq!(lines(&out).len(), 1, "{:?}", lines(&out));
    let ls = s.ok(&["base-ls", "pg"]);
    let listed = String::from_utf8_lossy(&ls.stdout).into_owned();
    assert!(listed.contains(ID), "{listed}");
    assert!(!listed.contains('\x1b'), "{listed}");
    // verify lists the backups and the archive; whatever it says of a stray key is one
    // escaped line, and the backup itself still verifies.
    let out = s.run(&["verify", "pg"]);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", err(&out));
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &err(&out);
    assert!(!said.contains('\x1b'), "{said}");
    assert!(!said.contains("cannot be read"), "{said}");
    let v = json(&s.run(&["--json", "verify", "pg"]));
    assert_eq!(v["backups"], serde_json::json!([ID]), "{v}");
    // Such keys can be deleted too (on S3 not in a DeleteObjects body, which is XML).
    for rel in planted {
        s.remove(rel).await;
    }
    let out = s.ok(&["store", "ls", "pg/"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains("\\x1b"), "{text}");
}

on_both!(
    keys_xml_cannot_carry_do_not_stop_the_listings,
    verify_wal_reads_every_segment_and_reports_the_window,
    verify_checks_chain_segments_against_the_backups_system,
    a_clean_backup_and_archive_verify,
    verify_finds_missing_truncated_and_changed_files,
    verify_finds_a_missing_wal_in_a_backups_chain,
    verify_wal_finds_a_missing_history_file,
);
