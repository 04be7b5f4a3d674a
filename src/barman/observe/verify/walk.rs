//! `verify-wal`'s walk over the archive in memory bounded whatever its size: the listing is
//! read a page at a time ([`ListCursor`]) while the page before is checked (`file_workers`
//! objects at once), and what stays is what the report needs: the [`Archive`] (runs of
//! segments, so it grows with the gaps, not with the archive), the counts, the first
//! [`KEPT_PROBLEMS`] object problems and the names of the objects found damaged (the recovery
//! window stops before them).

use super::Report;
use super::chain::Archive;
use super::objects::{self, Job, Kind, Outcome, Problem};
use crate::barman::server::Server;
use crate::barman::wal::{self, WalKind};
use crate::error::Result;
use crate::store::{ListRequest, ObjectMeta};
use crate::transfer::{ListCursor, Transfer, bounded};

/// Object problems listed in the report; past these they are counted
/// ([`Report::unlisted`]): an archive gone bad as a whole would otherwise hold a line for each
/// of its million objects, and the first thousand already say what to do.
pub(super) const KEPT_PROBLEMS: usize = 1000;

/// A WAL object to check and the size the listing gave.
type Listed = (Job, u64);

/// What the walk keeps of the objects' outcomes.
#[derive(Debug, Default)]
pub(super) struct Walked {
    /// Names of the segments found missing, damaged or unreadable.
    pub damaged: Vec<String>,
    kept: usize,
}

impl Walked {
    /// Counts one outcome into `r`.
    fn record(&mut self, r: &mut Report, o: Outcome) {
        let p = match o {
            Ok(passed) => return r.tally(passed),
            Err(p) => p,
        };
        r.objects += 1;
        if matches!(
            p.kind,
            Kind::Missing | Kind::Size | Kind::Checksum | Kind::Unreadable
        ) {
            self.damaged.push(name_of(&p).to_string());
        }
        self.keep(r, p);
    }

    fn keep(&mut self, r: &mut Report, p: Problem) {
        if self.kept < KEPT_PROBLEMS {
            self.kept += 1;
            r.problems.push(p);
        } else {
            r.unlisted += 1;
        }
    }
}

fn name_of(p: &Problem) -> &str {
    p.key.rsplit('/').next().unwrap_or("")
}

/// Lists the whole archive into `a` and checks every WAL object but the history files (which
/// are read whatever the mode, afterwards): one HEAD (or header read) each, or a full read.
pub(super) async fn walk(
    srv: &Server,
    a: &mut Archive,
    r: &mut Report,
    read: bool,
) -> Result<Walked> {
    let prefix = srv.remote.wals_prefix();
    let mut cursor = ListCursor::new(ListRequest {
        prefix: prefix.clone(),
        ..Default::default()
    });
    let mut w = Walked::default();
    let mut batch: Vec<Listed> = Vec::new();
    loop {
        // The next page is fetched while this one is checked: two pages at most are held.
        let jobs = std::mem::take(&mut batch);
        let (page, outcomes) = tokio::join!(cursor.next_page(&srv.t), check(&srv.t, jobs, read));
        for o in outcomes? {
            w.record(r, o);
        }
        let Some(objects) = page? else {
            break;
        };
        batch = take_page(&prefix, objects, a, r);
    }
    if r.unlisted > 0 {
        r.notes.push(format!(
            "{} more problem(s) with WAL objects were found and are not listed (the first {KEPT_PROBLEMS} are)",
            r.unlisted
        ));
    }
    Ok(w)
}

/// Adds a page's names to `a` and returns its WAL objects to check.
fn take_page(prefix: &str, page: Vec<ObjectMeta>, a: &mut Archive, r: &mut Report) -> Vec<Listed> {
    let mut jobs = Vec::new();
    for o in page {
        let rel = o.key.strip_prefix(prefix).unwrap_or("");
        let name = rel.rsplit('/').next().unwrap_or(rel);
        a.add(name);
        r.wals += 1;
        if wal::classify(name).is_some_and(|k| k != WalKind::History) {
            let job = Job {
                key: o.key,
                backup: None,
                record: None,
                system: None,
            };
            jobs.push((job, o.size));
        }
    }
    jobs
}

/// Checks one page's objects, `file_workers` at once.
async fn check(t: &Transfer, jobs: Vec<Listed>, read: bool) -> Result<Vec<Outcome>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    if read {
        t.progress().add_work(jobs.len() as u64, 0);
    }
    let one = |(job, size): Listed| {
        let t = t.clone();
        async move {
            if read {
                objects::read(&t, &job).await
            } else {
                objects::wal_quick(&t, &job, size).await
            }
        }
    };
    bounded(jobs, t.file_workers(), one).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(kind: Kind, n: usize) -> Problem {
        Problem {
            kind,
            key: format!("p/pg/wals/0000000100000000/0000000100000000000{n:05X}"),
            backup: None,
            detail: "x".into(),
        }
    }

    #[test]
    fn problems_past_the_first_thousand_are_counted_and_damage_is_remembered() {
        let mut r = Report::default();
        let mut w = Walked::default();
        for n in 0..KEPT_PROBLEMS + 5 {
            w.record(&mut r, Err(problem(Kind::Checksum, n)));
        }
        w.record(&mut r, Err(problem(Kind::Decrypt, 1)));
        w.record(&mut r, Ok(objects::Passed::HeadSizeOnly));
        assert_eq!(r.problems.len(), KEPT_PROBLEMS);
        assert_eq!(r.unlisted, 6);
        assert_eq!(r.problem_count(), KEPT_PROBLEMS as u64 + 6);
        assert!(!r.ok());
        assert_eq!(r.objects, KEPT_PROBLEMS as u64 + 7);
        assert_eq!(r.size_only, 1);
        // Every damaged segment is remembered for the window, listed or not; a header that
        // does not open is a problem, not damage the window knows of.
        assert_eq!(w.damaged.len(), KEPT_PROBLEMS + 5);
        assert_eq!(w.damaged[0], "000000010000000000000000");
    }

    #[test]
    fn a_page_adds_its_names_and_checks_its_segments_not_its_history_files() {
        let prefix = "p/pg/wals/";
        let page: Vec<ObjectMeta> = [
            "00000002.history",
            "0000000100000000/000000010000000000000003",
            "0000000100000000/000000010000000000000004.partial",
            "0000000100000000/000000010000000000000004.00000028.backup",
        ]
        .iter()
        .map(|k| ObjectMeta::listed(format!("{prefix}{k}"), 7))
        .collect();
        let mut a = Archive::new(16 << 20);
        let mut r = Report::default();
        let jobs = take_page(prefix, page, &mut a, &mut r);
        assert_eq!(r.wals, 4);
        assert_eq!(jobs.len(), 3);
        assert!(jobs.iter().all(|(_, size)| *size == 7));
        assert!(a.has_history(2));
        assert_eq!(
            a.stored(1, 4).as_deref(),
            Some("000000010000000000000004.partial")
        );
    }
}
