//! Every parser of outside input, fed seeded random and mutated inputs: none may panic, and
//! what they accept must hold their own invariants. Seeded, bounded, fast.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 4000;

/// Inputs built from fragments that matter to the parsers, glued with random bytes.
fn input(rng: &mut StdRng, seeds: &[&str]) -> String {
    const ALPHABET: &[&str] = &[
        "=",
        "\n",
        "\"",
        "'",
        "$",
        ":",
        " ",
        "\t",
        "#",
        "[",
        "]",
        "{",
        "}",
        "-",
        ".",
        "/",
        "..",
        "%(",
        ")s",
        "\\",
        "\u{0}",
        "é",
        "0",
        "9",
        "F",
        "f",
        "MB",
        "GiB",
        "None",
        "null",
        "~",
        "- ",
        "&a",
        "*a",
        "!!",
        "1e309",
        "-1",
        "18446744073709551616",
    ];
    let mut s = String::new();
    let parts = rng.random_range(0..12);
    for _ in 0..parts {
        match rng.random_range(0..4) {
            0 => s.push_str(seeds[rng.random_range(0..seeds.len())]),
            1 => s.push_str(ALPHABET[rng.random_range(0..ALPHABET.len())]),
            2 => s.push(char::from(rng.random_range(0x20u8..0x7f))),
            _ => {
                let base = seeds[rng.random_range(0..seeds.len())];
                let cut = rng.random_range(0..=base.len());
                s.push_str(base.get(..cut).unwrap_or(base));
            }
        }
    }
    s
}

#[test]
fn size_and_duration_strings() {
    let mut rng = StdRng::seed_from_u64(1);
    let seeds = [
        "5MB",
        "1.5GB",
        "10gb",
        "500",
        "5MiB",
        "128M",
        "1 byte",
        "2 megabytes",
        "30s",
        "7d",
        "1.5h",
    ];
    for _ in 0..ROUNDS {
        let s = input(&mut rng, &seeds);
        let _ = barmans3::units::parse_size(&s);
        let _ = barmans3::units::parse_duration(&s);
        if let Ok(n) = barmans3::gpplugin::config::parse_gp_size(&s) {
            assert!(n < u64::MAX, "{s:?}");
        }
    }
}

#[test]
fn wal_names_backup_info_and_barman_config() {
    let mut rng = StdRng::seed_from_u64(2);
    let seeds = [
        "000000010000000000000005",
        ".partial",
        ".00000028.backup",
        "00000002.history",
        "status=DONE\n",
        "begin_wal=000000010000000000000003\n",
        "[barman]\nbarman_home = /x\n",
        "[pg]\nwals_directory = %(barman_home)s/w\n",
        "  continued\n",
    ];
    for _ in 0..ROUNDS {
        let s = input(&mut rng, &seeds);
        if let Some(rel) = barmans3::barman::wal::relative_path(&s) {
            assert!(
                !rel.contains("..") && !rel.starts_with('/'),
                "{s:?} -> {rel}"
            );
        }
        let _ = barmans3::barman::wal::segment_number(&s, 256);
        let _ = barmans3::barman::wal::timeline(&s);
        let _ = barmans3::codec::Codec::sniff(s.as_bytes());
        let info = barmans3::barman::info::BackupInfo::parse(&s);
        let _ = (info.status(), info.size(), info.begin_wal());
        let conf = barmans3::barman::conf::BarmanConf::parse(&s);
        for server in conf.servers() {
            let _ = conf.server(&server);
        }
        let _ = barmans3::barman::info::is_backup_id(&s);
    }
}

#[test]
fn task_files_manifests_and_offsets() {
    let mut rng = StdRng::seed_from_u64(3);
    let seeds = [
        "{\"backup_id\":\"20261121T220933\",\"server\":\"pg\"}",
        "BARMAN_BACKUP_ID=\"20180101T000000\"\n",
        "BARMAN_SERVER=\"pg\"\n",
        "{\"version\":1,\"server\":\"pg\",\"backup_id\":\"x\",\"created_at\":0,\"total_bytes\":0,\"entries\":[",
        "{\"type\":\"file\",\"path\":\"data/x\",\"size\":1,\"mode\":384,\"crc32c\":\"00000000\"}",
        "]}",
        "2 3 10 20 25",
        "1 0 18446744073709551615",
    ];
    for _ in 0..ROUNDS {
        let s = input(&mut rng, &seeds);
        let _ = barmans3::barman::ship::queue::Task::parse(&s, Path::new("t.run"));
        if let Ok(m) = barmans3::barman::manifest::Manifest::parse(s.as_bytes(), "k") {
            for e in &m.entries {
                assert!(barmans3::barman::manifest::check_relative(e.path()).is_ok());
            }
        }
        if let Ok(ranges) = barmans3::gpplugin::commands::parse_offsets(&s) {
            assert!(ranges.iter().all(|r| r.start <= r.end), "{s:?}");
        }
        let _ = barmans3::gpplugin::commands::object_key("f", &s);
        let _ = barmans3::gpplugin::commands::check_timestamp(&s);
    }
}

#[test]
fn both_config_formats_and_legacy_files() {
    let mut rng = StdRng::seed_from_u64(4);
    let seeds = [
        "s3:\n  bucket: b1\n",
        "store: file:///tmp/x\n",
        "  part_size: 5MiB\n",
        "barman:\n  queue_dir: /q\n",
        "executablepath: /x\noptions:\n",
        "  bucket: abc\n  folder: f\n  region: r\n",
        "  backup_multipart_chunksize: 5MB\n",
        "S3_BUCKET_URI=\"s3://b/p\"\n",
        "S3_ENDPOINT_URI=http://h:9000\n",
    ];
    for _ in 0..ROUNDS {
        let s = input(&mut rng, &seeds);
        let _ = barmans3::config::Config::parse(&s, None);
        let _ = barmans3::gpplugin::config::PluginConfig::parse(&s, Path::new("/tmp/x.yaml"));
        let _ = barmans3::config::legacy::import_legacy(&s, "f");
    }
}
