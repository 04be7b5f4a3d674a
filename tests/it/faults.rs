//! Every transfer path through a proxy that breaks 10 % of the requests (503 SlowDown, 500,
//! dropped requests and responses, stalls past the timeout): each finishes with byte-identical
//! results, and the retries show in the run summary. Two wal-syncs at once: the second exits 75
//! without sending a single request.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::faults::FaultProxy;
use crate::common::site::{BIN, PLUGIN, Site, write_backup};

fn faulty_site(proxy: &FaultProxy, prefix: &str) -> Site {
    Site::new(&faulty_yaml(proxy, prefix))
}

fn faulty_yaml(proxy: &FaultProxy, prefix: &str) -> String {
    let g = crate::common::garage();
    format!(
        "s3:\n  endpoint: {}\n  region: garage\n  bucket: {}\n  prefix: {prefix}\n  access_key_id: {}\n  secret_access_key: {}\n  part_size: 5MiB\n  concurrency: 4\n  max_attempts: 10\n  connect_timeout: 2s\n  read_timeout: 2s\n",
        proxy.endpoint,
        g.bucket(),
        g.key_id(),
        g.secret()
    )
}

fn retries(out: &std::process::Output) -> u64 {
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_string();
    serde_json::from_str::<serde_json::Value>(&line)
        .ok()
        .and_then(|v| v["retries"].as_u64())
        .unwrap_or(0)
}

#[test]
fn barman_paths_survive_a_ten_percent_fault_rate() {
    let g = crate::common::garage();
    let proxy = FaultProxy::start(g.endpoint(), 0.10, 20261121, Duration::from_secs(3));
    let prefix = crate::common::unique("faults");
    let site = faulty_site(&proxy, &prefix);
    // WALs with real content, and a backup with a multipart file and many small ones.
    let wals = site.wals().join("0000000100000000");
    std::fs::create_dir_all(&wals).expect("mkdir");
    for seg in 1..=24u64 {
        let name = format!("{:08X}{:08X}{:08X}", 1, 0, seg);
        std::fs::write(
            wals.join(&name),
            crate::common::site::wal_segment(&name, seg),
        )
        .expect("wal");
    }
    let id = "20261121T100000";
    write_backup(&site, id, "DONE");
    let data = site.dir.path().join("barman/pg/base").join(id).join("data");
    std::fs::write(data.join("big"), crate::common::data(13 << 20, 77)).expect("big");
    for i in 0..40 {
        std::fs::write(
            data.join(format!("small{i}")),
            crate::common::data(4096 + i * 100, i as u64),
        )
        .expect("small");
    }
    site.queue(id, "DONE");

    let mut total_retries = 0;
    for args in [
        &["--json", "wal-sync", "pg"][..],
        &["--json", "base-sync"][..],
    ] {
        let out = site.run(args, &[]);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        total_retries += retries(&out);
    }
    // Restore through the same faulty proxy and compare byte for byte.
    let dest = site.dir.path().join("restore");
    let out = site.run(
        &[
            "--json",
            "base-restore",
            "pg",
            id,
            dest.to_str().expect("utf8"),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    total_retries += retries(&out);
    for entry in std::fs::read_dir(&data).expect("ls") {
        let p = entry.expect("e").path();
        if !p.is_file() {
            continue;
        }
        let name = p.file_name().expect("name");
        assert!(
            std::fs::read(&p).expect("src") == std::fs::read(dest.join(name)).expect("restored"),
            "{name:?}"
        );
    }
    for seg in 1..=24u64 {
        let name = format!("{:08X}{:08X}{:08X}", 1, 0, seg);
        let to = site.dir.path().join(format!("wal-{seg}"));
        let out = site.run(
            &["wal-restore", "pg", &name, to.to_str().expect("utf8")],
            &[],
        );
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            std::fs::read(&to).expect("wal") == std::fs::read(wals.join(&name)).expect("src"),
            "{name}"
        );
    }
    let (requests, faults) = proxy.counts();
    eprintln!(
        "fault proxy: {faults} faults injected in {requests} requests; {total_retries} retries in the run summaries"
    );
    assert!(
        faults > 0 && total_retries > 0,
        "{faults} faults, {total_retries} retries"
    );
}

#[test]
fn plugin_streams_survive_a_ten_percent_fault_rate() {
    let g = crate::common::garage();
    let proxy = FaultProxy::start(g.endpoint(), 0.10, 7, Duration::from_secs(3));
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("gp.yaml");
    std::fs::write(
        &cfg,
        format!(
            "executablepath: {PLUGIN}\noptions:\n  endpoint: {}\n  region: garage\n  aws_access_key_id: {}\n  aws_secret_access_key: {}\n  bucket: {}\n  folder: {}\n  backup_multipart_chunksize: 5MB\n  backup_max_concurrent_requests: 3\n  restore_multipart_chunksize: 5MB\n  restore_max_concurrent_requests: 3\n",
            proxy.endpoint,
            g.key_id(),
            g.secret(),
            g.bucket(),
            crate::common::unique("gpfaults")
        ),
    )
    .expect("config");
    for (i, size) in [0usize, 1000, 5 << 20, (16 << 20) + 7]
        .into_iter()
        .enumerate()
    {
        let data = crate::common::data(size, i as u64 + 5);
        let src = dir.path().join(format!("in{i}"));
        std::fs::write(&src, &data).expect("w");
        let key = format!("/d/backups/20261121/20261121000000/gpbackup_0_20261121000000_{i}");
        let status = Command::new(PLUGIN)
            .args(["backup_data", cfg.to_str().expect("utf8"), &key])
            .env("HOME", dir.path())
            .stdin(std::fs::File::open(&src).expect("open"))
            .status()
            .expect("backup_data");
        assert!(status.success(), "backup_data {size}");
        let out = Command::new(PLUGIN)
            .args(["restore_data", cfg.to_str().expect("utf8"), &key])
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("restore_data");
        assert!(
            out.status.success(),
            "restore_data {size}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == data,
            "size {size}: {} bytes back",
            out.stdout.len()
        );
    }
    let (requests, faults) = proxy.counts();
    eprintln!("fault proxy (plugin): {faults} faults injected in {requests} requests");
    assert!(faults > 0);
    let _ = BIN;
}

#[test]
fn a_second_wal_sync_while_one_runs_exits_75_without_a_request() {
    // The first run talks to Garage directly; the second goes through a counting proxy that
    // injects nothing, so the proxy's count proves it sent no request at all.
    let g = crate::common::garage();
    let proxy = FaultProxy::start(g.endpoint(), 0.0, 1, Duration::from_secs(3));
    let prefix = crate::common::unique("two-wal-syncs");
    let site = Site::new(&g.yaml(&prefix));
    let wals = site.wals().join("0000000100000000");
    std::fs::create_dir_all(&wals).expect("mkdir");
    for seg in 1..=24u64 {
        let name = format!("{:08X}{:08X}{:08X}", 1, 0, seg);
        std::fs::write(wals.join(name), crate::common::data(8 << 20, seg)).expect("wal");
    }
    let second_cfg = site.dir.path().join("second.yaml");
    let text = std::fs::read_to_string(&site.cfg).expect("cfg");
    std::fs::write(&second_cfg, text.replace(g.endpoint(), &proxy.endpoint)).expect("w");
    std::fs::set_permissions(
        &second_cfg,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");

    let first = Command::new(BIN)
        .arg("--config")
        .arg(&site.cfg)
        .args(["wal-sync", "pg"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("first");
    // Wait until the first run holds the server's lock.
    let lock_path = site.dir.path().join("state/pg.wal-sync.lock");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the first run never took the lock"
        );
        if let Ok(f) = std::fs::File::open(&lock_path)
            && matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = Command::new(BIN)
        .arg("--config")
        .arg(&second_cfg)
        .args(["--json", "wal-sync", "pg"])
        .output()
        .expect("second");
    let first = first.wait_with_output().expect("first");
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(75), "{err}");
    assert!(
        err.contains("another wal-sync for server pg is running"),
        "{err}"
    );
    assert_eq!(proxy.counts().0, 0, "the second run sent requests");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let (requests, _) = site.requests(&["wal-sync", "pg", "--full"]);
    assert!(requests >= 1);
    let listed = site.run(&["store", "ls", "pg/wals/"], &[]);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).lines().count(),
        24,
        "the first run uploaded every WAL"
    );
}

