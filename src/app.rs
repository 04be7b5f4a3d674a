//! Runs a parsed command: logging set-up, signal handling, dispatch, run summary. The binary
//! calls [`main_with`] and turns its [`Exit`] into the process exit code.

use std::io::IsTerminal;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use crate::cli::{Cli, Command, ConfigCommand, Global, QueueCommand, StoreCommand};
use crate::config::Config;
use crate::error::{Error, Exit, Result};
use crate::store::{self, ListRequest, join_key};
use crate::transfer::{Cancel, Expect, Transfer};
use std::os::unix::fs::OpenOptionsExt;

/// The optional log file (`barman.log_dir`), opened once per run so logrotate can move it.
static LOG_FILE: std::sync::OnceLock<std::sync::Mutex<std::fs::File>> = std::sync::OnceLock::new();

/// Writes log lines to the log file once one is open, else nowhere.
#[derive(Debug, Clone, Copy)]
struct LogFileWriter;

impl std::io::Write for LogFileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match LOG_FILE.get().and_then(|m| m.lock().ok()) {
            Some(mut f) => f.write_all(buf).map(|()| buf.len()),
            None => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Opens `<dir>/barmans3.log` for appending; later log lines also go there.
pub fn open_log_file(dir: &std::path::Path) -> Result<()> {
    if LOG_FILE.get().is_some() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("create log directory {}", dir.display()), e))?;
    let path = dir.join("barmans3.log");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(format!("open log file {}", path.display()), e))?;
    let _ = LOG_FILE.set(std::sync::Mutex::new(f));
    Ok(())
}

/// Sets up logging on stderr (and the log file once opened): info by default, `-v` debug,
/// `-q` errors only. `RUST_LOG` overrides.
pub fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("barmans3={level},aws_config=error,warn"))
    });
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let file = tracing_subscriber::fmt::layer()
        .with_writer(|| LogFileWriter)
        .with_ansi(false)
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file)
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

/// The engine, with progress bars when `g` asks for them, and the log file opened.
async fn engine_for(g: &Global, cfg: &Config, cancel: Arc<Cancel>) -> Result<Transfer> {
    if let Some(dir) = &cfg.barman.log_dir {
        open_log_file(dir)?;
    }
    let t = engine(cfg, cancel).await?;
    Ok(if g.show_progress() {
        t.with_progress(Arc::new(crate::progress::Bars::new()))
    } else {
        t
    })
}

async fn run(cli: Cli, cancel: Arc<Cancel>) -> Result<Exit> {
    let g = &cli.global;
    match &cli.command {
        Command::Config(ConfigCommand::Check) => config_check(g, cancel).await,
        Command::Config(ConfigCommand::Init { output }) => config_init(output.as_deref()),
        Command::Config(ConfigCommand::ImportLegacy { file }) => import_legacy(file),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                *shell,
                &mut crate::cli::Cli::command(),
                "barmans3",
                &mut std::io::stdout(),
            );
            Ok(Exit::Success)
        }
        Command::Status | Command::Check { .. } | Command::Queue(_) => {
            admin_command(g, &cli.command, cancel).await
        }
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
    let t = engine_for(g, &cfg, cancel).await?;
    let prefix = cfg.location.prefix().to_string();
    match cmd {
        StoreCommand::Put { source, key } => {
            let key = join_key(&prefix, key);
            if let Ok(m) = std::fs::metadata(source) {
                t.progress().add_work(1, m.len());
            }
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

fn config_init(output: Option<&std::path::Path>) -> Result<Exit> {
    let text = crate::config::legacy::EXAMPLE;
    match output {
        None => print!("{text}"),
        Some(p) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(p)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => {
                        Error::Usage(format!("{} exists; not overwriting it", p.display()))
                    }
                    _ => Error::io(format!("create {}", p.display()), e),
                })?;
            std::io::Write::write_all(&mut f, text.as_bytes())
                .map_err(|e| Error::io(format!("write {}", p.display()), e))?;
            eprintln!(
                "barmans3: wrote {}; edit the s3 section, then run barmans3 config check",
                p.display()
            );
        }
    }
    Ok(Exit::Success)
}

fn import_legacy(file: &std::path::Path) -> Result<Exit> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        Error::Config(format!(
            "cannot read {}: {}",
            file.display(),
            crate::error::reason(&e)
        ))
    })?;
    let imported = crate::config::legacy::import_legacy(&text, &file.display().to_string())?;
    print!("{}", imported.yaml);
    for n in &imported.notes {
        eprintln!("note: {n}");
    }
    Ok(Exit::Success)
}

