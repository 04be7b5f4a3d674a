//! `barmans3 config check` through the real binary: a good config reaches Garage; each kind of
//! bad config exits 2 with one line that names the problem, and never prints a secret.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn check(config: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_barmans3"))
        .args(["--config"])
        .arg(config)
        .args(["config", "check"])
        .env_remove("BARMANS3_CONFIG")
        .output()
        .expect("run barmans3");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    p
}

#[test]
fn good_config_reaches_garage_and_redacts_secrets() {
    let g = crate::common::garage();
    let dir = tempfile::tempdir().expect("tmp");
    let text = g.yaml("check") + &crate::common::scratch_yaml(dir.path());
    let p = write(dir.path(), "ok.yaml", &text, 0o600);
    let (code, out, err) = check(&p);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("<redacted>") && out.contains("bucket") || out.contains("store: s3://"),
        "{out}"
    );
    assert!(!out.contains(g.secret()) && !err.contains(g.secret()));
    assert!(!out.contains(g.key_id()) && !err.contains(g.key_id()));
}

#[test]
fn each_bad_config_exits_2_with_one_line_naming_it() {
    let g = crate::common::garage();
    let dir = tempfile::tempdir().expect("tmp");
    let good = g.yaml("check") + &crate::common::scratch_yaml(dir.path());
    let cases: Vec<(&str, String, u32, &str)> = vec![
        ("bad-yaml", "s3: [unclosed\n".into(), 0o600, "invalid YAML"),
        (
            "unknown-key",
            good.replace("region:", "regoin:"),
            0o600,
            "regoin",
        ),
        (
            "bad-size",
            good.replace("part_size: 5MiB", "part_size: 5 parsecs"),
            0o600,
            "s3.part_size",
        ),
        (
            "bad-endpoint",
            good.replace(g.endpoint(), "ftp//nowhere"),
            0o600,
            "s3.endpoint",
        ),
        (
            "no-bucket",
            good.replace(&format!("  bucket: {}\n", g.bucket()), ""),
            0o600,
            "s3.bucket",
        ),
        (
            "nonexistent-bucket",
            good.replace(
                &format!("bucket: {}", g.bucket()),
                "bucket: no-such-bucket-here",
            ),
            0o600,
            "no-such-bucket-here",
        ),
        (
            "wrong-keys",
            good.replace(
                g.secret(),
                "0000000000000000000000000000000000000000000000000000000000000000",
            ),
            0o600,
            "not usable",
        ),
        ("world-readable", good.clone(), 0o644, "chmod 600"),
    ];
    for (name, text, mode, fragment) in cases {
        let p = write(dir.path(), &format!("{name}.yaml"), &text, mode);
        let (code, out, err) = check(&p);
        assert_eq!(code, 2, "{name}: exit {code}, stderr {err}");
        let lines: Vec<_> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{name}: one line expected, got {err:?}");
        assert!(err.contains(fragment), "{name}: {err:?} lacks {fragment:?}");
        assert!(out.is_empty(), "{name}: nothing on stdout, got {out:?}");
        assert!(!err.contains(g.secret()), "{name}: secret leaked");
    }
    let (code, _, err) = check(&dir.path().join("missing.yaml"));
    assert_eq!(code, 2);
    assert!(
        err.contains("missing.yaml") && err.lines().count() == 1,
        "{err}"
    );
}
