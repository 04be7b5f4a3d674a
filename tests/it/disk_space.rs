//! Disk space of the `file://` store: an upload needs its object's space once, not twice, so
//! a backup fits a disk with room for it (and a part) and no more.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::site::BIN;

/// A tmpfs of a given size mounted for the test's life and unmounted when it ends.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mib: u32) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount a {mib} MiB tmpfs at {} (the test runs as root, as CI does): {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A 40 MiB stream in 8 MiB parts into a 60 MiB filesystem: the parts and an assembled copy
/// would need 80 MiB (the completion failed with "No space left on device" when it copied the
/// parts); consuming them needs 48 at most. The object is whole and its checksum verifies.
#[test]
fn a_multipart_upload_needs_its_objects_space_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let disk = Tmpfs::mount(&dir.path().join("disk"), 60);
    let bucket = disk.0.join("bucket");
    std::fs::create_dir(&bucket).expect("bucket");
    let cfg = dir.path().join("b3.yaml");
    std::fs::write(
        &cfg,
        format!(
            "store: file://{}\ns3:\n  part_size: 8MiB\n  concurrency: 2\n{}",
            bucket.display(),
            crate::common::scratch_yaml(dir.path())
        ),
    )
    .expect("cfg");
    let src = dir.path().join("src");
    std::fs::write(&src, crate::common::data(40 << 20, 9)).expect("source");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec {BIN} --config \"$0\" store put - big < \"$1\""
        ))
        .arg(&cfg)
        .arg(&src)
        .output()
        .expect("run store put");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = dir.path().join("back");
    let got = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .args(["store", "get", "big"])
        .arg(&back)
        .output()
        .expect("run store get");
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(
        std::fs::read(&back).expect("back") == std::fs::read(&src).expect("src"),
        "the object differs from the stream"
    );
    let left: Vec<_> = walkdir::WalkDir::new(bucket.join(".barmans3"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter(|e| !e.path().components().any(|c| c.as_os_str() == "meta"))
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(left.is_empty(), "parts or temp files left behind: {left:?}");
}
