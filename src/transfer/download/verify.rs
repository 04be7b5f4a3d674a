//! What a download is checked against: the caller's record (size, CRC32C from a manifest or a
//! local file) and the object's own checksum, the strongest its metadata allows: a full-object
//! CRC32C, a composite CRC32C over the parts recorded in our layout metadata, for an object read
//! whole another full-object checksum (CRC32, CRC64NVME, SHA-1, SHA-256), an MD5 ETag (one GET
//! per part, since MD5s cannot be combined), or, for objects written by tools that record
//! nothing, the size alone. The check is decided before any byte is fetched because it shapes
//! the ranges.

use super::{Expect, Verified};
use crate::checksum;
use crate::error::{Error, Result};
use crate::store::{ByteRange, ObjectMeta, StoredChecksum};
use crate::transfer::plan::{self, LAYOUT_META};
use crate::transfer::sealed::SEALED_META;

/// The check the object's metadata allows, decided before any byte is fetched because it
/// shapes the ranges.
#[derive(Debug, Clone)]
pub(crate) enum Check {
    Full(u32),
    Composite {
        parts: Vec<ByteRange>,
        expected: String,
    },
    Md5 {
        etag: String,
    },
    CompositeMd5 {
        parts: Vec<ByteRange>,
        etag: String,
    },
    /// The store's other full-object checksum, and the digest taken as the bytes arrived
    /// (only an object read whole, in one GET, has one).
    Stored {
        want: StoredChecksum,
        taken: Option<String>,
    },
    SizeOnly,
}

/// The check of an object read whole in one GET: as [`decide`], except that a full-object
/// checksum of another kind than CRC32C, which needs every byte in order, comes before an MD5
/// ETag and the size alone: it is the writer's own, taken over every byte it wrote.
pub(crate) fn decide_whole(meta: &ObjectMeta) -> Check {
    match (decide(meta), &meta.other_checksum) {
        (c @ (Check::Full(_) | Check::Composite { .. }), _) | (c, None) => c,
        (_, Some(want)) => Check::Stored {
            want: want.clone(),
            taken: None,
        },
    }
}

