//! The resume state of a multipart upload and where callers keep it between runs: what a
//! killed or interrupted run leaves so the next one sends only the missing parts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::store::{PartReceipt, Upload};

/// The state of a resumable multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeState {
    /// Object key.
    pub key: String,
    /// Multipart upload id.
    pub upload_id: String,
    /// Source file size.
    pub size: u64,
    /// Source file mtime (ns since the epoch), so a changed file is not resumed.
    pub mtime_ns: i128,
    /// Part size used.
    pub part_size: u64,
    /// Completed parts.
    pub parts: Vec<SentPart>,
    /// An encrypted upload's header and file key ([`crate::crypt::Sealer::resume_state`]): the
    /// remaining parts must be sealed under the key the first part's header wraps. The journal
    /// is written mode 600 and removed when the upload ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,
}

impl ResumeState {
    /// The upload this state resumes.
    pub fn upload(&self) -> Upload {
        Upload::new(&self.key, &self.upload_id)
    }
}

/// A part the server accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentPart {
    /// 1-based part number.
    pub number: u32,
    /// ETag the server gave it.
    pub etag: String,
    /// CRC32C of the bytes sent.
    pub crc32c: u32,
    /// Bytes.
    pub size: u64,
    /// CRC32C of the plaintext of an encrypted part (`crc32c` is of the bytes sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_crc32c: Option<u32>,
}

impl SentPart {
    pub(super) fn from_receipt(r: PartReceipt, crc32c: u32) -> Self {
        SentPart {
            number: r.part_number,
            etag: r.etag,
            crc32c,
            size: r.size,
            plain_crc32c: None,
        }
    }
}

/// Where a caller keeps the resume state of one upload.
pub trait UploadJournal: Send + Sync + std::fmt::Debug {
    /// The recorded state, if any.
    fn load(&self) -> Option<ResumeState>;
    /// Records the state (after the upload is created and after each part).
    fn save(&self, state: &ResumeState) -> Result<()>;
    /// Forgets the state (the upload completed or was aborted).
    fn clear(&self) -> Result<()>;
}

/// A journal in a JSON file, written atomically.
#[derive(Debug, Clone)]
pub struct FileJournal(pub PathBuf);

impl UploadJournal for FileJournal {
    fn load(&self) -> Option<ResumeState> {
        std::fs::read(&self.0)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }
    fn save(&self, state: &ResumeState) -> Result<()> {
        let json = serde_json::to_vec(state).map_err(|e| Error::Failed(e.to_string()))?;
        fsutil::write_atomic(&self.0, &json)
    }
    fn clear(&self) -> Result<()> {
        match std::fs::remove_file(&self.0) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("remove {}", self.0.display()), e))
            }
            _ => Ok(()),
        }
    }
}
