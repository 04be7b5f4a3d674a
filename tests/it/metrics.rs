//! `status --prometheus FILE` on Garage and file://: the textfile is valid exposition format
//! (every sample `name{labels} value` under its HELP and TYPE), world-readable, and its values
//! are the site's: WAL lag and pending files, last good syncs, queue tasks by state, the
//! requests and bytes the last base-sync and wal-sync reported in their own summaries, and the
//! problems the last verify found.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::site::{Site, make_archive, write_backup};
use crate::common::{Backend, garage, on_both, unique};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses `{k="v",...}`, unescaping values; `None` when malformed.
fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = s.strip_prefix('{')?.strip_suffix('}')?;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"")?;
        if !is_name(k) {
            return None;
        }
        let mut v = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => v.push('\n'),
                    c @ ('\\' | '"') => v.push(c),
                    _ => return None,
                },
                (_, c) => v.push(c),
            }
        };
        out.insert(k.to_string(), v);
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Some(out)
}

/// Every sample of a textfile, keyed by `name{k=v,...}` (labels sorted), after checking the
/// format line by line.
fn parse(text: &str) -> BTreeMap<String, f64> {
    assert!(text.ends_with('\n'), "no final newline");
    let (mut helped, mut typed) = (BTreeSet::new(), BTreeSet::new());
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP text");
            assert!(is_name(name) && !help.is_empty(), "{line}");
            assert!(helped.insert(name.to_string()), "HELP twice: {line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE kind");
            assert!(is_name(name), "{line}");
            assert_eq!(kind, "gauge", "{line}");
            assert!(typed.insert(name.to_string()), "TYPE twice: {line}");
        } else {
            let (series, value) = line.rsplit_once(' ').expect("name value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value: {line}"));
            let (name, labels) = match series.find('{') {
                Some(i) => (&series[..i], parse_labels(&series[i..]).expect(line)),
                None => (series, BTreeMap::new()),
            };
            assert!(is_name(name) && name.starts_with("barmans3_"), "{line}");
            assert!(
                helped.contains(name) && typed.contains(name),
                "no HELP/TYPE: {line}"
            );
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let key = format!("{name}{{{}}}", l.join(","));
            assert!(samples.insert(key, value).is_none(), "twice: {line}");
        }
    }
    samples
}

fn summary(site: &Site, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = site.run(&all, &[]);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().expect("summary")).expect("JSON summary")
}

fn scrape(site: &Site) -> BTreeMap<String, f64> {
    let file = site.dir.path().join("textfile/barmans3.prom");
    std::fs::create_dir_all(file.parent().expect("dir")).expect("mkdir");
    let out = site.run(
        &["status", "--prometheus", file.to_str().expect("utf8")],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "the textfile replaces the printout");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&file).expect("textfile").permissions(),
    );
    assert_eq!(mode & 0o777, 0o644, "node_exporter must be able to read it");
    let names: Vec<_> = std::fs::read_dir(file.parent().expect("dir"))
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "a temp file was left: {names:?}");
    parse(&std::fs::read_to_string(&file).expect("read"))
}

