//! Unit tests of the configuration model.
use super::*;

fn parse(y: &str) -> Result<Config> {
    Config::parse(y, Some(Path::new("/x.yaml")))
}

#[test]
fn minimal_s3_config_gets_defaults() {
    let c = parse("s3:\n  bucket: backups\n  prefix: /pg//main/\n").expect("valid");
    assert_eq!(
        c.location,
        Location::S3 {
            bucket: "backups".into(),
            prefix: "pg/main".into()
        }
    );
    assert_eq!(c.transfer.part_size, 64 << 20);
    assert_eq!(c.transfer.stream_memory, 128 << 20);
    assert_eq!(c.state.queue_dir, PathBuf::from("/var/lib/barmans3/queue"));
    assert!(c.s3.credentials.is_none());
}

#[test]
fn unknown_key_is_named() {
    let e = parse("s3:\n  bucket: b12\n  buckit: x\n").expect_err("unknown");
    let m = e.to_string();
    assert!(m.contains("buckit") && m.contains("/x.yaml"), "{m}");
    assert_eq!(e.exit().code(), 2);
    assert!(!m.contains('\n'));
}

#[test]
fn errors_name_the_key() {
    let cases = [
        ("s3:\n  bucket: bkt\n  part_size: 5X\n", "s3.part_size"),
        ("s3:\n  bucket: bkt\n  part_size: 1M\n", "s3.part_size"),
        (
            "s3:\n  bucket: bkt\n  stream_memory: 4MiB\n",
            "s3.stream_memory",
        ),
        ("s3:\n  bucket: bkt\n  endpoint: ftp://x\n", "s3.endpoint"),
        ("s3:\n  bucket: bkt\n  endpoint: 'http://'\n", "s3.endpoint"),
        ("s3:\n  region: x\n", "s3.bucket"),
        (
            "s3:\n  bucket: bkt\n  access_key_id: a\n",
            "s3.access_key_id",
        ),
        ("s3:\n  bucket: bkt\n  sse: rot13\n", "s3.sse"),
        ("s3:\n  bucket: bkt\n  concurrency: 0\n", "s3.concurrency"),
        (
            "s3:\n  bucket: bkt\n  read_timeout: soon\n",
            "s3.read_timeout",
        ),
        ("s3:\n  bucket: Bad_Bucket\n", "s3.bucket"),
        ("store: ftp://x\n", "store"),
        ("store: s3://bkt/p\ns3:\n  bucket: bkt\n", "s3.bucket"),
    ];
    for (y, key) in cases {
        let m = parse(y).expect_err(y).to_string();
        assert!(m.contains(key), "{y}: {m}");
    }
}

#[test]
fn wrong_type_is_a_config_error() {
    let e = parse("s3:\n  bucket: bkt\n  concurrency: many\n").expect_err("type");
    assert!(e.to_string().contains("concurrency"), "{e}");
}

#[test]
fn store_urls() {
    assert_eq!(
        Location::parse("s3://bkt/a/b/").expect("ok"),
        Location::S3 {
            bucket: "bkt".into(),
            prefix: "a/b".into()
        }
    );
    assert_eq!(
        Location::parse("file:///srv/x").expect("ok"),
        Location::Local {
            root: "/srv/x".into()
        }
    );
    assert!(Location::parse("file://rel").is_err());
    assert_eq!(
        Location::parse("s3://bkt/a").expect("ok").to_string(),
        "s3://bkt/a"
    );
}

#[test]
fn redacted_yaml_hides_secrets() {
    let c = parse(
        "s3:\n  bucket: bkt\n  access_key_id: AKIDSECRETVALUE\n  secret_access_key: s3cr3tVALUE\n  https_proxy: http://u:pw@proxy:3128\n",
    )
    .expect("ok");
    let y = c.to_redacted_yaml();
    assert!(!y.contains("AKIDSECRETVALUE") && !y.contains("s3cr3tVALUE") && !y.contains("pw@"));
    assert!(y.contains("<redacted>"));
    assert!(!format!("{c:?}").contains("s3cr3tVALUE"));
}

