//! What `replicate` must never exceed, measured on the real binary: the memory budget of a
//! streamed run (every relay shares `s3.stream_memory`, whatever the objects), and the
//! replica's own Object Lock (`--prune` deletes nothing it still retains).

use std::process::{Command, Stdio};

use crate::common::site::{BIN, Site, forget_backup, make_archive, write_backup};
use crate::common::{data, garage, unique};
use crate::replicate::{ID, counts, json, local_backup, ok, replica_backups};

/// A streamed replicate of ~250 MiB (files of 96, 64, 40 and 24 MiB among 3 MiB ones, and the
/// WAL files) with the replica's `stream_memory: 32MiB`, measured from outside (VmHWM of the
/// process): every relay shares that one budget, so the peak stays within it plus the
/// process's own footprint, whatever the number and size of the objects; the replica then
/// verifies and restores alone, byte for byte.
#[test]
fn a_streamed_replicate_holds_one_memory_budget_whatever_the_objects() {
    const BUDGET_MIB: u64 = 32;
    // The process beside the buffers: 47 MiB with tiny objects (runtime, two S3 clients and
    // their connections; debug build), and what glibc keeps of freed buffers (it raises its
    // mmap threshold to the largest buffer freed, so later ones come from arenas that keep
    // their pages: up to 30 MiB measured here; with MALLOC_MMAP_THRESHOLD_ set, which turns
    // that off, the run's peak was the process, the budget and 5 MiB).
    const PROCESS_MIB: u64 = 96;
    let g = garage();
    let prefix = unique("repl-mem");
    let stores = format!(
        "{}      stream_memory: {BUDGET_MIB}MiB\n",
        g.second_store_yaml("offsite", &prefix, true)
    );
    let s = Site::new(&format!("{}{stores}", g.yaml(&prefix)));
    write_backup(&s, ID, "DONE");
    let data_dir = s.dir.path().join("barman/pg/base").join(ID).join("data");
    let base = data_dir.join("base/1");
    std::fs::create_dir_all(&base).expect("mkdir");
    let sizes: Vec<usize> = [96, 64, 40, 24, 3, 3, 3, 3, 3, 3, 3, 3]
        .iter()
        .enumerate()
        .map(|(i, mib)| (mib << 20) + i * 4099)
        .collect();
    for (i, len) in sizes.iter().enumerate() {
        std::fs::write(
            base.join(format!("{}", 3000 + i)),
            data(*len, 40 + i as u64),
        )
        .expect("data file");
    }
    make_archive(&s.wals(), 1, 8);
    s.queue(ID, "DONE");
    ok(&s, &["base-sync"]);
    ok(&s, &["wal-sync", "pg"]);

    let started = std::time::Instant::now();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&s.cfg)
        .args(["--json", "replicate", "--to", "offsite", "pg"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (status, peak) = crate::memory::wait_with_peak(&mut child, |pid| vec![pid]);
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out)
        .expect("read stdout");
    assert!(status.success(), "replicate failed: {out}");
    let v: serde_json::Value =
        serde_json::from_str(out.lines().last().unwrap_or("")).expect("JSON on stdout");
    let (streamed, server_side, _) = counts(&v);
    assert_eq!(server_side, 0, "another key: nothing server-side: {v}");
    assert!(streamed >= sizes.len() as u64 + 8, "{v}");
    let total: u64 = sizes.iter().map(|l| *l as u64).sum();
    let bound_kib = (BUDGET_MIB + PROCESS_MIB) << 10;
    eprintln!(
        "peak RSS streaming {} MiB to the replica: {} MiB (bound {} MiB), {:.1}s",
        total >> 20,
        peak >> 10,
        bound_kib >> 10,
        started.elapsed().as_secs_f64()
    );
    assert!(peak > 0, "replicate was never seen running");
    assert!(
        peak <= bound_kib,
        "peak RSS {peak} KiB exceeds stream_memory + the process ({bound_kib} KiB)"
    );
    assert!(
        total > 6 * (BUDGET_MIB << 20),
        "the data is many times the budget"
    );

    ok(&s, &["--store", "offsite", "verify", "pg"]);
    let dest = s.dir.path().join("restored");
    ok(
        &s,
        &[
            "--store",
            "offsite",
            "base-restore",
            "pg",
            ID,
            dest.to_str().expect("utf8"),
        ],
    );
    for i in 0..sizes.len() {
        let rel = format!("base/1/{}", 3000 + i);
        assert!(
            std::fs::read(dest.join(&rel)).expect("restored")
                == std::fs::read(data_dir.join(&rel)).expect("source"),
            "{rel} differs"
        );
    }
}

