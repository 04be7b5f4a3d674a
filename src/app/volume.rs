//! Runs `volume put|get|ls|status|rm`: config, engine (with the put's status tracker watching
//! its requests), one lock per volume for the commands that change it, reports.

use std::sync::Arc;

use super::{load_config, summary};
use crate::cli::invocation::Options;
use crate::config::Config;
use crate::error::{Error, Exit, Result};
use crate::store::Location;
use crate::transfer::{Cancel, Transfer};
use crate::volume::status::{self, Tracker};
use crate::volume::{PutRequest, Sink, Source, Volume, VolumeAction, VolumeName, admin, get, put};

pub(super) async fn run(o: Options, action: VolumeAction, cancel: Arc<Cancel>) -> Result<Exit> {
    let cfg = load_config(&o)?;
    let marker = matches!(cfg.location, Location::S3 { .. });
    let vol = |name: &VolumeName| Volume {
        location: cfg.location.to_string(),
        prefix: cfg.location.prefix().to_string(),
        name: name.clone(),
        marker,
    };
    match action {
        VolumeAction::Status(Some(name))
            if status::load(&status::state_path(&cfg.state.dir, &name))?.is_none() =>
        {
            let t = engine(&o, &cfg, cancel, None).await?;
            bucket_status(&o, &t, &vol(&name)).await
        }
        VolumeAction::Status(name) => status_report(&o, &cfg, name.as_ref()),
        VolumeAction::Put(req) => put_cmd(&o, &cfg, cancel, &vol(&req.name), &req).await,
        VolumeAction::Get(req) => {
            let t = engine(&o, &cfg, cancel, None).await?;
            let r = get::get(&t, &vol(&req.name), &req)
                .await
                .map_err(stdout_closed)?;
            tracing::info!("volume {}: {} bytes written, verified", r.volume, r.bytes);
            // Standard output carries the volume's bytes: no report there.
            match req.dest {
                Sink::Stdout => Ok(Exit::Success),
                Sink::File(_) => report(&o, &t, &r),
            }
        }
        VolumeAction::Ls(None) => {
            let t = engine(&o, &cfg, cancel, None).await?;
            let (location, prefix) = (cfg.location.to_string(), cfg.location.prefix());
            let all = admin::list_volumes(&t, &location, prefix, marker).await?;
            if o.json {
                outln!("{}", json(&all)?)?;
            }
            for s in all.iter().filter(|_| !o.json) {
                outln!(
                    "{:<32} {:>5} {:>14}  {}",
                    s.volume,
                    s.chunks,
                    s.bytes,
                    s.state
                )?;
            }
            Ok(Exit::Success)
        }
        VolumeAction::Ls(Some(name)) => {
            let t = engine(&o, &cfg, cancel, None).await?;
            ls_volume(&o, &t, &vol(&name)).await
        }
        VolumeAction::Rm { name, force } => {
            let v = vol(&name);
            let _lock = lock(&cfg, &v.name)?;
            let t = engine(&o, &cfg, cancel, None).await?;
            let r = admin::rm(&t, &v, force, &cfg.state.dir).await?;
            tracing::info!("volume {}: {} chunks deleted", r.volume, r.chunks);
            report(&o, &t, &r)
        }
    }
}

async fn put_cmd(
    o: &Options,
    cfg: &Config,
    cancel: Arc<Cancel>,
    v: &Volume,
    req: &PutRequest,
) -> Result<Exit> {
    let _lock = lock(cfg, &v.name)?;
    let path = status::state_path(&cfg.state.dir, &v.name);
    let tracker = Arc::new(Tracker::new(path, v.dir())?);
    let t = engine(o, cfg, cancel, Some(tracker.clone())).await?;
    if let Source::File(p) = &req.source
        && let Ok(m) = std::fs::metadata(p)
    {
        t.progress().add_work(0, m.len());
    }
    let r = put::put(&t, v, req, &tracker).await?;
    tracing::info!(
        "volume {}: {} chunks, {} bytes ({} sent, {} already stored), verified",
        r.volume,
        r.chunks,
        r.total,
        r.chunks_sent,
        r.chunks_reused
    );
    report(o, &t, &r)
}

