//! The Barman commands as the CLI runs them: configuration and engine in, reports on stdout
//! (data) or stderr (logs), an [`Exit`] out. The work itself is in [`crate::barman`].

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{engine, finish, load_config, summary};
use crate::barman::conf::{BarmanConf, require_barman_user};
use crate::barman::observe::metrics::record_run;
use crate::barman::recover::restore::{RestoreOptions, base_restore};
use crate::barman::remote::BucketLayout;
use crate::barman::server::Server;
use crate::barman::ship::basesync::{base_sync, queue_add as enqueue, retry_hook};
use crate::barman::ship::fullsync::{FullSyncReport, full_sync, listing, remote_backups};
use crate::barman::ship::walsync::wal_sync;
use crate::cli::invocation::{BarmanAction, Options, Servers};
use crate::config::Config;
use crate::error::{Error, Exit, Result};
use crate::logging::Verbosity;
use crate::transfer::{Cancel, Transfer};
use crate::units::human_bytes;

/// `queue-add`: runs without a runtime or a store, in milliseconds. As a retry hook, every
/// failure exits 62 (ABORT_CONTINUE) so Barman is never blocked; `full-sync` catches any backup
/// that was not queued.
pub(super) fn queue_add(load: impl FnOnce() -> Result<Config>) -> Exit {
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("BARMAN_"))
        .collect();
    let result = load().and_then(|cfg| {
        require_barman_user(&BarmanConf::load(&cfg.barman.config)?, "queue-add")?;
        let mut last = None;
        // A queue directory that is briefly unwritable gets three tries over ~2 s.
        for attempt in 0..3 {
            match enqueue(&cfg.state.queue_dir, &env) {
                Ok(q) => return Ok(q),
                Err(e @ (Error::Usage(_) | Error::Config(_))) => return Err(e),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(300 << attempt));
        }
        Err(last.unwrap_or(Error::Failed("queue-add failed".into())))
    });
    match result {
        Ok(q) => {
            tracing::info!("queued backup {} ({:?})", q.backup_id, q.state);
            Exit::Success
        }
        Err(e) => {
            eprintln!("barmans3 queue-add: {}", e.one_line());
            // As a retry hook every refusal must be 62, or Barman retries forever.
            if retry_hook() {
                Exit::HookAbortContinue
            } else {
                e.exit()
            }
        }
    }
}

/// Runs a Barman command. `wal-restore` and its prefetcher run apart: a call served from the
/// spool builds no engine, and `wal-restore` has an exit contract of its own.
pub(super) fn run(o: &Options, action: BarmanAction) -> Exit {
    let action = match action {
        BarmanAction::WalRestore {
            server,
            name,
            dest,
            layout,
        } => {
            return super::walrestore::restore_command(o, &server, &name, &dest, layout);
        }
        BarmanAction::WalPrefetch {
            server,
            spool,
            layout,
        } => {
            return super::walrestore::prefetcher(o, &server, &spool, layout);
        }
        other => other,
    };
    let as_barman = match &action {
        BarmanAction::BaseSync => Some("base-sync"),
        BarmanAction::WalSync { .. } => Some("wal-sync"),
        BarmanAction::FullSync { .. } => Some("full-sync"),
        BarmanAction::CatalogRestore { .. } => Some("catalog-restore"),
        _ => None,
    };
    let result = load_config(o).and_then(|cfg| {
        // Commands that write into Barman's tree or our queue and state run as Barman does.
        if let Some(command) = as_barman {
            require_barman_user(&BarmanConf::load(&cfg.barman.config)?, command)?;
        }
        crate::runtime::block_on(|cancel| with_engine(o.clone(), cfg, action, cancel))
    });
    match result {
        // Another run holds the lock and does the work: not an error, so `-q` (cron) stays
        // silent; the exit status still says so.
        Err(Error::Busy(_)) if o.verbosity == Verbosity::Quiet => Exit::Busy,
        other => finish(other),
    }
}

