//! Object Lock and `full-sync`: an object under retention cannot be deleted (on a versioned
//! bucket a delete would only hide it behind a delete marker), so a planned deletion of one is
//! reported as "retained until …" and left alone, and the run deletes what it may. A backup
//! counts as retained while its backup.info is (uploaded last, it is retained longest); a
//! retained backup stays whole, with the WALs it needs.

use std::time::SystemTime;

use crate::barman::remote::INFO;
use crate::barman::server::Server;
use crate::error::Result;
use crate::transfer::{Transfer, bounded};

/// Splits deletion candidates (name, retain-until) into those that may go now and those still
/// retained at `now`, with their date. An unknown date means no retention.
pub fn split<T>(
    candidates: Vec<(T, Option<SystemTime>)>,
    now: SystemTime,
) -> (Vec<T>, Vec<(T, SystemTime)>) {
    let mut free = Vec::new();
    let mut retained = Vec::new();
    for (c, until) in candidates {
        match until {
            Some(u) if u > now => retained.push((c, u)),
            _ => free.push(c),
        }
    }
    (free, retained)
}

/// The retain-until date of each key (HEAD, in parallel); a key gone meanwhile has none.
pub async fn retain_dates(
    t: &Transfer,
    keys: Vec<String>,
) -> Result<Vec<(String, Option<SystemTime>)>> {
    bounded(keys, t.file_workers(), |key| {
        let t = t.clone();
        async move {
            let until = t.head_opt(&key).await?.and_then(|m| m.retain_until);
            Ok((key, until))
        }
    })
    .await
}

/// Which of the backups planned for deletion are retained, with their date.
pub async fn retained_backups(srv: &Server, ids: &[String]) -> Result<Vec<(String, SystemTime)>> {
    let id_of: std::collections::HashMap<String, &String> = ids
        .iter()
        .map(|id| (srv.remote.backup_key(id, INFO), id))
        .collect();
    let dates = retain_dates(&srv.t, id_of.keys().cloned().collect()).await?;
    // Results come in completion order: name each by its own key.
    let by_id = dates
        .into_iter()
        .filter_map(|(key, d)| id_of.get(&key).map(|id| ((*id).clone(), d)))
        .collect();
    let mut kept = split(by_id, SystemTime::now()).1;
    kept.sort();
    Ok(kept)
}

/// A date for messages (UTC, to the second).
pub fn when(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_a_past_or_unknown_date_frees_an_object() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        let (free, kept) = split(
            vec![
                ("a", None),
                ("b", Some(now - hour)),
                ("c", Some(now + hour)),
                ("d", Some(now)),
            ],
            now,
        );
        assert_eq!(free, ["a", "b", "d"]);
        assert_eq!(kept, [("c", now + hour)]);
    }
}
