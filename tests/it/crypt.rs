//! The age format, proven from outside: the C2SP test vectors the age crate ships (read from
//! where cargo unpacked the crate, so no copy is kept here), and the independent Go `age` tool
//! from Debian opening what barmans3 seals and the other way round. The `rage` tool would prove
//! less: it is built on the same `age` crate barmans3 uses for key wrapping.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use age::x25519;
use barmans3::crypt::{
    CryptError, Fault, Identities, Opener, Recipients, Sealer, StreamOpener, parse_identity_file,
};
use sha2::{Digest, Sha256};

use crate::common::data;

/// The testkit directory of the `age` crate this build uses: the version Cargo.lock pins, where
/// cargo unpacked it under `$CARGO_HOME/registry/src/<index>/`.
fn testkit_dir() -> PathBuf {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"))
        .expect("read Cargo.lock");
    let version = lock
        .split("[[package]]")
        .find_map(|p| {
            let mut lines = p.lines().map(str::trim).filter(|l| !l.is_empty());
            (lines.next()? == "name = \"age\"").then(|| lines.next())?
        })
        .and_then(|v| v.strip_prefix("version = \"")?.strip_suffix('"'))
        .expect("Cargo.lock pins the age crate")
        .to_string();
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cargo"));
    let src = home.join("registry/src");
    let dir = std::fs::read_dir(&src)
        .expect("the cargo registry sources")
        .filter_map(|e| e.ok())
        .map(|e| {
            e.path()
                .join(format!("age-{version}/tests/testdata/testkit"))
        })
        .find(|d| d.is_dir());
    dir.unwrap_or_else(|| {
        panic!("age-{version}/tests/testdata/testkit not found under {}: build the project first (cargo fetch)", src.display())
    })
}

#[derive(Debug, PartialEq)]
enum Expect {
    Success([u8; 32]),
    Header,
    Hmac,
    NoMatch,
    Payload([u8; 32]),
}

struct Vector {
    expect: Expect,
    identities: Vec<x25519::Identity>,
    skip: Option<&'static str>,
    file: Vec<u8>,
}

fn unhex(s: &str) -> [u8; 32] {
    let v: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect();
    v.try_into().expect("32 bytes")
}

/// Parses one testkit file: `key: value` lines, a blank line, then the age file (zlib-compressed
/// when it says so).
fn vector(path: &Path) -> Vector {
    let raw = std::fs::read(path).expect("read vector");
    let split = raw
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("blank line");
    let head = std::str::from_utf8(&raw[..split]).expect("utf-8 head");
    let mut body = raw[split + 2..].to_vec();
    let (mut expect, mut payload) = ("", "");
    let mut v = Vector {
        expect: Expect::Header,
        identities: Vec::new(),
        skip: None,
        file: Vec::new(),
    };
    for line in head.lines() {
        let (k, val) = line.split_once(": ").expect("key: value");
        match k {
            "expect" => expect = val,
            "payload" => payload = val,
            "identity" => v
                .identities
                .push(x25519::Identity::from_str(val).expect("identity")),
            "passphrase" => {
                v.skip = v.skip.or(Some(
                    "passphrase (scrypt) files: barmans3 uses X25519 keys only",
                ))
            }
            "armored" if val == "yes" => {
                v.skip = Some("ASCII armor: barmans3 stores binary age files")
            }
            "compressed" => {
                let mut out = Vec::new();
                flate2::read::ZlibDecoder::new(&body[..])
                    .read_to_end(&mut out)
                    .expect("zlib");
                body = out;
            }
            _ => {}
        }
    }
    if v.skip.is_some() && !v.identities.is_empty() && expect == "header failure" {
        // A passphrase vector that must fail on its header whatever the key (scrypt mixed with
        // X25519): still ours to refuse.
        v.skip = None;
    }
    v.expect = match expect {
        "success" => Expect::Success(unhex(payload)),
        "header failure" => Expect::Header,
        "HMAC failure" => Expect::Hmac,
        "no match" => Expect::NoMatch,
        "payload failure" => Expect::Payload(unhex(payload)),
        "armor failure" => {
            v.skip = Some("ASCII armor");
            Expect::Header
        }
        e => panic!("{}: unknown expectation {e}", path.display()),
    };
    v.file = body;
    v
}

