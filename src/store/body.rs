//! The one request body type of puts and parts: bytes in memory or a range of a local file,
//! with the integrity value the server checks them against.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::{ByteRange, Integrity};

/// What a body's bytes are.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Bytes in memory.
    Bytes(Bytes),
    /// A range of a local file, sent from the file in small buffers, never held whole in
    /// memory.
    File(FileRange),
}

/// A request body and its integrity value. The caller computed the value from the same bytes
/// just before; a file that changed since is refused by the server, not stored.
#[derive(Debug, Clone)]
pub struct Body {
    /// The bytes.
    pub payload: Payload,
    /// What the server checks them against.
    pub integrity: Integrity,
}

impl Body {
    /// A body of bytes in memory.
    pub fn bytes(b: Bytes, integrity: Integrity) -> Self {
        Body {
            payload: Payload::Bytes(b),
            integrity,
        }
    }

    /// A body read from a file range.
    pub fn file(range: FileRange, integrity: Integrity) -> Self {
        Body {
            payload: Payload::File(range),
            integrity,
        }
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        match &self.payload {
            Payload::Bytes(b) => b.len() as u64,
            Payload::File(f) => f.range.len(),
        }
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A byte range of a local file used as a request body.
#[derive(Debug, Clone)]
pub struct FileRange {
    /// The file (opened again by backends that stream it, so parallel parts never share a
    /// file offset).
    pub path: PathBuf,
    /// The open file, for positioned reads.
    pub file: Arc<std::fs::File>,
    /// Which bytes.
    pub range: ByteRange,
}
