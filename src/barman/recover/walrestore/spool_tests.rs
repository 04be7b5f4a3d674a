//! The spool's trust checks, markers and clean-up, on real directories.

use super::*;
use crate::barman::recover::walrestore::decode::tests::segment;
use std::os::unix::fs::PermissionsExt;

const SEG: u32 = 1 << 20;

fn seg(n: u64) -> String {
    format!("{:08X}{:08X}{:08X}", 1, 0, n)
}

/// A spool with segment `n` put in as the prefetcher does.
fn spooled(sp: &Spool, n: u64) -> Vec<u8> {
    let data = segment(&seg(n), SEG);
    sp.begin(&seg(n))
        .expect("begin")
        .finish(&data)
        .expect("finish");
    data
}

/// Segment `n` spooled, then its file overwritten with the same first page and size and one
/// byte changed after them; the forged bytes.
fn forged(sp: &Spool, n: u64) -> Vec<u8> {
    spooled(sp, n);
    let entry = sp
        .entries()
        .into_iter()
        .find(|e| e.name == seg(n))
        .expect("entry");
    let mut forged = segment(&seg(n), SEG);
    forged[5000] ^= 0xFF;
    std::fs::write(sp.dir().join(&entry.file), &forged).expect("forge");
    forged
}

/// Segment `n` spooled, then served to `dest` with its bytes.
fn serves(sp: &Spool, n: u64, dest: &Path) {
    let data = spooled(sp, n);
    assert_eq!(
        sp.take(&seg(n), dest, &Expected::default()).expect("take"),
        Some(u64::from(SEG))
    );
    assert!(std::fs::read(dest).expect("served") == data);
}

fn names(sp: &Spool) -> Vec<String> {
    let mut v = sp.names();
    v.sort();
    v
}

#[test]
fn only_recoverys_own_file_uses_a_spool_of_its_own() {
    let at = |base: Option<&Path>, server, store, dest: &str| {
        Spool::path_for(base, server, store, Path::new(dest))
    };
    let a = at(None, "pg", "s3 x", "/d/pg_wal/RECOVERYXLOG").expect("spool");
    assert_eq!(a.parent(), Some(Path::new("/d/pg_wal/.barmans3-spool")));
    assert!(a.to_string_lossy().contains("/pg-"), "{}", a.display());
    assert_eq!(
        at(None, "pg", "s3 x", "/tmp/rewind/000000010000000000000005"),
        None
    );
    // Another server, store or data directory: another spool, also under a shared base.
    let shared = Some(Path::new("/var/tmp/spool"));
    let mine = at(shared, "pg", "s3 x", "/d/pg_wal/RECOVERYXLOG");
    for other in [
        at(shared, "pg2", "s3 x", "/d/pg_wal/RECOVERYXLOG"),
        at(shared, "pg", "s3 y", "/d/pg_wal/RECOVERYXLOG"),
        at(shared, "pg", "s3 x", "/e/pg_wal/RECOVERYXLOG"),
    ] {
        assert_ne!(mine, other);
    }
    assert_eq!(mine, at(shared, "pg", "s3 x", "/d/pg_wal/RECOVERYXLOG"));
    // A server name cannot lead the spool elsewhere.
    let odd = at(shared, "../../etc", "s3 x", "/d/pg_wal/RECOVERYXLOG").expect("odd");
    assert_eq!(odd.parent(), Some(Path::new("/var/tmp/spool")));
}

#[test]
fn recoveries_as_of_different_times_or_layouts_never_share_a_spool() {
    use crate::barman::recover::walrestore::spool_store_id;
    use crate::barman::remote::BucketLayout::{BarmanCloud, Barmans3};
    let t = |s| Some(std::time::UNIX_EPOCH + Duration::from_secs(s));
    let dir = |layout, as_of| {
        let id = spool_store_id("s3 x", layout, as_of);
        Spool::path_for(None, "pg", &id, Path::new("/d/pg_wal/RECOVERYXLOG")).expect("spool")
    };
    let ids = [
        dir(Barmans3, None),
        dir(Barmans3, t(1_700_000_000)),
        dir(Barmans3, t(1_700_000_001)),
        dir(BarmanCloud, None),
        dir(BarmanCloud, t(1_700_000_000)),
    ];
    for (i, a) in ids.iter().enumerate() {
        for b in &ids[i + 1..] {
            assert_ne!(a, b);
        }
    }
    // The same recovery asked again finds its spool.
    assert_eq!(ids[1], dir(Barmans3, t(1_700_000_000)));
}

