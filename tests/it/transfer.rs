//! Transfer engine on both backends: byte-identical round trips across part boundaries (files
//! and pipes), verification catching changed bytes, resume of an interrupted upload, abort of
//! one that is not resumed or whose file goes in one PUT, supersession of one a killed run left
//! behind, and the request counter.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::common::{Backend, data, open, small_transfer};
use barmans3::Error;
use barmans3::checksum;
use barmans3::progress::Progress;
use barmans3::store::{PutOptions, SharedStore, join_key};
use barmans3::transfer::Settings;
use barmans3::transfer::{
    Cancel, CopyExpect, Expect, FileJournal, Op, Transfer, UploadJournal, Verified,
};

const MIB: usize = 1 << 20;
const SIZES: [usize; 6] = [0, 1, 5 * MIB - 1, 5 * MIB, 5 * MIB + 1, 16 * MIB];

async fn pipe_of(path: &std::path::Path) -> tokio::process::ChildStdout {
    let mut child = tokio::process::Command::new("cat")
        .arg(path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn cat");
    child.stdout.take().expect("stdout pipe")
}

async fn round_trips(b: Backend, sizes: &[usize]) {
    let (store, prefix, _d) = open(b, "rt").await;
    let t = Transfer::new(store, small_transfer());
    let dir = tempfile::tempdir().expect("tmp");
    for (i, &size) in sizes.iter().enumerate() {
        let body = data(size, i as u64 + 10);
        let src = dir.path().join(format!("src-{size}"));
        std::fs::write(&src, &body).expect("write src");

        // File path: upload, download to file and to a stream.
        let key = join_key(&prefix, &format!("file-{size}"));
        let up = t.upload_file(&src, &key, None).await.expect("upload file");
        assert_eq!(up.size, size as u64);
        assert_eq!(up.crc32c, checksum::crc32c(&body), "size {size}");
        let dest = dir.path().join(format!("dst-{size}"));
        let down = t
            .download_file(&key, &dest, Expect::default())
            .await
            .expect("download file");
        assert_eq!(
            std::fs::read(&dest).expect("read dest"),
            body,
            "file round trip, size {size}"
        );
        assert_eq!(down.crc32c, up.crc32c);
        // The same, made durable by the caller (a restore's barrier): in place and verified.
        let unsynced = dir.path().join(format!("dst-unsynced-{size}"));
        let down = t
            .download_file_unsynced(&key, &unsynced, Expect::default())
            .await
            .expect("download file, unsynced");
        assert!(
            std::fs::read(&unsynced).expect("read dest") == body,
            "unsynced file round trip, size {size}"
        );
        assert_eq!(down.crc32c, up.crc32c);
        let mut out = Vec::new();
        t.download_to(
            &key,
            &mut out,
            Expect {
                size: Some(size as u64),
                crc32c: Some(up.crc32c),
            },
        )
        .await
        .expect("download stream");
        assert!(out == body, "stream download, size {size}");

        // Stream path: from a real pipe.
        let key = join_key(&prefix, &format!("pipe-{size}"));
        let up = t
            .upload_stream(pipe_of(&src).await, &key)
            .await
            .expect("upload stream");
        assert_eq!(
            (up.size, up.crc32c),
            (size as u64, checksum::crc32c(&body)),
            "pipe size {size}"
        );
        let mut out = Vec::new();
        t.download_to(&key, &mut out, Expect::default())
            .await
            .expect("download pipe object");
        assert!(out == body, "pipe round trip, size {size}");
    }
    assert!(
        t.incomplete_uploads(&prefix)
            .await
            .expect("list uploads")
            .is_empty()
    );
}

async fn boundary_sizes(b: Backend) {
    round_trips(b, &SIZES).await;
}

async fn odd_hundred_mib_many_parts(b: Backend) {
    round_trips(b, &[100 * MIB + 12_345]).await;
}

async fn changed_bytes_are_detected(b: Backend) {
    let (store, prefix, dir) = open(b, "tamper").await;
    let t = Transfer::new(store.clone(), small_transfer());
    let tmp = tempfile::tempdir().expect("tmp");
    for size in [1000usize, 12 * MIB] {
        let body = data(size, 7);
        let src = tmp.path().join("src");
        std::fs::write(&src, &body).expect("write");
        let key = join_key(&prefix, &format!("obj-{size}"));
        let up = t.upload_file(&src, &key, None).await.expect("upload");
        let mut other = body.clone();
        other[size / 2] ^= 0xff;
        match (&dir, b) {
            // On file:// the bytes really change behind our back, with the same size.
            (Some(d), Backend::Local) => {
                std::fs::write(d.path().join(&key), &other).expect("tamper")
            }
            // On S3 the object is replaced; our record (the manifest's CRC) no longer matches.
            _ => {
                std::fs::write(&src, &other).expect("write");
                t.upload_file(&src, &key, None).await.expect("replace");
            }
        }
        let expect = Expect {
            size: Some(size as u64),
            crc32c: Some(up.crc32c),
        };
        let dest = tmp.path().join("dest");
        let e = t
            .download_file(&key, &dest, expect)
            .await
            .expect_err("must not verify");
        assert!(matches!(e, Error::Checksum { .. }), "size {size}: {e}");
        assert!(
            !dest.exists(),
            "a failed download leaves no destination file"
        );
        let e = t
            .download_file_unsynced(&key, &dest, expect)
            .await
            .expect_err("must not verify, unsynced");
        assert!(matches!(e, Error::Checksum { .. }), "size {size}: {e}");
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .filter(|n| n != "src")
            .collect();
        assert!(
            left.is_empty(),
            "a failed unsynced download leaves nothing: {left:?}"
        );
        let mut out = Vec::new();
        let e = t
            .download_to(&key, &mut out, expect)
            .await
            .expect_err("must not verify");
        assert!(matches!(e, Error::Checksum { .. }), "{e}");
    }
}

async fn interrupted_upload_resumes_only_missing_parts(b: Backend) {
    let (store, prefix, _d) = open(b, "resume").await;
    let tmp = tempfile::tempdir().expect("tmp");
    let body = data(60 * MIB + 3, 9);
    let src = tmp.path().join("big");
    std::fs::write(&src, &body).expect("write");
    let key = join_key(&prefix, "big");
    let journal = FileJournal(tmp.path().join("journal.json"));
    let mut cfg = small_transfer();
    cfg.concurrency = 2;

    // First run: cancelled once a few parts are recorded.
    let done_before = interrupt(&store, &cfg, &src, &key, &journal).await;
    let fresh = Transfer::new(store.clone(), small_transfer());
    assert_eq!(
        fresh.incomplete_uploads(&prefix).await.expect("list").len(),
        1,
        "upload kept for resume"
    );

    // Second run: only the missing parts are sent.
    let t2 = Transfer::new(store.clone(), cfg);
    let up = t2
        .upload_file(&src, &key, Some(&journal))
        .await
        .expect("resume");
    assert_eq!(up.parts, 13);
    assert_eq!(up.parts_reused as usize, done_before);
    assert_eq!(
        t2.stats().count(Op::UploadPart) as usize,
        13 - done_before,
        "only missing parts uploaded"
    );
    assert_eq!(t2.stats().count(Op::CreateMultipart), 0);
    assert_eq!(up.crc32c, checksum::crc32c(&body));
    assert!(journal.load().is_none(), "journal cleared after completion");
    let mut out = Vec::new();
    t2.download_to(
        &key,
        &mut out,
        Expect {
            size: Some(body.len() as u64),
            crc32c: Some(up.crc32c),
        },
    )
    .await
    .expect("verify");
    assert!(out == body);
    assert!(
        t2.incomplete_uploads(&prefix)
            .await
            .expect("list")
            .is_empty()
    );
}

/// Sets the cancellation flag when the `after`-th part has been recorded.
#[derive(Debug)]
struct CancelAfterParts {
    parts: AtomicU64,
    after: u64,
    cancel: Arc<Cancel>,
}

impl Progress for CancelAfterParts {
    fn bytes_done(&self, _bytes: u64) {
        if self.parts.fetch_add(1, Ordering::SeqCst) + 1 == self.after {
            self.cancel.cancel();
        }
    }
}

async fn interrupted_upload_without_journal_is_aborted(b: Backend) {
    let (store, prefix, _d) = open(b, "abort").await;
    let tmp = tempfile::tempdir().expect("tmp");
    let src = tmp.path().join("big");
    std::fs::write(&src, data(40 * MIB, 4)).expect("write");
    for stream in [false, true] {
        // Cancelled from inside the engine as the second part is recorded, so the upload is
        // always mid-way, however fast the store is.
        let cancel = Arc::new(Cancel::default());
        let t = Transfer::new(store.clone(), small_transfer())
            .with_cancel(cancel.clone())
            .with_progress(Arc::new(CancelAfterParts {
                parts: AtomicU64::new(0),
                after: 2,
                cancel,
            }));
        let key = join_key(&prefix, if stream { "stream" } else { "file" });
        let r = if stream {
            t.upload_stream(pipe_of(&src).await, &key).await
        } else {
            t.upload_file(&src, &key, None).await
        };
        assert!(
            matches!(r, Err(Error::Interrupted)),
            "stream={stream}: {r:?}"
        );
        assert!(t.stats().count(Op::AbortMultipart) >= 1);
        let fresh = Transfer::new(store.clone(), small_transfer());
        assert!(
            fresh
                .incomplete_uploads(&prefix)
                .await
                .expect("list")
                .is_empty(),
            "nothing left behind"
        );
        assert!(
            fresh.head_opt(&key).await.expect("head").is_none(),
            "no object from a cancelled upload"
        );
    }
}

/// Uploads `src` in parts through `journal` and cancels the run once three parts are recorded;
/// returns how many the journal holds.
async fn interrupt(
    store: &SharedStore,
    cfg: &Settings,
    src: &std::path::Path,
    key: &str,
    journal: &FileJournal,
) -> usize {
    let t = Transfer::new(store.clone(), cfg.clone());
    let cancel = t.cancel_flag().clone();
    let upload = t.upload_file(src, key, Some(journal));
    tokio::pin!(upload);
    let r = loop {
        tokio::select! {
            r = &mut upload => break r,
            () = tokio::time::sleep(Duration::from_millis(1)) => {
                if journal.load().is_some_and(|s| s.parts.len() >= 3) {
                    cancel.cancel();
                }
            }
        }
    };
    assert!(matches!(r, Err(Error::Interrupted)), "{r:?}");
    let parts = journal.load().expect("journal kept for resume").parts.len();
    assert!(parts >= 3);
    parts
}

/// A file whose interrupted upload in parts is recorded in its journal, then sent in one PUT
/// (a higher one-PUT limit): the recorded upload is aborted and the journal removed, so no
/// parts stay stored with nothing left to complete them. A journal of another key is left.
async fn a_file_sent_whole_ends_its_journaled_upload(b: Backend) {
    let (store, prefix, _d) = open(b, "whole").await;
    let tmp = tempfile::tempdir().expect("tmp");
    let body = data(60 * MIB + 5, 4);
    let src = tmp.path().join("f");
    std::fs::write(&src, &body).expect("write");
    let key = join_key(&prefix, "f");
    let journal = FileJournal(tmp.path().join("journal.json"));
    // One part at a time: the cancel lands long before the last part, however fast the store.
    let mut one = small_transfer();
    one.concurrency = 1;
    interrupt(&store, &one, &src, &key, &journal).await;

    let t = Transfer::new(store.clone(), small_transfer());
    let opts = PutOptions::default();
    // Another key handed the same journal (two servers' backups of one id): not its upload.
    let other = join_key(&prefix, "other");
    t.upload_file_as(&src, &other, Some(&journal), &opts, 64 * MIB as u64)
        .await
        .expect("other");
    assert_eq!(t.stats().count(Op::AbortMultipart), 0);
    assert!(journal.load().is_some(), "another key's journal kept");
    let up = t
        .upload_file_as(&src, &key, Some(&journal), &opts, 64 * MIB as u64)
        .await
        .expect("one PUT");
    assert_eq!((up.parts, up.crc32c), (1, checksum::crc32c(&body)));
    assert_eq!(t.stats().count(Op::AbortMultipart), 1);
    assert!(journal.load().is_none(), "journal removed");
    let left = t.incomplete_uploads(&prefix).await.expect("list");
    assert!(left.is_empty(), "parts left stored: {left:?}");
}

/// An upload left behind by a killed run (created, never aborted or journaled) is aborted when
/// the key is uploaded again, for files and streams; uploads of other keys are left alone.
async fn orphaned_upload_is_superseded(b: Backend) {
    let (store, prefix, _d) = open(b, "orphan").await;
    let tmp = tempfile::tempdir().expect("tmp");
    let src = tmp.path().join("big");
    let body = data(11 * MIB, 6);
    std::fs::write(&src, &body).expect("write");
    let other = join_key(&prefix, "other");
    let kept = store
        .multipart()
        .create(&other, &Default::default())
        .await
        .expect("create other");
    for stream in [false, true] {
        let key = join_key(&prefix, if stream { "stream" } else { "file" });
        for _ in 0..2 {
            store
                .multipart()
                .create(&key, &Default::default())
                .await
                .expect("orphan");
        }
        let t = Transfer::new(store.clone(), small_transfer());
        let up = if stream {
            t.upload_stream(pipe_of(&src).await, &key).await
        } else {
            t.upload_file(&src, &key, None).await
        }
        .expect("upload");
        assert_eq!(up.crc32c, checksum::crc32c(&body));
        assert_eq!(t.stats().count(Op::AbortMultipart), 2, "stream={stream}");
    }
    let left = Transfer::new(store.clone(), small_transfer())
        .incomplete_uploads(&prefix)
        .await
        .expect("list");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].upload, kept);
    assert_eq!(kept.key, other);
}

