//! Table tests of the archive decisions.

use super::*;

const G: [u8; 16] = [0x11; 16];

fn file(size: u64) -> BrickFacts {
    BrickFacts {
        regular: true,
        mode: 0o100644,
        size,
        blocks: size.div_ceil(512),
        nlink: 2,
        dev: 1,
        ino: 7,
        gfid: Some(G),
        ..Default::default()
    }
}

/// A 4 KiB file changed by `f`.
fn with(f: impl FnOnce(&mut BrickFacts)) -> BrickFacts {
    let mut b = file(4096);
    f(&mut b);
    b
}

#[test]
fn brick_verdicts_follow_the_never_archive_table() {
    use Reason::*;
    let big_sparse = |f: &mut BrickFacts| (f.size, f.blocks) = (8 << 20, 8);
    #[rustfmt::skip]
    let cases: Vec<(&str, BrickFacts, bool, bool, Option<Reason>)> = vec![
        ("plain file", file(4096), true, false, None),
        ("no handle link", with(|f| f.nlink = 1), true, false, None),
        ("symlink", with(|f| f.regular = false), true, false, Some(NotRegular)),
        ("dht.linkto", with(|f| f.linkto = true), true, false, Some(Linkto)),
        ("sticky and empty", with(|f| (f.mode, f.size, f.blocks) = (0o101000, 0, 0)), true, false, Some(Linkto)),
        ("sticky with data is a file", with(|f| f.mode = 0o101644), true, false, None),
        ("cs.remote wins over empty", with(|f| (f.cs_remote, f.size) = (Some("a".into()), 0)), true, false, Some(Archived)),
        ("downloading", with(|f| f.cs_downloading = true), true, false, Some(Downloading)),
        ("stale object size", with(|f| f.cs_object_size = Some("100".into())), true, false, Some(StaleSize)),
        ("unparsable object size", with(|f| f.cs_object_size = Some("x".into())), true, false, Some(StaleSize)),
        ("object size equal to the brick size", with(|f| f.cs_object_size = Some("4096".into())), true, false, None),
        ("sharded", with(|f| f.sharded = true), true, false, Some(Sharded)),
        ("afr pending", with(|f| f.afr_pending = true), true, false, Some(AfrPending)),
        ("third link", with(|f| f.nlink = 3), true, false, Some(Hardlink)),
        ("no gfid", with(|f| f.gfid = None), true, false, Some(NoGfid)),
        ("bad name", file(4096), false, false, Some(UnrecallableName)),
        ("empty", file(0), true, false, Some(Empty)),
        ("sparse", with(big_sparse), true, false, Some(Sparse)),
        ("sparse allowed", with(big_sparse), true, true, None),
        ("a hole under 1 MiB is not sparse", with(|f| (f.size, f.blocks) = (8 << 20, (7 << 20) / 512 + 1)), true, false, None),
    ];
    for (name, facts, name_ok, allow_sparse, want) in cases {
        assert_eq!(brick_verdict(&facts, name_ok, allow_sparse), want, "{name}");
    }
}

#[test]
fn afr_counters_are_pending_when_any_byte_is_set() {
    assert!(!afr_pending(&[0; 12]));
    assert!(afr_pending(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]));
    assert!(afr_pending(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]));
    assert!(!afr_pending(&[]));
}

#[test]
fn names_the_s3_plugin_can_recall() {
    let cases: &[(&[u8], &str, bool)] = &[
        (b"dir/file-1.tar_x~", "bucket", true),
        (b"a b", "bucket", false),
        (b"a+b", "bucket", false),
        (b"caf\xc3\xa9", "bucket", false),
        (b"100%", "bucket", false),
        (b"", "bucket", false),
        (&[b'a'; 3992], "bucket", true),
        (&[b'a'; 3993], "bucket", false),
        (&[b'a'; 3990], "bucket/pre", false),
    ];
    for (rel, id, want) in cases {
        assert_eq!(
            recallable(rel, id),
            *want,
            "{:?}",
            String::from_utf8_lossy(rel)
        );
    }
}

const S: i128 = 1_000_000_000;

