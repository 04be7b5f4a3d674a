//! The one way a run gets its engine: every engine setting is applied here, so no command (and
//! not the gpbackup plugin) can build a [`Transfer`] that silently lacks one.
//!
//! The store is opened from its validated location and options (which carry the bandwidth cap
//! and the connection settings), wrapped in the request log and any observer the run names; the
//! engine then gets its [`Settings`] (part size, concurrency, attempts), the checksum probe when
//! `s3.request_checksum: auto`, the progress sink and the run's cancel flag. Callers hand over
//! validated values only: this module knows neither the config file nor the command line.

use std::sync::Arc;

use super::probe::ChecksumProbe;
use super::{Cancel, Settings, Transfer};
use crate::error::Result;
use crate::progress::Progress;
use crate::store::reqlog::{self, Observer, RequestLog};
use crate::store::s3::S3Options;
use crate::store::{Location, SharedStore};

/// Collects a run's engine settings and runtime handles, then opens the store and builds the
/// engine ([`EngineBuilder::open`]).
#[derive(Debug, Clone)]
pub struct EngineBuilder {
    settings: Settings,
    request_log: Option<RequestLog>,
    observers: Vec<Arc<dyn Observer>>,
    probe: Option<ChecksumProbe>,
    progress: Option<Arc<dyn Progress>>,
    cancel: Option<Arc<Cancel>>,
    encryption: Option<Arc<crate::crypt::Keys>>,
    as_of: Option<std::time::SystemTime>,
}

impl EngineBuilder {
    /// An engine with these settings, no request log, silent, with a cancel flag of its own.
    pub fn new(settings: Settings) -> Self {
        EngineBuilder {
            settings,
            request_log: None,
            observers: Vec::new(),
            probe: None,
            progress: None,
            cancel: None,
            encryption: None,
            as_of: None,
        }
    }

    /// Seals every body written to these recipients, opens what is read with these
    /// identities (`encryption:`).
    pub fn encryption(mut self, keys: Option<crate::crypt::Keys>) -> Self {
        self.encryption = keys.map(Arc::new);
        self
    }

    /// Reads the bucket as it was at this time (`--as-of`): a read-only store over the
    /// bucket's versions, outside the request log so that it shows the requests made.
    pub fn as_of(mut self, time: Option<std::time::SystemTime>) -> Self {
        self.as_of = time;
        self
    }

    /// Logs every request to this file (`--request-log`), when one is named.
    pub fn request_log(mut self, log: Option<&RequestLog>) -> Self {
        self.request_log = log.cloned();
        self
    }