/// `--prune` never deletes what the replica's own Object Lock retains: backup A and its first
/// WAL files, deleted from the main store by full-sync (so the plan would delete them from the
/// replica too), stay on a replica whose lock (governance, 1 day) still holds them; the run
/// says so (JSON `pruned.retained`, and a "kept on the replica" line) and every object of the
/// replica is still there, not even delete-marked.
#[test]
fn prune_keeps_what_the_replicas_own_lock_retains() {
    let m = crate::common::moto::moto();
    let bucket = m.bucket(true);
    let g = garage();
    let prefix = unique("repl-locked-prune");
    let (a, b) = ("20260301T010203", "20260302T010203");
    let vault = format!(
        "stores:\n  vault:\n    s3:\n      endpoint: {}\n      region: us-east-1\n      bucket: {bucket}\n      prefix: {prefix}\n      access_key_id: test\n      secret_access_key: test\n      part_size: 5MiB\n      object_lock:\n        mode: governance\n        retain: 1d\n",
        m.endpoint
    );
    let s = Site::new(&format!("{}{vault}", g.yaml(&prefix)));
    let text = std::fs::read_to_string(&s.cfg).expect("cfg");
    std::fs::write(
        &s.cfg,
        text.replacen("barman:\n", "barman:\n  min_remote_backups: 1\n", 1),
    )
    .expect("cfg");
    local_backup(&s, a, 1);
    local_backup(&s, b, 3);
    make_archive(&s.wals(), 1, 6);
    ok(&s, &["full-sync", "pg"]);
    ok(&s, &["replicate", "--to", "vault", "pg"]);
    assert_eq!(replica_backups(&s, "vault"), [a, b]);
    let before = m.keys(&bucket, &prefix);
    assert!(before.iter().any(|k| k.contains(a)), "{before:?}");

    // Barman deleted A and its first two WAL files; full-sync deletes them from the main store.
    forget_backup(&s, a, &[1, 2]);
    ok(&s, &["full-sync", "pg"]);
    let main_now =
        String::from_utf8_lossy(&ok(&s, &["--json", "base-ls", "pg"]).stdout).into_owned();
    assert!(!main_now.contains(a) && main_now.contains(b), "{main_now}");

    let v = json(&ok(
        &s,
        &["--json", "replicate", "--to", "vault", "--prune", "pg"],
    ));
    let pruned = &v["servers"][0]["pruned"];
    assert_eq!(pruned["backups"], serde_json::json!([]), "{v}");
    assert_eq!(pruned["wals"], 0, "{v}");
    let retained = pruned["retained"].as_array().expect("retained");
    assert!(
        retained.iter().any(|r| r
            .as_str()
            .is_some_and(|r| r.contains(&format!("backup {a} retained until")))),
        "{v}"
    );
    // Said in words too, and again on a second run.
    let out = ok(&s, &["replicate", "--to", "vault", "--prune", "pg"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("kept on the replica: backup {a} retained until")),
        "{err}"
    );
    assert_eq!(
        m.keys(&bucket, &prefix),
        before,
        "nothing deleted on the replica"
    );
    assert_eq!(replica_backups(&s, "vault"), [a, b]);
    ok(&s, &["--store", "vault", "verify", "pg"]);
}
