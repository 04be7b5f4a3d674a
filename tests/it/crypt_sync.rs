//! `sync` with `encryption:` on, on Garage and file://: every object is an age file (rage opens
//! one to the file's bytes), a no-change rerun sends nothing (decided from the listing and the
//! sync record on Garage, by the objects' metadata once the record is gone or on file://), touched and changed files are sent, an
//! object replaced by other encrypted or altered bytes is compared as plaintext and sent back,
//! `--checksum` compares plaintext, and `store get` gives the tree back byte for byte. Turning
//! encryption on over a plaintext mirror sends each file once more, encrypted; a host without
//! identities is told that `--checksum` needs them.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use age::secrecy::ExposeSecret;
use age::x25519;

use crate::common::site::{BIN, Site};
use crate::common::{Backend, data, garage, on_both, unique};

const MAGIC: &[u8] = b"age-encryption.org/v1\n";
/// The part size both stores are configured with.
const PART: usize = 5 << 20;

fn err(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A source tree, a store and an identity; the config without `encryption:` beside it.
struct Fixture {
    site: Site,
    src: PathBuf,
    id_file: PathBuf,
    /// The identity's public key.
    recipient: String,
    /// The same store without `encryption:`: what a host before encryption, or any S3 tool,
    /// reads and writes.
    plain_cfg: PathBuf,
}

impl Fixture {
    fn new(b: Backend) -> Fixture {
        let site = match b {
            Backend::Local => {
                let s = Site::local();
                let text = std::fs::read_to_string(&s.cfg).expect("cfg");
                let (store, rest) = text.split_once('\n').expect("store line");
                let text = format!("{store}\ns3:\n  part_size: 5MiB\n{rest}");
                std::fs::write(&s.cfg, text).expect("cfg");
                s
            }
            Backend::Garage => Site::new(&garage().yaml(&unique("csync"))),
        };
        let src = site.dir.path().join("src");
        std::fs::create_dir_all(&src).expect("src");
        let plain_cfg = site.dir.path().join("plain.yaml");
        std::fs::copy(&site.cfg, &plain_cfg).expect("copy cfg");
        let id = x25519::Identity::generate();
        let id_file = site.dir.path().join("id.key");
        std::fs::write(&id_file, format!("{}\n", id.to_string().expose_secret())).expect("key");
        std::fs::set_permissions(&id_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let f = Fixture {
            site,
            src,
            id_file,
            recipient: id.to_public().to_string(),
            plain_cfg,
        };
        f.encrypt(&f.recipient, true);
        f
    }

    /// Appends `encryption:` to the config (its last section is `state:`), with or without the
    /// identity file.
    fn encrypt(&self, recipient: &str, identity: bool) {
        let text = std::fs::read_to_string(&self.plain_cfg).expect("cfg");
        let mut enc = format!("{text}encryption:\n  recipients: [{recipient}]\n");
        if identity {
            enc.push_str(&format!("  identity_file: {}\n", self.id_file.display()));
        }
        std::fs::write(&self.site.cfg, enc).expect("cfg");
    }

    fn write(&self, rel: &str, body: &[u8]) {
        crate::sync::write_under(&self.src, rel, body);
    }

    fn sync(&self, args: &[&str]) -> Output {
        crate::sync::run_sync(&self.site, &self.src, args)
    }

    fn sync_ok(&self, args: &[&str]) -> serde_json::Value {
        crate::sync::sync_ok(&self.site, &self.src, args)
    }

    /// Runs barmans3 with the config without `encryption:`.
    fn plain(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(&self.plain_cfg)
            .args(args)
            .output()
            .expect("run barmans3")
    }

    /// The keys under `files/` (relative to it) with their stored sizes.
    fn listed(&self) -> BTreeMap<String, u64> {
        let out = self.site.run(&["store", "ls", "files/"], &[]);
        assert!(out.status.success(), "{}", err(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let (size, key) = l.trim_start().split_once(' ').expect("size key");
                let rel = key.strip_prefix("files/").expect("under files/");
                (rel.to_string(), size.parse().expect("size"))
            })
            .collect()
    }

    /// `store get` of `files/<rel>` (`raw`: the stored bytes).
    fn get(&self, rel: &str, raw: bool) -> Output {
        let key = format!("files/{rel}");
        let mut args = vec!["store", "get"];
        if raw {
            args.push("--raw");
        }
        args.extend_from_slice(&[&key, "-"]);
        self.site.run(&args, &[])
    }

    fn stored(&self, rel: &str) -> Vec<u8> {
        let out = self.get(rel, true);
        assert!(out.status.success(), "get --raw {rel}: {}", err(&out));
        out.stdout
    }

    /// Every file of the tree comes back from the bucket byte for byte, and every object is
    /// an age file.
    fn assert_mirrored(&self, files: &[&str]) {
        let want: BTreeSet<String> = files.iter().map(|s| s.to_string()).collect();
        assert_eq!(self.listed().into_keys().collect::<BTreeSet<_>>(), want);
        for rel in files {
            assert!(self.stored(rel).starts_with(MAGIC), "{rel} is not age");
            let out = self.get(rel, false);
            assert!(out.status.success(), "get {rel}: {}", err(&out));
            let local = std::fs::read(self.src.join(rel)).expect("local");
            assert!(out.stdout == local, "{rel} restored differs");
        }
    }
}

/// PUTs and multipart requests a run sent.
fn puts(s: &serde_json::Value) -> u64 {
    ["put", "upload_part", "create_multipart"]
        .iter()
        .map(|op| s["requests"][op].as_u64().unwrap_or(0))
        .sum()
}

fn counts(s: &serde_json::Value) -> (u64, u64, u64) {
    let n = |k: &str| s[k].as_u64().unwrap_or(u64::MAX);
    (n("uploaded"), n("unchanged"), puts(s))
}

/// Opens stored bytes with the rage command-line tool.
fn rage(id_file: &Path, stored: &[u8]) -> Vec<u8> {
    let rage = crate::barman_e2e::RAGE;
    assert!(
        Path::new(rage).exists(),
        "missing rage 0.11.1 at {rage}: run scripts/test-deps as root"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("object.age");
    std::fs::write(&p, stored).expect("write");
    let out = Command::new(rage)
        .arg("-d")
        .arg("-i")
        .arg(id_file)
        .arg(&p)
        .output()
        .expect("run rage");
    assert!(out.status.success(), "rage -d: {}", err(&out));
    out.stdout
}

const TREE: [&str; 4] = ["empty", "one", "d/big", "d/sub/chunks"];

fn tree(f: &Fixture) {
    f.write("empty", b"");
    f.write("one", b"1");
    f.write("d/big", &data(PART + 1, 1));
    f.write("d/sub/chunks", &data(3 * 65536 + 7, 2));
    std::os::unix::fs::symlink("one", f.src.join("link")).expect("symlink");
}

async fn encrypted_sync_round_trips_and_a_rerun_sends_nothing(b: Backend) {
    let f = Fixture::new(b);
    tree(&f);
    let s = f.sync_ok(&[]);
    assert_eq!(
        (s["uploaded"].as_u64(), s["symlinks"].as_u64()),
        (Some(4), Some(1)),
        "{s}"
    );
    f.assert_mirrored(&TREE);
    // The multipart object opens with rage to the file's bytes.
    let big = std::fs::read(f.src.join("d/big")).expect("big");
    assert!(
        rage(&f.id_file, &f.stored("d/big")) == big,
        "rage opens d/big"
    );
    // Listed sizes are the ciphertext's: larger than the files.
    for (rel, size) in f.listed() {
        let local = std::fs::metadata(f.src.join(&rel)).expect("stat").len();
        assert!(size > local, "{rel}: {size} stored, {local} local");
    }

    // Nothing changed: decided from the listing and the sync record, nothing sent, no HEAD.
    let again = f.sync_ok(&[]);
    assert_eq!(counts(&again), (0, 4, 0), "{again}");
    // A file:// listing carries no ETags, so there each object's metadata decides (a HEAD).
    let heads = again["requests"]["head"].as_u64().unwrap_or(0);
    assert_eq!(
        heads,
        if matches!(b, Backend::Garage) { 0 } else { 4 },
        "{again}"
    );
    // Without the record (another host, a lost state dir): each object's stamp decides.
    std::fs::remove_dir_all(f.site.dir.path().join("state/sync")).expect("rm record");
    let by_head = f.sync_ok(&[]);
    assert_eq!(counts(&by_head), (0, 4, 0), "{by_head}");
    // --checksum opens each object and compares plaintext: still nothing to send.
    let checked = f.sync_ok(&["--checksum"]);
    assert_eq!(counts(&checked), (0, 4, 0), "{checked}");
    assert!(
        checked["requests"]["get"].as_u64().unwrap_or(0) >= 4,
        "--checksum reads the objects: {checked}"
    );

    // A touch alone, and the same size with other bytes, are changes.
    let one = std::fs::File::options()
        .write(true)
        .open(f.src.join("one"))
        .expect("open");
    one.set_modified(std::time::SystemTime::now())
        .expect("touch");
    f.write("d/sub/chunks", &data(3 * 65536 + 7, 3));
    let s = f.sync_ok(&[]);
    assert_eq!(counts(&s).0, 2, "{s}");
    f.assert_mirrored(&TREE);
    assert_eq!(counts(&f.sync_ok(&[])), (0, 4, 0));
}

/// Objects replaced behind the sync's back: another encrypted object of the same plaintext size
/// (no stamp in its metadata) is compared as plaintext and sent back; an altered one fails to
/// open, `store get` refuses it writing nothing, and the next sync sends the file again.
async fn replaced_and_altered_objects_are_sent_back(b: Backend) {
    let f = Fixture::new(b);
    tree(&f);
    f.sync_ok(&[]);
    let other = f.site.dir.path().join("other");
    std::fs::write(&other, data(3 * 65536 + 7, 9)).expect("other");
    let put = f.site.run(
        &[
            "store",
            "put",
            other.to_str().expect("utf8"),
            "files/d/sub/chunks",
        ],
        &[],
    );
    assert!(put.status.success(), "{}", err(&put));
    assert!(f.stored("d/sub/chunks").starts_with(MAGIC));
    // Same content, no stamp (an identical copy put by hand): compared, not sent.
    let same = f.site.run(
        &[
            "store",
            "put",
            f.src.join("one").to_str().expect("utf8"),
            "files/one",
        ],
        &[],
    );
    assert!(same.status.success(), "{}", err(&same));
    let s = f.sync_ok(&[]);
    assert_eq!(
        counts(&s).0,
        1,
        "only the replaced object is sent back: {s}"
    );
    assert_eq!(s["unchanged"], 3, "{s}");
    f.assert_mirrored(&TREE);

    // One flipped byte in the last chunk of an object.
    let mut stored = f.stored("d/sub/chunks");
    let at = stored.len() - 20;
    stored[at] ^= 1;
    let altered = f.site.dir.path().join("altered");
    std::fs::write(&altered, &stored).expect("altered");
    let put = f.plain(&[
        "store",
        "put",
        altered.to_str().expect("utf8"),
        "files/d/sub/chunks",
    ]);
    assert!(put.status.success(), "{}", err(&put));
    let dest = f.site.dir.path().join("restored");
    let got = f.site.run(
        &[
            "store",
            "get",
            "files/d/sub/chunks",
            dest.to_str().expect("utf8"),
        ],
        &[],
    );
    assert!(!got.status.success(), "an altered object is refused");
    assert!(err(&got).contains("files/d/sub/chunks"), "{}", err(&got));
    assert!(
        !dest.exists(),
        "nothing written where the plaintext would go"
    );
    let s = f.sync_ok(&[]);
    assert_eq!(counts(&s).0, 1, "the altered object is sent again: {s}");
    f.assert_mirrored(&TREE);
}

on_both!(
    encrypted_sync_round_trips_and_a_rerun_sends_nothing,
    replaced_and_altered_objects_are_sent_back,
);

/// A plaintext mirror, then `encryption:` turned on: each file is sent once more, encrypted,
/// and then nothing; turned off again, each is sent in clear.
#[test]
fn turning_encryption_on_sends_the_tree_once_encrypted() {
    let f = Fixture::new(Backend::Local);
    tree(&f);
    let enc_cfg = std::fs::read_to_string(&f.site.cfg).expect("cfg");
    std::fs::copy(&f.plain_cfg, &f.site.cfg).expect("plain");
    assert_eq!(counts(&f.sync_ok(&[])).0, 4);
    assert!(!f.stored("one").starts_with(MAGIC));
    std::fs::write(&f.site.cfg, enc_cfg).expect("enc");
    let s = f.sync_ok(&[]);
    assert_eq!(counts(&s).0, 4, "{s}");
    f.assert_mirrored(&TREE);
    assert_eq!(counts(&f.sync_ok(&[])), (0, 4, 0));
    std::fs::copy(&f.plain_cfg, &f.site.cfg).expect("plain");
    let s = f.sync_ok(&[]);
    assert_eq!(counts(&s).0, 4, "{s}");
    assert!(f.stored("d/big") == std::fs::read(f.src.join("d/big")).expect("big"));
}

/// A host with recipients only (it writes, it cannot open): a plain sync works and a rerun
/// sends nothing, `--checksum` is refused naming the setting (exit 2, nothing sent).
#[test]
fn checksum_without_identities_is_refused_by_name() {
    let f = Fixture::new(Backend::Local);
    tree(&f);
    f.encrypt(&f.recipient, false);
    assert_eq!(counts(&f.sync_ok(&[])).0, 4);
    std::fs::remove_dir_all(f.site.dir.path().join("state/sync")).expect("rm record");
    assert_eq!(counts(&f.sync_ok(&[])), (0, 4, 0));
    let out = f.sync(&["--checksum"]);
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    assert!(
        err(&out).contains("encryption.identity_file"),
        "{}",
        err(&out)
    );
    assert_eq!(err(&out).trim().lines().count(), 1, "{}", err(&out));
}
