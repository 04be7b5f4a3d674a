//! `wal-restore`, PostgreSQL's `restore_command`: fetch one WAL file from the bucket, turn it
//! back into the bytes PostgreSQL wrote (decrypt, decompress), prove that they are what the
//! name says, and put them at `%p` atomically.
//!
//! PostgreSQL reads exit status 1 as "not in the archive" and may then end recovery and
//! promote, so [`Error::NotFound`] comes back only for a file verifiably absent under every
//! name it may be stored under, and never at a gap (a later segment of the same timeline is in
//! the bucket). Every other failure is an error the caller turns into a status that aborts
//! recovery.

use std::path::Path;

use crate::barman::remote::Remote;
use crate::barman::wal::{self, WalKind};
use crate::codec::{self, Codec, Filter};
use crate::error::{Error, Result};
use crate::store::ListRequest;
use crate::transfer::{Expect, Transfer};

/// The largest WAL segment PostgreSQL allows (`--wal-segsize` 1024 MiB); nothing decoded for
/// `wal-restore` may be larger.
pub const MAX_WAL_BYTES: u64 = 1 << 30;

/// How stored WAL files are turned back into PostgreSQL's bytes, beyond the codecs recognised
/// by their magic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decoding {
    /// Barman's `custom` compression: the decompression filter.
    pub custom: Option<Filter>,
    /// The magic bytes of the custom format; without one, any file that is not already a valid
    /// WAL file goes through the custom filter (as Barman does).
    pub custom_magic: Option<Vec<u8>>,
    /// Decrypts GPG-encrypted WALs (Barman ≥ 3.14 `encryption = gpg`).
    pub decrypt: Option<Filter>,
}

/// What `wal-restore` placed at `%p`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// Bytes written.
    pub bytes: u64,
    /// The bucket key it came from (a `.partial` when the full segment is absent).
    pub key: String,
    /// The format it was stored in (`plain`, `zstd`, `gpg+zstd`, `custom`, ...).
    pub stored_as: String,
    /// The cluster's WAL segment size, as the first page of a segment says.
    pub seg_size: Option<u64>,
}

/// Fetches WAL file `name` into `dest` (PostgreSQL's `%f` and `%p`).
pub async fn wal_restore(
    t: &Transfer,
    remote: &Remote,
    name: &str,
    dest: &Path,
    decoding: &Decoding,
    system: Option<u64>,
) -> Result<Served> {
    let (served, plain) = fetch_decoded(t, remote, name, decoding, system).await?;
    crate::directio::write_atomic(dest, &plain)?;
    Ok(served)
}

/// Fetches WAL file `name` and turns it back into PostgreSQL's bytes, checked: decoded, its
/// first page naming it, and (with `system`) its system identifier that of the cluster the
/// bucket's identity.json names, so another cluster's segment of the same name is never served.
pub async fn fetch_decoded(
    t: &Transfer,
    remote: &Remote,
    name: &str,
    decoding: &Decoding,
    system: Option<u64>,
) -> Result<(Served, Vec<u8>)> {
    let (key, stored) = fetch(t, remote, name).await?;
    // The file served may be the segment's closed partial: check it as what it is.
    let served = name_of(&key);
    let kind = wal::classify(&served).ok_or_else(|| not_a_wal_name(&served))?;
    let what = format!("WAL file {name} ({key})");
    let decoding = decoding.clone();
    let (plain, stored_as) = tokio::task::spawn_blocking(move || {
        let (plain, how) = decode(kind, served, stored, &decoding, &what)?;
        check_system(kind, &plain, system, &what)?;
        Ok::<_, Error>((plain, how))
    })
    .await
    .map_err(|e| Error::Failed(format!("decode task failed: {e}")))??;
    let seg_size = matches!(kind, WalKind::Segment | WalKind::Partial)
        .then(|| plain.get(32..36))
        .flatten()
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(|b| u64::from(u32::from_le_bytes(b)))
        .filter(|s| s.is_power_of_two());
    Ok((
        Served {
            bytes: plain.len() as u64,
            key,
            stored_as,
            seg_size,
        },
        plain,
    ))
}

