//! `archive`'s preflight through the binary: the volume's cloudsync settings from a stand-in
//! `gluster`, gluster missing, and setups that would archive files Gluster cannot recall.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use super::fixture::*;
use crate::common::Backend;
use crate::common::site::BIN;

/// A `gluster` stand-in on PATH that prints `volume get` output with these option lines and
/// records its arguments.
fn fake_gluster(dir: &Path, options: &str) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let script = format!(
        "#!/bin/sh\necho \"$@\" > {args}\ncat <<'EOF'\nOption                                   Value\n------                                   -----\n{options}EOF\n",
        args = dir.join("gluster-args").display()
    );
    std::fs::write(bin.join("gluster"), script).expect("script");
    std::fs::set_permissions(bin.join("gluster"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `archive` on a file:// site with `--volume VOL` instead of `--bucketid`.
fn with_volume(case: &Case, path_env: &str) -> Output {
    let root = case.brick.root.to_str().expect("utf-8");
    Command::new(BIN)
        .arg("--config")
        .arg(&case.site.cfg)
        .args([
            "--json",
            "archive",
            root,
            "--mount",
            root,
            "--older-than",
            "0s",
        ])
        .args([
            "--volume",
            "vol",
            "--xattr-ns",
            "user",
            "--emulate-cloudsync",
        ])
        .env("BARMANS3_TEST", "1")
        .env("PATH", path_env)
        .output()
        .expect("run")
}

#[test]
fn the_volume_settings_from_gluster_are_checked_before_anything() {
    let good = "features.cloudsync                       on\nfeatures.cloudsync-storetype             cloudsyncs3\nfeatures.s3plugin-seckey                 TOPSECRETKEY\nfeatures.s3plugin-bucketid               bucket\nfeatures.cloudsync-remote-read           off (DEFAULT)\n";
    let refusals = [
        (
            good.replace(
                "cloudsync                       on",
                "cloudsync                       off",
            ),
            "features.cloudsync is not on",
        ),
        (good.replace("cloudsyncs3", "amazons3"), "not cloudsyncs3"),
        (good.replace("off (DEFAULT)", "on"), "remote-read is on"),
        (
            good.replace(
                "bucketid               bucket",
                "bucketid               bucket/sub",
            ),
            "s3plugin-bucketid",
        ),
    ];
    for (opts, want) in refusals {
        let case = Case::new(Backend::Local);
        case.brick.add("a.txt", b"cold");
        let path = fake_gluster(case.site.dir.path(), &opts);
        let out = with_volume(&case, &path);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{want}: {err}");
        assert!(
            err.contains(want) && err.lines().count() == 1,
            "{want}: {err}"
        );
        assert!(!err.contains("TOPSECRETKEY") && !text(&out.stdout).contains("TOPSECRETKEY"));
        assert_untouched(&case, "a.txt", b"cold");
    }
    let case = Case::new(Backend::Local);
    case.brick.add("a.txt", b"cold");
    let path = fake_gluster(case.site.dir.path(), good);
    let v = ok(&with_volume(&case, &path));
    assert_eq!(v["archived"], 1, "{v}");
    let args = std::fs::read_to_string(case.site.dir.path().join("gluster-args")).expect("args");
    assert_eq!(args.trim(), "--mode=script volume get vol all");
}

#[test]
fn without_gluster_installed_volume_is_refused_in_one_line() {
    let case = Case::new(Backend::Local);
    case.brick.add("a.txt", b"cold");
    let out = with_volume(&case, "/nonexistent");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("gluster command") && err.contains("--bucketid"),
        "{err}"
    );
    assert_untouched(&case, "a.txt", b"cold");
}

#[test]
fn setups_that_would_archive_unrecallably_are_refused() {
    let g = crate::common::garage();
    let case = Case::new(Backend::Garage);
    case.brick.add("a.txt", b"cold");
    let root = case.brick.root.to_str().expect("utf-8");
    let sub = case.brick.path("sub");
    std::fs::create_dir_all(&sub).expect("mkdir");
    set_attr(&sub, "trusted.gfid", &[9; 16]);
    let base = [
        "archive",
        root,
        "--older-than",
        "0s",
        "--xattr-ns",
        "user",
        "--emulate-cloudsync",
    ];
    let test = [("BARMANS3_TEST", "1")];
    // (arguments after BRICK, BARMANS3_TEST set, what the one-line refusal says)
    let cases: Vec<(Vec<&str>, bool, &str)> = vec![
        (
            vec!["--mount", root, "--bucketid", g.bucket()],
            true,
            "does not name this store",
        ),
        (
            vec![
                "--mount",
                sub.to_str().expect("utf-8"),
                "--bucketid",
                &case.bucketid,
            ],
            true,
            "not the volume's root",
        ),
        (
            vec!["--mount", root, "--bucketid", &case.bucketid],
            false,
            "BARMANS3_TEST=1",
        ),
        (
            vec![
                "--mount",
                root,
                "--bucketid",
                &case.bucketid,
                "--max-files",
                "0",
            ],
            true,
            "above 0",
        ),
    ];
    for (extra, test_mode, want) in cases {
        let mut args = base.to_vec();
        args.extend(extra);
        let out = case.site.run(&args, if test_mode { &test } else { &[] });
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{want}: {err}");
        assert!(err.contains(want), "{want}: {err}");
    }
    assert_untouched(&case, "a.txt", b"cold");
    assert!(case.object("a.txt").is_none());
}
