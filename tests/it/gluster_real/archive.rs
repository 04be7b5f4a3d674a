//! `archive` on real bricks through real mounts: what Gluster itself does with the mark, the
//! files it must leave alone, mounts that are not the volume's root, DHT link files and AFR
//! pending-heal markers written by Gluster.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::*;
use crate::common::data;
use crate::common::gluster::{Layout, Volume, cloudsync, gluster, serial};
use crate::common::site::BIN;

/// `archive BRICK --mount MNT --older-than 0s ARGS` with `--json`. Coldness is not what these
/// tests are about, and ctime cannot be set back.
fn archive_cmd(site: &Site, brick: &Path, mnt: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--config")
        .arg(&site.cfg)
        .args(["--json", "archive"])
        .arg(brick)
        .arg("--mount")
        .arg(mnt)
        .args(["--older-than", "0s"])
        .args(args);
    c
}

fn archive(site: &Site, brick: &Path, mnt: &Path, args: &[&str]) -> Output {
    archive_cmd(site, brick, mnt, args)
        .output()
        .expect("run archive")
}

/// The file Gluster truncated: 0 bytes on the brick, `cs.remote` = its volume path, the size
/// it had in `cs.object_size` and through the mount; the object holds exactly `data`.
fn assert_archived(site: &Site, vol: &Volume, brick: usize, rel: &str, data: &[u8]) {
    let b = vol.on_brick(brick, rel);
    assert_eq!(len(&b), 0, "{rel} truncated on the brick");
    assert_eq!(
        attr(&b, CS_REMOTE).as_deref(),
        Some(rel),
        "{rel}: cs.remote"
    );
    let size = data.len().to_string();
    let object_size = attr(&b, "trusted.glusterfs.cs.object_size");
    assert_eq!(object_size.as_deref(), Some(size.as_str()), "{rel}");
    assert_eq!(len(&vol.mnt.join(rel)), data.len() as u64, "{rel}: size");
    assert!(object(site, rel).as_deref() == Some(data), "{rel}: object");
}

/// A file left as it was: its bytes on the brick, no `cs.remote`.
fn assert_whole(vol: &Volume, brick: usize, rel: &str, data: &[u8]) {
    let b = vol.on_brick(brick, rel);
    assert!(std::fs::read(&b).expect("read") == data, "{rel} whole");
    assert_eq!(attr(&b, CS_REMOTE), None, "{rel} not archived");
}

fn len(p: &Path) -> u64 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .len()
}

/// `archived`, then the count of each skip reason, from a summary.
fn counts(v: &serde_json::Value, reasons: &[&str]) -> Vec<u64> {
    std::iter::once(&v["archived"])
        .chain(reasons.iter().map(|r| &v["skipped"][r]))
        .map(|n| n.as_u64().unwrap_or(u64::MAX))
        .collect()
}

#[test]
fn gluster_truncates_what_archive_marks_and_the_objects_are_the_files() {
    let _one = serial();
    let gl = gluster();
    let (site, _prefix, bucketid) = site("gl-archive");
    let vol = gl.volume("arch", Layout::Single, &cloudsync(&bucketid));
    let brick = &vol.bricks[0];
    let vol_args = ["--volume", "arch"];

    let now = a_write_between_upload_and_mark_leaves_the_file_whole(&site, &vol, &vol_args);

    // The rest: archived, or skipped for Gluster's reasons and the ones of §1.4.
    let small = data(10_000, 2);
    let big = data(12 << 20, 3);
    put(&vol.mnt, "docs/small.txt", &small);
    put(&vol.mnt, "big.bin", &big);
    let held_path = put(&vol.mnt, "held.bin", b"held open");
    put(&vol.mnt, "link1", b"two names");
    std::fs::hard_link(vol.mnt.join("link1"), vol.mnt.join("link2")).expect("ln");
    put(&vol.mnt, "empty", b"");
    put(
        &vol.mnt,
        "with space.txt",
        b"no plugin could fetch this name",
    );
    std::os::unix::fs::symlink("big.bin", vol.mnt.join("sym")).expect("symlink");
    let rels = ["grow.log", "docs/small.txt", "big.bin", "link1", "empty"];
    wait_closed(&rels.map(|r| vol.on_brick(0, r)));
    let _held = std::fs::File::open(&held_path).expect("hold held.bin open");
    let v = ok("archive", &archive(&site, brick, &vol.mnt, &vol_args));
    let reasons = [
        "open",
        "hardlink",
        "empty",
        "unrecallable-name",
        "not-regular",
    ];
    assert_eq!(counts(&v, &reasons), [3, 1, 2, 1, 1, 1], "{v}");
    assert_archived(&site, &vol, 0, "grow.log", &now);
    assert_archived(&site, &vol, 0, "docs/small.txt", &small);
    assert_archived(&site, &vol, 0, "big.bin", &big);
    assert_whole(&vol, 0, "held.bin", b"held open");
    assert_whole(&vol, 0, "link1", b"two names");
    assert_whole(&vol, 0, "link2", b"two names");
    assert_whole(
        &vol,
        0,
        "with space.txt",
        b"no plugin could fetch this name",
    );

    // A rerun finds them archived.
    let v = ok("rerun", &archive(&site, brick, &vol.mnt, &vol_args));
    assert_eq!(counts(&v, &["archived"]), [0, 3], "{v}");
    assert_eq!(
        v["requests"]["put"],
        serde_json::Value::Null,
        "nothing sent: {v}"
    );
}

