//! The scratch directory on a real file system: private and unpredictable by default, links
//! never followed, a given directory made private before it is claimed and never removed by a
//! later drill's sweep.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use super::*;

fn scratch(dest: PathBuf, given: bool) -> Scratch {
    Scratch {
        dest,
        given,
        claimed: false,
        created: false,
        mode_before: None,
        pg: None,
        marker: None,
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn marker_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(MARKER)).unwrap()
}

#[tokio::test]
async fn the_default_directory_is_new_private_and_unpredictable() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    // What the old predictable name would have been, prepared by someone else as a link.
    let victim = tempfile::tempdir().unwrap();
    symlink(
        victim.path(),
        tmp.path()
            .join(format!("{DEFAULT_PREFIX}pg-{}", std::process::id())),
    )
    .unwrap();
    let mut a = scratch(tmp.path().to_path_buf(), false);
    let mut b = scratch(tmp.path().to_path_buf(), false);
    claim(&mut a, 0, "pg/x").unwrap();
    claim(&mut b, 0, "pg/x").unwrap();
    assert_ne!(a.dest, b.dest);
    for s in [&a, &b] {
        assert_eq!(s.dest.parent().unwrap(), tmp.path());
        let name = s.dest.file_name().unwrap().to_string_lossy().to_string();
        let random = name
            .strip_prefix(&format!("{DEFAULT_PREFIX}pg_x-"))
            .unwrap();
        assert_eq!(random.len(), 16, "{name}");
        let md = std::fs::symlink_metadata(&s.dest).unwrap();
        assert!(md.is_dir() && !md.file_type().is_symlink());
        assert_eq!(md.uid(), rustix::process::geteuid().as_raw());
        assert_eq!(mode(&s.dest), 0o700);
        assert!(s.claimed && s.created);
        assert_eq!(marker_text(&s.dest).trim(), MADE_HERE);
    }
    assert_eq!(std::fs::read_dir(victim.path()).unwrap().count(), 0);
    cleanup(&mut a, false).await.unwrap();
    cleanup(&mut b, false).await.unwrap();
    assert!(!a.dest.exists() && !b.dest.exists());
}

#[tokio::test]
async fn a_given_dest_that_is_a_link_is_refused_and_its_target_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    std::fs::create_dir(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    let link = tmp.path().join("link");
    symlink(&target, &link).unwrap();
    let mut s = scratch(link.clone(), true);
    let e = claim(&mut s, 0, "pg").unwrap_err();
    assert!(e.to_string().contains("is a symbolic link"), "{e}");
    assert!(!s.claimed);
    cleanup(&mut s, false).await.unwrap();
    assert_eq!(mode(&target), 0o755);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
}

#[tokio::test]
async fn cleanup_never_follows_a_link_put_in_place_of_dest() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("precious"), b"keep").unwrap();
    for existed in [false, true] {
        let dest = tmp.path().join(format!("dest-{existed}"));
        if existed {
            std::fs::create_dir(&dest).unwrap();
        }
        let mut s = scratch(dest.clone(), true);
        claim(&mut s, 0, "pg").unwrap();
        assert_eq!(s.created, !existed);
        std::fs::write(dest.join("data"), b"x").unwrap();
        let moved = tmp.path().join(format!("moved-{existed}"));
        std::fs::rename(&dest, &moved).unwrap();
        symlink(&victim, &dest).unwrap();
        let e = cleanup(&mut s, false).await.unwrap_err();
        assert!(e.to_string().contains("no longer the directory"), "{e}");
        assert_eq!(std::fs::read(victim.join("precious")).unwrap(), b"keep");
        assert!(
            std::fs::symlink_metadata(&dest)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}

#[tokio::test]
async fn a_given_directory_is_made_private_before_it_is_claimed_and_gets_its_mode_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut s = scratch(dest.clone(), true);
    claim(&mut s, 0, "pg").unwrap();
    assert!(s.claimed && !s.created);
    assert_eq!(mode(&dest), 0o700);
    assert_eq!(marker_text(&dest).trim(), "given");
    std::fs::create_dir_all(dest.join("data/base")).unwrap();
    cleanup(&mut s, false).await.unwrap();
    assert_eq!(mode(&dest), 0o755);
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);

    // Not empty: refused before the chmod, nothing touched.
    std::fs::write(dest.join("precious"), b"keep").unwrap();
    let mut s = scratch(dest.clone(), true);
    let e = claim(&mut s, 0, "pg").unwrap_err();
    assert!(e.to_string().contains("is not empty"), "{e}");
    assert!(!s.claimed);
    cleanup(&mut s, false).await.unwrap();
    assert_eq!(mode(&dest), 0o755);
    assert_eq!(std::fs::read(dest.join("precious")).unwrap(), b"keep");

    // No room: refused before anything is made.
    let fresh = tmp.path().join("fresh");
    let mut s = scratch(fresh.clone(), true);
    let e = claim(&mut s, u64::MAX, "pg").unwrap_err();
    assert!(e.to_string().contains("not enough free space"), "{e}");
    assert_eq!(e.exit().code(), 2);
    cleanup(&mut s, false).await.unwrap();
    assert!(!fresh.exists());
}

/// Another user's directory, even one everybody may write, is never claimed nor made private:
/// the drill would take over a place others still write into. Needs root to make one (the
/// test suite runs as root).
#[tokio::test]
async fn a_directory_of_another_user_is_refused_before_anything_changes() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("needs root to make another user's directory");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("theirs");
    std::fs::create_dir(&dest).unwrap();
    std::os::unix::fs::chown(&dest, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut s = scratch(dest.clone(), true);
    let e = claim(&mut s, 0, "pg").unwrap_err();
    assert!(e.to_string().contains("belongs to uid 65534"), "{e}");
    assert!(!s.claimed && s.marker.is_none());
    cleanup(&mut s, false).await.unwrap();
    assert_eq!(mode(&dest), 0o777);
    assert!(!dest.join(MARKER).exists());
}

#[tokio::test]
async fn a_killed_drills_given_dest_is_emptied_and_only_a_directory_it_made_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let given = tmp.path().join("given");
    std::fs::create_dir(&given).unwrap();
    let made = tmp.path().join("made");
    for dest in [&given, &made] {
        let mut s = scratch(dest.clone(), true);
        claim(&mut s, 0, "pg").unwrap();
        std::fs::create_dir_all(dest.join("data/base")).unwrap();
        std::fs::write(dest.join("data/PG_VERSION"), b"15").unwrap();
        // While its drill lives, the sweep leaves it alone.
        super::super::sweep::sweep_stale(Some(dest)).await;
        assert!(dest.join("data/PG_VERSION").exists());
        // Killed: the lock goes with the process.
        s.marker = None;
        super::super::sweep::sweep_stale(Some(dest)).await;
    }
    let md = std::fs::symlink_metadata(&given).unwrap();
    assert!(md.is_dir(), "the given --dest itself was removed");
    assert_eq!(std::fs::read_dir(&given).unwrap().count(), 0);
    assert!(
        !made.exists(),
        "the directory the killed drill made is still there"
    );
}
