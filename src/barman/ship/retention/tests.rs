//! The retention table: every rule that guards a deletion, case by case.

use super::*;

fn b(id: &str, begin: &str) -> Held {
    Held {
        id: id.into(),
        complete: true,
        status: "DONE".into(),
        begin_wal: Some(begin.into()),
        parent: None,
    }
}
fn inc(id: &str, begin: &str, parent: &str) -> Held {
    Held {
        parent: Some(parent.into()),
        ..b(id, begin)
    }
}
fn incomplete(id: &str) -> Held {
    Held {
        complete: false,
        ..b(id, "000000010000000000000001")
    }
}
/// Barman holds `v`, all DONE.
fn ids(v: &[&str]) -> Local {
    Local {
        ids: v.iter().map(|s| s.to_string()).collect(),
        newest_done: v.iter().max().map(|s| s.to_string()),
    }
}
fn wals(names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| {
            let rel = if n.ends_with(".history") {
                n.to_string()
            } else {
                format!("{}/{n}", &n[..16])
            };
            (format!("p/pg/wals/{rel}"), rel)
        })
        .collect()
}
const R: Rules = Rules {
    min_keep: 1,
    max_deletes: 3,
    force: false,
};

const W1: &str = "000000010000000000000001";
const W3: &str = "000000010000000000000003";
const W5: &str = "000000010000000000000005";
const W7: &str = "000000010000000000000007";

/// (case, remote, local ids, rules) → deleted backups.
#[test]
fn backups_are_deleted_only_under_every_rule() {
    type Case<'a> = (&'a str, Vec<Held>, Vec<&'a str>, Rules, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "gone locally, older: deleted",
            vec![b("A", W1), b("B", W3)],
            vec!["B"],
            R,
            vec!["A"],
        ),
        (
            "still local: kept",
            vec![b("A", W1), b("B", W3)],
            vec!["A", "B"],
            R,
            vec![],
        ),
        (
            "the newest is never deleted",
            vec![b("A", W1), b("B", W3)],
            vec!["A"],
            R,
            vec![],
        ),
        (
            "min_keep 2 spares the newest candidate",
            vec![b("A", W1), b("B", W3), b("C", W5)],
            vec!["C"],
            Rules { min_keep: 2, ..R },
            vec!["A"],
        ),
        (
            "min_keep counts only complete DONE",
            vec![b("A", W1), incomplete("B"), b("C", W5)],
            vec!["C"],
            Rules { min_keep: 2, ..R },
            vec!["B"],
        ),
        (
            "incomplete leftovers go",
            vec![incomplete("A"), b("B", W3)],
            vec!["B"],
            R,
            vec!["A"],
        ),
        (
            "a parent stays while its child stays",
            vec![b("A", W1), inc("B", W3, "A"), b("C", W5)],
            vec!["B", "C"],
            R,
            vec![],
        ),
        (
            "parent and child go together",
            vec![b("A", W1), inc("B", W3, "A"), b("C", W5)],
            vec!["C"],
            R,
            vec!["A", "B"],
        ),
        (
            "a chain is spared from its leaf",
            vec![b("A", W1), inc("B", W3, "A"), inc("C", W5, "B"), b("D", W7)],
            vec!["C", "D"],
            R,
            vec![],
        ),
        (
            "the newest local DONE backup is busy, partly uploaded: nothing goes, not the parent of a kept orphan",
            vec![b("FULL2", W1), inc("INC3", W3, "FULL2"), incomplete("NEW")],
            vec!["NEW"],
            R,
            vec![],
        ),
        (
            "the same, four more pending over max_deletes: nothing goes and no error",
            vec![
                b("A", W1),
                b("B", W1),
                b("C", W1),
                b("D", W1),
                b("FULL2", W1),
                inc("INC3", W3, "FULL2"),
                incomplete("NEW"),
            ],
            vec!["NEW"],
            R,
            vec![],
        ),
        (
            "the newest local DONE backup not in the bucket at all: nothing goes",
            vec![b("A", W1), b("B", W3)],
            vec!["C"],
            R,
            vec![],
        ),
        (
            "the newest local DONE backup uploaded: parent and child go together",
            vec![b("FULL2", W1), inc("INC3", W3, "FULL2"), b("NEW", W5)],
            vec!["NEW"],
            R,
            vec!["FULL2", "INC3"],
        ),
        (
            "min_keep 2 spares a whole chain, never its leaf alone",
            vec![b("A", W1), inc("B", W3, "A"), inc("C", W3, "B"), b("D", W5)],
            vec!["D"],
            Rules { min_keep: 2, ..R },
            vec![],
        ),
        (
            "min_keep 2 spares the newest whole chain, older ones go",
            vec![
                b("A", W1),
                inc("B", W1, "A"),
                b("C", W3),
                inc("D", W3, "C"),
                b("E", W5),
            ],
            vec!["E"],
            Rules { min_keep: 2, ..R },
            vec!["A", "B"],
        ),
        (
            "an incremental without its parent is not restorable and is not kept for min_keep",
            vec![incomplete("A"), inc("B", W3, "A"), b("C", W5)],
            vec!["C"],
            Rules { min_keep: 2, ..R },
            vec!["A", "B"],
        ),
        (
            "an orphan whose parent is gone from the bucket is not kept for min_keep",
            vec![inc("B", W3, "A"), b("C", W5)],
            vec!["C"],
            Rules { min_keep: 2, ..R },
            vec!["B"],
        ),
        (
            "force lifts the cap",
            vec![b("A", W1), b("B", W1), b("C", W1), b("D", W1), b("E", W3)],
            vec!["E"],
            Rules { force: true, ..R },
            vec!["A", "B", "C", "D"],
        ),
    ];
    for (name, remote, local, rules, want) in cases {
        let d = plan(&remote, &ids(&local), &[], |_| false, rules).expect(name);
        assert_eq!(d.backups, want, "{name}");
    }
}

