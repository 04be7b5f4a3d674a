//! Object-level commands (`store put|get|ls|uploads`) and the configuration helpers
//! (`config check|init|import-legacy`).

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use super::{bare_engine, engine, finish, load_config, summary};
use crate::cli::invocation::{ConfigAction, Options, Sink, Source, StoreAction};
use crate::error::{Error, Exit, Result};
use crate::store::{ListRequest, join_key, printable_key, relative_key};
use crate::transfer::{Cancel, Expect, Transfer};

pub(super) async fn run(o: Options, action: StoreAction, cancel: Arc<Cancel>) -> Result<Exit> {
    let cfg = load_config(&o)?;
    let t = engine(&o, &cfg, cancel).await?;
    let prefix = cfg.location.prefix().to_string();
    match action {
        StoreAction::Put { source, key } => {
            let key = join_key(&prefix, &key);
            let up = match source {
                Source::Stdin => t.upload_stream(tokio::io::stdin(), &key).await?,
                Source::File(path) => {
                    if let Ok(m) = std::fs::metadata(&path) {
                        t.progress().add_work(1, m.len());
                    }
                    t.upload_file(&path, &key, None).await?
                }
            };
            tracing::info!(key, size = up.size, parts = up.parts, "uploaded");
        }
        StoreAction::Get { key, dest, raw } => {
            let key = join_key(&prefix, &key);
            let t = if raw { t.raw() } else { t.clone() };
            match dest {
                Sink::Stdout => {
                    let mut out = tokio::io::stdout();
                    let closed = |e: Error| match e {
                        Error::Io { ref source, .. }
                            if source.kind() == std::io::ErrorKind::BrokenPipe =>
                        {
                            Error::StdoutClosed
                        }
                        e => e,
                    };
                    t.download_to(&key, &mut out, Expect::default())
                        .await
                        .map_err(closed)?;
                    out.flush()
                        .await
                        .map_err(|e| closed(Error::io("write stdout", e)))?;
                }
                Sink::File(path) => {
                    t.download_file(&key, &path, Expect::default()).await?;
                }
            }
        }
        StoreAction::Ls {
            prefix: p,
            absolute,
        } => {
            let req = ListRequest {
                prefix: join_key(&prefix, &p),
                ..Default::default()
            };
            let mut lines = String::new();
            t.list_pages(&req, |objs, _| {
                for o in objs {
                    let key = if absolute {
                        &o.key
                    } else {
                        relative_key(&prefix, &o.key)
                    };
                    lines.push_str(&format!("{:>14} {}\n", o.size, printable_key(key)));
                }
                true
            })
            .await?;
            out!("{lines}")?;
        }
        StoreAction::Uploads { abort_older_than } => {
            let list = match abort_older_than {
                Some(age) => t.abort_stale_uploads(&prefix, age).await?,
                None => t.incomplete_uploads(&prefix).await?,
            };
            for u in list {
                outln!("{} {}", u.upload.id, printable_key(&u.upload.key))?;
            }
        }
    }
    summary(&o, &t, &Default::default())?;
    Ok(Exit::Success)
}

pub(super) fn config_command(o: &Options, action: ConfigAction) -> Exit {
    finish(match action {
        ConfigAction::Check { lock_proof } => {
            let o = o.clone();
            crate::runtime::block_on(|cancel| config_check(o, lock_proof, cancel))
        }
        ConfigAction::Init { output } => config_init(output.as_deref()),
        ConfigAction::ImportLegacy { file } => import_legacy(&file),
    })
}

async fn config_check(o: Options, lock_proof: bool, cancel: Arc<Cancel>) -> Result<Exit> {
    let cfg = load_config(&o)?;
    if lock_proof {
        super::lockproof::configured(&cfg)?;
    }
    let t = bare_engine(&o, &cfg, cancel.clone()).await?;
    let req = ListRequest {
        prefix: cfg.location.prefix().to_string(),
        max_keys: Some(1),
        ..Default::default()
    };
    match t.list_pages(&req, |_, _| false).await {
        Ok(()) => {}
        // Settings the store refuses are configuration errors (exit 2)...
        Err(e @ Error::Config(_)) => return Err(e),
        Err(e) if e.is_access_problem() => {
            return Err(Error::Config(format!(
                "{}: the bucket is not usable with these settings: {}",
                cfg.location,
                e.one_line()
            )));
        }
        // ...a store that cannot be reached is an operation that failed (exit 1).
        Err(e) => {
            return Err(Error::Failed(format!(
                "{}: cannot reach the store: {}",
                cfg.location,
                e.one_line()
            )));
        }
    }
    let lock = t.object_lock_status().await.unwrap_or(None);
    if cfg.s3.object_lock.is_some() && lock.is_none() {
        return Err(Error::Config(format!(
            "s3.object_lock is set but {} has no Object Lock: use a bucket created with Object Lock enabled, or remove s3.object_lock",
            cfg.location
        )));
    }
    out!("{}", cfg.to_redacted_yaml())?;
    eprintln!("barmans3: config OK, {} reachable", t.describe());
    eprintln!(
        "barmans3: Object Lock on the bucket: {}",
        lock.as_deref().unwrap_or("not enabled")
    );
    check_hooks(&cfg)?;
    if let Some(enc) = &cfg.encryption {
        encryption_probe(&t, cfg.location.prefix(), &enc.keys).await?;
    }
    if cfg.transfer.probe_checksum {
        let p = cfg.checksum_probe();
        // Asked explicitly: probe again rather than trust the cache.
        let _ = std::fs::remove_file(&p.cache);
        let mode = t.checksum_mode().await;
        eprintln!(
            "barmans3: request checksums (auto): {}",
            match mode {
                crate::transfer::ChecksumMode::WhenSupported => "CRC32C, verified by the store",
                crate::transfer::ChecksumMode::WhenRequired =>
                    "Content-MD5 (the store does not verify CRC32C headers)",
            }
        );
    }
    if lock_proof {
        return super::lockproof::lock_proof(&o, &cfg, cancel).await;
    }
    Ok(Exit::Success)
}