async fn with_engine(
    o: Options,
    cfg: Config,
    action: BarmanAction,
    cancel: Arc<Cancel>,
) -> Result<Exit> {
    let quiet_summary = matches!(
        action,
        BarmanAction::BaseLs { .. } | BarmanAction::Drill { .. } | BarmanAction::Replicate { .. }
    );
    // What status --prometheus exports as the last run (a follower never ends). Only a run
    // that ended without error is recorded: a failed run leaves the disk as it was.
    let recorded = match &action {
        BarmanAction::BaseSync => Some("base-sync"),
        BarmanAction::WalSync { follow: None, .. } => Some("wal-sync"),
        _ => None,
    };
    let t = engine(&o, &cfg, cancel).await?;
    let mut out = Outcome::new(&o);
    let exit = dispatch(&o, &cfg, &t, action, &mut out).await;
    t.progress().finish();
    if let Some(command) = recorded
        && exit.is_ok()
        && let Err(e) = record_run(&cfg, command, &t.stats().snapshot())
    {
        tracing::warn!("could not record the run for the metrics: {}", e.one_line());
    }
    let exit = exit?;
    if !quiet_summary {
        summary(&o, &t, &out.counts)?;
    }
    Ok(exit)
}

/// What a run reports besides its request counters: its own counts (in the `--json` summary)
/// and its summary lines on stderr, which `-q` silences (cron mails whatever a job prints).
#[derive(Debug)]
struct Outcome {
    quiet: bool,
    counts: BTreeMap<&'static str, u64>,
}

