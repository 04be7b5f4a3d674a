//! The forwarding store behind [`super::observe`]: every request of every store trait goes to
//! the inner store and is shown to the observer, a GET once its body has been read. Each
//! trait's impl denies `clippy::missing_trait_methods`, so a method added to a trait later must
//! be forwarded here too, not inherited from a default that would bypass the observer; a
//! capability is offered exactly when the inner store offers it.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Observer, Op, Request, current_attempt, status_of};
use crate::error::{Error, Result};
use crate::store::{
    Archive, Body, BodyReader, ByteRange, DeleteFailure, GetResponse, ListPage, ListRequest,
    LockSpec, Multipart, MultipartUpload, ObjectMeta, ObjectRange, PartReceipt, PutOptions,
    PutReceipt, Retention, ServerCopy, SharedStore, Store, Upload, VersionMarker, VersionPage,
    Versioning, Versions,
};

/// A store that shows every request it forwards to an observer.
#[derive(Debug)]
pub(super) struct ObservedStore {
    pub(super) inner: SharedStore,
    pub(super) observer: Arc<dyn Observer>,
}

impl ObservedStore {
    /// Announces a request, awaits it and reports its outcome.
    async fn observed<T>(
        &self,
        op: Op,
        key: &str,
        sent: u64,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let req = Request {
            op,
            key,
            attempt: current_attempt().unwrap_or(1),
            sent,
            ranged: false,
            started: Instant::now(),
        };
        self.observer.sending(&req);
        let r = fut.await;
        self.observer.answered(&req, status_of(&req, &r), 0);
        r
    }

    /// A GET (of the current object or of one version), reported when its body has been read.
    async fn observed_get(
        &self,
        key: &str,
        range: Option<ByteRange>,
        fut: impl Future<Output = Result<GetResponse>>,
    ) -> Result<GetResponse> {
        let req = Request {
            op: Op::Get,
            key,
            attempt: current_attempt().unwrap_or(1),
            sent: 0,
            ranged: range.is_some(),
            started: Instant::now(),
        };
        self.observer.sending(&req);
        match fut.await {
            // The answer is reported when its body has been read.
            Ok(mut resp) => {
                resp.body = Box::new(ObservedBody {
                    inner: resp.body,
                    observer: self.observer.clone(),
                    key: key.to_string(),
                    attempt: req.attempt,
                    ranged: req.ranged,
                    started: req.started,
                    received: 0,
                    reported: false,
                });
                Ok(resp)
            }
            Err(e) => {
                let r = Err(e);
                self.observer.answered(&req, status_of(&req, &r), 0);
                r
            }
        }
    }

    /// The inner store's capability, which it offered when this store offered its own.
    fn inner<'a, T: ?Sized>(&self, cap: Option<&'a T>, what: &str) -> Result<&'a T> {
        cap.ok_or_else(|| Error::Failed(format!("{}: {what} is not offered", self.describe())))
    }
}

/// A GET body that reports its request once the body ends, fails or is dropped, with the
/// bytes actually received.
struct ObservedBody {
    inner: Box<dyn BodyReader>,
    observer: Arc<dyn Observer>,
    key: String,
    attempt: u32,
    ranged: bool,
    started: Instant,
    received: u64,
    reported: bool,
}

impl fmt::Debug for ObservedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "observed body of {}", self.key)
    }
}

impl ObservedBody {
    fn report(&mut self) {
        if !self.reported {
            self.reported = true;
            let req = Request {
                op: Op::Get,
                key: &self.key,
                attempt: self.attempt,
                sent: 0,
                ranged: self.ranged,
                started: self.started,
            };
            let status = status_of(&req, &Ok(()));
            self.observer.answered(&req, status, self.received);
        }
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        self.report();
    }
}

