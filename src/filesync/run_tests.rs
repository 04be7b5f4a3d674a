//! A file written to while it is uploaded: sent again once, then a failure of that file; the
//! object's metadata always names the stamp taken before the read that filled it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use super::*;
use crate::store::local::LocalStore;
use crate::store::{
    ByteRange, ChecksumAlgorithm, DeleteFailure, GetResponse, Integrity, ListPage, MultipartUpload,
    PartReceipt, PutReceipt, Store,
};
use crate::transfer::Settings;

/// The local store, appending to `file` during the first `writes` PUTs it receives.
#[derive(Debug)]
struct Writer {
    inner: LocalStore,
    file: PathBuf,
    writes: u32,
    puts: AtomicU32,
}

#[async_trait]
impl Store for Writer {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        i: Integrity,
        o: &PutOptions,
    ) -> Result<PutReceipt> {
        if self.puts.fetch_add(1, Ordering::SeqCst) < self.writes {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&self.file)
                .expect("open");
            std::io::Write::write_all(&mut f, b" and more").expect("append");
        }
        self.inner.put(key, body, i, o).await
    }
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetResponse> {
        self.inner.get(key, range).await
    }
    async fn head(&self, key: &str) -> Result<crate::store::ObjectMeta> {
        self.inner.head(key).await
    }
    async fn list_page(&self, req: &ListRequest, token: Option<&str>) -> Result<ListPage> {
        self.inner.list_page(req, token).await
    }
    async fn delete_batch(&self, keys: &[String]) -> Result<Vec<DeleteFailure>> {
        self.inner.delete_batch(keys).await
    }
    async fn create_multipart(
        &self,
        key: &str,
        a: Option<ChecksumAlgorithm>,
        o: &PutOptions,
    ) -> Result<String> {
        self.inner.create_multipart(key, a, o).await
    }
    async fn upload_part(
        &self,
        key: &str,
        id: &str,
        n: u32,
        body: Bytes,
        i: Integrity,
    ) -> Result<PartReceipt> {
        self.inner.upload_part(key, id, n, body, i).await
    }
    async fn complete_multipart(
        &self,
        key: &str,
        id: &str,
        p: &[PartReceipt],
    ) -> Result<PutReceipt> {
        self.inner.complete_multipart(key, id, p).await
    }
    async fn abort_multipart(&self, key: &str, id: &str) -> Result<()> {
        self.inner.abort_multipart(key, id).await
    }
    async fn list_parts(&self, key: &str, id: &str) -> Result<Vec<PartReceipt>> {
        self.inner.list_parts(key, id).await
    }
    async fn list_multipart(&self, prefix: &str) -> Result<Vec<MultipartUpload>> {
        self.inner.list_multipart(prefix).await
    }
}

fn engine(bucket: &Path, file: &Path, writes: u32) -> Transfer {
    let store = Writer {
        inner: LocalStore::open(bucket).expect("store"),
        file: file.to_path_buf(),
        writes,
        puts: AtomicU32::new(0),
    };
    Transfer::new(Arc::new(store), Settings::default())
}

fn job(path: &Path) -> FileJob {
    let Probe::File(stamp) = local::probe(path, XattrNs::User) else {
        panic!("not a file");
    };
    FileJob {
        rel: "f".into(),
        path: path.to_path_buf(),
        key: "k".into(),
        stamp,
        known: Known::Unknown,
    }
}

#[tokio::test]
async fn a_file_changed_during_its_upload_is_sent_again() {
    let d = tempfile::tempdir().expect("tmp");
    let (bucket, file) = (d.path().join("bucket"), d.path().join("f"));
    std::fs::create_dir(&bucket).expect("mkdir");
    std::fs::write(&file, b"first").expect("w");
    let t = engine(&bucket, &file, 1);
    let out = upload_stable(&t, job(&file), XattrNs::User)
        .await
        .expect("upload");
    assert!(
        matches!(out, Outcome::Uploaded { bytes: 14, .. }),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read(bucket.join("k")).expect("object"),
        b"first and more"
    );
    let head = t.head("k").await.expect("head");
    let now = job(&file).stamp;
    assert_eq!(head.metadata[decide::META_MTIME], now.mtime_text());
    assert_eq!(head.metadata[decide::META_SIZE], "14");
}

#[tokio::test]
async fn a_file_changed_during_both_uploads_fails() {
    let d = tempfile::tempdir().expect("tmp");
    let (bucket, file) = (d.path().join("bucket"), d.path().join("f"));
    std::fs::create_dir(&bucket).expect("mkdir");
    std::fs::write(&file, b"first").expect("w");
    let before = job(&file);
    let t = engine(&bucket, &file, 2);
    let out = upload_stable(&t, before.clone(), XattrNs::User)
        .await
        .expect("run");
    assert!(
        matches!(&out, Outcome::Failed(m) if m.contains("twice")),
        "{out:?}"
    );
    // What the bucket holds is marked with a stamp the file no longer has: the next run sends
    // it again.
    let head = t.head("k").await.expect("head");
    let now = job(&file).stamp;
    assert_eq!(
        decide::by_metadata(&now, Some(&head), Compare::SizeMtime),
        Verdict::Upload
    );
}
