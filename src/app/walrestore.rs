//! `wal-restore` (PostgreSQL's restore_command) and its background prefetcher, as the CLI runs
//! them: the request built from the configuration, served by
//! [`crate::barman::recover::walrestore::serve`] with this program as the prefetcher and the
//! engine built only when the bucket is needed, and the one mapping of its outcome onto the
//! exit status PostgreSQL reads.

use std::path::Path;

use super::{engine, finish, load_config};
use crate::barman::recover::walrestore::prefetch::{self, Settings};
use crate::barman::recover::walrestore::spool::Spool;
use crate::barman::recover::walrestore::{
    Decoding, Job, Launcher, Outcome, Request, Served, serve, spool_store_id,
};
use crate::barman::remote::BucketLayout;
use crate::barman::server::Server;
use crate::barman::ship::state::store_id;
use crate::cli::invocation::Options;
use crate::config::Config;
use crate::error::{Exit, Result};
use crate::transfer::Transfer;

/// The exit status PostgreSQL reads, the whole contract: 0, the file is at `%p`; 1, it is
/// verifiably not in the bucket (PostgreSQL may end recovery); 200, anything else (above 125,
/// PostgreSQL stops instead of promoting). A command line that does not parse never gets an
/// outcome and exits 200 too ([`Exit::rejected`]).
pub(super) fn exit_status(outcome: &Outcome) -> Exit {
    match outcome {
        Outcome::Served(_) => Exit::Success,
        Outcome::Absent => Exit::Failed,
        Outcome::Failed(_) => Exit::RecoveryAbort,
    }
}

fn decoding(cfg: &Config, server: &str) -> Decoding {
    Decoding {
        custom: cfg.barman.custom_decompression.clone(),
        custom_magic: cfg.barman.custom_compression_magic.clone(),
        decrypt: decryption(cfg, server),
    }
}

/// How Barman's GPG-encrypted files of `server` are decrypted, if anything says how.
pub(super) fn decryption(cfg: &Config, server: &str) -> Option<crate::codec::Decryption> {
    crate::barman::recover::decryption(
        cfg.barman.decryption_command.as_ref(),
        &cfg.barman.config,
        server,
        cfg.barman.command_timeout,
    )
}

/// This program and the global arguments that reach the same config and store.
pub(super) fn self_args(o: &Options, cfg: &Config) -> Vec<String> {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "barmans3".into());
    program_args(exe, o, cfg)
}

/// `exe` and the global arguments that reach the same config and store.
fn program_args(exe: String, o: &Options, cfg: &Config) -> Vec<String> {
    let mut words = vec![exe];
    if let Some(p) = cfg.source.as_ref().or(o.config.as_ref()) {
        words.extend(["--config".into(), p.display().to_string()]);
    }
    if let Some((_, url)) = &o.store {
        words.extend(["--store".into(), url.clone()]);
    }
    if let Some(name) = &o.store_name {
        words.extend(["--store".into(), name.clone()]);
    }
    words
}

/// The restore_command base-restore --recovery (and drill) writes: this binary's `wal-restore`,
/// this config, this server, each word quoted for the shell PostgreSQL runs it with. The lean
/// `barmans3-wal-restore` takes this binary's place when it is installed beside it and the
/// command line is one it serves itself (no `--store`, no `--as-of`).
pub(super) fn restore_command_line(
    o: &Options,
    cfg: &Config,
    server: &str,
    config: Option<&Path>,
    layout: BucketLayout,
) -> String {
    use crate::barman::recover::restore::recovery::shell_quote;
    let mut args = self_args(o, cfg);
    if let Some(p) = config {
        // The config PostgreSQL's user reads, in place of this run's.
        if let Some(i) = args.iter().position(|w| w == "--config") {
            args.drain(i..i + 2);
        }
        args.splice(1..1, ["--config".to_string(), p.display().to_string()]);
    }
    let lean = Path::new(&args[0]).with_file_name(super::lean::LEAN_WAL_RESTORE);
    let lean = (lean.is_absolute()
        && lean.is_file()
        && o.store.is_none()
        && o.store_name.is_none()
        && o.as_of.is_none())
    .then(|| lean.display().to_string());
    if let Some(lean) = &lean {
        args[0].clone_from(lean);
    }
    let mut words: Vec<String> = args.iter().map(|w| shell_quote(w)).collect();
    if lean.is_none() {
        words.push("wal-restore".into());
    }
    if let Some(t) = o.as_of {
        // The WALs of the bucket as it was, like the backup just restored.
        words.extend(["--as-of".into(), crate::store::asof::format_time(t)]);
    }
    if layout != BucketLayout::Barmans3 {
        words.extend(["--layout".into(), layout.name().into()]);
    }
    words.extend([shell_quote(server), "%f".into(), "%p".into()]);
    words.join(" ")
}

/// The prefetcher of the spool at `spool`: `args` (the program and its global arguments)
/// running `wal-prefetch`.
fn prefetcher_command(
    args: &[String],
    o: &Options,
    server: &str,
    layout: BucketLayout,
    spool: &Path,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(&args[0]);
    cmd.args(&args[1..])
        .args(["wal-prefetch", server, "--spool"])
        .arg(spool)
        // After the spool: `wal-prefetch SERVER --spool DIR` is what operators' (and our
        // tests') process patterns look for.
        .args(["--layout", layout.name()]);
    if let Some(t) = o.as_of {
        cmd.args(["--as-of", &crate::store::asof::format_time(t)]);
    }
    cmd
}

/// The application's side of the service: this program as the prefetcher, the engine of the
/// configured store for the bucket.
struct App<'a> {
    o: &'a Options,
    cfg: &'a Config,
    server: &'a str,
    layout: BucketLayout,
}