    /// Lets `observer` see every request the store makes (after the request log).
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observers.push(observer);
        self
    }

    /// Where `s3.request_checksum: auto` probes the store and caches its answer. Used only when
    /// the settings ask for the probe ([`Settings::probe_checksum`]); an engine whose settings
    /// ask for it without a place to probe keeps the configured mode.
    pub fn checksum_probe(mut self, probe: ChecksumProbe) -> Self {
        self.probe = Some(probe);
        self
    }

    /// Reports progress to this sink (a terminal's bars); silent otherwise.
    pub fn progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Shares this cancel flag (the signal handler's).
    pub fn cancel(mut self, cancel: Arc<Cancel>) -> Self {
        self.cancel = Some(cancel);
        self
    }

    /// Opens the store at `location` and builds the engine on it.
    pub async fn open(self, location: &Location, s3: &S3Options) -> Result<Transfer> {
        Ok(self.open_with_store(location, s3).await?.0)
    }

    /// [`EngineBuilder::open`], also returning the store as the engine sees it (request log and
    /// observers included, the engine's counters not), for work that reaches the store beside
    /// the engine and counts itself into [`Transfer::stats`].
    pub async fn open_with_store(
        self,
        location: &Location,
        s3: &S3Options,
    ) -> Result<(Transfer, SharedStore)> {
        let store = self.wrap(crate::store::open(location, s3).await?);
        Ok((self.engine(store.clone()), store))
    }

    /// Builds the engine on a store opened elsewhere (an embedder's or a test's), wrapped in the
    /// request log and observers like an opened one.
    pub fn build(self, store: SharedStore) -> Transfer {
        let store = self.wrap(store);
        self.engine(store)
    }

    fn wrap(&self, store: SharedStore) -> SharedStore {
        let logged = reqlog::wrap(store, self.request_log.as_ref());
        let observed = self
            .observers
            .iter()
            .fold(logged, |s, o| reqlog::observe(s, o.clone()));
        match self.as_of {
            Some(t) => crate::store::asof::wrap(observed, t),
            None => observed,
        }
    }

    fn engine(self, store: SharedStore) -> Transfer {
        let probe = self.probe.filter(|_| self.settings.probe_checksum);
        let mut t = Transfer::new(store, self.settings).with_encryption(self.encryption);
        if let Some(p) = probe {
            t = t.with_checksum_probe(p);
        }
        if let Some(p) = self.progress {
            t = t.with_progress(p);
        }
        if let Some(c) = self.cancel {
            t = t.with_cancel(c);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::transfer::ChecksumMode;

    fn local() -> (tempfile::TempDir, Location) {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().join("bucket");
        std::fs::create_dir_all(&root).expect("bucket");
        (dir, Location::Local { root })
    }

    /// The keys of the requests a store was asked to make, in order.
    #[derive(Debug, Default)]
    struct Keys(Mutex<Vec<String>>);

    impl Keys {
        fn seen(&self) -> Vec<String> {
            self.0.lock().expect("keys").clone()
        }
    }

    impl Observer for Keys {
        fn answered(&self, req: &reqlog::Request<'_>, _status: Option<u16>, _received: u64) {
            self.0.lock().expect("keys").push(req.key.to_string());
        }
    }

    async fn probed(probe_checksum: bool) -> (Vec<String>, ChecksumMode) {
        let (dir, loc) = local();
        let keys = Arc::new(Keys::default());
        let settings = Settings {
            checksum: ChecksumMode::WhenRequired,
            probe_checksum,
            ..Settings::default()
        };
        let t = EngineBuilder::new(settings)
            .observer(keys.clone())
            .checksum_probe(ChecksumProbe {
                cache: dir.path().join("checksum.json"),
                key: "the-probe".into(),
            })
            .open(&loc, &S3Options::default())
            .await
            .expect("open");
        let mode = t.checksum_mode().await;
        (keys.seen(), mode)
    }

    #[tokio::test]
    async fn the_probe_runs_when_the_settings_ask_for_it() {
        let (keys, _) = probed(true).await;
        assert!(keys.iter().any(|k| k == "the-probe"), "{keys:?}");
    }

    #[tokio::test]
    async fn a_configured_checksum_mode_is_kept_without_probing() {
        assert_eq!(probed(false).await, (vec![], ChecksumMode::WhenRequired));
    }

    #[tokio::test]
    async fn settings_and_cancel_flag_reach_the_engine() {
        let (_dir, loc) = local();
        let cancel = Arc::new(Cancel::default());
        let t = EngineBuilder::new(Settings {
            concurrency: 3,
            ..Settings::default()
        })
        .cancel(cancel.clone())
        .open(&loc, &S3Options::default())
        .await
        .expect("open");
        assert_eq!(t.config().concurrency, 3);
        cancel.cancel();
        assert!(t.cancel_flag().is_cancelled());
    }

    #[tokio::test]
    async fn observers_see_the_engine_requests_and_the_returned_store_is_the_observed_one() {
        let (_dir, loc) = local();
        let keys = Arc::new(Keys::default());
        let (t, store) = EngineBuilder::new(Settings::default())
            .observer(keys.clone())
            .open_with_store(&loc, &S3Options::default())
            .await
            .expect("open");
        assert!(t.head_opt("by-engine").await.expect("head").is_none());
        assert!(store.head("beside").await.is_err());
        assert_eq!(keys.seen(), ["by-engine", "beside"]);
        assert_eq!(
            t.stats().snapshot().total_requests,
            1,
            "only the engine's counts"
        );
    }
}
