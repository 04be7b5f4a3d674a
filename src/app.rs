//! Runs a parsed command: logging set-up, signal handling, dispatch, run summary. The binary
//! calls [`main_with`] and turns its [`Exit`] into the process exit code.

use std::io::IsTerminal;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use crate::cli::{Cli, Command, ConfigCommand, Global, StoreCommand};
use crate::config::Config;
use crate::error::{Error, Exit, Result};
use crate::store::{self, ListRequest, join_key};
use crate::transfer::{Cancel, Expect, Transfer};

/// Sets up logging on stderr: warnings by default, `-v` info, `-vv` debug, `-q` errors only.
/// `RUST_LOG` overrides.
pub fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("barmans3={level},warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// Parses nothing, runs everything: the body of `main` after argument parsing.
pub fn main_with(cli: Cli) -> Exit {
    if let Command::GpPlugin { args } = &cli.command {
        let argv: Vec<String> = std::iter::once(crate::gpplugin::log::PROGRAM.to_string())
            .chain(args.iter().cloned())
            .collect();
        return crate::gpplugin::run(&argv, &mut std::io::stdout(), &mut std::io::stderr());
    }
    init_logging(cli.global.verbose, cli.global.quiet);
    if let Command::QueueAdd = &cli.command {
        return crate::barman::cmd::queue_add_main(|| cli.global.load_config());
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("barmans3: cannot start the runtime: {e}");
            return Exit::Failed;
        }
    };
    let cancel = Arc::new(Cancel::default());
    let result = rt.block_on(with_signals(cancel.clone(), run(cli, cancel.clone())));
    match result {
        Ok(exit) => exit,
        Err(e) => {
            eprintln!("barmans3: {}", e.one_line());
            e.exit()
        }
    }
}

/// Runs `work` until it ends; on SIGINT or SIGTERM, raises the cancel flag and lets `work`
/// abort its uploads and return [`Error::Interrupted`].
pub async fn with_signals<T>(
    cancel: Arc<Cancel>,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| Error::io("install SIGTERM handler", e))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| Error::io("install SIGINT handler", e))?;
    tokio::pin!(work);
    loop {
        tokio::select! {
            r = &mut work => return r,
            _ = term.recv() => cancel.cancel(),
            _ = int.recv() => cancel.cancel(),
        }
    }
}

async fn engine(cfg: &Config, cancel: Arc<Cancel>) -> Result<Transfer> {
    let store = store::open(cfg).await?;
    Ok(Transfer::new(store, cfg.transfer.clone()).with_cancel(cancel))
}

async fn run(cli: Cli, cancel: Arc<Cancel>) -> Result<Exit> {
    let g = &cli.global;
    match &cli.command {
        Command::Config(ConfigCommand::Check) => config_check(g, cancel).await,
        Command::Store(cmd) => store_command(g, cmd, cancel).await,
        Command::GpPlugin { .. } | Command::QueueAdd => {
            Err(Error::Usage("this command runs without the runtime".into()))
        }
        other => barman_command(g, other, cancel).await,
    }
}

async fn config_check(g: &Global, cancel: Arc<Cancel>) -> Result<Exit> {
    let cfg = g.load_config()?;
    let t = engine(&cfg, cancel).await?;
    let req = ListRequest {
        prefix: cfg.location.prefix().to_string(),
        max_keys: Some(1),
        ..Default::default()
    };
    match t.list_pages(&req, |_, _| false).await {
        Ok(()) => {}
        Err(e) if e.is_access_problem() => {
            return Err(Error::Config(format!(
                "{}: the bucket is not usable with these settings: {}",
                cfg.location,
                e.one_line()
            )));
        }
        Err(e) => {
            return Err(Error::Config(format!(
                "{}: cannot reach the store: {}",
                cfg.location,
                e.one_line()
            )));
        }
    }
    print!("{}", cfg.to_redacted_yaml());
    eprintln!("barmans3: config OK, {} reachable", t.describe());
    Ok(Exit::Success)
}

