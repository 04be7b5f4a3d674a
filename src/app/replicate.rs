//! `replicate --to STORE`: opens the replica's engine beside the main one (server-side copies
//! when both stores share endpoint and credentials), replicates each server and prints what
//! each store holds and how far the replica lags (`--json`: one document on stdout).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::barman::replica::{self, Counts, Pair, ReplicateOptions, plan};
use crate::barman::server::Server;
use crate::cli::invocation::{Options, Servers};
use crate::config::Config;
use crate::error::{Error, Exit, Result};
use crate::store::{ListRequest, Location};
use crate::transfer::Transfer;
use crate::transfer::relay::RelayBudget;

/// The replica's engine, copying from the main bucket server-side when it can. It opens
/// sealed objects (the replica's backup.info and manifests are read); `.raw()` of it moves
/// stored bytes.
pub(super) async fn target_engine(
    o: &Options,
    cfg: &Config,
    t: &Transfer,
    to: &str,
) -> Result<(Transfer, Config, bool)> {
    let mut tcfg = cfg.with_store(to)?;
    let server_side = plan::server_side((&cfg.location, &cfg.s3), (&tcfg.location, &tcfg.s3));
    if server_side && let Location::S3 { bucket, .. } = &cfg.location {
        tcfg.s3.copy_source_bucket = Some(bucket.clone());
    }
    let target = super::engine_builder(o, &tcfg, t.cancel_flag().clone())
        .open(&tcfg.location, &tcfg.s3)
        .await?;
    Ok((target, tcfg, server_side))
}

/// Server names in the main store: the prefixes under its root that hold backups or WALs.
pub(super) async fn stored_servers(t: &Transfer, prefix: &str) -> Result<Vec<String>> {
    let root = crate::store::join_key(prefix, "");
    let root = if root.is_empty() {
        root
    } else {
        format!("{}/", root.trim_end_matches('/'))
    };
    let req = ListRequest {
        prefix: root.clone(),
        delimiter: Some("/".into()),
        ..Default::default()
    };
    let mut names = Vec::new();
    t.list_pages(&req, |_, prefixes| {
        names.extend(
            prefixes
                .iter()
                .filter_map(|p| p.strip_prefix(&root)?.strip_suffix('/'))
                .filter(|n| !n.starts_with('.'))
                .map(str::to_string),
        );
        true
    })
    .await?;
    let mut out = Vec::new();
    for n in names {
        let srv = Server::new(t, prefix, &n);
        for p in [srv.remote.base_prefix(), srv.remote.wals_prefix()] {
            let probe = ListRequest {
                prefix: p,
                max_keys: Some(1),
                ..Default::default()
            };
            let mut any = false;
            t.list_pages(&probe, |objs, _| {
                any = !objs.is_empty();
                false
            })
            .await?;
            if any {
                out.push(n.clone());
                break;
            }
        }
    }
    Ok(out)
}

/// Runs `replicate`.
pub(super) async fn run(
    o: &Options,
    cfg: &Config,
    t: &Transfer,
    to: &str,
    servers: Servers,
    opts: &ReplicateOptions,
    counts: &mut BTreeMap<&'static str, u64>,
) -> Result<Exit> {
    let (reader, tcfg, server_side) = target_engine(o, cfg, t, to).await?;
    // Objects move as stored (ciphertext stays ciphertext); backup.info and manifests are read
    // through the engines that open them, or an encrypted bucket would list no backup.
    let (source, target) = (t.raw(), reader.raw());
    tracing::info!(
        "replicating {} to {to} ({}), {}",
        cfg.location,
        tcfg.location,
        if server_side {
            "server-side copies"
        } else {
            "streamed through this host"
        }
    );
    let pair = Pair {
        source: source.clone(),
        reader: t.clone(),
        target: target.clone(),
        server_side: Arc::new(AtomicBool::new(server_side)),
        counts: Arc::new(Counts::default()),
        // The replica's `s3.stream_memory`: it is the side that streams (parts are its own).
        budget: Arc::new(RelayBudget::new(target.config().stream_memory)),
    };
    let names = match servers {
        Servers::One(s) => vec![s],
        Servers::All => stored_servers(&source, cfg.location.prefix()).await?,
    };
    let mut reports = Vec::new();
    let mut failed = false;
    for name in &names {
        let src = Server::new(t, cfg.location.prefix(), name);
        let dst = Server::new(&reader, tcfg.location.prefix(), name);
        let done = match replica::replicate_server(&pair, &src, &dst, to, opts).await {
            Ok(r) if opts.prune => prune(cfg, &tcfg, (&src, &dst, to), opts, r).await,
            other => other,
        };
        match done {
            Ok(r) => {
                failed |= !r.conflicts.is_empty();
                reports.push(r);
            }
            Err(e @ (Error::Interrupted | Error::Config(_))) => return Err(e),
            Err(e) if names.len() == 1 => return Err(e),
            Err(e) => {
                failed = true;
                eprintln!("barmans3 replicate {name}: {}", e.one_line());
            }
        }
    }
    let c = &pair.counts;
    for (k, v) in [
        ("server_side", &c.server_side),
        ("streamed", &c.streamed),
        ("bytes", &c.bytes),
        ("present", &c.present),
    ] {
        counts.insert(k, v.load(Ordering::Relaxed));
    }
    print(o, &reports, counts, &source, &target)?;
    Ok(if failed { Exit::Failed } else { Exit::Success })
}