impl Outcome {
    fn new(o: &Options) -> Outcome {
        Outcome {
            quiet: o.verbosity == Verbosity::Quiet,
            counts: BTreeMap::new(),
        }
    }
    /// A summary line on stderr, unless `-q`.
    fn say(&self, line: std::fmt::Arguments<'_>) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }
    /// Adds to a count of the `--json` summary.
    fn count(&mut self, name: &'static str, n: u64) {
        *self.counts.entry(name).or_default() += n;
    }
}

async fn dispatch(
    o: &Options,
    cfg: &Config,
    t: &Transfer,
    action: BarmanAction,
    out: &mut Outcome,
) -> Result<Exit> {
    match action {
        BarmanAction::BaseSync => run_base_sync(cfg, t, out).await,
        BarmanAction::WalSync {
            servers,
            follow: Some(opts),
            ..
        } => run_follow(cfg, t, servers, opts, out).await,
        BarmanAction::WalSync { servers, full, .. } => {
            run_wal_sync(cfg, t, servers, full, out).await
        }
        BarmanAction::BaseLs {
            server,
            layout: BucketLayout::BarmanCloud,
        } => super::cloud::base_ls(o, cfg, t, &server).await,
        BarmanAction::BaseLs { server, .. } => base_ls(o, cfg, t, &server).await,
        BarmanAction::Replicate { to, servers, opts } => {
            super::replicate::run(o, cfg, t, &to, servers, &opts, &mut out.counts).await
        }
        BarmanAction::FullSync { servers, opts } => run_full_sync(cfg, t, servers, opts, out).await,
        a @ BarmanAction::BaseRestore { .. } => run_base_restore(o, cfg, t, a, out).await,
        BarmanAction::CatalogRestore { server, opts } => {
            run_catalog_restore(cfg, t, &server, &opts).await
        }
        // Run apart, before an engine is built ([`run`]).
        BarmanAction::WalRestore { .. } | BarmanAction::WalPrefetch { .. } => Err(Error::Usage(
            "wal-restore and wal-prefetch do not run on a shared engine".into(),
        )),
        BarmanAction::Drill {
            server,
            opts,
            prometheus,
        } => super::drill::run(o, cfg, t, &server, &opts, prometheus.as_deref()).await,
    }
}

/// `base-restore`: a backup of either layout restored and checked into DEST, and what
/// PostgreSQL will need said.
async fn run_base_restore(
    o: &Options,
    cfg: &Config,
    t: &Transfer,
    action: BarmanAction,
    out: &mut Outcome,
) -> Result<Exit> {
    let BarmanAction::BaseRestore {
        server,
        id,
        dest,
        tablespaces,
        recovery,
        recovery_config,
        request_restore,
        layout,
    } = action
    else {
        return Err(Error::Usage("not a base-restore".into()));
    };
    let named = recovery_config
        .clone()
        .or_else(|| cfg.source.clone().or(o.config.clone()));
    let opts = RestoreOptions {
        request_restore,
        tablespaces,
        restore_command: recovery.then(|| {
            super::walrestore::restore_command_line(
                o,
                cfg,
                &server,
                recovery_config.as_deref(),
                layout,
            )
        }),
        pg_combinebackup: cfg.barman.pg_combinebackup.clone(),
        staging: cfg.barman.restore_staging_dir.clone(),
        decrypt: super::walrestore::decryption(cfg, &server),
    };
    let srv = Server::new(t, cfg.location.prefix(), &server).with_layout(layout);
    let r = match layout {
        BucketLayout::Barmans3 => base_restore(&srv, &id, &dest, &opts).await?,
        BucketLayout::BarmanCloud => {
            crate::barman::cloud::restore::base_restore(&srv, &id, &dest, &opts).await?
        }
    };
    out.count("files", r.files as u64);
    out.count("bytes", r.bytes);
    out.say(format_args!(
        "barmans3 base-restore {server} {id}: {} files, {} verified into {}",
        r.files,
        human_bytes(r.bytes),
        dest.display()
    ));
    for (oid, dir) in &r.tablespaces {
        eprintln!("  tablespace {oid} -> {}", dir.display());
    }
    for n in &r.notes {
        eprintln!("  note: {n}");
    }
    // What PostgreSQL will need: said even under -q, the start would fail otherwise.
    let named = named.filter(|_| recovery);
    for w in super::owners::restore_warnings(&dest, named.as_deref()) {
        eprintln!("barmans3 base-restore: {w}");
    }
    Ok(Exit::Success)
}

/// `catalog-restore`: Barman's catalog of a server rebuilt from the bucket, and what to do next.
async fn run_catalog_restore(
    cfg: &Config,
    t: &Transfer,
    server: &str,
    opts: &crate::barman::recover::catalog::CatalogOptions,
) -> Result<Exit> {
    let dirs = BarmanConf::load(&cfg.barman.config)?.server(server)?;
    let srv = Server::new(t, cfg.location.prefix(), server);
    let r = crate::barman::recover::catalog::catalog_restore(&srv, &dirs, opts).await?;
    eprintln!(
        "barmans3 catalog-restore {server}: {} backup(s) ({}), {} WAL file(s), {} files, {} into {}",
        r.backups.len(),
        r.backups.join(", "),
        r.wals,
        r.files,
        human_bytes(r.bytes),
        dirs.backup_dir.display()
    );
    for step in crate::barman::recover::catalog::next_steps(server, &r) {
        eprintln!("  next: {step}");
    }
    Ok(Exit::Success)
}

/// `full-sync` of one server or, with `--all`, of every active one: a server that fails does not
/// stop the others (one line names each failure); one whose lock is held is skipped, and the
/// run exits 75 only when every server was busy.
async fn run_full_sync(
    cfg: &Config,
    t: &Transfer,
    servers: Servers,
    opts: crate::barman::ship::fullsync::FullSyncOptions,
    out: &mut Outcome,
) -> Result<Exit> {
    let conf = BarmanConf::load(&cfg.barman.config)?;
    let (names, all) = match servers {
        Servers::All => (conf.servers(), true),
        Servers::One(s) => (vec![s], false),
    };
    let mut ends = Vec::new();
    for s in &names {
        let dirs = conf.server(s)?;
        let end = match full_sync(cfg, t, &dirs, opts).await {
            Ok(r) => {
                out.count("backups_uploaded", r.uploaded_backups.len() as u64);
                out.count("wals_uploaded", r.wal.uploaded as u64);
                out.count("backups_deleted", r.deleted_backups.len() as u64);
                out.count("wal_objects_deleted", r.deleted_wals.len() as u64);
                report_full_sync(s, opts.dry_run, &r, out)?;
                Ok(())
            }
            Err(e) if !all => return Err(e),
            Err(e) => Err(e),
        };
        ends.push((s.clone(), end));
    }
    several("full-sync", ends, out)
}

/// The end of a command run over several servers: interrupted if any was; the failures in one
/// error; 75 when every server was busy; else success, each busy server named once (unless -q).
fn several(command: &str, ends: Vec<(String, Result<()>)>, out: &Outcome) -> Result<Exit> {
    let total = ends.len();
    let mut busy = Vec::new();
    let mut failures = Vec::new();
    for (s, end) in ends {
        match end {
            Ok(()) => {}
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(Error::Busy(_)) => busy.push(s),
            Err(e) => failures.push(format!("{s}: {}", e.one_line())),
        }
    }
    if !failures.is_empty() {
        return Err(Error::Failed(failures.join("; ")));
    }
    if total > 0 && busy.len() == total {
        return Err(Error::Busy(format!(
            "{command}: every server is busy (another run holds its lock): {}",
            busy.join(", ")
        )));
    }
    if !busy.is_empty() {
        out.say(format_args!(
            "barmans3 {command}: skipped {} (another run holds the lock)",
            busy.join(", ")
        ));
    }
    Ok(Exit::Success)
}

/// The full-sync report: a summary line on stderr (unless -q); with `--dry-run`, the plan on
/// stdout, one line per object (`upload backup ID`, `delete backup ID`, `delete KEY`, `keep …
/// retained until …`).
fn report_full_sync(server: &str, dry_run: bool, r: &FullSyncReport, out: &Outcome) -> Result<()> {
    let (up, del) = if dry_run {
        ("would upload", "would delete")
    } else {
        ("uploaded", "deleted")
    };
    out.say(format_args!(
        "barmans3 full-sync {server}: {up} {} backup(s) and {} WAL(s), {del} {} backup(s) and {} WAL object(s){}{}{}",
        r.uploaded_backups.len(),
        r.wal.uploaded,
        r.deleted_backups.len(),
        r.deleted_wals.len(),
        if r.skipped.is_empty() {
            String::new()
        } else {
            format!("; skipped: {}", r.skipped.join(", "))
        },
        if r.spared.is_empty() {
            String::new()
        } else {
            format!("; kept: {}", r.spared.join(", "))
        },
        if r.retained.is_empty() {
            String::new()
        } else {
            format!("; Object Lock: {}", r.retained.join(", "))
        }
    ));
    if dry_run {
        for id in &r.uploaded_backups {
            outln!("upload backup {id}")?;
        }
        for id in &r.deleted_backups {
            outln!("delete backup {id}")?;
        }
        for k in &r.deleted_wals {
            outln!("delete {k}")?;
        }
        for why in &r.retained {
            outln!("keep {why}")?;
        }
    }
    Ok(())
}

async fn run_base_sync(cfg: &Config, t: &Transfer, out: &mut Outcome) -> Result<Exit> {
    let r = base_sync(cfg, t).await?;
    out.count("done", r.done as u64);
    out.count("waiting", r.waiting as u64);
    out.count("failed", r.failed as u64);
    out.count("bytes", r.bytes);
    out.count("already_there", r.already_there as u64);
    out.say(format_args!(
        "barmans3 base-sync: {} done, {} waiting, {} failed, {} uploaded, {} files already there",
        r.done,
        r.waiting,
        r.failed,
        human_bytes(r.bytes),
        r.already_there
    ));
    if r.failed > 0 {
        return Err(Error::Failed(format!(
            "{} task(s) failed: {}",
            r.failed,
            r.errors.join("; ")
        )));
    }
    Ok(Exit::Success)
}

async fn run_follow(
    cfg: &Config,
    t: &Transfer,
    servers: Servers,
    opts: crate::barman::ship::follow::FollowOptions,
    out: &Outcome,
) -> Result<Exit> {
    let conf = BarmanConf::load(&cfg.barman.config)?;
    let names = match servers {
        Servers::All => conf.servers(),
        Servers::One(s) => vec![s],
    };
    let dirs = names
        .iter()
        .map(|s| conf.server(s))
        .collect::<Result<Vec<_>>>()?;
    crate::barman::ship::follow::follow(cfg, t, dirs, opts).await?;
    out.say(format_args!("barmans3 wal-sync --follow: stopped"));
    Ok(Exit::Success)
}

async fn run_wal_sync(
    cfg: &Config,
    t: &Transfer,
    servers: Servers,
    full: bool,
    out: &mut Outcome,
) -> Result<Exit> {
    let conf = BarmanConf::load(&cfg.barman.config)?;
    let (names, all) = match servers {
        Servers::All => {
            for s in conf.inactive_servers() {
                tracing::info!("wal-sync {s}: skipped, the server is inactive (active = false)");
            }
            (conf.servers(), true)
        }
        Servers::One(s) => (vec![s], false),
    };
    let mut ends = Vec::new();
    for s in names {
        let dirs = conf.server(&s)?;
        let end = match wal_sync(cfg, t, &dirs, full, None).await {
            Ok(r) => {
                out.count("uploaded", r.uploaded as u64);
                out.count("checked", r.checked as u64);
                out.count("bytes", r.bytes);
                out.say(format_args!(
                    "barmans3 wal-sync {s}: {} uploaded ({}), {} checked{}",
                    r.uploaded,
                    human_bytes(r.bytes),
                    r.checked,
                    if r.full { ", full reconcile" } else { "" }
                ));
                Ok(())
            }
            Err(e) if !all => return Err(e),
            Err(e) => Err(e),
        };
        ends.push((s, end));
    }
    several("wal-sync", ends, out)
}

async fn base_ls(o: &Options, cfg: &Config, t: &Transfer, server: &str) -> Result<Exit> {
    let list = listing(remote_backups(&Server::new(t, cfg.location.prefix(), server)).await?);
    if list.is_empty() {
        // A mistyped name lists nothing: where Barman's configuration is at hand, say so as
        // wal-sync does; on a restore host without Barman, say where nothing was found.
        if cfg.barman.config.exists() {
            BarmanConf::load(&cfg.barman.config)?.server(server)?;
        }
        let remote = crate::barman::remote::Remote::new(cfg.location.prefix(), server);
        eprintln!(
            "barmans3 base-ls: no backups for {server} in {} (keys {}*)",
            cfg.location,
            remote.base_prefix()
        );
    }
    if o.json {
        let rows: Vec<serde_json::Value> = list
            .iter()
            .map(|(b, gap)| {
                let mut v = serde_json::to_value(b).unwrap_or_default();
                if let Some(m) = v.as_object_mut() {
                    // `complete` is the whole chain's; this, the backup's own objects'.
                    let own = gap.as_deref() != Some(b.id.as_str());
                    m.insert("files_complete".into(), own.into());
                    if let Some(gap) = gap {
                        m.insert("chain_gap".into(), gap.clone().into());
                    }
                }
                v
            })
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        )?;
        return Ok(Exit::Success);
    }
    // Under 100 columns: times to the second, the first WAL; everything else in --json.
    outln!(
        "{:<16} {:<16} {:<19} {:>10}  {:<24}  COMPLETE",
        "ID",
        "STATUS",
        "END",
        "SIZE",
        "BEGIN WAL"
    )?;
    for (b, gap) in list {
        outln!(
            "{:<16} {:<16} {:<19} {:>10}  {:<24}  {}",
            b.id,
            if b.status.is_empty() { "-" } else { &b.status },
            b.end_time
                .as_deref()
                .map_or("-", |t| t.get(..19).unwrap_or(t)),
            b.size.map_or("-".into(), human_bytes),
            b.begin_wal.as_deref().unwrap_or("-"),
            match gap {
                None => "yes".to_string(),
                Some(gap) if gap == b.id => "no".to_string(),
                Some(gap) => format!("no (its chain needs {gap})"),
            }
        )?;
    }
    Ok(Exit::Success)
}
