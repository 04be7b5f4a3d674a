//! The text of one request-log line in each format.

use std::time::SystemTime;

use super::{LogFormat, Op, Request};

/// A field quoted as RFC 4180 says: in double quotes, inner quotes doubled.
pub(super) fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A field quoted only when it must be (a comma, quote or line break in it).
pub(super) fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        quoted(s)
    } else {
        s.to_string()
    }
}

/// The line for an answered request, or `None` when the format leaves it out.
pub(super) fn line(
    format: LogFormat,
    command: &str,
    now: SystemTime,
    req: &Request<'_>,
    status: u16,
    received: u64,
    took: std::time::Duration,
) -> Option<String> {
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    match format {
        LogFormat::Droplet => {
            if !(200..300).contains(&status) {
                return None;
            }
            let bytes = match req.op {
                Op::Put | Op::UploadPart => req.sent,
                Op::Get => received,
                _ => 0,
            };
            Some(format!(
                "{};{};{bytes}\n",
                since.as_secs(),
                req.op.droplet()
            ))
        }
        LogFormat::Extended => Some(format!(
            "{},{},{},{status},{},{},{received},{},{}\n",
            since.as_millis(),
            field(command),
            req.op.name(),
            req.attempt,
            req.sent,
            quoted(req.key),
            took.as_millis()
        )),
    }
}