#[test]
fn no_local_done_backup_deletes_nothing() {
    let remote = vec![b("A", W1), b("B", W3)];
    let local = Local {
        ids: ["B".to_string()].into(),
        newest_done: None,
    };
    let wal_objects = wals(&[W1]);
    let d = plan(&remote, &local, &wal_objects, |_| false, R).expect("plan");
    assert!(d.backups.is_empty() && d.wals.is_empty(), "{d:?}");
    assert!(d.spared[0].contains("no DONE backup"), "{:?}", d.spared);
}

#[test]
fn a_busy_newest_backup_blocks_every_deletion_and_says_so() {
    let remote = vec![b("FULL2", W1), inc("INC3", W3, "FULL2"), incomplete("NEW")];
    let wal_objects = wals(&[W1]);
    let d = plan(&remote, &ids(&["NEW"]), &wal_objects, |_| false, R).expect("plan");
    assert!(d.backups.is_empty() && d.wals.is_empty(), "{d:?}");
    assert!(
        d.spared
            .iter()
            .any(|s| s.contains("NEW, the newest backup Barman has DONE")),
        "{:?}",
        d.spared
    );
}

/// After any plan, every remaining incremental has its parent, and at least min_keep
/// restorable backups remain whenever that many were restorable before.
#[test]
fn no_plan_leaves_an_orphan_or_fewer_restorable_than_min_keep() {
    let shapes: Vec<Vec<Held>> = vec![
        vec![b("A", W1), inc("B", W3, "A"), inc("C", W5, "B"), b("D", W7)],
        vec![b("A", W1), inc("B", W3, "A"), b("C", W5), inc("D", W7, "C")],
        vec![b("A", W1), b("B", W3), inc("C", W5, "B"), inc("D", W7, "B")],
    ];
    let names = ["A", "B", "C", "D"];
    for remote in &shapes {
        for mask in 1u32..16 {
            let local: Vec<&str> = (0..4)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| names[i])
                .collect();
            for min_keep in 1..=3 {
                let rules = Rules {
                    min_keep,
                    force: true,
                    ..R
                };
                let d = plan(remote, &ids(&local), &[], |_| false, rules).expect("plan");
                let staying: Vec<&Held> = remote
                    .iter()
                    .filter(|b| !d.backups.contains(&b.id))
                    .collect();
                for s in &staying {
                    if let Some(p) = &s.parent {
                        assert!(
                            staying.iter().any(|x| &x.id == p),
                            "{remote:?} local {local:?} min_keep {min_keep}: {} left without {p}",
                            s.id
                        );
                    }
                }
                let all: Vec<&Held> = remote.iter().collect();
                let before = restorable(&all).len();
                let after = restorable(&staying).len();
                assert!(
                    after >= min_keep.min(before),
                    "{remote:?} local {local:?} min_keep {min_keep}: {after} restorable left of {before}"
                );
            }
        }
    }
}

