//! Runs `verify` and `verify-wal`: config, engine, the check, then one line per problem on
//! stdout (or one JSON object with `--json`), a summary on stderr, the result recorded for
//! `status --prometheus`, and exit 1 when anything is wrong.

use std::sync::Arc;

use serde::Serialize;

use super::{engine, load_config};
use crate::barman::conf::{BarmanConf, require_barman_user};
use crate::barman::observe::verify::{Report, VerifyRequest, verify};
use crate::cli::invocation::Options;
use crate::config::Config;
use crate::error::{Exit, Result};
use crate::logging::Verbosity;
use crate::transfer::{Cancel, StatsSnapshot};
use crate::units::human_bytes;

/// The `--json` output: the report and the run's request counters in one object.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    ok: bool,
    #[serde(flatten)]
    report: &'a Report,
    #[serde(flatten)]
    stats: StatsSnapshot,
}

pub(super) async fn run(o: Options, req: VerifyRequest, cancel: Arc<Cancel>) -> Result<Exit> {
    let cfg = load_config(&o)?;
    let t = engine(&o, &cfg, cancel).await?;
    let result = verify(&t, cfg.location.prefix(), &req).await;
    t.progress().finish();
    let r = result?;
    record(&cfg, &r);
    let name = match req {
        VerifyRequest::Backups { .. } => "verify",
        VerifyRequest::Wal { .. } => "verify-wal",
    };
    if o.json {
        let s = Summary {
            ok: r.ok(),
            report: &r,
            stats: t.stats().snapshot(),
        };
        outln!("{}", serde_json::to_string(&s).unwrap_or_default())?;
    } else {
        let mut text = String::new();
        for p in &r.problems {
            text.push_str(&format!("{p}\n"));
        }
        out!("{text}")?;
        tracing::info!("{name} {}: {}", r.server, t.stats().snapshot());
    }
    // -q (cron): silent on success, so mail arrives only with problems on stdout or an error.
    if o.verbosity != Verbosity::Quiet {
        for n in &r.notes {
            eprintln!("barmans3 {name} {}: note: {n}", r.server);
        }
        eprintln!("barmans3 {name} {}: {}", r.server, line(&r));
    }
    Ok(if r.ok() { Exit::Success } else { Exit::Failed })
}

/// The summary line.
fn line(r: &Report) -> String {
    let verdict = if r.ok() {
        "no problem found".to_string()
    } else {
        format!("{} PROBLEM(S) found", r.problem_count())
    };
    if r.check == "wal" {
        let how = if r.quick {
            format!(
                "checked by HEAD ({} carry a full-object CRC32C, {} do not, {} encrypted with a header that opens)",
                r.stored_crc32c, r.size_only, r.headers_opened
            )
        } else {
            format!(
                "read back ({}, {} verified by CRC32C)",
                human_bytes(r.bytes_read),
                r.crc32c_checked
            )
        };
        let window = match &r.window {
            Some(w) => format!(
                "; recoverable from {} (end of backup {}) to {} (newest backup {})",
                w.from_wal, w.oldest_backup, w.to_wal, w.newest_backup
            ),
            None => "; no backup in the bucket can be recovered with this WAL".into(),
        };
        return format!("{} WAL object(s) listed, {how}{window}; {verdict}", r.wals);
    }
    let how = if r.quick {
        format!(
            "{} object(s) checked by HEAD ({} with the stored CRC32C, {} by size only, {} encrypted by the size their header opens to)",
            r.objects, r.crc32c_checked, r.size_only, r.headers_opened
        )
    } else {
        format!(
            "{} object(s) checked, {} read back, {} verified by CRC32C",
            r.objects,
            human_bytes(r.bytes_read),
            r.crc32c_checked
        )
    };
    format!(
        "{} backup(s), {how}, {} WAL file(s) of their chains in the bucket; {verdict}",
        r.backups.len(),
        r.wals
    )
}

/// Records the result for `status --prometheus`, when this process may write Barman's state
/// directory (run as Barman's user, as base-sync is): a verify run by another user from
/// another host still checks, it just leaves no record.
fn record(cfg: &Config, r: &Report) {
    let allowed = BarmanConf::load(&cfg.barman.config)
        .and_then(|c| require_barman_user(&c, "verify"))
        .is_ok();
    if !allowed {
        tracing::debug!("not Barman's user: the verify result is not recorded for the metrics");
        return;
    }
    if let Err(e) = crate::barman::observe::metrics::record_verify(cfg, r) {
        tracing::warn!("could not record the verify result: {}", e.one_line());
    }
}