fn is_md5_hex(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(crate) fn decide(meta: &ObjectMeta) -> Check {
    let sealed = meta
        .metadata
        .get(SEALED_META)
        .and_then(|v| v.parse::<u64>().ok());
    // The layout cuts the plaintext of an encrypted object, the stored bytes of any other.
    let cut = match sealed {
        Some(start) => crate::crypt::Layout::new(start).plain_len(meta.size),
        None => Some(meta.size),
    };
    let layout = meta
        .metadata
        .get(LAYOUT_META)
        .zip(cut)
        .and_then(|(v, len)| plan::decode_layout(v, len))
        .and_then(|(f, g)| match sealed {
            // An encrypted object's layout is of its plaintext: each part as stored.
            Some(start) => crate::transfer::sealed::sealed_parts(meta.size, start, f, g),
            None => Some(plan::layout(meta.size, f, g)),
        });
    if let Some(c) = meta.crc32c.as_deref() {
        match c.split_once('-') {
            None => {
                if let Some(v) = checksum::parse_crc32c_header(c) {
                    return Check::Full(v);
                }
            }
            Some((_, n)) => {
                if let Some(parts) = layout.clone()
                    && n.parse::<usize>().is_ok_and(|n| n == parts.len())
                {
                    return Check::Composite {
                        parts,
                        expected: c.to_string(),
                    };
                }
            }
        }
    }
    match meta.etag.as_deref() {
        Some(e) if is_md5_hex(e) => Check::Md5 {
            etag: e.to_ascii_lowercase(),
        },
        Some(e) => match (e.split_once('-'), layout) {
            (Some((h, n)), Some(parts))
                if is_md5_hex(h) && n.parse::<usize>().is_ok_and(|n| n == parts.len()) =>
            {
                Check::CompositeMd5 {
                    parts,
                    etag: e.to_ascii_lowercase(),
                }
            }
            _ => Check::SizeOnly,
        },
        None => Check::SizeOnly,
    }
}

/// Checks the fetched bytes against the caller's record and the object's own checksum.
pub(super) fn verify(
    key: &str,
    check: &Check,
    expect: Expect,
    crc: u32,
    pieces: &[(usize, ByteRange)],
    n_units: usize,
    info: &[(u32, Option<[u8; 16]>)],
) -> Result<Verified> {
    let mismatch = |expected: String, actual: String| Error::Checksum {
        key: key.into(),
        expected,
        actual,
    };
    if let Some(want) = expect.crc32c
        && want != crc
    {
        return Err(mismatch(
            format!("crc32c {want:08x}"),
            format!("crc32c {crc:08x}"),
        ));
    }
    // Per-unit (part) CRCs, combined from the pieces cut out of each unit.
    let mut unit_crc = vec![0u32; n_units];
    // Per-unit MD5s: a unit fetched whole has it on its piece; a unit cut into pieces (a
    // stream download) has it, computed in order, on one of them.
    let mut unit_md5: Vec<Option<[u8; 16]>> = vec![None; n_units];
    for ((u, r), (c, m)) in pieces.iter().zip(info) {
        unit_crc[*u] = checksum::crc32c_combine(unit_crc[*u], *c, r.len());
        if m.is_some() {
            unit_md5[*u] = *m;
        }
    }
    let verified = match check {
        Check::Full(want) if *want != crc => {
            return Err(mismatch(
                format!("crc32c {want:08x}"),
                format!("crc32c {crc:08x}"),
            ));
        }
        Check::Full(_) => Verified::ObjectCrc32c,
        Check::Composite { expected, .. } => {
            let got = checksum::composite_crc32c(&unit_crc);
            if &got != expected {
                return Err(mismatch(expected.clone(), got));
            }
            Verified::CompositeCrc32c
        }
        Check::Md5 { etag } => {
            let got = unit_md5
                .first()
                .copied()
                .flatten()
                .map(|d| checksum::hex(&d))
                .unwrap_or_else(|| checksum::hex(&checksum::md5(b"")));
            if &got != etag {
                return Err(mismatch(format!("md5 {etag}"), format!("md5 {got}")));
            }
            Verified::Md5
        }
        Check::CompositeMd5 { etag, .. } => {
            let mut cat = Vec::with_capacity(n_units * 16);
            for d in &unit_md5 {
                cat.extend_from_slice(&d.unwrap_or_default());
            }
            let got = format!("{}-{}", checksum::hex(&checksum::md5(&cat)), n_units);
            if &got != etag {
                return Err(mismatch(format!("etag {etag}"), format!("etag {got}")));
            }
            Verified::Md5
        }
        Check::Stored { want, taken } => stored(key, want, taken.as_deref())?,
        Check::SizeOnly => Verified::SizeOnly,
    };
    Ok(if expect.crc32c.is_some() {
        Verified::CallerCrc32c
    } else {
        verified
    })
}

/// The digest taken as the bytes arrived against the store's value of that kind; one never
/// taken (which only a fault of ours could cause) is a mismatch too.
fn stored(key: &str, want: &StoredChecksum, taken: Option<&str>) -> Result<Verified> {
    if taken == Some(want.value.as_str()) {
        return Ok(Verified::ObjectChecksum(want.kind));
    }
    let kind = want.kind.name();
    Err(Error::Checksum {
        key: key.into(),
        expected: format!("{kind} {}", want.value),
        actual: format!("{kind} {}", taken.unwrap_or("not taken")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64, crc: Option<&str>, etag: Option<&str>, layout: Option<&str>) -> ObjectMeta {
        let mut m = ObjectMeta::listed("k", size);
        m.crc32c = crc.map(str::to_string);
        m.etag = etag.map(str::to_string);
        if let Some(l) = layout {
            m.metadata.insert(LAYOUT_META.into(), l.into());
        }
        m
    }

    #[test]
    fn check_prefers_full_crc_then_composite_then_md5() {
        let c = checksum::crc32c_header(5);
        assert!(matches!(
            decide(&meta(10, Some(&c), None, None)),
            Check::Full(5)
        ));
        assert!(matches!(
            decide(&meta(12, Some("AAAAAA==-3"), None, Some("5:0"))),
            Check::Composite { .. }
        ));
        // A composite without our layout cannot be recomputed: fall back to the ETag.
        assert!(matches!(
            decide(&meta(12, Some("AAAAAA==-3"), Some("x-3"), None)),
            Check::SizeOnly
        ));
        assert!(matches!(
            decide(&meta(
                3,
                None,
                Some("D41D8CD98F00B204E9800998ECF8427E"),
                None
            )),
            Check::Md5 { .. }
        ));
        assert!(matches!(
            decide(&meta(
                12,
                None,
                Some("d41d8cd98f00b204e9800998ecf8427e-3"),
                Some("5:0")
            )),
            Check::CompositeMd5 { .. }
        ));
    }

    #[test]
    fn a_whole_read_is_checked_against_another_full_object_checksum_before_an_etag() {
        use crate::store::ChecksumKind;
        let body = b"a WAL segment written by another tool";
        let sha = checksum::stored_digest(ChecksumKind::Sha256, body);
        let with = |crc: Option<&str>, etag: Option<&str>| {
            let mut m = meta(body.len() as u64, crc, etag, None);
            m.other_checksum = Some(StoredChecksum {
                kind: ChecksumKind::Sha256,
                value: sha.clone(),
            });
            m
        };
        let md5 = checksum::hex(&checksum::md5(body));
        // Ranged reads never take it; a whole read prefers it to the ETag...
        assert!(matches!(decide(&with(None, Some(&md5))), Check::Md5 { .. }));
        let Check::Stored { want, taken: None } = decide_whole(&with(None, Some(&md5))) else {
            panic!("not the stored checksum");
        };
        assert_eq!(want.kind, ChecksumKind::Sha256);
        // ...but never to a CRC32C, which the engine takes anyway.
        let c = checksum::crc32c_header(checksum::crc32c(body));
        assert!(matches!(
            decide_whole(&with(Some(&c), None)),
            Check::Full(_)
        ));
        let whole = [(
            0,
            ByteRange {
                start: 0,
                end: body.len() as u64,
            },
        )];
        let info = [(checksum::crc32c(body), None)];
        let crc = checksum::crc32c(body);
        let run = |taken: Option<String>| {
            let check = Check::Stored {
                want: want.clone(),
                taken,
            };
            verify("k", &check, Expect::default(), crc, &whole, 1, &info)
        };
        assert_eq!(
            run(Some(sha.clone())).expect("verified"),
            Verified::ObjectChecksum(ChecksumKind::Sha256)
        );
        // Other bytes, or a digest never taken: refused, naming the kind and both values.
        let other = checksum::stored_digest(ChecksumKind::Sha256, b"other bytes");
        let e = run(Some(other.clone())).expect_err("mismatch").to_string();
        assert!(
            e.contains("sha256") && e.contains(&sha) && e.contains(&other),
            "{e}"
        );
        let e = run(None).expect_err("not taken").to_string();
        assert!(e.contains("not taken"), "{e}");
    }

    /// An encrypted object of 10 000 parts: its layout cuts the plaintext, and its stored
    /// bytes (larger by the header and a tag per chunk) must not make the bound refuse it.
    #[test]
    fn an_encrypted_object_of_ten_thousand_parts_keeps_its_layout() {
        let part = 10u64 << 20;
        let plain = 10_000 * part;
        let start = 200;
        let stored = crate::crypt::Layout::new(start).sealed_len(plain);
        let mut m = meta(
            stored,
            Some("AAAAAA==-10000"),
            None,
            Some(&format!("{part}:0")),
        );
        m.metadata.insert(SEALED_META.into(), start.to_string());
        match decide(&m) {
            Check::Composite { parts, .. } => assert_eq!(parts.len(), 10_000),
            other => panic!("{other:?}"),
        }
    }

    /// A layout from the bucket that would cut a 1 TiB object into a trillion one-byte parts
    /// is not obeyed: no ranges are built, and the object is checked by what else it carries.
    #[test]
    fn a_hostile_layout_builds_no_ranges() {
        // Before, this built 2^40 ranges: the test process ran out of memory.
        let huge = 1u64 << 40;
        assert!(matches!(
            decide(&meta(huge, Some("AAAAAA==-3"), Some("x-3"), Some("1:0"))),
            Check::SizeOnly
        ));
    }
}
