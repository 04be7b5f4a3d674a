//! Tests of plan.

use super::*;

fn file(path: &str) -> Entry {
    Entry::File {
        path: path.into(),
        raw: None,
        size: 1,
        mode: 0o600,
        crc32c: "00000001".into(),
        mtime_ns: None,
        ciphertext: None,
    }
}
fn dir(path: &str) -> Entry {
    Entry::Dir {
        path: path.into(),
        raw: None,
        mode: 0o700,
    }
}
fn link(path: &str, target: &str) -> Entry {
    Entry::Symlink {
        path: path.into(),
        raw: None,
        target: target.into(),
    }
}
fn manifest(entries: Vec<Entry>) -> Manifest {
    Manifest {
        version: 1,
        server: "pg".into(),
        backup_id: "20261121T220933".into(),
        created_at: 0,
        total_bytes: 0,
        entries,
    }
}
fn plain(extra: Vec<Entry>) -> Manifest {
    let mut v = vec![
        dir("data"),
        dir("data/global"),
        file("data/PG_VERSION"),
        file(PG_CONTROL_DATA),
        file("data/base/1/1259"),
        dir("data/pg_tblspc"),
    ];
    v.extend(extra);
    manifest(v)
}
const PG_CONTROL_DATA: &str = "data/global/pg_control";
fn none() -> BTreeMap<String, PathBuf> {
    BTreeMap::new()
}

#[test]
fn plain_backups_restore_into_dest_with_pg_control_last() {
    let p = plan(&plain(vec![]), Path::new("/r/pg/"), &none()).expect("plan");
    assert_eq!(p.layout, Layout::Plain);
    assert_eq!(p.dest, PathBuf::from("/r/pg"));
    assert_eq!(
        p.files.last().map(|f| f.rel.as_str()),
        Some(PG_CONTROL_DATA)
    );
    assert_eq!(p.files[0].to, PathBuf::from("/r/pg/PG_VERSION"));
    assert!(p.links.is_empty());
}

#[test]
fn manifest_modes_are_narrowed_and_counted() {
    let mut m = plain(vec![]);
    for e in &mut m.entries {
        match e {
            Entry::Dir { path, mode, .. } if path == "data" => *mode = 0o777,
            Entry::Dir { path, mode, .. } if path == "data/global" => *mode = 0o1777,
            Entry::File { path, mode, .. } if path == "data/PG_VERSION" => *mode = 0o4755,
            _ => {}
        }
    }
    let p = plan(&m, Path::new("/r/pg"), &none()).expect("plan");
    assert_eq!(p.narrowed, 3);
    assert!(
        p.dirs.iter().all(|(_, mode)| *mode <= 0o750),
        "{:?}",
        p.dirs
    );
    assert!(
        p.files.iter().all(|f| f.mode & !0o750 == 0),
        "{:?}",
        p.files
    );
    assert_eq!(p.files[0].mode, 0o750);
}

#[test]
fn tablespace_links_point_at_their_new_home() {
    let m = plain(vec![
        dir("16386"),
        file("16386/PG_15_x/1"),
        link("data/pg_tblspc/16386", "/var/lib/barman/pg/base/x/16386"),
    ]);
    // Default home beside DEST, also when DEST has a trailing slash.
    let p = plan(&m, Path::new("/r/pg/"), &none()).expect("plan");
    assert_eq!(p.tablespaces["16386"], PathBuf::from("/r/pg_tblspc/16386"));
    assert_eq!(
        p.links,
        vec![(
            PathBuf::from("/r/pg/pg_tblspc/16386"),
            PathBuf::from("/r/pg_tblspc/16386")
        )]
    );
    let req = BTreeMap::from([("16386".to_string(), PathBuf::from("/t/1"))]);
    let p = plan(&m, Path::new("/r/pg"), &req).expect("plan");
    assert_eq!(p.links[0].1, PathBuf::from("/t/1"));
    assert!(p.files.iter().any(|f| f.to == Path::new("/t/1/PG_15_x/1")));
}

#[test]
fn links_outside_pg_tblspc_are_refused_before_anything_is_written() {
    for (l, t) in [
        ("data/esc", "/tmp/outside"),
        ("data/pg_hba.conf", "/etc/passwd"),
        ("data/pg_tblspc/99999", "/etc"),
        ("data/base/1/x", "../../../etc/shadow"),
    ] {
        let e = plan(&plain(vec![link(l, t)]), Path::new("/r/pg"), &none()).expect_err(l);
        assert!(e.to_string().contains("nothing was written"), "{l}: {e}");
    }
}

