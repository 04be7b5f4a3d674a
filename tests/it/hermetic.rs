//! Tests stay inside their scratch directories: a run on a config the tests write (here an
//! imported BarmanS3 config, which names the host's directories, moved into scratch the way the
//! tests' helpers do) keeps its queue, state and caches there, and writes nothing under the
//! host's /var/lib/barmans3, whose root-owned directories would outlive the test.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::site::BIN;
use crate::common::{HOST_STATE, into_scratch};

/// Every path under `dir` with its modification time, or `None` when `dir` does not exist.
fn tree(dir: &Path) -> Option<BTreeSet<(PathBuf, Option<std::time::SystemTime>)>> {
    let meta = std::fs::symlink_metadata(dir).ok()?;
    let mut out = BTreeSet::from([(dir.to_path_buf(), meta.modified().ok())]);
    if meta.is_dir() {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            out.extend(tree(&e.path()).unwrap_or_default());
        }
    }
    Some(out)
}

#[test]
fn a_run_on_an_imported_config_writes_nothing_outside_its_scratch_dir() {
    let _host = crate::common::host_paths();
    let before = tree(Path::new(HOST_STATE));
    let dir = tempfile::tempdir().expect("tmp");
    let legacy = dir.path().join("barmans3.conf");
    std::fs::write(
        &legacy,
        "S3_BUCKET_URI=\"s3://old-bucket/barman\"\nBASESYNC_QUEUE=\"/var/run/barmans3/queue.d\"\n",
    )
    .expect("w");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env_remove("BARMANS3_CONFIG")
            .output()
            .expect("run barmans3")
    };
    let out = run(&["config", "import-legacy", legacy.to_str().expect("utf8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let imported = String::from_utf8_lossy(&out.stdout);
    assert!(imported.contains(HOST_STATE), "{imported}");
    let cfg = dir.path().join("imported.yaml");
    std::fs::write(&cfg, into_scratch(&imported, dir.path())).expect("w");
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let bucket = dir.path().join("bucket");
    std::fs::create_dir(&bucket).expect("bucket");
    let file = dir.path().join("f");
    std::fs::write(&file, b"scratch only").expect("w");
    let store = format!("file://{}", bucket.display());
    let c = cfg.to_str().expect("utf8");
    for args in [
        vec!["--config", c, "queue", "ls"],
        vec!["--config", c, "--store", &store, "config", "check"],
        vec!["--config", c, "--store", &store, "store", "put"],
    ] {
        let mut args = args;
        if args.ends_with(&["put"]) {
            args.extend([file.to_str().expect("utf8"), "k"]);
        }
        let out = run(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(dir.path().join("queue").is_dir(), "the queue is in scratch");
    assert_eq!(
        tree(Path::new(HOST_STATE)),
        before,
        "a test run wrote under {HOST_STATE}"
    );
}