/// The system identifier of the cluster the bucket holds (`identity.json`, written by
/// base-sync), if the bucket has one.
pub async fn bucket_system(t: &Transfer, remote: &Remote) -> Result<Option<u64>> {
    let mut buf = Vec::new();
    match t
        .download_to(&remote.identity_key(), &mut buf, Expect::default())
        .await
    {
        Ok(_) => {}
        Err(Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    }
    let v: serde_json::Value = serde_json::from_slice(&buf)
        .map_err(|e| Error::Failed(format!("{}: not JSON: {e}", remote.identity_key())))?;
    Ok(match &v["systemid"] {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    })
}

/// The system identifier in a segment's long page header (`xlp_sysid`), read in the byte
/// order the header check accepted.
fn segment_system(data: &[u8]) -> Option<(u64, u64)> {
    let b: [u8; 8] = data.get(24..32)?.try_into().ok()?;
    Some((u64::from_le_bytes(b), u64::from_be_bytes(b)))
}

/// Whether a segment belongs to database system `system` (any, when `None`).
pub fn is_system(plain: &[u8], system: Option<u64>) -> bool {
    match (system, segment_system(plain)) {
        (Some(want), Some((le, be))) => le == want || be == want,
        _ => true,
    }
}

fn check_system(kind: WalKind, plain: &[u8], system: Option<u64>, what: &str) -> Result<()> {
    let (Some(want), WalKind::Segment | WalKind::Partial) = (system, kind) else {
        return Ok(());
    };
    match segment_system(plain) {
        Some((le, be)) if le == want || be == want => Ok(()),
        Some((le, _)) => Err(Error::Failed(format!(
            "{what} belongs to database system {le}, not to {want} (the cluster identity.json names); refusing to hand PostgreSQL another cluster's WAL"
        ))),
        None => Ok(()),
    }
}

fn not_a_wal_name(name: &str) -> Error {
    Error::Usage(format!(
        "{name:?} is not a WAL file name (segment, .partial, .backup or .history)"
    ))
}

fn name_of(key: &str) -> String {
    key.rsplit('/').next().unwrap_or(key).to_string()
}

/// The stored bytes of `name`: the object itself, or for a segment its closed `.partial`
/// (the end of a timeline that pg_receivewal streamed). Absent under both names: NotFound, or
/// an error when later segments of the timeline are there.
async fn fetch(t: &Transfer, remote: &Remote, name: &str) -> Result<(String, Vec<u8>)> {
    let rel = wal::relative_path(name).ok_or_else(|| not_a_wal_name(name))?;
    let key = remote.wal_key(&rel);
    match get(t, &key).await {
        Err(Error::NotFound { .. }) => {}
        other => return other.map(|b| (key, b)),
    }
    if wal::classify(name) != Some(WalKind::Segment) {
        return Err(Error::NotFound { key });
    }
    let partial = format!("{key}.partial");
    match get(t, &partial).await {
        Ok(b) => {
            tracing::info!("{name}: serving the closed partial segment {partial}");
            return Ok((partial, b));
        }
        Err(Error::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    if let Some(later) = later_segment(t, remote, name, &key).await? {
        return Err(Error::Failed(format!(
            "WAL segment {name} is not in the bucket but the later {later} of the same timeline is: the archive has a gap, and ending recovery here would lose everything after it; ship the missing WAL (wal-sync) or set a recovery target before it"
        )));
    }
    Err(Error::NotFound { key })
}

async fn get(t: &Transfer, key: &str) -> Result<Vec<u8>> {
    t.download_small(key, MAX_WAL_BYTES)
        .await
        .map(|(data, _)| data)
}

/// The first segment after `name` on its timeline that the bucket holds, if any.
async fn later_segment(
    t: &Transfer,
    remote: &Remote,
    name: &str,
    key: &str,
) -> Result<Option<String>> {
    let req = ListRequest {
        prefix: remote.wals_prefix(),
        // After the segment, its .partial and its backup labels.
        start_after: Some(format!("{key}.\u{10FFFF}")),
        max_keys: Some(20),
        ..Default::default()
    };
    let mut found = None;
    t.list_pages(&req, |objs, _| {
        found = objs.iter().map(|o| name_of(&o.key)).find(|n| {
            matches!(wal::classify(n), Some(WalKind::Segment | WalKind::Partial))
                && wal::timeline(n) == wal::timeline(name)
                && wal::compare(n, name).is_gt()
        });
        false
    })
    .await?;
    Ok(found)
}

/// Turns stored bytes back into PostgreSQL's: decrypt when encrypted, decompress what a magic
/// number (or the custom filter) says, then check the result is what `kind` and `name` promise.
/// Returns the bytes and how they were stored.
pub fn decode(
    kind: WalKind,
    name: String,
    mut data: Vec<u8>,
    d: &Decoding,
    what: &str,
) -> Result<(Vec<u8>, String)> {
    let mut steps = Vec::new();
    if codec::looks_encrypted(&data) && !valid(kind, &name, &data) {
        let f = d.decrypt.as_ref().ok_or_else(|| {
            Error::Config(format!(
                "{what} is encrypted (GPG): set barman.decryption_command to a command that decrypts stdin to stdout, e.g. gpg --batch --quiet --decrypt"
            ))
        })?;
        data = f.run(&data, MAX_WAL_BYTES, what)?;
        steps.push("gpg");
    }
    if let Some(c) = Codec::sniff(&data) {
        data = codec::decode_all(c, &data, MAX_WAL_BYTES, what)?;
        steps.push(c.name());
    } else if let Some(f) = &d.custom {
        let custom = match &d.custom_magic {
            Some(m) => data.starts_with(m),
            None => !valid(kind, &name, &data),
        };
        if custom {
            data = f.run(&data, MAX_WAL_BYTES, what)?;
            steps.push("custom");
        }
    }
    check(kind, &name, &data).map_err(|why| {
        Error::Failed(format!(
            "{what}: {why} after decoding it as {}; refusing to hand PostgreSQL bytes it would take for the end of the archive (is the file compressed or encrypted in a way barmans3 is not configured for?)",
            if steps.is_empty() { "plain".to_string() } else { steps.join("+") }
        ))
    })?;
    let stored_as = if steps.is_empty() {
        "plain".to_string()
    } else {
        steps.join("+")
    };
    Ok((data, stored_as))
}

fn valid(kind: WalKind, name: &str, data: &[u8]) -> bool {
    check(kind, name, data).is_ok()
}

/// `XLP_LONG_HEADER`: the first page of a segment carries the long header.
const XLP_LONG_HEADER: u16 = 0x0002;
/// Size of the long page header (`SizeOfXLogLongPHD`).
const LONG_HEADER: usize = 40;

/// Checks that `data` is the file `name` names: a segment (or closed partial) whose first page
/// header gives this segment's address and its own size, a backup label, or a history file.
pub fn check(kind: WalKind, name: &str, data: &[u8]) -> std::result::Result<(), String> {
    match kind {
        WalKind::Segment | WalKind::Partial => check_segment(name, data, kind == WalKind::Partial),
        WalKind::BackupLabel => std::str::from_utf8(data)
            .ok()
            .filter(|t| t.contains("START WAL LOCATION"))
            .map(|_| ())
            .ok_or_else(|| "it is not a backup label".to_string()),
        WalKind::History => {
            let text = std::str::from_utf8(data).map_err(|_| "it is not text")?;
            let ok = !text.contains('\0')
                && text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .all(|l| l.starts_with(|c: char| c.is_ascii_digit()));
            ok.then_some(())
                .ok_or_else(|| "it is not a timeline history file".to_string())
        }
    }
}

fn check_segment(name: &str, data: &[u8], partial: bool) -> std::result::Result<(), String> {
    check_segment_head(name, data, data.len() as u64, partial)
}

/// The first bytes of a segment file; what [`check_segment_head`] reads.
pub const SEGMENT_HEAD: usize = LONG_HEADER;

/// [`check`] for a segment from its first [`SEGMENT_HEAD`] bytes and its length: the
/// header alone proves which segment a file is, so a spooled file need not be read whole.
pub fn check_segment_head(
    name: &str,
    data: &[u8],
    len: u64,
    partial: bool,
) -> std::result::Result<(), String> {
    if data.len() < LONG_HEADER {
        return Err(format!("it holds {} bytes, not a WAL segment", data.len()));
    }
    // WAL is written in the server's byte order; archives come from little-endian machines in
    // practice, but a big-endian one must not be mistaken for garbage.
    let le = |a: &[u8]| -> (u16, u64, u32) {
        let u16_at = |i: usize| u16::from_le_bytes([a[i], a[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
        let u64_at = |i: usize| u64::from(u32_at(i)) | (u64::from(u32_at(i + 4)) << 32);
        (u16_at(2), u64_at(8), u32_at(32))
    };
    let be = |a: &[u8]| -> (u16, u64, u32) {
        let u16_at = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
        let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
        (u16_at(2), u64_at(8), u32_at(32))
    };
    let fits = |(info, pageaddr, seg_size): (u16, u64, u32)| {
        let seg_size = u64::from(seg_size);
        let size_ok = seg_size.is_power_of_two()
            && ((1 << 20)..=MAX_WAL_BYTES).contains(&seg_size)
            && if partial {
                len <= seg_size
            } else {
                len == seg_size
            };
        size_ok
            && info & XLP_LONG_HEADER != 0
            && wal::segment_number(name, (1u64 << 32) / seg_size)
                .is_some_and(|n| n.checked_mul(seg_size) == Some(pageaddr))
    };
    if fits(le(data)) || fits(be(data)) {
        Ok(())
    } else {
        Err("its first page is not the start of this WAL segment".into())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A WAL segment as PostgreSQL writes it: a long page header for `name`, then zeros.
    pub fn segment(name: &str, seg_size: u32) -> Vec<u8> {
        let mut v = vec![0u8; seg_size as usize];
        let per_log = (1u64 << 32) / u64::from(seg_size);
        let addr = wal::segment_number(name, per_log).expect("name") * u64::from(seg_size);
        v[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        v[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        v[4..8].copy_from_slice(&1u32.to_le_bytes());
        v[8..16].copy_from_slice(&addr.to_le_bytes());
        v[32..36].copy_from_slice(&seg_size.to_le_bytes());
        v[36..40].copy_from_slice(&8192u32.to_le_bytes());
        v[100] = 0x42;
        v
    }

    const SEG: &str = "000000010000000200000003";

    #[test]
    fn segments_prove_their_own_name_and_size() {
        let s = segment(SEG, 16 << 20);
        assert_eq!(check(WalKind::Segment, SEG, &s), Ok(()));
        // Another segment's bytes, a truncated segment, random bytes: refused.
        assert!(check(WalKind::Segment, "000000010000000200000004", &s).is_err());
        assert!(check(WalKind::Segment, SEG, &s[..1 << 20]).is_err());
        assert!(check(WalKind::Segment, SEG, &[0xAB; 4096]).is_err());
        // 64 MiB segments count by their own size.
        let big = segment("000000010000000200000001", 64 << 20);
        assert_eq!(
            check(WalKind::Segment, "000000010000000200000001", &big),
            Ok(())
        );
        // A closed partial may be shorter than the segment size.
        assert_eq!(check(WalKind::Partial, SEG, &s[..1 << 20]), Ok(()));
    }

    #[test]
    fn text_files_are_checked_as_text() {
        assert!(
            check(
                WalKind::History,
                "00000002.history",
                b"1\t0/3000160\tno recovery target specified\n"
            )
            .is_ok()
        );
        assert!(
            check(
                WalKind::History,
                "00000002.history",
                &[0x28, 0xb5, 0x2f, 0xfd, 1]
            )
            .is_err()
        );
        assert!(
            check(
                WalKind::BackupLabel,
                "000000010000000000000002.00000028.backup",
                b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"
            )
            .is_ok()
        );
    }

    /// The segment `scripts/make-wal-fixtures` compresses: a long header for
    /// 000000010000000000000003 with 1 MiB segments, a byte pattern, zeros.
    fn fixture_segment() -> Vec<u8> {
        let mut v = segment("000000010000000000000003", 1 << 20);
        v[4..8].copy_from_slice(&1u32.to_le_bytes());
        v[24..32].copy_from_slice(&7311111111111111111u64.to_le_bytes());
        v[100] = 0;
        for i in 0..65536usize {
            v[40 + i] = ((i * 31 + 7) % 251) as u8;
        }
        v
    }

    /// Every fixture, made by the real tools: the command-line programs and Barman's own
    /// Python writers.
    const FIXTURES: &[(&str, &[u8])] = &[
        (
            "gzip",
            include_bytes!("../../../tests/fixtures/wal/segment.gzip-cli"),
        ),
        (
            "bzip2",
            include_bytes!("../../../tests/fixtures/wal/segment.bzip2-cli"),
        ),
        (
            "xz",
            include_bytes!("../../../tests/fixtures/wal/segment.xz-cli"),
        ),
        (
            "zstd",
            include_bytes!("../../../tests/fixtures/wal/segment.zstd-cli"),
        ),
        (
            "zstd",
            include_bytes!("../../../tests/fixtures/wal/segment.zstd-barman"),
        ),
        (
            "lz4",
            include_bytes!("../../../tests/fixtures/wal/segment.lz4-cli"),
        ),
        (
            "lz4",
            include_bytes!("../../../tests/fixtures/wal/segment.lz4-barman"),
        ),
        (
            "snappy",
            include_bytes!("../../../tests/fixtures/wal/segment.snappy-barman"),
        ),
    ];

    #[test]
    fn every_fixture_decodes_to_the_segment() {
        let want = fixture_segment();
        for (i, (codec, stored)) in FIXTURES.iter().enumerate() {
            let (got, how) = decode(
                WalKind::Segment,
                "000000010000000000000003".into(),
                stored.to_vec(),
                &Decoding::default(),
                "w",
            )
            .unwrap_or_else(|e| panic!("fixture {i} ({codec}): {e}"));
            assert_eq!(how, *codec, "fixture {i}");
            assert!(got == want, "fixture {i} ({codec}) decodes to other bytes");
        }
    }

    #[test]
    fn truncated_or_corrupt_fixtures_are_clear_errors() {
        for (i, (codec, stored)) in FIXTURES.iter().enumerate() {
            let magic = Codec::sniff(stored).expect("magic").magic().len();
            let mut corrupt = stored.to_vec();
            for b in &mut corrupt[magic..magic + 8] {
                *b = !*b;
            }
            for (what, bytes) in [
                ("truncated", stored[..stored.len() / 2].to_vec()),
                ("corrupt", corrupt),
            ] {
                let e = decode(
                    WalKind::Segment,
                    "000000010000000000000003".into(),
                    bytes,
                    &Decoding::default(),
                    "WAL file 000000010000000000000003",
                )
                .expect_err(&format!("fixture {i} ({codec}) {what}"));
                let msg = e.to_string();
                assert!(
                    msg.starts_with("WAL file 000000010000000000000003: ") && !msg.contains('\n'),
                    "fixture {i} ({codec}) {what}: {msg}"
                );
                assert!(matches!(e, Error::Failed(_)), "{msg}");
            }
        }
    }

    #[test]
    fn encrypted_without_a_command_names_the_setting() {
        let e = decode(
            WalKind::Segment,
            SEG.into(),
            vec![0x85, 1, 2, 3],
            &Decoding::default(),
            "WAL file x",
        )
        .expect_err("encrypted");
        assert!(matches!(e, Error::Config(_)));
        assert!(e.to_string().contains("barman.decryption_command"), "{e}");
    }

    #[test]
    fn undecodable_content_is_never_handed_over() {
        let e = decode(
            WalKind::Segment,
            SEG.into(),
            vec![0x11; 4096],
            &Decoding::default(),
            "WAL file x",
        )
        .expect_err("garbage");
        assert!(
            e.to_string().contains("not the start of this WAL segment"),
            "{e}"
        );
    }

    #[test]
    fn custom_filter_runs_on_its_magic_or_on_what_is_not_wal() {
        let s = segment(SEG, 1 << 20);
        // A "custom" format: the byte 0xEE, then the segment (the filter strips the byte).
        let mut stored = vec![0xEE];
        stored.extend_from_slice(&s);
        let strip = Filter::parse("tail -c +2", "barman.custom_decompression");
        for magic in [Some(vec![0xEE]), None] {
            let d = Decoding {
                custom: strip.clone(),
                custom_magic: magic,
                decrypt: None,
            };
            let (out, how) =
                decode(WalKind::Segment, SEG.into(), stored.clone(), &d, "w").expect("custom");
            assert_eq!((out == s, how.as_str()), (true, "custom"));
            // A plain segment stays plain.
            let (out, how) =
                decode(WalKind::Segment, SEG.into(), s.clone(), &d, "w").expect("plain");
            assert_eq!((out == s, how.as_str()), (true, "plain"));
        }
    }
}
