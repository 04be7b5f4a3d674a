//! A drill's report in the three forms monitoring reads: lines for a human (stderr), and the
//! node_exporter textfile (`barmans3_drill_*`). The JSON form is the report serialised.

use super::DrillReport;

fn secs(s: f64) -> String {
    format!("{s:.1} s")
}

/// The human report, one fact a line; the first line says whether it passed.
pub fn text(r: &DrillReport) -> Vec<String> {
    let id = r.backup_id.as_deref().unwrap_or("-");
    let mut out = vec![match (&r.failed_step, &r.error) {
        (Some(step), Some(e)) => format!("barmans3 drill {} {id}: FAILED at {step}: {e}", r.server),
        _ => format!(
            "barmans3 drill {} {id}: OK in {}",
            r.server,
            secs(r.total_seconds)
        ),
    }];
    out.push(format!(
        "  restore {} ({} written), replay {}{}, checks {}, total {}",
        secs(r.restore_seconds),
        crate::units::human_bytes(r.restored_bytes),
        secs(r.replay_seconds),
        r.segments_replayed
            .map_or(String::new(), |n| format!(" ({n} segments)")),
        secs(r.checks_seconds),
        secs(r.total_seconds)
    ));
    if let Some(t) = &r.restorable_up_to {
        out.push(format!(
            "  restorable up to {t}{}",
            r.restorable_gap_seconds.map_or(String::new(), |g| format!(
                " ({g:.0} s before the drill ended)"
            ))
        ));
    }
    if let (Some(seg), Some(lsn)) = (&r.end_segment, &r.end_lsn) {
        out.push(format!("  replay ended at {lsn} in {seg}"));
    }
    out.push(format!(
        "  read from the bucket: {}",
        crate::units::human_bytes(r.bucket_bytes)
    ));
    for d in &r.databases {
        out.push(format!(
            "  database {}: {}",
            d.name,
            crate::units::human_bytes(d.bytes)
        ));
    }
    if let Some(a) = &r.amcheck {
        out.push(format!("  pg_amcheck: {a}"));
    }
    if let Some(c) = &r.data_checksums {
        out.push(format!("  data checksums: {c}"));
    }
    for q in &r.queries {
        out.push(format!("  query {:?}: {}", q.sql, q.first_value));
    }
    for n in &r.neutralised {
        out.push(format!("  commented out: {n}"));
    }
    out.push(format!(
        "  scratch copy {}: {}",
        r.dest,
        match (r.claimed, r.kept) {
            (false, _) => "not made",
            (true, true) => "kept",
            (true, false) => "removed",
        }
    ));
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// The node_exporter textfile. `last_success` is the previous file's value, kept by a failed
/// drill so an alert on its age keeps counting.
pub fn prometheus(r: &DrillReport, last_success: Option<f64>) -> String {
    let l = format!("{{server=\"{}\"}}", escape(&r.server));
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            out.push_str(&format!(
                "# HELP barmans3_drill_{name} {help}\n# TYPE barmans3_drill_{name} gauge\nbarmans3_drill_{name}{l} {v}\n"
            ));
        }
    };
    metric(
        "success",
        "1 when the last drill restored, replayed and passed its checks.",
        Some(if r.success { 1.0 } else { 0.0 }),
    );
    metric(
        "last_run_timestamp_seconds",
        "When the last drill ended.",
        Some(r.finished_at as f64),
    );
    let last = if r.success {
        Some(r.finished_at as f64)
    } else {
        last_success
    };
    metric(
        "last_success_timestamp_seconds",
        "When the last successful drill ended.",
        last,
    );
    if r.success {
        metric(
            "rto_seconds",
            "Wall time of the last successful drill (restore, replay, checks).",
            Some(r.total_seconds),
        );
        metric(
            "restore_seconds",
            "Base backup download of the last successful drill.",
            Some(r.restore_seconds),
        );
        metric(
            "replay_seconds",
            "WAL replay of the last successful drill.",
            Some(r.replay_seconds),
        );
        metric(
            "restorable_up_to_timestamp_seconds",
            "Commit time of the last transaction the last successful drill replayed.",
            r.restorable_up_to_epoch,
        );
        metric(
            "replayed_segments",
            "WAL segments the last successful drill replayed.",
            r.segments_replayed.map(|n| n as f64),
        );
        metric(
            "bucket_bytes",
            "Bytes the last successful drill read from the bucket.",
            Some(r.bucket_bytes as f64),
        );
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ok() -> DrillReport {
        DrillReport {
            server: "pg".into(),
            backup_id: Some("20260101T000000".into()),
            success: true,
            total_seconds: 12.5,
            restore_seconds: 4.0,
            replay_seconds: 6.0,
            restorable_up_to_epoch: Some(1_765_000_000.5),
            segments_replayed: Some(7),
            finished_at: 1_765_000_100,
            ..Default::default()
        }
    }

    #[test]
    fn a_success_exports_every_figure_and_its_time() {
        let p = prometheus(&ok(), Some(1.0));
        for want in [
            "barmans3_drill_success{server=\"pg\"} 1\n",
            "barmans3_drill_last_success_timestamp_seconds{server=\"pg\"} 1765000100\n",
            "barmans3_drill_rto_seconds{server=\"pg\"} 12.5\n",
            "barmans3_drill_restorable_up_to_timestamp_seconds{server=\"pg\"} 1765000000.5\n",
            "barmans3_drill_replayed_segments{server=\"pg\"} 7\n",
        ] {
            assert!(p.contains(want), "{want} missing from\n{p}");
        }
        assert_eq!(
            super::super::decide::last_success_from_textfile(&p),
            Some(1_765_000_100.0)
        );
    }

    #[test]
    fn a_failure_keeps_the_last_success_and_exports_no_rto() {
        let mut r = ok();
        r.success = false;
        r.failed_step = Some("replay the WAL".into());
        r.error = Some("WAL 000000010000000000000005 is missing".into());
        let p = prometheus(&r, Some(1_700_000_000.0));
        assert!(p.contains("barmans3_drill_success{server=\"pg\"} 0\n"));
        assert!(
            p.contains("barmans3_drill_last_success_timestamp_seconds{server=\"pg\"} 1700000000\n")
        );
        assert!(!p.contains("rto_seconds"));
        let t = text(&r);
        assert_eq!(
            t[0],
            "barmans3 drill pg 20260101T000000: FAILED at replay the WAL: WAL 000000010000000000000005 is missing"
        );
        let none = prometheus(&r, None);
        assert!(!none.contains("last_success"));
    }

    #[test]
    fn a_drill_refused_before_its_scratch_copy_says_none_was_made() {
        let mut r = ok();
        r.dest = "/tmp/d".into();
        assert!(
            text(&r)
                .iter()
                .any(|l| l == "  scratch copy /tmp/d: not made")
        );
        r.claimed = true;
        assert!(
            text(&r)
                .iter()
                .any(|l| l == "  scratch copy /tmp/d: removed")
        );
        r.kept = true;
        assert!(text(&r).iter().any(|l| l == "  scratch copy /tmp/d: kept"));
    }
}
