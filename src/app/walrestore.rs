//! `wal-restore` (PostgreSQL's restore_command) and its background prefetcher, as the CLI runs
//! them: the spool when recovery asks ([`crate::barman::recover::prefetch`]), else a direct fetch; the
//! exit status PostgreSQL reads (0 here, 1 verifiably absent, anything else aborts recovery).

use std::path::{Path, PathBuf};

use crate::barman::recover::prefetch::{self, Depth, Spool};
use crate::barman::recover::walrestore::{Decoding, bucket_system, wal_restore};
use crate::barman::remote::Remote;
use crate::barman::ship::state::store_id;
use crate::barman::wal::{self, WalKind};
use crate::cli::invocation::Options;
use crate::config::Config;
use crate::error::{Error, Exit, Result};
use crate::transfer::Transfer;

fn decoding(cfg: &Config) -> Decoding {
    Decoding {
        custom: cfg.barman.custom_decompression.clone(),
        custom_magic: cfg.barman.custom_compression_magic.clone(),
        decrypt: cfg.barman.decryption_command.clone(),
    }
}

/// This program and the global arguments that reach the same config and store.
pub(super) fn self_args(o: &Options, cfg: &Config) -> Vec<String> {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "barmans3".into());
    let mut words = vec![exe];
    if let Some(p) = cfg.source.as_ref().or(o.config.as_ref()) {
        words.extend(["--config".into(), p.display().to_string()]);
    }
    if let Some((_, url)) = &o.store {
        words.extend(["--store".into(), url.clone()]);
    }
    words
}

/// `wal-restore SERVER NAME DEST`.
pub(super) async fn restore(
    o: &Options,
    cfg: &Config,
    t: &Transfer,
    server: &str,
    name: &str,
    dest: &Path,
) -> Result<Exit> {
    let remote = Remote::new(cfg.location.prefix(), server);
    let spool = (cfg.barman.wal_prefetch > 0 && wal::classify(name) == Some(WalKind::Segment))
        .then(|| {
            Spool::for_request(
                cfg.barman.wal_spool_dir.as_deref(),
                server,
                &store_id(cfg),
                dest,
            )
        })
        .flatten();
    if let Some(sp) = &spool {
        if prefetch::recently_missing(sp, name) {
            return Ok(Exit::Failed);
        }
        if let Some(n) = from_spool(o, cfg, t, &remote, sp, server, name, dest).await? {
            tracing::info!(
                "{name}: {n} bytes from the prefetch spool to {}",
                dest.display()
            );
            return Ok(Exit::Success);
        }
    }
    let system = match spool.as_ref().and_then(Spool::known_identity) {
        Some(s) => s,
        None => bucket_system(t, &remote).await?,
    };
    match wal_restore(t, &remote, name, dest, &decoding(cfg), system).await {
        Ok(s) => {
            if let Some(sp) = &spool {
                sp.learn_seg_size(s.seg_size);
            }
            tracing::info!(
                "{name}: {} bytes ({}) to {}",
                s.bytes,
                s.stored_as,
                dest.display()
            );
            Ok(Exit::Success)
        }
        // PostgreSQL asks for files that may not exist (the next timeline's history, the end
        // of the archive): a quiet exit 1 is the answer, and the only one that lets it end
        // recovery.
        Err(Error::NotFound { .. }) => {
            tracing::debug!("{name}: not in the bucket");
            if let Some(sp) = &spool {
                prefetch::remember_missing(sp, name);
            }
            Ok(Exit::Failed)
        }
        Err(e) => Err(e),
    }
}

/// Records what PostgreSQL wants, starts the prefetcher, and takes the segment from the spool
/// if it is there or arriving; `None` when it must be fetched directly.
#[allow(clippy::too_many_arguments)] // the request, and where to reach and spool it
async fn from_spool(
    o: &Options,
    cfg: &Config,
    t: &Transfer,
    remote: &Remote,
    sp: &Spool,
    server: &str,
    name: &str,
    dest: &Path,
) -> Result<Option<u64>> {
    sp.want(name)?;
    if sp.known_identity().is_none() {
        sp.set_identity(bucket_system(t, remote).await?)?;
    }
    let args = self_args(o, cfg);
    let mut cmd = std::process::Command::new(&args[0]);
    cmd.args(&args[1..])
        .args(["wal-prefetch", server, "--spool"])
        .arg(sp.dir());
    sp.start_prefetcher(cmd)?;
    sp.take_when_ready(name, dest, cfg.s3.read_timeout).await
}

/// The prefetcher process.
pub(super) async fn prefetcher(
    cfg: &Config,
    t: &Transfer,
    server: &str,
    spool: PathBuf,
) -> Result<Exit> {
    let remote = Remote::new(cfg.location.prefix(), server);
    let sp = Spool::at(spool);
    // The bucket's cluster, checked again: a changed one empties the spool before anything is
    // fetched into it.
    sp.set_identity(bucket_system(t, &remote).await?)?;
    let depth = Depth {
        segments: cfg.barman.wal_prefetch.max(1),
        bytes: cfg.barman.wal_spool_bytes,
    };
    prefetch::run(t, &remote, &sp, &decoding(cfg), depth).await?;
    Ok(Exit::Success)
}
