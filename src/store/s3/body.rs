//! Request bodies of puts and parts: the one [`Body`] type (bytes in memory, or a file range
//! streamed from disk) as the SDK's stream, metered by the bandwidth cap.

use aws_sdk_s3::primitives::ByteStream;

use super::S3Store;
use super::errors::causes;
use super::throttle::Metered;
use crate::error::{Error, Result};
use crate::store::{Body, FileRange, Payload};

impl S3Store {
    /// The request body of `body`, metered when a bandwidth cap is set; `op` names the
    /// request in an error about the file.
    pub(super) async fn stream(
        &self,
        body: Body,
        op: &'static str,
        key: &str,
    ) -> Result<ByteStream> {
        Ok(match (body.payload, &self.up) {
            (Payload::Bytes(b), None) => ByteStream::from(b),
            (Payload::Bytes(b), Some(l)) => ByteStream::from_body_1_x(Metered::bytes(b, l.clone())),
            (Payload::File(f), None) => file_stream(&f, op, key).await?,
            (Payload::File(f), Some(l)) => {
                let s = file_stream(&f, op, key).await?;
                ByteStream::from_body_1_x(Metered::stream(s.into_inner(), l.clone()))
            }
        })
    }
}

/// Read buffer of a file body: large enough for few read calls, small enough that parts in
/// flight cost little memory.
const FILE_BUFFER: usize = 256 << 10;

/// A request body that reads a file range from the file itself (a fresh handle, so parallel
/// parts never share an offset), again on each retry.
async fn file_stream(body: &FileRange, op: &'static str, key: &str) -> Result<ByteStream> {
    ByteStream::read_from()
        .path(&body.path)
        .offset(body.range.start)
        .length(aws_sdk_s3::primitives::Length::Exact(body.range.len()))
        .buffer_size(FILE_BUFFER)
        .build()
        .await
        .map_err(|e| {
            Error::Failed(format!(
                "{op} {key}: cannot read {} bytes {}-{}: {}",
                body.path.display(),
                body.range.start,
                body.range.end,
                causes(&e)
            ))
        })
}