#[test]
fn a_spool_is_made_private_and_a_shared_one_refused() {
    let d = tempfile::tempdir().expect("tmp");
    let dir = d.path().join("base/pg-1");
    let sp = Spool::open(&dir).expect("open");
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&d.path().join("base")), 0o700);
    drop(sp);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let e = Spool::open(&dir).expect_err("shared");
    let msg = e.to_string();
    assert!(matches!(e, Error::Config(_)), "{msg}");
    assert!(
        msg.contains("writable by other users") && !msg.contains('\n'),
        "{msg}"
    );
    // A link to a directory is not a spool either.
    let link = d.path().join("base/pg-2");
    std::os::unix::fs::symlink(d.path(), &link).expect("link");
    assert!(Spool::open(&link).is_err());
}

#[test]
fn a_served_file_proves_its_whole_content() {
    let d = tempfile::tempdir().expect("tmp");
    let sp = Spool::open(&d.path().join("s")).expect("open");
    let dest = d.path().join("RECOVERYXLOG");
    let exp = Expected::default();
    serves(&sp, 5, &dest);
    // The right first page and size, other bytes after it: never served, removed.
    forged(&sp, 6);
    assert_eq!(sp.take(&seg(6), &dest, &exp).expect("take"), None);
    assert!(sp.entries().is_empty());
    // A file under the bare segment name (no recorded checksum) is not an entry at all.
    std::fs::write(sp.dir().join(seg(7)), segment(&seg(7), SEG)).expect("plant");
    assert_eq!(sp.take(&seg(7), &dest, &exp).expect("take"), None);
    // Another cluster's segment, or another segment size, is not served.
    spooled(&sp, 8);
    let other = Expected {
        system: Some(99),
        seg_size: None,
    };
    assert_eq!(sp.take(&seg(8), &dest, &other).expect("take"), None);
    spooled(&sp, 8);
    let bigger = Expected {
        system: None,
        seg_size: Some(16 << 20),
    };
    assert_eq!(sp.take(&seg(8), &dest, &bigger).expect("take"), None);
    // An old entry is discarded.
    spooled(&sp, 9);
    let e = sp.entries().pop().expect("entry");
    let f = File::options()
        .write(true)
        .open(sp.dir().join(&e.file))
        .expect("open");
    f.set_modified(SystemTime::now() - MAX_AGE - Duration::from_secs(1))
        .expect("age");
    assert_eq!(sp.take(&seg(9), &dest, &exp).expect("take"), None);
    assert!(sp.entries().is_empty());
    // A CRC-32C handed in with the bytes that is not theirs names a file a spool without a
    // record of this boot never serves.
    let data = segment(&seg(10), SEG);
    let wrong = crate::checksum::crc32c(&data) ^ 1;
    sp.begin(&seg(10))
        .expect("begin")
        .finish_with(&data, wrong)
        .expect("finish");
    assert_eq!(sp.take(&seg(10), &dest, &exp).expect("take"), None);
    assert!(sp.entries().is_empty());
    let right = crate::checksum::crc32c(&data);
    sp.begin(&seg(10))
        .expect("begin")
        .finish_with(&data, right)
        .expect("finish");
    assert_eq!(
        sp.take(&seg(10), &dest, &exp).expect("take"),
        Some(u64::from(SEG))
    );
}

