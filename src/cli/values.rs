//! Parsers of the option values clap cannot read by itself (durations, times).

use std::time::Duration;

pub(super) fn parse_age(s: &str) -> std::result::Result<Duration, String> {
    crate::units::parse_duration(s)
}

/// `--as-of TIME`: an RFC 3339 date and time with its offset (`Z` for UTC).
pub(super) fn parse_as_of(s: &str) -> std::result::Result<std::time::SystemTime, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(std::time::SystemTime::from)
        .map_err(|e| format!("{e}: use RFC 3339 with an offset, e.g. 2026-11-30T12:00:00Z"))
}

/// `--poll`: each look lists the bucket's newest WAL directories, so not in a busy loop.
pub(super) fn parse_poll(s: &str) -> std::result::Result<Duration, String> {
    match crate::units::parse_duration(s)? {
        d if d < Duration::from_secs(1) => Err("must be at least 1s".into()),
        d => Ok(d),
    }
}
