//! `volume` with `encryption:` on, on Garage and file://: chunks of several sizes and our
//! manifest are stored as age files (rage opens a chunk to the volume's bytes), `volume ls`
//! shows plaintext sizes, `get` (whole, ranged, to stdout) is byte-identical, `--resume` of
//! the same data opens the stored chunks and sends none, `--append` rewrites the last chunk,
//! and a flipped byte in a chunk fails the get naming the chunk, writing nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use age::secrecy::ExposeSecret;
use age::x25519;
use bytes::Bytes;

use crate::common::{Backend, data, on_both};
use crate::volume::{Vt, stderr};

const MIB: usize = 1 << 20;
const MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// Appends `encryption:` to the site's config; returns the identity file.
fn encrypt(v: &Vt) -> PathBuf {
    let id = x25519::Identity::generate();
    let id_file = v.path("id.key");
    std::fs::write(&id_file, format!("{}\n", id.to_string().expose_secret())).expect("key");
    std::fs::set_permissions(&id_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let text = std::fs::read_to_string(&v.site.cfg).expect("cfg");
    let enc = format!(
        "{text}encryption:\n  recipients: [{}]\n  identity_file: {}\n",
        id.to_public(),
        id_file.display()
    );
    std::fs::write(&v.site.cfg, enc).expect("cfg");
    id_file
}

/// The stored bytes of `<rel>` (the test's engine moves them as they are).
async fn stored(v: &Vt, rel: &str) -> Vec<u8> {
    let t = v.transfer().await.raw();
    let mut buf = Vec::new();
    t.download_to(&v.key(rel), &mut buf, Default::default())
        .await
        .expect("raw get");
    buf
}

fn json_line(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().next().unwrap_or("")).expect("json")
}

