//! The application layer: turns a validated [`Invocation`] (from [`crate::cli`]) into work and
//! an [`Exit`]. It owns what the library below it must not: reading the configuration for a
//! command, building the engine with its progress display, printing reports on stdout and the
//! run summary, and the exit code of each outcome. One dispatch here; a file per command family.

/// Writes formatted data to stdout, `?`-able (see [`emit`]).
macro_rules! out {
    ($($arg:tt)*) => { $crate::app::emit(&format!($($arg)*)) };
}

/// [`out!`] with a newline.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::app::emit(&format!("{}\n", format_args!($($arg)*))) };
}

mod admin;
mod archive;
mod barman;
mod cloud;
mod drill;
mod lean;
mod lockproof;
mod owners;
mod replicate;
mod store;
mod sync;
mod verify;
mod volume;
mod walrestore;

pub use lean::wal_restore as lean_wal_restore;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cli::invocation::{Action, Invocation, Options};
use crate::config::{Config, PermissionPolicy};
use crate::error::{Error, Exit, Result};
use crate::transfer::{Cancel, EngineBuilder, Transfer};

/// Runs a validated invocation.
pub fn run(inv: Invocation) -> Exit {
    let Invocation { options, action } = inv;
    match action {
        Action::GpPlugin(args) => {
            let argv: Vec<String> = std::iter::once(crate::gpplugin::log::PROGRAM.to_string())
                .chain(args)
                .collect();
            return crate::gpplugin::run(&argv, &mut std::io::stdout(), &mut std::io::stderr());
        }
        Action::Completions(script) => {
            return finish(emit(&String::from_utf8_lossy(&script)).map(|()| Exit::Success));
        }
        _ => {}
    }
    crate::logging::init(options.verbosity);
    match action {
        Action::QueueAdd => barman::queue_add(|| load_config(&options)),
        Action::Config(c) => store::config_command(&options, c),
        Action::Barman(b) => barman::run(&options, b),
        Action::Check(th, timeout) => admin::check(&options, th, timeout),
        Action::Admin(a) => finish(crate::runtime::block_on(|cancel| {
            admin::run(options.clone(), a, cancel)
        })),
        Action::Store(s) => finish(crate::runtime::block_on(|cancel| {
            store::run(options.clone(), s, cancel)
        })),
        Action::Sync(s) => finish(crate::runtime::block_on(|cancel| {
            sync::run(options.clone(), s, cancel)
        })),
        Action::Archive(a) => finish(crate::runtime::block_on(|cancel| {
            archive::run(options.clone(), a, cancel)
        })),
        Action::Volume(v) => finish(crate::runtime::block_on(|cancel| {
            volume::run(options.clone(), v, cancel)
        })),
        Action::Verify(v) => finish(crate::runtime::block_on(|cancel| {
            verify::run(options.clone(), v, cancel)
        })),
        Action::GpPlugin(_) | Action::Completions(_) => Exit::Success,
    }
}

/// Writes data to stdout and flushes it. stdout is data only (logs and progress go to stderr);
/// a reader that went away is [`Error::StdoutClosed`], which ends the run quietly.
pub(crate) fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => Error::StdoutClosed,
            _ => Error::io("write stdout", e),
        })
}

/// Reports a failed run in one line and picks its exit code.
fn finish(result: Result<Exit>) -> Exit {
    match result {
        Ok(exit) => exit,
        Err(Error::StdoutClosed) => Exit::Success,
        Err(e) => {
            eprintln!("barmans3: {}", e.one_line());
            e.exit()
        }
    }
}

/// Loads and validates the configuration the options point at. With `--store` and no config
/// file anywhere, runs on defaults: the demo and first steps.
pub fn load_config(o: &Options) -> Result<Config> {
    let path = Config::resolve_path(o.config.as_deref());
    tracing::debug!("configuration {}", path.display());
    let explicit = o.config.is_some() || std::env::var_os(crate::config::CONFIG_ENV).is_some();
    let mut cfg = match Config::load(&path, PermissionPolicy::Refuse) {
        Err(Error::Config(_)) if o.store.is_some() && !explicit && !path.exists() => {
            Config::for_location(
                o.store
                    .as_ref()
                    .map(|s| s.0.clone())
                    .ok_or_else(|| Error::Usage("--store missing".into()))?,
            )
        }
        other => other?,
    };
    if let Some((loc, _)) = &o.store {
        cfg.location = loc.clone();
    }
    if let Some(name) = &o.store_name {
        cfg = cfg.with_store(name)?;
    }
    Ok(cfg)
}

/// The one engine builder ([`EngineBuilder`]) with everything the config and the options say
/// about the engine: its settings, the request log, the checksum probe (applied when
/// `s3.request_checksum: auto`) and the run's cancel flag. Callers add progress and observers.
fn engine_builder(o: &Options, cfg: &Config, cancel: Arc<Cancel>) -> EngineBuilder {
    EngineBuilder::new(cfg.transfer.clone())
        .request_log(o.request_log.as_ref())
        .checksum_probe(cfg.checksum_probe())
        .cancel(cancel)
        .encryption(cfg.encryption.as_ref().map(|e| e.keys.clone()))
        .as_of(o.as_of)
}

/// The engine on the store the config names, with the run's cancel flag and request log; no
/// display, no log file (monitoring and config checks run as other users, from NRPE or by hand).
async fn bare_engine(o: &Options, cfg: &Config, cancel: Arc<Cancel>) -> Result<Transfer> {
    engine_builder(o, cfg, cancel)
        .open(&cfg.location, &cfg.s3)
        .await
}

/// The builder of a command that moves data: [`engine_builder`], progress bars when the options
/// ask for them; opens the log file when one is configured.
fn moving_builder(o: &Options, cfg: &Config, cancel: Arc<Cancel>) -> Result<EngineBuilder> {
    if let Some(dir) = &cfg.state.log_dir {
        crate::logging::open_log_file(dir)?;
    }
    let b = engine_builder(o, cfg, cancel);
    Ok(if o.progress {
        b.progress(Arc::new(crate::progress::Bars::new()))
    } else {
        b
    })
}

/// The engine of a command that moves data ([`moving_builder`]).
async fn engine(o: &Options, cfg: &Config, cancel: Arc<Cancel>) -> Result<Transfer> {
    moving_builder(o, cfg, cancel)?
        .open(&cfg.location, &cfg.s3)
        .await
}

/// The run summary: JSON on stdout with `--json` (the request counters, and under `counts` what
/// the command itself counted), else one info line.
fn summary(o: &Options, t: &Transfer, counts: &BTreeMap<&'static str, u64>) -> Result<()> {
    let s = t.stats().snapshot();
    if o.json {
        #[derive(serde::Serialize)]
        struct Summary<'a> {
            #[serde(flatten)]
            stats: &'a crate::transfer::StatsSnapshot,
            counts: &'a BTreeMap<&'static str, u64>,
        }
        let line = serde_json::to_string(&Summary { stats: &s, counts }).unwrap_or_default();
        outln!("{line}")?;
    } else {
        tracing::info!("done: {s}");
    }
    Ok(())
}