#[test]
fn world_readable_secrets_are_refused_or_warned() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("c.yaml");
    std::fs::write(
        &p,
        "s3:\n  bucket: bkt\n  access_key_id: a\n  secret_access_key: b\n",
    )
    .expect("write");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = Config::load(&p, PermissionPolicy::Refuse).expect_err("refused");
    assert!(e.to_string().contains("chmod 600"), "{e}");
    assert!(Config::load(&p, PermissionPolicy::Warn).is_ok());
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(Config::load(&p, PermissionPolicy::Refuse).is_ok());
}

#[test]
fn missing_file_names_path_and_remedy() {
    let e = Config::load(Path::new("/nonexistent/b.yaml"), PermissionPolicy::Refuse)
        .expect_err("missing");
    let m = e.to_string();
    assert!(
        m.contains("/nonexistent/b.yaml") && m.contains("--config"),
        "{m}"
    );
}

#[test]
fn the_printed_view_reads_back_as_the_same_config() {
    let text = "store: s3://bkt/pg\ns3:\n  endpoint: http://127.0.0.1:9000\n  part_size: 96MiB\n  concurrency: 3\n  read_timeout: 90s\n  sse: AES256\nbarman:\n  max_deletes: 7\n  one_put_max: 256MiB\n  custom_decompression: lz4 -d -c\n  custom_compression_magic: '0x04224d18'\n";
    let a = parse(text).expect("valid");
    let printed = a.to_redacted_yaml();
    let b = parse(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(a.location, b.location);
    assert_eq!(a.transfer.part_size, b.transfer.part_size);
    assert_eq!(a.transfer.concurrency, b.transfer.concurrency);
    assert_eq!(a.s3.read_timeout, b.s3.read_timeout);
    assert_eq!(a.s3.sse, b.s3.sse);
    assert_eq!(a.barman.max_deletes, b.barman.max_deletes);
    assert_eq!(a.barman.one_put_max, 256 << 20);
    assert_eq!(a.barman.one_put_max, b.barman.one_put_max);
    assert_eq!(a.barman.custom_decompression, b.barman.custom_decompression);
    assert_eq!(
        a.barman.custom_compression_magic,
        b.barman.custom_compression_magic
    );
}

#[test]
fn the_printed_view_never_shows_the_decryption_commands_arguments() {
    let text = "store: s3://bkt/pg\nbarman:\n  decryption_command: gpg --batch --passphrase hunter2-secret -d\n";
    let printed = parse(text).expect("valid").to_redacted_yaml();
    assert!(!printed.contains("hunter2-secret"), "{printed}");
    assert!(printed.contains("gpg <4 arguments hidden>"), "{printed}");
}

/// Parses `y` and returns the config (or error) and the log lines parsing wrote.
fn parse_logged(y: &str) -> (Result<Config>, Vec<String>) {
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let sub = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let r = tracing::subscriber::with_default(sub, || parse(y));
    let text = String::from_utf8(lines.0.lock().expect("lock").clone()).expect("utf8");
    (r, text.lines().map(str::to_string).collect())
}

#[test]
fn the_state_section_holds_the_state_queue_and_log_directories() {
    let (c, logs) =
        parse_logged("s3:\n  bucket: bkt\nstate:\n  dir: /s\n  queue_dir: /q\n  log_dir: /l\n");
    let c = c.expect("valid");
    assert_eq!(c.state.dir, PathBuf::from("/s"));
    assert_eq!(c.state.queue_dir, PathBuf::from("/q"));
    assert_eq!(c.state.log_dir, Some(PathBuf::from("/l")));
    assert!(logs.is_empty(), "{logs:?}");
    let d = parse("s3:\n  bucket: bkt\n").expect("valid");
    assert_eq!(d.state.dir, PathBuf::from("/var/lib/barmans3/state"));
    assert_eq!(d.state.log_dir, None);
}

#[test]
fn the_old_barman_keys_still_read_with_one_deprecation_line_each() {
    let cases = [
        ("state_dir: /s", "barman.state_dir", "state.dir"),
        ("queue_dir: /q", "barman.queue_dir", "state.queue_dir"),
        ("log_dir: /l", "barman.log_dir", "state.log_dir"),
    ];
    for (line, old, new) in cases {
        let (c, logs) = parse_logged(&format!("s3:\n  bucket: bkt\nbarman:\n  {line}\n"));
        let c = c.expect("valid");
        assert_eq!(logs.len(), 1, "{old}: {logs:?}");
        assert!(
            logs[0].contains("WARN") && logs[0].contains(old) && logs[0].contains(new),
            "{logs:?}"
        );
        let (dir, queue, log) = (&c.state.dir, &c.state.queue_dir, &c.state.log_dir);
        match old {
            "barman.state_dir" => assert_eq!(dir, &PathBuf::from("/s")),
            "barman.queue_dir" => assert_eq!(queue, &PathBuf::from("/q")),
            _ => assert_eq!(log, &Some(PathBuf::from("/l"))),
        }
    }
    let (c, logs) = parse_logged(
        "s3:\n  bucket: bkt\nbarman:\n  state_dir: /s\n  queue_dir: /q\n  log_dir: /l\n",
    );
    assert_eq!(c.expect("valid").state.queue_dir, PathBuf::from("/q"));
    assert_eq!(logs.len(), 3, "{logs:?}");
}

#[test]
fn a_directory_given_under_both_spellings_is_an_error_naming_both_keys() {
    let cases = [
        ("dir: /a", "state_dir: /b", "barman.state_dir", "state.dir"),
        (
            "queue_dir: /a",
            "queue_dir: /b",
            "barman.queue_dir",
            "state.queue_dir",
        ),
        (
            "log_dir: /a",
            "log_dir: /a",
            "barman.log_dir",
            "state.log_dir",
        ),
    ];
    for (new, old, old_key, new_key) in cases {
        let e = parse(&format!(
            "s3:\n  bucket: bkt\nstate:\n  {new}\nbarman:\n  {old}\n"
        ))
        .expect_err("both spellings");
        let m = e.to_string();
        assert!(m.contains(old_key) && m.contains(new_key), "{m}");
        assert_eq!(e.exit().code(), 2);
    }
}

#[test]
fn the_printed_view_writes_the_state_section() {
    let c = parse("s3:\n  bucket: bkt\nbarman:\n  state_dir: /s\n").expect("valid");
    let y = c.to_redacted_yaml();
    assert!(y.contains("state:\n  dir: /s\n"), "{y}");
    assert!(!y.contains("state_dir"), "{y}");
    let (back, logs) = parse_logged(&y);
    assert_eq!(back.expect("reads back").state.dir, PathBuf::from("/s"));
    assert!(logs.is_empty(), "{logs:?}");
}

#[test]
fn named_stores_validate_like_the_main_one_and_take_its_place() {
    let base = "s3:\n  bucket: main1\n  access_key_id: a\n  secret_access_key: topsecret\n";
    let c = parse(&format!(
        "{base}stores:\n  offsite:\n    s3:\n      bucket: other1\n      prefix: p\n      endpoint: http://o:9000\n      access_key_id: b\n      secret_access_key: othersecret\n      storage_class: STANDARD_IA\n"
    ))
    .expect("valid");
    let r = c.with_store("offsite").expect("known store");
    assert_eq!(
        r.location,
        Location::S3 {
            bucket: "other1".into(),
            prefix: "p".into()
        }
    );
    assert_eq!(r.s3.endpoint.as_deref(), Some("http://o:9000"));
    assert_eq!(r.s3.storage_classes.default.as_deref(), Some("STANDARD_IA"));
    let e = c.with_store("nope").expect_err("unknown store").to_string();
    assert!(
        e.contains("\"nope\"") && e.contains("known: offsite"),
        "{e}"
    );
    let view = c.to_redacted_yaml();
    assert!(
        view.contains("offsite") && !view.contains("othersecret"),
        "{view}"
    );
    for (bad, key) in [
        (
            "stores:\n  offsite:\n    s3:\n      prefix: p\n",
            "s3.bucket",
        ),
        (
            "stores:\n  offsite:\n    s3:\n      bucket: b1b\n      buckit: x\n",
            "buckit",
        ),
        (
            "stores:\n  'a b':\n    s3:\n      bucket: b1b\n",
            "stores.a b",
        ),
        (
            "barman:\n  replica_max_lag: soon\n",
            "barman.replica_max_lag",
        ),
    ] {
        let m = parse(&format!("{base}{bad}")).expect_err(bad).to_string();
        assert!(m.contains(key) && !m.contains('\n'), "{m}");
    }
    assert_eq!(c.barman.replica_max_lag, Duration::from_secs(86400));
}