#[test]
fn unfinished_fetches_and_old_files_leave_nothing_behind() {
    let d = tempfile::tempdir().expect("tmp");
    let sp = Spool::open(&d.path().join("s")).expect("open");
    // A fetch dropped unfinished removes its file.
    let p = sp.begin(&seg(3)).expect("begin");
    assert!(sp.fetch_age(&seg(3)).is_some());
    drop(p);
    assert!(sp.fetch_age(&seg(3)).is_none());
    // What a killed prefetcher and older versions left: only markers and entries stay.
    for junk in [
        format!(".fetch-{}", seg(4)),
        seg(4),
        format!("{}.inflight", seg(4)),
        format!("{}.missing", seg(4)),
        ".identity".into(),
        ".segsize".into(),
        format!(".{}.123.0.tmp", seg(4)),
    ] {
        std::fs::write(sp.dir().join(junk), b"x").expect("junk");
    }
    spooled(&sp, 5);
    sp.want(&seg(5)).expect("want");
    sp.remember_missing(&seg(9));
    let kept = sp.sweep(&|_| false, &|_| true);
    assert_eq!(kept.len(), 1);
    let entry = format!("{}.{:08x}", seg(5), kept[0].crc);
    assert_eq!(
        names(&sp),
        vec![".missing".to_string(), ".want".into(), entry]
    );
    // An idle prefetcher's clear leaves the request marker only.
    sp.clear();
    assert_eq!(names(&sp), vec![".want".to_string()]);
}

#[test]
fn markers_say_what_was_asked_and_what_is_missing() {
    let d = tempfile::tempdir().expect("tmp");
    let sp = Spool::open(&d.path().join("s")).expect("open");
    assert_eq!(sp.wanted(), None);
    sp.want(&seg(5)).expect("want");
    assert_eq!(sp.wanted().map(|(n, _)| n), Some(seg(5)));
    // Each request replaces the last, a longer leftover cut to the name.
    std::fs::write(sp.dir().join(".want"), format!("{}.partial", seg(4))).expect("longer");
    sp.want(&seg(6)).expect("want");
    assert_eq!(sp.wanted().map(|(n, _)| n), Some(seg(6)));
    sp.want(&seg(5)).expect("want");
    assert_eq!(sp.wanted().map(|(n, _)| n), Some(seg(5)));
    // A damaged marker is no request.
    std::fs::write(sp.dir().join(".want"), b"00000001").expect("cut");
    assert_eq!(sp.wanted(), None);
    sp.remember_missing(&seg(6));
    assert!(sp.recently_missing(&seg(6)));
    assert!(!sp.recently_missing(&seg(7)));
    // A change of cluster empties the spool.
    let a = Expected {
        system: Some(1),
        seg_size: Some(u64::from(SEG)),
    };
    sp.set_expected(a).expect("set");
    assert_eq!(sp.expected(), a);
    spooled(&sp, 5);
    sp.set_expected(Expected {
        system: Some(2),
        ..a
    })
    .expect("set");
    assert!(sp.entries().is_empty());
}

#[test]
fn one_prefetcher_holds_the_lock() {
    let d = tempfile::tempdir().expect("tmp");
    let sp = Spool::open(&d.path().join("s")).expect("open");
    let lock = sp.lock().expect("lock").expect("free");
    assert!(sp.lock().expect("lock").is_none());
    assert!(sp.prefetcher_running());
    drop(lock);
    assert!(sp.lock().expect("lock").is_some());
}

