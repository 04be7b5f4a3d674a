//! `sync SRC_DIR KEY_PREFIX` on Garage and file://: the exact keys a crawl and each
//! hand-written glusterfind list (`tests/data/glusterfind/`) upload and delete, lists refused
//! before any request, `--dry-run` sending nothing, a no-change resync sending no PUT, the
//! `--delete` guards, archived Gluster files never read, and names that cannot be keys.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::site::Site;
use crate::common::{Backend, garage, on_both, unique};

/// A source tree and a store (file:// or a fresh prefix on Garage) with the binary to sync them.
struct Fixture {
    site: Site,
    /// The store's own prefix (Garage) or "" (file://).
    root: String,
    src: PathBuf,
}

impl Fixture {
    fn new(b: Backend) -> Fixture {
        let (site, root) = match b {
            Backend::Local => (Site::local(), String::new()),
            Backend::Garage => {
                let p = unique("sync");
                (Site::new(&garage().yaml(&p)), p)
            }
        };
        let src = site.dir.path().join("src");
        std::fs::create_dir_all(&src).expect("src");
        Fixture { site, root, src }
    }

    fn write(&self, rel: &str, body: &[u8]) {
        write_under(&self.src, rel, body);
    }

    fn sync(&self, args: &[&str]) -> Output {
        run_sync(&self.site, &self.src, args)
    }

    fn sync_ok(&self, args: &[&str]) -> serde_json::Value {
        sync_ok(&self.site, &self.src, args)
    }

    fn list(&self, name: &str) -> String {
        crate::common::repo()
            .join("tests/data/glusterfind")
            .join(name)
            .display()
            .to_string()
    }

    /// Every key under `files/`, relative to it, with its content.
    fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        let out = self.site.run(&["store", "ls", "files/"], &[]);
        assert!(out.status.success(), "{}", err(&out));
        // `store ls` prints keys as `store get` takes them, relative to the store's prefix.
        let strip = "files/";
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                l.trim_start()
                    .split_once(' ')
                    .expect("size key")
                    .1
                    .to_string()
            })
            .map(|key| {
                let rel = key.strip_prefix(strip).expect("under files/").to_string();
                let got = self
                    .site
                    .run(&["store", "get", &format!("files/{rel}"), "-"], &[]);
                assert!(got.status.success(), "{}", err(&got));
                (rel, got.stdout)
            })
            .collect()
    }

    fn keys(&self) -> BTreeSet<String> {
        self.objects().into_keys().collect()
    }
}

/// Writes `body` to `rel` under `src`, making its directories.
pub(crate) fn write_under(src: &Path, rel: &str, body: &[u8]) {
    let p = src.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, body).expect("write");
}

/// `sync [args] SRC files`, with `--json` and the tests' xattr namespace.
pub(crate) fn run_sync(site: &Site, src: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--json", "sync", "--xattr-ns", "user"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[src.to_str().expect("utf8"), "files"]);
    site.run(&all, &[])
}

/// [`run_sync`] that must succeed; its JSON summary.
pub(crate) fn sync_ok(site: &Site, src: &Path, args: &[&str]) -> serde_json::Value {
    let out = run_sync(site, src, args);
    assert!(out.status.success(), "sync {args:?}: {}", err(&out));
    summary(&out)
}