async fn admin_command(g: &Global, cmd: &Command, cancel: Arc<Cancel>) -> Result<Exit> {
    use crate::barman::admin;
    let cfg = g.load_config()?;
    match cmd {
        Command::Queue(QueueCommand::Ls) => {
            let views = admin::queue_views(&cfg)?;
            if g.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&views).unwrap_or_default()
                );
            } else {
                println!(
                    "{:<16} {:<8} {:<8} {:>9} {:>8}  LAST ERROR",
                    "ID", "SERVER", "STATE", "AGE", "ATTEMPTS"
                );
                for v in views {
                    println!(
                        "{:<16} {:<8} {:<8} {:>9} {:>8}  {}",
                        v.backup_id,
                        v.server,
                        format!("{:?}", v.state).to_lowercase(),
                        crate::units::human_duration(std::time::Duration::from_secs(v.age_s)),
                        v.attempts,
                        v.last_error.as_deref().unwrap_or("")
                    );
                }
            }
            Ok(Exit::Success)
        }
        Command::Queue(QueueCommand::Retry { backup_id }) => {
            admin::queue_retry(&cfg, backup_id)?;
            eprintln!("barmans3: {backup_id} queued again; the next base-sync works it");
            Ok(Exit::Success)
        }
        Command::Queue(QueueCommand::Prune { older_than }) => {
            let n = admin::queue_prune(&cfg, *older_than)?;
            eprintln!("barmans3: pruned {n} done task(s)");
            Ok(Exit::Success)
        }
        Command::Status => {
            let t = engine(&cfg, cancel).await?;
            let s = admin::status(&cfg, &t).await?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                print!("{}", render_status(&s));
            }
            Ok(Exit::Success)
        }
        Command::Check {
            wal_warning,
            wal_critical,
            stuck_after,
        } => {
            let t = engine(&cfg, cancel).await?;
            let s = admin::status(&cfg, &t).await?;
            let (level, line) = admin::judge(
                &s,
                admin::Thresholds {
                    wal_warning: *wal_warning,
                    wal_critical: *wal_critical,
                    stuck: *stuck_after,
                },
            );
            println!("{line}");
            Ok(match level {
                admin::Level::Ok => Exit::Success,
                admin::Level::Warning => Exit::Failed,
                admin::Level::Critical => Exit::Config,
            })
        }
        _ => Err(Error::Usage("not an admin command".into())),
    }
}

fn render_status(s: &crate::barman::admin::Status) -> String {
    use crate::units::human_duration;
    let age = |a: Option<u64>| {
        a.map_or("never".into(), |s| {
            format!("{} ago", human_duration(std::time::Duration::from_secs(s)))
        })
    };
    let mut out = format!(
        "bucket: {}
queue: {} run, {} running, {} done, {} error; last good base-sync {}
",
        match &s.bucket {
            Ok(()) => "reachable".to_string(),
            Err(e) => format!("UNREACHABLE: {e}"),
        },
        s.queue[0],
        s.queue[1],
        s.queue[2],
        s.queue[3],
        age(s.last_base_sync_age_s)
    );
    for t in &s.tasks {
        out.push_str(&format!(
            "  task {} {} {:?} attempts={}{}{}\n",
            t.server,
            t.backup_id,
            t.state,
            t.attempts,
            t.pid.map_or(String::new(), |(p, alive)| format!(
                " pid={p}{}",
                if alive { "" } else { " (gone)" }
            )),
            t.last_error
                .as_ref()
                .map_or(String::new(), |e| format!(" error: {e}"))
        ));
    }
    for v in &s.servers {
        out.push_str(&format!(
            "server {}: newest WAL here {}, in the bucket {}; {} pending{}; last good wal-sync {}{}\n",
            v.server,
            v.newest_local.as_deref().unwrap_or("-"),
            v.newest_remote.as_deref().unwrap_or("-"),
            v.pending,
            v.pending_age_s.map_or(String::new(), |a| format!(" (oldest {})", human_duration(std::time::Duration::from_secs(a)))),
            age(v.last_wal_sync_age_s),
            v.problem.as_ref().map_or(String::new(), |p| format!("; PROBLEM: {p}"))
        ));
    }
    out
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
    let t = engine_for(g, &cfg, cancel).await?;
    let exit = run(&cfg, &t, req).await;
    t.progress().finish();
    let exit = exit?;
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
