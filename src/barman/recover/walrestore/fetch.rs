//! WAL files from the bucket: the direct fetch a `restore_command` call makes when the spool
//! cannot serve it (every name a file may be stored under, and what its absence means), the
//! prefetcher's fetch of one segment, the listing that tells the prefetcher what is there, and
//! the bucket's `identity.json`.
//!
//! A segment absent from the bucket may be stored as its closed `.partial` (the end of a
//! timeline pg_receivewal streamed). The partial is served only when no later segment of the
//! same timeline is in the bucket: PostgreSQL finds the end of WAL inside a partial and ends
//! recovery there, so a partial with later segments behind it is a gap, and handing it over
//! would promote a server that lost everything after it.

use std::collections::BTreeMap;

use super::decode::{Decoding, Limits, PLAIN, check_system, decode, segment_size};
use super::{Expected, Fetched};
use crate::barman::cloud::{Stored, stored_wals};
use crate::barman::remote::BucketLayout;
use crate::barman::server::Server;
use crate::barman::wal::{self, WalKind};
use crate::error::{Error, Result};
use crate::store::ListRequest;
use crate::transfer::Transfer;

/// Fetches WAL file `name` (PostgreSQL's `%f`) and turns it back into PostgreSQL's bytes,
/// checked: decoded within the limits of its kind and the cluster's segment size, its first
/// page naming it, its system identifier the cluster's when that is known.
pub async fn fetch_decoded(
    s: &Server,
    name: &str,
    decoding: &Decoding,
    expected: Expected,
) -> Result<(Fetched, Vec<u8>)> {
    let kind = wal::classify(name).ok_or_else(|| not_a_wal_name(name))?;
    let limits = Limits::of(kind, expected.seg_size);
    let (key, stored) = locate(s, name, limits).await?;
    decoded(key, stored, decoding, expected, limits).await
}

/// The prefetcher's fetch of segment `name`: the object of that name only (a closed partial
/// ends a timeline and is the direct fetch's to judge), decoded and checked as the direct fetch
/// does. `listed` is its key where a listing found it (in barman-cloud's layout the name
/// carries the compression).
pub async fn fetch_segment(
    s: &Server,
    name: &str,
    listed: Option<String>,
    decoding: &Decoding,
    expected: Expected,
) -> Result<(Vec<u8>, u32)> {
    let rel = wal::relative_path(name).ok_or_else(|| not_a_wal_name(name))?;
    let limits = Limits::of(WalKind::Segment, expected.seg_size);
    let key = match (listed, s.remote.layout()) {
        (Some(key), _) => key,
        (None, BucketLayout::Barmans3) => s.remote.wal_key(&rel),
        (None, BucketLayout::BarmanCloud) => match stored_forms(s, name).await?.get(name) {
            Some(stored) => stored.key()?.to_string(),
            None => {
                return Err(Error::NotFound {
                    key: s.remote.wal_key(&rel),
                });
            }
        },
    };
    let (stored, d) = s.t.download_small(&key, limits.stored).await?;
    let (fetched, plain) = decoded(key, stored, decoding, expected, limits).await?;
    // Stored plain, the segment is the bytes whose CRC-32C was taken as they arrived; decoded,
    // it is new bytes (checksummed off the runtime's threads).
    if fetched.stored_as == PLAIN {
        return Ok((plain, d.crc32c));
    }
    tokio::task::spawn_blocking(move || {
        let crc = crate::checksum::crc32c(&plain);
        (plain, crc)
    })
    .await
    .map_err(|e| Error::Failed(format!("checksum task failed: {e}")))
}

/// Decodes and checks what was fetched from `key`, off the runtime's threads.
async fn decoded(
    key: String,
    stored: Vec<u8>,
    decoding: &Decoding,
    expected: Expected,
    limits: Limits,
) -> Result<(Fetched, Vec<u8>)> {
    // The file served may be the segment's closed partial: check it as what it is.
    let served = stored_name(&key);
    let kind = wal::classify(&served).ok_or_else(|| not_a_wal_name(&served))?;
    let decoding = decoding.clone();
    let (plain, stored_as, key) = tokio::task::spawn_blocking(move || {
        let what = format!("WAL file {served} ({key})");
        let (plain, how) = decode(kind, &served, stored, &decoding, limits, &what)?;
        check_system(kind, &plain, expected.system, &what)?;
        let is_wal = matches!(kind, WalKind::Segment | WalKind::Partial);
        if let (true, Some(want), Some(got)) = (is_wal, expected.seg_size, segment_size(&plain))
            && want != got
        {
            return Err(Error::Failed(format!(
                "{what}: its first page gives {got}-byte segments, the cluster being recovered has {want}-byte ones; refusing it"
            )));
        }
        Ok::<_, Error>((plain, how, key))
    })
    .await
    .map_err(|e| Error::Failed(format!("decode task failed: {e}")))??;
    let seg_size = matches!(kind, WalKind::Segment | WalKind::Partial)
        .then(|| segment_size(&plain))
        .flatten();
    Ok((
        Fetched {
            bytes: plain.len() as u64,
            key,
            stored_as,
            seg_size,
        },
        plain,
    ))
}

