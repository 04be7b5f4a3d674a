//! `replicate --to STORE` between two buckets of the test Garage: streamed (the replica's own
//! key cannot read the main bucket) and server-side (one key for both); a second run sends
//! nothing; the replica lists, verifies and restores alone (`--store NAME`); a run killed with
//! SIGKILL before the manifest lists nothing early, and the next run completes without sending
//! the files again.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::faults::FaultProxy;
use crate::common::site::{BIN, Site, forget_backup, make_archive, write_backup};
use crate::common::{data, garage, unique};

pub(crate) const ID: &str = "20260301T010203";

/// A site with one backup (a 12 MiB file among small ones, so parts are involved) and eight
/// WAL files in the main bucket, and `stores:` naming the second bucket.
fn site(prefix: &str, stores_yaml: &str) -> Site {
    site_with(prefix, stores_yaml, 12 << 20)
}

/// [`site`] with a data file of `big` bytes.
fn site_with(prefix: &str, stores_yaml: &str, big: usize) -> Site {
    let g = garage();
    backed_up(Site::new(&format!("{}{stores_yaml}", g.yaml(prefix))), big)
}

/// `s` with the backup and WAL files of [`site`] shipped to its main bucket.
fn backed_up(s: Site, big: usize) -> Site {
    write_backup(&s, ID, "DONE");
    let base = s
        .dir
        .path()
        .join("barman/pg/base")
        .join(ID)
        .join("data/base/1");
    std::fs::create_dir_all(&base).expect("mkdir");
    std::fs::write(base.join("16384"), data(big, 7)).expect("big file");
    for i in 0..6 {
        std::fs::write(base.join(format!("{}", 2000 + i)), data(1000 + i, i as u64)).expect("w");
    }
    make_archive(&s.wals(), 1, 8);
    s.queue(ID, "DONE");
    ok(&s, &["base-sync"]);
    ok(&s, &["wal-sync", "pg"]);
    s
}

pub(crate) fn ok(s: &Site, args: &[&str]) -> Output {
    let out = s.run(args, &[]);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub(crate) fn json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).expect("JSON on stdout")
}

/// The replica alone: base-ls lists the backup complete, verify reads every object, and
/// base-restore rebuilds the files byte for byte.
fn replica_restores_alone(s: &Site, store: &str) {
    let ls =
        String::from_utf8_lossy(&ok(s, &["--store", store, "base-ls", "pg"]).stdout).into_owned();
    let line = ls
        .lines()
        .find(|l| l.starts_with(ID))
        .expect("the backup on the replica");
    assert!(line.trim_end().ends_with("yes"), "{ls}");
    ok(s, &["--store", store, "verify", "pg"]);
    let dest = s.dir.path().join("restored");
    ok(
        s,
        &[
            "--store",
            store,
            "base-restore",
            "pg",
            ID,
            dest.to_str().expect("utf8"),
        ],
    );
    let src = s.dir.path().join("barman/pg/base").join(ID).join("data");
    for rel in [
        "base/1/16384",
        "base/1/2003",
        "PG_VERSION",
        "global/pg_control",
    ] {
        assert_eq!(
            std::fs::read(dest.join(rel)).expect("restored file"),
            std::fs::read(src.join(rel)).expect("source file"),
            "{rel}"
        );
    }
}

pub(crate) fn counts(v: &serde_json::Value) -> (u64, u64, u64) {
    let c = &v["counts"];
    (
        c["streamed"].as_u64().expect("streamed"),
        c["server_side"].as_u64().expect("server_side"),
        c["present"].as_u64().expect("present"),
    )
}

fn check_report(v: &serde_json::Value) {
    let srv = &v["servers"][0];
    assert_eq!(srv["server"], "pg");
    assert_eq!(srv["lag"]["objects"], 0, "{v}");
    assert_eq!(srv["lag"]["bytes"], 0, "{v}");
    let stores = srv["stores"].as_array().expect("stores");
    assert_eq!(stores.len(), 2);
    for h in stores {
        assert_eq!(h["backups"], serde_json::json!([ID]), "{v}");
        assert_eq!(h["wal_files"], 8, "{v}");
        assert_eq!(h["wal_first"], "000000010000000000000001");
        assert_eq!(h["wal_last"], "000000010000000000000008");
    }
}

