//! Object bodies as they arrive from S3: a stalled or truncated body is a retryable failure
//! naming the key, and the bandwidth cap holds back the next read.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::errors::causes;
use crate::error::{Error, Result, StoreFailure};
use crate::store::BodyReader;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_total() {
        assert_eq!(total_from_content_range("bytes 0-9/100"), Some(100));
        assert_eq!(total_from_content_range("bytes */100"), Some(100));
        assert_eq!(total_from_content_range("garbage"), None);
    }
}