fn stream_open(ids: &Identities, file: &[u8]) -> (Vec<u8>, Result<(), CryptError>) {
    let mut o = StreamOpener::new(ids, "vector");
    let mut out = Vec::new();
    for piece in file.chunks(7001) {
        if let Err(e) = o.update(piece, &mut out) {
            return (out, Err(e));
        }
    }
    let r = o.finish(&mut out);
    (out, r)
}

/// Opens with the length known, as a ranged reader would: every chunk as one run.
fn known_open(ids: &Identities, file: &[u8]) -> Result<Vec<u8>, CryptError> {
    let o = Opener::open(file, ids, "vector")?;
    o.plain_len(file.len() as u64)?;
    let mut out = Vec::new();
    let start = o.layout().payload_start() as usize;
    o.open_chunks(0, &file[start..], true, &mut out)?;
    Ok(out)
}

/// Whether a result is what the vector expects. `streamed`: what the stream opener appended, which
/// for a payload failure must be exactly the chunks that authenticated (the vector's hash).
fn matches(expect: &Expect, r: &Result<Vec<u8>, CryptError>, streamed: Option<&[u8]>) -> bool {
    let header = |f: &Fault| {
        matches!(
            f,
            Fault::NotAge
                | Fault::UnsupportedVersion
                | Fault::BadHeader(_)
                | Fault::HeaderTooLong
                | Fault::TruncatedHeader
        )
    };
    let payload = |f: &Fault| {
        matches!(
            f,
            Fault::Truncated
                | Fault::TrailingData { .. }
                | Fault::ChunkAuth { .. }
                | Fault::BadLength { .. }
        )
    };
    match (expect, r) {
        (Expect::Success(h), Ok(p)) => Sha256::digest(p)[..] == h[..],
        (Expect::Header, Err(e)) => header(&e.fault),
        (Expect::Hmac, Err(e)) => e.fault == Fault::HeaderMac,
        (Expect::NoMatch, Err(e)) => matches!(e.fault, Fault::NoMatchingIdentity { .. }),
        (Expect::Payload(h), Err(e)) => {
            payload(&e.fault) && streamed.is_none_or(|s| Sha256::digest(s)[..] == h[..])
        }
        _ => false,
    }
}