#[test]
fn a_spool_of_this_boot_serves_what_was_written_and_one_of_another_proves_it_again() {
    let d = tempfile::tempdir().expect("tmp");
    let sp = Spool::open(&d.path().join("s")).expect("open");
    let dest = d.path().join("RECOVERYXLOG");
    let exp = Expected::default();
    let forge = |n: u64| forged(&sp, n);
    let boot = sp.dir().join(".boot");
    // Without a record of its boot (a spool of an older version's), the whole file is proven.
    forge(5);
    assert_eq!(sp.take(&seg(5), &dest, &exp).expect("take"), None);
    // The prefetcher claims it for this boot: its entries are as it wrote them, and a call
    // takes them by their first page and age. (A file changed after that, during this boot,
    // was changed by someone who could write pg_wal itself.)
    sp.claim_boot();
    let id = boot::this_boot_id();
    assert_eq!(std::fs::read_to_string(&boot).expect(".boot"), id);
    let forged = forge(6);
    assert_eq!(
        sp.take(&seg(6), &dest, &exp).expect("take"),
        Some(u64::from(SEG))
    );
    assert!(std::fs::read(&dest).expect("served") == forged);
    // The first page is still checked: another segment's is not served.
    spooled(&sp, 7);
    let entry = sp.entries().pop().expect("entry");
    std::fs::write(sp.dir().join(&entry.file), segment(&seg(8), SEG)).expect("swap");
    assert_eq!(sp.take(&seg(7), &dest, &exp).expect("take"), None);
    // After a restart (another boot id, or a torn one) every file is proven whole again.
    for other in ["00000000-0000-4000-8000-000000000000", &id[..20]] {
        std::fs::write(&boot, other).expect("restart");
        forge(9);
        assert_eq!(
            sp.take(&seg(9), &dest, &exp).expect("take"),
            None,
            "{other}"
        );
        assert!(sp.entries().is_empty(), "{other}");
    }
    // The next prefetcher removes what the spool held before this boot, then claims it.
    std::fs::write(&boot, "00000000-0000-4000-8000-000000000000").expect("restart");
    spooled(&sp, 10);
    sp.claim_boot();
    assert!(sp.entries().is_empty());
    assert_eq!(std::fs::read_to_string(&boot).expect(".boot"), id);
    // Claimed again during this boot, it keeps its entries; a sweep keeps the marker, and a
    // retired spool takes it along.
    spooled(&sp, 11);
    sp.claim_boot();
    assert_eq!(sp.sweep(&|_| false, &|_| true).len(), 1);
    assert!(boot.exists());
    sp.retire();
    assert!(!sp.dir().exists());
}

#[test]
fn a_spool_whose_old_entries_cannot_be_removed_is_not_marked_as_this_boots() {
    let d = tempfile::tempdir().expect("tmp");
    let sp = Spool::open(&d.path().join("s")).expect("open");
    let dest = d.path().join("RECOVERYXLOG");
    let boot = sp.dir().join(".boot");
    std::fs::write(&boot, "00000000-0000-4000-8000-000000000000").expect("another boot");
    // A name of an entry that no unlink removes (a directory): the sweep cannot empty it.
    let stuck = format!("{}.0badf00d", seg(3));
    std::fs::create_dir(sp.dir().join(&stuck)).expect("stuck");
    spooled(&sp, 4);
    sp.claim_boot();
    assert!(!boot.exists(), "marked with {stuck} left in it");
    assert!(sp.entries().iter().all(|e| e.name != seg(4)));
    // Unmarked, it proves every file whole.
    forged(&sp, 5);
    let exp = Expected::default();
    assert_eq!(sp.take(&seg(5), &dest, &exp).expect("take"), None);
    // Once it can be emptied, the next claim marks it.
    std::fs::remove_dir(sp.dir().join(&stuck)).expect("unstick");
    sp.claim_boot();
    assert_eq!(
        std::fs::read_to_string(&boot).expect(".boot"),
        boot::this_boot_id()
    );
}

#[test]
fn a_spool_on_another_filesystem_is_copied_and_proven_whole() {
    // /dev/shm is a tmpfs of its own on Linux: a rename from it to the temp directory fails
    // with EXDEV, and the segment is copied.
    let shm = Path::new("/dev/shm");
    let d = tempfile::tempdir().expect("tmp");
    let dev = |p: &Path| std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(p).expect("stat"));
    assert_ne!(
        dev(shm),
        dev(d.path()),
        "this test needs /dev/shm on another filesystem than {}",
        d.path().display()
    );
    let s = tempfile::tempdir_in(shm).expect("shm");
    let sp = Spool::open(&s.path().join("s")).expect("open");
    sp.claim_boot();
    let dest = d.path().join("RECOVERYXLOG");
    let exp = Expected::default();
    serves(&sp, 5, &dest);
    assert!(sp.entries().is_empty());
    // Even in a spool of this boot, a copy is proven whole: other bytes are not served.
    forged(&sp, 6);
    std::fs::remove_file(&dest).expect("consumed");
    assert_eq!(sp.take(&seg(6), &dest, &exp).expect("take"), None);
    assert!(!dest.exists() && sp.entries().is_empty());
}
