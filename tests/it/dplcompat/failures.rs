//! What goes wrong around a dplcompat call: the daemon's watchdog (a trickle that keeps it
//! quiet, a stall that ends in SIGTERM), a program killed mid-upload, bad command lines and
//! settings, a store that never answers, and faults injected between the program and Garage.

use std::time::{Duration, Instant};

use super::daemon::{KILL_AFTER, Pace};
use super::{CHUNK, Device};
use crate::common::faults::FaultProxy;
use crate::common::{block_on, data, garage, garage_transfer};

/// The number of multipart uploads left open under the device's prefix.
fn open_uploads(dev: &Device) -> usize {
    block_on(async {
        garage_transfer()
            .await
            .incomplete_uploads(&format!("{}/", dev.prefix))
            .await
            .expect("list uploads")
            .len()
    })
}

#[test]
fn the_watchdog_spares_a_trickle_and_a_stalled_upload_leaves_the_previous_part() {
    let dev = Device::new("dpl-watchdog", Duration::from_secs(2));
    // (a) One 256 KiB block a second: progress within every interval, never killed.
    let slow = data(8 << 18, 1);
    let pace = Pace {
        every_block: Duration::from_secs(1),
        ..Pace::default()
    };
    let out = dev
        .daemon
        .run_with(&["upload", "V", "0000"], Some(&slow), pace, &[]);
    out.ok("trickled upload");
    assert!(
        !out.killed && out.elapsed > Duration::from_secs(6),
        "{out:?}"
    );
    assert_eq!(dev.read_part("V", "0000").expect("part"), slow);

    // (b) A multipart upload (6 MiB, 5 MiB parts) stalled after its first part: SIGTERM, and
    // the program abandons the upload and exits before the SIGKILL.
    let stall = Pace {
        stall: Some((24, Duration::from_secs(12))),
        ..Pace::default()
    };
    let started = Instant::now();
    let out = dev.daemon.run_with(
        &["upload", "V", "0000"],
        Some(&data(12 << 20, 2)),
        stall,
        &[],
    );
    assert!(out.killed, "the stalled upload must be stopped: {out:?}");
    assert!(
        out.status != 0 && out.status != -9,
        "exit before SIGKILL: {}",
        out.status
    );
    assert!(started.elapsed() < Duration::from_secs(4) + KILL_AFTER + Duration::from_secs(12));
    assert_eq!(dev.read_part("V", "0000").expect("previous part"), slow);
    assert_eq!(
        open_uploads(&dev),
        0,
        "the abandoned multipart upload was aborted"
    );

    // (c) After the last block of a 10 MiB chunk the program ends well within an interval;
    // (d) the calls without data each end within one.
    let dev = Device::new("dpl-watchdog-tail", Duration::from_secs(5));
    let out = dev.daemon.upload("V", "0000", &data(CHUNK, 3));
    out.ok("upload");
    assert!(
        !out.killed && out.eof_to_exit < dev.daemon.timeout,
        "{out:?}"
    );
    for args in [
        &["list", "V"][..],
        &["stat", "V", "0000"],
        &["remove", "V", "0000"],
    ] {
        let out = dev.run(args);
        out.ok(args[0]);
        assert!(
            out.elapsed < dev.daemon.timeout && !out.killed,
            "{args:?}: {out:?}"
        );
    }
}

#[test]
fn a_program_killed_mid_upload_leaves_the_previous_version() {
    let dev = Device::new("dpl-kill", Duration::from_secs(30));
    let v1 = data(6 << 20, 1);
    dev.daemon.upload("V", "0003", &v1).ok("first version");
    let crash = Pace {
        kill_after: Some(7 << 20),
        ..Pace::default()
    };
    let out = dev.daemon.run_with(
        &["upload", "V", "0003"],
        Some(&data(12 << 20, 2)),
        crash,
        &[],
    );
    assert_eq!(out.status, -9, "{}", out.text());
    assert!(
        dev.read_part("V", "0003").expect("part") == v1,
        "the previous version stays"
    );
    // The crash cannot abort its upload: nothing of it is visible, a later upload replaces it.
    let v2 = data(2 << 20, 3);
    dev.daemon.upload("V", "0003", &v2).ok("retry");
    assert!(dev.read_part("V", "0003").expect("part") == v2);
}

