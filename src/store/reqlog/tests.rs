//! Unit tests of the request log: the line formats, and every request through a real file:// store.

use bytes::Bytes;

use super::*;
use crate::store::local::LocalStore;
use crate::store::{Body, ByteRange, Integrity, ListRequest, ObjectRange, PutOptions, Upload};

fn rec(op: Op, status: u16, sent: u64, received: u64, key: &str) -> (Request<'_>, u16, u64) {
    let req = Request {
        op,
        key,
        attempt: 2,
        sent,
        ranged: false,
        started: Instant::now(),
    };
    (req, status, received)
}

#[test]
fn droplet_lines_follow_droplets_pricing_table() {
    let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
    let cases = [
        (
            rec(Op::List, 200, 0, 0, "p/"),
            Some("1700000000;REQUEST;LIST;0\n"),
        ),
        (
            rec(Op::ListParts, 200, 0, 0, "k"),
            Some("1700000000;REQUEST;LIST;0\n"),
        ),
        (
            rec(Op::Copy, 200, 0, 0, "k"),
            Some("1700000000;DATA;PUT;0\n"),
        ),
        (
            rec(Op::UploadPartCopy, 200, 0, 0, "k"),
            Some("1700000000;DATA;PUT;0\n"),
        ),
        (
            rec(Op::Put, 200, 42, 0, "k"),
            Some("1700000000;DATA;IN;42\n"),
        ),
        (
            rec(Op::UploadPart, 200, 7, 0, "k"),
            Some("1700000000;DATA;IN;7\n"),
        ),
        (
            rec(Op::CreateMultipart, 200, 0, 0, "k"),
            Some("1700000000;DATA;IN;0\n"),
        ),
        (
            rec(Op::CompleteMultipart, 200, 0, 0, "k"),
            Some("1700000000;DATA;IN;0\n"),
        ),
        (
            rec(Op::Get, 206, 0, 9, "k"),
            Some("1700000000;DATA;OUT;9\n"),
        ),
        (
            rec(Op::Head, 200, 0, 0, "k"),
            Some("1700000000;DATA;GET;0\n"),
        ),
        (
            rec(Op::Delete, 200, 0, 0, "k"),
            Some("1700000000;DATA;DELETE;0\n"),
        ),
        (
            rec(Op::AbortMultipart, 204, 0, 0, "k"),
            Some("1700000000;DATA;DELETE;0\n"),
        ),
        // Droplet logs successful calls only.
        (rec(Op::Head, 404, 0, 0, "k"), None),
        (rec(Op::Put, 503, 42, 0, "k"), None),
    ];
    for ((r, status, received), want) in cases {
        assert_eq!(
            line(LogFormat::Droplet, "x", t, &r, status, received, MS_42).as_deref(),
            want,
            "{r:?}"
        );
    }
}

const MS_42: std::time::Duration = std::time::Duration::from_millis(42);

#[test]
fn extended_lines_quote_keys_as_rfc4180_says() {
    let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
    let r = rec(Op::Put, 503, 5, 0, "a,b \"c\"\nd");
    assert_eq!(
        line(LogFormat::Extended, "volume put", t, &r.0, r.1, r.2, MS_42).as_deref(),
        Some("1700000000123,volume put,PutObject,503,2,5,0,\"a,b \"\"c\"\"\nd\",42\n")
    );
    assert_eq!(field("a,b"), "\"a,b\"");
}

#[test]
fn the_command_is_read_past_global_options() {
    let args = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
    let cases = [
        ("barmans3 --config c.yaml volume put V f", "volume put"),
        ("barmans3 --request-log l -v base-sync", "base-sync"),
        ("barmans3 --store file:///x store --json ls", "store ls"),
        ("barmans3 wal-sync pg", "wal-sync"),
        ("barmans3", ""),
    ];
    for (a, want) in cases {
        assert_eq!(command_of(args(a)), want, "{a}");
    }
}

#[test]
fn statuses_come_from_our_errors() {
    let nf: Result<()> = Err(Error::NotFound { key: "k".into() });
    let io: Result<()> = Err(Error::io("x", std::io::Error::other("reset")));
    let req = |op, ranged| Request {
        op,
        key: "k",
        attempt: 1,
        sent: 0,
        ranged,
        started: Instant::now(),
    };
    assert_eq!(status_of(&req(Op::Head, false), &nf), Some(404));
    assert_eq!(status_of(&req(Op::Head, false), &io), None);
    assert_eq!(status_of(&req(Op::Get, true), &Ok(())), Some(206));
    assert_eq!(
        status_of(&req(Op::AbortMultipart, false), &Ok(())),
        Some(204)
    );
}

async fn logged_store(format: LogFormat) -> (tempfile::TempDir, SharedStore, PathBuf) {
    let d = tempfile::tempdir().expect("tmp");
    let store: SharedStore = Arc::new(LocalStore::open(&d.path().join("b")).expect("open"));
    let path = d.path().join("requests.csv");
    let log = RequestLog {
        path: path.clone(),
        format,
    };
    (d, wrap(store, Some(&log)), path)
}