#[async_trait]
impl BodyReader for ObservedBody {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        let c = self.inner.next_chunk().await;
        match &c {
            Ok(Some(b)) => self.received += b.len() as u64,
            Ok(None) | Err(_) => self.report(),
        }
        c
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Store for ObservedStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn put(&self, key: &str, body: Body, opts: &PutOptions) -> Result<PutReceipt> {
        let n = body.len();
        let fut = self.inner.put(key, body, opts);
        self.observed(Op::Put, key, n, fut).await
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetResponse> {
        self.observed_get(key, range, self.inner.get(key, range))
            .await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.observed(Op::Head, key, 0, self.inner.head(key)).await
    }

    async fn list_page(&self, req: &ListRequest, token: Option<&str>) -> Result<ListPage> {
        let fut = self.inner.list_page(req, token);
        self.observed(Op::List, &req.prefix, 0, fut).await
    }

    async fn delete_batch(&self, keys: &[String]) -> Result<Vec<DeleteFailure>> {
        // One request, one line: the key column names the batch's first key.
        let first = keys.first().map(String::as_str).unwrap_or("");
        let fut = self.inner.delete_batch(keys);
        self.observed(Op::Delete, first, 0, fut).await
    }

    fn multipart(&self) -> &dyn Multipart {
        self
    }

    fn copier(&self) -> Option<&dyn ServerCopy> {
        self.inner.copier().map(|_| self as &dyn ServerCopy)
    }

    fn archive(&self) -> Option<&dyn Archive> {
        self.inner.archive().map(|_| self as &dyn Archive)
    }

    fn retention(&self) -> Option<&dyn Retention> {
        self.inner.retention().map(|_| self as &dyn Retention)
    }

    fn versions(&self) -> Option<&dyn Versions> {
        self.inner.versions().map(|_| self as &dyn Versions)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Multipart for ObservedStore {
    async fn create(&self, key: &str, opts: &PutOptions) -> Result<Upload> {
        let fut = self.inner.multipart().create(key, opts);
        self.observed(Op::CreateMultipart, key, 0, fut).await
    }

    async fn upload_part(&self, up: &Upload, part: u32, body: Body) -> Result<PartReceipt> {
        let n = body.len();
        let fut = self.inner.multipart().upload_part(up, part, body);
        self.observed(Op::UploadPart, &up.key, n, fut).await
    }

    async fn complete(&self, up: &Upload, parts: &[PartReceipt]) -> Result<PutReceipt> {
        let fut = self.inner.multipart().complete(up, parts);
        self.observed(Op::CompleteMultipart, &up.key, 0, fut).await
    }

    async fn abort(&self, up: &Upload) -> Result<()> {
        let fut = self.inner.multipart().abort(up);
        self.observed(Op::AbortMultipart, &up.key, 0, fut).await
    }

    async fn list_parts(&self, up: &Upload) -> Result<Vec<PartReceipt>> {
        let fut = self.inner.multipart().list_parts(up);
        self.observed(Op::ListParts, &up.key, 0, fut).await
    }

    async fn list_uploads(&self, prefix: &str) -> Result<Vec<MultipartUpload>> {
        let fut = self.inner.multipart().list_uploads(prefix);
        self.observed(Op::ListMultipart, prefix, 0, fut).await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ServerCopy for ObservedStore {
    async fn copy(&self, src: &str, dst: &str, opts: &PutOptions) -> Result<PutReceipt> {
        let inner = self.inner(self.inner.copier(), "server-side copy")?;
        self.observed(Op::Copy, dst, 0, inner.copy(src, dst, opts))
            .await
    }

    async fn copy_part(&self, up: &Upload, part: u32, src: &ObjectRange) -> Result<PartReceipt> {
        let inner = self.inner(self.inner.copier(), "server-side copy")?;
        let fut = inner.copy_part(up, part, src);
        self.observed(Op::UploadPartCopy, &up.key, 0, fut).await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Archive for ObservedStore {
    async fn restore(&self, key: &str, days: u32) -> Result<()> {
        let inner = self.inner(self.inner.archive(), "restore from archive")?;
        self.observed(Op::Restore, key, 0, inner.restore(key, days))
            .await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Retention for ObservedStore {
    async fn lock_status(&self) -> Result<Option<String>> {
        let inner = self.inner(self.inner.retention(), "Object Lock")?;
        self.observed(Op::Head, "", 0, inner.lock_status()).await
    }

    async fn put_locked(&self, key: &str, body: Bytes, lock: LockSpec) -> Result<String> {
        let inner = self.inner(self.inner.retention(), "Object Lock")?;
        let n = body.len() as u64;
        self.observed(Op::Put, key, n, inner.put_locked(key, body, lock))
            .await
    }

    async fn set_retention(
        &self,
        key: &str,
        version_id: &str,
        lock: Option<LockSpec>,
    ) -> Result<()> {
        let inner = self.inner(self.inner.retention(), "Object Lock")?;
        let fut = inner.set_retention(key, version_id, lock);
        self.observed(Op::PutRetention, key, 0, fut).await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Versions for ObservedStore {
    async fn versioning(&self) -> Result<Versioning> {
        let inner = self.inner(self.inner.versions(), "object versions")?;
        self.observed(Op::Head, "", 0, inner.versioning()).await
    }

    async fn list_versions_page(
        &self,
        prefix: &str,
        after: Option<&VersionMarker>,
    ) -> Result<VersionPage> {
        let inner = self.inner(self.inner.versions(), "object versions")?;
        let fut = inner.list_versions_page(prefix, after);
        self.observed(Op::ListVersions, prefix, 0, fut).await
    }

    async fn get_version(
        &self,
        key: &str,
        version_id: &str,
        range: Option<ByteRange>,
    ) -> Result<GetResponse> {
        let inner = self.inner(self.inner.versions(), "object versions")?;
        let fut = inner.get_version(key, version_id, range);
        self.observed_get(key, range, fut).await
    }

    async fn head_version(&self, key: &str, version_id: &str) -> Result<ObjectMeta> {
        let inner = self.inner(self.inner.versions(), "object versions")?;
        let fut = inner.head_version(key, version_id);
        self.observed(Op::Head, key, 0, fut).await
    }

    async fn delete_version(&self, key: &str, version_id: &str) -> Result<()> {
        let inner = self.inner(self.inner.versions(), "object versions")?;
        let fut = inner.delete_version(key, version_id);
        self.observed(Op::Delete, key, 0, fut).await
    }
}