fn snap() -> Snapshot {
    Snapshot {
        mnt_size: 10,
        mtime_ns: 1000 * S + 5,
        ctime_ns: 1000 * S + 7,
        brick_size: 10,
        brick_dev: 1,
        brick_ino: 7,
        gfid: G,
        mnt_gfid: G,
        open: false,
    }
}

#[test]
fn cold_means_mtime_and_ctime_older_than_the_age() {
    let day = Duration::from_secs(86400);
    let now = 1000 * S + 7 + 86400 * S;
    assert_eq!(snapshot_verdict(&snap(), now, day), None);
    assert_eq!(
        snapshot_verdict(&snap(), now - 1, day),
        Some(Reason::TooYoung)
    );
    let touched = Snapshot {
        mtime_ns: 0,
        ..snap()
    };
    assert_eq!(
        snapshot_verdict(&touched, now - 1, day),
        Some(Reason::TooYoung)
    );
    let open = Snapshot {
        open: true,
        ..snap()
    };
    assert_eq!(snapshot_verdict(&open, now, day), Some(Reason::Open));
    let split = Snapshot {
        brick_size: 9,
        ..snap()
    };
    assert_eq!(snapshot_verdict(&split, now, day), Some(Reason::Changed));
    // The mount shows another file at that path (replaced, or not this brick's volume).
    let other = Snapshot {
        mnt_gfid: [9; 16],
        ..snap()
    };
    assert_eq!(snapshot_verdict(&other, now, day), Some(Reason::Changed));
    assert_eq!(snapshot_verdict(&snap(), now, Duration::ZERO), None);
}

#[test]
fn any_difference_between_the_snapshots_stops_the_mark() {
    let s0 = snap();
    let cases = [
        (snap(), None),
        (
            Snapshot {
                gfid: [0; 16],
                ..s0
            },
            Some("gfid"),
        ),
        (
            Snapshot {
                mnt_gfid: [0; 16],
                ..s0
            },
            Some("the file the mount shows"),
        ),
        (Snapshot { brick_ino: 8, ..s0 }, Some("brick inode")),
        (Snapshot { brick_dev: 2, ..s0 }, Some("brick inode")),
        (
            Snapshot {
                mnt_size: 11,
                brick_size: 11,
                ..s0
            },
            Some("size"),
        ),
        (
            Snapshot {
                brick_size: 0,
                ..s0
            },
            Some("brick size"),
        ),
        (
            Snapshot {
                mtime_ns: s0.mtime_ns + 1,
                ..s0
            },
            Some("mtime"),
        ),
        // Same size, mtime put back with `touch -d`: only ctime tells.
        (
            Snapshot {
                ctime_ns: s0.ctime_ns + 1,
                ..s0
            },
            Some("ctime"),
        ),
        (Snapshot { open: true, ..s0 }, Some("opened")),
    ];
    for (s1, want) in cases {
        assert_eq!(changed(&s0, &s1), want, "{s1:?}");
    }
}

#[test]
fn strings_as_gluster_prints_them() {
    let g = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    assert_eq!(gfid_string(&g), "00000000-0000-0000-0000-000000000001");
    assert_eq!(mtime_string(1_700_000_000 * S + 42), "1700000000.000000042");
    assert_eq!(mtime_string(-1), "-1.999999999");
    assert_eq!(snap().mtime_secs(), 1000);
}

fn object(meta: &[(&str, &str)], size: u64) -> ObjectMeta {
    let mut o = ObjectMeta::listed("k", size);
    o.metadata = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    o
}

#[test]
fn what_is_at_the_key_decides_upload_reuse_or_refusal() {
    let ours = object(&[(meta::GFID, &gfid_string(&G))], 10);
    let other = object(&[(meta::GFID, &gfid_string(&[0x22; 16]))], 10);
    let foreign = object(&[], 10);
    assert_eq!(key_rule(None, &G), KeyRule::Absent);
    assert_eq!(key_rule(Some(&ours), &G), KeyRule::Ours);
    assert_eq!(key_rule(Some(&other), &G), KeyRule::InUse);
    assert_eq!(key_rule(Some(&foreign), &G), KeyRule::InUse);
}

