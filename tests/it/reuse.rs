//! Unchanged files of a new backup are copied server-side from the previous backup instead of
//! uploaded: hard links (Barman's `reuse_backup = link`) without reading them, same-content
//! files after a local CRC32C check; changed files are uploaded; both backups restore byte for
//! byte; a store that refuses copies gets uploads after one info line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::faults::{FaultProxy, Quirk};
use crate::common::site::Site;
use crate::common::{data, garage, unique};

const A: &str = "20261101T010000";
const B: &str = "20261102T010000";
const KIB: usize = 1024;

/// Which backend, and whether the S3 endpoint refuses copies.
#[derive(Clone, Copy, PartialEq)]
enum Where {
    Local,
    Garage,
    GarageNoCopies,
    /// Every copy fails with a server error, whatever the retries: each file is uploaded.
    GarageFailingCopies,
}

fn site(w: Where) -> (Site, Option<FaultProxy>) {
    if w == Where::Local {
        return (Site::local(), None);
    }
    let g = garage();
    let proxy = match w {
        Where::GarageNoCopies => Some(FaultProxy::refusing_copies(g.endpoint())),
        Where::GarageFailingCopies => Some(FaultProxy::with_quirk(g.endpoint(), Quirk::FailCopies)),
        _ => None,
    };
    let endpoint = proxy.as_ref().map_or(g.endpoint(), |p| p.endpoint.as_str());
    let yaml = format!(
        "s3:\n  endpoint: {endpoint}\n  region: garage\n  bucket: {}\n  prefix: {}\n  access_key_id: {}\n  secret_access_key: {}\n  part_size: 5MiB\n  concurrency: 4\n  max_attempts: 2\n",
        g.bucket(),
        unique("reuse"),
        g.key_id(),
        g.secret()
    );
    (Site::new(&yaml), proxy)
}

fn base(site: &Site, id: &str) -> PathBuf {
    site.dir.path().join("barman/pg/base").join(id)
}

fn write_info(site: &Site, id: &str) {
    std::fs::write(
        site.dir
            .path()
            .join(format!("barman/pg/meta/{id}-backup.info")),
        "begin_wal=000000010000000000000003\nend_wal=000000010000000000000003\nstatus=DONE\n",
    )
    .expect("info");
}

fn put(path: &Path, body: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, body).expect("write");
}

/// Runs `base-sync --json` and returns (bytes_up, bytes_copied, stderr).
fn base_sync(site: &Site) -> (u64, u64, String) {
    let log = site.dir.path().join("requests.csv");
    let log = log.to_str().expect("utf8");
    let args = ["--json", "-v", "--request-log", log];
    let out = site.run(
        &[
            &args[..],
            &["--request-log-format", "extended", "base-sync"],
        ]
        .concat(),
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "base-sync: {err}");
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).expect("summary JSON");
    (
        v["bytes_up"].as_u64().expect("bytes_up"),
        v["bytes_copied"].as_u64().expect("bytes_copied"),
        err,
    )
}

/// The S3 operations the request log names for `key_tail`, in order.
fn operations_on(site: &Site, key_tail: &str) -> Vec<String> {
    let log = std::fs::read_to_string(site.dir.path().join("requests.csv")).expect("log");
    let mut rd = csv::Reader::from_reader(log.as_bytes());
    rd.records()
        .map(|r| r.expect("csv line"))
        .filter(|r| r[7].ends_with(key_tail))
        .map(|r| r[2].to_string())
        .collect()
}

/// A pg_control-like file: content followed by its own CRC-32C, then zeros. Every such file has
/// the same CRC32C, so only the bytes tell two versions apart.
fn control(seed: u64) -> Vec<u8> {
    let mut v = data(296, seed);
    let crc = barmans3::checksum::crc32c(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v.resize(8 * KIB, 0);
    v
}

fn files_of(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.expect("walk"))
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).expect("rel").to_path_buf();
            (rel, std::fs::read(e.path()).expect("read"))
        })
        .collect()
}

fn restore_matches(site: &Site, id: &str) {
    let dest = site.dir.path().join(format!("restore-{id}"));
    let out = site.run(
        &["base-restore", "pg", id, dest.to_str().expect("utf8")],
        &[],
    );
    assert!(
        out.status.success(),
        "restore {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        files_of(&dest) == files_of(&base(site, id).join("data")),
        "restore of {id} differs"
    );
}

