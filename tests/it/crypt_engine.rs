//! The transfer engine with encryption on, on both backends: files, streams and multipart
//! uploads stored as age objects that the Go `age` tool opens to the same bytes, verified
//! downloads to files and streams, plaintext ranges, a mixed bucket, key rotation, an
//! interrupted encrypted upload resumed, tampered objects refused without a byte written, and
//! objects the store checks by MD5 only.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use age::secrecy::ExposeSecret;
use age::x25519;
use barmans3::Error;
use barmans3::checksum;
use barmans3::crypt::{Fault, Identities, Keys, Recipients};
use barmans3::error::Exit;
use barmans3::store::{ByteRange, SharedStore, join_key};
use barmans3::transfer::{Expect, FileJournal, Transfer, UploadJournal};
use bytes::Bytes;

use crate::common::{Backend, data, on_both, open, small_transfer};

const MIB: usize = 1 << 20;
const MAGIC: &[u8] = b"age-encryption.org/v1\n";

fn keys(to: &[&x25519::Identity], ids: &[&x25519::Identity]) -> Keys {
    Keys {
        recipients: Recipients::new(to.iter().map(|k| k.to_public())).expect("recipients"),
        identities: Identities::new(
            "encryption.identity_file",
            vec!["/etc/barmans3/id.key".into()],
            ids.iter().map(|k| (*k).clone()).collect(),
        ),
        require_sealed: None,
    }
}

fn engine(store: &SharedStore, k: Option<Keys>) -> Transfer {
    Transfer::new(store.clone(), small_transfer()).with_encryption(k.map(Arc::new))
}

async fn stored(t: &Transfer, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    t.raw()
        .download_to(key, &mut out, Expect::default())
        .await
        .expect("raw get");
    out
}

