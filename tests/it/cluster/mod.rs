//! A three-node Garage (replication factor 3, `scripts/s3-server start-cluster`) losing a node
//! in the middle of a 1 GiB upload. `base-sync` and the plugin's `backup_data` talk to node 1
//! while node 2 is killed with SIGKILL: a run either finishes, and then restores byte for byte
//! with the node still down, or fails with one clear line and leaves its work retryable; once
//! the node is back, the next run finishes and a fresh restore is byte-identical. With two
//! nodes killed node 1 has no write quorum, so that failure branch is forced: a 256 MiB
//! `base-sync` gives up within its bounded retries, and completes once both are back.
//!
//! The cluster is started once per test process, on demand, and stopped when the process
//! exits. The tests take turns: each kills a node of that one cluster.

mod fixture;

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::common::site::{PLUGIN, Site};
use crate::common::unique;
use fixture::*;

#[test]
fn cluster_base_sync_of_one_gib_survives_a_node_killed_mid_upload() {
    let _turn = exclusive();
    let c = cluster();
    let site = Site::new(&c.yaml(&unique("cluster-base")));
    let id = "20261201T010000";
    let data = one_gib_backup(&site, id);
    site.queue(id, "DONE");
    let queue = site.dir.path().join("queue");

    let log = site.dir.path().join("base-sync.log");
    let before = c.stored(1);
    let mut child = spawn_base_sync(&site, &log);
    // Kill once the upload is well under way: 128 MiB of it stored on node 1.
    wait_stored(c, before, 128 * MIB, &mut child, &log);
    let down = c.kill(VICTIM);
    let status = wait_bounded(&mut child, "base-sync");
    let err = std::fs::read_to_string(&log).expect("log");
    if status.success() {
        eprintln!("base-sync finished with node {VICTIM} down");
        restore_matches(&site, id, &data, "restore-degraded");
    } else {
        one_clear_line(status, &err, "barmans3:");
        assert!(
            !queue.join(format!("{id}.error")).exists(),
            "a lost node is transient: the task must stay retryable: {err}"
        );
    }

    down.up();
    completes_and_restores(&site, &queue, id, &data);
}

/// How long a run may take to give up with two nodes of three down, under
/// [`Cluster::yaml_impatient`]: a request is at most 2 × (1 s + 10 s) plus backoff.
const GIVE_UP_LIMIT: Duration = Duration::from_secs(90);

#[test]
fn cluster_base_sync_with_two_nodes_killed_fails_clearly_then_completes() {
    // Node 1 stays up but cannot reach a write quorum (2 of 3): the run must give up within
    // its bounded retries, leave the task retryable and nothing listed as complete, and the
    // next run with every node back must finish and restore byte for byte.
    let _turn = exclusive();
    let c = cluster();
    let site = Site::new(&c.yaml_impatient(&unique("cluster-quorum")));
    let id = "20261201T020000";
    let files = [("16400", 192 * MIB, 21), ("16401", 64 * MIB - 777, 22)];
    let data = backup_of(&site, id, &files);
    site.queue(id, "DONE");
    let queue = site.dir.path().join("queue");

    let log = site.dir.path().join("base-sync.log");
    let before = c.stored(1);
    let mut child = spawn_base_sync(&site, &log);
    wait_stored(c, before, 48 * MIB, &mut child, &log);
    let start = Instant::now();
    let down = c.kill_nodes(&[2, 3]);
    let status = wait_bounded(&mut child, "base-sync");
    let took = start.elapsed();
    let err = std::fs::read_to_string(&log).expect("log");
    eprintln!("base-sync ended {took:?} after the kills began ({status}):\n{err}");
    assert!(
        !status.success(),
        "base-sync succeeded without a quorum: {err}"
    );
    assert!(took < GIVE_UP_LIMIT, "took {took:?} to give up: {err}");
    one_clear_line(status, &err, "barmans3:");
    assert!(
        !err.to_lowercase().contains("success"),
        "a failed run reports success: {err}"
    );
    assert_eq!(
        queue_states(&queue, id),
        [format!("{id}.run")],
        "the task must stay retryable: {err}"
    );

    down.up();
    let ls = site.run(&["--json", "base-ls", "pg"], &[]);
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.status.success(),
        "base-ls: {}",
        String::from_utf8_lossy(&ls.stderr)
    );
    assert!(
        !listing.contains("\"complete\": true"),
        "listed as complete after the failed run: {listing}"
    );
    completes_and_restores(&site, &queue, id, &data);
}

