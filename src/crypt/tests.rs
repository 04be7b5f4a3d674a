//! Round trips, parallel parts, ranges, rotation and tampering, through the public API.

use age::x25519;

use super::*;

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn ids(keys: &[&x25519::Identity]) -> Identities {
    Identities::new(
        "encryption.identity_files",
        vec!["/etc/barmans3/a.key".into()],
        keys.iter().map(|k| (*k).clone()).collect(),
    )
}

fn to(keys: &[&x25519::Identity]) -> Recipients {
    Recipients::new(keys.iter().map(|k| k.to_public())).expect("recipients")
}

/// Seals `plain` in one call: preamble, then every chunk.
fn seal_all(sealer: &Sealer, plain: &[u8]) -> Vec<u8> {
    let mut out = sealer.preamble().to_vec();
    sealer.seal(0, plain, true, &mut out).expect("seal");
    out
}

/// Opens a whole object through the stream opener, fed `step` bytes at a time.
fn open_stream(ids: &Identities, sealed: &[u8], step: usize) -> (Vec<u8>, Result<(), CryptError>) {
    let mut o = StreamOpener::new(ids, "s3://b/obj");
    let mut out = Vec::new();
    for piece in sealed.chunks(step.max(1)) {
        if let Err(e) = o.update(piece, &mut out) {
            return (out, Err(e));
        }
    }
    let r = o.finish(&mut out);
    (out, r)
}

/// Opens a whole object with its length known: header, then all chunks as one run.
fn open_known(ids: &Identities, sealed: &[u8]) -> Result<Vec<u8>, CryptError> {
    let o = Opener::open(sealed, ids, "s3://b/obj")?;
    let plain_len = o.plain_len(sealed.len() as u64)?;
    let start = o.layout().payload_start() as usize;
    let mut out = Vec::new();
    o.open_chunks(0, &sealed[start..], true, &mut out)?;
    assert_eq!(out.len() as u64, plain_len);
    Ok(out)
}

/// [`open_known`] in place, in runs of `run` whole chunks (the last run ends the object), each
/// run behind `gap` bytes that its plaintext moves into.
fn open_in_place(ids: &Identities, sealed: &[u8], run: usize) -> Result<Vec<u8>, CryptError> {
    let plain = open_in_place_after(ids, sealed, run, 0)?;
    assert_eq!(open_in_place_after(ids, sealed, run, 4095)?, plain);
    Ok(plain)
}

fn open_in_place_after(
    ids: &Identities,
    sealed: &[u8],
    run: usize,
    gap: usize,
) -> Result<Vec<u8>, CryptError> {
    let o = Opener::open(sealed, ids, "s3://b/obj")?;
    o.plain_len(sealed.len() as u64)?;
    let start = o.layout().payload_start() as usize;
    let mut payload = sealed[start..].to_vec();
    let step = run * SEALED_CHUNK as usize;
    let mut out = Vec::new();
    let pieces: Vec<&mut [u8]> = if payload.is_empty() {
        vec![&mut payload[..]]
    } else {
        payload.chunks_mut(step).collect()
    };
    let n = pieces.len();
    for (k, piece) in pieces.into_iter().enumerate() {
        let mut buf = vec![0u8; gap];
        buf.extend_from_slice(piece);
        let len = o.open_chunks_in_place((k * run) as u64, &mut buf, gap, k + 1 == n)?;
        out.extend_from_slice(&buf[..len]);
    }
    Ok(out)
}

const SIZES: [usize; 8] = [
    0,
    1,
    65535,
    65536,
    65537,
    3 * 65536 + 17,
    4 * 65536,
    3 * 1024 * 1024 + 3,
];

