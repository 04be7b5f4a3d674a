//! The transfer engine: every byte between local data and the store goes through here.
//!
//! [`Transfer`] owns the run's store handle (wrapped in the request counter), the retry policy,
//! one semaphore that bounds requests with bodies in flight (`concurrency` of its [`Settings`]),
//! the cancellation flag and the progress sink. Uploads and downloads live in [`upload`] and
//! [`download`]; this module adds the metadata operations producers need (list, head, delete,
//! stale multipart clean-up), all retried and counted the same way.

pub mod builder;
pub mod compare;
pub mod copy;
pub mod cursor;
pub mod download;
pub mod plan;
pub mod probe;
pub mod relay;
pub mod retry;
pub mod sealed;
mod settings;
pub mod stats;
pub mod upload;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};
use crate::progress::{Progress, Silent};
use crate::store::{
    ListPage, ListRequest, MAX_DELETE_BATCH, MultipartUpload, ObjectMeta, SharedStore, Upload,
};
pub use builder::EngineBuilder;
pub use copy::CopyExpect;
pub use cursor::ListCursor;
pub use download::{Downloaded, Expect, Verified};
use probe::ChecksumProbe;
use retry::RetryPolicy;
pub use sealed::Ciphertext;
pub use settings::{ChecksumMode, Settings};
pub use stats::{Op, Stats, StatsSnapshot};
pub use upload::{FileJournal, ResumeState, SentPart, UploadJournal, Uploaded};

/// Run-wide cancellation (Ctrl-C, SIGTERM). Cheap to clone through an `Arc`.
#[derive(Debug, Default)]
pub struct Cancel {
    flag: AtomicBool,
    notify: Notify,
}

impl Cancel {
    /// Marks the run cancelled and wakes every waiter.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
    /// Whether the run was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
    /// Resolves once the run is cancelled.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// Shares of a request permit. A request with a body of at most [`TINY_BODY`] holds one, of at
/// most [`LIGHT_BODY`] [`LIGHT_SHARES`], any other all of them: `s3.concurrency` large requests
/// are in flight, or this many times as many tiny ones, or a mix.
pub(crate) const SHARES: u32 = 32;
/// The largest body a request holding one share may carry: a file of at most 128 KiB, sealed
/// or not (an age header is at most 64 KiB, its tags 16 bytes per 64 KiB chunk).
pub(crate) const TINY_BODY: u64 = 256 << 10;
/// The largest body a request holding [`LIGHT_SHARES`] may carry: a file of at most 1 MiB, a
/// manifest, a `backup.info`, sealed or not.
pub(crate) const LIGHT_BODY: u64 = (1 << 20) + (128 << 10);
/// The shares of a request whose body is above [`TINY_BODY`] and at most [`LIGHT_BODY`].
pub(crate) const LIGHT_SHARES: u32 = 4;

/// Descriptors kept for what is not a file in flight (the binary, logs, the runtime, a spool).
const SPARE_FILES: u64 = 64;

/// At most `wanted` file workers, each of which may hold a connection, a file and its temp
/// file open, within an open-files limit of `limit`, beside the connections of the `slots`
/// part-sized requests a large file's worker may add; at least one.
fn workers_within(wanted: usize, slots: usize, limit: Option<u64>) -> usize {
    let spare = SPARE_FILES + slots as u64;
    let fit = limit.map_or(u64::MAX, |l| l.saturating_sub(spare) / 3);
    wanted
        .min(usize::try_from(fit).unwrap_or(usize::MAX))
        .max(1)
}

/// The shares of a request whose body is at most `len` bytes (see [`SHARES`]).
fn shares_for(len: u64) -> u32 {
    if len <= TINY_BODY {
        1
    } else if len <= LIGHT_BODY {
        LIGHT_SHARES
    } else {
        SHARES
    }
}

/// The engine for one run.
#[derive(Debug, Clone)]
pub struct Transfer {
    store: SharedStore,
    cfg: Settings,
    retry: RetryPolicy,
    permits: Arc<Semaphore>,
    stats: Arc<Stats>,
    cancel: Arc<Cancel>,
    progress: Arc<dyn Progress>,
    /// The checksum mode once known (probed or configured).
    mode: Arc<tokio::sync::OnceCell<ChecksumMode>>,
    /// Where `s3.request_checksum: auto` probes the store and caches its answer.
    probe: Option<ChecksumProbe>,
    /// Client-side encryption: bodies sealed on the way out, objects opened on the way in.
    crypt: sealed::CryptMode,
}

impl Transfer {
    /// The integrity mechanism of uploads: the configured one, or with `auto` the probe's
    /// answer (found on the first upload, then cached). A probe that cannot run (no write
    /// access, store down) leaves CRC32C, the answer of every current store, for this run.
    pub async fn checksum_mode(&self) -> ChecksumMode {
        self.mode().await
    }