/// With every node up again: the next base-sync finishes, the task is `.done`, and a fresh
/// restore is byte-identical.
fn completes_and_restores(site: &Site, queue: &Path, id: &str, data: &Path) {
    let out = site.run(&["base-sync"], &[]);
    assert!(
        out.status.success(),
        "base-sync with every node back: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(queue_states(queue, id), [format!("{id}.done")], "the queue");
    restore_matches(site, id, data, "restore");
}

/// Runs `backup_data` of `Pattern(seed, len)` on stdin; with `kill_after`, node [`VICTIM`] is
/// killed once that many bytes went in. Returns the exit status, stderr and the killed node.
fn backup_data<'c>(
    c: &'c Cluster,
    cfg: &Path,
    home: &Path,
    key: &str,
    (seed, len): (u64, u64),
    kill_after: Option<u64>,
) -> (ExitStatus, String, Option<Down<'c>>) {
    let log = home.join(format!("backup_data-{:08x}.log", rand::random::<u32>()));
    let mut child = Command::new(PLUGIN)
        .args(["backup_data", cfg.to_str().expect("utf8"), key])
        .env("HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn backup_data");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut src = Pattern::new(seed, len);
    let mut down = None;
    if let Some(n) = kill_after {
        std::io::copy(&mut (&mut src).take(n), &mut stdin).expect("stream before the kill");
        down = Some(c.kill(VICTIM));
    }
    // The plugin may give up and close its stdin: the exit status tells, not this copy.
    let sent = std::io::copy(&mut src, &mut stdin);
    drop(stdin);
    let status = wait_bounded(&mut child, "backup_data");
    let err = std::fs::read_to_string(&log).expect("log");
    if status.success() {
        sent.expect("a successful backup_data read its whole stdin");
    }
    (status, err, down)
}

/// `restore_data` of `key` writes exactly `Pattern(seed, len)` to stdout.
fn restore_data_matches(cfg: &Path, home: &Path, key: &str, (seed, len): (u64, u64)) {
    let mut child = Command::new(PLUGIN)
        .args(["restore_data", cfg.to_str().expect("utf8"), key])
        .env("HOME", home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn restore_data");
    let out = child.stdout.take().expect("stdout");
    let equal = same(Pattern::new(seed, len), out);
    let status = wait_bounded(&mut child, "restore_data");
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert!(status.success(), "restore_data: {err}");
    assert!(equal, "restore_data gave other bytes than were backed up");
}

#[test]
fn cluster_backup_data_of_one_gib_survives_a_node_killed_mid_stream() {
    let _turn = exclusive();
    let c = cluster();
    let home = tempfile::tempdir().expect("home");
    let cfg = home.path().join("gp.yaml");
    std::fs::write(&cfg, c.plugin_yaml(&unique("cluster-gp"))).expect("config");
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let key = "/data/backups/20261201/20261201010000/gpbackup_0_20261201010000_16401";
    let stream = (7, 1024 * MIB + 4321);

    let (status, err, down) = backup_data(c, &cfg, home.path(), key, stream, Some(256 * MIB));
    let down = down.expect("the node was killed");
    if status.success() {
        eprintln!("backup_data finished with node {VICTIM} down");
        restore_data_matches(&cfg, home.path(), key, stream);
    } else {
        one_clear_line(status, &err, "[ERROR]");
    }

    down.up();
    let (status, err, _) = backup_data(c, &cfg, home.path(), key, stream, None);
    assert!(status.success(), "backup_data with every node up: {err}");
    restore_data_matches(&cfg, home.path(), key, stream);
}

#[test]
fn cluster_an_object_written_through_node_1_reads_through_every_node() {
    // The fixture itself: three nodes, one bucket, each node answering for all of it.
    let _turn = exclusive();
    let c = cluster();
    let prefix = unique("cluster-fixture");
    let body = crate::common::data(3 * MIB as usize + 5, 11);
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("src");
    std::fs::write(&src, &body).expect("write");
    for n in 1..=3u8 {
        let site = Site::new(&c.yaml_at(n, &prefix));
        if n == 1 {
            let out = site.run(&["store", "put", src.to_str().expect("utf8"), "obj"], &[]);
            assert!(
                out.status.success(),
                "put: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = site.run(&["store", "get", "obj", "-"], &[]);
        assert!(
            out.status.success(),
            "get through node {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == body,
            "node {n} gave {} other bytes",
            out.stdout.len()
        );
    }
}
