//! Peak memory of a 2 GiB stream upload from a pipe, measured from this test process's own
//! `/proc/self/status` (VmHWM). A test binary of its own, so nothing else runs in the process.

mod common;

use barmans3::config::{Config, StoreLocation, TransferConfig};
use barmans3::transfer::{Expect, Transfer};

fn vm_hwm_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("proc status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_two_gib_from_a_pipe_stays_within_the_buffer_bound() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = Config::for_location(StoreLocation::Local {
        root: dir.path().to_path_buf(),
    });
    let store = barmans3::store::open(&cfg.location, &cfg.s3)
        .await
        .expect("store");
    let tc = TransferConfig {
        part_size: 8 << 20,
        concurrency: 4,
        ..TransferConfig::default()
    };
    let bound_kib = (tc.concurrency as u64 * tc.part_size + (64 << 20)) / 1024;
    let t = Transfer::new(store, tc);

    let mut child = tokio::process::Command::new("sh")
        .args(["-c", "head -c 2147483648 /dev/urandom"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn producer");
    let pipe = child.stdout.take().expect("pipe");
    let up = t.upload_stream(pipe, "big-stream").await.expect("upload");
    assert!(child.wait().await.expect("producer").success());
    assert_eq!(up.size, 2 << 30);
    let peak = vm_hwm_kib();
    eprintln!(
        "peak RSS while streaming 2 GiB: {} MiB (bound {} MiB)",
        peak / 1024,
        bound_kib / 1024
    );
    assert!(
        peak <= bound_kib,
        "peak RSS {peak} KiB exceeds concurrency x part size + 64 MiB = {bound_kib} KiB"
    );

    // And the object is exactly what was sent.
    let mut sink = tokio::io::sink();
    let down = t
        .download_to(
            "big-stream",
            &mut sink,
            Expect {
                size: Some(up.size),
                crc32c: Some(up.crc32c),
            },
        )
        .await
        .expect("verify");
    assert_eq!(down.size, up.size);
}