#[tokio::test]
async fn every_answered_request_is_one_line() {
    let (_d, s, path) = logged_store(LogFormat::Extended).await;
    let o = PutOptions::default();
    let hello = Body::bytes(Bytes::from_static(b"hello"), Integrity::None);
    s.put("v/0000", hello, &o).await.expect("put");
    attempt_scope(3, s.head("v/0000")).await.expect("head");
    assert!(s.head("missing").await.is_err());
    let mut body = s.get("v/0000", None).await.expect("get").body;
    while body.next_chunk().await.expect("chunk").is_some() {}
    drop(body);
    s.list_page(&ListRequest::default(), None)
        .await
        .expect("list");
    s.delete_batch(&["v/0000".into()]).await.expect("delete");
    let up = s.multipart().create("m", &o).await.expect("create");
    s.multipart().abort(&up).await.expect("abort");
    let text = std::fs::read_to_string(&path).expect("log");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split(',').skip(2).collect())
        .collect();
    assert_eq!(text.lines().next(), Some(EXTENDED_HEADER.trim_end()));
    let want: [&[&str]; 8] = [
        &["PutObject", "200", "1", "5", "0", "\"v/0000\""],
        &["HeadObject", "200", "3", "0", "0", "\"v/0000\""],
        &["HeadObject", "404", "1", "0", "0", "\"missing\""],
        &["GetObject", "200", "1", "0", "5", "\"v/0000\""],
        &["ListObjectsV2", "200", "1", "0", "0", "\"\""],
        &["DeleteObjects", "200", "1", "0", "0", "\"v/0000\""],
        &["CreateMultipartUpload", "200", "1", "0", "0", "\"m\""],
        &["AbortMultipartUpload", "204", "1", "0", "0", "\"m\""],
    ];
    assert_eq!(rows.len(), want.len() + 1, "{text}");
    for (row, w) in rows[1..].iter().zip(want) {
        // The duration comes last; on a local store it is a small number of milliseconds.
        let (took, row) = row.split_last().expect("columns");
        assert_eq!(row, w, "{text}");
        assert!(took.parse::<u64>().is_ok_and(|ms| ms < 10_000), "{text}");
    }
}

#[tokio::test]
async fn the_header_is_written_once_and_a_dead_log_only_warns() {
    let (d, s, path) = logged_store(LogFormat::Extended).await;
    drop(s);
    let store: SharedStore = Arc::new(LocalStore::open(&d.path().join("b")).expect("open"));
    let log = RequestLog {
        path: path.clone(),
        format: LogFormat::Extended,
    };
    wrap(store, Some(&log))
        .head("x")
        .await
        .expect_err("missing");
    let text = std::fs::read_to_string(&path).expect("log");
    assert_eq!(text.matches("unix_ms").count(), 1, "{text}");
    let store: SharedStore = Arc::new(LocalStore::open(&d.path().join("b")).expect("open"));
    let log = RequestLog {
        path: d.path().join("no/such/dir/log"),
        format: LogFormat::Droplet,
    };
    let s3 = wrap(store, Some(&log));
    let o = PutOptions::default();
    let x = Body::bytes(Bytes::from_static(b"x"), Integrity::None);
    s3.put("k", x, &o).await.expect("still works");
}

/// Records what it is shown.
#[derive(Debug, Default)]
struct Seen(std::sync::Mutex<Vec<(Op, String, Option<u16>)>>);

impl Observer for Seen {
    fn answered(&self, req: &Request<'_>, status: Option<u16>, _received: u64) {
        let mut v = self.0.lock().expect("lock");
        v.push((req.op, req.key.to_string(), status));
    }
}

#[tokio::test]
async fn copies_and_multipart_calls_are_observed_too() {
    let d = tempfile::tempdir().expect("tmp");
    let store: SharedStore = Arc::new(LocalStore::open(d.path()).expect("open"));
    let seen = Arc::new(Seen::default());
    let s = observe(store, seen.clone());
    let o = PutOptions::default();
    let range = ByteRange { start: 0, end: 1 };
    let from = ObjectRange {
        key: "a".into(),
        range,
    };
    // Whatever the backend answers (the source does not exist), the wrapper sees the request.
    // The wrapper offers what file:// offers, nothing more.
    assert!(s.archive().is_none() && s.retention().is_none());
    let copier = s.copier().expect("file:// copies");
    let _ = copier.copy("a", "b", &o).await;
    let _ = copier.copy_part(&Upload::new("b", "id"), 1, &from).await;
    let mp = s.multipart();
    let up = mp.create("m", &o).await.expect("create");
    let body = Body::bytes(Bytes::from_static(b"part"), Integrity::None);
    let part = mp.upload_part(&up, 1, body).await.expect("part");
    mp.list_parts(&up).await.expect("parts");
    mp.list_uploads("").await.expect("uploads");
    mp.complete(&up, &[part]).await.expect("complete");
    let ops: Vec<Op> = seen.0.lock().expect("lock").iter().map(|x| x.0).collect();
    let want = [
        Op::Copy,
        Op::UploadPartCopy,
        Op::CreateMultipart,
        Op::UploadPart,
        Op::ListParts,
        Op::ListMultipart,
        Op::CompleteMultipart,
    ];
    assert_eq!(ops, want);
    assert_eq!(
        seen.0.lock().expect("lock")[0].1,
        "b",
        "a copy is named by its destination"
    );
}