#[test]
fn nothing_may_lie_under_a_link() {
    let m = plain(vec![
        dir("16386"),
        link("data/pg_tblspc/16386", "/x"),
        file("data/pg_tblspc/16386/planted"),
    ]);
    let e = plan(&m, Path::new("/r/pg"), &none()).expect_err("under a link");
    assert!(
        e.to_string()
            .contains("under the link data/pg_tblspc/16386"),
        "{e}"
    );
}

#[test]
fn a_pg_wal_link_comes_back_as_a_directory() {
    let p = plan(
        &plain(vec![link("data/pg_wal", "/wal/pg_wal")]),
        Path::new("/r/pg"),
        &none(),
    )
    .expect("plan");
    assert!(p.dirs.contains(&(PathBuf::from("/r/pg/pg_wal"), 0o700)));
    assert!(p.links.is_empty());
    assert_eq!(p.notes.len(), 1);
}

#[test]
fn tablespace_homes_may_not_overlap() {
    let m = plain(vec![dir("16386"), dir("16387")]);
    for (a, b) in [("/r/pg/ts", "/t/2"), ("/t/1", "/t/1/sub"), ("/r", "/t/2")] {
        let req = BTreeMap::from([
            ("16386".to_string(), PathBuf::from(a)),
            ("16387".to_string(), PathBuf::from(b)),
        ]);
        assert!(plan(&m, Path::new("/r/pg"), &req).is_err(), "{a} {b}");
    }
    let req = BTreeMap::from([("5".to_string(), PathBuf::from("/t"))]);
    let e = plan(&m, Path::new("/r/pg"), &req).expect_err("unknown oid");
    assert!(matches!(e, Error::Usage(_)), "{e}");
}

#[test]
fn tar_backups_are_recognised_and_unknown_kinds_refused() {
    let m = manifest(vec![
        dir("data"),
        dir("16386"),
        file("data/base.tar.gz"),
        file("data/16386.tar.gz"),
        file("data/backup_manifest"),
    ]);
    let p = plan(&m, Path::new("/r/pg"), &none()).expect("tar");
    let Layout::Tar { base, tablespaces } = &p.layout else {
        panic!("not tar: {:?}", p.layout)
    };
    assert_eq!((base.codec, tablespaces.len()), (Some(Codec::Gzip), 1));
    assert_eq!(p.tablespaces["16386"], PathBuf::from("/r/pg_tblspc/16386"));
    assert_eq!(p.files.len(), 1, "backup_manifest beside the archives");
    assert_eq!(
        p.links,
        vec![(
            PathBuf::from("/r/pg/pg_tblspc/16386"),
            PathBuf::from("/r/pg_tblspc/16386")
        )]
    );
    for (bad, why) in [
        (
            vec![dir("data"), file("data/base.tar.rar.gpg")],
            "GPG-encrypted or not",
        ),
        (
            vec![dir("data"), file("data/16386.tar.gz")],
            "no data/base.tar",
        ),
        (
            vec![dir("data"), file("data/postgresql.conf")],
            "not a kind",
        ),
    ] {
        let e = plan(&manifest(bad), Path::new("/r/pg"), &none()).expect_err(why);
        assert!(e.to_string().contains(why), "{why}: {e}");
    }
}

/// Barman's `encryption = gpg` encrypts every archive of a tar backup (`base.tar.gz.gpg`) and
/// leaves backup_manifest as it is: each archive is decrypted, then decompressed as its name
/// says without the `.gpg`.
#[test]
fn gpg_encrypted_tar_backups_are_planned_with_their_codec() {
    let m = manifest(vec![
        dir("data"),
        dir("16386"),
        file("data/base.tar.gz.gpg"),
        file("data/16386.tar.gpg"),
        file("data/backup_manifest"),
    ]);
    let p = plan(&m, Path::new("/r/pg"), &none()).expect("encrypted tar");
    let Layout::Tar { base, tablespaces } = &p.layout else {
        panic!("not tar: {:?}", p.layout)
    };
    assert_eq!(
        (base.codec, base.encrypted, base.path.as_str()),
        (Some(Codec::Gzip), true, "data/base.tar.gz.gpg")
    );
    assert_eq!(
        tablespaces
            .iter()
            .map(|a| (a.oid.as_deref(), a.codec, a.encrypted))
            .collect::<Vec<_>>(),
        vec![(Some("16386"), None, true)]
    );
    assert_eq!(p.files.len(), 1, "backup_manifest beside the archives");
    assert!(p.encrypted());
    let clear = manifest(vec![dir("data"), file("data/base.tar")]);
    assert!(
        !plan(&clear, Path::new("/r/pg"), &none())
            .expect("tar")
            .encrypted()
    );
}