/// Encrypted objects downloaded into a file through the same faults: a piece cut or failed
/// after some of its runs were opened and written is read again whole and written again at
/// the same offsets; every download is byte-identical and verified.
#[test]
fn encrypted_downloads_to_a_file_survive_a_ten_percent_fault_rate() {
    use age::secrecy::ExposeSecret;
    let g = crate::common::garage();
    let proxy = FaultProxy::start(g.endpoint(), 0.10, 20261207, Duration::from_secs(3));
    let keys = tempfile::tempdir().expect("keys");
    let me = age::x25519::Identity::generate();
    let ident = keys.path().join("id.key");
    std::fs::write(&ident, format!("{}\n", me.to_string().expose_secret())).expect("identity");
    std::fs::set_permissions(
        &ident,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .expect("chmod");
    let yaml = faulty_yaml(&proxy, &crate::common::unique("cryptfaults"));
    let site = Site::new(&format!(
        "{yaml}encryption:\n  recipients: [{}]\n  identity_file: {}\n",
        me.to_public(),
        ident.display()
    ));
    let src = site.dir.path().join("src");
    let body = crate::common::data((23 << 20) + 4321, 31);
    std::fs::write(&src, &body).expect("source");
    let put = site.run(&["store", "put", src.to_str().expect("utf8"), "big"], &[]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let faults_before = proxy.counts().1;
    for i in 0..4 {
        let dest = site.dir.path().join(format!("back{i}"));
        let got = site.run(&["store", "get", "big", dest.to_str().expect("utf8")], &[]);
        assert!(
            got.status.success(),
            "{}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert!(
            std::fs::read(&dest).expect("back") == body,
            "download {i} differs"
        );
    }
    assert!(
        proxy.counts().1 > faults_before,
        "no fault met the downloads"
    );
}
