//! The drill's steps, in order, each named so a failure says where it happened; and the
//! cleanup that follows every run, whatever ended it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::decide;
use super::pg::{self, Layout, Postmaster};
use super::scratch::{Scratch, claim, cleanup};
use super::sweep;
use super::{Database, DrillEnv, DrillOptions, DrillReport, QueryResult, Target};
use crate::barman::cloud;
use crate::barman::info::BackupInfo;
use crate::barman::recover::restore::{RestoreOptions, base_restore, manifest};
use crate::barman::remote::BucketLayout;
use crate::barman::server::Server;
use crate::barman::ship::fullsync::{RemoteBackup, remote_backups};
use crate::barman::wal::{self, WalKind};
use crate::error::{Error, Result};
use crate::store::ListRequest;

/// How often replay is polled.
const POLL: Duration = Duration::from_millis(500);

/// What the steps learn that later steps need.
#[derive(Debug, Default)]
struct Facts {
    id: String,
    begin_wal: Option<String>,
    seg_size: u64,
    bucket: BTreeMap<String, u64>,
    layout: Option<Layout>,
    user: Option<String>,
}

/// Runs a drill and always cleans up. The report is filled as far as the drill got; the
/// error names the step that failed.
pub async fn drill(srv: &Server, opts: &DrillOptions, env: &DrillEnv) -> (DrillReport, Result<()>) {
    let started = Instant::now();
    let mut scratch = Scratch::new(opts.dest.clone());
    let mut rep = DrillReport {
        server: srv.name.clone(),
        layout: srv.remote.layout().name().to_string(),
        dest: scratch.dest.display().to_string(),
        kept: opts.keep,
        ..Default::default()
    };
    let mut step = "pick the backup";
    let cancel = srv.t.cancel_flag().clone();
    let result = {
        let work = steps(srv, opts, env, &mut scratch, &mut rep, &mut step);
        tokio::pin!(work);
        tokio::select! {
            r = tokio::time::timeout(opts.timeout, &mut work) => r.unwrap_or_else(|_| Err(Error::Failed(format!(
                "the drill did not finish within --timeout {}", crate::units::human_duration(opts.timeout)
            )))),
            _ = cancel.cancelled() => Err(Error::Interrupted),
        }
    };
    tracing::info!("drill: clean up");
    let cleaned = cleanup(&mut scratch, opts.keep).await;
    let result = match (result, cleaned) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => {
            step = "clean up";
            Err(e)
        }
        (Ok(()), Ok(())) => Ok(()),
    };
    rep.total_seconds = started.elapsed().as_secs_f64();
    rep.finished_at = crate::clock::now();
    if let Some(t) = rep.restorable_up_to_epoch {
        rep.restorable_gap_seconds = Some((rep.finished_at as f64 - t).max(0.0));
    }
    rep.success = result.is_ok();
    if let Err(e) = &result {
        rep.failed_step = Some(step.to_string());
        rep.error = Some(e.one_line());
    }
    (rep, result)
}

async fn steps(
    srv: &Server,
    opts: &DrillOptions,
    env: &DrillEnv,
    scratch: &mut Scratch,
    rep: &mut DrillReport,
    step: &mut &'static str,
) -> Result<()> {
    if rustix::process::geteuid().is_root() {
        return Err(Error::Usage(
            "drill starts PostgreSQL, which refuses to run as root: run it as the PostgreSQL user (e.g. su postgres -c 'barmans3 drill …')".into(),
        ));
    }
    sweep::sweep_stale(scratch.given.then_some(scratch.dest.as_path())).await;
    let mut f = Facts::default();
    let need = prepare(srv, opts, env, rep, &mut f).await?;
    enter(step, "check free space");
    claim(scratch, need, &srv.name)?;
    rep.claimed = true;
    rep.dest = scratch.dest.display().to_string();
    enter(step, "restore the base backup");
    let t0 = Instant::now();
    let data = scratch.dest.join("data");
    let ropts = RestoreOptions {
        restore_command: Some(env.restore_command.clone()),
        pg_combinebackup: env.pg_combinebackup.clone(),
        decrypt: env.decrypt.clone(),
        ..Default::default()
    };
    let r = match srv.remote.layout() {
        BucketLayout::Barmans3 => base_restore(srv, &f.id, &data, &ropts).await?,
        BucketLayout::BarmanCloud => {
            cloud::restore::base_restore(srv, &f.id, &data, &ropts).await?
        }
    };
    rep.restored_bytes = r.bytes;
    rep.bucket_bytes = r.bytes;
    rep.restore_seconds = t0.elapsed().as_secs_f64();
    enter(step, "configure the scratch copy");
    let settings = configure(scratch, opts, rep, &mut f)?;
    enter(step, "start PostgreSQL");
    let t1 = Instant::now();
    let layout = f
        .layout
        .clone()
        .ok_or_else(|| Error::Failed("no layout".into()))?;
    scratch.pg = Some(Postmaster::start(&layout, &settings)?);
    enter(step, "replay the WAL");
    wait_for_promotion(scratch, &mut f).await?;
    rep.replay_seconds = t1.elapsed().as_secs_f64();
    enter(step, "check the end of the archive");
    end_of_replay(opts, rep, &f).await?;
    enter(step, "run the checks");
    let t2 = Instant::now();
    checks(opts, rep, &f, step).await?;
    integrity(scratch, opts, rep, &f, step).await?;
    rep.checks_seconds = t2.elapsed().as_secs_f64();
    Ok(())
}

