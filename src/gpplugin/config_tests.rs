//! Tests of config.

use super::*;

fn parse(options: &str) -> Result<PluginConfig> {
    let text = format!("executablepath: /usr/local/bin/gpbackup_s3_plugin\noptions:\n{options}");
    PluginConfig::parse(&text, Path::new("/tmp/x.yaml"))
}

const BASE: &str = "  endpoint: http://127.0.0.1:9000/\n  bucket: b1-test\n  folder: f\n";

#[test]
fn sizes_follow_go_bytesize() {
    assert_eq!(parse_gp_size("5MB"), Ok(5_242_880));
    assert_eq!(parse_gp_size("1.5GB"), Ok(1_610_612_736));
    assert_eq!(parse_gp_size("10gb"), Ok(10 << 30));
    assert_eq!(parse_gp_size("500 MB"), Ok(500 << 20));
    assert_eq!(parse_gp_size("2 megabytes"), Ok(2 << 20));
    assert_eq!(parse_gp_size("1 byte"), Ok(1));
    assert_eq!(parse_gp_size("7B"), Ok(7));
    for bad in ["100M", "500", "5MiB", "", "MB", "1..5MB", "-5MB", "5 XB"] {
        assert!(parse_gp_size(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn typed_scalars_and_injected_keys_parse() {
    let c = parse(&format!(
        "{BASE}  backup_max_concurrent_requests: 2\n  remove_duplicate_bucket: false\n  backup_plugin_version: 1.3\n  pgport: \"5432\"\n  backup_multipart_chunksize: 5MB\n"
    ))
    .expect("valid");
    assert_eq!(c.backup.concurrency, 2);
    assert_eq!(c.backup.chunk, 5 << 20);
    assert_eq!(c.restore.chunk, DEFAULT_CHUNK);
    assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!(c.region, FALLBACK_REGION);
    let c = parse(&format!("{BASE}  backup_plugin_version:\n")).expect("null value");
    assert_eq!(c.folder, "f");
}

#[test]
fn encryption_decides_scheme_only_when_missing() {
    let opts = |enc: &str, ep: &str| {
        parse(&format!(
            "  endpoint: {ep}\n  bucket: bkt\n  folder: f\n  encryption: {enc}\n"
        ))
    };
    let e = |c: Result<PluginConfig>| c.expect("valid").endpoint.expect("endpoint");
    assert_eq!(e(opts("off", "minio:9000")), "http://minio:9000");
    assert_eq!(e(opts("on", "minio:9000")), "https://minio:9000");
    assert_eq!(e(opts("off", "https://minio:9000")), "https://minio:9000");
    let err = opts("On", "minio:9000")
        .expect_err("capital On")
        .to_string();
    assert!(err.contains("encryption"), "{err}");
}

#[test]
fn age_files_turn_encryption_on_and_are_checked() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().expect("tmp");
    let id = age::x25519::Identity::generate();
    let to = d.path().join("to.txt");
    std::fs::write(&to, format!("{}\n", id.to_public())).expect("to");
    let key = d.path().join("id.key");
    let secret = age::secrecy::ExposeSecret::expose_secret(&id.to_string()).to_string();
    std::fs::write(&key, format!("{secret}\n")).expect("id");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let with = |extra: &str| parse(&format!("{BASE}{extra}"));
    let c = with(&format!(
        "  age_recipients_file: {}\n  age_identity_file: {}\n",
        to.display(),
        key.display()
    ))
    .expect("valid");
    let keys = c.age.expect("encryption on");
    assert_eq!(
        keys.recipients.public_keys(),
        vec![id.to_public().to_string()]
    );
    assert!(parse(BASE).expect("valid").age.is_none());
    let e = with(&format!("  age_identity_file: {}\n", key.display()))
        .expect_err("identity alone")
        .to_string();
    assert!(e.contains("age_recipients_file"), "{e}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = with(&format!(
        "  age_recipients_file: {}\n  age_identity_file: {}\n",
        to.display(),
        key.display()
    ))
    .expect_err("readable identity")
    .to_string();
    assert!(
        e.contains("age_identity_file") && !e.contains(&secret),
        "{e}"
    );
}

#[test]
fn every_problem_is_listed_on_one_line() {
    let text = "executablepath: \"\"\noptions:\n  aws_access_key_id: AKIAEXAMPLE\n  restore_subset: \"maybe\"\n  backup_multipart_chunksize: 100M\n";
    let err = PluginConfig::parse(text, Path::new("/tmp/c.yaml"))
        .expect_err("invalid")
        .to_string();
    for want in [
        "executablepath",
        "restore_subset",
        "bucket is required",
        "folder is required",
        "region",
        "aws_secret_access_key",
        "100M",
    ] {
        assert!(err.contains(want), "{want} missing from {err}");
    }
    assert!(!err.contains('\n'));
    assert!(!err.contains("AKIAEXAMPLE"));
}

#[test]
fn malformed_documents_are_refused() {
    let p = Path::new("/tmp/c.yaml");
    for text in [
        "executablepath: /x\n",
        "executablepath: /x\noptions:\n  - a\n  - b\n",
        "executablepath: /x\noptions:\n  bucket: a\n  bucket: b\n",
        "executablepath: /x\noptions: [unclosed\n",
        "executablepath: /x\nextra: 1\noptions:\n  bucket: abc\n  folder: f\n  region: r\n",
        "executablepath: /x\noptions:\n  bucket: abc\n  folder: f\n  region: r\n  backup_max_concurrent_requests: 0\n",
        "executablepath: /x\noptions:\n  bucket: abc\n  folder: f\n  region: r\n  restore_multipart_chunksize: 0MB\n",
        "executablepath: /x\noptions:\n  bucket: abc\n  folder: f\n  region: r\n  remove_duplicate_bucket: yes\n",
    ] {
        assert!(PluginConfig::parse(text, p).is_err(), "accepted: {text}");
    }
}

#[test]
fn folder_is_normalised() {
    for f in ["a/b/", "/a/b", "a//b"] {
        let c = parse(&format!("  region: r\n  bucket: bkt\n  folder: {f}\n")).expect("ok");
        assert_eq!(c.folder, "a/b");
    }
}

#[test]
fn stream_memory_bounds_both_directions_whatever_the_chunk_size() {
    let c = parse(BASE).expect("valid");
    assert_eq!(c.stream_memory, 128 << 20);
    assert_eq!(
        c.transfer_config(c.backup).stream_memory,
        crate::transfer::plan::STREAM_MEMORY
    );
    let c = parse(&format!("{BASE}  stream_memory: 64MB\n")).expect("valid");
    assert_eq!(c.transfer_config(c.restore).stream_memory, 64 << 20);
    for bad in ["1MB", "100G", "128 apples"] {
        let e = parse(&format!("{BASE}  stream_memory: {bad}\n")).expect_err(bad);
        assert!(e.to_string().contains("option stream_memory"), "{e}");
    }
}
