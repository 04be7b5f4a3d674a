//! Tables for the chunk decisions: what may be read, what a put may start from, what matches.

use super::*;

const M: u64 = 10;

fn listed(sizes: &[(u32, u64)]) -> BTreeMap<u32, u64> {
    sizes.iter().copied().collect()
}

fn manifest(sizes: &[u64]) -> Manifest {
    Manifest::new(
        M,
        sizes
            .iter()
            .enumerate()
            .map(|(i, &s)| ChunkRecord::new(s, i as u32 + 100))
            .collect(),
    )
}

#[test]
fn chunk_names_are_exactly_four_digits() {
    assert_eq!(chunk_name(0), "0000");
    assert_eq!(chunk_name(9999), "9999");
    let cases = [
        ("0000", Some(0)),
        ("0042", Some(42)),
        ("9999", Some(9999)),
        ("000", None),
        ("00000", None),
        ("00a1", None),
        ("+001", None),
        ("barmans3.volume.json", None),
    ];
    for (name, want) in cases {
        assert_eq!(chunk_index(name), want, "{name}");
    }
}

#[test]
fn listings_are_sorted_into_chunks_manifest_marker_and_others() {
    let objs = [
        ObjectMeta::listed("p/V/", 0),
        ObjectMeta::listed("p/V/0000", 10),
        ObjectMeta::listed("p/V/0001", 3),
        ObjectMeta::listed("p/V/barmans3.volume.json", 200),
        ObjectMeta::listed("p/V/notes.txt", 1),
        ObjectMeta::listed("p/V/sub/0002", 1),
    ];
    let l = parse_listing("p/V/", &objs);
    assert_eq!(l.chunks, listed(&[(0, 10), (1, 3)]));
    assert!(l.manifest && l.marker && l.exists());
    assert_eq!(l.others, ["notes.txt", "sub/0002"]);
    assert!(!parse_listing("p/V/", &objs[..1]).exists());
}

type ReadWant = Result<(Vec<u64>, usize, usize), &'static str>;

/// A `readable` case: listing, manifest sizes, allow_truncated → Ok(chunk sizes, CRCs known,
/// warnings) or an error containing the text.
struct ReadCase {
    what: &'static str,
    listing: Vec<(u32, u64)>,
    manifest: Option<Vec<u64>>,
    allow: bool,
    want: ReadWant,
}

#[rustfmt::skip]
fn read_cases() -> Vec<ReadCase> {
    let c = |what, listing: &[(u32, u64)], manifest: Option<&[u64]>, allow, want| ReadCase {
        what, listing: listing.to_vec(), manifest: manifest.map(<[u64]>::to_vec), allow, want,
    };
    vec![
        c("three chunks, last short", &[(0, M), (1, M), (2, 5)], None, false, Ok((vec![M, M, 5], 0, 0))),
        c("with our manifest: every CRC known", &[(0, M), (1, M), (2, 5)], Some(&[M, M, 5]), false, Ok((vec![M, M, 5], 3, 0))),
        c("gap in the middle", &[(0, M), (2, 5)], None, false, Err("chunk 0001 is missing but 1 later chunk(s) exist")),
        c("gap allowed: the prefix", &[(0, M), (2, 5)], None, true, Ok((vec![M], 0, 1))),
        c("first chunk missing, allowed", &[(1, M)], None, true, Ok((vec![], 0, 1))),
        c("tail missing per manifest", &[(0, M), (1, M)], Some(&[M, M, 5]), false, Err("our manifest lists 3 chunks but only 2")),
        c("tail missing, allowed", &[(0, M), (1, M)], Some(&[M, M, 5]), true, Ok((vec![M, M], 2, 1))),
        c("short chunk in the middle", &[(0, M), (1, 4), (2, 5)], None, false, Err("chunk 0001 holds 4 bytes where the chunk size is 10")),
        c("chunk larger than the chunk size", &[(0, M), (1, M + 1)], Some(&[M, 5]), false, Err("chunk 0001 holds 11 bytes")),
        c("chunk differs from the manifest", &[(0, M), (1, 4)], Some(&[M, 5]), false, Err("chunk 0001 holds 4 bytes, our manifest says 5")),
        c("grown by Bareos: last rewritten, one more", &[(0, M), (1, M), (2, 2)], Some(&[M, 5]), false, Ok((vec![M, M, 2], 1, 1))),
        c("grown by Bareos inside the last chunk", &[(0, M), (1, 8)], Some(&[M, 5]), false, Ok((vec![M, 8], 1, 1))),
        c("grown after a whole last chunk", &[(0, M), (1, M), (2, 1)], Some(&[M, M]), false, Ok((vec![M, M, 1], 2, 1))),
        c("empty volume by manifest", &[], Some(&[]), false, Ok((vec![], 0, 0))),
        c("droplet's empty 0000 alone", &[(0, 0)], None, false, Ok((vec![0], 0, 0))),
    ]
}