impl Launcher for App<'_> {
    fn prefetcher(&self, spool: &Path) -> std::process::Command {
        let args = self_args(self.o, self.cfg);
        prefetcher_command(&args, self.o, self.server, self.layout, spool)
    }

    fn on_bucket<'a, T>(&self, job: impl FnOnce(Transfer) -> Job<'a, T>) -> Result<T> {
        crate::runtime::block_on(|cancel| async move {
            let t = engine(self.o, self.cfg, cancel).await?;
            job(t).await
        })
    }
}

/// `wal-restore SERVER NAME DEST`: serves the request and exits as [`exit_status`] says.
pub(super) fn restore_command(
    o: &Options,
    server: &str,
    name: &str,
    dest: &Path,
    layout: BucketLayout,
) -> Exit {
    let outcome = match load_config(o) {
        Ok(cfg) => {
            open_log(&cfg);
            let req = request(o, &cfg, server, name, dest, layout);
            serve(
                &req,
                &App {
                    o,
                    cfg: &cfg,
                    server,
                    layout,
                },
            )
        }
        Err(e) => Outcome::Failed(e),
    };
    report(name, dest, &outcome);
    exit_status(&outcome)
}

/// The lean `restore_command` (`barmans3-wal-restore`): serves a segment the spool holds, with
/// the checks and the log line of [`restore_command`], and the prefetcher run by `full` (the
/// barmans3 program beside it). `None` when the request is not served that way: the caller
/// hands it to `full` whole.
pub fn restore_spooled(
    o: &Options,
    full: &Path,
    server: &str,
    name: &str,
    dest: &Path,
    layout: BucketLayout,
) -> Option<Exit> {
    let cfg = load_config(o).ok()?;
    open_log(&cfg);
    let req = request(o, &cfg, server, name, dest, layout);
    let args = program_args(full.display().to_string(), o, &cfg);
    let prefetcher = |spool: &Path| prefetcher_command(&args, o, server, layout, spool);
    let n = crate::barman::recover::walrestore::serve_spooled(&req, &prefetcher).ok()??;
    let outcome = Outcome::Served(Served::Spool(n));
    report(name, dest, &outcome);
    Some(exit_status(&outcome))
}

/// Log lines go to `state.log_dir` too, when the config names one.
fn open_log(cfg: &Config) {
    if let Some(dir) = &cfg.state.log_dir
        && let Err(e) = crate::logging::open_log_file(dir)
    {
        tracing::warn!("{}", e.one_line());
    }
}

/// One call's request, as the config says.
fn request(
    o: &Options,
    cfg: &Config,
    server: &str,
    name: &str,
    dest: &Path,
    layout: BucketLayout,
) -> Request {
    Request {
        server: server.to_string(),
        name: name.to_string(),
        dest: dest.to_path_buf(),
        prefix: cfg.location.prefix().to_string(),
        store_id: spool_store_id(&store_id(cfg), layout, o.as_of),
        layout,
        decoding: decoding(cfg, server),
        prefetch: cfg.barman.wal_prefetch > 0,
        spool_base: cfg.barman.wal_spool_dir.clone(),
        patience: cfg.s3.read_timeout,
    }
}

/// The call's one log line.
fn report(name: &str, dest: &Path, outcome: &Outcome) {
    match outcome {
        Outcome::Served(Served::Spool(n)) => tracing::info!(
            "{name}: {n} bytes from the prefetch spool to {}",
            dest.display()
        ),
        Outcome::Served(Served::Bucket(f)) => tracing::info!(
            "{name}: {} bytes ({}) to {}",
            f.bytes,
            f.stored_as,
            dest.display()
        ),
        // PostgreSQL asks for files that may not exist (the next timeline's history, the end
        // of the archive): a quiet exit 1 is the answer, and the only one that lets it end
        // recovery.
        Outcome::Absent => tracing::debug!("{name}: not in the bucket"),
        Outcome::Failed(e) => {
            tracing::error!("wal-restore {name}: {}; aborting recovery", e.one_line())
        }
    }
}

/// The prefetcher process: takes the spool's lock (another prefetcher holding it ends this
/// one at once, before anything is built), then runs until recovery stops asking.
pub(super) fn prefetcher(o: &Options, server: &str, spool: &Path, layout: BucketLayout) -> Exit {
    let run = || -> Result<Exit> {
        let cfg = load_config(o)?;
        let sp = Spool::open(spool)?;
        let Some(lock) = sp.lock()? else {
            return Ok(Exit::Success);
        };
        let settings = Settings {
            depth: cfg.barman.wal_prefetch.max(1),
            bytes: cfg.barman.wal_spool_bytes,
        };
        crate::runtime::block_on(|cancel| async {
            let t = engine(o, &cfg, cancel).await?;
            let decoding = decoding(&cfg, server);
            let server = Server::new(&t, cfg.location.prefix(), server).with_layout(layout);
            prefetch::run(&server, &sp, lock, &decoding, settings).await
        })?;
        Ok(Exit::Success)
    };
    finish(run())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn one_mapping_from_outcome_to_status() {
        assert_eq!(exit_status(&Outcome::Served(Served::Spool(1))).code(), 0);
        assert_eq!(exit_status(&Outcome::Absent).code(), 1);
        for e in [
            Error::Config("x".into()),
            Error::Usage("x".into()),
            Error::Interrupted,
            Error::NotFound { key: "k".into() },
            Error::Failed("x".into()),
        ] {
            assert_eq!(exit_status(&Outcome::Failed(e)).code(), 200);
        }
    }
}
