//! Permission bits from the bucket are data, not orders: whoever can write the bucket could
//! otherwise plant a setuid copy of a shell or a world-writable data directory in a restore
//! run as root. PostgreSQL creates its files 0600 (0640 with group access) and its directories
//! 0700 (0750): anything beyond that is narrowed to it and counted, so the operator hears of it
//! in one line.

/// The widest mode a restored file or directory gets: owner everything, group read (and
/// search), nobody else anything; no setuid, setgid or sticky bit.
pub const WIDEST: u32 = 0o750;

/// `mode` narrowed to [`WIDEST`], and whether that changed it.
pub fn narrow(mode: u32) -> (u32, bool) {
    let asked = mode & 0o7777;
    let given = asked & WIDEST;
    (given, given != asked)
}

/// The info line for `n` narrowed modes (none when `n` is 0).
pub fn report(what: &str, n: usize) {
    if n > 0 {
        tracing::info!(
            "{what}: {n} mode(s) from the bucket narrowed to at most 0750 (no setuid, setgid or sticky bit, nothing for other users, nothing group-writable): PostgreSQL never uses wider ones"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (asked, given, narrowed).
    #[test]
    fn modes_are_narrowed_to_what_postgresql_uses() {
        let cases = [
            (0o600, 0o600, false),
            (0o640, 0o640, false),
            (0o700, 0o700, false),
            (0o750, 0o750, false),
            (0o4755, 0o750, true),
            (0o2755, 0o750, true),
            (0o1777, 0o750, true),
            (0o777, 0o750, true),
            (0o666, 0o640, true),
            (0o620, 0o600, true),
            (0o644, 0o640, true),
            (0o100600, 0o600, false),
        ];
        for (asked, given, narrowed) in cases {
            assert_eq!(narrow(asked), (given, narrowed), "{asked:o}");
        }
    }
}
