//! `archive` on Garage and file:// (spec §5): a fake brick (`.glusterfs` handles, `.trashcan`,
//! gfids in `user.*` xattrs) with one file per "never archive" reason; Gluster's posix side
//! played by the hidden `--emulate-cloudsync`, and recall done as `cs_download_task` does it
//! (GET `<bucketid>/<cs.remote>` with `store get`, write back, drop `cs.remote`). Writes during
//! the upload (a stalled part, or the pause hook between upload and mark), a kill between upload
//! and mark, a key in use, a `cs.remote` Gluster recorded elsewhere, dry runs and limits, and a
//! store that ignores checksum headers found out by the checksum probe.

mod fixture;
mod setup;

use std::fs::{File, FileTimes};
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::faults::{FaultProxy, Quirk};
use crate::common::site::Site;
use crate::common::{Backend, on_both};
use fixture::*;

async fn archives_and_recalls_identical_bytes(b: Backend) {
    let case = Case::new(b);
    let small = crate::common::data(10_000, 1);
    let big = crate::common::data(12 << 20, 2);
    case.brick.add("docs/small.txt", &small);
    case.brick.add("docs/deep/dir/big.bin", &big);
    let v = ok(&case.archive(&["--verify-read"], &[]));
    assert_eq!(v["archived"], 2, "{v}");
    assert_eq!(v["archived_bytes"], (small.len() + big.len()) as u64);
    assert_archived(&case, "docs/small.txt", small.len());
    assert_archived(&case, "docs/deep/dir/big.bin", big.len());

    let journal = std::fs::read_dir(case.site.dir.path().join("state/archive"))
        .expect("state/archive")
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .expect("journal");
    let lines = std::fs::read_to_string(journal.path()).expect("journal");
    let entries: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("journal line"))
        .collect();
    assert_eq!(entries.len(), 2);
    assert!(
        entries
            .iter()
            .any(|e| e["path"] == "/docs/small.txt" && e["size"] == 10_000)
    );

    // Archived files are left alone by the next run.
    let again = ok(&case.archive(&[], &[]));
    assert_eq!(
        (
            again["archived"].as_u64(),
            again["skipped"]["archived"].as_u64()
        ),
        (Some(0), Some(2))
    );

    assert_eq!(case.recall("docs/small.txt"), small);
    assert_eq!(case.recall("docs/deep/dir/big.bin"), big);
    assert_eq!(
        std::fs::read(case.brick.path("docs/deep/dir/big.bin")).expect("read"),
        big
    );
}

async fn every_never_archive_reason_is_skipped_and_counted(b: Backend) {
    let case = Case::new(b);
    let (_held, counts) = never_archive_fixture(&case);

    // ctime cannot be set back: with 30 days every file that passes the brick checks is young.
    let young = ok(&case.archive(&["--older-than", "30d"], &[]));
    assert_eq!(young["archived"], 0);
    assert_eq!(
        young["skipped"]["too-young"], 2,
        "good.bin and open: {young}"
    );

    let before = contents(&case.brick.root);
    let v = ok(&case.archive(&[], &[]));
    for (reason, n) in counts {
        assert_eq!(v["skipped"][reason], n, "{reason}: {v}");
    }
    assert_eq!(v["archived"], 1, "{v}");
    assert_eq!(v["failed"], 0);
    assert_archived(&case, "data/good.bin", 100_000);
    let good = std::fs::metadata(case.brick.path("data/good.bin")).expect("stat");
    for (p, data, remote) in before {
        // good.bin and its .glusterfs handle are the one archived inode.
        if std::fs::metadata(&p).expect("stat").ino() == good.ino() {
            continue;
        }
        assert!(
            std::fs::read(&p).expect("read") == data,
            "{} changed",
            p.display()
        );
        assert_eq!(
            attr(&p, "trusted.glusterfs.cs.remote"),
            remote,
            "{}",
            p.display()
        );
    }
    assert!(
        case.object(".trashcan/deleted").is_none(),
        ".trashcan is not crawled"
    );
}

