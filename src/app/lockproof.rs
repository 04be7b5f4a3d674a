//! `config check --lock-proof`: runs the Object Lock proof on the configured store and prints
//! what the store answered (stdout: one line per attempt, then `lock holds` or what it
//! allowed); exit 1 unless every attempt was refused while the lock was in force.

use std::sync::Arc;

use super::{Options, engine_builder};
use crate::config::Config;
use crate::error::{Error, Exit, Result};
use crate::store::asof::format_time;
use crate::store::lockproof::{Answer, CANARY_KEY, Verdict, prove, verdict};
use crate::transfer::Cancel;

/// The lock `s3.object_lock` configures, which the proof needs (checked before anything runs).
pub(super) fn configured(cfg: &Config) -> Result<crate::store::s3::ObjectLock> {
    cfg.s3.object_lock.ok_or_else(|| {
        Error::Config(
            "--lock-proof: s3.object_lock is not set: it proves the lock that key configures (mode and retain)".into(),
        )
    })
}

/// Proves the lock `s3.object_lock` configures.
pub(super) async fn lock_proof(o: &Options, cfg: &Config, cancel: Arc<Cancel>) -> Result<Exit> {
    let lock = configured(cfg)?;
    let (_, store) = engine_builder(o, cfg, cancel)
        .open_with_store(&cfg.location, &cfg.s3)
        .await?;
    let key = crate::store::join_key(cfg.location.prefix(), CANARY_KEY);
    let proof = prove(store.as_ref(), &key, lock.mode).await?;
    outln!(
        "lock proof: {} version {} ({:?} until {})",
        crate::store::printable_key(&proof.key),
        proof.version_id,
        proof.lock.mode,
        format_time(proof.lock.until)
    )?;
    for (attempt, answer) in &proof.answers {
        let said = match answer {
            Answer::Refused(why) => format!("refused ({why})"),
            Answer::Allowed => "ALLOWED".to_string(),
            Answer::Unknown(why) => format!("no verdict ({why})"),
        };
        outln!("{}: {said}", attempt.describe())?;
    }
    Ok(match verdict(&proof.answers) {
        Verdict::Holds => {
            outln!("lock holds")?;
            Exit::Success
        }
        Verdict::Allowed(what) => {
            let what: Vec<&str> = what.iter().map(|a| a.describe()).collect();
            outln!("lock does not hold: the store allowed {}", what.join(", "))?;
            Exit::Failed
        }
        Verdict::Inconclusive(_) => {
            outln!("lock not proven: the store's answers prove nothing (see above); run again")?;
            Exit::Failed
        }
    })
}