/// Opens `sealed` with the Go age tool and the identity `id`.
fn go_age_open(dir: &Path, id: &x25519::Identity, sealed: &[u8]) -> Vec<u8> {
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("go-age.key");
    std::fs::write(&key, format!("{}\n", id.to_string().expose_secret())).expect("key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let input = dir.join("go-age.in");
    std::fs::write(&input, sealed).expect("input");
    let age = "/usr/bin/age";
    assert!(
        Path::new(age).exists(),
        "{age} missing: run scripts/test-deps (Debian package age)"
    );
    let out = Command::new(age)
        .arg("-d")
        .arg("-i")
        .arg(&key)
        .arg(&input)
        .output()
        .expect("run age");
    assert!(
        out.status.success(),
        "age -d: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

async fn pipe_of(path: &Path) -> tokio::process::ChildStdout {
    let mut child = tokio::process::Command::new("cat")
        .arg(path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn cat");
    child.stdout.take().expect("stdout pipe")
}

async fn encrypted_round_trips(b: Backend) {
    let (store, prefix, _d) = open(b, "crypt-rt").await;
    let me = x25519::Identity::generate();
    let t = engine(&store, Some(keys(&[&me], &[&me])));
    let dir = tempfile::tempdir().expect("tmp");
    for (i, size) in [0, 1, 65536, 5 * MIB - 1, 5 * MIB + 1, 16 * MIB + 7]
        .into_iter()
        .enumerate()
    {
        let body = data(size, i as u64 + 3);
        let crc = checksum::crc32c(&body);
        let src = dir.path().join(format!("src-{size}"));
        std::fs::write(&src, &body).expect("write");
        for stream in [false, true] {
            let key = join_key(&prefix, &format!("{size}-{stream}"));
            let up = if stream {
                t.upload_stream(pipe_of(&src).await, &key).await
            } else {
                t.upload_file(&src, &key, None).await
            }
            .expect("upload");
            assert_eq!((up.size, up.crc32c), (size as u64, crc), "{key}");

            // What the store holds is an age object, without the plaintext's checksum.
            let sealed = stored(&t, &key).await;
            assert!(sealed.starts_with(MAGIC), "{key} not sealed");
            assert!(sealed.len() > size);
            let head = t.head(&key).await.expect("head");
            let crc_forms = [
                checksum::crc32c_header(crc),
                format!("{crc:08x}"),
                crc.to_string(),
            ];
            for v in head.metadata.values() {
                assert!(
                    !crc_forms.contains(v),
                    "{key}: plaintext CRC in metadata {v}"
                );
            }
            if size == 5 * MIB + 1 || size == 1 {
                assert!(
                    go_age_open(dir.path(), &me, &sealed) == body,
                    "{key}: Go age"
                );
            }

            // Downloads give the plaintext, checked against the caller's record.
            let want = Expect {
                size: Some(size as u64),
                crc32c: Some(crc),
            };
            let mut out = Vec::new();
            let d = t.download_to(&key, &mut out, want).await.expect("stream");
            assert!(out == body, "{key}: stream download");
            assert_eq!((d.size, d.crc32c), (size as u64, crc));
            let dest = dir.path().join(format!("dst-{size}-{stream}"));
            t.download_file(&key, &dest, want).await.expect("file");
            assert!(std::fs::read(&dest).expect("read") == body, "{key}: file");
            if size <= MIB {
                let (small, d) = t.download_small(&key, 2 * MIB as u64).await.expect("small");
                assert!(small == body && d.crc32c == crc, "{key}: small");
            }
            if size > 2 {
                let n = size as u64;
                let ranges = [
                    ByteRange { start: 0, end: 1 },
                    ByteRange {
                        start: n / 3,
                        end: n / 3 + n / 4 + 1,
                    },
                    ByteRange {
                        start: n - 1,
                        end: n,
                    },
                    ByteRange { start: 1, end: n },
                ];
                let mut out = Vec::new();
                let got = t
                    .download_ranges(&key, &ranges, &mut out)
                    .await
                    .expect("ranges");
                let mut want = Vec::new();
                for r in &ranges {
                    want.extend_from_slice(&body[r.start as usize..r.end as usize]);
                }
                assert_eq!(got, want.len() as u64);
                assert!(out == want, "{key}: ranges");
            }
        }
    }
    assert!(
        t.incomplete_uploads(&prefix)
            .await
            .expect("uploads")
            .is_empty()
    );
}

async fn mixed_bucket_and_missing_identity(b: Backend) {
    let (store, prefix, _d) = open(b, "crypt-mixed").await;
    let me = x25519::Identity::generate();
    let plain_t = engine(&store, None);
    let crypt_t = engine(&store, Some(keys(&[&me], &[&me])));
    let old = join_key(&prefix, "before");
    let new = join_key(&prefix, "after");
    let body = Bytes::from(data(300_000, 5));
    plain_t
        .put_bytes(&old, body.clone(), Default::default())
        .await
        .expect("plain put");
    crypt_t
        .put_bytes(&new, body.clone(), Default::default())
        .await
        .expect("sealed put");
    assert!(
        stored(&crypt_t, &old).await == body,
        "written before: plaintext"
    );
    for key in [&old, &new] {
        let mut out = Vec::new();
        crypt_t
            .download_to(key, &mut out, Expect::default())
            .await
            .expect("read");
        assert!(out == body, "{key}: each object read as what it is");
    }
    // Without identities an encrypted object is refused by name, and nothing is written.
    let dir = tempfile::tempdir().expect("tmp");
    let dest = dir.path().join("out");
    for e in [
        plain_t
            .download_file(&new, &dest, Expect::default())
            .await
            .expect_err("file"),
        plain_t
            .download_small(&new, 1 << 20)
            .await
            .expect_err("small"),
        plain_t
            .download_to(&new, &mut Vec::new(), Expect::default())
            .await
            .expect_err("to"),
    ] {
        let line = e.one_line();
        assert!(
            line.contains("encryption.identity_file") && line.contains(&new),
            "{line}"
        );
        assert_eq!(e.exit(), Exit::Config, "{line}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        0,
        "nothing written"
    );
}

async fn key_rotation(b: Backend) {
    let (store, prefix, _d) = open(b, "crypt-rotate").await;
    let a = x25519::Identity::generate();
    let bk = x25519::Identity::generate();
    let body_a = Bytes::from(data(200_000, 1));
    let body_b = Bytes::from(data(200_001, 2));
    let ka = join_key(&prefix, "under-a");
    let kb = join_key(&prefix, "under-b");
    engine(&store, Some(keys(&[&a], &[&a])))
        .put_bytes(&ka, body_a.clone(), Default::default())
        .await
        .expect("A");
    let both = engine(&store, Some(keys(&[&bk], &[&a, &bk])));
    both.put_bytes(&kb, body_b.clone(), Default::default())
        .await
        .expect("B");
    for (key, body) in [(&ka, &body_a), (&kb, &body_b)] {
        let mut out = Vec::new();
        both.download_to(key, &mut out, Expect::default())
            .await
            .expect("A+B");
        assert!(out == *body, "{key}");
    }
    let only_b = engine(&store, Some(keys(&[&bk], &[&bk])));
    let dir = tempfile::tempdir().expect("tmp");
    let e = only_b
        .download_file(&ka, &dir.path().join("a"), Expect::default())
        .await
        .expect_err("B cannot open A's");
    assert!(
        matches!(&e, Error::Crypt(c) if matches!(c.fault, Fault::NoMatchingIdentity { .. })),
        "{e}"
    );
    assert!(e.one_line().contains("encryption.identity_file") && e.one_line().contains(&ka));
    assert_eq!(e.exit(), Exit::Config);
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
}

async fn tampering_is_refused(b: Backend) {
    let (store, prefix, _d) = open(b, "crypt-tamper").await;
    let me = x25519::Identity::generate();
    let t = engine(&store, Some(keys(&[&me], &[&me])));
    let body = Bytes::from(data(3 * 65536 + 100, 8));
    let other = Bytes::from(data(3 * 65536 + 100, 9));
    let key = join_key(&prefix, "victim");
    let okey = join_key(&prefix, "other");
    let up = t
        .put_bytes(&key, body.clone(), Default::default())
        .await
        .expect("put");
    t.put_bytes(&okey, other, Default::default())
        .await
        .expect("put other");
    let good = stored(&t, &key).await;
    let theirs = stored(&t, &okey).await;
    let n = good.len();
    let mut flipped = good.clone();
    flipped[n / 2] ^= 0x01;
    let mut header_flipped = good.clone();
    header_flipped[40] ^= 0x01;
    let truncated = good[..n - 65536 - 16].to_vec();
    let cut_inside = good[..n - 7].to_vec();
    // Their last chunk after our first ones: a splice of two objects under one key.
    let p = n - (100 + 16);
    let mut spliced = good[..p].to_vec();
    spliced.extend_from_slice(&theirs[p..]);
    let want = Expect {
        size: Some(body.len() as u64),
        crc32c: Some(up.crc32c),
    };
    let dir = tempfile::tempdir().expect("tmp");
    let cases: [(&str, Vec<u8>); 6] = [
        ("flipped byte", flipped),
        ("header byte", header_flipped),
        ("truncated at a chunk", truncated),
        ("truncated inside a chunk", cut_inside),
        ("spliced", spliced),
        ("swapped whole", theirs),
    ];
    for (what, bytes) in cases {
        t.raw()
            .put_bytes(&key, Bytes::from(bytes), Default::default())
            .await
            .expect("raw put");
        let dest = dir.path().join("restored");
        let e = t.download_file(&key, &dest, want).await.expect_err(what);
        assert!(
            matches!(e, Error::Crypt(_) | Error::Checksum { .. }),
            "{what}: {e}"
        );
        assert!(!dest.exists(), "{what}: nothing restored");
        let mut out = Vec::new();
        let e = t.download_to(&key, &mut out, want).await.expect_err(what);
        // A stream cannot take back bytes already written: the error is the signal, and only
        // a whole object that authenticates (another one swapped in) gets that far.
        assert!(
            out.len() < body.len() || what == "swapped whole",
            "{what}: {e}"
        );
        let mut out = Vec::new();
        assert!(
            t.download_ranges(
                &key,
                &[ByteRange {
                    start: 0,
                    end: body.len() as u64
                }],
                &mut out
            )
            .await
            .is_err()
                || what == "swapped whole",
            "{what}: ranges"
        );
    }
}

async fn an_interrupted_encrypted_upload_resumes(b: Backend) {
    let (store, prefix, _d) = open(b, "crypt-resume").await;
    let me = x25519::Identity::generate();
    let k = keys(&[&me], &[&me]);
    let tmp = tempfile::tempdir().expect("tmp");
    let body = data(40 * MIB + 3, 11);
    let src = tmp.path().join("big");
    std::fs::write(&src, &body).expect("write");
    let key = join_key(&prefix, "big");
    let journal = FileJournal(tmp.path().join("journal.json"));
    let mut cfg = small_transfer();
    cfg.concurrency = 2;
    let t = Transfer::new(store.clone(), cfg.clone()).with_encryption(Some(Arc::new(k.clone())));
    let cancel = t.cancel_flag().clone();
    let upload = t.upload_file(&src, &key, Some(&journal));
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
    let saved = journal.load().expect("journal kept");
    assert!(saved.seal.is_some(), "the journal keeps the seal state");
    let journal_text = std::fs::read_to_string(&journal.0).expect("journal");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&journal.0).expect("meta").permissions(),
    );
    assert_eq!(mode & 0o077, 0, "journal holds a file key: private");
    assert!(!journal_text.contains(me.to_string().expose_secret()));

    let t2 = Transfer::new(store.clone(), cfg).with_encryption(Some(Arc::new(k)));
    let up = t2
        .upload_file(&src, &key, Some(&journal))
        .await
        .expect("resume");
    assert!(up.parts_reused >= 3, "{up:?}");
    assert_eq!(up.crc32c, checksum::crc32c(&body));
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
    .expect("verified");
    assert!(out == body);
    let sealed = stored(&t2, &key).await;
    assert!(
        go_age_open(tmp.path(), &me, &sealed) == body,
        "Go age opens the resumed object"
    );
}

/// The plaintext-swap attack: whoever can write the bucket replaces an encrypted object with
/// plaintext of their choosing (the manifest itself, whose checksums then vouch for anything).
/// With `require_encrypted` every read path refuses it by name and writes nothing; without it,
/// the same object is read as what it is (a mixed bucket).
async fn a_plaintext_swap_is_refused_where_encryption_is_required(b: Backend) {
    let (store, prefix, _d) = open(b, "crypt-require").await;
    let me = x25519::Identity::generate();
    let mut strict = keys(&[&me], &[&me]);
    strict.require_sealed = Some(barmans3::crypt::REQUIRE_SETTING);
    let strict_t = engine(&store, Some(strict));
    let lax_t = engine(&store, Some(keys(&[&me], &[&me])));
    let key = join_key(&prefix, "manifest.json");
    let empty = join_key(&prefix, "empty");
    let body = Bytes::from(data(200_000, 9));
    strict_t
        .put_bytes(&key, body.clone(), Default::default())
        .await
        .expect("sealed put");
    let mut out = Vec::new();
    strict_t
        .download_to(&key, &mut out, Expect::default())
        .await
        .expect("an encrypted object reads");
    assert!(out == body);
    // The swap: plaintext (and an empty object) put as they are, past the encryption.
    let forged = Bytes::from(data(200_000, 10));
    for (k, b) in [(&key, forged.clone()), (&empty, Bytes::new())] {
        strict_t
            .raw()
            .put_bytes(k, b, Default::default())
            .await
            .expect("raw put");
    }
    let dir = tempfile::tempdir().expect("tmp");
    let dest = dir.path().join("out");
    for k in [&key, &empty] {
        let whole = ByteRange { start: 0, end: 0 };
        for e in [
            strict_t
                .download_file(k, &dest, Expect::default())
                .await
                .expect_err("file"),
            strict_t
                .download_small(k, 1 << 20)
                .await
                .expect_err("small"),
            strict_t
                .download_to(k, &mut Vec::new(), Expect::default())
                .await
                .expect_err("to"),
            strict_t
                .download_ranges(k, &[whole], &mut Vec::new())
                .await
                .expect_err("ranges"),
        ] {
            let line = e.one_line();
            assert!(
                line.contains("encryption.require_encrypted") && line.contains(k.as_str()),
                "{line}"
            );
            assert!(
                matches!(&e, Error::Crypt(c) if matches!(c.fault, Fault::Plaintext { .. })),
                "{line}"
            );
            assert_eq!(e.exit(), Exit::Failed, "{line}");
        }
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        0,
        "nothing written"
    );
    // Without the setting the same bucket reads as mixed: the forged bytes come back.
    let (got, _) = lax_t.download_small(&key, 1 << 20).await.expect("lax");
    assert!(got == forged, "a mixed bucket reads plaintext as it is");
}

on_both!(
    encrypted_round_trips,
    mixed_bucket_and_missing_identity,
    key_rotation,
    tampering_is_refused,
    an_interrupted_encrypted_upload_resumes,
    a_plaintext_swap_is_refused_where_encryption_is_required,
);

/// Encrypted objects the store checks by MD5 only (Content-MD5 uploads: a single PUT's ETag
/// is its MD5, a multipart ETag the MD5 of its parts' MD5s) download into a file and to a
/// stream, verified: each part is one GET whose MD5 is taken as its runs are opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_checked_encrypted_objects_download_and_verify() {
    use barmans3::transfer::{ChecksumMode, Settings};
    let (store, prefix, _d) = open(Backend::Garage, "crypt-md5").await;
    let me = x25519::Identity::generate();
    let settings = Settings {
        checksum: ChecksumMode::WhenRequired,
        probe_checksum: false,
        ..small_transfer()
    };
    let t = Transfer::new(store.clone(), settings)
        .with_encryption(Some(Arc::new(keys(&[&me], &[&me]))));
    let dir = tempfile::tempdir().expect("tmp");
    for (size, parts) in [(3 * MIB + 5, None), (23 * MIB + 1, Some(5))] {
        let body = data(size, size as u64);
        let crc = checksum::crc32c(&body);
        let src = dir.path().join(format!("src-{size}"));
        std::fs::write(&src, &body).expect("write");
        let key = join_key(&prefix, &format!("md5-{size}"));
        t.upload_file(&src, &key, None).await.expect("upload");
        // The store vouches for these objects by MD5 alone.
        let etag = t.head(&key).await.expect("head").etag.unwrap_or_default();
        let etag = etag.trim_matches('"');
        match parts {
            None => assert!(!etag.contains('-') && etag.len() == 32, "{etag}"),
            Some(n) => assert!(etag.ends_with(&format!("-{n}")), "{etag}"),
        }
        assert!(t.head(&key).await.expect("head").crc32c.is_none());
        let expect = Expect {
            size: Some(size as u64),
            crc32c: Some(crc),
        };
        let dest = dir.path().join(format!("back-{size}"));
        t.download_file(&key, &dest, expect)
            .await
            .expect("to a file");
        assert!(std::fs::read(&dest).expect("read") == body, "{key}: file");
        let mut out = Vec::new();
        t.download_to(&key, &mut out, expect)
            .await
            .expect("to a stream");
        assert!(out == body, "{key}: stream");
    }
}
