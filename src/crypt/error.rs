//! What can go wrong sealing or opening an object, named after the object it happened to: the
//! header, the identities, each chunk's authentication, the object's length.

use std::fmt;

/// Why an object could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The object does not start with the age magic line: it is not encrypted (or not by age).
    NotAge,
    /// An age file of a version other than v1.
    UnsupportedVersion,
    /// The header does not parse; the reason names the part that is wrong.
    BadHeader(&'static str),
    /// The header did not end within [`super::MAX_HEADER_LEN`] bytes.
    HeaderTooLong,
    /// The object ends inside the header or the payload nonce.
    TruncatedHeader,
    /// The object is not encrypted where every object must be.
    Plaintext {
        /// The setting that requires encryption.
        setting: &'static str,
    },
    /// No identity is configured, so nothing can be opened.
    NoIdentity {
        /// The setting to fill in.
        setting: &'static str,
    },
    /// None of the identities opens the object: it was encrypted to other recipients.
    NoMatchingIdentity {
        /// The setting the identities came from.
        setting: &'static str,
        /// The files they came from, for the message.
        files: String,
    },
    /// The header's MAC does not match: the header was altered.
    HeaderMac,
    /// The payload length is impossible for an age object: it was truncated or extended.
    BadLength {
        /// The encrypted object's length.
        sealed: u64,
    },
    /// The object ends before its final chunk: it was truncated.
    Truncated,
    /// Data follows the final chunk (a swapped, spliced or appended object).
    TrailingData {
        /// The chunk that carried the final flag.
        chunk: u64,
    },
    /// A chunk failed authentication: its bytes were altered, moved or taken from another object.
    ChunkAuth {
        /// The chunk's index (64 KiB of plaintext each).
        chunk: u64,
    },
    /// The caller broke the chunk rules (a non-final run of chunks not made of whole chunks, an
    /// empty final chunk after others): a defect, not bad data.
    Misuse(&'static str),
    /// Wrapping the file key to a recipient failed, or the system random source did.
    Seal(String),
    /// A resume state that does not parse.
    BadState(&'static str),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::NotAge => f.write_str("not an age-encrypted object (no age header)"),
            Fault::UnsupportedVersion => {
                f.write_str("an age file of a version other than v1: not supported")
            }
            Fault::BadHeader(why) => write!(f, "invalid age header: {why}"),
            Fault::HeaderTooLong => write!(
                f,
                "age header longer than {} bytes: refused",
                super::MAX_HEADER_LEN
            ),
            Fault::TruncatedHeader => f.write_str("the object ends inside its age header"),
            Fault::Plaintext { setting } => write!(
                f,
                "the object is not encrypted, and {setting} says every object must be: refused, not restored (someone who can write the bucket may have replaced it; an object written before encryption was turned on needs {setting} turned off)"
            ),
            Fault::NoIdentity { setting } => write!(
                f,
                "the object is encrypted and {setting} is not set: set it to the age identity file whose public key the object was encrypted to"
            ),
            Fault::NoMatchingIdentity { setting, files } => write!(
                f,
                "none of the identities in {setting} ({files}) opens it: the object was encrypted to other recipients; add the matching identity file to {setting} (several are tried, for rotated keys)"
            ),
            Fault::HeaderMac => {
                f.write_str("the age header failed authentication: it was altered; not restored")
            }
            Fault::BadLength { sealed } => write!(
                f,
                "an encrypted length of {sealed} bytes is impossible for an age object: it was truncated or extended; not restored"
            ),
            Fault::Truncated => {
                f.write_str("the encrypted object ends before its final chunk: it was truncated")
            }
            Fault::TrailingData { chunk } => write!(
                f,
                "data follows the final chunk (chunk {chunk}): the object was spliced or appended to; not restored"
            ),
            Fault::ChunkAuth { chunk } => write!(
                f,
                "chunk {chunk} failed authentication: its bytes were altered, moved or come from another object; not restored"
            ),
            Fault::Misuse(why) => write!(f, "internal error sealing or opening: {why}"),
            Fault::Seal(why) => write!(f, "cannot encrypt: {why}"),
            Fault::BadState(why) => write!(f, "unusable encryption resume state: {why}"),
        }
    }
}

/// An encryption failure and the object it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {fault}")]
pub struct CryptError {
    /// The object (key, path or stream) being sealed or opened.
    pub object: String,
    /// What went wrong.
    pub fault: Fault,
}

impl CryptError {
    pub(crate) fn new(object: &str, fault: Fault) -> Self {
        CryptError {
            object: object.to_string(),
            fault,
        }
    }

    /// Whether the configured keys are what is wrong (no identity, or none that fits) rather
    /// than the object: a configuration error (exit 2), not a failed operation.
    pub fn is_key_problem(&self) -> bool {
        matches!(
            self.fault,
            Fault::NoIdentity { .. } | Fault::NoMatchingIdentity { .. }
        )
    }
}