    /// [`Transfer::checksum_mode`], for the engine.
    pub(crate) async fn mode(&self) -> ChecksumMode {
        let Some(p) = &self.probe else {
            return self.cfg.checksum;
        };
        *self
            .mode
            .get_or_init(|| async {
                self.probe_checksums(p).await.unwrap_or_else(|e| {
                    tracing::debug!("checksum probe failed ({}): CRC32C", e.one_line());
                    self.cfg.checksum
                })
            })
            .await
    }

    /// An engine over a store with the given settings; counts into a fresh [`Stats`].
    pub fn new(store: SharedStore, cfg: Settings) -> Self {
        let stats = Arc::new(Stats::default());
        let counted = stats::counting(store, stats.clone());
        Transfer {
            store: counted,
            retry: RetryPolicy::with_attempts(cfg.max_attempts),
            permits: Arc::new(Semaphore::new(cfg.concurrency.max(1) * SHARES as usize)),
            cfg,
            stats,
            cancel: Arc::new(Cancel::default()),
            progress: Arc::new(Silent),
            mode: Arc::default(),
            probe: None,
            crypt: sealed::CryptMode::Off,
        }
    }

    /// Seals every body to these recipients and opens encrypted objects with these identities.
    pub fn with_encryption(mut self, keys: Option<Arc<crate::crypt::Keys>>) -> Self {
        self.crypt = match keys {
            Some(k) => sealed::CryptMode::Keys(k),
            None => sealed::CryptMode::Off,
        };
        self
    }

    /// The same engine moving stored bytes as they are, encrypted or not (`store get --raw`,
    /// `store put --raw`): nothing sealed, nothing opened.
    pub fn raw(&self) -> Transfer {
        Transfer {
            crypt: sealed::CryptMode::Raw,
            ..self.clone()
        }
    }

    /// Whether bodies written are sealed (client-side encryption is on).
    pub fn encrypts(&self) -> bool {
        self.crypt.keys().is_some()
    }

    /// The fingerprint of the recipients new objects are sealed to, when encrypting.
    pub fn recipients_fingerprint(&self) -> Option<u32> {
        self.crypt.keys().map(|k| k.recipients.fingerprint())
    }

    /// Whether encrypted objects can be opened: identities are configured (a host that only
    /// writes has recipients alone).
    pub fn opens_sealed(&self) -> bool {
        self.crypt.keys().is_some_and(|k| !k.identities.is_empty())
    }

    /// The progress sink (callers announce the work they are about to do).
    pub fn progress(&self) -> &Arc<dyn Progress> {
        &self.progress
    }

    /// Uses this progress sink.
    pub fn with_progress(mut self, p: Arc<dyn Progress>) -> Self {
        self.progress = p;
        self
    }

    /// Probes the store for `s3.request_checksum: auto` on the first upload, at `p`.
    pub fn with_checksum_probe(mut self, p: ChecksumProbe) -> Self {
        self.probe = Some(p);
        self
    }