/// `--prune` after a complete replication of one server.
async fn prune(
    cfg: &Config,
    tcfg: &Config,
    (src, dst, to): (&Server, &Server, &str),
    opts: &ReplicateOptions,
    mut report: replica::ServerReport,
) -> Result<replica::ServerReport> {
    let rules = crate::barman::ship::retention::Rules {
        min_keep: cfg.barman.min_remote_backups,
        max_deletes: cfg.barman.max_deletes,
        force: opts.force,
    };
    let locked = tcfg.s3.object_lock.is_some();
    let done = replica::prune::prune(src, dst, rules, locked).await?;
    report.pruned = Some(replica::Pruned {
        backups: done.deleted_backups,
        wals: done.deleted_wals.len() as u64,
        spared: done.spared,
        retained: done.retained,
    });
    // Holdings as they are now.
    let (s, d) = (
        replica::list_server(src).await?,
        replica::list_server(dst).await?,
    );
    report.stores = vec![replica::holdings("main", &s), replica::holdings(to, &d)];
    Ok(report)
}

fn print(
    o: &Options,
    reports: &[replica::ServerReport],
    counts: &BTreeMap<&'static str, u64>,
    source: &Transfer,
    target: &Transfer,
) -> Result<()> {
    if o.json {
        let doc = serde_json::json!({
            "servers": reports,
            "counts": counts,
            "source": source.stats().snapshot(),
            "target": target.stats().snapshot(),
        });
        return outln!("{doc}");
    }
    for r in reports {
        if o.verbosity != crate::logging::Verbosity::Quiet || !r.conflicts.is_empty() {
            eprintln!(
                "barmans3 replicate {}: {} backup(s) copied, {} WAL file(s) sent; lag {} object(s), {} bytes, {}s",
                r.server,
                r.copied.len(),
                r.wals_copied,
                r.lag.objects,
                r.lag.bytes,
                r.lag.seconds
            );
        }
        if let Some(p) = &r.pruned {
            eprintln!(
                "barmans3 replicate {}: pruned {} backup(s) ({}) and {} WAL file(s) from the replica",
                r.server,
                p.backups.len(),
                if p.backups.is_empty() {
                    "-".to_string()
                } else {
                    p.backups.join(",")
                },
                p.wals
            );
            for why in p.spared.iter().chain(&p.retained) {
                eprintln!(
                    "barmans3 replicate {}: kept on the replica: {why}",
                    r.server
                );
            }
        }
        for c in &r.conflicts {
            eprintln!(
                "barmans3 replicate {}: conflict: {} has another size on the replica; left as it is",
                r.server,
                crate::store::printable_key(c)
            );
        }
        for h in &r.stores {
            outln!(
                "{} {}: backups {} | WAL {}..{} ({} files)",
                r.server,
                h.store,
                if h.backups.is_empty() {
                    "-".to_string()
                } else {
                    h.backups.join(",")
                },
                h.wal_first.as_deref().unwrap_or("-"),
                h.wal_last.as_deref().unwrap_or("-"),
                h.wal_files
            )?;
        }
    }
    Ok(())
}

/// Each configured replica of each server `status` knows, with its lag (a replica that cannot
/// be opened or listed says why, the others still count).
pub(super) async fn views(
    o: &Options,
    cfg: &Config,
    t: &Transfer,
    s: &crate::barman::observe::admin::Status,
) -> Vec<replica::ReplicaView> {
    let mut out = Vec::new();
    if !s.bucket.reachable {
        return out;
    }
    for name in cfg.stores.keys() {
        let opened = target_engine(o, cfg, t, name).await;
        for v in &s.servers {
            let src = Server::new(t, cfg.location.prefix(), &v.server);
            out.push(match &opened {
                Ok((target, tcfg, _)) => {
                    let dst = Server::new(target, tcfg.location.prefix(), &v.server);
                    replica::view(&src, &dst, name).await
                }
                Err(e) => replica::ReplicaView {
                    server: v.server.clone(),
                    store: name.clone(),
                    lag: plan::Lag::default(),
                    error: Some(e.one_line()),
                },
            });
        }
    }
    out
}
