//! The age v1 header: written for a new object (recipient stanzas and the MAC that binds them to
//! the file key), and read back from an untrusted object with a strict parser whose length is
//! bounded.
//!
//! The framing (magic line, where the stanzas end, the MAC line) is parsed here so that "need
//! more bytes" and "invalid" stay apart when the header arrives from a ranged GET; the stanzas
//! themselves go through the age crate's own strict parser.

use age_core::format::read::age_stanza;
use age_core::format::{FileKey, Stanza};
use age_core::secrecy::ExposeSecret;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::MAX_HEADER_LEN;
use super::error::Fault;

/// Every age file starts with this, whatever its version.
pub(crate) const MAGIC: &[u8] = b"age-encryption.org/";
/// The first line of a v1 file.
const V1_LINE: &[u8] = b"age-encryption.org/v1\n";
/// Base64 characters of the 32-byte MAC.
const MAC_B64_LEN: usize = 43;
/// Stanza bodies are wrapped at this many base64 columns.
const COLUMNS: usize = 64;

/// A header read from an object: its stanzas and what authenticates them.
#[derive(Debug)]
pub(crate) struct Parsed {
    /// The recipient stanzas, in order.
    pub stanzas: Vec<Stanza>,
    mac: [u8; 32],
    /// Bytes the MAC covers: from the start up to and including `---`.
    mac_input_len: usize,
    /// The header's length, up to and including the newline after the MAC.
    pub len: usize,
}

/// The key of the header MAC, derived from the file key (age: HKDF, info `header`).
fn mac_key(file_key: &FileKey) -> Hmac<Sha256> {
    let key = age_core::primitives::hkdf(&[], b"header", file_key.expose_secret());
    <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes keys of any length")
}

/// Writes the header of a new object: the stanzas wrapping `file_key`, then the MAC.
pub(crate) fn build(stanzas: &[Stanza], file_key: &FileKey) -> Vec<u8> {
    let mut h = V1_LINE.to_vec();
    for s in stanzas {
        h.extend_from_slice(b"-> ");
        h.extend_from_slice(s.tag.as_bytes());
        for a in &s.args {
            h.push(b' ');
            h.extend_from_slice(a.as_bytes());
        }
        h.push(b'\n');
        let body = B64.encode(&s.body);
        let mut lines = body.as_bytes().chunks(COLUMNS).peekable();
        while let Some(line) = lines.next() {
            h.extend_from_slice(line);
            h.push(b'\n');
            // The body's last line must be short; a body of whole lines ends with an empty one.
            if lines.peek().is_none() && line.len() == COLUMNS {
                h.push(b'\n');
            }
        }
        if body.is_empty() {
            h.push(b'\n');
        }
    }
    h.extend_from_slice(b"---");
    let mut mac = mac_key(file_key);
    mac.update(&h);
    let tag = mac.finalize().into_bytes();
    h.push(b' ');
    h.extend_from_slice(B64.encode(tag).as_bytes());
    h.push(b'\n');
    h
}

/// More bytes are needed, unless the header is already longer than we accept.
fn need_more(buf: &[u8]) -> Result<Option<Parsed>, Fault> {
    if buf.len() >= MAX_HEADER_LEN {
        Err(Fault::HeaderTooLong)
    } else {
        Ok(None)
    }
}

/// The first line: `Ok(false)` while `buf` is a prefix of it.
fn check_magic(buf: &[u8]) -> Result<bool, Fault> {
    let n = buf.len().min(V1_LINE.len());
    if buf[..n] == V1_LINE[..n] {
        return Ok(buf.len() >= V1_LINE.len());
    }
    let m = buf.len().min(MAGIC.len());
    if buf[..m] != MAGIC[..m] {
        return Err(Fault::NotAge);
    }
    if buf.starts_with(&V1_LINE[..V1_LINE.len() - 1]) {
        return Err(Fault::BadHeader(
            "the first line is not exactly age-encryption.org/v1",
        ));
    }
    Err(Fault::UnsupportedVersion)
}