#[test]
fn streamed_replica_is_complete_idempotent_and_restores_alone() {
    let g = garage();
    let prefix = unique("repl-stream");
    let s = site(&prefix, &g.second_store_yaml("offsite", &prefix, true));
    let text = std::fs::read_to_string(&s.cfg).expect("cfg");
    std::fs::write(
        &s.cfg,
        text.replacen("barman:\n", "barman:\n  replica_max_lag: 1s\n", 1),
    )
    .expect("cfg");
    // Before: the replica lags by everything, and check says so once it is older than 1s.
    std::thread::sleep(Duration::from_secs(2));
    let st: serde_json::Value =
        serde_json::from_slice(&ok(&s, &["--json", "status"]).stdout).expect("status JSON");
    assert_eq!(st["replicas"][0]["store"], "offsite", "{st}");
    assert_eq!(st["replicas"][0]["lag"]["objects"], 19, "{st}");
    let check = s.run(&["check"], &[]);
    let line = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(check.status.code(), Some(1), "{line}");
    assert!(line.contains("replica offsite of pg lags"), "{line}");
    let first = json(&ok(&s, &["--json", "replicate", "--to", "offsite", "pg"]));
    let (streamed, server_side, _) = counts(&first);
    assert_eq!(server_side, 0, "another key: no server-side copy");
    // 9 backup files + manifest + backup.info + 8 WALs.
    assert!(streamed >= 19, "{first}");
    assert_eq!(first["servers"][0]["copied"], serde_json::json!([ID]));
    check_report(&first);
    let second = json(&ok(&s, &["--json", "replicate", "--to", "offsite", "pg"]));
    assert_eq!(counts(&second).0 + counts(&second).1, 0, "{second}");
    assert_eq!(
        second["target"]["bytes_up"], 0,
        "a second run sends nothing: {second}"
    );
    assert_eq!(second["servers"][0]["copied"], serde_json::json!([]));
    check_report(&second);
    // After: no lag in status, check or the textfile.
    let st: serde_json::Value =
        serde_json::from_slice(&ok(&s, &["--json", "status"]).stdout).expect("status JSON");
    assert_eq!(st["replicas"][0]["lag"]["objects"], 0, "{st}");
    let line = String::from_utf8_lossy(&s.run(&["check"], &[]).stdout).into_owned();
    assert!(!line.contains("replica"), "{line}");
    let prom = s.dir.path().join("metrics.prom");
    ok(
        &s,
        &["status", "--prometheus", prom.to_str().expect("utf8")],
    );
    let text = std::fs::read_to_string(&prom).expect("textfile");
    assert!(
        text.contains("barmans3_replica_lag_bytes{server=\"pg\",store=\"offsite\"} 0"),
        "{text}"
    );
    replica_restores_alone(&s, "offsite");
}

#[test]
fn server_side_replica_when_one_key_reaches_both_buckets() {
    let g = garage();
    let prefix = unique("repl-copy");
    let s = site(&prefix, &g.second_store_yaml("twin", &prefix, false));
    let first = json(&ok(&s, &["--json", "replicate", "--to", "twin", "--all"]));
    let (streamed, server_side, _) = counts(&first);
    assert!(server_side >= 19, "{first}");
    assert_eq!(streamed, 0, "{first}");
    assert_eq!(
        first["target"]["bytes_up"], 0,
        "nothing sent through this host: {first}"
    );
    check_report(&first);
    let again = json(&ok(&s, &["--json", "replicate", "--to", "twin", "pg"]));
    assert_eq!(counts(&again).0 + counts(&again).1, 0, "{again}");
    replica_restores_alone(&s, "twin");
}