async fn a_write_after_the_upload_is_not_marked_and_the_next_run_archives(b: Backend) {
    let case = Case::new(b);
    let data = crate::common::data(300_000, 4);
    let p = case.brick.add("grow.log", &data);
    let flag = case.site.dir.path().join("paused");
    let child = case.paused(&flag);
    let second = case.archive(&[], &[]);
    assert_eq!(
        second.status.code(),
        Some(75),
        "one run per brick: {}",
        text(&second.stderr)
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"one more line\n"))
        .expect("append");
    std::fs::remove_file(&flag).expect("resume");
    let out = child.wait_with_output().expect("wait");
    let v = ok(&out);
    assert_eq!(
        (v["archived"].as_u64(), v["skipped"]["changed"].as_u64()),
        (Some(0), Some(1)),
        "{v}"
    );
    let mut now = data.clone();
    now.extend_from_slice(b"one more line\n");
    assert_untouched(&case, "grow.log", &now);
    assert_eq!(
        case.object("grow.log").as_deref(),
        Some(&data[..]),
        "the object stays"
    );

    let v = ok(&case.archive(&[], &[]));
    assert_eq!(
        (v["archived"].as_u64(), v["reused"].as_u64()),
        (Some(1), Some(0)),
        "{v}"
    );
    assert_eq!(case.recall("grow.log"), now);
}

async fn a_same_size_rewrite_with_its_mtime_put_back_is_caught_by_ctime(b: Backend) {
    let case = Case::new(b);
    let data = crate::common::data(50_000, 5);
    let p = case.brick.add("report.pdf", &data);
    let mtime = std::fs::metadata(&p)
        .expect("stat")
        .modified()
        .expect("mtime");
    let flag = case.site.dir.path().join("paused");
    let child = case.paused(&flag);
    // New bytes of the same length, then `touch -d` back to the old mtime.
    let other = crate::common::data(50_000, 6);
    std::fs::write(&p, &other).expect("rewrite");
    File::options()
        .write(true)
        .open(&p)
        .and_then(|f| f.set_times(FileTimes::new().set_modified(mtime)))
        .expect("touch -d");
    std::fs::remove_file(&flag).expect("resume");
    let v = ok(&child.wait_with_output().expect("wait"));
    assert_eq!(v["skipped"]["changed"], 1, "{v}");
    assert_untouched(&case, "report.pdf", &other);

    let v = ok(&case.archive(&[], &[]));
    assert_eq!(v["archived"], 1, "{v}");
    assert_eq!(case.recall("report.pdf"), other);
}

