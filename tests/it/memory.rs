//! Peak memory of uploads, measured on the `barmans3 store put` process (its VmHWM read from
//! `/proc` while it runs): a 2 GiB stream from a pipe, and a 1 GiB file.

use crate::common::site::BIN;

/// The peak RSS (VmHWM) of a running process; it only grows, so the last reading before the
/// process exits is its peak.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Waits for `child`, reading every 5 ms the VmHWM of the processes `pids` names for it (the
/// child itself, or a shell and what it runs); returns its exit status and the highest peak
/// seen, in KiB.
pub(crate) fn wait_with_peak(
    child: &mut std::process::Child,
    pids: impl Fn(u32) -> Vec<u32>,
) -> (std::process::ExitStatus, u64) {
    let mut peak = 0;
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return (st, peak);
        }
        for pid in pids(child.id()) {
            if let Some(k) = vm_hwm_kib(pid) {
                peak = peak.max(k);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn streaming_two_gib_from_a_pipe_stays_within_the_buffer_bound() {
    let _disk = crate::common::heavy_disk();
    let dir = tempfile::tempdir().expect("tmp");
    // The object and one part: the file:// store builds the object from its parts.
    crate::common::need_free(dir.path(), (2 << 30) + (64 << 20));
    let bucket = dir.path().join("bucket");
    std::fs::create_dir(&bucket).expect("bucket");
    let (part_size, concurrency) = (8u64 << 20, 4u64);
    let cfg = dir.path().join("b3.yaml");
    std::fs::write(
        &cfg,
        format!(
            "store: file://{}\ns3:\n  part_size: 8MiB\n  concurrency: {concurrency}\n{}",
            bucket.display(),
            crate::common::scratch_yaml(dir.path())
        ),
    )
    .expect("cfg");
    let bound_kib = (concurrency * part_size + (64 << 20)) / 1024;
    // The real binary, reading a 2 GiB pipe, measured from outside: nothing else runs in it.
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 2147483648 /dev/urandom | exec {} --config {} --json store put - big-stream",
            BIN,
            cfg.display()
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // The shell execs barmans3 last in the pipeline: find it among the shell's children.
    let (status, peak) = wait_with_peak(&mut child, children);
    assert!(status.success(), "store put failed");
    let mut summary = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("out"), &mut summary)
        .expect("summary");
    eprintln!(
        "peak RSS while streaming 2 GiB: {} MiB (bound {} MiB)",
        peak / 1024,
        bound_kib / 1024
    );
    assert!(peak > 0, "the upload was never seen running");
    assert!(
        peak <= bound_kib,
        "peak RSS {peak} KiB exceeds concurrency x part size + 64 MiB = {bound_kib} KiB"
    );
    // And the object is exactly 2 GiB, as the run summary and the store both say.
    assert!(summary.contains("\"bytes_up\":2147483648"), "{summary}");
    let stored = std::fs::metadata(bucket.join("big-stream")).expect("object");
    assert_eq!(stored.len(), 2 << 30);
}

/// The pid itself (after `exec`) and its children.
fn children(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(t) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        out.extend(t.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    out
}

/// A file upload sends parts from the file: with 64 MiB parts and 8 in flight, its peak stays
/// far below one part per request in flight (512 MiB): read buffers only, bounded by
/// concurrency x 2 MiB plus the process's 64 MiB.
#[test]
fn a_file_upload_holds_read_buffers_not_parts() {
    let _disk = crate::common::heavy_disk();
    let dir = tempfile::tempdir().expect("tmp");
    // The file, and the object built from its parts.
    crate::common::need_free(dir.path(), (2 << 30) + (128 << 20));
    let bucket = dir.path().join("bucket");
    std::fs::create_dir(&bucket).expect("bucket");
    let concurrency = 8u64;
    let cfg = dir.path().join("b3.yaml");
    std::fs::write(
        &cfg,
        format!(
            "store: file://{}\ns3:\n  part_size: 64MiB\n  concurrency: {concurrency}\n{}",
            bucket.display(),
            crate::common::scratch_yaml(dir.path())
        ),
    )
    .expect("cfg");
    let src = dir.path().join("big");
    let body = crate::common::data(4 << 20, 5);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&src).expect("create");
        for _ in 0..256 {
            f.write_all(&body).expect("write");
        }
    }
    let bound_kib = (concurrency * (2 << 20) + (64 << 20)) / 1024;
    let mut child = std::process::Command::new(BIN)
        .args([
            "--config",
            cfg.to_str().expect("utf8"),
            "--json",
            "store",
            "put",
        ])
        .arg(&src)
        .arg("big")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let (status, peak) = wait_with_peak(&mut child, |pid| vec![pid]);
    assert!(status.success(), "store put failed");
    eprintln!(
        "peak RSS uploading a 1 GiB file: {} MiB (bound {} MiB)",
        peak / 1024,
        bound_kib / 1024
    );
    assert!(peak > 0, "the upload was never seen running");
    assert!(
        peak <= bound_kib,
        "peak RSS {peak} KiB exceeds {bound_kib} KiB"
    );
    assert!(
        std::fs::read(bucket.join("big")).expect("object") == std::fs::read(&src).expect("src")
    );
}

