//! A versioned bucket as it was at a time (`--as-of`): a read-only store over another store's
//! [`Versions`]. Listings show each key's newest version not newer than the time (delete markers
//! hide a key, as they did then); GET and HEAD read that version by its id. Everything that
//! would write is refused: a restore from the past never changes the bucket.
//!
//! A store without versions, or a bucket that never had versioning on, is refused with one
//! line on first use: its objects are only the current ones, and reading them "as of" a time
//! would restore today's bytes under yesterday's name. The version listing of a prefix is folded
//! page by page into each key's chosen version (the history itself is never held) and the view
//! kept (pages of it are cut from memory, so a listing's pages agree with each other); a key
//! read without a listing first costs one listing of that key. What is kept is bounded
//! ([`Fifo`]): a recovery reads one WAL key after another for hours, and the oldest views and
//! keys are forgotten (read again if asked again: as of a past time the answer is the same).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;

use super::{
    AsOfFold, Body, ByteRange, DeleteFailure, GetResponse, ListPage, ListRequest, Multipart,
    MultipartUpload, ObjectMeta, PartReceipt, PutOptions, PutReceipt, SharedStore, Store, Upload,
    VersionAsOf, Versioning, Versions, page_from_sorted,
};
use crate::error::{Error, Result};

/// Wraps `inner` so that it reads as the bucket was at `time`.
pub fn wrap(inner: SharedStore, time: SystemTime) -> SharedStore {
    Arc::new(AsOfStore {
        inner,
        time,
        checked: tokio::sync::OnceCell::new(),
        listed: Mutex::new(Fifo::new(MAX_VIEW_ENTRIES)),
        keys: Mutex::new(Fifo::new(MAX_KEYS)),
    })
}

/// Listing entries kept in views over all prefixes (the newest view is kept whatever its size:
/// its pages are being cut from it).
const MAX_VIEW_ENTRIES: usize = 200_000;

/// Keys whose version as of the time is remembered.
const MAX_KEYS: usize = 200_000;

/// The time in RFC 3339 (UTC; fractions of a second only when there are), as `--as-of`
/// takes it back: what messages show and what a child process is handed.
pub fn format_time(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// A store read as of a time.
struct AsOfStore {
    inner: SharedStore,
    time: SystemTime,
    /// What the bucket said of its versioning, once it was not `Off`.
    checked: tokio::sync::OnceCell<Versioning>,
    /// Each listed prefix's keys as of the time, sorted (weighed by their number).
    listed: Mutex<Fifo<Arc<Vec<ObjectMeta>>>>,
    /// Each key's version as of the time (`None`: the key did not exist then).
    keys: Mutex<Fifo<Option<String>>>,
}

impl fmt::Debug for AsOfStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.describe())
    }
}

impl AsOfStore {
    /// The inner store's versions, once the bucket is known to keep them.
    async fn versions(&self) -> Result<&dyn Versions> {
        let v = self.inner.versions().ok_or_else(|| {
            Error::Config(format!(
                "--as-of: {} keeps no object versions; it reads old versions of a versioned S3 bucket",
                self.inner.describe()
            ))
        })?;
        self.checked
            .get_or_try_init(|| async {
                match v.versioning().await? {
                    Versioning::Off => Err(self.never_versioned()),
                    other => Ok(other),
                }
            })
            .await?;
        Ok(v)
    }

    fn never_versioned(&self) -> Error {
        Error::Config(format!(
            "--as-of: {} has never had versioning enabled, so it keeps no older versions to read",
            self.inner.describe()
        ))
    }

    /// The keys under `prefix` as of the time, read once per prefix (while remembered).
    async fn view(&self, prefix: &str) -> Result<Arc<Vec<ObjectMeta>>> {
        if let Some(v) = lock(&self.listed).get(prefix) {
            return Ok(v);
        }
        let view = self.list_as_of(prefix).await?;
        let mut keys = lock(&self.keys);
        for v in &view {
            keys.insert(v.meta.key.clone(), Some(v.version_id.clone()), 1);
        }
        drop(keys);
        let metas = Arc::new(view.into_iter().map(|v| v.meta).collect::<Vec<_>>());
        lock(&self.listed).insert(prefix.to_string(), metas.clone(), metas.len());
        Ok(metas)
    }