async fn store_command(g: &Global, cmd: &StoreCommand, cancel: Arc<Cancel>) -> Result<Exit> {
    let cfg = g.load_config()?;
    let t = engine(&cfg, cancel).await?;
    let prefix = cfg.location.prefix().to_string();
    match cmd {
        StoreCommand::Put { source, key } => {
            let key = join_key(&prefix, key);
            let up = if source == "-" {
                t.upload_stream(tokio::io::stdin(), &key).await?
            } else {
                t.upload_file(std::path::Path::new(source), &key, None)
                    .await?
            };
            tracing::info!(key, size = up.size, parts = up.parts, "uploaded");
        }
        StoreCommand::Get { key, dest } => {
            let key = join_key(&prefix, key);
            if dest == "-" {
                let mut out = tokio::io::stdout();
                t.download_to(&key, &mut out, Expect::default()).await?;
                out.flush()
                    .await
                    .map_err(|e| Error::io("write stdout", e))?;
            } else {
                t.download_file(&key, std::path::Path::new(dest), Expect::default())
                    .await?;
            }
        }
        StoreCommand::Ls { prefix: p } => {
            let full = join_key(&prefix, p);
            let req = ListRequest {
                prefix: full,
                ..Default::default()
            };
            let mut lines = String::new();
            t.list_pages(&req, |objs, _| {
                for o in objs {
                    lines.push_str(&format!("{:>14} {}\n", o.size, o.key));
                }
                true
            })
            .await?;
            print!("{lines}");
        }
        StoreCommand::Uploads { abort_older_than } => {
            let list = match abort_older_than {
                Some(age) => t.abort_stale_uploads(&prefix, *age).await?,
                None => t.incomplete_uploads(&prefix).await?,
            };
            for u in list {
                println!("{} {}", u.upload_id, u.key);
            }
        }
    }
    summary(g, &t);
    Ok(Exit::Success)
}

async fn barman_command(g: &Global, cmd: &Command, cancel: Arc<Cancel>) -> Result<Exit> {
    use crate::barman::cmd::{Request, parse_tablespaces, run};
    use crate::barman::fullsync::FullSyncOptions;
    use crate::barman::restore::RestoreOptions;
    let cfg = g.load_config()?;
    let req = match cmd.clone() {
        Command::BaseSync => Request::BaseSync,
        Command::WalSync { server, all, full } => Request::WalSync { server, all, full },
        Command::BaseLs { server } => Request::BaseLs {
            server,
            json: g.json,
        },
        Command::FullSync {
            server,
            no_delete,
            dry_run,
            force,
        } => Request::FullSync {
            server,
            opts: FullSyncOptions {
                no_delete,
                dry_run,
                force,
            },
        },
        Command::BaseRestore {
            server,
            backup_id,
            dest,
            tablespaces,
            recovery,
        } => {
            let restore_command = recovery.then(|| restore_command(g, &cfg, &server));
            Request::BaseRestore {
                server,
                id: backup_id,
                dest,
                opts: RestoreOptions {
                    tablespaces: parse_tablespaces(&tablespaces)?,
                    restore_command,
                },
            }
        }
        Command::WalRestore {
            server,
            wal_name,
            dest,
        } => Request::WalRestore {
            server,
            name: wal_name,
            dest,
        },
        _ => return Err(Error::Usage("not a Barman command".into())),
    };
    let quiet_summary = matches!(req, Request::WalRestore { .. } | Request::BaseLs { .. });
    let t = engine(&cfg, cancel).await?;
    let exit = run(&cfg, &t, req).await?;
    if !quiet_summary {
        summary(g, &t);
    }
    Ok(exit)
}

/// The restore_command base-restore --recovery writes: this binary, this config, this server.
fn restore_command(g: &Global, cfg: &Config, server: &str) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "barmans3".into());
    let config = cfg
        .source
        .as_ref()
        .or(g.config.as_ref())
        .map(|p| format!(" --config {}", p.display()))
        .unwrap_or_default();
    let store = g
        .store
        .as_ref()
        .map(|s| format!(" --store {s}"))
        .unwrap_or_default();
    format!("{exe}{config}{store} wal-restore {server} %f %p")
}

fn summary(g: &Global, t: &Transfer) {
    let s = t.stats().snapshot();
    if g.json {
        println!("{}", serde_json::to_string(&s).unwrap_or_default());
    } else {
        tracing::info!("done: {s}");
    }
}