async fn status_prometheus_exports_the_sites_values(b: Backend) {
    let site = match b {
        Backend::Local => Site::local(),
        Backend::Garage => Site::new(&garage().yaml(&unique("metrics"))),
    };
    let t0 = now();
    make_archive(&site.wals(), 1, 3);
    let wal = summary(&site, &["wal-sync", "pg"]);
    let id = "20261121T100000";
    write_backup(&site, id, "DONE");
    site.queue(id, "DONE");
    let base = summary(&site, &["base-sync"]);
    // One WAL waiting for an hour.
    make_archive(&site.wals(), 4, 1);
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(
            site.wals()
                .join("0000000100000000/000000010000000000000004"),
        )
        .and_then(|f| f.set_modified(hour_ago))
        .expect("mtime");
    let out = site.run(&["verify", "--quick", "pg"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t1 = now();

    let m = scrape(&site);
    let get = |k: &str| {
        *m.get(k)
            .unwrap_or_else(|| panic!("{k} missing from {m:#?}"))
    };
    let within = |k: &str| {
        let v = get(k) as u64;
        assert!((t0..=t1).contains(&v), "{k} = {v}, not in {t0}..={t1}");
    };
    assert_eq!(get("barmans3_bucket_reachable{}"), 1.0);
    assert_eq!(get("barmans3_wal_pending_files{server=pg}"), 1.0);
    let lag = get("barmans3_wal_lag_seconds{server=pg}");
    assert!((3600.0..3600.0 + 600.0).contains(&lag), "lag {lag}");
    within("barmans3_wal_sync_last_success_timestamp_seconds{server=pg}");
    within("barmans3_base_sync_last_success_timestamp_seconds{}");
    assert_eq!(get("barmans3_server_problem{server=pg}"), 0.0);
    for (state, n) in [
        ("run", 0.0),
        ("running", 0.0),
        ("done", 1.0),
        ("error", 0.0),
    ] {
        assert_eq!(get(&format!("barmans3_queue_tasks{{state={state}}}")), n);
    }
    // The last runs: exactly what their own summaries said.
    for (command, s) in [("wal-sync", &wal), ("base-sync", &base)] {
        within(&format!(
            "barmans3_last_run_timestamp_seconds{{command={command}}}"
        ));
        let by_op: BTreeMap<String, f64> = m
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(&format!(
                    "barmans3_last_run_requests{{command={command},op="
                ))
                .map(|op| (op.trim_end_matches('}').to_string(), *v))
            })
            .collect();
        let want: BTreeMap<String, f64> = s["requests"]
            .as_object()
            .expect("requests")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_f64().expect("n")))
            .collect();
        assert_eq!(by_op, want, "{command}");
        assert_eq!(
            by_op.values().sum::<f64>(),
            s["total_requests"].as_f64().expect("total")
        );
        for dir in ["up", "down", "copied"] {
            assert_eq!(
                get(&format!(
                    "barmans3_last_run_bytes{{command={command},direction={dir}}}"
                )),
                s[format!("bytes_{dir}")].as_f64().expect("bytes"),
                "{command} {dir}"
            );
        }
    }
    assert!(get("barmans3_last_run_bytes{command=base-sync,direction=up}") >= 8192.0);
    within("barmans3_verify_last_timestamp_seconds{check=backups,mode=quick,server=pg}");
    assert_eq!(
        get("barmans3_verify_problems{check=backups,mode=quick,server=pg}"),
        0.0
    );
    // Only a quick verify ran: no full one is reported, so "weekly full" alerts can fire.
    assert!(!m.keys().any(|k| k.contains("mode=full")), "{m:#?}");
    assert!(site.run(&["verify", "pg"], &[]).status.success());
    let m = scrape(&site);
    assert_eq!(
        m["barmans3_verify_problems{check=backups,mode=full,server=pg}"],
        0.0
    );
    assert!(m.contains_key(
        "barmans3_verify_last_timestamp_seconds{check=backups,mode=quick,server=pg}"
    ));

    // A problem found by the next verify shows, and the pending WAL goes once shipped.
    let gone = format!("pg/base/{id}/data/PG_VERSION");
    remove(&site, b, &gone).await;
    assert_eq!(
        site.run(&["verify", "--quick", "pg"], &[]).status.code(),
        Some(1)
    );
    assert!(site.run(&["wal-sync", "pg"], &[]).status.success());
    let m = scrape(&site);
    assert_eq!(
        m["barmans3_verify_problems{check=backups,mode=quick,server=pg}"],
        1.0
    );
    assert_eq!(
        m["barmans3_verify_problems{check=backups,mode=full,server=pg}"],
        0.0
    );
    assert_eq!(m["barmans3_wal_pending_files{server=pg}"], 0.0);
    assert_eq!(m["barmans3_wal_lag_seconds{server=pg}"], 0.0);
}

async fn remove(site: &Site, b: Backend, rel: &str) {
    match b {
        Backend::Local => {
            std::fs::remove_file(site.dir.path().join("bucket").join(rel)).expect("rm")
        }
        Backend::Garage => {
            let text = std::fs::read_to_string(&site.cfg).expect("cfg");
            let prefix = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("prefix: "))
                .expect("prefix");
            let cfg = garage().config("");
            let st = barmans3::store::open(&cfg.location, &cfg.s3)
                .await
                .expect("open");
            let key = barmans3::store::join_key(prefix, rel);
            assert!(st.delete_batch(&[key]).await.expect("delete").is_empty());
        }
    }
}

on_both!(status_prometheus_exports_the_sites_values);