/// With `encryption:`, writes a probe object sealed to the recipients, reads it back and says
/// whether the identities open it (a host without identities can write but not restore: said,
/// not an error), then deletes it. Only public keys are ever printed.
async fn encryption_probe(t: &Transfer, prefix: &str, keys: &crate::crypt::Keys) -> Result<()> {
    let nonce: u64 = rand::random();
    let key = join_key(
        prefix,
        &format!(".barmans3-probe/config-check-{nonce:016x}"),
    );
    let body = format!("barmans3 config check probe {nonce:016x}\n").into_bytes();
    t.put_bytes(&key, bytes::Bytes::from(body.clone()), Default::default())
        .await?;
    let stored = t.download_small(&key, 1 << 20).await;
    let deleted = t.delete_keys(std::slice::from_ref(&key)).await;
    let recipients = keys.recipients.public_keys().join(", ");
    let opened = match stored {
        Ok((plain, _)) => plain,
        Err(Error::Crypt(e)) if keys.identities.is_empty() => {
            tracing::debug!("probe object: {e}");
            eprintln!(
                "barmans3: encryption: a probe object sealed to {recipients} was written; no identity_file on this host to open it (this host can write but not restore)"
            );
            return deleted;
        }
        Err(Error::Crypt(e)) => {
            return Err(Error::Config(format!(
                "encryption: the identities in {} do not open a probe object sealed to encryption.recipients ({}): a restore could not read what this host writes; add the identity of a recipient to identity_files, or fix recipients",
                keys.identities
                    .files()
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                e.fault
            )));
        }
        Err(e) => return Err(e),
    };
    deleted?;
    if opened != body {
        return Err(Error::Failed(format!(
            "encryption: the probe object {key} read back as other bytes than were written"
        )));
    }
    eprintln!(
        "barmans3: encryption: a probe object sealed to {recipients} opens with {}",
        keys.identities
            .files()
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// The hook lines of Barman's configuration (when there is one): a hook that names a program
/// that does not exist or is not barmans3 is a configuration error; a server without a hook is
/// said (full-sync still uploads its backups, once a night).
fn check_hooks(cfg: &crate::config::Config) -> Result<()> {
    use crate::barman::conf::BarmanConf;
    if !cfg.barman.config.exists() {
        return Ok(());
    }
    let conf = BarmanConf::load(&cfg.barman.config)?;
    let me = std::env::current_exe().map_err(|e| Error::io("find this program", e))?;
    let path = std::env::var("PATH").unwrap_or_default();
    let r = crate::barman::hooks::judge_hooks(&conf, &me, &path);
    if !r.unqueued.is_empty() {
        eprintln!(
            "barmans3: warning: no hook queues the backups of {} (add post_backup_retry_script = {} queue-add to their Barman config; until then only the nightly full-sync uploads them)",
            r.unqueued.join(", "),
            me.display()
        );
    }
    if r.broken.is_empty() {
        eprintln!("barmans3: Barman hooks: {}", cfg.barman.config.display());
        return Ok(());
    }
    Err(Error::Config(format!(
        "Barman hook lines cannot run: {}",
        r.broken.join("; ")
    )))
}

fn config_init(output: Option<&Path>) -> Result<Exit> {
    let text = crate::config::legacy::EXAMPLE;
    let Some(p) = output else {
        out!("{text}")?;
        return Ok(Exit::Success);
    };
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
    Ok(Exit::Success)
}

fn import_legacy(file: &Path) -> Result<Exit> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        Error::Config(format!(
            "cannot read {}: {}",
            file.display(),
            crate::error::reason(&e)
        ))
    })?;
    let imported = crate::config::legacy::import_legacy(&text, &file.display().to_string())?;
    out!("{}", imported.yaml)?;
    for n in &imported.notes {
        eprintln!("note: {n}");
    }
    Ok(Exit::Success)
}