#[test]
fn what_may_be_read() {
    for case in read_cases() {
        let what = case.what;
        let m = case.manifest.map(|s| manifest(&s));
        match (
            readable(&listed(&case.listing), m.as_ref(), case.allow),
            case.want,
        ) {
            (Ok(r), Ok((sizes, crcs, warnings))) => {
                let got_sizes: Vec<u64> = r.chunks.iter().map(|c| c.0).collect();
                assert_eq!(got_sizes, sizes, "{what}");
                let known = r.chunks.iter().filter(|c| c.1.is_some()).count();
                assert_eq!(known, crcs, "{what}");
                assert_eq!(r.warnings.len(), warnings, "{what}: {:?}", r.warnings);
                assert_eq!(r.total, sizes.iter().sum::<u64>(), "{what}");
            }
            (Err(e), Err(text)) => assert!(e.contains(text), "{what}: {e}"),
            (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn ranges_map_onto_chunks() {
    let sizes = [M, M, 5];
    let r = |s, e| ByteRange { start: s, end: e };
    assert_eq!(
        pieces(&sizes, 0, 25),
        [(0, r(0, 10)), (1, r(0, 10)), (2, r(0, 5))]
    );
    assert_eq!(pieces(&sizes, 8, 4), [(0, r(8, 10)), (1, r(0, 2))]);
    assert_eq!(pieces(&sizes, 20, 5), [(2, r(0, 5))]);
    assert_eq!(pieces(&sizes, 12, 0), []);
    assert_eq!(pieces(&sizes, 24, 100), [(2, r(4, 5))]);
}

#[test]
fn the_ten_thousand_chunk_limit_names_a_size_that_fits() {
    let mib = 1u64 << 20;
    assert!(check_fits(10_000 * 1024, 1024).is_ok());
    let e = check_fits(10_000 * 1024 + 1, 1024).expect_err("too big");
    assert!(e.contains("--chunk-size 10MiB"), "{e}");
    let huge = 300 * 1024 * mib;
    let e = check_fits(huge, 10 * mib).expect_err("300 GiB at 10 MiB");
    assert!(e.contains("--chunk-size 31MiB"), "{e}");
    assert!(check_fits(huge, chunk_size_fitting(huge)).is_ok());
    assert_eq!(chunk_size_fitting(1), MIN_CHUNK_SIZE);
}

#[test]
fn a_put_starts_in_the_chunk_holding_its_base() {
    assert_eq!(start_of(0, M), (0, 0));
    assert_eq!(start_of(25, M), (2, 5));
    assert_eq!(start_of(20, M), (2, 0));
}

type SizeCase = (
    Vec<(u32, u64)>,
    Option<Vec<u64>>,
    Option<u64>,
    Result<u64, &'static str>,
);

#[rustfmt::skip]
fn size_cases() -> Vec<SizeCase> {
    vec![
        (vec![], None, None, Ok(7)),
        (vec![], None, Some(12), Ok(12)),
        (vec![(0, M), (1, 3)], Some(vec![M, 3]), None, Ok(M)),
        (vec![(0, M), (1, 3)], Some(vec![M, 3]), Some(M), Ok(M)),
        (vec![(0, M), (1, 3)], Some(vec![M, 3]), Some(20), Err("--chunk-size 20 disagrees")),
        (vec![(0, M), (1, 3)], None, None, Ok(M)),
        (vec![(0, M), (1, 3)], None, Some(11), Err("chunks of 10 bytes (chunk 0000)")),
        (vec![(0, 4)], None, None, Err("give --chunk-size")),
        (vec![(0, 4)], None, Some(M), Ok(M)),
        (vec![(0, 4)], None, Some(3), Err("more than --chunk-size 3")),
        (vec![(0, 4)], Some(vec![4]), None, Ok(M)),
    ]
}

#[test]
fn the_chunk_size_of_an_existing_volume() {
    for (l, m, given, want) in size_cases() {
        let m = m.map(|s| manifest(&s));
        let got = existing_chunk_size(&listed(&l), m.as_ref(), given, 7);
        match (got, want) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{l:?} {given:?}"),
            (Err(e), Err(t)) => assert!(e.contains(t), "{l:?} {given:?}: {e}"),
            (got, want) => panic!("{l:?} {given:?}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn stored_chunks_compare_by_size_then_checksum() {
    let body = b"hello";
    let crc = checksum::crc32c(body);
    let meta = |size, crc32c: Option<String>, etag: Option<String>| ObjectMeta {
        crc32c,
        etag,
        ..ObjectMeta::listed("k", size)
    };
    let md5 = checksum::hex(&checksum::md5(body));
    let cases = [
        (
            meta(5, Some(checksum::crc32c_header(crc)), None),
            Stored::Same,
        ),
        (
            meta(5, Some(checksum::crc32c_header(crc ^ 1)), Some(md5.clone())),
            Stored::Differs,
        ),
        (
            meta(4, Some(checksum::crc32c_header(crc)), None),
            Stored::Differs,
        ),
        (meta(5, None, Some(md5.to_uppercase())), Stored::Same),
        (meta(5, None, Some("0".repeat(32))), Stored::Differs),
        (meta(5, None, Some(format!("{md5}-2"))), Stored::Unknown),
        (meta(5, Some("AAAAAA==-3".into()), None), Stored::Unknown),
        (meta(5, None, None), Stored::Unknown),
    ];
    for (m, want) in cases {
        assert_eq!(compare(&m, body, crc), want, "{m:?}");
    }
}

#[test]
fn kept_chunks_take_the_manifests_record_or_the_stores() {
    let l = listed(&[(0, M), (1, M), (2, 5)]);
    let m = manifest(&[M, M, 5]);
    let heads: BTreeMap<u32, Option<u32>> = [(0, Some(7)), (1, None)].into_iter().collect();
    let kept = kept_records(2, &l, Some(&m), &heads).expect("kept");
    assert_eq!(kept, m.chunks[..2]);
    let kept = kept_records(2, &l, None, &heads).expect("kept");
    assert_eq!(kept[0], ChunkRecord::new(M, 7));
    assert_eq!(kept[1].crc32c, None);
    assert!(kept_records(3, &listed(&[(0, M), (2, 5)]), None, &heads).is_err());
}

fn with(chunks: &[(u32, u64)], manifest: bool) -> Listed {
    Listed {
        chunks: listed(chunks),
        manifest,
        ..Listed::default()
    }
}

#[test]
#[rustfmt::skip]
fn where_a_put_starts_or_why_it_does_not() {
    let d = DEFAULT_CHUNK_SIZE;
    let st = |operation, base, chunk_size| Start { operation, base, chunk_size };
    let (none, vol) = (Listed::default(), with(&[(0, M), (1, M), (2, 5)], true));
    let gap = with(&[(0, M), (2, 5)], false);
    let m = manifest(&[M, M, 5]);
    let half = Some(st("append", 25, M));
    let usage = |r: Result<Start, Refusal>| matches!(r, Err(Refusal::Usage(_)));
    let refused = |r: Result<Start, Refusal>| matches!(r, Err(Refusal::Refused(_)));
    // A new volume: default or given chunk size; an existing one is never overwritten.
    assert_eq!(put_start(PutMode::New, None, None, &none, None), Ok(st("put", 0, d)));
    assert_eq!(put_start(PutMode::New, Some(M), None, &none, None), Ok(st("put", 0, M)));
    assert!(refused(put_start(PutMode::New, None, None, &vol, Some(&m))));
    assert!(refused(put_start(PutMode::New, None, None, &with(&[(0, 1)], false), None)));
    // Resume: the interrupted run's own start, else from 0 with the volume's chunk size.
    assert_eq!(put_start(PutMode::Resume, None, half, &vol, None), Ok(st("append", 25, M)));
    assert!(usage(put_start(PutMode::Resume, Some(2 * M), half, &vol, None)));
    assert_eq!(put_start(PutMode::Resume, None, None, &vol, Some(&m)), Ok(st("put", 0, M)));
    assert_eq!(put_start(PutMode::Resume, None, None, &gap, None), Ok(st("put", 0, M)));
    // Append: after the volume's end, never onto a half-written or damaged volume.
    assert_eq!(put_start(PutMode::Append, None, None, &vol, Some(&m)), Ok(st("append", 25, M)));
    assert_eq!(put_start(PutMode::Append, None, None, &none, None), Ok(st("append", 0, d)));
    assert!(refused(put_start(PutMode::Append, None, half, &vol, Some(&m))));
    assert!(refused(put_start(PutMode::Append, None, None, &gap, None)));
    assert!(usage(put_start(PutMode::Append, Some(2 * M), None, &vol, Some(&m))));
}

#[test]
fn data_must_fit_and_end_where_the_volume_ends() {
    let s = |base, chunk_size| Start {
        operation: "put",
        base,
        chunk_size,
    };
    let vol = with(&[(0, M), (1, M), (2, 5)], false);
    assert_eq!(check_end(&s(0, M), 25, &vol), Ok(()));
    assert_eq!(check_end(&s(0, M), 21, &vol), Ok(()));
    assert!(
        matches!(check_end(&s(0, M), 20, &vol), Err(Refusal::Refused(e)) if e.contains("chunk 0002 lies past"))
    );
    assert!(matches!(
        check_end(&s(0, 1), 10_001, &Listed::default()),
        Err(Refusal::Usage(_))
    ));
    assert_eq!(check_end(&s(25, M), 0, &vol), Ok(()));
}

#[test]
fn a_manifest_counts_only_while_every_chunk_is_the_object_it_recorded() {
    let tagged = |sizes: &[u64]| {
        let mut m = manifest(sizes);
        for (i, c) in m.chunks.iter_mut().enumerate() {
            c.etag = Some(format!("e{i}"));
        }
        m
    };
    let mut l = with(&[(0, M), (1, 5)], true);
    l.etags = [(0, "e0".to_string()), (1, "e1".to_string())].into();
    let none = BTreeMap::new();
    let m = tagged(&[M, 5]);
    assert!(needs_head(&l, &m).is_empty());
    assert_eq!(manifest_matches(&l, &m, &none), Ok(()));

    // Bareos appended: the last chunk rewritten under its name (new ETag), then grown.
    let mut appended = l.clone();
    appended.etags.insert(1, "other".into());
    let e = manifest_matches(&appended, &m, &none).expect_err("rewritten");
    assert!(e.contains("chunk 0001 was rewritten"), "{e}");
    appended.chunks.insert(1, M);
    let e = manifest_matches(&appended, &m, &none).expect_err("grown");
    assert!(e.contains("chunk 0001 holds 10 bytes"), "{e}");
    appended.chunks.insert(2, 3);
    assert!(manifest_matches(&with(&[(0, M), (1, 5), (2, 3)], true), &m, &none).is_err());
    // Bareos truncated and relabelled: a new, shorter 0000.
    let e = manifest_matches(&with(&[(0, 4)], true), &m, &none).expect_err("relabelled");
    assert!(e.contains("0000"), "{e}");
    // A chunk lost is not a change: the manifest stays to say the volume is truncated.
    let mut lost = l.clone();
    lost.chunks.remove(&1);
    assert_eq!(manifest_matches(&lost, &m, &none), Ok(()));

    // A manifest of an earlier version (no ETags): the store's CRC32C decides, and a chunk
    // whose CRC32C the store does not know cannot be vouched for.
    let old = manifest(&[M, 5]);
    assert_eq!(needs_head(&l, &old), vec![0, 1]);
    let heads = [(0, Some(100)), (1, Some(101))].into();
    assert_eq!(manifest_matches(&l, &old, &heads), Ok(()));
    let heads = [(0, Some(100)), (1, Some(7))].into();
    assert!(manifest_matches(&l, &old, &heads).is_err());
    let heads = [(0, Some(100)), (1, None)].into();
    assert!(manifest_matches(&l, &old, &heads).is_err());
    // A listing without ETags (a file:// store) falls back to the CRC32C too.
    let bare = with(&[(0, M), (1, 5)], true);
    assert_eq!(needs_head(&bare, &m), vec![0, 1]);
}

/// Encrypted chunks list their ciphertext sizes: the manifest's plaintext size replaces each
/// stored size that can hold it; chunks it does not describe, or whose stored size cannot hold
/// what it records (a plaintext chunk, another object), are to be opened.
#[test]
fn sealed_chunks_take_their_plaintext_size_from_the_manifest() {
    use crate::crypt::Layout;
    let sealed = |plain| Layout::new(200).sealed_len(plain);
    let m = manifest(&[M, M, 4]);
    let mut l = Listed {
        chunks: listed(&[(0, sealed(M)), (1, M), (2, sealed(4)), (3, sealed(7))]),
        ..Listed::default()
    };
    assert_eq!(plain_sizes(&mut l, Some(&m)), vec![1, 3]);
    assert_eq!(l.chunks, listed(&[(0, M), (1, M), (2, 4), (3, sealed(7))]));
    // No manifest (a put that did not finish): every chunk is opened.
    let mut l = Listed {
        chunks: listed(&[(0, sealed(M)), (1, sealed(3))]),
        ..Listed::default()
    };
    assert_eq!(plain_sizes(&mut l, None), vec![0, 1]);
}

#[test]
fn a_sealed_chunk_just_stored_is_checked_by_size_only() {
    let sealed = crate::crypt::Layout::new(200).sealed_len(M);
    let cases = [
        (sealed, Stored::Unknown),
        (M, Stored::Differs),
        (sealed + 100_000, Stored::Differs),
    ];
    for (size, want) in cases {
        let meta = ObjectMeta::listed("k", size);
        assert_eq!(compare_sealed(&meta, M), want, "{size}");
    }
}