#[test]
fn every_size_round_trips_through_every_path() {
    let me = x25519::Identity::generate();
    for (i, &len) in SIZES.iter().enumerate() {
        let plain = data(len, i as u64);
        let sealer = Sealer::new(&to(&[&me]), "obj").expect("sealer");
        let sealed = seal_all(&sealer, &plain);
        assert_eq!(sealed.len() as u64, sealer.layout().sealed_len(len as u64));
        assert!(is_sealed(&sealed));
        assert_eq!(open_known(&ids(&[&me]), &sealed).expect("opens"), plain);
        for run in [1, 3, 16] {
            let opened = open_in_place(&ids(&[&me]), &sealed, run).expect("opens in place");
            assert!(opened == plain, "in place, len {len} run {run}");
        }
        // Pieces across chunk boundaries, exactly one sealed chunk, and one byte at a time.
        let small = len <= 70_000;
        let steps: &[usize] = if small {
            &[1, 4099, 65552, 1 << 20]
        } else {
            &[4099]
        };
        for &step in steps {
            let (out, r) = open_stream(&ids(&[&me]), &sealed, step);
            r.expect("stream opens");
            assert!(out == plain, "len {len} step {step}");
        }
        // The stream sealer, on the same key, writes the same bytes whatever the pieces.
        let steps: &[usize] = if small {
            &[1, 1000, 65536, 200_000]
        } else {
            &[100_000]
        };
        for &step in steps {
            let again = Sealer::resume(&sealer.resume_state(), "obj").expect("resume");
            let mut s = again.into_stream();
            let mut out = Vec::new();
            for piece in plain.chunks(step) {
                s.update(piece, &mut out).expect("update");
            }
            s.finish(&mut out).expect("finish");
            assert!(out == sealed, "stream sealer, len {len} step {step}");
        }
    }
}

