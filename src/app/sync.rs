//! Runs `sync`: config, the change list read and checked before the engine exists, the sync,
//! the report (`--dry-run` keys or the `--json` summary on stdout), the exit code.

use std::sync::Arc;

use serde::Serialize;

use super::{engine, load_config};
use crate::cli::invocation::Options;
use crate::error::{Error, Exit, Result};
use crate::filesync::{self, SyncOptions, SyncReport};
use crate::store::printable_key;
use crate::transfer::{Cancel, StatsSnapshot};

/// The `--json` summary: the report and the run's request counters in one object.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    #[serde(flatten)]
    report: &'a SyncReport,
    #[serde(flatten)]
    stats: StatsSnapshot,
}

pub(super) async fn run(o: Options, mut action: SyncOptions, cancel: Arc<Cancel>) -> Result<Exit> {
    let cfg = load_config(&o)?;
    action.record = Some(record_path(&cfg, &action));
    // A malformed list is refused before the first request (exit 2).
    let lines = match &action.files_from {
        Some(f) => Some(filesync::list::read(
            &f.path,
            f.format,
            &f.separator,
            &action.src,
        )?),
        None => None,
    };
    let t = engine(&o, &cfg, cancel).await?;
    let result = filesync::sync(&t, &action, cfg.location.prefix(), lines).await;
    t.progress().finish();
    let report = result?;
    if o.json {
        let s = Summary {
            report: &report,
            stats: t.stats().snapshot(),
        };
        outln!("{}", serde_json::to_string(&s).unwrap_or_default())?;
    } else {
        if report.dry_run {
            let mut text = String::new();
            // Keys come from file names: one line each, whatever a name holds.
            for k in &report.would_upload {
                text.push_str(&format!("upload {}\n", printable_key(k)));
            }
            for k in &report.deleted {
                text.push_str(&format!("delete {}\n", printable_key(k)));
            }
            out!("{text}")?;
        }
        tracing::info!("sync: {}; {}", report.line(), t.stats().snapshot());
    }
    let allow_missing = action.files_from.as_ref().is_some_and(|f| f.allow_missing);
    if report.complete(allow_missing) {
        return Ok(Exit::Success);
    }
    let mut line = failure_line(&report, allow_missing);
    if action.files_from.is_some() {
        line.push_str("; do not run glusterfind post for this list");
    }
    Err(Error::Failed(line))
}

/// Where the sync record of this store, prefix and SRC_DIR lives, and the sync it is for.
fn record_path(cfg: &crate::config::Config, a: &SyncOptions) -> (std::path::PathBuf, String) {
    let scope = format!(
        "{}\n{}\n{}",
        crate::barman::ship::state::store_id(cfg),
        a.key_prefix,
        a.src.display()
    );
    let name = crate::checksum::hex(&crate::checksum::md5(scope.as_bytes()));
    let path = cfg.state.dir.join("sync").join(format!("{name}.json"));
    (path, scope)
}

/// The one line that says why the run is not a success.
fn failure_line(r: &SyncReport, allow_missing: bool) -> String {
    let mut parts = Vec::new();
    if let Some(first) = r.failed.first() {
        parts.push(format!("{} paths failed (first: {first})", r.failed.len()));
    }
    if !allow_missing && let Some(first) = r.missing.first() {
        parts.push(format!(
            "{} listed paths do not exist (first: {first}; --allow-missing accepts that)",
            r.missing.len()
        ));
    }
    if let Some(refused) = &r.delete_refused {
        parts.push(refused.clone());
    }
    format!("sync incomplete: {}", parts.join("; "))
}