/// `volume status VOL` when no put of it ran here (a volume Bareos writes through
/// barmans3-dplcompat or another program): what the bucket holds.
async fn bucket_status(o: &Options, t: &Transfer, v: &Volume) -> Result<Exit> {
    let (s, _) = admin::list_chunks(t, v).await?;
    if o.json {
        outln!("{}", json(&s)?)?;
    } else {
        let what = format!("{} chunks, {} bytes, {}", s.chunks, s.bytes, s.state);
        outln!("Volume {}: {what} (no put of it from this host)", s.volume)?;
    }
    Ok(Exit::Success)
}

async fn ls_volume(o: &Options, t: &Transfer, v: &Volume) -> Result<Exit> {
    let (s, chunks) = admin::list_chunks(t, v).await?;
    if o.json {
        let v = serde_json::json!({ "summary": s, "chunks": chunks });
        outln!("{v}")?;
        return Ok(Exit::Success);
    }
    for c in chunks {
        let crc = c.crc32c.as_deref().unwrap_or("-");
        outln!("{}/{} {:>14} {crc}", s.volume, c.chunk, c.size)?;
    }
    eprintln!(
        "{}: {} chunks, {} bytes, {}",
        s.volume, s.chunks, s.bytes, s.state
    );
    Ok(Exit::Success)
}

/// The engine of [`super::engine`], with a put's tracker watching every request.
async fn engine(
    o: &Options,
    cfg: &Config,
    cancel: Arc<Cancel>,
    tracker: Option<Arc<Tracker>>,
) -> Result<Transfer> {
    let mut b = super::moving_builder(o, cfg, cancel)?;
    if let Some(tr) = tracker {
        b = b.observer(tr);
    }
    b.open(&cfg.location, &cfg.s3).await
}

/// One put or rm of a volume at a time on this host (exit 75 for the second).
fn lock(cfg: &Config, name: &VolumeName) -> Result<std::fs::File> {
    let dir = cfg.state.dir.join("volume");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    crate::lockfile::try_lock_file(
        &dir.join(format!(".{}.lock", name.file_stem())),
        &format!("volume put or rm of {name}"),
    )
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Failed(e.to_string()))
}

/// With `--json`, the report and then the run summary, one JSON line each.
fn report<T: serde::Serialize>(o: &Options, t: &Transfer, r: &T) -> Result<Exit> {
    if o.json {
        outln!("{}", json(r)?)?;
    }
    summary(o, t, &Default::default())?;
    Ok(Exit::Success)
}

fn stdout_closed(e: Error) -> Error {
    match e {
        Error::Io { ref source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe => {
            Error::StdoutClosed
        }
        e => e,
    }
}

/// `volume status [VOL]`: Bareos' `status storage` text, or the state files as they are.
fn status_report(o: &Options, cfg: &Config, name: Option<&VolumeName>) -> Result<Exit> {
    let dir = &cfg.state.dir;
    let Some(name) = name else {
        let all = status::load_all(dir)?;
        if o.json {
            outln!("{}", json(&all.values().collect::<Vec<_>>())?)?;
        } else if all.is_empty() {
            eprintln!("barmans3: no volume put has run from this host");
        } else {
            let texts: Vec<String> = all
                .values()
                .map(|s| status::render(s, status::alive(s.pid)))
                .collect();
            out!("{}", texts.join("\n"))?;
        }
        return Ok(Exit::Success);
    };
    let path = status::state_path(dir, name);
    let Some(state) = status::load(&path)? else {
        return Err(Error::Failed(format!(
            "no put of volume {name} has run from this host (no {})",
            path.display()
        )));
    };
    if o.json {
        let raw =
            std::fs::read(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        outln!("{}", String::from_utf8_lossy(&raw).trim_end())?;
    } else {
        out!("{}", status::render(&state, status::alive(state.pid)))?;
    }
    Ok(Exit::Success)
}
