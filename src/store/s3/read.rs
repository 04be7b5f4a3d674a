//! Object bodies as they arrive from S3: a stalled or truncated body is a retryable failure
//! naming the key, and the bandwidth cap holds back the next read. Also what a GET's or HEAD's
//! headers say of the body: its total size and the stored checksums.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumType;
use bytes::Bytes;

use super::errors::causes;
use crate::error::{Error, Result, StoreFailure};
use crate::store::{BodyReader, ChecksumKind, StoredChecksum};

#[derive(Debug)]
pub(super) struct S3Body {
    pub(super) stream: ByteStream,
    pub(super) limiter: Option<std::sync::Arc<super::throttle::Limiter>>,
    pub(super) key: String,
    pub(super) endpoint: String,
    pub(super) read_timeout: Duration,
}

#[async_trait]
impl BodyReader for S3Body {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        let lost = |message: String| {
            Error::Store(StoreFailure {
                op: "GetObject",
                key: self.key.clone(),
                status: None,
                code: None,
                message,
                retryable: true,
            })
        };
        match tokio::time::timeout(self.read_timeout, self.stream.next()).await {
            Err(_) => Err(lost(format!(
                "body stalled for {:?} from {}",
                self.read_timeout, self.endpoint
            ))),
            Ok(None) => Ok(None),
            Ok(Some(Ok(b))) => {
                // Holding back the next read slows the sender down through TCP.
                if let Some(l) = &self.limiter {
                    l.take(b.len()).await;
                }
                Ok(Some(b))
            }
            Ok(Some(Err(e))) => Err(lost(format!(
                "body truncated from {}: {}",
                self.endpoint,
                causes(&e)
            ))),
        }
    }
}

/// Parses the total size out of `Content-Range: bytes a-b/total`.
pub(super) fn total_from_content_range(cr: &str) -> Option<u64> {
    cr.rsplit_once('/').and_then(|(_, t)| t.parse().ok())
}

/// The first of the full-object checksums other than CRC32C that the server sent, in
/// [`ChecksumKind`] order (CRC32, CRC64NVME, SHA-1, SHA-256; S3 keeps one algorithm per object,
/// so there is rarely a choice). A composite of parts (`…-N`, or
/// an object whose checksum type says so) is not a checksum of the bytes a read receives: it
/// is left out, as the size and ETag rules decide such an object.
pub(super) fn other_checksum(
    values: [Option<&str>; 4],
    kind: Option<&ChecksumType>,
) -> Option<StoredChecksum> {
    if kind == Some(&ChecksumType::Composite) {
        return None;
    }
    let kinds = [
        ChecksumKind::Crc32,
        ChecksumKind::Crc64Nvme,
        ChecksumKind::Sha1,
        ChecksumKind::Sha256,
    ];
    kinds.into_iter().zip(values).find_map(|(kind, v)| {
        v.filter(|v| !v.is_empty() && !v.contains('-'))
            .map(|v| StoredChecksum {
                kind,
                value: v.to_string(),
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_full_object_checksum_is_kept_and_composites_never() {
        let got = other_checksum([None, Some("AAAAAAAAAAA="), Some("x"), None], None);
        assert_eq!(
            got,
            Some(StoredChecksum {
                kind: ChecksumKind::Crc64Nvme,
                value: "AAAAAAAAAAA=".into()
            })
        );
        let crc32 = other_checksum(
            [Some("AAAAAA=="), None, None, Some("y")],
            Some(&ChecksumType::FullObject),
        );
        assert_eq!(crc32.map(|c| c.kind), Some(ChecksumKind::Crc32));
        // A composite: by its suffix, or by the type the server gives.
        assert_eq!(
            other_checksum([Some("AAAAAA==-3"), None, None, None], None),
            None
        );
        let typed = other_checksum(
            [Some("AAAAAA=="), None, None, None],
            Some(&ChecksumType::Composite),
        );
        assert_eq!(typed, None);
        assert_eq!(other_checksum([None, None, None, None], None), None);
    }

    #[test]
    fn content_range_total() {
        assert_eq!(total_from_content_range("bytes 0-9/100"), Some(100));
        assert_eq!(total_from_content_range("bytes */100"), Some(100));
        assert_eq!(total_from_content_range("garbage"), None);
    }
}
