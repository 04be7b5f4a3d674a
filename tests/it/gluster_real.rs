//! `archive` and `sync --files-from` against a real GlusterFS (Debian's 10.3, started by
//! `scripts/gluster-server` for the whole run): Gluster's own cloudsync translator truncates
//! what `archive` marks through a real FUSE mount, real bricks carry the link files and
//! pending-heal markers Gluster writes, and real `glusterfind pre` output feeds `sync`. Recall
//! needs a store plugin Debian does not ship, so archived data is read back with `store get`,
//! never through the mount.
//!
//! The tests run one at a time ([`serial`]); each creates its own volumes. Objects go to the
//! shared Garage under a prefix of their own.

mod archive;
mod glusterfind;

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::common::gluster::wait_for;
use crate::common::site::Site;
use crate::common::{block_on, garage, garage_transfer, list_garage, unique};

/// A site on the shared Garage under a fresh prefix, and the `s3plugin-bucketid` that recalls
/// from it.
fn site(name: &str) -> (Site, String, String) {
    let g = garage();
    let prefix = unique(name);
    let bucketid = format!("{}/{prefix}", g.bucket());
    (Site::new(&g.yaml(&prefix)), prefix, bucketid)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `--json` summary: the last line of stdout.
fn summary(out: &Output) -> serde_json::Value {
    let stdout = text(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("summary {line:?}: {e}; stderr: {}", text(&out.stderr)))
}

fn ok(what: &str, out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        text(&out.stderr)
    );
    summary(out)
}

/// Writes `data` at `rel` under `dir` (through a mount: the volume's file).
fn put(dir: &Path, rel: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(&p, data).expect("write");
    p
}

fn append(p: &Path, data: &[u8]) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(p)
        .and_then(|mut f| f.write_all(data))
        .unwrap_or_else(|e| panic!("append to {}: {e}", p.display()));
}

/// A Gluster xattr of a brick file, as text.
fn attr(p: &Path, name: &str) -> Option<String> {
    xattr::get(p, name)
        .unwrap_or_else(|e| panic!("getxattr {name} {}: {e}", p.display()))
        .map(|v| text(&v))
}

const CS_REMOTE: &str = "trusted.glusterfs.cs.remote";

/// The object at `key` (relative to the site's store prefix), by `store get`.
fn object(site: &Site, key: &str) -> Option<Vec<u8>> {
    let out = site.run(&["store", "get", key, "-"], &[]);
    out.status.success().then_some(out.stdout)
}

/// Waits until no process holds any of `paths` (brick files) open: glusterfsd lets go of the
/// brick file shortly after the client closed it, and `archive` leaves open files alone.
fn wait_closed(paths: &[PathBuf]) {
    let want: HashSet<(u64, u64)> = paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (m.dev(), m.ino())
        })
        .collect();
    wait_for(
        "the bricks' files to be closed",
        Duration::from_secs(30),
        || !open_inodes().iter().any(|i| want.contains(i)),
    );
}

/// Device and inode of every file some process holds open.
fn open_inodes() -> HashSet<(u64, u64)> {
    let mut out = HashSet::new();
    for proc_ in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(fds) = std::fs::read_dir(proc_.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(m) = std::fs::metadata(fd.path()) {
                out.insert((m.dev(), m.ino()));
            }
        }
    }
    out
}

/// Every regular file under `dir` (a mount) by relative path, with its bytes.
fn files_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| e.expect("walk"))
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).expect("under").to_str();
            let rel = rel.expect("utf-8 name").to_string();
            (rel, std::fs::read(e.path()).expect("read"))
        })
        .collect()
}

/// Every object under `<prefix>/<under>/` by key relative to it, with its bytes (read with the
/// library: the names hold newlines).
fn objects_under(prefix: &str, under: &str) -> BTreeMap<String, Vec<u8>> {
    block_on(async {
        let t = garage_transfer().await;
        let dir = format!("{prefix}/{under}/");
        let mut out = BTreeMap::new();
        for o in list_garage(&t, &dir).await {
            let (body, _) = t.download_small(&o.key, 1 << 30).await.expect("get");
            out.insert(o.key[dir.len()..].to_string(), body);
        }
        out
    })
}