    /// Uses this cancellation flag (shared with the signal handler).
    pub fn with_cancel(mut self, c: Arc<Cancel>) -> Self {
        self.cancel = c;
        self
    }

    /// Overrides the retry policy (tests use short delays).
    pub fn with_retry(mut self, r: RetryPolicy) -> Self {
        self.retry = r;
        self
    }

    /// A permit for a request whose body may be up to a part: one of `s3.concurrency`.
    pub(crate) async fn permit(&self) -> Result<OwnedSemaphorePermit> {
        self.shares(SHARES).await
    }

    /// A permit for a request whose body is at most `len` bytes: one share for a tiny body,
    /// [`LIGHT_SHARES`] for a light one, else a whole permit. What bounds a small file's
    /// transfer is the store's latency, not its bytes: more of them at once is what keeps a
    /// restore or upload of a hundred thousand small files from waiting on round trips (256
    /// tiny requests in flight with the default `s3.concurrency` of 8, as many as s5cmd's
    /// workers; 64 light ones), while the bodies in flight stay about as bounded as before:
    /// tiny ones hold at most 64 MiB, light ones 72 MiB, where 8 parts of 64 MiB may hold 512
    /// MiB (a restore holds a small file's share until the file is written).
    pub(crate) async fn permit_for(&self, len: u64) -> Result<OwnedSemaphorePermit> {
        self.shares(shares_for(len)).await
    }

    async fn shares(&self, n: u32) -> Result<OwnedSemaphorePermit> {
        tokio::select! {
            p = self.permits.clone().acquire_many_owned(n) => p.map_err(|_| Error::Failed("engine closed".into())),
            _ = self.cancel.cancelled() => Err(Error::Interrupted),
        }
    }

    /// The run's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// How many whole-file transfers to run at once when moving many files: as many as tiny
    /// requests may be in flight ([`SHARES`] × the request concurrency). A large file's
    /// transfer waits for whole permits, so the permits, not this, bound the bodies sent or
    /// received at once; requests without a body (a HEAD, a file compared by its listing) are
    /// bounded by this alone.
    pub fn file_workers(&self) -> usize {
        let slots = self.cfg.concurrency.max(1);
        workers_within(
            slots * SHARES as usize,
            slots,
            crate::runtime::open_files_limit(),
        )
    }

    /// The engine settings.
    pub fn config(&self) -> &Settings {
        &self.cfg
    }

    /// The cancellation flag.
    pub fn cancel_flag(&self) -> &Arc<Cancel> {
        &self.cancel
    }

    /// Where the store is, for messages.
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// Metadata of one object, retried. A missing key is [`Error::NotFound`] at once.
    pub async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.retry
            .run(&self.stats, &self.cancel, || self.store.head(key))
            .await
    }

    /// The bucket's Object Lock configuration in words, `None` when it is not enabled (or the
    /// store has no Object Lock).
    pub async fn object_lock_status(&self) -> Result<Option<String>> {
        let Some(locks) = self.store.retention() else {
            return Ok(None);
        };
        self.retry
            .run(&self.stats, &self.cancel, || locks.lock_status())
            .await
    }

    /// Asks for an archived object to be readable for `days` (S3 RestoreObject), retried.
    pub async fn restore_object(&self, key: &str, days: u32) -> Result<()> {
        let Some(archive) = self.store.archive() else {
            return Err(Error::Failed(format!(
                "{}: {key} cannot be restored: this store has no archive classes",
                self.describe()
            )));
        };
        self.retry
            .run(&self.stats, &self.cancel, || archive.restore(key, days))
            .await
    }