/// The system identifier of the cluster the bucket holds (`identity.json`, written by
/// base-sync), if the bucket has one.
pub async fn bucket_system(s: &Server) -> Result<Option<u64>> {
    // A few fields of JSON: what the bucket holds under the name is read only that far.
    let buf = match s
        .t
        .download_small(&s.remote.identity_key(), IDENTITY_MAX)
        .await
    {
        Ok((buf, _)) => buf,
        Err(Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let v: serde_json::Value = serde_json::from_slice(&buf)
        .map_err(|e| Error::Failed(format!("{}: not JSON: {e}", s.remote.identity_key())))?;
    Ok(match &v["systemid"] {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    })
}

/// The most of `identity.json` read.
const IDENTITY_MAX: u64 = 64 << 10;

pub(super) fn not_a_wal_name(name: &str) -> Error {
    Error::Usage(format!(
        "{name:?} is not a WAL file name (segment, .partial, .backup or .history)"
    ))
}

fn name_of(key: &str) -> String {
    key.rsplit('/').next().unwrap_or(key).to_string()
}

/// The WAL file name a key holds: its last component, without the compression suffix
/// barman-cloud-wal-archive appends (our own layout keeps names as they are, and such a name
/// is no WAL file there).
fn stored_name(key: &str) -> String {
    let n = name_of(key);
    crate::barman::cloud::wal_name(&n).map_or(n.clone(), str::to_string)
}

/// The WAL file name of a listed key in `layout`, if it is one.
fn listed_name(layout: BucketLayout, key: &str) -> String {
    match layout {
        BucketLayout::Barmans3 => name_of(key),
        BucketLayout::BarmanCloud => stored_name(key),
    }
}

/// barman-cloud's layout: where `name` and its longer names (`.partial`, backup labels) are
/// stored, each by the WAL file name it holds (one listing), as [`stored_wals`] decides.
async fn stored_forms(s: &Server, name: &str) -> Result<BTreeMap<String, Stored>> {
    let rel = wal::relative_path(name).ok_or_else(|| not_a_wal_name(name))?;
    let req = ListRequest {
        prefix: s.remote.wal_key(&rel),
        max_keys: Some(100),
        ..Default::default()
    };
    let mut keys = Vec::new();
    s.t.list_pages(&req, |objs, _| {
        keys.extend(objs.iter().map(|o| o.key.clone()));
        false
    })
    .await?;
    Ok(stored_wals(keys.iter().map(String::as_str)))
}

/// The stored bytes of `name`: the object itself, or for a segment its closed `.partial` when
/// no later segment of its timeline is in the bucket. Absent under both names: NotFound, or an
/// error when later segments of the timeline are there.
async fn locate(s: &Server, name: &str, limits: Limits) -> Result<(String, Vec<u8>)> {
    let rel = wal::relative_path(name).ok_or_else(|| not_a_wal_name(name))?;
    let key = s.remote.wal_key(&rel);
    let mut partial = format!("{key}.partial");
    match s.remote.layout() {
        BucketLayout::Barmans3 => match get(&s.t, &key, limits).await {
            Err(Error::NotFound { .. }) => {}
            other => return other.map(|b| (key, b)),
        },
        BucketLayout::BarmanCloud => {
            let forms = stored_forms(s, name).await?;
            if let Some(stored) = forms.get(name) {
                let stored = stored.key()?.to_string();
                return get(&s.t, &stored, limits).await.map(|b| (stored, b));
            }
            if let Some(stored) = forms.get(&format!("{name}.partial")) {
                partial = stored.key()?.to_string();
            }
        }
    }
    if wal::classify(name) != Some(WalKind::Segment) {
        return Err(Error::NotFound { key });
    }
    // Whether or not the partial is there, what follows the segment decides: ask both at once.
    let (found, later) = tokio::join!(get(&s.t, &partial, limits), later_segment(s, name, &key));
    let later = later?;
    match (found, later) {
        (Ok(b), None) => {
            tracing::info!("{name}: serving the closed partial segment {partial}");
            Ok((partial, b))
        }
        (Ok(_), Some(later)) => Err(Error::Failed(format!(
            "WAL segment {name} is not in the bucket, only its closed partial is, and the later {later} of the same timeline is there too: PostgreSQL would end recovery inside the partial and lose everything after it; ship the whole segment (wal-sync) or set a recovery target before it"
        ))),
        (Err(Error::NotFound { .. }), Some(later)) => Err(Error::Failed(format!(
            "WAL segment {name} is not in the bucket but the later {later} of the same timeline is: the archive has a gap, and ending recovery here would lose everything after it; ship the missing WAL (wal-sync) or set a recovery target before it"
        ))),
        (Err(Error::NotFound { .. }), None) => Err(Error::NotFound { key }),
        (Err(e), _) => Err(e),
    }
}

/// One object, whole, refused above the stored limit.
async fn get(t: &Transfer, key: &str, limits: Limits) -> Result<Vec<u8>> {
    t.download_small(key, limits.stored)
        .await
        .map(|(data, _)| data)
}

/// The first segment after `name` on its timeline that the bucket holds, if any.
async fn later_segment(s: &Server, name: &str, key: &str) -> Result<Option<String>> {
    let req = ListRequest {
        prefix: s.remote.wals_prefix(),
        // After the segment, its .partial and its backup labels.
        start_after: Some(format!("{key}.\u{10FFFF}")),
        max_keys: Some(20),
        ..Default::default()
    };
    let mut found = None;
    let layout = s.remote.layout();
    s.t.list_pages(&req, |objs, _| {
        found = objs.iter().map(|o| listed_name(layout, &o.key)).find(|n| {
            matches!(wal::classify(n), Some(WalKind::Segment | WalKind::Partial))
                && wal::timeline(n) == wal::timeline(name)
                && wal::compare(n, name).is_gt()
        });
        false
    })
    .await?;
    Ok(found)
}

/// What one listing of a timeline says is in the bucket from a segment on.
#[derive(Debug, Clone, Default)]
pub struct Listed {
    /// The segments there (full segments only: partials are the direct fetch's), each with
    /// its key.
    pub present: BTreeMap<String, String>,
    /// The last segment name the listing reached; names up to it that are not present are
    /// absent.
    pub reached: Option<String>,
    /// Whether the listing reached the end of the timeline's keys.
    pub complete: bool,
    /// Segments stored in two forms (barman-cloud's layout): there, but refused.
    pub refused: BTreeMap<String, Stored>,
}

impl Listed {
    /// Whether the listing says `name` (of its timeline) is not in the bucket.
    pub fn absent(&self, name: &str) -> bool {
        !self.present.contains_key(name)
            && !self.refused.contains_key(name)
            && (self.complete
                || self
                    .reached
                    .as_deref()
                    .is_some_and(|r| wal::compare(name, r).is_lt()))
    }
}

/// Keys one listing page asks for.
const LIST_PAGE: usize = 1000;

/// One page of the bucket's keys of `first`'s timeline, from `first` on.
pub async fn list_from(s: &Server, first: &str, seg_size: u64) -> Result<Listed> {
    let tli = wal::timeline(first).unwrap_or(1);
    let per_log = (1u64 << 32) / seg_size;
    let segno = wal::segment_number(first, per_log).unwrap_or(0);
    let before = segno.checked_sub(1).map(|n| {
        let prev = crate::barman::recover::timeline::segment_name(tli, n, seg_size);
        s.remote.wal_key(&format!("{}/{prev}", &prev[..16]))
    });
    let req = ListRequest {
        prefix: format!("{}{tli:08X}", s.remote.wals_prefix()),
        start_after: before,
        max_keys: Some(LIST_PAGE),
        ..Default::default()
    };
    let mut keys = Vec::new();
    s.t.list_pages(&req, |objs, _| {
        keys.extend(objs.iter().map(|o| o.key.clone()));
        false
    })
    .await?;
    // A page shorter than asked is the last one (a store that pages shorter only makes the
    // prefetcher skip names the restore_command then fetches itself).
    let complete = keys.len() < LIST_PAGE;
    if !complete {
        // The page's last segment may have further stored forms on the next page (`X` here,
        // `X.gz` there): it is left to a later listing rather than judged on half its forms.
        let last: String = keys.last().map(|k| name_of(k)).unwrap_or_default();
        let stem = last.get(..24).unwrap_or(&last).to_string();
        while keys.last().is_some_and(|k| name_of(k).starts_with(&stem)) {
            keys.pop();
        }
    }
    let mut out = Listed {
        complete,
        ..Default::default()
    };
    let forms: BTreeMap<String, Stored> = match s.remote.layout() {
        BucketLayout::Barmans3 => keys
            .iter()
            .map(|k| (name_of(k), Stored::One(k.clone())))
            .collect(),
        BucketLayout::BarmanCloud => stored_wals(keys.iter().map(String::as_str)),
    };
    for (n, stored) in forms {
        if wal::classify(&n) != Some(WalKind::Segment) {
            continue;
        }
        out.reached = Some(n.clone());
        match stored.key() {
            Ok(k) => {
                out.present.insert(n, k.to_string());
            }
            Err(_) => {
                out.refused.insert(n, stored);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::local::LocalStore;
    use crate::transfer::Settings;

    const SEG: &str = "000000010000000000000003";
    const NEXT: &str = "000000010000000000000004";

    /// A barman-cloud bucket on disk: segment 3 stored twice (plain and gzip), 4 once.
    fn bucket(dir: &std::path::Path) -> Server {
        let wals = dir.join("b/p/pg/wals/0000000100000000");
        std::fs::create_dir_all(&wals).expect("wals");
        for n in [SEG.to_string(), format!("{SEG}.gz"), format!("{NEXT}.gz")] {
            std::fs::write(wals.join(n), b"x").expect("wal");
        }
        let store = Arc::new(LocalStore::open(&dir.join("b")).expect("store"));
        let t = Transfer::new(store, Settings::default());
        Server::new(&t, "p", "pg").with_layout(BucketLayout::BarmanCloud)
    }

    #[tokio::test]
    async fn a_segment_stored_twice_is_refused_by_the_direct_fetch_and_the_prefetcher() {
        let d = tempfile::tempdir().expect("tmp");
        let s = bucket(d.path());
        let twice = |e: Error| {
            let m = e.to_string();
            assert!(m.contains("both stored for one WAL file"), "{m}");
            assert!(m.contains(&format!("{SEG}.gz")), "{m}");
        };
        let (dec, exp) = (Decoding::default(), Expected::default());
        twice(fetch_decoded(&s, SEG, &dec, exp).await.expect_err("direct"));
        // The prefetcher's listing neither offers it nor calls it absent (so it is not waited
        // for as missing either), and its fetch by name refuses it the same way.
        let l = list_from(&s, SEG, 16 << 20).await.expect("list");
        assert!(!l.present.contains_key(SEG), "{l:?}");
        assert!(!l.absent(SEG), "{l:?}");
        twice(l.refused[SEG].key().expect_err("refused"));
        assert_eq!(
            l.present.get(NEXT).map(String::as_str),
            Some("p/pg/wals/0000000100000000/000000010000000000000004.gz")
        );
        twice(
            fetch_segment(&s, SEG, None, &dec, exp)
                .await
                .expect_err("prefetch"),
        );
    }

    #[tokio::test]
    async fn a_listing_page_that_ends_between_two_forms_of_a_segment_does_not_judge_it() {
        let d = tempfile::tempdir().expect("tmp");
        let name = |n: u64| crate::barman::recover::timeline::segment_name(1, n, 16 << 20);
        let put = |n: &str| {
            let dir = d.path().join("b/p/pg/wals").join(&n[..16]);
            std::fs::create_dir_all(&dir).expect("dir");
            std::fs::write(dir.join(n), b"x").expect("wal");
        };
        for n in 1..LIST_PAGE as u64 {
            put(&name(n));
        }
        // The page's last key is segment 1000; its .gz form opens the next page.
        let cut = name(LIST_PAGE as u64);
        put(&cut);
        put(&format!("{cut}.gz"));
        let store = Arc::new(LocalStore::open(&d.path().join("b")).expect("store"));
        let t = Transfer::new(store, Settings::default());
        let s = Server::new(&t, "p", "pg").with_layout(BucketLayout::BarmanCloud);
        let l = list_from(&s, &name(1), 16 << 20).await.expect("list");
        assert!(!l.complete);
        assert!(!l.present.contains_key(&cut) && !l.refused.contains_key(&cut));
        assert!(!l.absent(&cut), "left to a later listing");
        assert_eq!(l.reached, Some(name(LIST_PAGE as u64 - 1)));
        assert_eq!(l.present.len(), LIST_PAGE - 1);
    }
}