#[test]
fn a_killed_replicate_lists_nothing_early_and_the_next_run_completes() {
    let g = garage();
    let prefix = unique("repl-kill");
    let proxy = FaultProxy::start(g.endpoint(), 0.0, 0, Duration::ZERO);
    // The replica reached through the proxy, which holds the manifest's PUT.
    let yaml = g
        .second_store_yaml("offsite", &prefix, true)
        .replace(g.endpoint(), &proxy.endpoint);
    let s = site(&prefix, &yaml);
    proxy.hold("barmans3.manifest");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&s.cfg)
        .args(["replicate", "--to", "offsite", "pg"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    while !proxy.holding() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the manifest never came"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "replicate ended early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    proxy.release();
    // Every data file is there, but the backup is not listed complete.
    let ls =
        String::from_utf8_lossy(&ok(&s, &["--store", "offsite", "--json", "base-ls", "pg"]).stdout)
            .into_owned();
    let rows: serde_json::Value = serde_json::from_str(&ls).expect("json");
    assert!(
        rows.as_array()
            .expect("rows")
            .iter()
            .all(|r| r["complete"] != serde_json::json!(true)),
        "listed early: {ls}"
    );
    let v = json(&ok(&s, &["--json", "replicate", "--to", "offsite", "pg"]));
    let (streamed, _, present) = counts(&v);
    assert!(
        present >= 9,
        "the files sent before the kill are not sent again: {v}"
    );
    // The manifest, backup.info and the WAL files.
    assert!(streamed <= 10, "{v}");
    check_report(&v);
    replica_restores_alone(&s, "offsite");
    assert!(Path::new(&s.cfg).exists());
}

/// Backup `id` of server `pg` in Barman's directory, needing WALs from segment `begin` on.
pub(crate) fn local_backup(s: &Site, id: &str, begin: u64) {
    write_backup(s, id, "DONE");
    let wal = crate::common::site::wal_name(begin);
    std::fs::write(
        s.dir
            .path()
            .join(format!("barman/pg/meta/{id}-backup.info")),
        format!("begin_wal={wal}\nend_wal={wal}\nstatus=DONE\n"),
    )
    .expect("info");
}

pub(crate) fn replica_backups(s: &Site, store: &str) -> Vec<String> {
    let out = ok(s, &["--store", store, "--json", "base-ls", "pg"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    rows.as_array()
        .expect("rows")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect()
}

#[test]
fn prune_deletes_from_the_replica_only_what_the_main_store_deleted_under_full_syncs_rules() {
    let g = garage();
    let prefix = unique("repl-prune");
    let (a, b, c) = ("20260301T010203", "20260302T010203", "20260303T010203");
    let s = Site::new(&format!(
        "{}{}",
        g.yaml(&prefix),
        g.second_store_yaml("offsite", &prefix, true)
    ));
    let text = std::fs::read_to_string(&s.cfg).expect("cfg");
    std::fs::write(
        &s.cfg,
        text.replacen("barman:\n", "barman:\n  min_remote_backups: 1\n", 1),
    )
    .expect("cfg");
    for (id, begin) in [(a, 1), (b, 3), (c, 5)] {
        local_backup(&s, id, begin);
    }
    make_archive(&s.wals(), 1, 8);
    ok(&s, &["full-sync", "pg"]);
    ok(&s, &["replicate", "--to", "offsite", "pg"]);
    assert_eq!(replica_backups(&s, "offsite"), [a, b, c]);

    // Barman deleted B, but the main store still has it: the replica keeps it.
    let forget = |id: &str| forget_backup(&s, id, &[]);
    forget(b);
    let v = json(&ok(
        &s,
        &["--json", "replicate", "--to", "offsite", "--prune", "pg"],
    ));
    assert_eq!(
        v["servers"][0]["pruned"]["backups"],
        serde_json::json!([]),
        "{v}"
    );
    assert_eq!(v["servers"][0]["pruned"]["wals"], 0, "{v}");
    assert_eq!(replica_backups(&s, "offsite"), [a, b, c]);

    // Barman deleted A and its first two WALs; full-sync deletes them from the main store
    // (B as well), and --prune then from the replica: the same backups, the same WALs.
    forget_backup(&s, a, &[1, 2]);
    ok(&s, &["full-sync", "pg"]);
    let main_now =
        String::from_utf8_lossy(&ok(&s, &["--json", "base-ls", "pg"]).stdout).into_owned();
    assert!(!main_now.contains(a) && main_now.contains(c), "{main_now}");
    let v = json(&ok(
        &s,
        &["--json", "replicate", "--to", "offsite", "--prune", "pg"],
    ));
    let pruned = &v["servers"][0]["pruned"];
    let mut gone: Vec<String> = pruned["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .map(|x| x.as_str().expect("id").to_string())
        .collect();
    gone.sort();
    let main_ids: Vec<String> = serde_json::from_str::<serde_json::Value>(&main_now)
        .expect("json")
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(replica_backups(&s, "offsite"), main_ids, "{v}");
    assert!(gone.contains(&a.to_string()), "{v}");
    assert_eq!(pruned["wals"], 2, "{v}");
    let stores = v["servers"][0]["stores"].as_array().expect("stores");
    assert_eq!(stores[1]["wal_first"], "000000010000000000000003", "{v}");
    assert_eq!(stores[0]["wal_first"], stores[1]["wal_first"], "{v}");
    // Nothing more to prune; the replica still restores alone.
    let again = json(&ok(
        &s,
        &["--json", "replicate", "--to", "offsite", "--prune", "pg"],
    ));
    assert_eq!(
        again["servers"][0]["pruned"]["backups"],
        serde_json::json!([]),
        "{again}"
    );
    ok(&s, &["--store", "offsite", "verify", "pg"]);
}

/// The replica on moto, with Object Lock and other storage classes than the main store's:
/// every replicated object carries the replica's class for its kind and a retain-until date
/// about a day ahead (HEAD on each), a second run sends nothing, and the replica restores alone.
#[test]
fn a_locked_replica_in_another_storage_class_carries_both_on_every_object() {
    let m = crate::common::moto::moto();
    let bucket = m.bucket(true);
    let prefix = unique("repl-vault");
    let vault = format!(
        "stores:\n  vault:\n    s3:\n      endpoint: {}\n      region: us-east-1\n      bucket: {bucket}\n      prefix: {prefix}\n      access_key_id: test\n      secret_access_key: test\n      part_size: 5MiB\n      storage_class: STANDARD_IA\n      storage_classes:\n        wal: ONEZONE_IA\n      object_lock:\n        mode: governance\n        retain: 1d\n",
        m.endpoint
    );
    // Every object below one part: moto keeps no lock from a multipart upload.
    let s = site_with(&prefix, &vault, 1 << 20);
    let first = json(&ok(&s, &["--json", "replicate", "--to", "vault", "pg"]));
    check_report(&first);
    let keys = m.keys(&bucket, &prefix);
    // 9 backup files + manifest + backup.info + 8 WALs.
    assert_eq!(keys.len(), 19, "{keys:?}");
    let day_ahead = chrono::Utc::now() + chrono::Duration::hours(23);
    for key in &keys {
        let (class, until) = m.head(&bucket, key);
        let want = if key.contains("/wals/") {
            "ONEZONE_IA"
        } else {
            "STANDARD_IA"
        };
        assert_eq!(class, want, "{key}");
        let until = chrono::DateTime::parse_from_rfc3339(&until)
            .unwrap_or_else(|e| panic!("{key}: retain-until {until:?}: {e}"));
        assert!(until > day_ahead, "{key}: retained until {until}");
    }
    let again = json(&ok(&s, &["--json", "replicate", "--to", "vault", "pg"]));
    assert_eq!(counts(&again).0 + counts(&again).1, 0, "{again}");
    replica_restores_alone(&s, "vault");
}

/// A bucket under client-side encryption replicates as it is stored: the replica's objects are
/// the main store's ciphertext byte for byte (nothing opened or sealed again on the way), its
/// backup is listed complete (backup.info and the manifest are read through the identity), and
/// it restores alone. Before, the manifest was read as stored and an encrypted bucket
/// replicated no backup.
#[test]
fn an_encrypted_bucket_replicates_as_ciphertext_and_restores_alone() {
    let g = garage();
    let prefix = unique("repl-crypt");
    let s = Site::new(&format!(
        "{}{}",
        g.yaml(&prefix),
        g.second_store_yaml("offsite", &prefix, true)
    ));
    crate::reuse::encrypt(&s);
    // One part per object: a streamed relay moves an encrypted object of one part.
    let s = backed_up(s, 1 << 20);
    let first = json(&ok(&s, &["--json", "replicate", "--to", "offsite", "pg"]));
    assert_eq!(
        first["servers"][0]["copied"],
        serde_json::json!([ID]),
        "{first}"
    );
    check_report(&first);
    for rel in ["barmans3.manifest", "backup.info", "data/base/1/16384"] {
        let key = format!("pg/base/{ID}/{rel}");
        let main = crate::reuse::raw(&s, &key);
        assert!(main.starts_with(b"age-encryption.org/v1\n"), "{key} sealed");
        let out = s.run(
            &["--store", "offsite", "store", "get", "--raw", &key, "-"],
            &[],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.stdout, main,
            "{key}: the replica holds the same ciphertext"
        );
    }
    let again = json(&ok(&s, &["--json", "replicate", "--to", "offsite", "pg"]));
    assert_eq!(
        again["servers"][0]["copied"],
        serde_json::json!([]),
        "{again}"
    );
    replica_restores_alone(&s, "offsite");
}

/// A main-store object that is not what its backup's manifest recorded (another size: here a
/// file replaced in the bucket) is never replicated as if it were: the run fails naming it,
/// and the replica lists no complete backup.
#[test]
fn an_object_unlike_its_manifest_record_is_not_replicated() {
    let g = garage();
    let prefix = unique("repl-damaged");
    let s = site_with(
        &prefix,
        &g.second_store_yaml("offsite", &prefix, true),
        1 << 20,
    );
    let bad = s.dir.path().join("bad");
    std::fs::write(&bad, b"not the file the manifest records").expect("write");
    let key = format!("pg/base/{ID}/data/base/1/2003");
    ok(&s, &["store", "put", bad.to_str().expect("utf8"), &key]);
    let out = s.run(&["--json", "replicate", "--to", "offsite", "pg"], &[]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("base/1/2003"), "{err}");
    let ls = s.run(&["--store", "offsite", "base-ls", "pg"], &[]);
    let listed = String::from_utf8_lossy(&ls.stdout).into_owned();
    assert!(
        !listed
            .lines()
            .any(|l| l.starts_with(ID) && l.trim_end().ends_with("yes")),
        "{listed}"
    );
}
