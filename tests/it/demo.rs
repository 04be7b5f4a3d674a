//! The README's first command: `scripts/demo` runs the main job on the embedded `file://` store
//! and must end with its byte-for-byte comparison passing.

use std::process::Command;

#[test]
fn the_demo_syncs_restores_and_compares_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(crate::common::repo().join("scripts/demo"))
        .env("DEMO_DIR", dir.path())
        .output()
        .expect("run scripts/demo");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/demo failed ({:?}): {err}",
        out.status.code()
    );
    assert!(
        err.contains("restored data directory and tablespace are identical to the source"),
        "{err}"
    );
}