fn second_backup_sends_only_what_changed(w: Where) {
    let (site, _proxy) = site(w);
    let a = base(&site, A);
    put(&a.join("data/PG_VERSION"), b"15\n");
    put(&a.join("data/global/pg_control"), &control(1));
    for i in 0..12u64 {
        put(
            &a.join(format!("data/base/1/{}", 1000 + i)),
            &data(256 * KIB, 10 + i),
        );
    }
    put(&a.join("data/base/1/big"), &data(11 << 20, 99));
    write_info(&site, A);
    site.queue(A, "DONE");
    let (up_a, copied_a, _) = base_sync(&site);
    assert_eq!(copied_a, 0, "nothing to reuse for the first backup");
    assert!(up_a > (11 << 20), "{up_a}");
    // A backup file above the part size but within PostgreSQL's 1 GiB segment goes in one
    // PUT, so the next backup's copy of it needs no reading on the server.
    let big = format!("{A}/data/base/1/big");
    if w == Where::Garage {
        assert_eq!(operations_on(&site, &big), ["PutObject"]);
    }

    // The second backup as Barman's reuse_backup = link makes it: hard links to A's files,
    // new files where they changed.
    let b = base(&site, B);
    let mut unchanged = 0u64;
    for (rel, body) in files_of(&a) {
        let to = b.join(&rel);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::hard_link(a.join(&rel), &to).expect("link");
        unchanged += body.len() as u64;
    }
    let relink = |rel: &str, body: &[u8]| {
        std::fs::remove_file(b.join(rel)).expect("unlink");
        put(&b.join(rel), body);
    };
    // Changed in place (same size), grown, and new: uploaded.
    // A new pg_control: same size and same CRC32C as the old one, other bytes.
    relink("data/global/pg_control", &control(2));
    relink("data/base/1/1003", &data(300 * KIB, 3));
    put(&b.join("data/base/1/2000"), &data(100 * KIB, 4));
    // Same bytes in a new inode (a copy, not a link): read, found equal, copied.
    relink("data/base/1/1005", &data(256 * KIB, 15));
    let changed = (8 + 300 + 100) as u64 * KIB as u64;
    unchanged -= (8 + 256) as u64 * KIB as u64;
    write_info(&site, B);
    site.queue(B, "DONE");
    let (up_b, copied_b, err) = base_sync(&site);
    if w == Where::GarageNoCopies {
        assert_eq!(copied_b, 0);
        assert!(up_b >= changed + unchanged, "everything uploaded: {up_b}");
        assert_eq!(
            err.matches("server-side copies unavailable").count(),
            1,
            "one info line, then uploads: {err}"
        );
    } else if w == Where::GarageFailingCopies {
        // A copy only saves an upload: its failure must not fail the backup.
        assert_eq!(copied_b, 0);
        assert!(up_b >= changed + unchanged, "everything uploaded: {up_b}");
        assert!(
            err.contains("no server-side copy of data/base/1/big"),
            "a warning per file: {err}"
        );
    } else {
        assert_eq!(
            copied_b, unchanged,
            "every unchanged file copied server-side"
        );
        if w == Where::Garage {
            let ops = operations_on(&site, &format!("{B}/data/base/1/big"));
            assert_eq!(ops, ["CopyObject", "HeadObject"], "one copy, checked");
        }
        // The changed files plus our manifest and backup.info.
        assert!(
            up_b >= changed && up_b < changed + 64 * KIB as u64,
            "sent {up_b}, changed {changed}"
        );
    }
    restore_matches(&site, A);
    restore_matches(&site, B);
}

#[test]
fn local_second_backup_sends_only_what_changed() {
    second_backup_sends_only_what_changed(Where::Local);
}

#[test]
fn garage_second_backup_sends_only_what_changed() {
    second_backup_sends_only_what_changed(Where::Garage);
}

#[test]
fn garage_refusing_copies_falls_back_to_uploads() {
    second_backup_sends_only_what_changed(Where::GarageNoCopies);
}

#[test]
fn garage_failing_copies_fall_back_to_uploads() {
    second_backup_sends_only_what_changed(Where::GarageFailingCopies);
}

