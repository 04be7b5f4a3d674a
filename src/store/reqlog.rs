//! `--request-log`: one CSV line per store request, for cost accounting. (Being built.)

use std::path::PathBuf;

use super::SharedStore;

/// Line format of the request log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Bareos droplet's pricing lines: `unix_time;TYPE;SUBTYPE;bytes`.
    Droplet,
    /// CSV with a header: time, command, operation, status, attempt, bytes, key.
    Extended,
}

/// Where and how to log requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLog {
    /// The file lines are appended to.
    pub path: PathBuf,
    /// Line format.
    pub format: LogFormat,
}

/// Wraps `store` so that every request is logged, when a log is asked for.
pub fn wrap(store: SharedStore, log: Option<&RequestLog>) -> SharedStore {
    let _ = log;
    store
}