async fn a_key_in_use_is_refused_and_nothing_is_truncated(b: Backend) {
    let case = Case::new(b);
    let data = crate::common::data(20_000, 7);
    case.brick.add("shared/name.dat", &data);
    case.brick.add("shared/free.dat", b"free");
    // Another file archived under this path before (renamed since, say) still recalls it.
    let theirs = case.site.dir.path().join("theirs");
    std::fs::write(&theirs, b"another file's archived bytes").expect("w");
    let put = case.site.run(
        &[
            "store",
            "put",
            theirs.to_str().expect("utf-8"),
            "shared/name.dat",
        ],
        &[],
    );
    assert!(put.status.success(), "{}", text(&put.stderr));

    let out = case.archive(&[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v = summary(&out);
    assert_eq!(v["skipped"]["key-in-use"], 1, "{v}");
    assert_eq!(v["archived"], 1, "the other file is archived: {v}");
    assert!(text(&out.stderr).contains("key-in-use"));
    assert_untouched(&case, "shared/name.dat", &data);
    assert_eq!(
        case.object("shared/name.dat").as_deref(),
        Some(&b"another file's archived bytes"[..])
    );
}

async fn killed_between_upload_and_mark_the_next_run_reuses_the_object(b: Backend) {
    let case = Case::new(b);
    let data = crate::common::data(7 << 20, 8);
    case.brick.add("video.mp4", &data);
    let flag = case.site.dir.path().join("paused");
    let mut child = case.paused(&flag);
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert_untouched(&case, "video.mp4", &data);
    assert_eq!(case.object("video.mp4").as_deref(), Some(&data[..]));

    let v = ok(&case.archive(&[], &[]));
    assert_eq!(
        (v["archived"].as_u64(), v["reused"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(v["bytes_up"], 0, "nothing sent again: {v}");
    assert_eq!(case.recall("video.mp4"), data);
}

async fn a_cs_remote_gluster_recorded_elsewhere_gets_a_copy_and_exit_1(b: Backend) {
    let case = Case::new(b);
    let data = crate::common::data(30_000, 9);
    case.brick.add("projects/plan.odt", &data);
    case.brick.add("projects/zz-later.odt", b"later");
    let out = case.archive(&[], &[("BARMANS3_TEST_CS_REMOTE_PREFIX", "moved/")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("cs.remote") && err.contains("was copied to"),
        "{err}"
    );
    let v = summary(&out);
    assert_eq!(v["archived"], 1, "the run stops after it: {v}");
    let p = case.brick.path("projects/plan.odt");
    assert_eq!(
        attr(&p, "trusted.glusterfs.cs.remote").as_deref(),
        Some("moved/projects/plan.odt")
    );
    assert_eq!(
        case.recall("projects/plan.odt"),
        data,
        "recall finds the copy"
    );
    assert_untouched(&case, "projects/zz-later.odt", b"later");
}

/// A file sent in parts (12 MiB at 5 MiB parts) copied server-side to where Gluster recorded it.
async fn a_large_file_recorded_elsewhere_gets_a_verified_copy(b: Backend) {
    let case = Case::new(b);
    let data = crate::common::data(12 << 20, 10);
    case.brick.add("media/big.bin", &data);
    let out = case.archive(&[], &[("BARMANS3_TEST_CS_REMOTE_PREFIX", "moved/")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("was copied to"), "{err}");
    assert_eq!(summary(&out)["requests"]["copy"], 1, "{}", summary(&out));
    assert_eq!(case.recall("media/big.bin"), data, "recall finds the copy");
}

async fn a_dry_run_changes_nothing(b: Backend) {
    let case = Case::new(b);
    let (_held, _) = never_archive_fixture(&case);
    case.brick.add("data/second.bin", b"second");
    let before = contents(&case.brick.root);
    let out = case.archive(&["--dry-run"], &[]);
    let v = ok(&out);
    assert_eq!(
        (v["would_archive"].as_u64(), v["archived"].as_u64()),
        (Some(2), Some(0)),
        "{v}"
    );
    assert_eq!(v["skipped"]["hardlink"], 2);
    assert_eq!(v["requests"].get("put"), None, "{v}");
    assert_eq!(contents(&case.brick.root), before);
    assert!(case.object("data/good.bin").is_none());
    assert!(
        !case.site.dir.path().join("state/archive").exists(),
        "no lock, no journal"
    );

    // Without --json the plan is on stdout: size, volume path, key.
    let root = case.brick.root.to_str().expect("utf-8");
    let plain = case.site.run(
        &[
            "archive",
            root,
            "--mount",
            root,
            "--older-than",
            "0s",
            "--bucketid",
            &case.bucketid,
            "--xattr-ns",
            "user",
            "--emulate-cloudsync",
            "--dry-run",
        ],
        &[("BARMANS3_TEST", "1")],
    );
    assert!(plain.status.success(), "{}", text(&plain.stderr));
    let plan = text(&plain.stdout);
    assert!(
        plan.lines()
            .any(|l| l.starts_with("100000\t/data/good.bin\t")),
        "{plan}"
    );
    assert_eq!(plan.lines().count(), 2, "{plan}");
}

async fn max_files_and_max_bytes_bound_the_run(b: Backend) {
    let case = Case::new(b);
    for i in 0..5 {
        case.brick.add(&format!("f{i}"), &[b'a' + i as u8; 1000]);
    }
    let v = ok(&case.archive(&["--max-files", "2"], &[]));
    assert_eq!(
        (v["archived"].as_u64(), v["limit_reached"].as_bool()),
        (Some(2), Some(true)),
        "{v}"
    );
    assert_archived(&case, "f0", 1000);
    assert_archived(&case, "f1", 1000);
    let v = ok(&case.archive(&["--max-bytes", "2500"], &[]));
    assert_eq!(
        (v["archived"].as_u64(), v["limit_reached"].as_bool()),
        (Some(2), Some(true)),
        "{v}"
    );
    assert_untouched(&case, "f4", &[b'e'; 1000]);
    let v = ok(&case.archive(&["--max-bytes", "2500"], &[]));
    assert_eq!(
        (v["archived"].as_u64(), v["limit_reached"].as_bool()),
        (Some(1), Some(false)),
        "{v}"
    );
    assert_eq!(case.recall("f4"), vec![b'e'; 1000]);
}

on_both!(
    archives_and_recalls_identical_bytes,
    every_never_archive_reason_is_skipped_and_counted,
    a_write_after_the_upload_is_not_marked_and_the_next_run_archives,
    a_same_size_rewrite_with_its_mtime_put_back_is_caught_by_ctime,
    a_file_opened_before_the_mark_is_left_alone,
    a_key_in_use_is_refused_and_nothing_is_truncated,
    killed_between_upload_and_mark_the_next_run_reuses_the_object,
    a_cs_remote_gluster_recorded_elsewhere_gets_a_copy_and_exit_1,
    a_large_file_recorded_elsewhere_gets_a_verified_copy,
    a_dry_run_changes_nothing,
    max_files_and_max_bytes_bound_the_run,
);

/// A store that refuses server-side copies: the object goes through this host, downloaded and
/// verified, uploaded and verified, and the file recalls from where Gluster recorded it.
#[test]
fn where_copies_are_refused_the_object_is_copied_through_this_host() {
    let g = crate::common::garage();
    let proxy = FaultProxy::refusing_copies(g.endpoint());
    let case = Case::through(&proxy, "archive-relay");
    let data = crate::common::data(12 << 20, 11);
    case.brick.add("media/big.bin", &data);
    let out = case.archive(&[], &[("BARMANS3_TEST_CS_REMOTE_PREFIX", "moved/")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("goes through this host"), "{err}");
    assert!(err.contains("was copied to"), "{err}");
    let v = summary(&out);
    assert_eq!(v["bytes_down"], 12 << 20, "{v}");
    // The checksum probe of `s3.request_checksum: auto` sends its own small object first.
    let probe = "barmans3 checksum probe".len() as u64;
    assert_eq!(
        v["bytes_up"],
        2 * (12 << 20) + probe,
        "the probe, the file, then the copy: {v}"
    );
    let relayed: Vec<_> = std::fs::read_dir(case.site.dir.path().join("state/archive"))
        .expect("state/archive")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("relay"))
        .collect();
    assert!(relayed.is_empty(), "the relay file is removed: {relayed:?}");
    assert_eq!(case.recall("media/big.bin"), data, "recall finds the copy");
}

#[test]
fn a_write_while_a_part_is_stalled_is_not_marked_and_the_next_run_archives() {
    let g = crate::common::garage();
    let proxy = FaultProxy::start(g.endpoint(), 0.0, 1, Duration::from_secs(3));
    let case = Case::through(&proxy, "archive-stall");
    let data = crate::common::data(12 << 20, 10);
    let p = case.brick.add("images/disk.img", &data);
    proxy.hold("partNumber=2");
    let mut child = case
        .command(&[], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !proxy.holding() {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "archive ended before part 2"
        );
        assert!(Instant::now() < deadline, "part 2 never reached the proxy");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"written during the upload"))
        .expect("append");
    proxy.release();
    let v = ok(&child.wait_with_output().expect("wait"));
    assert_eq!(
        (v["archived"].as_u64(), v["skipped"]["changed"].as_u64()),
        (Some(0), Some(1)),
        "{v}"
    );
    let mut now = data.clone();
    now.extend_from_slice(b"written during the upload");
    assert_untouched(&case, "images/disk.img", &now);

    let v = ok(&case.archive(&[], &[]));
    assert_eq!(v["archived"], 1, "{v}");
    assert_eq!(case.recall("images/disk.img"), now);
}

async fn a_file_opened_before_the_mark_is_left_alone(b: Backend) {
    let case = Case::new(b);
    let data = crate::common::data(40_000, 11);
    let p = case.brick.add("db/table.dat", &data);
    let flag = case.site.dir.path().join("paused");
    let child = case.paused(&flag);
    let reader = File::open(&p).expect("open");
    std::fs::remove_file(&flag).expect("resume");
    let v = ok(&child.wait_with_output().expect("wait"));
    drop(reader);
    assert_eq!(
        (v["archived"].as_u64(), v["skipped"]["changed"].as_u64()),
        (Some(0), Some(1)),
        "{v}"
    );
    assert_untouched(&case, "db/table.dat", &data);
    let v = ok(&case.archive(&[], &[]));
    assert_eq!(
        (v["archived"].as_u64(), v["reused"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
}

#[test]
fn archive_probes_a_store_that_ignores_checksum_headers_and_sends_content_md5() {
    // The store takes CRC32C headers without checking them (or storing the body): only the
    // checksum probe of `s3.request_checksum: auto` finds that out and switches to Content-MD5.
    let g = crate::common::garage();
    let proxy = FaultProxy::with_quirk(g.endpoint(), Quirk::IgnoreChecksums);
    let prefix = crate::common::unique("archive-probe");
    let case = Case {
        site: Site::new(&g.yaml(&prefix).replace(g.endpoint(), &proxy.endpoint)),
        brick: Brick::new(),
        bucketid: format!("{}/{prefix}", g.bucket()),
    };
    let small = crate::common::data(10_000, 12);
    let big = crate::common::data(12 << 20, 13);
    case.brick.add("docs/small.txt", &small);
    case.brick.add("docs/big.bin", &big);
    let v = ok(&case.archive(&[], &[]));
    assert_eq!(v["archived"], 2, "{v}");
    assert!(
        !case.site.probed(),
        "the probe found the store does not verify"
    );
    assert_eq!(case.recall("docs/small.txt"), small);
    assert_eq!(case.recall("docs/big.bin"), big);
}