#[test]
fn our_object_is_reused_only_for_the_same_bytes_size_and_mtime() {
    let s0 = snap();
    let full = object_metadata(&s0, 0xabcd);
    let mut good = ObjectMeta::listed("k", 10);
    good.metadata = full.clone();
    assert!(reusable(&good, &s0, Some(0xabcd)));
    assert!(!reusable(&good, &s0, None), "the bytes differ");
    assert!(!reusable(&good, &s0, Some(0xabce)), "another CRC32C");
    let newer = Snapshot {
        mtime_ns: s0.mtime_ns + 1,
        ..s0
    };
    assert!(!reusable(&good, &newer, Some(0xabcd)), "another mtime");
    let mut short = good.clone();
    short.size = 9;
    assert!(!reusable(&short, &s0, Some(0xabcd)), "another size");
    let mut no_meta = good.clone();
    no_meta.metadata.remove(meta::MTIME);
    assert!(!reusable(&no_meta, &s0, Some(0xabcd)));
}

#[test]
fn posix_compares_the_mark_as_a_string() {
    let cases = [
        ("1700000000", "1700000000", false),
        ("1700000001", "1700000000", true),
        ("1699999999", "1700000000", false),
        // A string compare: an mtime with more digits sorts by its first ones.
        ("10000000000", "9999999999", false),
        ("99", "100", true),
        ("1", "10", false),
        ("10", "1", false),
    ];
    for (current, value, want) in cases {
        assert_eq!(
            posix_refuses_mark(current, value),
            want,
            "{current} vs {value}"
        );
    }
}

#[test]
fn the_brick_must_show_the_file_archived_under_our_key() {
    assert_eq!(
        confirm("a/b", 10, 0, Some("a/b"), Some("10")),
        Confirmed::Archived
    );
    assert_eq!(
        confirm("a/b", 10, 0, Some("x/a/b"), Some("10")),
        Confirmed::RemoteDiffers("x/a/b".into())
    );
    for (size, remote, object_size) in [
        (0, None, Some("10")),
        (10, Some("a/b"), Some("10")),
        (0, Some("a/b"), Some("9")),
        (0, Some("a/b"), None),
    ] {
        assert!(
            matches!(
                confirm("a/b", 10, size, remote, object_size),
                Confirmed::NotArchived(_)
            ),
            "{size} {remote:?} {object_size:?}"
        );
    }
}

#[test]
fn budgets_stop_at_the_first_file_that_does_not_fit() {
    let mut b = Budget {
        max_files: Some(2),
        ..Default::default()
    };
    assert!(b.take(5) && b.take(5));
    assert!(!b.take(1));
    let mut b = Budget {
        max_bytes: Some(10),
        ..Default::default()
    };
    assert!(b.take(6));
    assert!(!b.take(5));
    assert!(
        b.take(4),
        "a smaller file still fits; the caller stops at the first refusal"
    );
    let mut b = Budget::default();
    assert!((0..1000).all(|_| b.take(u64::MAX / 2)));
}

#[test]
fn a_written_object_must_show_our_size_gfid_and_checksum() {
    let s0 = snap();
    let mut h = ObjectMeta::listed("k", 10);
    h.metadata = object_metadata(&s0, 0x1234);
    assert_eq!(head_mismatch(&h, &s0, 0x1234), None);
    h.crc32c = Some(checksum::crc32c_header(0x1234));
    assert_eq!(head_mismatch(&h, &s0, 0x1234), None);
    h.crc32c = Some("AAAAAA==-3".into());
    assert_eq!(
        head_mismatch(&h, &s0, 0x1234),
        None,
        "composite: checked at completion"
    );
    let mut bad = h.clone();
    bad.crc32c = Some(checksum::crc32c_header(0x9999));
    assert!(head_mismatch(&bad, &s0, 0x1234).is_some());
    let mut bad = h.clone();
    bad.size = 11;
    assert!(head_mismatch(&bad, &s0, 0x1234).is_some());
    assert!(
        head_mismatch(&h, &s0, 0x1235).is_some(),
        "another recorded CRC32C"
    );
    let other = Snapshot {
        gfid: [3; 16],
        ..s0
    };
    assert!(head_mismatch(&h, &other, 0x1234).is_some());
}
