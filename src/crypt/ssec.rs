//! The SSE-C key (`s3.sse: customer`): a 256-bit key the S3 server encrypts each object with and
//! forgets, sent on every request that writes or reads one. The S3 backend needs it in two
//! forms, both base64: the key itself, and the MD5 of the key, which the server uses to check
//! the key arrived intact and which is safe to show (it is echoed in every response).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use zeroize::Zeroizing;

use crate::checksum::{md5, md5_header};
use crate::secret::Secret;

/// The one algorithm SSE-C defines.
pub const SSE_C_ALGORITHM: &str = "AES256";

/// An SSE-C key, ready for the request headers. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SseCustomerKey {
    key_b64: Secret,
    key_md5_b64: String,
}

impl SseCustomerKey {
    /// The key from a key file's bytes: exactly 32 raw bytes (`openssl rand 32`), or the base64
    /// of 32 bytes, surrounding whitespace ignored (`openssl rand -base64 32`, and barman-cloud's
    /// `--sse-customer-key` file format). The error says what is wrong, never what is there.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, &'static str> {
        if bytes.len() == 32 {
            return Ok(Self::from_raw(bytes));
        }
        let text = bytes.trim_ascii();
        let raw = Zeroizing::new(
            STANDARD
                .decode(text)
                .or_else(|_| STANDARD_NO_PAD.decode(text))
                .map_err(|_| {
                    "must hold exactly 32 bytes, or their base64 (44 characters, as openssl rand -base64 32 writes)"
                })?,
        );
        if raw.len() != 32 {
            return Err("is base64 but not of 32 bytes: SSE-C keys are 256 bits");
        }
        Ok(Self::from_raw(&raw))
    }

    fn from_raw(raw: &[u8]) -> Self {
        SseCustomerKey {
            key_b64: Secret::new(STANDARD.encode(raw)),
            key_md5_b64: md5_header(&md5(raw)),
        }
    }

    /// `x-amz-server-side-encryption-customer-algorithm`.
    pub fn algorithm(&self) -> &'static str {
        SSE_C_ALGORITHM
    }

    /// `x-amz-server-side-encryption-customer-key`: base64 of the key (a secret).
    pub fn key_base64(&self) -> &Secret {
        &self.key_b64
    }

    /// `x-amz-server-side-encryption-customer-key-MD5`: base64 of the key's MD5. Not a secret:
    /// the server echoes it, so comparing it tells whether a server honoured SSE-C at all.
    pub fn key_md5_base64(&self) -> &str {
        &self.key_md5_b64
    }
}

impl fmt::Debug for SseCustomerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseCustomerKey")
            .field("key_md5", &self.key_md5_b64)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_base64_key_files_give_the_same_headers() {
        let raw: Vec<u8> = (0u8..32).collect();
        let a = SseCustomerKey::from_file_bytes(&raw).expect("raw");
        let b64 = format!("{}\n", STANDARD.encode(&raw));
        let b = SseCustomerKey::from_file_bytes(b64.as_bytes()).expect("base64");
        assert_eq!(a, b);
        assert_eq!(a.key_base64().expose(), STANDARD.encode(&raw));
        // MD5 of 0x00..0x1f, base64: the value AWS's documentation method gives.
        assert_eq!(a.key_md5_base64(), md5_header(&md5(&raw)));
        assert_eq!(a.algorithm(), "AES256");
        let shown = format!("{a:?}");
        assert!(!shown.contains(a.key_base64().expose()), "{shown}");
    }

    #[test]
    fn keys_of_the_wrong_size_are_refused() {
        for bad in [
            &b""[..],
            &[7u8; 31][..],
            &[7u8; 33][..],
            b"not base64 at all!!",
        ] {
            assert!(SseCustomerKey::from_file_bytes(bad).is_err());
        }
        let short = STANDARD.encode([1u8; 16]);
        let e = SseCustomerKey::from_file_bytes(short.as_bytes()).expect_err("16 bytes");
        assert!(e.contains("32 bytes"), "{e}");
    }
}
