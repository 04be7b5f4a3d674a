//! `config check --lock-proof`: runs the Object Lock proof on the configured store and prints
//! what the store answered (stdout: one line per control and per attempt, then `lock holds` or
//! what it allowed); exit 1 unless every attempt was refused by the lock while it was in force.

use std::sync::Arc;

use super::{Options, engine_builder};
use crate::barman::observe::lockcheck::{self, LockProofRecord};
use crate::config::Config;
use crate::error::{Error, Exit, Result};
use crate::store::asof::format_time;
use crate::store::lockproof::{Answer, CANARY_KEY, Permitted, Proven, Verdict, prove, verdict};
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
    let proof = match prove(store.as_ref(), &key, lock.mode).await? {
        Proven::Ran(p) => p,
        Proven::NoLock(why) => {
            outln!("lock does not hold: {why}")?;
            return Ok(Exit::Failed);
        }
    };
    outln!(
        "lock proof: {} version {} ({:?} until {})",
        crate::store::printable_key(&proof.key),
        proof.version_id,
        proof.lock.mode,
        format_time(proof.lock.until)
    )?;
    for (what, permitted) in &proof.controls {
        let said = match permitted {
            Permitted::Yes => "allowed".to_string(),
            Permitted::No(how) => format!("denied ({how})"),
            Permitted::Unknown(why) => format!("no verdict ({why})"),
        };
        outln!("control, {what}: {said}")?;
    }
    for (attempt, answer) in &proof.answers {
        let said = match answer {
            Answer::Refused(why) => format!("refused ({why})"),
            Answer::Allowed => "ALLOWED".to_string(),
            Answer::Unknown(why) => format!("no verdict ({why})"),
        };
        outln!("{}: {said}", attempt.describe())?;
    }
    let (holds, _, line) = conclusion(&verdict(&proof.answers));
    outln!("{line}")?;
    Ok(if holds { Exit::Success } else { Exit::Failed })
}

/// A verdict as (holds, something was allowed, its line).
fn conclusion(v: &Verdict) -> (bool, bool, String) {
    match v {
        Verdict::Holds => (true, false, "lock holds".into()),
        Verdict::Allowed(what) => {
            let what: Vec<&str> = what.iter().map(|a| a.describe()).collect();
            (
                false,
                true,
                format!("lock does not hold: the store allowed {}", what.join(", ")),
            )
        }
        Verdict::Inconclusive(why) => (
            false,
            false,
            match why.first() {
                Some((a, w)) => format!("lock not proven: {}: {w}", a.describe()),
                None => "lock not proven: the store's answers prove nothing".into(),
            },
        ),
    }
}

/// `check`'s proof: the last record while it is less than a day old (an hour when it proved
/// nothing or could not run), else a new proof, recorded either way.
pub(super) async fn daily(
    o: &Options,
    cfg: &Config,
    cancel: Arc<Cancel>,
    last: Option<LockProofRecord>,
) -> Option<LockProofRecord> {
    let lock = cfg.s3.object_lock?;
    let now = crate::clock::now();
    if !lockcheck::due(last.as_ref(), now) {
        return last;
    }
    let run = async {
        let (_, store) = engine_builder(o, cfg, cancel)
            .open_with_store(&cfg.location, &cfg.s3)
            .await?;
        let key = crate::store::join_key(cfg.location.prefix(), CANARY_KEY);
        prove(store.as_ref(), &key, lock.mode).await
    };
    let store = crate::barman::ship::state::store_id(cfg);
    match run.await {
        Ok(proven) => {
            let (holds, allowed, line) = match proven {
                Proven::Ran(proof) => conclusion(&verdict(&proof.answers)),
                Proven::NoLock(why) => (false, true, format!("lock does not hold: {why}")),
            };
            let rec = LockProofRecord {
                store,
                at: now,
                holds,
                allowed,
                line,
            };
            if let Err(e) = lockcheck::save(&cfg.state.dir, &rec) {
                tracing::warn!("recording the lock proof: {}", e.one_line());
            }
            Some(rec)
        }
        // Recorded too, so the next checks wait before writing another canary.
        Err(e) => {
            let rec = LockProofRecord {
                store,
                at: now,
                holds: false,
                allowed: false,
                line: format!("lock not proven: {}", e.one_line()),
            };
            if let Err(e) = lockcheck::save(&cfg.state.dir, &rec) {
                tracing::warn!("recording the lock proof: {}", e.one_line());
            }
            Some(rec)
        }
    }
}