#[test]
fn parts_of_whole_chunks_seal_in_parallel_into_the_same_object() {
    let me = x25519::Identity::generate();
    let plain = data(10 * CHUNK as usize + 5, 7);
    let sealer = Sealer::new(&to(&[&me]), "obj").expect("sealer");
    let whole = seal_all(&sealer, &plain);
    let part = 3 * CHUNK as usize;
    let pieces: Vec<(usize, &[u8])> = plain.chunks(part).enumerate().collect();
    let n = pieces.len();
    let sealed_parts: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = pieces
            .iter()
            .map(|&(k, p)| {
                let sealer = &sealer;
                s.spawn(move || {
                    let mut out = if k == 0 {
                        sealer.preamble().to_vec()
                    } else {
                        Vec::new()
                    };
                    let first = (k * part) as u64 / CHUNK;
                    sealer.seal(first, p, k + 1 == n, &mut out).expect("part");
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let layout = sealer.layout();
    for (k, sp) in sealed_parts.iter().enumerate() {
        let start = (k * part) as u64;
        let end = (start + part as u64).min(plain.len() as u64);
        let r = layout
            .sealed_part(start..end, plain.len() as u64)
            .expect("part");
        assert_eq!(
            &whole[r.start as usize..r.end as usize],
            &sp[..],
            "part {k}"
        );
    }
    assert_eq!(sealed_parts.concat(), whole);
}

#[test]
fn plaintext_ranges_open_from_the_chunks_they_touch() {
    let me = x25519::Identity::generate();
    let plain = data(6 * CHUNK as usize + 999, 3);
    let sealer = Sealer::new(&to(&[&me]), "obj").expect("sealer");
    let sealed = seal_all(&sealer, &plain);
    let opener = Opener::open(&sealed[..2000], &ids(&[&me]), "obj").expect("header");
    let len = plain.len() as u64;
    let c = CHUNK;
    let ranges = [
        0..1,
        0..len,
        c - 1..c + 1,
        c..2 * c,
        5 * c + 3..len,
        len - 1..len,
        123_456..123_457,
        2 * c + 77..5 * c + 1,
    ];
    for r in ranges {
        let span = opener.layout().sealed_span(r.clone(), len).expect("span");
        let bytes = &sealed[span.bytes.start as usize..span.bytes.end as usize];
        let mut out = b"kept".to_vec();
        opener.open_span(&span, bytes, &mut out).expect("range");
        assert_eq!(&out[4..], &plain[r.start as usize..r.end as usize], "{r:?}");
        assert_eq!(&out[..4], b"kept");
    }
}

#[test]
fn random_plaintext_ranges_open_exactly() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let me = x25519::Identity::generate();
    let mut rng = StdRng::seed_from_u64(42);
    for len in [
        1usize,
        65536,
        65537,
        5 * CHUNK as usize - 1,
        5 * CHUNK as usize + 300,
    ] {
        let plain = data(len, len as u64);
        let sealer = Sealer::new(&to(&[&me]), "obj").expect("sealer");
        let sealed = seal_all(&sealer, &plain);
        let opener = Opener::open(&sealed, &ids(&[&me]), "obj").expect("header");
        assert_eq!(
            opener.plain_len(sealed.len() as u64).expect("len"),
            len as u64
        );
        for _ in 0..40 {
            let a = rng.random_range(0..len);
            let b = rng.random_range(a + 1..=len);
            let span = opener
                .layout()
                .sealed_span(a as u64..b as u64, len as u64)
                .expect("span");
            let mut out = Vec::new();
            let bytes = &sealed[span.bytes.start as usize..span.bytes.end as usize];
            opener.open_span(&span, bytes, &mut out).expect("range");
            assert!(out == plain[a..b], "len {len} range {a}..{b}");
        }
    }
}

#[test]
fn rotation_opens_with_any_listed_identity_and_names_what_is_missing() {
    let old = x25519::Identity::generate();
    let new = x25519::Identity::generate();
    let stranger = x25519::Identity::generate();
    let plain = data(100_000, 1);
    let by_old = seal_all(&Sealer::new(&to(&[&old]), "a").expect("s"), &plain);
    let by_new = seal_all(&Sealer::new(&to(&[&new]), "b").expect("s"), &plain);
    let both = ids(&[&new, &old]);
    assert_eq!(open_known(&both, &by_old).expect("old"), plain);
    assert_eq!(open_known(&both, &by_new).expect("new"), plain);
    let e = open_known(&ids(&[&new, &stranger]), &by_old).expect_err("no old key");
    assert!(e.is_key_problem());
    assert!(matches!(e.fault, Fault::NoMatchingIdentity { .. }));
    let msg = crate::error::Error::from(e.clone()).to_string();
    assert!(
        msg.contains("s3://b/obj")
            && msg.contains("encryption.identity_files")
            && msg.contains("/etc/barmans3/a.key"),
        "{msg}"
    );
    assert_eq!(crate::error::Error::from(e).exit(), crate::Exit::Config);
    let e = open_known(&Identities::none("encryption.identity_file"), &by_old).expect_err("none");
    assert!(matches!(
        e.fault,
        Fault::NoIdentity {
            setting: "encryption.identity_file"
        }
    ));
    // Several recipients: each identity alone opens the object.
    let shared = seal_all(&Sealer::new(&to(&[&old, &new]), "c").expect("s"), &plain);
    assert_eq!(open_known(&ids(&[&old]), &shared).expect("old"), plain);
    assert_eq!(open_known(&ids(&[&new]), &shared).expect("new"), plain);
}

/// Every way to damage an object fails, on both read paths, and never yields wrong bytes.
fn assert_refused(me: &Identities, plain: &[u8], bad: &[u8], what: &str) -> CryptError {
    let known = open_known(me, bad).expect_err(what);
    // In place, the one fault it cannot tell apart is a chunk that does not authenticate.
    let in_place = open_in_place(me, bad, 2).expect_err(what);
    if in_place.fault != known.fault {
        assert!(
            matches!(in_place.fault, Fault::ChunkAuth { .. })
                && matches!(
                    known.fault,
                    Fault::Truncated | Fault::TrailingData { .. } | Fault::ChunkAuth { .. }
                ),
            "{what}: in place {in_place}, known {known}"
        );
    }
    let (out, r) = open_stream(me, bad, 10_000);
    let streamed = r.expect_err(what);
    assert!(
        plain.starts_with(&out),
        "{what}: the stream opener returned unauthenticated bytes"
    );
    // A damaged stanza reads as a key that does not fit (exit 2); everything else is a
    // failed operation (exit 1).
    let exit = crate::error::Error::from(known.clone()).exit();
    assert!(
        known.is_key_problem() || exit == crate::Exit::Failed,
        "{what}: {known}"
    );
    assert_eq!(known.is_key_problem(), streamed.is_key_problem(), "{what}");
    known
}

#[test]
fn tampered_objects_are_refused() {
    let me = x25519::Identity::generate();
    let keys = ids(&[&me]);
    let plain = data(3 * CHUNK as usize + 500, 9);
    let sealer = Sealer::new(&to(&[&me]), "obj").expect("s");
    let good = seal_all(&sealer, &plain);
    let s = sealer.layout().payload_start() as usize;
    let h = s - 16;
    let chunk = |i: usize| s + i * SEALED_CHUNK as usize;
    let flip = |at: usize| {
        let mut b = good.clone();
        b[at] ^= 0x01;
        b
    };
    // The MAC covers the header: any byte of a stanza, or of the MAC line.
    let e = assert_refused(&keys, &plain, &flip(30), "stanza byte");
    assert!(
        matches!(
            e.fault,
            Fault::BadHeader(_) | Fault::NoMatchingIdentity { .. }
        ),
        "{e}"
    );
    let e = assert_refused(&keys, &plain, &flip(h - 10), "MAC byte");
    assert!(
        matches!(e.fault, Fault::HeaderMac | Fault::BadHeader(_)),
        "{e}"
    );
    let e = assert_refused(&keys, &plain, &flip(h + 3), "nonce byte");
    assert_eq!(e.fault, Fault::ChunkAuth { chunk: 0 });
    let e = assert_refused(&keys, &plain, &flip(chunk(1) + 100), "chunk body");
    assert_eq!(e.fault, Fault::ChunkAuth { chunk: 1 });
    let e = assert_refused(&keys, &plain, &flip(chunk(1) - 1), "tag of chunk 0");
    assert_eq!(e.fault, Fault::ChunkAuth { chunk: 0 });
    // Cut at a chunk boundary: the last chunk left was sealed as not final.
    let e = assert_refused(&keys, &plain, &good[..chunk(3)], "final chunk dropped");
    assert_eq!(e.fault, Fault::Truncated);
    assert_refused(
        &keys,
        &plain,
        &good[..chunk(3) + 10],
        "cut inside the final chunk",
    );
    assert_refused(&keys, &plain, &good[..h + 5], "cut inside the nonce");
    assert_refused(&keys, &plain, &good[..h - 5], "cut inside the header");
    let mut swapped = good.clone();
    swapped[chunk(0)..chunk(1)].copy_from_slice(&good[chunk(1)..chunk(2)]);
    swapped[chunk(1)..chunk(2)].copy_from_slice(&good[chunk(0)..chunk(1)]);
    let e = assert_refused(&keys, &plain, &swapped, "chunks swapped");
    assert_eq!(e.fault, Fault::ChunkAuth { chunk: 0 });
    let mut appended = good.clone();
    appended.extend_from_slice(b"x");
    assert_refused(&keys, &plain, &appended, "a byte appended");
    let mut two_final = good.clone();
    two_final.extend_from_slice(&good[chunk(3)..]);
    assert_refused(&keys, &plain, &two_final, "the final chunk twice");
    // Another object sealed to the same key: its header with our payload, or its chunk in ours.
    let other = seal_all(&Sealer::new(&to(&[&me]), "o").expect("s"), &plain);
    let so = Opener::open(&other, &keys, "o")
        .expect("o")
        .layout()
        .payload_start() as usize;
    let mut mixed = other[..so].to_vec();
    mixed.extend_from_slice(&good[s..]);
    let e = assert_refused(&keys, &plain, &mixed, "another object's header");
    assert_eq!(e.fault, Fault::ChunkAuth { chunk: 0 });
    let mut spliced = good.clone();
    spliced[chunk(1)..chunk(2)]
        .copy_from_slice(&other[so + SEALED_CHUNK as usize..so + 2 * SEALED_CHUNK as usize]);
    let e = assert_refused(&keys, &plain, &spliced, "another object's chunk");
    assert_eq!(e.fault, Fault::ChunkAuth { chunk: 1 });
}

#[test]
fn a_final_chunk_in_the_middle_is_named_as_such() {
    let me = x25519::Identity::generate();
    let keys = ids(&[&me]);
    let sealer = Sealer::new(&to(&[&me]), "obj").expect("s");
    // A one-chunk object (final flag on chunk 0) followed by more chunks.
    let mut bad = sealer.preamble().to_vec();
    sealer
        .seal(0, &data(CHUNK as usize, 1), true, &mut bad)
        .expect("seal");
    sealer.seal(1, &data(10, 2), true, &mut bad).expect("seal");
    let e = open_known(&keys, &bad).expect_err("two final chunks");
    assert_eq!(e.fault, Fault::TrailingData { chunk: 0 });
}

#[test]
fn resume_state_is_checked_and_never_printed() {
    let me = x25519::Identity::generate();
    let sealer = Sealer::new(&to(&[&me]), "obj").expect("s");
    let state = sealer.resume_state();
    assert_eq!(format!("{state:?}"), "<redacted>");
    let key_part = state.expose().rsplit(':').next().expect("key").to_string();
    assert!(!format!("{sealer:?}").contains(&key_part));
    let resumed = Sealer::resume(&state, "obj").expect("resume");
    assert_eq!(resumed.preamble(), sealer.preamble());
    let other = Sealer::new(&to(&[&me]), "obj").expect("s").resume_state();
    let other_key = other.expose().rsplit(':').next().expect("key");
    let forged = crate::secret::Secret::new(state.expose().replace(&key_part, other_key));
    let e = Sealer::resume(&forged, "obj").expect_err("wrong key");
    assert!(matches!(e.fault, Fault::BadState(_)));
    for bad in ["", "age-v1:AAAA", "age-v2:a:b", "age-v1:!!:AAAA"] {
        assert!(
            Sealer::resume(&crate::secret::Secret::new(bad), "obj").is_err(),
            "{bad}"
        );
    }
}

#[test]
fn misuse_is_refused_rather_than_sealed() {
    let me = x25519::Identity::generate();
    let sealer = Sealer::new(&to(&[&me]), "obj").expect("s");
    let mut out = Vec::new();
    assert!(sealer.seal(0, &[1; 100], false, &mut out).is_err());
    assert!(sealer.seal(2, &[], true, &mut out).is_err());
    assert!(out.is_empty());
    assert!(sealer.seal(0, &[], true, &mut out).is_ok());
    assert_eq!(out.len(), 16);
}

#[test]
fn chunks_sealed_in_place_are_the_chunks_seal_writes_and_misuse_is_refused() {
    let me = x25519::Identity::generate();
    let sealer = Sealer::new(&to(&[&me]), "obj").expect("s");
    for len in [0, 1, CHUNK as usize, 2 * CHUNK as usize + 9] {
        let plain = data(len, len as u64);
        let mut out = sealer.preamble().to_vec();
        let mut chunks = plain.chunks(CHUNK as usize).enumerate().peekable();
        if plain.is_empty() {
            let at = out.len();
            sealer
                .seal_chunk_in_place(0, true, &mut out, at)
                .expect("empty");
        }
        while let Some((i, c)) = chunks.next() {
            let at = out.len();
            out.extend_from_slice(c);
            let last = chunks.peek().is_none();
            sealer
                .seal_chunk_in_place(i as u64, last, &mut out, at)
                .expect("chunk");
        }
        assert_eq!(out, seal_all(&sealer, &plain), "{len} bytes");
        assert_eq!(open_known(&ids(&[&me]), &out).expect("opens"), plain);
    }
    let mut out = vec![1; 100];
    assert!(sealer.seal_chunk_in_place(0, false, &mut out, 0).is_err());
    assert!(sealer.seal_chunk_in_place(3, true, &mut out, 100).is_err());
    assert!(sealer.seal_chunk_in_place(0, true, &mut out, 101).is_err());
    let mut big = vec![1; CHUNK as usize + 1];
    assert!(sealer.seal_chunk_in_place(0, true, &mut big, 0).is_err());
    assert_eq!(out, vec![1; 100], "a refused chunk is left as it was");
}
