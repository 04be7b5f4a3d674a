//! The open-files limit: a run of many small files keeps its files and connections in flight
//! within it instead of failing with "too many open files".

use crate::common::site::{BIN, Site};
use crate::common::{garage, unique};

/// Under a low open-files limit (soft and hard: nothing to raise it to), a `sync` of 600 small
/// files to Garage completes, every file in the bucket.
#[test]
fn many_files_within_a_low_open_files_limit() {
    let site = Site::new(&garage().yaml(&unique("nofile")));
    let src = site.dir.path().join("src");
    for i in 0..600 {
        let dir = src.join(format!("d{}", i % 5));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(format!("f{i}")), format!("file {i}")).expect("write");
    }
    let out = std::process::Command::new("sh")
        .args(["-c", "ulimit -n 100 && exec \"$0\" \"$@\""])
        .arg(BIN)
        .arg("--config")
        .arg(&site.cfg)
        .args(["--json", "sync"])
        .arg(&src)
        .arg("files")
        .output()
        .expect("run barmans3 under ulimit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(text.lines().last().unwrap_or_default()).expect("summary");
    assert_eq!(summary["uploaded"], 600, "{summary}");
    let listed = site.run(&["store", "ls", "files/"], &[]);
    assert!(listed.status.success());
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), 600);
}