/// A write through the mount between the upload and the mark: the file is not marked and stays
/// whole, the object stays as uploaded. Returns the file's content now.
fn a_write_between_upload_and_mark_leaves_the_file_whole(
    site: &Site,
    vol: &Volume,
    vol_args: &[&str],
) -> Vec<u8> {
    let first = data(300_000, 1);
    let grow = put(&vol.mnt, "grow.log", &first);
    wait_closed(&[vol.on_brick(0, "grow.log")]);
    let flag = site.dir.path().join("paused");
    let child = archive_cmd(site, &vol.bricks[0], &vol.mnt, vol_args)
        .env("BARMANS3_TEST", "1")
        .env("BARMANS3_TEST_ARCHIVE_PAUSE", &flag)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn archive");
    wait_for(
        "archive to pause after its upload",
        Duration::from_secs(60),
        || flag.exists(),
    );
    append(&grow, b"one more line\n");
    std::fs::remove_file(&flag).expect("resume");
    let v = ok("paused archive", &child.wait_with_output().expect("wait"));
    assert_eq!(counts(&v, &["changed"]), [0, 1], "{v}");
    let mut now = first.clone();
    now.extend_from_slice(b"one more line\n");
    assert_whole(vol, 0, "grow.log", &now);
    assert!(std::fs::read(&grow).expect("read") == now);
    assert!(
        object(site, "grow.log").as_deref() == Some(&first[..]),
        "the object stays"
    );
    now
}