/// The stored bytes of `key` (under the site's prefix), as they are.
pub(crate) fn raw(site: &Site, key: &str) -> Vec<u8> {
    let out = site.run(&["store", "get", "--raw", key, "-"], &[]);
    assert!(
        out.status.success(),
        "store get --raw {key}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Turns client-side encryption on in the site's config, to a fresh age identity.
pub(crate) fn encrypt(site: &Site) {
    use age::secrecy::ExposeSecret;
    use std::os::unix::fs::PermissionsExt;
    let id = age::x25519::Identity::generate();
    let key_file = site.dir.path().join("age.key");
    std::fs::write(&key_file, format!("{}\n", id.to_string().expose_secret())).expect("key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut cfg = std::fs::read_to_string(&site.cfg).expect("cfg");
    cfg.push_str(&format!(
        "encryption:\n  recipients: [{}]\n  identity_file: {}\n  require_encrypted: true\n",
        id.to_public(),
        key_file.display()
    ));
    std::fs::write(&site.cfg, cfg).expect("cfg");
}

/// Backup A of the encrypted tests: small files, and one above the part size, which goes up
/// in parts (sealed objects are sealed in memory, a part at most at a time).
fn first_encrypted_backup(site: &Site, w: Where) {
    let a = base(site, A);
    put(&a.join("data/PG_VERSION"), b"15\n");
    put(&a.join("data/global/pg_control"), &control(1));
    for i in 0..4u64 {
        put(
            &a.join(format!("data/base/1/{}", 1000 + i)),
            &data(256 * KIB, 10 + i),
        );
    }
    put(&a.join("data/base/1/big"), &data(11 << 20, 99));
    write_info(site, A);
    site.queue(A, "DONE");
    let (_, copied_a, _) = base_sync(site);
    assert_eq!(copied_a, 0);
    if w == Where::Garage {
        let ops = operations_on(site, &format!("{A}/data/base/1/big"));
        assert!(
            ops.iter().any(|o| o == "UploadPart"),
            "sent in parts: {ops:?}"
        );
    }
}

/// Backup B as Barman's `reuse_backup = link` makes it from A: hard links to every file.
/// Returns the bytes of its files.
fn link_second_backup(site: &Site) -> u64 {
    let (a, b) = (base(site, A), base(site, B));
    let mut total = 0u64;
    for (rel, body) in files_of(&a) {
        let to = b.join(&rel);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::hard_link(a.join(&rel), &to).expect("link");
        total += body.len() as u64;
    }
    total
}

/// With encryption on, the unchanged files of the second backup are copied server-side as
/// they are stored: the copy is the first backup's ciphertext byte for byte (sealed again, it
/// would have another file key), the changed files are sent sealed, and both restore. The
/// file sent in parts is copied too, part by part, checked against the CRC32C of the
/// ciphertext recorded when it was sent (the server keeps no whole-object CRC32C of it).
fn second_encrypted_backup_copies_ciphertext(w: Where) {
    let (site, _proxy) = site(w);
    encrypt(&site);
    first_encrypted_backup(&site, w);
    let b = base(&site, B);
    let mut unchanged = link_second_backup(&site);
    std::fs::remove_file(b.join("data/base/1/1001")).expect("unlink");
    put(&b.join("data/base/1/1001"), &data(256 * KIB, 77));
    unchanged -= 256 * KIB as u64;
    write_info(&site, B);
    site.queue(B, "DONE");
    let (up_b, copied_b, err) = base_sync(&site);
    assert_eq!(copied_b, unchanged, "every unchanged file copied: {err}");
    assert!(!err.contains("no server-side copy"), "{err}");
    assert!(
        up_b >= 256 * KIB as u64 && up_b < (256 + 64) * KIB as u64,
        "only the changed file sent (and the metadata): {up_b}"
    );
    if w == Where::Garage {
        let ops = operations_on(&site, &format!("{B}/data/base/1/big"));
        assert!(
            ops.iter().any(|o| o == "UploadPartCopy") && !ops.iter().any(|o| o == "UploadPart"),
            "copied in parts, nothing sent: {ops:?}"
        );
    }
    for rel in ["data/base/1/1000", "data/PG_VERSION", "data/base/1/big"] {
        let (from, to) = (
            raw(&site, &format!("pg/base/{A}/{rel}")),
            raw(&site, &format!("pg/base/{B}/{rel}")),
        );
        assert!(from.starts_with(b"age-encryption.org/v1\n"), "{rel} sealed");
        assert!(from == to, "{rel}: the copy is the stored ciphertext");
    }
    let (from, to) = (
        raw(&site, &format!("pg/base/{A}/data/base/1/1001")),
        raw(&site, &format!("pg/base/{B}/data/base/1/1001")),
    );
    assert!(to.starts_with(b"age-encryption.org/v1\n") && from != to);
    restore_matches(&site, A);
    restore_matches(&site, B);
}

#[test]
fn local_second_encrypted_backup_copies_ciphertext() {
    second_encrypted_backup_copies_ciphertext(Where::Local);
}

#[test]
fn garage_second_encrypted_backup_copies_ciphertext() {
    second_encrypted_backup_copies_ciphertext(Where::Garage);
}

/// Someone with write access to the bucket replaces objects of backup A with other
/// ciphertexts of the same plaintext size, sealed to the same key (a file sent whole and one
/// sent in parts). Their headers open to the right size, and the server vouches for their
/// stored bytes; but they are not what this host sent, so backup B copies neither: both files
/// are sent again from the local disk, with a warning naming the key, and B restores the
/// right bytes.
fn swapped_source_is_sent_again(w: Where) {
    let (site, _proxy) = site(w);
    encrypt(&site);
    first_encrypted_backup(&site, w);
    let swapped = [
        ("data/base/1/1000", 256 * KIB),
        ("data/base/1/big", 11 << 20),
    ];
    for (i, (rel, size)) in swapped.iter().enumerate() {
        let other = site.dir.path().join(format!("other-{i}"));
        std::fs::write(&other, data(*size, 500 + i as u64)).expect("other");
        let key = format!("pg/base/{A}/{rel}");
        let before = raw(&site, &key);
        let out = site.run(&["store", "put", other.to_str().expect("utf8"), &key], &[]);
        assert!(
            out.status.success(),
            "store put: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let after = raw(&site, &key);
        assert!(after.starts_with(b"age-encryption.org/v1\n") && after != before);
        assert_eq!(
            after.len(),
            before.len(),
            "{rel}: a ciphertext of the same size"
        );
    }
    let unchanged = link_second_backup(&site);
    write_info(&site, B);
    site.queue(B, "DONE");
    let (up_b, copied_b, err) = base_sync(&site);
    let resent = (256 * KIB + (11 << 20)) as u64;
    assert_eq!(copied_b, unchanged - resent, "the others copied: {err}");
    assert!(up_b >= resent, "both sent again: {up_b}");
    for (rel, _) in swapped {
        let src = format!("base/{A}/{rel}");
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("no server-side copy of {rel}")) && l.contains(&src)),
            "a warning naming {src}: {err}"
        );
        let (a, b) = (
            raw(&site, &format!("pg/base/{A}/{rel}")),
            raw(&site, &format!("pg/base/{B}/{rel}")),
        );
        assert!(a != b, "{rel}: the swapped object was not copied");
    }
    restore_matches(&site, B);
}

#[test]
fn local_swapped_encrypted_source_is_sent_again() {
    swapped_source_is_sent_again(Where::Local);
}

#[test]
fn garage_swapped_encrypted_source_is_sent_again() {
    swapped_source_is_sent_again(Where::Garage);
}

/// A key rotation: backup A sealed to key 1, then the recipients become key 2 (identities 1
/// and 2, so A still opens). Backup B copies none of A's ciphertext, which would open only
/// with key 1: every file is sealed again to key 2, and B restores with key 2 alone.
#[test]
fn after_a_key_rotation_nothing_is_copied_and_the_new_backup_opens_with_the_new_key_alone() {
    use age::secrecy::ExposeSecret;
    let (site, _proxy) = site(Where::Local);
    encrypt(&site);
    first_encrypted_backup(&site, Where::Local);
    let key_file = site.dir.path().join("age.key");
    let key1 = std::fs::read_to_string(&key_file).expect("key");
    let key2 = age::x25519::Identity::generate();
    let secret2 = key2.to_string().expose_secret().to_string();
    std::fs::write(&key_file, format!("{key1}{secret2}\n")).expect("keys");
    let cfg = std::fs::read_to_string(&site.cfg).expect("cfg");
    let start = cfg.find("recipients: [").expect("recipients") + "recipients: [".len();
    let end = start + cfg[start..].find(']').expect("]");
    let rotated = format!("{}{}{}", &cfg[..start], key2.to_public(), &cfg[end..]);
    std::fs::write(&site.cfg, rotated).expect("cfg");
    link_second_backup(&site);
    write_info(&site, B);
    site.queue(B, "DONE");
    let (up_b, copied_b, err) = base_sync(&site);
    assert_eq!(copied_b, 0, "nothing of key 1's ciphertext copied: {err}");
    assert!(up_b > 0, "{err}");
    std::fs::write(&key_file, format!("{secret2}\n")).expect("key 2 alone");
    restore_matches(&site, B);
}
