//! `s3.request_checksum: auto`: whether the store checks CRC32C checksum headers, found out once
//! per store on the first upload and cached in the state directory. The probe sends one small
//! object with a wrong CRC32C (a store that verifies refuses it) and then with the right one (a
//! store that understands the header accepts it); a store that accepts the wrong value, or
//! refuses the header, gets Content-MD5 instead. End-to-end verification against our manifests
//! is the same either way.

use std::path::PathBuf;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Transfer;
use crate::checksum;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::store::{Body, Integrity, PutOptions};
use crate::transfer::ChecksumMode;

/// Where the probe runs and its answer is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksumProbe {
    /// The cache file for this store.
    pub cache: PathBuf,
    /// The key the probe object is written to (and deleted from).
    pub key: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Cached {
    crc32c_verified: bool,
    probed_at: u64,
}

/// What the probe's two PUTs say: (wrong CRC32C accepted, right CRC32C accepted). A store that
/// verifies refuses the first and takes the second; anything else gets Content-MD5.
pub fn decide(wrong_accepted: bool, right_accepted: bool) -> ChecksumMode {
    if !wrong_accepted && right_accepted {
        ChecksumMode::WhenSupported
    } else {
        ChecksumMode::WhenRequired
    }
}

/// Whether a failed probe PUT is the store's answer about the header (a 4xx refusal other
/// than an access problem) rather than a failure to ask.
fn refused(e: &Error) -> bool {
    matches!(e, Error::Store(f) if !f.retryable && f.status.is_some_and(|s| (400..500).contains(&s)))
        && !e.is_access_problem()
}

impl Transfer {
    /// The cached answer for this store, or the probe's (then cached).
    pub(crate) async fn probe_checksums(&self, p: &ChecksumProbe) -> Result<ChecksumMode> {
        if let Some(c) = std::fs::read(&p.cache)
            .ok()
            .and_then(|b| serde_json::from_slice::<Cached>(&b).ok())
        {
            return Ok(decide(!c.crc32c_verified, c.crc32c_verified));
        }
        let body = Bytes::from_static(b"barmans3 checksum probe");
        let crc = checksum::crc32c(&body);
        let opts = PutOptions::default();
        let put = |c: u32| {
            let (body, opts) = (body.clone(), &opts);
            async move {
                match self
                    .retry
                    .run(&self.stats, &self.cancel, || {
                        let body = Body::bytes(body.clone(), Integrity::Crc32c(c));
                        self.store.put(&p.key, body, opts)
                    })
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(e) if refused(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        };
        let wrong = put(!crc).await?;
        let right = put(crc).await?;
        if wrong || right {
            self.delete_keys(std::slice::from_ref(&p.key)).await?;
        }
        let mode = decide(wrong, right);
        let cached = Cached {
            crc32c_verified: mode == ChecksumMode::WhenSupported,
            probed_at: crate::clock::now(),
        };
        if let Some(dir) = p.cache.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match serde_json::to_vec(&cached) {
            Ok(json) => {
                if let Err(e) = fsutil::write_atomic(&p.cache, &json) {
                    tracing::debug!("cannot cache the checksum probe: {}", e.one_line());
                }
            }
            Err(e) => tracing::debug!("cannot encode the checksum probe: {e}"),
        }
        if mode == ChecksumMode::WhenRequired {
            tracing::info!(
                "{} does not verify CRC32C checksum headers: uploads carry Content-MD5",
                self.describe()
            );
        }
        Ok(mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_store_that_refuses_a_wrong_crc32c_and_takes_the_right_one_gets_crc32c() {
        assert_eq!(decide(false, true), ChecksumMode::WhenSupported);
        assert_eq!(
            decide(true, true),
            ChecksumMode::WhenRequired,
            "ignores the header"
        );
        assert_eq!(
            decide(false, false),
            ChecksumMode::WhenRequired,
            "refuses the header"
        );
        assert_eq!(decide(true, false), ChecksumMode::WhenRequired);
    }
}
