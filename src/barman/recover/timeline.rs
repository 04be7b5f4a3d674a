//! Timeline history, for following PostgreSQL's recovery across timeline switches: which
//! timeline's file PostgreSQL asks for at each segment. A `<TLI>.history` file lists, one line
//! per ancestor, `parentTLI<TAB>switchpoint<TAB>reason`; the file of the newest timeline holds
//! the whole chain. PostgreSQL (recovery_target_timeline = latest) reads a segment from the
//! newest timeline of its chain that had begun by that segment, so the name it will ask for is
//! known in advance: a pure function, unit-tested.

/// One timeline of a chain and the LSN it begins at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// Timeline id.
    pub tli: u32,
    /// First LSN of the timeline (0 for the first one).
    pub lsn: u64,
}

/// Parses an LSN written as `X/Y` (hex).
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// The chain of timeline `tli` from its history file's text, oldest first, each with the LSN it
/// begins at. Lines that do not parse are skipped (comments, blank lines), as PostgreSQL does.
pub fn chain(tli: u32, history: &str) -> Vec<Begin> {
    let mut out = Vec::new();
    let mut begin = 0;
    for line in history.lines() {
        let mut f = line.split_whitespace();
        let (Some(parent), Some(switch)) = (f.next(), f.next()) else {
            continue;
        };
        let (Ok(parent), Some(switch)) = (parent.parse::<u32>(), parse_lsn(switch)) else {
            continue;
        };
        out.push(Begin {
            tli: parent,
            lsn: begin,
        });
        begin = switch;
    }
    out.push(Begin { tli, lsn: begin });
    out
}

/// The timeline PostgreSQL reads segment `segno` from, walking `chain` (oldest first): the
/// newest timeline that had begun by the end of that segment.
pub fn timeline_for(segno: u64, seg_size: u64, chain: &[Begin]) -> Option<u32> {
    let seg_end = segno.saturating_add(1).saturating_mul(seg_size);
    chain.iter().rev().find(|b| b.lsn < seg_end).map(|b| b.tli)
}

/// The WAL file name of segment `segno` on timeline `tli` (`seg_size`: bytes per segment).
pub fn segment_name(tli: u32, segno: u64, seg_size: u64) -> String {
    let per_log = (1u64 << 32) / seg_size;
    format!("{tli:08X}{:08X}{:08X}", segno / per_log, segno % per_log)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    #[test]
    fn lsns_parse_as_postgresql_prints_them() {
        assert_eq!(parse_lsn("0/3000160"), Some(0x3000160));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("x"), None);
    }

    #[test]
    fn a_history_file_gives_the_whole_chain() {
        let h =
            "1\t0/5000098\tno recovery target specified\n\n2\t0/7A00000\tat restore point \"x\"\n";
        assert_eq!(
            chain(3, h),
            vec![
                Begin { tli: 1, lsn: 0 },
                Begin {
                    tli: 2,
                    lsn: 0x5000098
                },
                Begin {
                    tli: 3,
                    lsn: 0x7A00000
                },
            ]
        );
        assert_eq!(chain(1, ""), vec![Begin { tli: 1, lsn: 0 }]);
    }

    #[test]
    fn each_segment_comes_from_the_newest_timeline_begun_by_then() {
        let c = chain(2, "1\t0/5000098\treason\n");
        // Before the switch: timeline 1; the segment holding the switch and later: 2.
        assert_eq!(timeline_for(4, SEG, &c), Some(1));
        assert_eq!(timeline_for(5, SEG, &c), Some(2));
        assert_eq!(timeline_for(9, SEG, &c), Some(2));
        // A switch exactly at a segment boundary: that segment is already the new timeline's.
        let c = chain(2, "1\t0/6000000\treason\n");
        assert_eq!(timeline_for(5, SEG, &c), Some(1));
        assert_eq!(timeline_for(6, SEG, &c), Some(2));
        assert_eq!(segment_name(2, 6, SEG), "000000020000000000000006");
        assert_eq!(segment_name(1, 0x1FF, SEG), "0000000100000001000000FF");
    }
}