/// A server-side copy is verified against the expected CRC32C and counted apart from uploads;
/// a wrong expectation (the source is not what the manifest says) is a checksum error. Above the
/// copy limit the copy goes part by part: verified from the parts' CRC32C as the server reports
/// them (with each copied part on file://, in its list of the upload's parts on Garage).
async fn server_side_copies_are_verified(b: Backend) {
    let (store, prefix, _dir) = open(b, "copy").await;
    let mut cfg = small_transfer();
    cfg.copy_limit = 6 * MIB as u64;
    let t = Transfer::new(store, cfg);
    let tmp = tempfile::tempdir().expect("tmp");
    for (name, size) in [("small", 2 * MIB), ("big", 11 * MIB + 7)] {
        let body = data(size, 11);
        let src_path = tmp.path().join(name);
        std::fs::write(&src_path, &body).expect("write");
        let src = join_key(&prefix, &format!("{name}-src"));
        let up = t.upload_file(&src_path, &src, None).await.expect("upload");
        let sent = t.stats().snapshot().bytes_up;
        let dst = join_key(&prefix, &format!("{name}-dst"));
        let expect = CopyExpect {
            size: size as u64,
            crc32c: up.crc32c,
            ciphertext: None,
        };
        // Garage answers UploadPartCopy without the part's CRC32C; its list of the upload's
        // parts has it.
        t.copy_object(&src, &dst, expect, Default::default())
            .await
            .expect("copy");
        assert_eq!(t.stats().snapshot().bytes_up, sent, "a copy sends no body");
        let mut out = Vec::new();
        t.download_to(
            &dst,
            &mut out,
            Expect {
                size: Some(size as u64),
                crc32c: Some(up.crc32c),
            },
        )
        .await
        .expect("download");
        assert!(out == body, "{name}: copied bytes differ");
        let wrong = CopyExpect {
            crc32c: up.crc32c ^ 1,
            ..expect
        };
        let e = t
            .copy_object(&src, &join_key(&prefix, "wrong"), wrong, Default::default())
            .await
            .expect_err("a wrong expectation must fail");
        assert!(matches!(e, Error::Checksum { .. }), "{e}");
    }
    let s = t.stats().snapshot();
    assert!(s.requests.get("copy").copied().unwrap_or(0) > 0);
    assert!(s.bytes_copied >= 2 * MIB as u64);
}