#[test]
fn bad_input_is_one_line_a_non_zero_exit_and_nothing_written() {
    let dev = Device::new("dpl-bad", Duration::from_secs(30));
    // Exit 2 (usage or configuration, nothing sent) unless the store refused (1), as the man
    // page documents.
    let one_line = |what: &str, out: &super::daemon::Outcome| {
        let text = out.text();
        let code = if what == "wrong secret" { 1 } else { 2 };
        assert_eq!(out.status, code, "{what}: {text}");
        assert_eq!(text.lines().count(), 1, "{what}: {text:?}");
        assert!(text.starts_with("barmans3-dplcompat: "), "{what}: {text}");
        assert!(
            out.elapsed < Duration::from_secs(10) && !out.killed,
            "{what}: {out:?}"
        );
        text
    };
    for (args, says) in [
        (&["frobnicate"][..], "unknown operation"),
        (&[], "no operation"),
        (&["stat", "V"], "takes 2 argument"),
        (&["list"], "takes 1 argument"),
        (&["list", "a;b"], "invalid volume name"),
        (&["stat", "a/../b", "0000"], "invalid volume name"),
        (&["stat", "V", "x001"], "invalid part name"),
        (&["download", "V", "1"], "invalid part name"),
    ] {
        let text = one_line(&format!("{args:?}"), &dev.run(args));
        assert!(text.contains(says), "{args:?}: {text}");
    }
    let input = data(1000, 1);
    let up = dev.daemon.run_with(
        &["upload", "V V/..", "0000"],
        Some(&input),
        Pace::default(),
        &[],
    );
    one_line("upload to a bad name", &up);

    let missing = [("config", "/nonexistent/barmans3.yaml")];
    let out = dev
        .daemon
        .run_with(&["list", "V"], None, Pace::default(), &missing);
    assert!(one_line("missing config", &out).contains("/nonexistent/barmans3.yaml"));
    std::fs::set_permissions(
        &dev.site.cfg,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    let out = dev.run(&["stat", "V", "0000"]);
    assert!(one_line("config readable by others", &out).contains("chmod 600"));
    std::fs::set_permissions(
        &dev.site.cfg,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    for (k, v, says) in [
        ("bucket", "No_Such", "bucket=No_Such"),
        ("storage_class", "COLD", "storage_class=COLD"),
        ("timeout", "0", "timeout=0"),
    ] {
        let out = dev
            .daemon
            .run_with(&["list", "V"], None, Pace::default(), &[(k, v)]);
        assert!(one_line(k, &out).contains(says));
    }
    let wrong_key = garage()
        .yaml("x")
        .replace(garage().secret(), "wrong-secret");
    let wrong = Device::on("dpl-bad-key", Duration::from_secs(30), &wrong_key);
    let out = wrong.run(&["testconnection"]);
    let text = one_line("wrong secret", &out);
    assert!(text.contains("secret"), "{text}");
    assert!(
        !text.contains("wrong-secret") && !text.contains(garage().secret()),
        "a secret in the message: {text}"
    );
    assert!(dev.keys().is_empty() && wrong.keys().is_empty());
}

#[test]
fn credentials_that_cannot_be_read_are_one_line_and_nothing_written() {
    let dev = Device::new("dpl-bad-creds", Duration::from_secs(30));
    let g = garage();
    let host = g.endpoint().trim_start_matches("http://");
    let s3cfg = |name: &str, text: &str, mode: u32| {
        let p = dev.site.dir.path().join(name);
        std::fs::write(&p, text).expect("s3cfg");
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .expect("chmod");
        p.display().to_string()
    };
    let whole = format!(
        "[default]\naccess_key = {}\nsecret_key = {}\nhost_base = {host}\nhost_bucket = {host}\nbucket_location = garage\nuse_https = False\n",
        g.key_id(),
        g.secret()
    );
    let shared = s3cfg("shared.s3cfg", &whole, 0o644);
    let keyless = s3cfg(
        "keyless.s3cfg",
        &whole.replace("secret_key", "# secret_key"),
        0o600,
    );
    let missing = dev.site.dir.path().join("none.s3cfg").display().to_string();
    let base = format!("s3://{}/{}", g.bucket(), dev.prefix);
    for (path, says) in [
        (missing.as_str(), "cannot read it"),
        (shared.as_str(), "chmod 600"),
        (keyless.as_str(), "secret_key"),
    ] {
        let d = super::daemon::Daemon {
            env: vec![
                ("s3cfg".into(), path.to_string()),
                ("base_url".into(), base.clone()),
            ],
            timeout: Duration::from_secs(30),
        };
        let out = d.upload("V", "0000", &data(4096, 1));
        let text = out.text();
        assert_eq!(out.status, 2, "{path}: {text}");
        assert_eq!(text.lines().count(), 1, "{path}: {text:?}");
        assert!(text.contains(path) && text.contains(says), "{path}: {text}");
        assert!(
            !text.contains(g.secret()),
            "a secret in the message: {text}"
        );
        assert!(out.elapsed < Duration::from_secs(10) && !out.killed);
    }
    // A barmans3 config with half a key pair.
    let half = g
        .yaml("x")
        .lines()
        .filter(|l| !l.contains("secret_access_key"))
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    let halfdev = Device::on("dpl-bad-creds-half", Duration::from_secs(30), &half);
    let out = halfdev.daemon.upload("V", "0000", &data(4096, 2));
    let text = out.text();
    assert_eq!(out.status, 2, "{text}");
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert!(text.contains("secret_access_key"), "{text}");
    assert!(dev.keys().is_empty() && halfdev.keys().is_empty());
}

#[test]
fn a_store_that_never_answers_ends_each_call_within_bounds() {
    // Accepts connections and never says a word. The config keeps its 20 s read timeout: the
    // `timeout` option caps it, so even the streaming calls end (three attempts of 3 s) long
    // before the daemon's 30 s watchdog.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let yaml = garage()
        .yaml("x")
        .replace(garage().endpoint(), &format!("http://{addr}"));
    assert!(yaml.contains("read_timeout: 20s") && yaml.contains("max_attempts: 3"));
    let dev = Device::on("dpl-silent", Duration::from_secs(30), &yaml);
    let quick = [("timeout", "3")];
    let input = data(1 << 20, 1);
    for (args, body, within) in [
        (&["testconnection"][..], None, 6),
        (&["list", "V"], None, 6),
        (&["stat", "V", "0000"], None, 6),
        (&["remove", "V", "0000"], None, 6),
        (&["download", "V", "0000"], None, 16),
        (&["upload", "V", "0000"], Some(&input[..]), 16),
    ] {
        let out = dev.daemon.run_with(args, body, Pace::default(), &quick);
        assert_eq!(out.status, 1, "{args:?}: {}", out.text());
        assert!(
            out.elapsed < Duration::from_secs(within) && !out.killed,
            "{args:?}: {out:?}"
        );
        assert_eq!(out.text().lines().count(), 1, "{}", out.text());
    }
    drop(silent);
}

#[test]
fn faults_between_program_and_store_never_corrupt_a_part() {
    let proxy = FaultProxy::start(garage().endpoint(), 0.2, 27, Duration::from_millis(300));
    let yaml = garage()
        .yaml("x")
        .replace(garage().endpoint(), &proxy.endpoint);
    let dev = Device::on("dpl-faults", Duration::from_secs(30), &yaml);
    // The same prefix seen without the proxy.
    let mut clean = Device::new("dpl-faults-check", Duration::from_secs(30));
    clean.prefix = dev.prefix.clone();
    clean.daemon.env[1].1 = dev.prefix.clone();
    let (mut ok_up, mut ok_down) = (0, 0);
    let mut stored: Option<Vec<u8>> = None;
    for i in 0..6u64 {
        let body = data((6 << 20) + i as usize * 1000, i);
        let up = dev.daemon.upload("V", "0000", &body);
        // Whatever happened, the part is whole: this version when the upload said yes, else
        // the one before or this one (a failure after the store completed it), never a
        // truncated or mixed one.
        let now = clean.read_part("V", "0000");
        if up.status == 0 {
            ok_up += 1;
            assert!(now.as_ref() == Some(&body), "upload {i} said yes");
        } else {
            assert!(
                now == stored || now.as_ref() == Some(&body),
                "upload {i} failed: {}",
                up.text()
            );
        }
        stored = now;
        let dl = dev.run(&["download", "V", "0000"]);
        if dl.status == 0 {
            ok_down += 1;
            assert!(
                Some(&dl.out) == stored.as_ref(),
                "download {i} is byte-identical"
            );
        }
    }
    let (requests, faults) = proxy.counts();
    assert!(
        faults > 0 && ok_up > 0 && ok_down > 0,
        "{requests} requests, {faults} faults, {ok_up} uploads, {ok_down} downloads"
    );
}

#[test]
fn a_download_that_does_not_match_the_stores_checksum_fails_after_the_bytes() {
    // A file:// store keeps each object's CRC32C beside it: bytes changed behind its back are
    // what a store returning corrupt data looks like.
    let bucket = tempfile::tempdir().expect("tmp");
    let yaml = format!("store: file://{}\n", bucket.path().display());
    let dev = Device::on("dpl-corrupt", Duration::from_secs(30), &yaml);
    let body = data(3 << 20, 9);
    dev.daemon.upload("V", "0000", &body).ok("upload");
    assert_eq!(dev.read_part("V", "0000").expect("part"), body);
    let file = bucket.path().join(&dev.prefix).join("V/0000");
    let mut bytes = std::fs::read(&file).expect("object file");
    bytes[1 << 20] ^= 0x40;
    std::fs::write(&file, &bytes).expect("corrupt");
    let out = dev.run(&["download", "V", "0000"]);
    assert_ne!(out.status, 0, "a corrupt part must fail");
    let tail = String::from_utf8_lossy(&out.out[bytes.len().min(out.out.len())..]).into_owned();
    assert!(
        tail.contains("checksum"),
        "the reason follows the bytes: {tail:?}"
    );
    // A daemon that reads the last bytes late: they fill the pipe (64 KiB) when the verdict is
    // written, and the reason still follows them rather than being lost to a full pipe.
    let late = Pace {
        read_pause: Some((bytes.len() - (64 << 10), Duration::from_millis(500))),
        ..Pace::default()
    };
    let out = dev
        .daemon
        .run_with(&["download", "V", "0000"], None, late, &[]);
    assert_ne!(out.status, 0, "a corrupt part must fail");
    assert_eq!(
        out.out.get(..bytes.len()),
        Some(&bytes[..]),
        "every byte comes first"
    );
    let tail = String::from_utf8_lossy(&out.out[bytes.len()..]).into_owned();
    assert!(
        tail.contains("checksum"),
        "the reason follows the bytes read late: {tail:?}"
    );
}
