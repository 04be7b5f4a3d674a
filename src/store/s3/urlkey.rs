//! Keys in a listing answered with `encoding-type=url`. S3 lists keys in XML 1.0, which cannot
//! carry most control characters: one object whose key holds an ESC would make the listing of
//! its whole prefix unreadable, so whoever can write one object could stop every listing of a
//! server's backups. Asking for URL-encoded keys moves such a key through the XML as `%1B`;
//! here it is decoded back to the key it is.
//!
//! Only a response that says `EncodingType: url` is decoded: a server that ignores the request
//! sends the keys as they are, and decoding those would turn a key holding `%41` into another
//! key. The encoding is `application/x-www-form-urlencoded` as S3 writes it (a space may come as
//! `+`, a literal `+` always as `%2B`), the reading the AWS SDKs apply.

use crate::error::{Error, Result};

/// The key (or prefix, or marker) `raw` as the server stores it: percent-decoded when the
/// response said its keys are URL-encoded, as is otherwise. A malformed escape or a decoded key
/// that is not UTF-8 is refused, naming the operation: the listing cannot be trusted.
pub(super) fn decode(op: &str, raw: &str, url_encoded: bool) -> Result<String> {
    if !url_encoded {
        return Ok(raw.to_string());
    }
    let bad = |why: &str| {
        Error::Failed(format!(
            "{op}: the server's URL-encoded key '{}' {why}; the listing cannot be read",
            crate::store::printable_key(raw)
        ))
    };
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .ok_or_else(|| bad("ends inside an escape"))?;
                let hi = hex_digit(hex[0]).ok_or_else(|| bad("has a malformed escape"))?;
                let lo = hex_digit(hex[1]).ok_or_else(|| bad("has a malformed escape"))?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad("is not UTF-8 once decoded"))
}

/// Whether `key` can be named in an XML 1.0 request body (DeleteObjects) as it is: no control
/// character (most are not XML characters at all; a CR would be read back as a LF).
pub(super) fn xml_can_carry(key: &str) -> bool {
    !key.chars()
        .any(|c| c.is_control() || c == '\u{fffe}' || c == '\u{ffff}')
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn url_encoded_keys_are_decoded_to_the_stored_key() {
        let cases = [
            (
                "wal/000000010000000000000001",
                "wal/000000010000000000000001",
            ),
            ("k/a%1B%5B2J", "k/a\x1b[2J"),
            ("k/line%0Aforged%01", "k/line\nforged\x01"),
            ("k/a+b%2Bc%20d", "k/a b+c d"),
            ("k/%c3%a9t%C3%A9", "k/été"),
            ("k/100%25", "k/100%"),
            ("", ""),
        ];
        for (raw, key) in cases {
            assert_eq!(decode("ListObjectsV2", raw, true).expect(raw), key, "{raw}");
        }
    }

    #[test]
    fn keys_with_control_characters_are_not_put_in_xml() {
        for key in ["k/plain", "k/été", "k/a b+c", "k/back\\slash"] {
            assert!(super::xml_can_carry(key), "{key}");
        }
        for key in [
            "k/\x1b[2J",
            "k/a\nb",
            "k/a\rb",
            "k/\x01",
            "k/\x7f",
            "k/\u{ffff}",
        ] {
            assert!(!super::xml_can_carry(key), "{key:?}");
        }
    }

    #[test]
    fn keys_of_a_server_that_did_not_encode_are_taken_as_they_are() {
        for raw in ["k/a%41", "k/a+b", "k/100%", "k/%zz"] {
            assert_eq!(decode("ListObjectsV2", raw, false).expect(raw), raw);
        }
    }

    #[test]
    fn a_malformed_encoding_is_refused_naming_the_operation() {
        for raw in ["k/100%", "k/%2", "k/%zz", "k/%G0", "k/%ff%fe"] {
            let err = decode("ListMultipartUploads", raw, true)
                .expect_err(raw)
                .to_string();
            assert!(err.starts_with("ListMultipartUploads: "), "{err}");
            assert!(err.contains("cannot be read"), "{err}");
        }
    }
}
