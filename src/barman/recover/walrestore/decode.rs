//! From stored bytes to PostgreSQL's, proven: decrypt when encrypted, decompress what a magic
//! number (or the custom filter) says, every step bounded by what the file can be (a segment
//! of this cluster's size, a few lines of text), then check that the result is the file its
//! name says: a segment's first page gives its address and size and the cluster it belongs to.

use crate::barman::wal::{self, WalKind};
use crate::codec::{self, Codec, Decryption, Filter};
use crate::error::{Error, Result};

/// The largest WAL segment PostgreSQL allows (`--wal-segsize` 1024 MiB): the bound for a
/// segment of a cluster whose segment size is not known.
pub const MAX_WAL_BYTES: u64 = 1 << 30;

/// The largest history file or backup label accepted: text of a line per timeline or field.
pub const MAX_TEXT_BYTES: u64 = 16 << 20;

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
    pub decrypt: Option<Decryption>,
}

/// The most a WAL file may hold, stored and decoded: a decompression bomb or a hostile object
/// costs at most this much memory before it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of the object in the bucket (compression and encryption add a little to
    /// incompressible data, never more than an eighth and a MiB).
    pub stored: u64,
    /// Bytes once decoded: the segment size for segments (a stream that yields one byte more
    /// is refused there), [`MAX_TEXT_BYTES`] for text files.
    pub decoded: u64,
}

impl Limits {
    /// The limits for a file of `kind` in a cluster of `seg_size`-byte segments (when known).
    pub fn of(kind: WalKind, seg_size: Option<u64>) -> Limits {
        let decoded = match kind {
            WalKind::Segment | WalKind::Partial => seg_size.unwrap_or(MAX_WAL_BYTES),
            WalKind::BackupLabel | WalKind::History => MAX_TEXT_BYTES,
        };
        Limits {
            stored: decoded + decoded / 8 + (1 << 20),
            decoded,
        }
    }
}

/// How a file stored as PostgreSQL's own bytes is described: nothing was decoded.
pub const PLAIN: &str = "plain";

/// Turns stored bytes back into PostgreSQL's: decrypt when encrypted, decompress what a magic
/// number (or the custom filter) says, then check the result is what `kind` and `name` promise.
/// Every step stops at `limits.decoded` bytes (and a byte more, to tell). Returns the bytes and
/// how they were stored.
pub fn decode(
    kind: WalKind,
    name: &str,
    mut data: Vec<u8>,
    d: &Decoding,
    limits: Limits,
    what: &str,
) -> Result<(Vec<u8>, String)> {
    let mut steps = Vec::new();
    if codec::looks_encrypted(&data) && !valid(kind, name, &data) {
        let f = d.decrypt.as_ref().ok_or_else(|| {
            Error::Config(format!(
                "{what} is encrypted (GPG): set encryption_passphrase_command in the Barman config barman.config names (the secret key in this user's keyring), or barman.decryption_command to a command that decrypts stdin to stdout"
            ))
        })?;
        // What GPG yields may still be compressed: bounded like the stored object.
        data = f.run(&data, limits.stored, what)?;
        steps.push("gpg");
    }
    if let Some(c) = Codec::sniff(&data) {
        data = codec::decode_all(c, &data, limits.decoded, what)?;
        steps.push(c.name());
    } else if let Some(f) = &d.custom {
        let custom = match &d.custom_magic {
            Some(m) => data.starts_with(m),
            None => !valid(kind, name, &data),
        };
        if custom {
            data = f.run(&data, limits.decoded, what)?;
            steps.push("custom");
        }
    }
    let stored_as = if steps.is_empty() {
        PLAIN.to_string()
    } else {
        steps.join("+")
    };
    check(kind, name, &data).map_err(|why| {
        Error::Failed(format!(
            "{what}: {why} after decoding it as {stored_as}; refusing to hand PostgreSQL bytes it would take for the end of the archive (is the file damaged, or compressed or encrypted in a way barmans3 is not configured for?)"
        ))
    })?;
    Ok((data, stored_as))
}