/// pg_amcheck on the running copy, then pg_checksums on the stopped one.
async fn integrity(
    scratch: &mut Scratch,
    opts: &DrillOptions,
    rep: &mut DrillReport,
    f: &Facts,
    step: &mut &'static str,
) -> Result<()> {
    let (layout, user) = ready(f)?;
    rep.amcheck = Some(if !opts.amcheck {
        "skipped".into()
    } else {
        enter(step, "pg_amcheck");
        if pg::amcheck(layout, user).await? {
            "passed".into()
        } else {
            "not installed".into()
        }
    });
    let sums = pg::psql(
        layout,
        user,
        "postgres",
        "SHOW data_checksums",
        pg::PSQL_TIMEOUT,
    )
    .await?;
    if sums.trim() == "on" {
        enter(step, "pg_checksums --check");
        if let Some(pm) = scratch.pg.as_mut() {
            pm.stop().await?;
        }
        pg::checksums(layout).await?;
        rep.data_checksums = Some("verified".into());
    } else {
        rep.data_checksums = Some("off".into());
    }
    Ok(())
}

/// Names the step now running (for the failure line) and logs it.
fn enter(step: &mut &'static str, name: &'static str) {
    *step = name;
    tracing::info!("drill: {name}");
}

/// The backup, its binaries and the bucket's WAL: returns the free bytes the drill needs.
async fn prepare(
    srv: &Server,
    opts: &DrillOptions,
    env: &DrillEnv,
    rep: &mut DrillReport,
    f: &mut Facts,
) -> Result<u64> {
    let (b, info, listed_bytes) = chosen(srv, opts.backup.as_deref()).await?;
    rep.backup_id = Some(b.id.clone());
    rep.begin_wal.clone_from(&b.begin_wal);
    f.id.clone_from(&b.id);
    f.begin_wal.clone_from(&b.begin_wal);
    let major = info
        .get("version")
        .and_then(|v| v.parse::<u64>().ok())
        .map(decide::major_of_server_version);
    let bindir = find_bindir(env, major).await?;
    rep.pg_bindir = Some(bindir.display().to_string());
    f.seg_size = info
        .get("xlog_segment_size")
        .and_then(|v| v.parse().ok())
        .filter(|s: &u64| s.is_power_of_two())
        .unwrap_or(16 << 20);
    let wals = srv
        .t
        .list_all(&ListRequest {
            prefix: srv.remote.wals_prefix(),
            ..Default::default()
        })
        .await?;
    let cloud = srv.remote.layout() == BucketLayout::BarmanCloud;
    f.bucket = wals
        .into_iter()
        .filter_map(|o| {
            let stored = o.key.rsplit('/').next()?;
            // barman-cloud's names carry the compression.
            let name = if cloud {
                cloud::wal_name(stored)?
            } else {
                stored
            };
            wal::classify(name).map(|_| (name.to_string(), o.size))
        })
        .collect();
    let after = f
        .bucket
        .keys()
        .filter(|n| wal::classify(n) == Some(WalKind::Segment))
        .filter(|n| {
            b.begin_wal
                .as_deref()
                .is_none_or(|w| wal::compare(n, w).is_ge())
        })
        .count() as u64;
    let backup_bytes = [
        b.size.unwrap_or(0),
        listed_bytes,
        info.get("cluster_size")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    f.layout = Some(Layout {
        bindir,
        data: PathBuf::new(),
        sock: PathBuf::new(),
        log: PathBuf::new(),
        hba: PathBuf::new(),
        port: 0,
    });
    Ok(decide::space_needed(backup_bytes, after, f.seg_size))
}

/// The backup to drill in the server's layout, its backup.info, and the bytes its own
/// listing says it holds (our manifest's total; barman-cloud lists none beside Barman's size).
async fn chosen(srv: &Server, wanted: Option<&str>) -> Result<(RemoteBackup, BackupInfo, u64)> {
    match srv.remote.layout() {
        BucketLayout::Barmans3 => {
            let list = remote_backups(srv).await?;
            let b = decide::pick_backup(&list, wanted)?.clone();
            let (info, m) = manifest(srv, &b.id).await?;
            Ok((b, info, m.total_bytes))
        }
        BucketLayout::BarmanCloud => {
            let list: Vec<RemoteBackup> = cloud::list::backups(srv)
                .await?
                .iter()
                .map(cloud::list::CloudBackup::as_remote)
                .collect();
            let b = decide::pick_backup(&list, wanted)?.clone();
            let info = cloud::list::backup_info(srv, &b.id).await?.ok_or_else(|| {
                Error::Failed(format!("backup {}: its backup.info is gone", b.id))
            })?;
            Ok((b, info, 0))
        }
    }
}

/// The first candidate directory whose `postgres` is of the backup's major version.
async fn find_bindir(env: &DrillEnv, major: Option<u32>) -> Result<PathBuf> {
    let path = std::env::var_os("PATH");
    let candidates = decide::bindir_candidates(
        env.pg_bindir.as_deref(),
        env.pg_combinebackup.as_deref(),
        major,
        path.as_deref(),
    );
    for dir in &candidates {
        if let Some(v) = pg::version_of(dir).await {
            let found = decide::major_of_version_output(&v);
            if major.is_none() || found == major {
                return Ok(dir.clone());
            }
        }
    }
    Err(Error::Config(format!(
        "PostgreSQL{} server binaries (postgres and psql) were not found in {}: install them or set barman.pg_bindir",
        major.map_or(String::new(), |m| format!(" {m}")),
        candidates
            .iter()
            .take(4)
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Comments out what could reach outside, writes the private authentication file, and returns
/// the `-c` settings the server starts with.
fn configure(
    scratch: &Scratch,
    opts: &DrillOptions,
    rep: &mut DrillReport,
    f: &mut Facts,
) -> Result<Vec<(String, String)>> {
    let data = scratch.dest.join("data");
    let bindir = f
        .layout
        .as_ref()
        .map(|l| l.bindir.clone())
        .unwrap_or_default();
    let libdir = bindir.parent().map(|p| p.join("lib")).unwrap_or_default();
    let installed = |lib: &str| {
        let name = lib.trim_start_matches("$libdir/");
        [
            libdir.join(format!("{name}.so")),
            libdir.join("postgresql").join(format!("{name}.so")),
        ]
        .iter()
        .any(|p| p.is_file())
    };
    for file in ["postgresql.conf", "postgresql.auto.conf"] {
        let path = data.join(file);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if file == "postgresql.conf" {
                    // Kept outside the data directory on the source (Debian): PostgreSQL needs
                    // one; the command line carries what matters.
                    crate::fsutil::write_atomic(&path, b"# written by barmans3 drill\n")?;
                }
                continue;
            }
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        let (new, gone) = decide::neutralise(&text, &installed);
        if !gone.is_empty() {
            crate::fsutil::write_atomic(&path, new.as_bytes())?;
            rep.neutralised
                .extend(gone.into_iter().map(|l| format!("{file}: {l}")));
        }
    }
    let sock = scratch.dest.join("sock");
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&sock)
            .map_err(|e| Error::io(format!("create {}", sock.display()), e))?;
    }
    let hba = scratch.dest.join("pg_hba.conf");
    // Trust on the socket, in a directory only this user can enter; nothing over TCP.
    crate::fsutil::write_atomic(&hba, b"local all all trust\n")?;
    let layout = Layout {
        bindir,
        data,
        sock,
        log: scratch.dest.join("postgresql.log"),
        hba,
        port: pg::free_port()?,
    };
    let mut settings = pg::isolating_settings(&layout);
    match &opts.target {
        Target::End => {}
        Target::Time(t) => settings.push(("recovery_target_time".into(), t.clone())),
        Target::Lsn(l) => settings.push(("recovery_target_lsn".into(), l.clone())),
    }
    if opts.target != Target::End {
        settings.push(("recovery_target_action".into(), "promote".into()));
    }
    f.layout = Some(layout);
    Ok(settings)
}

/// Polls until PostgreSQL has left recovery; its exit before that is the failure, named from
/// its log.
async fn wait_for_promotion(scratch: &mut Scratch, f: &mut Facts) -> Result<()> {
    let layout = f
        .layout
        .clone()
        .ok_or_else(|| Error::Failed("no layout".into()))?;
    let candidates = pg::users();
    loop {
        if let Some(pm) = scratch.pg.as_mut()
            && let Some(status) = pm.exited()
        {
            let log = std::fs::read_to_string(&layout.log).unwrap_or_default();
            return Err(Error::Failed(
                decide::failure_from_log(&log).unwrap_or_else(|| {
                    format!(
                        "PostgreSQL exited during recovery ({status}); see {}",
                        layout.log.display()
                    )
                }),
            ));
        }
        for u in candidates
            .iter()
            .filter(|u| f.user.as_ref().is_none_or(|k| k == *u))
        {
            match pg::psql(
                &layout,
                u,
                "postgres",
                "SELECT pg_is_in_recovery()",
                pg::PSQL_TIMEOUT,
            )
            .await
            {
                Ok(v) => {
                    f.user = Some(u.clone());
                    if v.trim() == "f" {
                        return Ok(());
                    }
                    break;
                }
                Err(e) if e.to_string().contains("does not exist") => continue,
                Err(_) => break,
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Where replay ended, what it proves restorable, and (to the end of the archive) whether
/// the bucket holds later WAL that was not replayed.
async fn end_of_replay(opts: &DrillOptions, rep: &mut DrillReport, f: &Facts) -> Result<()> {
    let (layout, user) = ready(f)?;
    let q = |sql: &'static str| pg::psql(layout, user, "postgres", sql, pg::PSQL_TIMEOUT);
    let seg: u64 = q("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'")
        .await?
        .trim()
        .parse()
        .unwrap_or(f.seg_size);
    let current = q("SELECT pg_walfile_name(pg_current_wal_lsn())").await?;
    let tli = u32::from_str_radix(current.get(..8).unwrap_or(""), 16)
        .map_err(|_| Error::Failed(format!("unexpected WAL file name {current:?}")))?;
    let hist_path = layout
        .data
        .join("pg_wal")
        .join(format!("{tli:08X}.history"));
    let hist = std::fs::read_to_string(&hist_path)
        .map_err(|e| Error::io(format!("read {}", hist_path.display()), e))?;
    let (parent, lsn) = decide::history_last(&hist)
        .ok_or_else(|| Error::Failed(format!("{} has no entry", hist_path.display())))?;
    let stop = decide::segment_name(parent, lsn, seg);
    rep.end_lsn = Some(format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF));
    let per_log = 0x1_0000_0000 / seg;
    if let Some(begin) = &f.begin_wal
        && let (Some(a), Some(z)) = (
            wal::segment_number(begin, per_log),
            wal::segment_number(&stop, per_log),
        )
    {
        rep.segments_replayed = Some(z.saturating_sub(a) + 1);
        rep.bucket_bytes += f
            .bucket
            .iter()
            .filter(|(n, _)| wal::compare(n, begin).is_ge() && wal::compare(n, &stop).is_le())
            .map(|(_, s)| s)
            .sum::<u64>();
    }
    rep.end_segment = Some(stop.clone());
    let ts = q("SELECT coalesce(pg_last_xact_replay_timestamp()::text, '') || chr(31) || coalesce(extract(epoch FROM pg_last_xact_replay_timestamp())::text, '')").await?;
    if let Some((t, e)) = ts.split_once('\x1f')
        && !t.is_empty()
    {
        rep.restorable_up_to = Some(t.to_string());
        rep.restorable_up_to_epoch = e.parse().ok();
    }
    if opts.target == Target::End {
        let names: Vec<String> = f.bucket.keys().cloned().collect();
        if let Some(gap) = decide::replay_gap(&stop, &names, seg) {
            return Err(Error::Failed(gap));
        }
    }
    Ok(())
}

fn ready(f: &Facts) -> Result<(&Layout, &str)> {
    match (&f.layout, &f.user) {
        (Some(l), Some(u)) => Ok((l, u)),
        _ => Err(Error::Failed("PostgreSQL is not ready".into())),
    }
}

/// A connection, every database's name and size, then each `--query`.
async fn checks(
    opts: &DrillOptions,
    rep: &mut DrillReport,
    f: &Facts,
    step: &mut &'static str,
) -> Result<()> {
    let (layout, user) = ready(f)?;
    let dbs = pg::psql(
        layout,
        user,
        "postgres",
        "SELECT datname, pg_database_size(oid) FROM pg_database ORDER BY datname",
        pg::PSQL_TIMEOUT,
    )
    .await?;
    rep.databases = dbs
        .lines()
        .filter_map(|l| {
            let (n, s) = l.split_once('\x1f')?;
            Some(Database {
                name: n.to_string(),
                bytes: s.trim().parse().ok()?,
            })
        })
        .collect();
    enter(step, "run --query");
    for sql in &opts.queries {
        let out = pg::psql(layout, user, &opts.dbname, sql, pg::PSQL_TIMEOUT)
            .await
            .map_err(|e| Error::Failed(format!("--query {sql:?}: {}", e.one_line())))?;
        let first = out
            .lines()
            .next()
            .and_then(|l| l.split('\x1f').next())
            .unwrap_or("")
            .to_string();
        rep.queries.push(QueryResult {
            sql: sql.clone(),
            first_value: first,
        });
    }
    Ok(())
}
