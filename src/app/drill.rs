//! `drill` as the CLI runs it: the environment from the config (our own `wal-restore` as
//! restore_command, the binaries' places), then the report: lines on stderr, `--json` on stdout,
//! `--prometheus FILE` as a node_exporter textfile, the record `status` and `check` read; a
//! failure is one line naming the step.

use std::path::Path;

use crate::barman::drill::{DrillEnv, DrillOptions, decide, drill, record, report};
use crate::barman::observe::metrics::write_textfile;
use crate::barman::server::Server;
use crate::cli::invocation::Options;
use crate::config::Config;
use crate::error::{Error, Exit, Result};
use crate::transfer::Transfer;

/// Runs one drill of `server` and reports it.
pub(super) async fn run(
    o: &Options,
    cfg: &Config,
    t: &Transfer,
    server: &str,
    opts: &DrillOptions,
    prometheus: Option<&Path>,
) -> Result<Exit> {
    let env = DrillEnv {
        restore_command: super::walrestore::restore_command_line(o, cfg, server, None, opts.layout),
        pg_bindir: cfg.barman.pg_bindir.clone(),
        pg_combinebackup: cfg.barman.pg_combinebackup.clone(),
        decrypt: super::walrestore::decryption(cfg, server),
    };
    let srv = Server::new(t, cfg.location.prefix(), server).with_layout(opts.layout);
    let (rep, result) = drill(&srv, opts, &env).await;
    let lines = report::text(&rep);
    // A failure's own line is the error below; the rest says how far the drill got.
    for line in lines.iter().skip(usize::from(result.is_err())) {
        eprintln!("{line}");
    }
    if o.json {
        outln!("{}", serde_json::to_string_pretty(&rep).unwrap_or_default())?;
    }
    if let Some(path) = prometheus {
        let last = std::fs::read_to_string(path)
            .ok()
            .and_then(|old| decide::last_success_from_textfile(&old));
        if let Err(e) = write_textfile(path, &report::prometheus(&rep, last)) {
            tracing::warn!("could not write {}: {}", path.display(), e.one_line());
        }
    }
    // A drill refused as bad input or interrupted proved nothing either way: the age of the
    // last recorded one keeps counting.
    if !matches!(result, Err(Error::Usage(_) | Error::Interrupted)) {
        let store = crate::barman::ship::state::store_id(cfg);
        if let Err(e) = record::save(&cfg.state.dir, &store, &rep) {
            tracing::warn!(
                "could not record the drill for status and check: {} (let this user write {}: README, Prove restores: drill)",
                e.one_line(),
                record::dir(&cfg.state.dir).display()
            );
        }
    }
    let step = rep.failed_step.as_deref().unwrap_or("drill");
    let id = rep.backup_id.as_deref().unwrap_or("-");
    match result {
        Ok(()) => Ok(Exit::Success),
        Err(Error::Interrupted) => Err(Error::Interrupted),
        Err(Error::Config(m)) => Err(Error::Config(format!("drill {server} {id}: {step}: {m}"))),
        Err(Error::Usage(m)) => Err(Error::Usage(format!("drill {server} {id}: {step}: {m}"))),
        Err(e) => Err(Error::Failed(format!(
            "drill {server} {id}: FAILED at {step}: {}",
            e.one_line()
        ))),
    }
}