#[test]
fn c2sp_testkit_vectors_open_or_fail_as_the_spec_says() {
    let dir = testkit_dir();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("testkit dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("name"))
        .collect();
    names.sort();
    let (mut run, mut skipped, mut wrong) = (0, Vec::new(), Vec::new());
    for name in &names {
        let v = vector(&dir.join(name));
        if let Some(why) = v.skip {
            skipped.push(format!("{name} ({why})"));
            continue;
        }
        let keys = if v.identities.is_empty() {
            vec![x25519::Identity::generate()]
        } else {
            v.identities
        };
        let ids = Identities::new("encryption.identity_file", vec!["/testkit".into()], keys);
        let known = known_open(&ids, &v.file);
        let (streamed, stream_result) = stream_open(&ids, &v.file);
        let stream_as_known = stream_result.map(|()| streamed.clone());
        run += 1;
        // With the length known, chunks open all or nothing; the stream opener's partial output
        // must be exactly what authenticated.
        for (path, r, partial) in [
            ("known length", &known, None),
            ("stream", &stream_as_known, Some(&streamed[..])),
        ] {
            if !matches(&v.expect, r, partial) {
                wrong.push(format!(
                    "{name} [{path}]: expected {:?}, got {:?}",
                    v.expect,
                    r.as_ref().map(Vec::len)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {run} vectors disagree:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // The X25519, stanza, header, HMAC and STREAM vectors all run; only armor and passphrase
    // files are out of scope.
    assert!(run >= 60, "only {run} vectors ran; skipped: {skipped:?}");
    assert!(
        skipped
            .iter()
            .all(|s| s.starts_with("armor") || s.starts_with("scrypt")),
        "{skipped:?}"
    );
}

/// The Go `age` tool, or a failure saying how to install it.
fn go_age() -> &'static str {
    for tool in ["age", "age-keygen"] {
        let found = Command::new(tool).arg("--version").output().is_ok();
        assert!(
            found,
            "{tool} is missing: apt-get install age (scripts/test-deps installs it)"
        );
    }
    "age"
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("run age");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn write_key(dir: &Path, name: &str, keys: &[&x25519::Identity]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    let text: String = keys
        .iter()
        .map(|k| format!("{}\n", k.to_string().expose_secret()))
        .collect();
    std::fs::write(&p, text).expect("write key");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

const SIZES: [usize; 6] = [0, 1, 65535, 65536, 65537, 3 * 1024 * 1024 + 11];

#[test]
fn go_age_opens_what_barmans3_seals() {
    let age = go_age();
    let dir = tempfile::tempdir().expect("tmp");
    let old = x25519::Identity::generate();
    let new = x25519::Identity::generate();
    // Go age's identity file holds both keys, the matching one second (a rotated key ring).
    let ring = write_key(dir.path(), "ring.key", &[&old, &new]);
    let recipients = Recipients::new([new.to_public()]).expect("recipient");
    for (i, &len) in SIZES.iter().enumerate() {
        let plain = data(len, i as u64 + 40);
        let sealer = Sealer::new(&recipients, "obj").expect("sealer");
        let mut sealed = sealer.preamble().to_vec();
        sealer.seal(0, &plain, true, &mut sealed).expect("seal");
        let enc = dir.path().join(format!("{len}.age"));
        std::fs::write(&enc, &sealed).expect("write");
        // To stdout: Go age creates an -o file only when it writes a byte.
        let out = run(Command::new(age).arg("-d").arg("-i").arg(&ring).arg(&enc));
        assert!(out.stdout == plain, "size {len}");
    }
    // The stream sealer's output too, and an object for two recipients opened by each.
    let both = Recipients::new([old.to_public(), new.to_public()]).expect("two");
    let mut s = Sealer::new(&both, "stream").expect("sealer").into_stream();
    let plain = data(200_000, 9);
    let mut sealed = Vec::new();
    for piece in plain.chunks(33_333) {
        s.update(piece, &mut sealed).expect("update");
    }
    s.finish(&mut sealed).expect("finish");
    let enc = dir.path().join("stream.age");
    std::fs::write(&enc, &sealed).expect("write");
    for key in [&old, &new] {
        let one = write_key(dir.path(), "one.key", &[key]);
        let out = run(Command::new(age).arg("-d").arg("-i").arg(&one).arg(&enc));
        assert!(out.stdout == plain);
    }
}

#[test]
fn barmans3_opens_what_go_age_seals() {
    let age = go_age();
    let dir = tempfile::tempdir().expect("tmp");
    let keyfile = dir.path().join("go.key");
    run(Command::new("age-keygen").arg("-o").arg(&keyfile));
    let text = std::fs::read_to_string(&keyfile).expect("key");
    let Ok(go_key) = parse_identity_file(&text) else {
        panic!("Go age's identity file does not parse");
    };
    let public = go_key[0].to_public().to_string();
    let other = x25519::Identity::generate();
    // Rotation: the first identity tried does not fit.
    let mut ring = vec![other];
    ring.extend(go_key);
    let ids = Identities::new("encryption.identity_files", vec![keyfile.clone()], ring);
    for (i, &len) in SIZES.iter().enumerate() {
        let plain = data(len, i as u64 + 70);
        let src = dir.path().join(format!("{len}.plain"));
        let enc = dir.path().join(format!("{len}.age"));
        std::fs::write(&src, &plain).expect("write");
        run(Command::new(age)
            .arg("-r")
            .arg(&public)
            .arg("-o")
            .arg(&enc)
            .arg(&src));
        let sealed = std::fs::read(&enc).expect("read");
        assert_eq!(
            known_open(&ids, &sealed).expect("opens"),
            plain,
            "size {len}"
        );
        let (out, r) = stream_open(&ids, &sealed);
        r.expect("stream opens");
        assert!(out == plain);
        // A ranged read of a Go-made object: the header, then only the chunks a range touches.
        if len > 70_000 {
            let opener =
                Opener::open(&sealed[..4096.min(sealed.len())], &ids, "go").expect("header");
            let r = 65_000..140_000u64;
            let span = opener
                .layout()
                .sealed_span(r.clone(), len as u64)
                .expect("span");
            let mut got = Vec::new();
            opener
                .open_span(
                    &span,
                    &sealed[span.bytes.start as usize..span.bytes.end as usize],
                    &mut got,
                )
                .expect("range");
            assert!(got == plain[r.start as usize..r.end as usize]);
        }
    }
    // A flipped byte in a Go-made object is refused too.
    let mut bad = std::fs::read(dir.path().join("65537.age")).expect("read");
    let at = bad.len() - 20;
    bad[at] ^= 0x80;
    assert!(matches!(
        known_open(&ids, &bad)
            .map(|_| ())
            .expect_err("tampered")
            .fault,
        Fault::ChunkAuth { chunk: 0 } | Fault::ChunkAuth { chunk: 1 }
    ));
}