/// Parses a header from the first bytes of an object. `Ok(None)`: the header does not end
/// within `buf` yet (read more, up to [`MAX_HEADER_LEN`]).
pub(crate) fn parse(buf: &[u8]) -> Result<Option<Parsed>, Fault> {
    if !check_magic(buf)? {
        return need_more(buf);
    }
    // The MAC line is the first line that starts with `---`: stanza lines start with `-> ` and
    // body lines hold base64 only.
    let mut pos = V1_LINE.len();
    while !buf[pos..].starts_with(b"---") {
        match buf[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => pos += i + 1,
            None => return need_more(buf),
        }
        if pos >= MAX_HEADER_LEN {
            return Err(Fault::HeaderTooLong);
        }
    }
    let end = pos + 4 + MAC_B64_LEN + 1;
    if buf.len() < end {
        // Anything but a space after `---` is wrong however many bytes follow.
        if buf.len() > pos + 3 && buf[pos + 3] != b' ' {
            return Err(Fault::BadHeader("the MAC line must be `--- ` and the MAC"));
        }
        return need_more(buf);
    }
    if end > MAX_HEADER_LEN {
        return Err(Fault::HeaderTooLong);
    }
    let line = &buf[pos..end];
    if &line[..4] != b"--- " || line[end - pos - 1] != b'\n' {
        return Err(Fault::BadHeader("the MAC line must be `--- ` and the MAC"));
    }
    let mac: [u8; 32] = B64
        .decode(&line[4..4 + MAC_B64_LEN])
        .ok()
        .and_then(|m| m.try_into().ok())
        .ok_or(Fault::BadHeader(
            "the MAC is not canonical base64 of 32 bytes",
        ))?;
    let stanzas = stanzas(&buf[V1_LINE.len()..pos])?;
    Ok(Some(Parsed {
        stanzas,
        mac,
        mac_input_len: pos + 3,
        len: end,
    }))
}

/// The recipient stanzas between the first line and the MAC line.
fn stanzas(mut region: &[u8]) -> Result<Vec<Stanza>, Fault> {
    let mut out = Vec::new();
    while !region.is_empty() {
        let (rest, s) = age_stanza(region)
            .map_err(|_| Fault::BadHeader("a recipient stanza does not parse"))?;
        out.push(Stanza::from(s));
        region = rest;
    }
    if out.is_empty() {
        return Err(Fault::BadHeader("no recipient stanza"));
    }
    // The age spec: a passphrase (scrypt) stanza must be the only one.
    if out.len() > 1 && out.iter().any(|s| s.tag == "scrypt") {
        return Err(Fault::BadHeader("an scrypt stanza must be the only one"));
    }
    Ok(out)
}

impl Parsed {
    /// Whether the MAC proves the header was written with `file_key`, unchanged. `buf` is the
    /// buffer the header was parsed from.
    pub(crate) fn verify(&self, buf: &[u8], file_key: &FileKey) -> bool {
        let mut mac = mac_key(file_key);
        mac.update(&buf[..self.mac_input_len]);
        mac.verify_slice(&self.mac).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FileKey {
        FileKey::init_with_mut(|k| k.copy_from_slice(b"YELLOW SUBMARINE"))
    }

    fn stanza(body_len: usize) -> Stanza {
        Stanza {
            tag: "X25519".into(),
            args: vec!["CJM36AHmTbdHSuOQL+NESqyVQE75f2e610iRdLPEN20".into()],
            body: vec![7; body_len],
        }
    }

    #[test]
    fn built_headers_parse_back_at_every_body_length() {
        // 0, short, exactly one line (48 bytes = 64 columns), more than one line.
        for body in [0, 1, 32, 47, 48, 49, 96, 100] {
            let h = build(&[stanza(body), stanza(32)], &key());
            let p = parse(&h).expect("parses").expect("complete");
            assert_eq!(p.len, h.len());
            assert_eq!(p.stanzas, vec![stanza(body), stanza(32)], "body {body}");
            assert!(p.verify(&h, &key()));
            let other = FileKey::init_with_mut(|k| k.copy_from_slice(b"yellow submarine"));
            assert!(!p.verify(&h, &other));
        }
    }

    #[test]
    fn every_prefix_of_a_header_asks_for_more() {
        let h = build(&[stanza(32)], &key());
        for n in 0..h.len() {
            assert!(parse(&h[..n]).expect("prefix").is_none(), "prefix {n}");
        }
    }

    #[test]
    fn foreign_and_broken_headers_are_told_apart() {
        assert_eq!(parse(b"PGDMP").err(), Some(Fault::NotAge));
        assert_eq!(parse(b"\x1f\x8b\x08").err(), Some(Fault::NotAge));
        assert_eq!(
            parse(b"age-encryption.org/v2\n").err(),
            Some(Fault::UnsupportedVersion)
        );
        assert!(matches!(
            parse(b"age-encryption.org/v1\r\n").err(),
            Some(Fault::BadHeader(_))
        ));
        let mut h = build(&[stanza(32)], &key());
        let at = h.len() - 45;
        h[at] = b'x'; // `---x` instead of `--- `
        assert!(matches!(parse(&h).err(), Some(Fault::BadHeader(_))));
    }

    #[test]
    fn an_endless_header_is_refused_at_the_limit() {
        let mut h = V1_LINE.to_vec();
        while h.len() < MAX_HEADER_LEN + 10 {
            h.extend_from_slice(b"-> X25519 AAAA\n");
        }
        assert_eq!(parse(&h).err(), Some(Fault::HeaderTooLong));
    }
}
