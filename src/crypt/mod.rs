//! Client-side encryption in the age v1 format (<https://c2sp.org/age>), so that every object
//! opens with the standard `age`/`rage` tools, and the SSE-C key type.
//!
//! The age crate wraps the file key to each X25519 recipient and unwraps it with the identities;
//! the payload's STREAM layer is ours, on the same primitives (ChaCha20-Poly1305, HKDF-SHA256),
//! because the crate only seals and opens in order. Ours seals and opens any run of 64 KiB
//! chunks by index: the parts of a multipart upload seal in parallel and retry alone, and a
//! ranged read opens only the chunks it touches ([`Layout`] maps plaintext ranges to stored
//! bytes). Format compatibility is proven by the C2SP test vectors and the Go `age` tool.
//!
//! A stored object: `header` (recipient stanzas and a MAC under the file key), a 16-byte nonce,
//! then the chunks, each `CHUNK + 16` bytes but the last. The header's length varies with the
//! recipients, so readers parse it ([`preamble_len`]) rather than assume it.

mod error;
mod header;
mod keys;
mod layout;
mod open;
mod seal;
mod ssec;
mod stream;

#[cfg(test)]
mod tests;

pub use error::{CryptError, Fault};
pub use keys::{
    Identities, Recipients, parse_identity_file, parse_recipient, parse_recipients_file,
};
pub use layout::{
    CHUNK, Layout, MIN_PREAMBLE, SEALED_CHUNK, SealedSpan, TAG, chunk_count, could_hold,
};
pub use open::{Opener, StreamOpener, is_sealed, preamble_len};
pub use seal::{Sealer, StreamSealer};
pub use ssec::{SSE_C_ALGORITHM, SseCustomerKey};

/// The longest header accepted from an object. Ours are about 130 bytes a recipient, so this
/// leaves room for hundreds; beyond it a header from the bucket is refused rather than buffered.
pub const MAX_HEADER_LEN: usize = 64 * 1024;

/// The client-side encryption settings: whom new objects are encrypted to, and what opens them.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Every new object is encrypted to all of these.
    pub recipients: Recipients,
    /// Tried in order on each object read (empty on hosts that only write).
    pub identities: Identities,
    /// Every object read must be encrypted, by the setting named here
    /// (`encryption.require_encrypted`, the gpbackup plugin's `age_require_encrypted`): a
    /// plaintext object is refused rather than taken as what an old, unencrypted run wrote, so
    /// nobody who can write the bucket can swap an object for plaintext of their choosing.
    pub require_sealed: Option<&'static str>,
}

/// The setting that makes every object read have to be encrypted.
pub const REQUIRE_SETTING: &str = "encryption.require_encrypted";

impl From<CryptError> for crate::error::Error {
    fn from(e: CryptError) -> Self {
        crate::error::Error::Crypt(e)
    }
}
