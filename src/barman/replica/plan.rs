//! What `replicate` does, decided over plain data: which backups to copy, which WAL files, what
//! a target object that is already there means, whether the two stores can copy server-side,
//! and how far a replica lags. Nothing here talks to a store.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::barman::remote::INFO;
use crate::store::Location;
use crate::store::s3::S3Options;

/// Whether the target can copy from the source server-side: both buckets behind one endpoint
/// (and region) reached with the same static credentials, so one request signed for the
/// target may read the source.
pub fn server_side(src: (&Location, &S3Options), dst: (&Location, &S3Options)) -> bool {
    let (Location::S3 { .. }, Location::S3 { .. }) = (src.0, dst.0) else {
        return false;
    };
    let (a, b) = (src.1, dst.1);
    let same_keys = match (&a.credentials, &b.credentials) {
        (Some(x), Some(y)) => {
            x.access_key_id.expose() == y.access_key_id.expose()
                && x.secret_access_key.expose() == y.secret_access_key.expose()
        }
        // The credential chain (profile, environment, instance role) is the same on both
        // sides only when it is read the same way.
        (None, None) => a.profile == b.profile,
        _ => false,
    };
    // SSE-C: a copy's source would be read with the target's key.
    let same_ssec = a.sse_customer.is_none() && b.sse_customer.is_none();
    same_keys && same_ssec && a.endpoint == b.endpoint && a.region == b.region
}

/// The backups to copy: complete on the source, not older than `since`, not complete on the
/// target; oldest first.
pub fn backups_to_copy<'a>(
    source_complete: &'a [String],
    target_complete: &BTreeSet<String>,
    since: Option<&str>,
) -> Vec<&'a String> {
    let mut ids: Vec<&String> = source_complete
        .iter()
        .filter(|id| since.is_none_or(|s| id.as_str() >= s))
        .filter(|id| !target_complete.contains(*id))
        .collect();
    ids.sort();
    ids
}

/// The WAL files the replica needs from `floor` on (the first WAL of the oldest backup it
/// keeps; `None`: all of them): segments and backup labels at or after the floor's position
/// on any timeline, and every history file. Names are paths under `wals/`.
pub fn wal_in_scope(rel: &str, floor: Option<&str>) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    if name.ends_with(".history") {
        return true;
    }
    let Some(floor) = floor else {
        return true;
    };
    // TTTTTTTTLLLLLLLLSSSSSSSS: the position is the last 16 hex digits, whatever the timeline.
    match (name.get(8..24), floor.get(8..24)) {
        (Some(pos), Some(f)) if pos.bytes().all(|b| b.is_ascii_hexdigit()) => {
            pos.to_ascii_uppercase() >= f.to_ascii_uppercase()
        }
        _ => true,
    }
}

/// An object as a listing shows it, relative to the server's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Size.
    pub size: u64,
    /// ETag, when known.
    pub etag: Option<String>,
    /// Last modification.
    pub modified: Option<SystemTime>,
}

/// What to do with one WAL file of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalAction {
    /// Absent from the target: copy it.
    Send,
    /// The same size and ETag on the target: already there.
    Present,
    /// The same size, another ETag (a copy made in parts, or another tool): compare checksums.
    Compare,
    /// Another size on the target: a conflict, reported and never overwritten.
    Conflict,
}

/// The WAL decision for one file.
pub fn wal_action(src: &Listed, dst: Option<&Listed>) -> WalAction {
    match dst {
        None => WalAction::Send,
        Some(d) if d.size != src.size => WalAction::Conflict,
        Some(d) if d.etag.is_some() && d.etag == src.etag => WalAction::Present,
        Some(_) => WalAction::Compare,
    }
}

/// How far a replica is behind its source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Lag {
    /// Objects of the source (complete backups, WAL files) not on the replica.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Age of the oldest of them, in seconds (0: nothing missing).
    pub seconds: u64,
}

