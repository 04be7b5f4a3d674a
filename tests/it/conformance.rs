//! One conformance suite for every store backend: the same cases run on `file://` and on a real
//! Garage, so the local backend can stand in for S3 only where it behaves the same.

use crate::common::{Backend, data, open};
use barmans3::Error;
use barmans3::checksum;
use barmans3::store::{
    Body, ByteRange, ChecksumAlgorithm, FileRange, Integrity, ListRequest, ObjectRange, PutOptions,
    SharedStore, join_key,
};
use bytes::Bytes;

async fn read_all(
    s: &SharedStore,
    key: &str,
    range: Option<ByteRange>,
) -> barmans3::Result<Vec<u8>> {
    let mut r = s.get(key, range).await?;
    let mut out = Vec::new();
    while let Some(c) = r.body.next_chunk().await? {
        out.extend_from_slice(&c);
    }
    Ok(out)
}

async fn put(s: &SharedStore, key: &str, body: &[u8]) {
    let crc = checksum::crc32c(body);
    let body = Body::bytes(Bytes::copy_from_slice(body), Integrity::Crc32c(crc));
    s.put(key, body, &PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
}

async fn list_keys(s: &SharedStore, req: &ListRequest) -> (Vec<String>, usize) {
    let (mut keys, mut pages, mut token) = (Vec::new(), 0, None::<String>);
    loop {
        let p = s.list_page(req, token.as_deref()).await.expect("list page");
        pages += 1;
        keys.extend(p.objects.into_iter().map(|o| o.key));
        match p.next {
            Some(t) => token = Some(t),
            None => return (keys, pages),
        }
    }
}

/// Options of an upload whose parts carry CRC32C values.
fn crc32c_parts() -> PutOptions {
    PutOptions {
        part_checksum: Some(ChecksumAlgorithm::Crc32c),
        ..Default::default()
    }
}

async fn empty_object(b: Backend) {
    let (s, p, _d) = open(b, "empty").await;
    let k = join_key(&p, "empty");
    put(&s, &k, b"").await;
    assert_eq!(s.head(&k).await.expect("head").size, 0);
    assert!(read_all(&s, &k, None).await.expect("get").is_empty());
}

async fn one_byte_with_checksum(b: Backend) {
    let (s, p, _d) = open(b, "one").await;
    let k = join_key(&p, "one");
    put(&s, &k, b"x").await;
    let m = s.head(&k).await.expect("head");
    assert_eq!(m.size, 1);
    assert_eq!(
        m.crc32c.as_deref(),
        Some(checksum::crc32c_header(checksum::crc32c(b"x")).as_str())
    );
    assert_eq!(read_all(&s, &k, None).await.expect("get"), b"x");
}

async fn key_with_spaces_and_utf8(b: Backend) {
    let (s, p, _d) = open(b, "utf8").await;
    let k = join_key(&p, "dir with space/ünïcødé ✓ file.bin");
    put(&s, &k, b"hello").await;
    assert_eq!(read_all(&s, &k, None).await.expect("get"), b"hello");
    let (keys, _) = list_keys(
        &s,
        &ListRequest {
            prefix: format!("{p}/"),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(keys, [k]);
}

async fn many_keys_page_and_batch_delete(b: Backend) {
    let (s, p, _d) = open(b, "many").await;
    let n = 1500;
    let keys: Vec<String> = (0..n).map(|i| join_key(&p, &format!("k{i:05}"))).collect();
    let mut set = tokio::task::JoinSet::new();
    for chunk in keys.chunks(100) {
        let (s, chunk) = (s.clone(), chunk.to_vec());
        set.spawn(async move {
            for k in chunk {
                put(&s, &k, b"v").await;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("put task");
    }
    let req = ListRequest {
        prefix: format!("{p}/"),
        ..Default::default()
    };
    let (listed, pages) = list_keys(&s, &req).await;
    assert_eq!(listed, keys, "all keys, in order");
    assert!(
        pages >= 2,
        "more than 1000 keys need more than one page, got {pages}"
    );

    let first = s.delete_batch(&keys[..1000]).await.expect("delete 1000");
    let second = s.delete_batch(&keys[1000..]).await.expect("delete 500");
    assert!(first.is_empty() && second.is_empty());
    assert!(list_keys(&s, &req).await.0.is_empty());
}

async fn start_after_and_delimiter(b: Backend) {
    let (s, p, _d) = open(b, "sa").await;
    for k in ["a/1", "a/2", "a/x/1", "a/x/2", "a/y", "b"] {
        put(&s, &join_key(&p, k), b"1").await;
    }
    let req = ListRequest {
        prefix: format!("{p}/a/"),
        start_after: Some(join_key(&p, "a/2")),
        ..Default::default()
    };
    let (keys, _) = list_keys(&s, &req).await;
    let rel: Vec<_> = keys.iter().map(|k| &k[p.len() + 1..]).collect();
    assert_eq!(rel, ["a/x/1", "a/x/2", "a/y"]);

    let req = ListRequest {
        prefix: format!("{p}/a/"),
        delimiter: Some("/".into()),
        ..Default::default()
    };
    let page = s.list_page(&req, None).await.expect("list");
    let objs: Vec<_> = page.objects.iter().map(|o| &o.key[p.len() + 1..]).collect();
    assert_eq!(objs, ["a/1", "a/2", "a/y"]);
    assert_eq!(page.prefixes, [format!("{p}/a/x/")]);
}

async fn ranged_get(b: Backend) {
    let (s, p, _d) = open(b, "range").await;
    let k = join_key(&p, "r");
    let body = data(1000, 1);
    put(&s, &k, &body).await;
    let first = read_all(&s, &k, Some(ByteRange { start: 0, end: 1 }))
        .await
        .expect("first");
    assert_eq!(first, &body[..1]);
    let last = read_all(
        &s,
        &k,
        Some(ByteRange {
            start: 999,
            end: 1000,
        }),
    )
    .await
    .expect("last");
    assert_eq!(last, &body[999..]);
    let tail = read_all(
        &s,
        &k,
        Some(ByteRange {
            start: 990,
            end: 5000,
        }),
    )
    .await
    .expect("clamped");
    assert_eq!(tail, &body[990..], "a range past the end is cut at the end");
    let past = read_all(
        &s,
        &k,
        Some(ByteRange {
            start: 1000,
            end: 1001,
        }),
    )
    .await;
    assert!(past.is_err(), "a range starting past the end is refused");
    let meta = s
        .get(&k, Some(ByteRange { start: 10, end: 20 }))
        .await
        .expect("get")
        .meta;
    assert_eq!(
        meta.size, 1000,
        "a ranged get reports the whole object's size"
    );
}

async fn head_and_delete_missing(b: Backend) {
    let (s, p, _d) = open(b, "missing").await;
    let k = join_key(&p, "nope");
    assert!(matches!(s.head(&k).await, Err(Error::NotFound { .. })));
    assert!(matches!(s.get(&k, None).await, Err(Error::NotFound { .. })));
    assert!(
        s.delete_batch(&[k])
            .await
            .expect("delete missing")
            .is_empty()
    );
}

async fn bad_checksum_is_refused(b: Backend) {
    let (s, p, _d) = open(b, "bad").await;
    let k = join_key(&p, "bad");
    let abc = |integrity| Body::bytes(Bytes::from_static(b"abc"), integrity);
    let r = s
        .put(&k, abc(Integrity::Crc32c(1)), &PutOptions::default())
        .await;
    let e = r.expect_err("wrong CRC32C must be refused");
    assert!(
        !e.is_retryable(),
        "a bad digest is our bug, not a transient failure: {e}"
    );
    assert!(matches!(s.head(&k).await, Err(Error::NotFound { .. })));
    let r = s
        .put(&k, abc(Integrity::Md5([0; 16])), &PutOptions::default())
        .await;
    assert!(r.is_err(), "wrong Content-MD5 must be refused");
}

async fn multipart_three_parts(b: Backend) {
    let (s, p, _d) = open(b, "mp").await;
    let k = join_key(&p, "mp");
    let body = data((10 << 20) + 1, 2);
    let mp = s.multipart();
    let id = mp.create(&k, &crc32c_parts()).await.expect("create");
    let mut receipts = Vec::new();
    let mut crcs = Vec::new();
    for (i, chunk) in body.chunks(5 << 20).enumerate() {
        let crc = checksum::crc32c(chunk);
        crcs.push(crc);
        let chunk = Body::bytes(Bytes::copy_from_slice(chunk), Integrity::Crc32c(crc));
        let r = mp
            .upload_part(&id, i as u32 + 1, chunk)
            .await
            .expect("part");
        receipts.push(r);
    }
    assert_eq!(receipts.len(), 3);
    let listed = mp.list_parts(&id).await.expect("list parts");
    assert_eq!(
        listed
            .iter()
            .map(|r| (r.part_number, r.etag.clone()))
            .collect::<Vec<_>>(),
        receipts
            .iter()
            .map(|r| (r.part_number, r.etag.clone()))
            .collect::<Vec<_>>()
    );
    // A completion naming a part that is not the one uploaded, or parts out of order, is
    // refused and leaves every part in place: the right completion still succeeds.
    let mut changed = receipts.clone();
    changed[2].etag = receipts[0].etag.clone();
    let mut reordered = receipts.clone();
    reordered.swap(0, 1);
    for bad in [changed, reordered] {
        let r = mp.complete(&id, &bad).await;
        assert!(r.is_err(), "a wrong completion must be refused");
        assert!(matches!(s.head(&k).await, Err(Error::NotFound { .. })));
        assert_eq!(mp.list_parts(&id).await.expect("list parts").len(), 3);
    }
    mp.complete(&id, &receipts).await.expect("complete");
    assert_eq!(read_all(&s, &k, None).await.expect("get"), body);
    let head = s.head(&k).await.expect("head");
    assert_eq!(head.size, body.len() as u64);
    assert_eq!(
        head.crc32c.as_deref(),
        Some(checksum::composite_crc32c(&crcs).as_str())
    );
    assert!(mp.list_uploads(&p).await.expect("list uploads").is_empty());
}

async fn abort_and_list_in_progress(b: Backend) {
    let (s, p, _d) = open(b, "abort").await;
    let k1 = join_key(&p, "u1");
    let k2 = join_key(&p, "u2");
    let mp = s.multipart();
    let id1 = mp.create(&k1, &crc32c_parts()).await.expect("create");
    let id2 = mp
        .create(&k2, &PutOptions::default())
        .await
        .expect("create");
    let part = data(1024, 3);
    let crc = checksum::crc32c(&part);
    let part = Body::bytes(Bytes::from(part), Integrity::Crc32c(crc));
    mp.upload_part(&id1, 1, part).await.expect("part");
    let mut listed: Vec<_> = mp
        .list_uploads(&p)
        .await
        .expect("list")
        .into_iter()
        .map(|u| (u.upload.key, u.upload.id))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [(k1.clone(), id1.id.clone()), (k2.clone(), id2.id.clone())]
    );
    mp.abort(&id1).await.expect("abort");
    mp.abort(&id2).await.expect("abort");
    mp.abort(&id2).await.expect("aborting twice is fine");
    assert!(mp.list_uploads(&p).await.expect("list").is_empty());
    assert!(matches!(s.head(&k1).await, Err(Error::NotFound { .. })));
    assert!(matches!(
        mp.list_parts(&id1).await,
        Err(Error::NotFound { .. })
    ));
}

async fn copy_keeps_bytes_and_reports_a_full_checksum(b: Backend) {
    let (s, p, _d) = open(b, "copy").await;
    let (src, dst, dst2) = (
        join_key(&p, "src"),
        join_key(&p, "a b/ü+dst"),
        join_key(&p, "dst2"),
    );
    let body = data(3 << 20, 7);
    let crc = checksum::crc32c(&body);
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("origin".to_string(), "one".to_string());
    let opts = PutOptions {
        metadata: meta,
        ..Default::default()
    };
    let put_body = Body::bytes(Bytes::from(body.clone()), Integrity::Crc32c(crc));
    s.put(&src, put_body, &opts).await.expect("put");
    let copier = s.copier().expect("both backends copy");
    copier
        .copy(&src, &dst, &PutOptions::default())
        .await
        .expect("copy");
    assert_eq!(read_all(&s, &dst, None).await.expect("get"), body);
    let head = s.head(&dst).await.expect("head");
    assert_eq!(head.size, body.len() as u64);
    assert_eq!(
        head.crc32c.as_deref(),
        Some(checksum::crc32c_header(crc).as_str())
    );
    assert_eq!(
        head.metadata.get("origin").map(String::as_str),
        Some("one"),
        "metadata kept"
    );

    let mut replaced = std::collections::BTreeMap::new();
    replaced.insert("origin".to_string(), "two".to_string());
    copier
        .copy(
            &src,
            &dst2,
            &PutOptions {
                metadata: replaced,
                ..Default::default()
            },
        )
        .await
        .expect("copy");
    let head = s.head(&dst2).await.expect("head");
    assert_eq!(
        head.metadata.get("origin").map(String::as_str),
        Some("two"),
        "metadata replaced"
    );
    assert!(matches!(
        copier
            .copy(&join_key(&p, "missing"), &dst, &PutOptions::default())
            .await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        read_all(&s, &dst, None).await.expect("get"),
        body,
        "a failed copy leaves the target"
    );
}

async fn copy_of_a_multipart_object(b: Backend) {
    let (s, p, _d) = open(b, "copymp").await;
    let (src, dst) = (join_key(&p, "src"), join_key(&p, "dst"));
    let body = data((10 << 20) + 5, 8);
    let mp = s.multipart();
    let id = mp.create(&src, &crc32c_parts()).await.expect("create");
    let mut receipts = Vec::new();
    for (i, chunk) in body.chunks(5 << 20).enumerate() {
        let c = checksum::crc32c(chunk);
        let chunk = Body::bytes(Bytes::copy_from_slice(chunk), Integrity::Crc32c(c));
        receipts.push(
            mp.upload_part(&id, i as u32 + 1, chunk)
                .await
                .expect("part"),
        );
    }
    mp.complete(&id, &receipts).await.expect("complete");
    let copier = s.copier().expect("both backends copy");
    copier
        .copy(&src, &dst, &PutOptions::default())
        .await
        .expect("copy");
    assert_eq!(read_all(&s, &dst, None).await.expect("get"), body);
    let head = s.head(&dst).await.expect("head");
    assert_eq!(
        head.crc32c.as_deref(),
        Some(checksum::crc32c_header(checksum::crc32c(&body)).as_str()),
        "a copy made with a checksum algorithm reports the full-object CRC32C"
    );
}

async fn upload_part_copy_ranges(b: Backend) {
    let (s, p, _d) = open(b, "partcopy").await;
    let (src, dst) = (join_key(&p, "src"), join_key(&p, "dst"));
    let body = data((6 << 20) + 3, 9);
    put(&s, &src, &body).await;
    let mp = s.multipart();
    let id = mp.create(&dst, &crc32c_parts()).await.expect("create");
    let copier = s.copier().expect("both backends copy");
    let cut = 5u64 << 20;
    let ranges = [
        ByteRange { start: 0, end: cut },
        ByteRange {
            start: cut,
            end: body.len() as u64,
        },
    ];
    let mut receipts = Vec::new();
    for (i, r) in ranges.iter().enumerate() {
        let from = ObjectRange {
            key: src.clone(),
            range: *r,
        };
        let got = copier
            .copy_part(&id, i as u32 + 1, &from)
            .await
            .expect("part copy");
        // S3 reports the part's CRC32C; Garage reports none (the engine then declines to
        // vouch for such a copy and uploads instead). A reported value must be right.
        let want = checksum::crc32c(&body[r.start as usize..r.end as usize]);
        if let Some(c) = got.crc32c {
            assert_eq!(c, want, "part {} reports its CRC32C", i + 1);
        }
        assert_eq!(got.size, r.len());
        receipts.push(got);
    }
    mp.complete(&id, &receipts).await.expect("complete");
    assert_eq!(read_all(&s, &dst, None).await.expect("get"), body);
}

/// Bodies read from a range of a local file, not from memory: a put and the parts of an upload
/// arrive whole; a body that does not match its value (CRC32C or Content-MD5) is refused, and
/// nothing is stored.
async fn file_range_bodies(b: Backend) {
    let (s, p, _d) = open(b, "filebody").await;
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("src");
    let body = data((6 << 20) + 7, 11);
    std::fs::write(&path, &body).expect("write");
    let file = std::sync::Arc::new(std::fs::File::open(&path).expect("open"));
    let range = |start: usize, end: usize| FileRange {
        path: path.clone(),
        file: file.clone(),
        range: ByteRange {
            start: start as u64,
            end: end as u64,
        },
    };
    let crc = |start: usize, end: usize| Integrity::Crc32c(checksum::crc32c(&body[start..end]));
    let o = PutOptions::default();

    let k = join_key(&p, "put");
    let md5 = Integrity::Md5(checksum::md5(&body[100..1100]));
    s.put(&k, Body::file(range(100, 1100), md5), &o)
        .await
        .expect("put");
    assert_eq!(read_all(&s, &k, None).await.expect("get"), &body[100..1100]);
    let bad = join_key(&p, "bad");
    for wrong in [crc(1, 11), Integrity::Md5([0; 16])] {
        let r = s.put(&bad, Body::file(range(0, 10), wrong), &o).await;
        assert!(
            r.is_err(),
            "a body that is not what its value says is refused"
        );
    }
    assert!(matches!(s.head(&bad).await, Err(Error::NotFound { .. })));

    let k = join_key(&p, "parts");
    let mp = s.multipart();
    let up = mp.create(&k, &crc32c_parts()).await.expect("create");
    let (cut, end) = (5 << 20, body.len());
    let first = Body::file(range(0, cut), crc(0, cut));
    let second = Body::file(range(cut, end), crc(cut, end));
    let parts = [
        mp.upload_part(&up, 1, first).await.expect("part 1"),
        mp.upload_part(&up, 2, second).await.expect("part 2"),
    ];
    assert_eq!(parts[1].size, (end - cut) as u64);
    mp.complete(&up, &parts).await.expect("complete");
    assert_eq!(read_all(&s, &k, None).await.expect("get"), body);
}

crate::common::on_both!(
    file_range_bodies,
    copy_keeps_bytes_and_reports_a_full_checksum,
    copy_of_a_multipart_object,
    upload_part_copy_ranges,
    empty_object,
    one_byte_with_checksum,
    key_with_spaces_and_utf8,
    many_keys_page_and_batch_delete,
    start_after_and_delimiter,
    ranged_get,
    head_and_delete_missing,
    bad_checksum_is_refused,
    multipart_three_parts,
    abort_and_list_in_progress,
);

/// The `file://` store takes a part file only as it was recorded: one whose length changed on
/// disk (a crash that kept appended data but not a rename, or anyone writing there) is not
/// listed for a resume and fails the completion, and the key is left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_part_file_unlike_its_record_is_neither_listed_nor_completed() {
    let (s, p, root) = open(Backend::Local, "mp-changed").await;
    let root = root.expect("local root");
    let k = join_key(&p, "mp");
    put(&s, &k, b"before").await;
    let mp = s.multipart();
    let id = mp.create(&k, &crc32c_parts()).await.expect("create");
    let body = data((5 << 20) + 3, 7);
    let mut receipts = Vec::new();
    for (i, chunk) in body.chunks(5 << 20).enumerate() {
        let crc = checksum::crc32c(chunk);
        let chunk = Body::bytes(Bytes::copy_from_slice(chunk), Integrity::Crc32c(crc));
        receipts.push(
            mp.upload_part(&id, i as u32 + 1, chunk)
                .await
                .expect("part"),
        );
    }
    let part = root
        .path()
        .join(".barmans3/multipart")
        .join(&id.id)
        .join("part-00001");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&part)
        .expect("part file");
    std::io::Write::write_all(&mut f, b"appended").expect("append");
    let listed = mp.list_parts(&id).await.expect("list parts");
    assert_eq!(
        listed.iter().map(|r| r.part_number).collect::<Vec<_>>(),
        [2],
        "a changed part must be sent again"
    );
    assert!(
        mp.complete(&id, &receipts).await.is_err(),
        "completed from a changed part"
    );
    assert_eq!(read_all(&s, &k, None).await.expect("get"), b"before");
}