fn err(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn summary(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("summary {line:?}: {e}"))
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

/// PUTs and multipart parts a run sent.
fn puts(s: &serde_json::Value) -> u64 {
    ["put", "upload_part", "create_multipart"]
        .iter()
        .map(|op| s["requests"][op].as_u64().unwrap_or(0))
        .sum()
}

/// The tree of the full list: a directory, encoded names, a literal `+` and its decoy.
fn full_tree(f: &Fixture) {
    f.write("dir1/f1", b"one");
    f.write("dir1/sub/f2", b"two");
    f.write("a b", b"space");
    f.write("100%", b"percent");
    f.write("x+y", b"plus");
    f.write("x y", b"decoy: what Bareos' reader would have looked for");
    f.write("unlisted", b"not in the list");
}

async fn full_list_uploads_exactly_the_listed_paths(b: Backend) {
    let f = Fixture::new(b);
    full_tree(&f);
    let full = f.list("full.txt");
    let s = f.sync_ok(&["--files-from", &full, "--files-format", "glusterfind"]);
    assert_eq!(s["uploaded"], 5, "{s}");
    let objects = f.objects();
    assert_eq!(
        objects.keys().cloned().collect::<BTreeSet<_>>(),
        set(&["100%", "a b", "dir1/f1", "dir1/sub/f2", "x+y"])
    );
    assert_eq!(objects["x+y"], b"plus");
    assert_eq!(objects["a b"], b"space");
    assert_eq!(objects["dir1/sub/f2"], b"two");
    // The same list again: nothing sent (size and mtime from the objects' metadata).
    let again = f.sync_ok(&["--files-from", &full, "--files-format", "glusterfind"]);
    assert_eq!(
        (again["unchanged"].as_u64(), puts(&again)),
        (Some(5), 0),
        "{again}"
    );
    // Bare paths (--tag-for-full-find ''), the same decoding.
    let g = Fixture::new(b);
    full_tree(&g);
    let bare = g.list("empty-tag.txt");
    g.sync_ok(&["--files-from", &bare, "--files-format", "glusterfind"]);
    assert_eq!(g.keys(), set(&["a b", "dir1/f1", "dir1/sub/f2", "x+y"]));
}

/// What the bucket held before the incremental list: a crawl of the old tree.
fn before_incremental(f: &Fixture) {
    f.write("d/f", b"old");
    f.write("old n", b"renamed file");
    f.write("dirA/f1", b"A1");
    f.write("dirA/sub/f2", b"A2");
    f.write("gone", b"deleted later");
    f.write("keep", b"untouched");
    f.sync_ok(&[]);
    assert_eq!(
        f.keys(),
        set(&["d/f", "dirA/f1", "dirA/sub/f2", "gone", "keep", "old n"])
    );
    // The changes glusterfind recorded in incremental.txt.
    f.write("d/f", b"new content");
    std::fs::rename(f.src.join("old n"), f.src.join("new")).expect("mv");
    std::fs::rename(f.src.join("dirA"), f.src.join("dirB")).expect("mv");
    f.write("dirB/f3", b"B3"); // no line of its own: found by walking dirB
    std::fs::remove_file(f.src.join("gone")).expect("rm");
}

async fn incremental_list_renames_walks_and_deletes(b: Backend) {
    let f = Fixture::new(b);
    before_incremental(&f);
    let inc = f.list("incremental.txt");
    // Without --delete nothing goes.
    f.sync_ok(&["--files-from", &inc, "--files-format", "glusterfind"]);
    let both = set(&[
        "d/f",
        "dirA/f1",
        "dirA/sub/f2",
        "dirB/f1",
        "dirB/f3",
        "dirB/sub/f2",
        "gone",
        "keep",
        "new",
        "old n",
    ]);
    assert_eq!(f.keys(), both);
    let s = f.sync_ok(&[
        "--files-from",
        &inc,
        "--files-format",
        "glusterfind",
        "--delete",
    ]);
    assert_eq!(
        s["deleted"],
        serde_json::json!(
            ["dirA/f1", "dirA/sub/f2", "gone", "old n"]
                .map(|k| format!("{}files/{k}", root_slash(&f)))
        )
    );
    let objects = f.objects();
    assert_eq!(
        objects.keys().cloned().collect::<BTreeSet<_>>(),
        set(&["d/f", "dirB/f1", "dirB/f3", "dirB/sub/f2", "keep", "new"])
    );
    assert_eq!(objects["d/f"], b"new content");
    assert_eq!(objects["dirB/f3"], b"B3");
}

fn root_slash(f: &Fixture) -> String {
    if f.root.is_empty() {
        String::new()
    } else {
        format!("{}/", f.root)
    }
}

async fn other_separators_and_raw_lists(b: Backend) {
    let f = Fixture::new(b);
    f.write("a b", b"1");
    f.write("new", b"2");
    f.write("d/f", b"3");
    f.write("dir 1/f 2", b"4");
    let eq = f.list("separator-eq.txt");
    let fmt = ["--files-format", "glusterfind", "--field-separator", "=="];
    f.sync_ok(&[&["--files-from", eq.as_str()][..], &fmt].concat());
    assert_eq!(f.keys(), set(&["a b", "d/f", "new"]));
    let raw = f.list("raw-spaces.txt");
    f.sync_ok(&["--files-from", &raw, "--files-format", "glusterfind-raw"]);
    assert_eq!(f.keys(), set(&["a b", "d/f", "dir 1/f 2", "new"]));
}

async fn missing_paths_fail_unless_allowed(b: Backend) {
    let f = Fixture::new(b);
    f.write("here", b"here");
    let list = f.src.parent().expect("parent").join("missing.txt");
    std::fs::write(&list, "NEW here\nNEW gone\n").expect("list");
    let list = list.to_str().expect("utf-8").to_string();
    let out = f.sync(&["--files-from", &list, "--files-format", "glusterfind"]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(err(&out).contains("glusterfind post"), "{}", err(&out));
    assert_eq!(summary(&out)["missing"], serde_json::json!(["gone"]));
    let s = f.sync_ok(&[
        "--files-from",
        &list,
        "--files-format",
        "glusterfind",
        "--allow-missing",
    ]);
    assert_eq!(s["missing"], serde_json::json!(["gone"]));
    assert_eq!(f.keys(), set(&["here"]));
}

/// glusterfind splits every incremental path at its commas (a file "x,y" is listed as "x" and
/// "y"): the pieces are joined again when the joined name exists, and only then.
async fn names_split_at_commas_are_put_back(b: Backend) {
    let f = Fixture::new(b);
    f.write("x,y", b"linked");
    std::fs::hard_link(f.src.join("x,y"), f.src.join("link")).expect("ln");
    let list = f.list("comma-link.txt");
    let s = f.sync_ok(&["--files-from", &list, "--files-format", "glusterfind"]);
    assert_eq!(s["recovered"], serde_json::json!(["x,y"]), "{s}");
    assert_eq!(s["missing"], serde_json::json!([]), "{s}");
    assert_eq!(f.keys(), set(&["x,y"]));
    // The periodic crawl is the safety net for the rest.
    f.sync_ok(&[]);
    assert_eq!(f.keys(), set(&["link", "x,y"]));
}

async fn malformed_lists_are_refused_before_any_request(b: Backend) {
    let f = Fixture::new(b);
    full_tree(&f);
    for (name, format, line, what) in [
        ("bad-escape.txt", "glusterfind", 2, "%zz"),
        ("unknown-tag.txt", "glusterfind", 2, "unknown tag"),
        (
            "raw-rename-ambiguous.txt",
            "glusterfind-raw",
            2,
            "ambiguous",
        ),
        ("empty-tag.txt", "glusterfind-raw", 1, "no tag"),
    ] {
        let list = f.list(name);
        let args = ["--files-from", list.as_str(), "--files-format", format];
        let out = f.sync(&args);
        let e = err(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {e}");
        assert!(
            e.contains(&format!("line {line}")) && e.contains(what),
            "{name}: {e}"
        );
        assert!(out.stdout.is_empty(), "{name}: no summary, no request");
    }
    assert!(f.keys().is_empty(), "the store was touched");
}

async fn dry_run_sends_nothing(b: Backend) {
    let f = Fixture::new(b);
    f.write("a", b"a");
    f.write("old", b"old");
    f.sync_ok(&[]);
    std::fs::remove_file(f.src.join("old")).expect("rm");
    f.write("b", b"b");
    // A name that would forge a plan line if printed raw.
    f.write("c\nupload forged", b"c");
    let before = f.objects();
    let s = f.sync_ok(&["--dry-run", "--delete"]);
    let prefix = format!("{}files/", root_slash(&f));
    assert_eq!(
        s["would_upload"],
        serde_json::json!([format!("{prefix}b"), format!("{prefix}c\nupload forged")])
    );
    assert_eq!(s["deleted"], serde_json::json!([format!("{prefix}old")]));
    assert_eq!(puts(&s), 0, "{s}");
    assert_eq!(s["requests"]["delete"].as_u64().unwrap_or(0), 0, "{s}");
    assert_eq!(f.objects(), before);
    // Without --json the plan is data on stdout.
    let src = f.src.to_str().expect("utf8");
    let out = f
        .site
        .run(&["sync", "--dry-run", "--delete", src, "files"], &[]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("upload {prefix}b\nupload {prefix}c\\nupload forged\ndelete {prefix}old\n")
    );
}

async fn resync_sends_only_what_changed(b: Backend) {
    let f = Fixture::new(b);
    for i in 0..20 {
        f.write(&format!("d{}/f{i}", i % 3), format!("file {i}").as_bytes());
    }
    let first = f.sync_ok(&[]);
    assert_eq!(first["uploaded"], 20);
    let again = f.sync_ok(&[]);
    assert_eq!(
        (again["unchanged"].as_u64(), puts(&again)),
        (Some(20), 0),
        "{again}"
    );
    // Same size, new content, the old mtime put back: size+mtime cannot see it, --checksum can.
    let p = f.src.join("d1/f1");
    let mtime = std::fs::metadata(&p)
        .and_then(|m| m.modified())
        .expect("mtime");
    std::fs::write(&p, b"FILE 1").expect("w");
    std::fs::File::options()
        .write(true)
        .open(&p)
        .and_then(|h| h.set_modified(mtime))
        .expect("touch");
    assert_eq!(puts(&f.sync_ok(&[])), 0);
    let s = f.sync_ok(&["--checksum"]);
    assert_eq!(
        (s["uploaded"].as_u64(), s["unchanged"].as_u64()),
        (Some(1), Some(19)),
        "{s}"
    );
    assert_eq!(f.objects()["d1/f1"], b"FILE 1");
    // A new mtime alone is a change.
    std::fs::File::options()
        .write(true)
        .open(f.src.join("d2/f2"))
        .and_then(|h| h.set_modified(std::time::SystemTime::now()))
        .expect("touch");
    assert_eq!(f.sync_ok(&[])["uploaded"], 1);
}

async fn delete_guards(b: Backend) {
    let f = Fixture::new(b);
    for n in ["a", "b", "c", "d"] {
        f.write(n, n.as_bytes());
    }
    f.sync_ok(&[]);
    for n in ["a", "b", "c"] {
        std::fs::remove_file(f.src.join(n)).expect("rm");
    }
    // Over the cap: refused, nothing deleted, exit 1.
    let out = f.sync(&["--delete", "--max-deletes", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(err(&out).contains("--max-deletes 2"), "{}", err(&out));
    assert_eq!(f.keys(), set(&["a", "b", "c", "d"]));
    // A failure anywhere (a name that cannot be a key) blocks every deletion.
    let bad = f
        .src
        .join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"caf\xe9"));
    std::fs::write(&bad, b"latin-1").expect("w");
    let out = f.sync(&["--delete", "--force"]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(err(&out).contains("UTF-8"), "{}", err(&out));
    assert_eq!(f.keys(), set(&["a", "b", "c", "d"]));
    std::fs::remove_file(&bad).expect("rm");
    // --force goes past the cap.
    let s = f.sync_ok(&["--delete", "--max-deletes", "2", "--force"]);
    assert_eq!(s["deleted"].as_array().map(Vec::len), Some(3));
    assert_eq!(f.keys(), set(&["d"]));
    // An empty source (an unmounted filesystem) never deletes.
    std::fs::remove_file(f.src.join("d")).expect("rm");
    let out = f.sync(&["--delete", "--force"]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(err(&out).contains("empty"), "{}", err(&out));
    assert_eq!(f.keys(), set(&["d"]));
}

async fn archived_files_are_never_read(b: Backend) {
    let f = Fixture::new(b);
    f.write("cold", b"");
    f.write("warm", b"data");
    let cold = f.src.join("cold");
    xattr_or_fail(&cold, "user.glusterfs.cs.remote", b"files/cold");
    std::os::unix::fs::symlink("/etc/hostname", f.src.join("link")).expect("ln");
    let s = f.sync_ok(&[]);
    assert_eq!(
        (s["archived"].as_u64(), s["symlinks"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    assert_eq!(f.keys(), set(&["warm"]));
    // The same from a list naming it, and a file reached through a linked directory.
    let outside = f.site.dir.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    std::fs::write(outside.join("secret"), b"not ours").expect("w");
    std::os::unix::fs::symlink(&outside, f.src.join("linkdir")).expect("ln");
    let list = f.site.dir.path().join("list");
    std::fs::write(&list, "NEW cold\nNEW linkdir/secret\n").expect("w");
    let s = f.sync_ok(&[
        "--files-from",
        list.to_str().expect("utf8"),
        "--files-format",
        "glusterfind",
    ]);
    assert_eq!(
        (s["archived"].as_u64(), s["symlinks"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    assert_eq!(f.keys(), set(&["warm"]));
}

/// Sets an xattr, failing with the remedy when the filesystem has none (tmpfs before 6.6).
fn xattr_or_fail(p: &Path, name: &str, value: &[u8]) {
    if let Err(e) = xattr::set(p, name, value) {
        panic!(
            "{}: cannot set {name} ({e}): run the tests on ext4 or xfs (TMPDIR), which keep user xattrs",
            p.display()
        );
    }
}

async fn names_that_cannot_be_keys_fail_the_run(b: Backend) {
    let f = Fixture::new(b);
    f.write("ok", b"fine");
    let long = [
        "d".repeat(250),
        "e".repeat(250),
        "f".repeat(250),
        "g".repeat(250),
        "h".repeat(60),
    ]
    .join("/");
    f.write(&long, b"deep");
    let out = f.sync(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(err(&out).contains("1024"), "{}", err(&out));
    assert_eq!(f.keys(), set(&["ok"]));
}

on_both!(
    full_list_uploads_exactly_the_listed_paths,
    incremental_list_renames_walks_and_deletes,
    other_separators_and_raw_lists,
    missing_paths_fail_unless_allowed,
    names_split_at_commas_are_put_back,
    malformed_lists_are_refused_before_any_request,
    dry_run_sends_nothing,
    resync_sends_only_what_changed,
    delete_guards,
    archived_files_are_never_read,
    names_that_cannot_be_keys_fail_the_run,
);

/// A malformed list exits 2 even when the store cannot be reached: it was refused before the
/// first request.
#[test]
fn a_malformed_list_needs_no_store() {
    let site = Site::new(
        "s3:\n  endpoint: http://127.0.0.1:9\n  region: x\n  bucket: bucket-x\n  access_key_id: AKIDEXAMPLE\n  secret_access_key: s\n  max_attempts: 1\n  connect_timeout: 1s\n",
    );
    let src = site.dir.path().join("src");
    std::fs::create_dir_all(&src).expect("src");
    let list = crate::common::repo().join("tests/data/glusterfind/bad-escape.txt");
    let out = site.run(
        &[
            "sync",
            "--files-from",
            list.to_str().expect("utf8"),
            "--files-format",
            "glusterfind",
            src.to_str().expect("utf8"),
            "files",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    assert!(err(&out).contains("line 2"), "{}", err(&out));
    // The same tree without a list does need the store: exit 1, not 2.
    let out = site.run(&["sync", src.to_str().expect("utf8"), "files"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
}

/// Every request a run made.
fn requests(s: &serde_json::Value) -> u64 {
    s["total_requests"].as_u64().expect("total_requests")
}

/// A no-change rerun of 1000 files decides from the listing and the sync record: one LIST per
/// 1000 keys, no HEAD per file. A changed file is still sent, and an object another writer
/// replaced (another ETag) is asked about and sent again: the record never outranks the bucket.
#[test]
fn a_no_change_resync_decides_from_the_listing() {
    let f = Fixture::new(Backend::Garage);
    for i in 0..1000 {
        f.write(&format!("d{}/f{i}", i % 7), format!("file {i}").as_bytes());
    }
    assert_eq!(f.sync_ok(&[])["uploaded"], 1000);
    let again = f.sync_ok(&[]);
    assert_eq!(again["unchanged"], 1000, "{again}");
    assert!(requests(&again) <= 10, "no-change rerun: {again}");
    assert_eq!(
        again["requests"]["head"].as_u64().unwrap_or(0),
        0,
        "{again}"
    );
    // A new mtime alone is a change (the exact-mtime rule), as is new content.
    let touched = f.src.join("d2/f2");
    std::fs::File::options()
        .write(true)
        .open(&touched)
        .and_then(|h| h.set_modified(std::time::SystemTime::now()))
        .expect("touch");
    f.write("d3/f3", b"FILE 3 changed");
    let s = f.sync_ok(&[]);
    assert_eq!(
        (s["uploaded"].as_u64(), s["unchanged"].as_u64()),
        (Some(2), Some(998)),
        "{s}"
    );
    assert!(requests(&s) <= 10 + 2 * 3, "{s}");
    assert_eq!(f.objects()["d3/f3"], b"FILE 3 changed");
    // Another writer replaces an object with other bytes of the same size: its ETag changed,
    // so the file is compared again and sent back.
    let other = f.site.dir.path().join("other");
    std::fs::write(&other, b"FILE 4").expect("other");
    let put = f.site.run(
        &["store", "put", other.to_str().expect("utf8"), "files/d4/f4"],
        &[],
    );
    assert!(put.status.success(), "{}", err(&put));
    let s = f.sync_ok(&[]);
    assert_eq!(s["uploaded"], 1, "{s}");
    assert_eq!(f.objects()["d4/f4"], b"file 4");
    let s = f.sync_ok(&[]);
    assert_eq!(
        (s["uploaded"].as_u64(), requests(&s) <= 10),
        (Some(0), true),
        "{s}"
    );
}