    /// Lists the versions under `prefix` and folds them into the keys as of the time.
    async fn list_as_of(&self, prefix: &str) -> Result<Vec<VersionAsOf>> {
        let versions = self.versions().await?;
        let mut fold = AsOfFold::new(self.time);
        let mut after = None;
        loop {
            let page = versions.list_versions_page(prefix, after.as_ref()).await?;
            fold.add(page.versions);
            match page.next {
                Some(n) if Some(&n) != after.as_ref() => after = Some(n),
                Some(_) => {
                    return Err(Error::Failed(format!(
                        "ListObjectVersions {prefix}: {} repeated its page marker",
                        self.inner.describe()
                    )));
                }
                None => break,
            }
        }
        // A store whose versioning answer could not be read: objects that all carry the null
        // version and no delete marker are those of a bucket that never had versioning.
        if self.checked.get() == Some(&Versioning::Unknown) && fold.looks_unversioned() {
            return Err(self.never_versioned());
        }
        Ok(fold.finish())
    }

    /// The version of `key` to read, or NotFound when the key did not exist at the time.
    async fn version_of(&self, key: &str) -> Result<String> {
        let known = lock(&self.keys).get(key);
        let found = match known {
            Some(v) => v,
            None => {
                // The key listed as a prefix: the key itself is in it if it existed then.
                let found = self
                    .list_as_of(key)
                    .await?
                    .into_iter()
                    .find(|v| v.meta.key == key)
                    .map(|v| v.version_id);
                lock(&self.keys).insert(key.to_string(), found.clone(), 1);
                found
            }
        };
        found.ok_or_else(|| Error::NotFound {
            key: key.to_string(),
        })
    }

    fn read_only(&self, what: &str, key: &str) -> Error {
        Error::Usage(format!(
            "{what} {}: {} is read-only",
            super::printable_key(key),
            self.describe()
        ))
    }
}

/// A map that forgets its oldest entries once their weights pass a budget; the newest entry is
/// kept whatever its weight.
#[derive(Debug)]
struct Fifo<V> {
    map: HashMap<String, (V, usize)>,
    order: VecDeque<String>,
    weight: usize,
    budget: usize,
}

impl<V: Clone> Fifo<V> {
    fn new(budget: usize) -> Self {
        Fifo {
            map: HashMap::new(),
            order: VecDeque::new(),
            weight: 0,
            budget,
        }
    }

    fn get(&self, key: &str) -> Option<V> {
        self.map.get(key).map(|(v, _)| v.clone())
    }

