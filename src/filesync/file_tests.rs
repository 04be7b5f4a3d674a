//! A file written to while it is uploaded: sent again once, then a failure of that file; the
//! object's metadata always names the stamp taken before the read that filled it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::store::local::LocalStore;
use crate::store::reqlog::{self, Observer, Op, Request};
use crate::transfer::Settings;

/// Appends to `file` as each of the first `writes` PUTs of the store it watches is sent.
#[derive(Debug)]
struct Writer {
    file: PathBuf,
    writes: u32,
    puts: AtomicU32,
}

impl Observer for Writer {
    fn sending(&self, req: &Request<'_>) {
        if req.op == Op::Put && self.puts.fetch_add(1, Ordering::SeqCst) < self.writes {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&self.file)
                .expect("open");
            std::io::Write::write_all(&mut f, b" and more").expect("append");
        }
    }
    fn answered(&self, _req: &Request<'_>, _status: Option<u16>, _received: u64) {}
}

fn engine(bucket: &Path, file: &Path, writes: u32) -> Transfer {
    let writer = Writer {
        file: file.to_path_buf(),
        writes,
        puts: AtomicU32::new(0),
    };
    let store = Arc::new(LocalStore::open(bucket).expect("store"));
    Transfer::new(
        reqlog::observe(store, Arc::new(writer)),
        Settings::default(),
    )
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
        etag: None,
        sent: None,
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
    // The sync record gets the stamp the object carries and the object's ETag.
    let Outcome::Uploaded { sent: Some(s), .. } = out else {
        panic!("no record row: {out:?}");
    };
    assert_eq!((s.size, s.mtime.as_str()), (14, now.mtime_text().as_str()));
    assert_eq!(Some(s.etag), head.etag);
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
        decide::by_metadata(&now, Some(&head), Compare::SizeMtime, Stored::Plain),
        Verdict::Upload
    );
}
