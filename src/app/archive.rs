//! Runs `archive`: config, engine, the dry run's plan on stdout, the summary, and the exit code
//! from [`crate::gluster::Report::exit`].

use std::sync::Arc;

use crate::cli::invocation::Options;
use crate::error::{Exit, Result};
use crate::gluster::{ArchiveOptions, Env, Planned};
use crate::store::printable_key;
use crate::transfer::Cancel;

pub(super) async fn run(o: Options, action: ArchiveOptions, cancel: Arc<Cancel>) -> Result<Exit> {
    let cfg = super::load_config(&o)?;
    let t = super::moving_builder(&o, &cfg, cancel)?
        .open(&cfg.location, &cfg.s3)
        .await?;
    let env = Env {
        transfer: t.clone(),
        location: cfg.location.clone(),
        s3: cfg.s3.clone(),
        state_dir: cfg.state.dir.clone(),
    };
    let json = o.json;
    let plan = |p: &Planned| {
        if json {
            Ok(())
        } else {
            // Names from the brick: one line each, whatever a name holds.
            outln!(
                "{}\t{}\t{}",
                p.size,
                printable_key(&p.path),
                printable_key(&p.key)
            )
        }
    };
    let report = crate::gluster::archive(action, env, plan).await?;
    if o.json {
        let stats = t.stats().snapshot();
        let mut v = serde_json::to_value(&report).unwrap_or_default();
        if let (Some(obj), Ok(serde_json::Value::Object(s))) =
            (v.as_object_mut(), serde_json::to_value(&stats))
        {
            obj.extend(s);
        }
        outln!("{v}")?;
    } else {
        tracing::info!("archive: {report}");
    }
    Ok(report.exit())
}