/// A file whose record says it is small is fetched with one GET and checked against both the
/// record and the object's own checksum; a larger one keeps its HEAD and ranged GETs.
async fn a_small_file_by_its_record_costs_one_request(b: Backend) {
    let (store, prefix, _d) = open(b, "small").await;
    let t = Transfer::new(store, small_transfer());
    let dir = tempfile::tempdir().expect("tmp");
    for (size, requests) in [(0usize, 1u64), (8192, 1), (MIB, 1), (MIB + 1, 2)] {
        let body = data(size, 3);
        let src = dir.path().join("src");
        std::fs::write(&src, &body).expect("write src");
        let key = join_key(&prefix, &format!("f-{size}"));
        let up = t.upload_file(&src, &key, None).await.expect("upload");
        let record = Expect {
            size: Some(size as u64),
            crc32c: Some(up.crc32c),
        };
        for synced in [true, false] {
            let dest = dir.path().join(format!("dest-{size}-{synced}"));
            let before = t.stats().snapshot().total_requests;
            let down = if synced {
                t.download_file(&key, &dest, record).await
            } else {
                t.download_file_unsynced(&key, &dest, record).await
            }
            .expect("download");
            assert_eq!(
                t.stats().snapshot().total_requests - before,
                requests,
                "{size} bytes"
            );
            assert!(std::fs::read(&dest).expect("dest") == body, "{size} bytes");
            assert_eq!(down.crc32c, up.crc32c);
            assert_eq!(down.verified, Verified::CallerCrc32c, "{size} bytes");
        }
        // A record of another size or checksum is refused, and nothing is left behind; an
        // object larger than its record, before its body is read.
        let smaller = (size > 0).then(|| Expect {
            size: Some(size as u64 - 1),
            ..record
        });
        for wrong in [
            Expect {
                size: Some(size as u64 + 1),
                ..record
            },
            Expect {
                crc32c: Some(up.crc32c ^ 1),
                ..record
            },
        ]
        .into_iter()
        .chain(smaller)
        {
            let dest = dir.path().join("wrong");
            let e = t
                .download_file(&key, &dest, wrong)
                .await
                .expect_err("a wrong record must fail");
            assert!(matches!(e, Error::Checksum { .. }), "{size} bytes: {e}");
            assert!(!dest.exists(), "{size} bytes: nothing at the destination");
        }
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "no temp file left: {left:?}");
}