/// Runs `sh -c script` and samples the peak RSS of the shell and its children until it exits.
fn peak_of(script: &str) -> (std::process::ExitStatus, u64, String) {
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Read stdout on a thread so a chatty child never blocks on a full pipe.
    let mut out = child.stdout.take().expect("out");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).expect("stdout");
        s
    });
    let (status, peak) = wait_with_peak(&mut child, children);
    (status, peak, reader.join().expect("reader"))
}

/// With parts configured at 512 MiB (the gpbackup plugin's default is 500 MB) a 256 MiB stream
/// (one PUT of it all before) is cut into parts its memory budget holds, and read back within
/// a budget smaller than the ranges the concurrency would otherwise hold (6 x 16 MiB).
#[test]
fn a_stream_holds_its_memory_budget_whatever_the_part_size() {
    let dir = tempfile::tempdir().expect("tmp");
    let bucket = dir.path().join("bucket");
    std::fs::create_dir(&bucket).expect("bucket");
    let cfg = |budget: u64| {
        let cfg = dir.path().join(format!("b3-{budget}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                "store: file://{}\ns3:\n  part_size: 512MiB\n  concurrency: 6\n  stream_memory: {budget}MiB\n{}",
                bucket.display(),
                crate::common::scratch_yaml(dir.path())
            ),
        )
        .expect("cfg");
        cfg
    };
    let bound_kib = |budget: u64| ((budget << 20) + (64 << 20)) / 1024;
    // 96 MiB over 6 parts in flight: parts of 16 MiB.
    let (status, peak, summary) = peak_of(&format!(
        "head -c 268435456 /dev/zero | exec {BIN} --config {} --json store put - s",
        cfg(96).display()
    ));
    assert!(status.success(), "store put failed");
    eprintln!("peak RSS streaming 256 MiB up: {} MiB", peak / 1024);
    assert!(peak > 0, "the upload was never seen running");
    assert!(
        peak <= bound_kib(96),
        "upload peak {peak} KiB > {} KiB",
        bound_kib(96)
    );
    let s: serde_json::Value = serde_json::from_str(summary.trim()).expect("summary");
    assert_eq!(s["requests"]["upload_part"], 16, "{summary}");
    assert_eq!(
        std::fs::metadata(bucket.join("s")).expect("object").len(),
        256 << 20
    );
    // Read back with 16 MiB: one 16 MiB range at a time.
    let (status, peak, count) = peak_of(&format!(
        "{BIN} --config {} store get s - | wc -c",
        cfg(16).display()
    ));
    assert!(status.success(), "store get failed");
    eprintln!("peak RSS streaming 256 MiB down: {} MiB", peak / 1024);
    // Behind a slow reader (a loaded machine: about 100 MiB measured in the full suite) the
    // download holds more budget-sized pieces than the one in flight: one arriving, others done
    // and waiting their turn, one being written out. Allowed three more; still far under the
    // window of six 16 MiB ranges it held before (about 170 MiB).
    let down_bound = bound_kib(16) + ((3 * 16) << 20) / 1024;
    assert!(
        peak <= down_bound,
        "download peak {peak} KiB > {down_bound} KiB"
    );
    assert_eq!(count.trim(), "268435456");
}

/// Objects checked by MD5 (Content-MD5 uploads: a single PUT's ETag, a multipart ETag over our
/// recorded parts) are read to a stream in pieces smaller than a part, their MD5 computed as
/// the bytes are written, and still verified: the bytes come back exactly.
#[test]
fn md5_checked_objects_stream_in_pieces_and_verify() {
    let g = crate::common::garage();
    let prefix = crate::common::unique("md5stream");
    let dir = tempfile::tempdir().expect("tmp");
    let yaml = |part: &str| {
        let base = g
            .yaml(&prefix)
            .replace("part_size: 5MiB", &format!("part_size: {part}"));
        format!(
            "{base}  request_checksum: when_required\n  stream_memory: 32MiB\n{}",
            crate::common::scratch_yaml(dir.path())
        )
    };
    let run = |part: &str, args: &[&str]| {
        let cfg = dir.path().join(format!("b3-{part}.yaml"));
        std::fs::write(&cfg, yaml(part)).expect("cfg");
        std::fs::set_permissions(
            &cfg,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
        )
        .expect("chmod");
        let out = std::process::Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    // 40 MiB in one PUT (its ETag is its MD5), 70 MiB in parts of 32 MiB.
    for (name, len, part) in [
        ("single", 40usize << 20, "64MiB"),
        ("parts", 70 << 20, "32MiB"),
    ] {
        let body = crate::common::data(len, len as u64);
        let src = dir.path().join(name);
        std::fs::write(&src, &body).expect("src");
        run(part, &["store", "put", src.to_str().expect("utf8"), name]);
        // Read back through a config whose pieces (16 MiB) are smaller than the part.
        let got = run(part, &["store", "get", name, "-"]);
        assert!(
            got == body,
            "{name}: {} bytes back, not the same",
            got.len()
        );
        std::fs::remove_file(&src).expect("rm");
    }
}
