//! Parsing of human size and duration strings used in configuration and flags.
//!
//! One rule for sizes, stated in the README: every unit is binary, as in the aws-cli
//! configuration BarmanS3 users come from (`K` = `KB` = `KiB` = 1024 bytes, `M` = `MB` = `MiB`
//! = 1024², and so on); a bare number is bytes. gpbackup's own size strings have stricter rules
//! and live in `gpplugin::config`.

use std::time::Duration;

const UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("k", 1 << 10),
    ("kb", 1 << 10),
    ("kib", 1 << 10),
    ("m", 1 << 20),
    ("mb", 1 << 20),
    ("mib", 1 << 20),
    ("g", 1 << 30),
    ("gb", 1 << 30),
    ("gib", 1 << 30),
    ("t", 1 << 40),
    ("tb", 1 << 40),
    ("tib", 1 << 40),
];

/// Splits `"12.5 MiB"` into its number and its lower-cased unit.
fn split_number(s: &str) -> Option<(f64, String)> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1
    {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    Some((value, unit.trim().to_ascii_lowercase()))
}

/// Parses a size such as `128MiB`, `500MB`, `5M`, `1.5G` or `4096` into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid size {s:?}: use a number with an optional binary unit, e.g. 5M, 128MiB, 1GB"
        )
    };
    let (value, unit) = split_number(s).ok_or_else(bad)?;
    let mult = UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, m)| *m)
        .ok_or_else(bad)?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// Parses a duration such as `500ms`, `30s`, `15m`, `2h`, `30d`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: use a number with ms, s, m, h or d, e.g. 30s");
    let (value, unit) = split_number(s).ok_or_else(bad)?;
    let secs = match unit.as_str() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// A duration for messages: `7d`, `36h`, `90s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 86400 && s.is_multiple_of(86400) {
        format!("{}d", s / 86400)
    } else if s >= 3600 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// A size as the config file writes it, exactly: `64MiB`, `5GiB`, or bytes when no binary unit
/// divides it (so it parses back to the same number).
pub fn human_bytes_exact(n: u64) -> String {
    for (unit, size) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
    }
    n.to_string()
}

pub fn human_bytes(n: u64) -> String {
    const NAMES: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < NAMES.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", NAMES[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_binary_whatever_the_spelling() {
        assert_eq!(parse_size("5M"), Ok(5 << 20));
        assert_eq!(parse_size("5MB"), Ok(5 << 20));
        assert_eq!(parse_size("128MiB"), Ok(128 << 20));
        assert_eq!(parse_size("500mb"), Ok(500 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size(" 8 KiB "), Ok(8192));
    }

    #[test]
    fn bad_sizes_name_the_value() {
        for s in ["", "MB", "5X", "-5M", "1..5M", "5.M", ".5M", "5 M B"] {
            let e = parse_size(s).expect_err(s);
            assert!(e.contains("invalid size"), "{e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("10y").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn human_bytes_readable() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
    }
}