/// The lag of `target` behind `source`, both listed relative to the server's root
/// (`base/<id>/…`, `wals/…`): what the source holds that the replica does not. Backups still
/// being uploaded to the source (no backup.info yet) do not count, nor WAL files before
/// `floor` (see [`wal_in_scope`]).
pub fn lag(
    source: &BTreeMap<String, Listed>,
    target: &BTreeMap<String, Listed>,
    floor: Option<&str>,
    now: SystemTime,
) -> Lag {
    let complete: BTreeSet<&str> = source
        .keys()
        .filter_map(|k| k.strip_prefix("base/")?.strip_suffix(&format!("/{INFO}")))
        .collect();
    let mut out = Lag::default();
    let mut oldest: Option<SystemTime> = None;
    for (k, o) in source {
        if let Some(rest) = k.strip_prefix("base/") {
            let id = rest.split('/').next().unwrap_or("");
            if !complete.contains(id) {
                continue;
            }
        } else if !k
            .strip_prefix("wals/")
            .is_some_and(|w| wal_in_scope(w, floor))
        {
            continue;
        }
        if target.get(k).is_some_and(|t| t.size == o.size) {
            continue;
        }
        out.objects += 1;
        out.bytes += o.size;
        if let Some(m) = o.modified {
            oldest = Some(oldest.map_or(m, |x| x.min(m)));
        }
    }
    out.seconds = oldest
        .and_then(|m| now.duration_since(m).ok())
        .unwrap_or(Duration::ZERO)
        .as_secs();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::store::s3::StaticCredentials;

    fn s3(endpoint: &str, key: &str) -> S3Options {
        S3Options {
            endpoint: Some(endpoint.into()),
            credentials: Some(StaticCredentials {
                access_key_id: Secret::new(key),
                secret_access_key: Secret::new("s"),
                session_token: None,
            }),
            ..S3Options::default()
        }
    }

    #[test]
    fn server_side_needs_one_endpoint_and_the_same_keys() {
        let b = |n: &str| Location::S3 {
            bucket: n.into(),
            prefix: String::new(),
        };
        let (a1, a2) = (s3("http://a", "k"), s3("http://a", "k"));
        assert!(server_side((&b("x"), &a1), (&b("y"), &a2)));
        assert!(!server_side(
            (&b("x"), &a1),
            (&b("y"), &s3("http://b", "k"))
        ));
        assert!(!server_side(
            (&b("x"), &a1),
            (&b("y"), &s3("http://a", "other"))
        ));
        let local = Location::Local {
            root: "/tmp".into(),
        };
        assert!(!server_side((&local, &a1), (&b("y"), &a2)));
    }

    #[test]
    fn backups_complete_on_the_target_are_not_copied_again() {
        let src: Vec<String> = ["20260101T000000", "20260102T000000", "20260103T000000"]
            .map(String::from)
            .to_vec();
        let done: BTreeSet<String> = ["20260102T000000".to_string()].into();
        assert_eq!(
            backups_to_copy(&src, &done, None),
            [&src[0], &src[2]],
            "the complete one is skipped"
        );
        assert_eq!(
            backups_to_copy(&src, &BTreeSet::new(), Some("20260102T000000")),
            [&src[1], &src[2]]
        );
    }

    #[test]
    fn wal_scope_starts_at_the_oldest_backup_on_any_timeline() {
        let floor = Some("000000010000000000000010");
        assert!(wal_in_scope(
            "0000000100000000/000000010000000000000010",
            floor
        ));
        assert!(!wal_in_scope(
            "0000000100000000/00000001000000000000000F.gz",
            floor
        ));
        assert!(wal_in_scope(
            "0000000200000000/000000020000000000000011",
            floor
        ));
        assert!(wal_in_scope(
            "0000000100000000/000000010000000000000010.00000028.backup",
            floor
        ));
        assert!(wal_in_scope("00000002.history", floor));
        assert!(wal_in_scope(
            "0000000100000000/000000010000000000000001",
            None
        ));
    }

    #[test]
    fn a_wal_of_another_size_is_a_conflict_never_overwritten() {
        let l = |size, etag: &str| Listed {
            size,
            etag: Some(etag.into()),
            modified: None,
        };
        assert_eq!(wal_action(&l(16, "a"), None), WalAction::Send);
        assert_eq!(
            wal_action(&l(16, "a"), Some(&l(16, "a"))),
            WalAction::Present
        );
        assert_eq!(
            wal_action(&l(16, "a"), Some(&l(16, "b"))),
            WalAction::Compare
        );
        assert_eq!(
            wal_action(&l(16, "a"), Some(&l(8, "a"))),
            WalAction::Conflict
        );
    }

    #[test]
    fn lag_counts_what_the_replica_lacks_but_not_backups_in_progress() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let l = |size, at: u64| Listed {
            size,
            etag: None,
            modified: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(at)),
        };
        let src: BTreeMap<String, Listed> = [
            ("base/A/data/x", l(10, 100)),
            ("base/A/backup.info", l(1, 110)),
            ("base/B/data/x", l(50, 50)),
            ("wals/0000000100000000/000000010000000000000001", l(16, 200)),
            ("wals/0000000100000000/000000010000000000000002", l(16, 300)),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .into();
        let mut dst = BTreeMap::new();
        assert_eq!(
            lag(&src, &dst, None, t0),
            Lag {
                objects: 4,
                bytes: 43,
                seconds: 900
            }
        );
        for k in [
            "base/A/data/x",
            "base/A/backup.info",
            "wals/0000000100000000/000000010000000000000001",
        ] {
            dst.insert(k.to_string(), src[k].clone());
        }
        assert_eq!(
            lag(&src, &dst, None, t0),
            Lag {
                objects: 1,
                bytes: 16,
                seconds: 700
            }
        );
        dst.insert(
            "wals/0000000100000000/000000010000000000000002".into(),
            src["wals/0000000100000000/000000010000000000000002"].clone(),
        );
        assert_eq!(lag(&src, &dst, None, t0), Lag::default());
        dst.clear();
        let floor = Some("000000010000000000000002");
        assert_eq!(
            lag(&src, &dst, floor, t0).objects,
            3,
            "WAL 1 is out of scope"
        );
    }
}