    fn insert(&mut self, key: String, value: V, weight: usize) {
        if let Some((_, old)) = self.map.insert(key.clone(), (value, weight)) {
            self.weight -= old;
            self.order.retain(|k| *k != key);
        }
        self.order.push_back(key);
        self.weight += weight;
        while self.weight > self.budget && self.order.len() > 1 {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some((_, w)) = self.map.remove(&oldest) {
                self.weight -= w;
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl Store for AsOfStore {
    fn describe(&self) -> String {
        format!("{} as of {}", self.inner.describe(), format_time(self.time))
    }

    async fn put(&self, key: &str, _body: Body, _opts: &PutOptions) -> Result<PutReceipt> {
        Err(self.read_only("PutObject", key))
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetResponse> {
        let version = self.version_of(key).await?;
        let mut resp = self
            .versions()
            .await?
            .get_version(key, &version, range)
            .await?;
        resp.meta.key = key.to_string();
        Ok(resp)
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let version = self.version_of(key).await?;
        self.versions().await?.head_version(key, &version).await
    }

    async fn list_page(&self, req: &ListRequest, token: Option<&str>) -> Result<ListPage> {
        let view = self.view(&req.prefix).await?;
        Ok(page_from_sorted(&view, req, token))
    }

    async fn delete_batch(&self, keys: &[String]) -> Result<Vec<DeleteFailure>> {
        let first = keys.first().map(String::as_str).unwrap_or("");
        Err(self.read_only("DeleteObjects", first))
    }

    fn multipart(&self) -> &dyn Multipart {
        self
    }
}

/// Multipart uploads write; as of a past time there are none in progress.
#[async_trait]
impl Multipart for AsOfStore {
    async fn create(&self, key: &str, _opts: &PutOptions) -> Result<Upload> {
        Err(self.read_only("CreateMultipartUpload", key))
    }

    async fn upload_part(&self, up: &Upload, _part: u32, _body: Body) -> Result<PartReceipt> {
        Err(self.read_only("UploadPart", &up.key))
    }

    async fn complete(&self, up: &Upload, _parts: &[PartReceipt]) -> Result<PutReceipt> {
        Err(self.read_only("CompleteMultipartUpload", &up.key))
    }

    async fn abort(&self, up: &Upload) -> Result<()> {
        Err(self.read_only("AbortMultipartUpload", &up.key))
    }

    async fn list_parts(&self, up: &Upload) -> Result<Vec<PartReceipt>> {
        Err(Error::NotFound {
            key: up.key.clone(),
        })
    }

    async fn list_uploads(&self, _prefix: &str) -> Result<Vec<MultipartUpload>> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::store::local::LocalStore;
    use crate::store::{BodyReader, ObjectVersion, VersionMarker, VersionPage};

    /// A versioned bucket in memory: the core is a (empty) directory store, the history is
    /// a list of versions with their bytes.
    #[derive(Debug)]
    struct Fake {
        core: LocalStore,
        history: Vec<(ObjectVersion, Vec<u8>)>,
        versioning: Versioning,
    }

    #[derive(Debug)]
    struct Once(Option<Bytes>);

    #[async_trait]
    impl BodyReader for Once {
        async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
            Ok(self.0.take())
        }
    }

    #[async_trait]
    impl Store for Fake {
        fn describe(&self) -> String {
            "fake".into()
        }
        async fn put(&self, k: &str, b: Body, o: &PutOptions) -> Result<PutReceipt> {
            self.core.put(k, b, o).await
        }
        async fn get(&self, k: &str, r: Option<ByteRange>) -> Result<GetResponse> {
            self.core.get(k, r).await
        }
        async fn head(&self, k: &str) -> Result<ObjectMeta> {
            self.core.head(k).await
        }
        async fn list_page(&self, r: &ListRequest, t: Option<&str>) -> Result<ListPage> {
            self.core.list_page(r, t).await
        }
        async fn delete_batch(&self, k: &[String]) -> Result<Vec<DeleteFailure>> {
            self.core.delete_batch(k).await
        }
        fn multipart(&self) -> &dyn Multipart {
            self.core.multipart()
        }
        fn versions(&self) -> Option<&dyn Versions> {
            Some(self)
        }
    }

    #[async_trait]
    impl Versions for Fake {
        async fn versioning(&self) -> Result<Versioning> {
            Ok(self.versioning)
        }
        /// Two entries a page, so paging is exercised.
        async fn list_versions_page(
            &self,
            prefix: &str,
            after: Option<&VersionMarker>,
        ) -> Result<VersionPage> {
            let all: Vec<&ObjectVersion> = self
                .history
                .iter()
                .map(|(v, _)| v)
                .filter(|v| v.key.starts_with(prefix))
                .collect();
            let start = after.map_or(0, |a| {
                all.iter()
                    .position(|v| v.key == a.key && v.version_id == a.version_id)
                    .map_or(all.len(), |i| i + 1)
            });
            let page: Vec<ObjectVersion> = all
                .iter()
                .skip(start)
                .take(2)
                .map(|v| (*v).clone())
                .collect();
            let next = (start + 2 < all.len()).then(|| VersionMarker {
                key: page[1].key.clone(),
                version_id: page[1].version_id.clone(),
            });
            Ok(VersionPage {
                versions: page,
                next,
            })
        }
        async fn get_version(
            &self,
            key: &str,
            id: &str,
            _r: Option<ByteRange>,
        ) -> Result<GetResponse> {
            let (v, b) = self
                .history
                .iter()
                .find(|(v, _)| v.key == key && v.version_id == id && !v.delete_marker)
                .ok_or_else(|| Error::NotFound { key: key.into() })?;
            Ok(GetResponse {
                meta: ObjectMeta::listed(&v.key, v.size),
                body: Box::new(Once(Some(Bytes::from(b.clone())))),
            })
        }
        async fn head_version(&self, key: &str, id: &str) -> Result<ObjectMeta> {
            Ok(self.get_version(key, id, None).await?.meta)
        }
        async fn delete_version(&self, key: &str, _id: &str) -> Result<()> {
            Err(Error::Failed(format!("unexpected delete of {key}")))
        }
    }

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn fake(dir: &std::path::Path, versioning: Versioning) -> SharedStore {
        let v = |key: &str, id: &str, t: u64, body: &[u8], deleted: bool| {
            (
                ObjectVersion {
                    key: key.into(),
                    version_id: id.into(),
                    last_modified: Some(at(t)),
                    size: body.len() as u64,
                    etag: None,
                    delete_marker: deleted,
                },
                body.to_vec(),
            )
        };
        Arc::new(Fake {
            core: LocalStore::open(dir).expect("dir"),
            history: vec![
                v("p/a", "a2", 300, b"tampered", false),
                v("p/a", "a1", 100, b"original", false),
                v("p/b", "b2", 300, b"", true),
                v("p/b", "b1", 100, b"info", false),
                v("p/c", "c1", 300, b"new", false),
                v("q/d", "d1", 100, b"other", false),
            ],
            versioning,
        })
    }

    async fn read(s: &SharedStore, key: &str) -> Result<Vec<u8>> {
        let mut r = s.get(key, None).await?;
        let mut out = Vec::new();
        while let Some(c) = r.body.next_chunk().await? {
            out.extend_from_slice(&c);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn lists_and_reads_each_key_as_it_was_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = wrap(fake(dir.path(), Versioning::Enabled), at(200));
        let req = ListRequest {
            prefix: "p/".into(),
            max_keys: Some(1),
            ..Default::default()
        };
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let page = s.list_page(&req, token.as_deref()).await.expect("list");
            keys.extend(page.objects.into_iter().map(|o| o.key));
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(keys, ["p/a", "p/b"], "c came later; q is another prefix");
        assert_eq!(read(&s, "p/a").await.expect("a"), b"original");
        assert_eq!(read(&s, "p/b").await.expect("b"), b"info");
        // Read without a listing first: its own listing.
        let fresh = wrap(fake(dir.path(), Versioning::Unknown), at(200));
        assert_eq!(read(&fresh, "q/d").await.expect("d"), b"other");
        assert!(matches!(
            read(&fresh, "p/c").await,
            Err(Error::NotFound { .. })
        ));
        let later = wrap(fake(dir.path(), Versioning::Enabled), at(400));
        assert!(matches!(
            read(&later, "p/b").await,
            Err(Error::NotFound { .. })
        ));
        assert_eq!(read(&later, "p/a").await.expect("a"), b"tampered");

        let body = Body::bytes(Bytes::from_static(b"x"), crate::store::Integrity::None);
        assert!(s.put("p/a", body, &PutOptions::default()).await.is_err());
        assert!(s.delete_batch(&["p/a".into()]).await.is_err());
        assert!(
            s.multipart()
                .create("p/z", &PutOptions::default())
                .await
                .is_err()
        );
        let files = walkdir::WalkDir::new(dir.path())
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .count();
        assert_eq!(files, 0, "nothing was written");
    }

    #[tokio::test]
    async fn a_store_without_versions_is_refused_in_one_line() {
        let dir = tempfile::tempdir().expect("tmp");
        let off = wrap(fake(dir.path(), Versioning::Off), at(200));
        let e = off
            .list_page(&ListRequest::default(), None)
            .await
            .expect_err("off");
        assert!(
            matches!(&e, Error::Config(m) if m.contains("versioning")),
            "{e}"
        );
        let local: SharedStore = Arc::new(LocalStore::open(dir.path()).expect("dir"));
        let e = read(&wrap(local, at(200)), "k").await.expect_err("local");
        assert!(
            matches!(&e, Error::Config(m) if m.contains("keeps no object versions")),
            "{e}"
        );
    }

    #[test]
    fn what_is_remembered_stays_within_its_budget_and_keeps_the_newest() {
        let mut f = Fifo::new(3);
        for i in 0..10 {
            f.insert(format!("k{i}"), i, 1);
            assert!(f.len() <= 3);
        }
        assert_eq!(f.get("k9"), Some(9));
        assert_eq!(f.get("k6"), None, "the oldest are forgotten");
        // Asked again, an entry becomes the newest.
        f.insert("k7".into(), 70, 1);
        f.insert("k10".into(), 10, 1);
        assert_eq!(f.get("k7"), Some(70));
        assert_eq!(f.get("k8"), None);
        // One entry over the whole budget is kept alone (its pages are being read).
        f.insert("big".into(), 0, 100);
        assert_eq!((f.len(), f.get("big")), (1, Some(0)));
        assert_eq!(f.weight, 100);
    }
}