fn valid(kind: WalKind, name: &str, data: &[u8]) -> bool {
    check(kind, name, data).is_ok()
}

/// `XLP_LONG_HEADER`: the first page of a segment carries the long header.
const XLP_LONG_HEADER: u16 = 0x0002;
/// Size of the long page header (`SizeOfXLogLongPHD`).
const LONG_HEADER: usize = 40;

/// The first bytes of a segment file; what [`check_segment_head`] reads.
pub const SEGMENT_HEAD: usize = LONG_HEADER;

/// Checks that `data` is the file `name` names: a segment (or closed partial, which PostgreSQL
/// and pg_receivewal write at full size, zero-padded) whose first page header gives this
/// segment's address and whose length is the size that header gives, a backup label, or a
/// history file.
pub fn check(kind: WalKind, name: &str, data: &[u8]) -> std::result::Result<(), String> {
    match kind {
        WalKind::Segment | WalKind::Partial => {
            check_segment_head(name, data, data.len() as u64, kind == WalKind::Partial)
        }
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

/// The fields of a long page header [`check_segment_head`] reads: `xlp_info`, `xlp_pageaddr`,
/// `xlp_seg_size`.
type Header = (u16, u64, u32);

/// A long page header read in both byte orders: WAL is written in the server's byte order;
/// archives come from little-endian machines in practice, but a big-endian one must not be
/// mistaken for garbage.
fn headers(a: &[u8]) -> [Header; 2] {
    let le = {
        let u16_at = |i: usize| u16::from_le_bytes([a[i], a[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
        let u64_at = |i: usize| u64::from(u32_at(i)) | (u64::from(u32_at(i + 4)) << 32);
        (u16_at(2), u64_at(8), u32_at(32))
    };
    let be = {
        let u16_at = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
        let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
        (u16_at(2), u64_at(8), u32_at(32))
    };
    [le, be]
}

/// The segment size a header gives, if the header is the start of segment `name`.
fn names_segment(name: &str, (info, pageaddr, seg_size): Header) -> Option<u64> {
    let seg_size = u64::from(seg_size);
    let sane = seg_size.is_power_of_two() && ((1 << 20)..=MAX_WAL_BYTES).contains(&seg_size);
    (sane
        && info & XLP_LONG_HEADER != 0
        && wal::segment_number(name, (1u64 << 32) / seg_size)
            .is_some_and(|n| n.checked_mul(seg_size) == Some(pageaddr)))
    .then_some(seg_size)
}

/// [`check`] for a segment from its first [`SEGMENT_HEAD`] bytes and its length: the header
/// proves which segment a file is, and its length must be the segment size the header gives
/// (a closed partial too: both are written whole). Says which of the two is wrong.
pub fn check_segment_head(
    name: &str,
    data: &[u8],
    len: u64,
    partial: bool,
) -> std::result::Result<(), String> {
    if data.len() < LONG_HEADER {
        return Err(format!(
            "it holds {} bytes, too few for a WAL segment",
            data.len()
        ));
    }
    let Some(seg_size) = headers(data)
        .into_iter()
        .find_map(|h| names_segment(name, h))
    else {
        return Err("its first page is not the start of this WAL segment".into());
    };
    if len != seg_size {
        let what = if partial {
            "a closed partial"
        } else {
            "a segment"
        };
        return Err(format!(
            "its length is wrong: it holds {len} bytes, where {what} of this cluster holds {seg_size} (its first page gives the segment size); it is truncated or padded"
        ));
    }
    Ok(())
}

/// The segment size the first page of a checked segment gives.
pub fn segment_size(plain: &[u8]) -> Option<u64> {
    let head = plain.get(..LONG_HEADER)?;
    headers(head)
        .into_iter()
        .map(|(_, _, s)| u64::from(s))
        .find(|s| s.is_power_of_two() && ((1 << 20)..=MAX_WAL_BYTES).contains(s))
}

/// The system identifier in a segment's long page header (`xlp_sysid`), read in both byte
/// orders.
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

/// Refuses a segment of another database system than `system`, the cluster being recovered.
pub fn check_system(kind: WalKind, plain: &[u8], system: Option<u64>, what: &str) -> Result<()> {
    if !matches!(kind, WalKind::Segment | WalKind::Partial) || is_system(plain, system) {
        return Ok(());
    }
    let (le, _) = segment_system(plain).unwrap_or_default();
    Err(Error::Failed(format!(
        "{what} belongs to database system {le}, not to {}, the cluster being recovered; refusing to hand PostgreSQL another cluster's WAL",
        system.unwrap_or_default()
    )))
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
        // A closed partial is written whole, zero-padded: a shorter one is a truncated one,
        // and the refusal says it is the length that is wrong.
        let mut partial = s.clone();
        partial[1 << 20..].fill(0);
        assert_eq!(check(WalKind::Partial, SEG, &partial), Ok(()));
        for kind in [WalKind::Partial, WalKind::Segment] {
            let why = check(kind, SEG, &s[..1 << 20]).expect_err("short");
            assert!(
                why.contains("length is wrong") && why.contains("1048576"),
                "{why}"
            );
        }
        let why = check(WalKind::Segment, "000000010000000200000004", &s).expect_err("other");
        assert!(why.contains("not the start of this WAL segment"), "{why}");
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
            include_bytes!("../../../../tests/fixtures/wal/segment.gzip-cli"),
        ),
        (
            "bzip2",
            include_bytes!("../../../../tests/fixtures/wal/segment.bzip2-cli"),
        ),
        (
            "xz",
            include_bytes!("../../../../tests/fixtures/wal/segment.xz-cli"),
        ),
        (
            "zstd",
            include_bytes!("../../../../tests/fixtures/wal/segment.zstd-cli"),
        ),
        (
            "zstd",
            include_bytes!("../../../../tests/fixtures/wal/segment.zstd-barman"),
        ),
        (
            "lz4",
            include_bytes!("../../../../tests/fixtures/wal/segment.lz4-cli"),
        ),
        (
            "lz4",
            include_bytes!("../../../../tests/fixtures/wal/segment.lz4-barman"),
        ),
        (
            "snappy",
            include_bytes!("../../../../tests/fixtures/wal/segment.snappy-barman"),
        ),
    ];

    #[test]
    fn every_fixture_decodes_to_the_segment() {
        let want = fixture_segment();
        for (i, (codec, stored)) in FIXTURES.iter().enumerate() {
            let (got, how) = decode(
                WalKind::Segment,
                "000000010000000000000003",
                stored.to_vec(),
                &Decoding::default(),
                Limits::of(WalKind::Segment, Some(1 << 20)),
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
                    "000000010000000000000003",
                    bytes,
                    &Decoding::default(),
                    Limits::of(WalKind::Segment, None),
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
            SEG,
            vec![0x85, 1, 2, 3],
            &Decoding::default(),
            Limits::of(WalKind::Segment, None),
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
            SEG,
            vec![0x11; 4096],
            &Decoding::default(),
            Limits::of(WalKind::Segment, None),
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
        let limits = Limits::of(WalKind::Segment, Some(1 << 20));
        for magic in [Some(vec![0xEE]), None] {
            let d = Decoding {
                custom: strip.clone(),
                custom_magic: magic,
                decrypt: None,
            };
            let (out, how) =
                decode(WalKind::Segment, SEG, stored.clone(), &d, limits, "w").expect("custom");
            assert_eq!((out == s, how.as_str()), (true, "custom"));
            // A plain segment stays plain.
            let (out, how) =
                decode(WalKind::Segment, SEG, s.clone(), &d, limits, "w").expect("plain");
            assert_eq!((out == s, how.as_str()), (true, "plain"));
        }
    }

    /// A stream cut where the format cannot tell (between lz4 blocks, between snappy chunks)
    /// decodes to a prefix: refused, as truncated or by its length.
    #[test]
    fn streams_cut_at_a_block_boundary_are_refused() {
        let want = fixture_segment();
        let seg = "000000010000000000000003";
        let limits = Limits::of(WalKind::Partial, Some(1 << 20));
        // lz4 with 64 KiB blocks: the frame header is 7 bytes, then size-prefixed blocks.
        let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(
            lz4_flex::frame::FrameInfo::new().block_size(lz4_flex::frame::BlockSize::Max64KB),
            Vec::new(),
        );
        std::io::Write::write_all(&mut enc, &want).expect("lz4");
        let lz4 = enc.finish().expect("lz4");
        let first = u32::from_le_bytes(lz4[7..11].try_into().expect("size")) & 0x7FFF_FFFF;
        let cut = &lz4[..11 + first as usize];
        // snappy framing: the stream identifier (10 bytes), then type + 3-byte length chunks.
        let mut enc = snap::write::FrameEncoder::new(Vec::new());
        std::io::Write::write_all(&mut enc, &want).expect("snappy");
        let snappy = enc.into_inner().expect("snappy");
        let len = |at: usize| {
            u32::from_le_bytes([snappy[at + 1], snappy[at + 2], snappy[at + 3], 0]) as usize
        };
        let mut at = 10;
        at += 4 + len(at);
        at += 4 + len(at);
        for (codec, stored) in [("lz4", cut), ("snappy", &snappy[..at])] {
            let e = decode(
                WalKind::Partial,
                seg,
                stored.to_vec(),
                &Decoding::default(),
                limits,
                "w",
            )
            .expect_err(codec);
            let msg = e.to_string();
            assert!(
                msg.contains("truncated") || msg.contains("length is wrong"),
                "{codec}: {msg}"
            );
        }
        // Whole, both decode to the segment.
        for stored in [lz4, snappy] {
            let (got, _) = decode(
                WalKind::Segment,
                seg,
                stored,
                &Decoding::default(),
                limits,
                "w",
            )
            .expect("whole");
            assert!(got == want);
        }
    }

    /// A small object that expands without end is refused once it passes the cluster's
    /// segment size, whatever it would grow to.
    #[test]
    fn decoding_stops_at_the_clusters_segment_size() {
        use std::io::Read;
        let bomb = zstd::encode_all(std::io::repeat(0).take(64 << 20), 19).expect("zstd");
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        let limits = Limits::of(WalKind::Segment, Some(1 << 20));
        let e = decode(
            WalKind::Segment,
            SEG,
            bomb,
            &Decoding::default(),
            limits,
            "w",
        )
        .expect_err("bomb");
        assert!(e.to_string().contains("more than 1048576 bytes"), "{e}");
        // Unknown segment size: the largest PostgreSQL allows.
        assert_eq!(Limits::of(WalKind::Segment, None).decoded, MAX_WAL_BYTES);
        assert_eq!(
            Limits::of(WalKind::History, Some(1 << 20)).decoded,
            MAX_TEXT_BYTES
        );
    }

    #[test]
    fn segments_of_another_cluster_are_refused() {
        let mut s = segment(SEG, 1 << 20);
        s[24..32].copy_from_slice(&42u64.to_le_bytes());
        assert!(check_system(WalKind::Segment, &s, Some(42), "w").is_ok());
        assert!(check_system(WalKind::Segment, &s, None, "w").is_ok());
        let e = check_system(WalKind::Segment, &s, Some(7), "w").expect_err("other");
        assert!(
            e.to_string().contains("database system 42, not to 7"),
            "{e}"
        );
        assert_eq!(segment_size(&s), Some(1 << 20));
    }
}
