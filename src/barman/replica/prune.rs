//! `replicate --prune`: the replica follows the main store's deletions, under full-sync's own
//! rules ([`retention::plan`]) with the main store in the place of Barman's directory. A
//! backup or WAL object goes from the replica only when the main store no longer has it and
//! full-sync's rules would let it go (the newest backup restorable on the replica first, no
//! incremental left without its parent, `barman.min_remote_backups` restorable backups kept,
//! at most `barman.max_deletes` backups without `--force`), and never while the replica's own
//! Object Lock retains it. A main store that lists no backup at all is ambiguous (another
//! prefix, a wrong endpoint, a bucket being rebuilt): nothing is deleted.

use std::collections::BTreeSet;

use crate::barman::server::Server;
use crate::barman::ship::fullsync::{
    Basis, FullSyncReport, RemoteBackup, chain_gap, delete, held, plan_deletions, remote_backups,
    wal_objects,
};
use crate::barman::ship::retention::{self, Deletions, Held, Local, Rules};
use crate::error::{Error, Result};

/// What the replica's deletions are planned from: the main store's backups stand for what
/// Barman holds. Err, and nothing deleted, when the plan is refused.
pub fn plan(
    main: &[RemoteBackup],
    replica: &[Held],
    replica_wals: &[(String, String)],
    main_wals: &BTreeSet<String>,
    rules: Rules,
) -> Result<(Local, Deletions)> {
    if main.is_empty() {
        return Err(Error::Failed(
            "refusing to prune: the main store lists no backup of this server (wrong prefix or store?); nothing was deleted".into(),
        ));
    }
    let newest_done = main
        .iter()
        .rev()
        .find(|b| b.status == "DONE" && chain_gap(main, &b.id).is_none())
        .map(|b| b.id.clone());
    let local = Local {
        ids: main.iter().map(|b| b.id.clone()).collect(),
        newest_done,
    };
    let all = Rules {
        force: true,
        ..rules
    };
    let planned = retention::plan(
        replica,
        &local,
        replica_wals,
        |r| main_wals.contains(r),
        all,
    )?;
    if planned.backups.len() > rules.max_deletes && !rules.force {
        return Err(Error::Failed(format!(
            "refusing to prune {} backups from the replica (more than barman.max_deletes = {}): {}; run with --force to allow it",
            planned.backups.len(),
            rules.max_deletes,
            planned.backups.join(", ")
        )));
    }
    Ok((local, planned))
}

/// Prunes the replica `dst` of server `src` and deletes what the plan and the replica's locks
/// allow; `locked`: Object Lock is configured for the replica (its bucket is asked as well).
pub async fn prune(
    src: &Server,
    dst: &Server,
    rules: Rules,
    locked: bool,
) -> Result<FullSyncReport> {
    let main = remote_backups(src).await?;
    let replica: Vec<Held> = remote_backups(dst).await?.iter().map(held).collect();
    let replica_wals = wal_objects(dst).await?;
    let main_wals: BTreeSet<String> = wal_objects(src)
        .await?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let (local, _) = plan(&main, &replica, &replica_wals, &main_wals, rules)
        .map_err(|e| Error::Failed(format!("server {}: {}", src.name, e.one_line())))?;
    let basis = Basis {
        held: &replica,
        local,
        objects: &replica_wals,
        rules: Rules {
            force: true,
            ..rules
        },
        locked: locked || dst.t.object_lock_status().await?.is_some(),
    };
    let mut report = FullSyncReport::default();
    plan_deletions(dst, basis, |r| main_wals.contains(r), &mut report).await?;
    delete(dst, &report).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn main(ids: &[&str]) -> Vec<RemoteBackup> {
        ids.iter()
            .map(|id| RemoteBackup::sketch(id, "DONE", true, None))
            .collect()
    }

    fn replica(ids: &[(&str, &str)]) -> Vec<Held> {
        ids.iter()
            .map(|(id, wal)| Held {
                id: id.to_string(),
                complete: true,
                status: "DONE".into(),
                begin_wal: Some(wal.to_string()),
                parent: None,
            })
            .collect()
    }

    fn wals(names: &[&str]) -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| {
                (
                    format!("r/wals/{}/{n}", &n[..16]),
                    format!("{}/{n}", &n[..16]),
                )
            })
            .collect()
    }

    const W1: &str = "000000010000000000000001";
    const W2: &str = "000000010000000000000002";
    const W3: &str = "000000010000000000000003";

    fn rules(min_keep: usize, max_deletes: usize) -> Rules {
        Rules {
            min_keep,
            max_deletes,
            force: false,
        }
    }

    #[test]
    fn only_what_the_main_store_no_longer_has_and_the_rules_let_go() {
        let rep = replica(&[("A", W1), ("B", W2), ("C", W3)]);
        let rwals = wals(&[W1, W2, W3]);
        // The main store deleted A and its first WAL: A and W1 go.
        let mwals: BTreeSet<String> = wals(&[W2, W3]).into_iter().map(|(_, r)| r).collect();
        let (_, d) = plan(&main(&["B", "C"]), &rep, &rwals, &mwals, rules(1, 5)).expect("plan");
        assert_eq!(d.backups, ["A"]);
        assert_eq!(d.wals, [rwals[0].0.clone()]);
        // The main store still has W1 (another backup of it needs it): the WAL stays.
        let all: BTreeSet<String> = rwals.iter().map(|(_, r)| r.clone()).collect();
        let (_, d) = plan(&main(&["B", "C"]), &rep, &rwals, &all, rules(1, 5)).expect("plan");
        assert_eq!(d.backups, ["A"]);
        assert!(d.wals.is_empty(), "{d:?}");
        // min_keep: two restorable backups must remain on the replica.
        let (_, d) = plan(&main(&["C"]), &rep, &rwals, &mwals, rules(2, 5)).expect("plan");
        assert_eq!(d.backups, ["A"]);
    }

    #[test]
    fn nothing_goes_while_the_replica_lags_or_the_main_store_is_empty() {
        let rep = replica(&[("A", W1), ("B", W2)]);
        let rwals = wals(&[W1, W2]);
        let none = BTreeSet::new();
        // The main store's newest backup C is not on the replica yet.
        let (_, d) = plan(&main(&["B", "C"]), &rep, &rwals, &none, rules(1, 5)).expect("plan");
        assert!(d.backups.is_empty() && d.wals.is_empty(), "{d:?}");
        assert!(!d.spared.is_empty());
        // An empty main store proves nothing.
        let e = plan(&[], &rep, &rwals, &none, rules(1, 5)).expect_err("empty");
        assert!(e.to_string().contains("nothing was deleted"), "{e}");
        // The main store's newest backup incomplete there: its newest DONE one must be on
        // the replica (B is), and A goes.
        let mut m = main(&["B", "C"]);
        m[1].complete = false;
        let (_, d) = plan(&m, &rep, &rwals, &none, rules(1, 5)).expect("plan");
        assert_eq!(d.backups, ["A"]);
    }

    #[test]
    fn more_than_max_deletes_needs_force() {
        let rep = replica(&[("A", W1), ("B", W2), ("C", W3)]);
        let rwals = wals(&[W1, W2, W3]);
        let none = BTreeSet::new();
        let e = plan(&main(&["C"]), &rep, &rwals, &none, rules(1, 1)).expect_err("limit");
        assert!(e.to_string().contains("--force"), "{e}");
        let forced = Rules {
            force: true,
            ..rules(1, 1)
        };
        let (_, d) = plan(&main(&["C"]), &rep, &rwals, &none, forced).expect("forced");
        assert_eq!(d.backups, ["A", "B"]);
    }
}
