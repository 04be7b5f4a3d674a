//! WAL file names: what each kind is, where it lives (`wals/<hash>/` or `wals/`), how segments
//! order. (Which compression a stored file uses is [`crate::codec`]'s business.)

use std::cmp::Ordering;

/// The kinds of file Barman keeps in `wals/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalKind {
    /// A full segment, `TTTTTTTTXXXXXXXXYYYYYYYY`.
    Segment,
    /// A closed partial segment, `<segment>.partial`.
    Partial,
    /// A backup label, `<segment>.<8 hex>.backup`.
    BackupLabel,
    /// A timeline history file, `<8 hex>.history` (directly in `wals/`).
    History,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Classifies a file name; `None` for anything Barman's archive does not hold as WAL (temp
/// files, `.uncompressed`, the catalogue, stray files).
pub fn classify(name: &str) -> Option<WalKind> {
    if is_hex(name, 24) {
        return Some(WalKind::Segment);
    }
    if let Some(seg) = name.strip_suffix(".partial") {
        return is_hex(seg, 24).then_some(WalKind::Partial);
    }
    if let Some(rest) = name.strip_suffix(".backup") {
        let (seg, off) = rest.split_once('.')?;
        return (is_hex(seg, 24) && is_hex(off, 8)).then_some(WalKind::BackupLabel);
    }
    if let Some(tli) = name.strip_suffix(".history") {
        return is_hex(tli, 8).then_some(WalKind::History);
    }
    None
}

/// The path of a WAL file relative to `wals/`: `<first 16 hex>/<name>`, or `<name>` for history.
pub fn relative_path(name: &str) -> Option<String> {
    match classify(name)? {
        WalKind::History => Some(name.to_string()),
        _ => Some(format!("{}/{name}", &name[..16])),
    }
}

/// Timeline of a WAL file name.
pub fn timeline(name: &str) -> Option<u32> {
    u32::from_str_radix(name.get(..8)?, 16).ok()
}

/// The segment number of a segment-based name (log × segments-per-log + seg), given the number
/// of segments per 4 GiB log file (256 for 16 MiB segments).
pub fn segment_number(name: &str, per_log: u64) -> Option<u64> {
    if classify(name)? == WalKind::History {
        return None;
    }
    let log = u64::from_str_radix(name.get(8..16)?, 16).ok()?;
    let seg = u64::from_str_radix(name.get(16..24)?, 16).ok()?;
    Some(log * per_log + seg)
}

/// Orders two segment-based names by (timeline, position): the archive's natural order.
pub fn compare(a: &str, b: &str) -> Ordering {
    a.get(..24).cmp(&b.get(..24))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_barman_archive_names() {
        assert_eq!(classify("000000010000000000000005"), Some(WalKind::Segment));
        assert_eq!(
            classify("000000010000000000000005.partial"),
            Some(WalKind::Partial)
        );
        assert_eq!(
            classify("000000010000000000000005.00000028.backup"),
            Some(WalKind::BackupLabel)
        );
        assert_eq!(classify("00000002.history"), Some(WalKind::History));
        for skip in [
            "000000010000000000000005.tmp",
            "000000010000000000000005.uncompressed",
            "xlog.db",
            "pg-xlog.db",
            "00000001000000000000000G",
            "0000000100000000000000051",
        ] {
            assert_eq!(classify(skip), None, "{skip}");
        }
        assert_eq!(
            relative_path("000000010000000000000005").as_deref(),
            Some("0000000100000000/000000010000000000000005")
        );
        assert_eq!(
            relative_path("00000002.history").as_deref(),
            Some("00000002.history")
        );
    }

    #[test]
    fn positions() {
        assert_eq!(segment_number("0000000100000001000000FF", 256), Some(511));
        assert_eq!(timeline("0000000A0000000000000001"), Some(10));
    }
}