#[test]
fn a_mount_of_a_subdirectory_or_of_another_volume_is_refused() {
    let _one = serial();
    let gl = gluster();
    let (site, _prefix, bucketid) = site("gl-mounts");
    let vol = gl.volume("whole", Layout::Single, &cloudsync(&bucketid));
    put(&vol.mnt, "docs/a.txt", b"in docs");
    let sub = gl.dir.join("mnt/whole-docs");
    gl.mount("localhost:/whole/docs", &sub);
    let out = archive(&site, &vol.bricks[0], &sub, &["--volume", "whole"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("a mount of /docs inside the volume"),
        "{}",
        text(&out.stderr)
    );
    gl.umount(&sub);

    let other = gl.volume("other", Layout::Single, &[]);
    let out = archive(
        &site,
        &vol.bricks[0],
        &other.mnt,
        &["--bucketid", &bucketid],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is not a brick of the volume mounted at"),
        "{}",
        text(&out.stderr)
    );
    assert_whole(&vol, 0, "docs/a.txt", b"in docs");
}

/// Files Gluster itself marked as DHT link files on a brick.
fn link_files(brick: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(brick)
        .expect("brick")
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| attr(&e.path(), "trusted.glusterfs.dht.linkto").is_some())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

#[test]
fn dht_link_files_are_skipped_and_each_file_is_archived_once() {
    let _one = serial();
    let gl = gluster();
    let (site, _prefix, bucketid) = site("gl-dist");
    let vol = gl.volume("dist", Layout::Distribute2, &cloudsync(&bucketid));
    // A renamed file stays on its brick; the brick its new name hashes to gets a link file.
    for i in 0..20 {
        put(&vol.mnt, &format!("f{i}"), format!("data{i}\n").as_bytes());
        std::fs::rename(vol.mnt.join(format!("f{i}")), vol.mnt.join(format!("g{i}")))
            .expect("rename");
    }
    let links = [link_files(&vol.bricks[0]), link_files(&vol.bricks[1])];
    assert!(
        !links[0].is_empty() || !links[1].is_empty(),
        "20 renames made no link file"
    );
    let on: Vec<PathBuf> = (0..2)
        .flat_map(|b| (0..20).map(move |i| (b, i)))
        .map(|(b, i)| vol.on_brick(b, &format!("g{i}")))
        .filter(|p| p.exists())
        .collect();
    wait_closed(&on);
    let mut archived = 0;
    for (b, brick) in vol.bricks.iter().enumerate() {
        let v = ok(
            "archive",
            &archive(&site, brick, &vol.mnt, &["--volume", "dist"]),
        );
        assert_eq!(
            v["skipped"]["linkto"],
            links[b].len() as u64,
            "brick {b}: {v}"
        );
        archived += v["archived"].as_u64().expect("archived");
        for l in &links[b] {
            let p = vol.on_brick(b, l);
            assert_eq!((len(&p), attr(&p, CS_REMOTE)), (0, None), "{l} untouched");
        }
    }
    assert_eq!(
        archived, 20,
        "every file once, on the brick that holds its data"
    );
    for i in 0..20 {
        let rel = format!("g{i}");
        let holder = (0..2)
            .find(|&b| vol.on_brick(b, &rel).exists() && !links[b].contains(&rel))
            .expect("the brick with the data");
        assert_archived(&site, &vol, holder, &rel, format!("data{i}\n").as_bytes());
    }
}

/// Whether a brick file carries a non-zero AFR pending counter.
fn pending(p: &Path) -> bool {
    xattr::list(p)
        .expect("list xattrs")
        .filter(|n| n.to_string_lossy().starts_with("trusted.afr."))
        .any(|n| {
            xattr::get(p, &n)
                .expect("getxattr")
                .is_some_and(|v| v.iter().any(|b| *b != 0))
        })
}

#[test]
fn pending_heal_markers_are_skipped_until_healed() {
    let _one = serial();
    let gl = gluster();
    let (site, _prefix, bucketid) = site("gl-rep");
    let vol = gl.volume("rep", Layout::Replica2, &cloudsync(&bucketid));
    put(&vol.mnt, "p1", b"base\n");
    wait_closed(&[vol.on_brick(0, "p1"), vol.on_brick(1, "p1")]);
    // The second brick goes down; writes now leave markers on the first for it.
    let pid = gl.brick_pid("rep", &vol.bricks[1]);
    Command::new("kill")
        .arg(pid.to_string())
        .status()
        .expect("kill");
    wait_for("the brick to stop", Duration::from_secs(30), || !alive(pid));
    append(&vol.mnt.join("p1"), b"more\n");
    put(&vol.mnt, "p3", b"new\n");
    let (p1, p3) = (vol.on_brick(0, "p1"), vol.on_brick(0, "p3"));
    wait_for(
        "Gluster to mark both for heal",
        Duration::from_secs(30),
        || pending(&p1) && pending(&p3),
    );
    wait_closed(&[p1.clone(), p3.clone()]);
    let v = ok(
        "archive",
        &archive(&site, &vol.bricks[0], &vol.mnt, &["--volume", "rep"]),
    );
    assert_eq!(counts(&v, &["afr-pending"]), [0, 2], "{v}");
    assert_whole(&vol, 0, "p1", b"base\nmore\n");

    // The brick comes back and the self-heal daemon heals it: then both are archived, on both
    // bricks by one mark.
    gl.cli(&["volume", "start", "rep", "force"]);
    let _ = Command::new("gluster")
        .args(["--mode=script", "volume", "heal", "rep"])
        .output();
    wait_for("the heal", Duration::from_secs(60), || {
        !pending(&p1) && !pending(&p3) && vol.on_brick(1, "p3").exists()
    });
    let all: Vec<PathBuf> = (0..2)
        .flat_map(|b| ["p1", "p3"].map(|r| vol.on_brick(b, r)))
        .collect();
    wait_closed(&all);
    let v = ok(
        "archive",
        &archive(&site, &vol.bricks[0], &vol.mnt, &["--volume", "rep"]),
    );
    assert_eq!(counts(&v, &["afr-pending"]), [2, 0], "{v}");
    for b in 0..2 {
        assert_archived(&site, &vol, b, "p1", b"base\nmore\n");
        assert_archived(&site, &vol, b, "p3", b"new\n");
    }
}

/// A process that exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        !s.lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
    })
}