    /// Metadata of one object, or `None` when it does not exist.
    pub async fn head_opt(&self, key: &str) -> Result<Option<ObjectMeta>> {
        match self.head(key).await {
            Ok(m) => Ok(Some(m)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of a listing (`token`: where the previous page said the next begins), retried.
    pub async fn list_page(&self, req: &ListRequest, token: Option<&str>) -> Result<ListPage> {
        self.retry
            .run(&self.stats, &self.cancel, || {
                self.store.list_page(req, token)
            })
            .await
    }

    /// Calls `f` for each page of a listing until it returns `false` or the listing ends. A
    /// failed page (after retries) is an error: callers must never mistake it for "empty".
    pub async fn list_pages<F>(&self, req: &ListRequest, mut f: F) -> Result<()>
    where
        F: FnMut(Vec<ObjectMeta>, Vec<String>) -> bool,
    {
        let mut token: Option<String> = None;
        loop {
            let page = self
                .retry
                .run(&self.stats, &self.cancel, || {
                    self.store.list_page(req, token.as_deref())
                })
                .await?;
            let more = f(page.objects, page.prefixes);
            match page.next {
                Some(t) if more => token = Some(t),
                _ => return Ok(()),
            }
        }
    }

    /// Every object under a request's prefix (all pages).
    pub async fn list_all(&self, req: &ListRequest) -> Result<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        self.list_pages(req, |objs, _| {
            out.extend(objs);
            true
        })
        .await?;
        Ok(out)
    }

    /// Deletes keys in batches of at most 1000; any key that could not be deleted is an error.
    pub async fn delete_keys(&self, keys: &[String]) -> Result<()> {
        for batch in keys.chunks(MAX_DELETE_BATCH) {
            let failures = self
                .retry
                .run(&self.stats, &self.cancel, || self.store.delete_batch(batch))
                .await?;
            if let Some(f) = failures.first() {
                return Err(Error::Failed(format!(
                    "could not delete {} of {} keys, first {}: {}",
                    failures.len(),
                    batch.len(),
                    f.key,
                    f.message
                )));
            }
        }
        Ok(())
    }

    /// Deletes every object under `prefix` (all pages); returns how many there were.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize> {
        let req = ListRequest {
            prefix: prefix.to_string(),
            ..Default::default()
        };
        let keys: Vec<String> = self
            .list_all(&req)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        self.delete_keys(&keys).await?;
        Ok(keys.len())
    }

    /// Incomplete multipart uploads under a prefix.
    pub async fn incomplete_uploads(&self, prefix: &str) -> Result<Vec<MultipartUpload>> {
        self.retry
            .run(&self.stats, &self.cancel, || {
                self.store.multipart().list_uploads(prefix)
            })
            .await
    }

    /// Aborts incomplete uploads under a prefix that started more than `older_than` ago
    /// (uploads without a start time count as old). Returns what was aborted.
    pub async fn abort_stale_uploads(
        &self,
        prefix: &str,
        older_than: Duration,
    ) -> Result<Vec<MultipartUpload>> {
        let now = SystemTime::now();
        let mut aborted = Vec::new();
        for u in self.incomplete_uploads(prefix).await? {
            let age = u.initiated.and_then(|t| now.duration_since(t).ok());
            if age.is_none_or(|a| a >= older_than) {
                self.abort(&u.upload).await?;
                aborted.push(u);
            }
        }
        Ok(aborted)
    }

    /// Aborts the multipart upload of `key` an interrupted run recorded in `journal`, then
    /// forgets it. For an object now made another way (one PUT, a server-side copy): nothing
    /// would resume that upload, and its parts would stay stored, and billed, until `store
    /// uploads --abort-older-than` or a lifecycle rule. A journal of another key is not ours to
    /// end. Best effort: a failed abort keeps the journal for the next run.
    pub async fn discard_journal(&self, journal: &dyn UploadJournal, key: &str) {
        let Some(old) = journal.load().filter(|old| old.key == key) else {
            return;
        };
        let done = match self.abort(&old.upload()).await {
            Ok(()) => journal.clear(),
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            tracing::warn!(
                "could not abort the interrupted upload of {} ({}); a later run tries again",
                old.key,
                e.one_line()
            );
        }
    }

    pub(crate) async fn abort(&self, up: &Upload) -> Result<()> {
        // Abort even when the run is cancelled: it is the clean-up of a cancelled run.
        let never = Cancel::default();
        self.retry
            .run(&self.stats, &never, || self.store.multipart().abort(up))
            .await
    }
}

/// Runs `f` over `jobs` with at most `workers` at once and collects the results (in completion
/// order). After the first failure no new job starts; the running ones finish and the first
/// error is returned.
pub async fn bounded<J, T, F, Fut>(
    jobs: impl IntoIterator<Item = J>,
    workers: usize,
    f: F,
) -> Result<Vec<T>>
where
    F: Fn(J) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut out = Vec::new();
    let mut first_err = None;
    fn take<T>(
        r: std::result::Result<Result<T>, tokio::task::JoinError>,
        out: &mut Vec<T>,
        first_err: &mut Option<Error>,
    ) {
        match r {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(Error::Failed(format!("worker failed: {e}")));
            }
        }
    }
    for job in jobs {
        while set.len() >= workers.max(1) {
            if let Some(r) = set.join_next().await {
                take(r, &mut out, &mut first_err);
            }
        }
        if first_err.is_some() {
            break;
        }
        set.spawn(f(job));
    }
    while let Some(r) = set.join_next().await {
        take(r, &mut out, &mut first_err);
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Location;
    use std::time::Duration;

    /// Whether `f` is still waiting after a moment.
    async fn waits<F: std::future::Future>(f: F) -> bool {
        tokio::time::timeout(Duration::from_millis(50), f)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn small_requests_share_a_permit_and_large_ones_take_it_whole() {
        let dir = tempfile::tempdir().expect("tmp");
        let loc = Location::Local {
            root: dir.path().to_path_buf(),
        };
        let settings = Settings {
            concurrency: 2,
            ..Settings::default()
        };
        let t = EngineBuilder::new(settings)
            .open(&loc, &Default::default())
            .await
            .expect("open");
        assert!((1..=2 * SHARES as usize).contains(&t.file_workers()));
        // Within the open-files limit, beside 64 spare and one per request slot: 1024 holds
        // 317 workers with 8 slots, 256 holds 61.
        assert_eq!(workers_within(256, 8, Some(1024)), 256);
        assert_eq!(workers_within(1024, 8, Some(1024)), 317);
        assert_eq!(workers_within(256, 8, Some(256)), 61);
        assert_eq!(workers_within(256, 8, Some(10)), 1);
        assert_eq!(workers_within(256, 8, None), 256);
        assert_eq!(
            [0, TINY_BODY, TINY_BODY + 1, LIGHT_BODY, LIGHT_BODY + 1].map(shares_for),
            [1, 1, LIGHT_SHARES, LIGHT_SHARES, SHARES]
        );
        let large = t.permit().await.expect("one large request");
        // The other permit: light requests, then tiny ones in what they leave.
        let mut small = Vec::new();
        for _ in 0..SHARES / LIGHT_SHARES - 1 {
            small.push(t.permit_for(LIGHT_BODY).await.expect("a light request"));
        }
        for _ in 0..LIGHT_SHARES {
            small.push(t.permit_for(TINY_BODY).await.expect("a tiny request"));
        }
        assert!(waits(t.permit_for(0)).await, "the small ones fill the rest");
        assert!(
            waits(t.permit_for(LIGHT_BODY + 1)).await,
            "no room for a large one"
        );
        small.pop();
        assert!(
            waits(t.permit_for(LIGHT_BODY)).await,
            "a light one needs all its shares"
        );
        assert!(waits(t.permit()).await, "a large one needs a whole permit");
        small.clear();
        let second = t.permit().await.expect("a second large request");
        assert!(
            waits(t.permit_for(0)).await,
            "two large ones hold everything"
        );
        drop((large, second));
        assert!(!waits(t.permit_for(0)).await);
    }
}