async fn encrypted_volume_round_trips(b: Backend) {
    let v = Vt::new(b, "cvol");
    let id_file = encrypt(&v);
    let body = data(25 * MIB, 11);
    let src = v.file("src", &body);
    let r = json_line(&v.ok(&["--json", "volume", "put", "V", &src]));
    assert_eq!(
        (r["chunks"].as_u64(), r["total"].as_u64()),
        (Some(3), Some(25 * MIB as u64))
    );

    // Chunks of 10, 10 and 5 MiB and the manifest: all age, each larger than its plaintext.
    let objects = v.objects("V").await;
    for (rel, plain) in [("0000", 10 * MIB), ("0001", 10 * MIB), ("0002", 5 * MIB)] {
        let size = objects[rel] as usize;
        assert!(size > plain && size < plain + plain / 100, "{rel}: {size}");
        assert!(
            stored(&v, &format!("V/{rel}")).await.starts_with(MAGIC),
            "{rel}"
        );
    }
    assert!(
        stored(&v, "V/barmans3.volume.json")
            .await
            .starts_with(MAGIC)
    );
    let rage = crate::barman_e2e::RAGE;
    let sealed = v.path("0002.age");
    std::fs::write(&sealed, stored(&v, "V/0002").await).expect("w");
    let opened = std::process::Command::new(rage)
        .arg("-d")
        .arg("-i")
        .arg(&id_file)
        .arg(&sealed)
        .output()
        .unwrap_or_else(|e| panic!("{rage} (scripts/test-deps installs it): {e}"));
    assert!(opened.status.success(), "rage: {}", stderr(&opened));
    assert!(
        opened.stdout[..] == body[20 * MIB..],
        "rage opens chunk 0002"
    );

    // Plaintext sizes in ls; whole, ranged and stdout gets identical.
    let text = String::from_utf8_lossy(&v.ok(&["volume", "ls"]).stdout).into_owned();
    assert!(
        text.contains("26214400") && text.contains("complete"),
        "{text}"
    );
    let ls = json_line(&v.ok(&["--json", "volume", "ls", "V"]));
    let sizes: Vec<u64> = ls["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .map(|c| c["size"].as_u64().expect("size"))
        .collect();
    assert_eq!(sizes, [10 * MIB as u64, 10 * MIB as u64, 5 * MIB as u64]);
    let dest = v.path("dest");
    v.ok(&["volume", "get", "V", dest.to_str().expect("utf8")]);
    assert!(std::fs::read(&dest).expect("dest") == body, "get differs");
    let (off, len) = (10 * MIB - 100, MIB + 200);
    let (o, l) = (off.to_string(), len.to_string());
    let out = v.ok(&["volume", "get", "V", "-", "--offset", &o, "--length", &l]);
    assert!(out.stdout[..] == body[off..off + len], "range differs");

    // Resuming the same data opens each stored chunk and sends none of them again.
    let r = json_line(&v.ok(&["--json", "volume", "put", "V", &src, "--resume"]));
    assert_eq!(
        (r["chunks_sent"].as_u64(), r["chunks_reused"].as_u64()),
        (Some(0), Some(3)),
        "{r}"
    );
    // Append: the last chunk is read, opened and rewritten with the new data after it.
    let more = data(7 * MIB, 12);
    let r = json_line(&v.ok(&[
        "--json",
        "volume",
        "put",
        "V",
        &v.file("more", &more),
        "--append",
    ]));
    assert_eq!(
        (r["chunks"].as_u64(), r["chunks_sent"].as_u64()),
        (Some(4), Some(2)),
        "{r}"
    );
    let mut both = body.clone();
    both.extend_from_slice(&more);
    assert!(
        v.ok(&["volume", "get", "V", "-"]).stdout == both,
        "appended volume differs"
    );
}

async fn a_flipped_byte_in_a_chunk_fails_the_get(b: Backend) {
    let v = Vt::new(b, "cvol-flip");
    encrypt(&v);
    let body = data(25 * MIB, 13);
    v.ok(&["volume", "put", "V", &v.file("src", &body)]);
    let mut bytes = stored(&v, "V/0001").await;
    bytes[5 * MIB] ^= 0x20;
    let t = v.transfer().await.raw();
    t.put_bytes(&v.key("V/0001"), Bytes::from(bytes), Default::default())
        .await
        .expect("raw put");
    let dest = v.path("dest");
    let out = v.run(&["volume", "get", "V", dest.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("V/0001"),
        "names the chunk: {}",
        stderr(&out)
    );
    assert!(!dest.exists(), "nothing written");
    let out = v.run(&["volume", "get", "V", "-"]);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        out.stdout.len() <= 10 * MIB,
        "nothing past the altered chunk"
    );
}

/// Another program (Bareos appending through another wrapper) rewrote the last chunk with a
/// little more data, sealed to the same key: our manifest no longer describes the volume, so
/// each chunk is read at the size its own header gives, not the one the stale manifest
/// recorded (which the listed ciphertext size could still hold).
async fn a_chunk_rewritten_elsewhere_is_read_at_its_own_size(b: Backend) {
    let v = Vt::new(b, "cvol-rewrite");
    encrypt(&v);
    let body = data(25 * MIB, 14);
    v.ok(&["volume", "put", "V", &v.file("src", &body)]);
    let last = data(5 * MIB + 300, 15);
    v.ok(&["store", "put", &v.file("last", &last), "V/0002"]);
    assert!(stored(&v, "V/0002").await.starts_with(MAGIC), "sealed");
    let out = v.ok(&["volume", "get", "V", "-"]);
    let mut want = body[..20 * MIB].to_vec();
    want.extend_from_slice(&last);
    assert_eq!(out.stdout.len(), want.len(), "{}", stderr(&out));
    assert!(out.stdout == want, "the volume as rewritten");
}

on_both!(
    encrypted_volume_round_trips,
    a_flipped_byte_in_a_chunk_fails_the_get,
    a_chunk_rewritten_elsewhere_is_read_at_its_own_size
);