#[test]
fn more_than_max_deletes_is_refused_without_force() {
    let remote = vec![b("A", W1), b("B", W1), b("C", W1), b("D", W1), b("E", W3)];
    let e = plan(&remote, &ids(&["E"]), &[], |_| false, R).expect_err("cap");
    assert!(e.to_string().contains("max_deletes = 3"), "{e}");
}

/// (case, remote, local ids, WAL objects, local WALs) → deleted WAL names.
#[test]
fn wals_are_deleted_only_before_the_oldest_remaining_backup() {
    let w2 = "000000010000000000000002";
    let w4 = "000000010000000000000004";
    let t2 = "000000020000000000000002";
    type Case<'a> = (
        &'a str,
        Vec<Held>,
        Vec<&'a str>,
        Vec<&'a str>,
        Vec<&'a str>,
        Vec<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            "before the oldest kept begin: deleted",
            vec![b("A", W1), b("B", W3)],
            vec!["B"],
            vec![W1, w2, W3, w4],
            vec![],
            vec![W1, w2],
        ),
        (
            "history files never",
            vec![b("A", W1), b("B", W3)],
            vec!["B"],
            vec!["00000002.history", W1],
            vec![],
            vec![W1],
        ),
        (
            "still local: kept",
            vec![b("A", W1), b("B", W3)],
            vec!["B"],
            vec![W1, w2],
            vec![w2],
            vec![W1],
        ),
        (
            "a newer timeline is kept",
            vec![b("A", W1), b("B", W3)],
            vec!["B"],
            vec![t2, W1],
            vec![],
            vec![W1],
        ),
        (
            "no backup deleted: WALs before the oldest still go",
            vec![b("A", W3)],
            vec!["A"],
            vec![W1, W3],
            vec![],
            vec![W1],
        ),
        (
            "no complete DONE backup: none",
            vec![incomplete("A"), incomplete("B")],
            vec!["B"],
            vec![W1],
            vec![],
            vec![],
        ),
        (
            "a spared parent keeps its WALs",
            vec![b("A", W1), inc("B", W3, "A"), b("C", W5)],
            vec!["B", "C"],
            vec![W1, w2],
            vec![],
            vec![],
        ),
        (
            "labels and partials follow their segment",
            vec![b("A", W1), b("B", W3)],
            vec!["B"],
            vec![
                "000000010000000000000002.00000028.backup",
                "000000010000000000000002.partial",
            ],
            vec![],
            vec![
                "000000010000000000000002.00000028.backup",
                "000000010000000000000002.partial",
            ],
        ),
    ];
    for (name, remote, local, objects, here, want) in cases {
        let here: BTreeSet<String> = wals(&here).into_iter().map(|(_, r)| r).collect();
        let d = plan(
            &remote,
            &ids(&local),
            &wals(&objects),
            |r| here.contains(r),
            R,
        )
        .expect(name);
        let got: Vec<&str> = d
            .wals
            .iter()
            .map(|k| k.rsplit('/').next().unwrap_or(""))
            .collect();
        assert_eq!(got, want, "{name}");
    }
}