/// A whole-object GET brings the object's own CRC32C with it, and the engine checks the
/// download against it (on S3, not only the SDK's check of the body).
async fn a_whole_object_is_checked_against_its_stored_crc32c(b: Backend) {
    let (store, prefix, _d) = open(b, "whole").await;
    let t = Transfer::new(store, small_transfer());
    let dir = tempfile::tempdir().expect("tmp");
    let body = data(3 * MIB + 5, 7);
    let src = dir.path().join("src");
    std::fs::write(&src, &body).expect("write src");
    let key = join_key(&prefix, "whole");
    let up = t.upload_file(&src, &key, None).await.expect("upload");
    let (got, down) = t.download_small(&key, 4 * MIB as u64).await.expect("get");
    assert!(got == body);
    assert_eq!(down.verified, Verified::ObjectCrc32c);
    assert_eq!(down.crc32c, up.crc32c);
}

crate::common::on_both!(
    a_whole_object_is_checked_against_its_stored_crc32c,
    a_small_file_by_its_record_costs_one_request,
    server_side_copies_are_verified,
    boundary_sizes,
    odd_hundred_mib_many_parts,
    changed_bytes_are_detected,
    interrupted_upload_resumes_only_missing_parts,
    interrupted_upload_without_journal_is_aborted,
    orphaned_upload_is_superseded,
    a_file_sent_whole_ends_its_journaled_upload,
);
