//! The drill's decisions, as pure functions over plain data: which backup it restores, which
//! settings of the restored configuration could reach outside the scratch copy (and are
//! commented out), where the binaries of the backup's major version are looked for, how much
//! free space is enough, whether replay stopped before the end of the archive, and what in
//! PostgreSQL's log names the failure.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::barman::ship::fullsync::RemoteBackup;
use crate::barman::wal::{self, WalKind};
use crate::error::{Error, Result};

/// The prefix of a line the drill commented out.
pub const MARK: &str = "#barmans3-drill# ";

/// The backup to restore: `wanted`, which must be complete and DONE, or the newest such one.
pub fn pick_backup<'a>(list: &'a [RemoteBackup], wanted: Option<&str>) -> Result<&'a RemoteBackup> {
    let usable = |b: &RemoteBackup| b.complete && b.status == "DONE";
    match wanted {
        Some(id) => {
            let b = list.iter().find(|b| b.id == id).ok_or_else(|| {
                Error::Failed(format!("backup {id} is not in the bucket; see base-ls"))
            })?;
            if usable(b) {
                Ok(b)
            } else {
                Err(Error::Failed(format!(
                    "backup {id} is not complete in the bucket (status {:?}, complete {}); see base-ls",
                    b.status, b.complete
                )))
            }
        }
        None => list
            .iter()
            .filter(|b| usable(b))
            .max_by(|a, b| a.id.cmp(&b.id))
            .ok_or_else(|| {
                Error::Failed(
                    "no complete DONE backup in the bucket: nothing to drill (see base-ls)".into(),
                )
            }),
    }
}

/// Settings whose value leads out of the scratch copy: to another server (replication,
/// archiving), to files of the source host, or to a standby a commit would wait for.
const OUTSIDE: &[&str] = &[
    "archive_command",
    "archive_library",
    "primary_conninfo",
    "primary_slot_name",
    "synchronous_standby_names",
    "hba_file",
    "ident_file",
    "data_directory",
    "config_file",
    "external_pid_file",
    "ssl",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_ca_file",
    "ssl_crl_file",
    "ssl_crl_dir",
    "ssl_dh_params_file",
    "ssl_passphrase_command",
    "log_directory",
    "stats_temp_directory",
];

/// Settings that list libraries: kept only with the libraries installed here.
const LIBRARIES: &[&str] = &[
    "shared_preload_libraries",
    "session_preload_libraries",
    "local_preload_libraries",
];

/// Directives that read another file.
const INCLUDES: &[&str] = &["include", "include_if_exists", "include_dir"];

/// A setting line's key (lower case) and value (unquoted, without a trailing comment); `None`
/// for blank and comment lines.
fn setting(line: &str) -> Option<(String, String)> {
    let t = line.trim_start();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    let end = t
        .find(|c: char| c == '=' || c.is_whitespace())
        .unwrap_or(t.len());
    let key = t[..end].to_ascii_lowercase();
    let rest = t[end..].trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim();
    let value = if let Some(q) = rest.strip_prefix('\'') {
        q.split('\'').next().unwrap_or("").to_string()
    } else {
        rest.split('#').next().unwrap_or("").trim().to_string()
    };
    Some((key, value))
}

/// The configuration text with every setting that could reach outside commented out (marked
/// [`MARK`]), and the lines commented. Libraries not installed here are dropped from their
/// list (the rest is kept on a new line); includes of absolute paths are commented.
pub fn neutralise(text: &str, installed: &dyn Fn(&str) -> bool) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut gone = Vec::new();
    for line in text.lines() {
        let mut replacement = None;
        let comment = match setting(line) {
            Some((k, _)) if OUTSIDE.contains(&k.as_str()) => true,
            Some((k, v)) if INCLUDES.contains(&k.as_str()) => Path::new(&v).is_absolute(),
            Some((k, v)) if LIBRARIES.contains(&k.as_str()) => {
                let libs: Vec<&str> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                let kept: Vec<&str> = libs.iter().copied().filter(|l| installed(l)).collect();
                if kept.len() != libs.len() && !kept.is_empty() {
                    replacement = Some(format!("{k} = '{}'", kept.join(",")));
                }
                kept.len() != libs.len()
            }
            _ => false,
        };
        if comment {
            out.push_str(MARK);
            gone.push(line.trim().to_string());
        }
        out.push_str(line);
        out.push('\n');
        if let Some(r) = replacement {
            out.push_str(&r);
            out.push('\n');
        }
    }
    (out, gone)
}

/// Where the binaries of PostgreSQL `major` are looked for, in order: `barman.pg_bindir`, the
/// directory of `barman.pg_combinebackup` (as base-restore finds it), the distributions' places
/// for that major version, then PATH. The caller takes the first whose `postgres` reports
/// that major version.
pub fn bindir_candidates(
    configured: Option<&Path>,
    combine: Option<&Path>,
    major: Option<u32>,
    path: Option<&OsStr>,
) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    out.extend(configured.map(Path::to_path_buf));
    out.extend(combine.and_then(Path::parent).map(Path::to_path_buf));
    if let Some(m) = major {
        out.push(PathBuf::from(format!("/usr/lib/postgresql/{m}/bin")));
        out.push(PathBuf::from(format!("/usr/pgsql-{m}/bin")));
    }
    if let Some(p) = path {
        out.extend(std::env::split_paths(p));
    }
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|d| seen.insert(d.clone()));
    out
}

/// The major version in `postgres --version` output (`postgres (PostgreSQL) 15.8 (Debian…)`).
pub fn major_of_version_output(s: &str) -> Option<u32> {
    let after = s.split(")").nth(1)?.trim();
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The major version of backup.info's `version` (150008 → 15; 90624 → 9).
pub fn major_of_server_version(v: u64) -> u32 {
    (v / 10000) as u32
}

/// How many bytes the pg_wal of a recovery may take beyond the data: restored segments are
/// kept until a restartpoint recycles them, up to about `max_wal_size` (1 GiB by default),
/// plus the prefetch spool.
pub const WAL_ALLOWANCE_CAP: u64 = 2 << 30;
/// Logs, the socket, configuration files and file-system slack.
pub const MARGIN: u64 = 64 << 20;

/// The free bytes a drill needs at DEST: the restored data, the WAL it will replay (as full
/// segments, at most [`WAL_ALLOWANCE_CAP`]) and [`MARGIN`].
pub fn space_needed(backup_bytes: u64, wal_segments: u64, seg_size: u64) -> u64 {
    backup_bytes
        .saturating_add(wal_segments.saturating_mul(seg_size).min(WAL_ALLOWANCE_CAP))
        .saturating_add(MARGIN)
}

/// An LSN written as PostgreSQL writes it (`16/B374D848`).
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// The segment name holding `lsn` on timeline `tli`.
pub fn segment_name(tli: u32, lsn: u64, seg_size: u64) -> String {
    let per_log = 0x1_0000_0000 / seg_size.max(1);
    let segno = lsn / seg_size.max(1);
    format!("{tli:08X}{:08X}{:08X}", segno / per_log, segno % per_log)
}

/// The last entry of a timeline history file: the parent timeline and the LSN where it ended.
pub fn history_last(text: &str) -> Option<(u32, u64)> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let tli = words.next()?.parse().ok()?;
            Some((tli, parse_lsn(words.next()?)?))
        })
        .next_back()
}

/// Whether recovery stopped before the end of the archive: `stop` is the segment replay ended
/// in, `bucket` the WAL names in the bucket. A later full segment of the same timeline means
/// replay ended early (a segment missing from the bucket, or one PostgreSQL found damaged);
/// the message names it.
pub fn replay_gap(stop: &str, bucket: &[String], seg_size: u64) -> Option<String> {
    let tli = wal::timeline(stop)?;
    let per_log = 0x1_0000_0000 / seg_size.max(1);
    let later: Vec<&String> = bucket
        .iter()
        .filter(|n| wal::classify(n) == Some(WalKind::Segment))
        .filter(|n| wal::timeline(n) == Some(tli) && wal::compare(n, stop).is_gt())
        .collect();
    let last = later.iter().max_by(|a, b| wal::compare(a, b))?;
    let next_no = wal::segment_number(stop, per_log)? + 1;
    let next = format!(
        "{tli:08X}{:08X}{:08X}",
        next_no / per_log,
        next_no % per_log
    );
    Some(if later.iter().any(|n| **n == next) {
        format!(
            "replay ended in WAL {stop} although the bucket holds WAL up to {last}: {stop} or {next} could not be replayed (damaged?)"
        )
    } else {
        format!("WAL {next} is missing from the bucket (the archive goes on to {last})")
    })
}

/// The line of PostgreSQL's log that says why it stopped: our restore_command's own message,
/// else PostgreSQL's "could not restore file", else its last FATAL or PANIC.
pub fn failure_from_log(log: &str) -> Option<String> {
    let lines: Vec<&str> = log.lines().collect();
    [
        "barmans3 wal-restore:",
        "barmans3-wal-restore:",
        "could not restore file",
        "FATAL:",
        "PANIC:",
    ]
    .iter()
    .find_map(|needle| lines.iter().rev().find(|l| l.contains(needle)))
    .map(|l| crate::error::one_line(l))
}

/// The last success time carried over from the previous textfile, so a failed drill keeps it.
pub fn last_success_from_textfile(text: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix("barmans3_drill_last_success_timestamp_seconds")
            .and_then(|rest| rest.rsplit(' ').next())
            .and_then(|v| v.trim().parse().ok())
    })
}

/// What is known of a directory that may be a killed drill's scratch copy.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScratchFacts {
    /// A directory (not a link).
    pub is_dir: bool,
    /// It and its marker belong to this user.
    pub ours: bool,
    /// Nobody else can enter it (mode 0700, as a drill makes it).
    pub private: bool,
    /// The marker is a regular file with one link.
    pub marker_regular: bool,
    /// Nobody holds the marker's lock: its drill is gone.
    pub marker_free: bool,
}

/// Whether a directory may be removed as a killed drill's: every fact must hold; anything
/// else (another user's, a link, a live drill's, no marker) is left alone.
pub fn is_stale_scratch(f: &ScratchFacts) -> bool {
    f.is_dir && f.ours && f.private && f.marker_regular && f.marker_free
}

/// The data directory a drill's postmaster serves, from its arguments: a `postgres` started
/// with `-D DIR` and `-c cluster_name=barmans3-drill`, as [`super::pg`] starts it.
pub fn drill_postmaster_data<'a>(args: &[&'a [u8]]) -> Option<&'a [u8]> {
    let postgres = args.first()?.ends_with(b"/postgres");
    let ours = args
        .windows(2)
        .any(|w| w[0] == b"-c" && w[1] == b"cluster_name=barmans3-drill");
    let data = args.windows(2).find(|w| w[0] == b"-D").map(|w| w[1])?;
    (postgres && ours).then_some(data)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn b(id: &str, status: &str, complete: bool) -> RemoteBackup {
        RemoteBackup::sketch(id, status, complete, None)
    }

    #[test]
    fn the_newest_complete_done_backup_is_picked() {
        let list = vec![
            b("20260101T000000", "DONE", true),
            b("20260103T000000", "DONE", true),
            b("20260104T000000", "DONE", false),
            b("20260105T000000", "FAILED", true),
            b("20260102T000000", "DONE", true),
        ];
        assert_eq!(pick_backup(&list, None).unwrap().id, "20260103T000000");
        assert_eq!(
            pick_backup(&list, Some("20260101T000000")).unwrap().id,
            "20260101T000000"
        );
        let incomplete = pick_backup(&list, Some("20260104T000000")).unwrap_err();
        assert!(
            incomplete.to_string().contains("not complete"),
            "{incomplete}"
        );
        assert!(pick_backup(&list, Some("20260109T000000")).is_err());
        assert!(pick_backup(&[b("20260104T000000", "DONE", false)], None).is_err());
        assert!(pick_backup(&[], None).is_err());
    }

    #[test]
    fn settings_reaching_outside_are_commented_and_listed() {
        let text = "# Do not edit\nwork_mem = '64MB'\nprimary_conninfo = 'host=prod user=rep'\narchive_command='barman-wal-archive b pg %p'\n  SSL = on\nshared_preload_libraries = 'pg_stat_statements,timescaledb' # comment\ninclude '/etc/postgresql/extra.conf'\ninclude 'local.conf'\nrestore_command = 'mine'\nhba_file = '/etc/postgresql/15/main/pg_hba.conf'\n";
        let installed = |l: &str| l == "pg_stat_statements";
        let (new, gone) = neutralise(text, &installed);
        assert_eq!(
            gone,
            vec![
                "primary_conninfo = 'host=prod user=rep'",
                "archive_command='barman-wal-archive b pg %p'",
                "SSL = on",
                "shared_preload_libraries = 'pg_stat_statements,timescaledb' # comment",
                "include '/etc/postgresql/extra.conf'",
                "hba_file = '/etc/postgresql/15/main/pg_hba.conf'",
            ]
        );
        assert!(new.contains("\nwork_mem = '64MB'\n"));
        assert!(new.contains(&format!("\n{MARK}primary_conninfo")));
        assert!(new.contains("\nshared_preload_libraries = 'pg_stat_statements'\n"));
        assert!(new.contains("\ninclude 'local.conf'\n"));
        // Our own restore_command is never touched.
        assert!(new.contains("\nrestore_command = 'mine'\n"));
        let active: Vec<&str> = new.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(
            !active
                .iter()
                .any(|l| l.contains("prod") || l.contains("timescaledb"))
        );
    }

    #[test]
    fn libraries_all_installed_stay_and_none_installed_leaves_no_line() {
        let text = "shared_preload_libraries = 'a, b'\n";
        let (same, gone) = neutralise(text, &|_| true);
        assert_eq!(same, text);
        assert!(gone.is_empty());
        let (new, gone) = neutralise(text, &|_| false);
        assert_eq!(new, format!("{MARK}{text}"));
        assert_eq!(gone.len(), 1);
    }

    #[test]
    fn binaries_are_looked_for_by_major_version() {
        let c = bindir_candidates(
            Some(Path::new("/opt/pg/bin")),
            Some(Path::new("/opt/pg/bin/pg_combinebackup")),
            Some(15),
            Some(OsStr::new("/usr/bin:/bin")),
        );
        let want: Vec<PathBuf> = [
            "/opt/pg/bin",
            "/usr/lib/postgresql/15/bin",
            "/usr/pgsql-15/bin",
            "/usr/bin",
            "/bin",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(c, want);
        assert_eq!(
            major_of_version_output("postgres (PostgreSQL) 15.8 (Debian 15.8-1)\n"),
            Some(15)
        );
        assert_eq!(
            major_of_version_output("postgres (PostgreSQL) 18beta1"),
            Some(18)
        );
        assert_eq!(major_of_server_version(150008), 15);
        assert_eq!(major_of_server_version(90624), 9);
    }

    #[test]
    fn space_covers_data_wal_and_margin_with_the_wal_capped() {
        let seg = 16 << 20;
        assert_eq!(space_needed(1000, 2, seg), 1000 + 2 * seg + MARGIN);
        assert_eq!(
            space_needed(1000, 10_000, seg),
            1000 + WAL_ALLOWANCE_CAP + MARGIN
        );
        assert_eq!(space_needed(u64::MAX, 1, seg), u64::MAX);
    }

    #[test]
    fn lsns_segments_and_history() {
        let seg = 16 << 20;
        assert_eq!(parse_lsn("0/3000060"), Some(0x3000060));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(parse_lsn("nope"), None);
        assert_eq!(segment_name(1, 0x3000060, seg), "000000010000000000000003");
        assert_eq!(
            segment_name(2, (0x16 << 32) | 0xB374D848, seg),
            "0000000200000016000000B3"
        );
        let hist = "1\t0/5000000\tno recovery target specified\n\n2\t0/9000A8\tbefore 2000-01-01\n";
        assert_eq!(history_last(hist), Some((2, 0x9000A8)));
        assert_eq!(history_last(""), None);
    }

    #[test]
    fn replay_that_stops_before_the_archive_ends_names_the_segment() {
        let seg = 16 << 20;
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let bucket = names(&[
            "000000010000000000000003",
            "000000010000000000000004",
            "000000010000000000000006",
            "000000010000000000000006.partial",
            "000000020000000000000009",
            "00000002.history",
        ]);
        // Stopped in 4: 5 is missing, 6 is there.
        let gap = replay_gap("000000010000000000000004", &bucket, seg).unwrap();
        assert!(
            gap.contains("WAL 000000010000000000000005 is missing"),
            "{gap}"
        );
        // Stopped in 3 although 4 is there: 3 or 4 is damaged.
        let gap = replay_gap("000000010000000000000003", &bucket, seg).unwrap();
        assert!(
            gap.contains("000000010000000000000004 could not be replayed"),
            "{gap}"
        );
        // At the end of the timeline's archive (a partial of the same segment is no gap).
        assert_eq!(replay_gap("000000010000000000000006", &bucket, seg), None);
        assert_eq!(replay_gap("000000010000000000000007", &bucket, seg), None);
        // Across a log boundary.
        let b2 = names(&["0000000100000001000000FF", "000000010000000200000000"]);
        assert_eq!(replay_gap("000000010000000200000000", &b2, seg), None);
        let gap = replay_gap("0000000100000001000000FE", &b2, seg).unwrap();
        assert!(
            gap.contains("0000000100000001000000FF could not be replayed"),
            "{gap}"
        );
    }

    #[test]
    fn the_log_line_naming_the_failure_is_found() {
        let log = "LOG:  starting\nbarmans3 wal-restore: 000000010000000000000005: checksum mismatch; aborting recovery\nFATAL:  could not restore file \"000000010000000000000005\" from archive: child process exited with exit code 200\nLOG:  shut down\n";
        assert_eq!(
            failure_from_log(log).unwrap(),
            "barmans3 wal-restore: 000000010000000000000005: checksum mismatch; aborting recovery"
        );
        let log2 =
            "LOG: x\nFATAL:  could not restore file \"00000001000000000000000A\" from archive\n";
        assert!(
            failure_from_log(log2)
                .unwrap()
                .contains("00000001000000000000000A")
        );
        assert_eq!(failure_from_log("LOG: fine\n"), None);
    }

    #[test]
    fn the_last_success_time_survives_a_failed_drill() {
        let old = "# HELP x\nbarmans3_drill_success{server=\"pg\"} 1\nbarmans3_drill_last_success_timestamp_seconds{server=\"pg\"} 1765000000\n";
        assert_eq!(last_success_from_textfile(old), Some(1765000000.0));
        assert_eq!(last_success_from_textfile("nothing"), None);
    }

    #[test]
    fn only_a_private_directory_of_ours_with_an_unlocked_marker_is_a_dead_drills() {
        let all = ScratchFacts {
            is_dir: true,
            ours: true,
            private: true,
            marker_regular: true,
            marker_free: true,
        };
        assert!(is_stale_scratch(&all));
        for off in 0..5 {
            let mut f = all;
            match off {
                0 => f.is_dir = false,
                1 => f.ours = false,
                2 => f.private = false,
                3 => f.marker_regular = false,
                _ => f.marker_free = false,
            }
            assert!(!is_stale_scratch(&f), "{f:?}");
        }
        assert!(!is_stale_scratch(&ScratchFacts::default()));
    }

    #[test]
    fn a_drill_postmaster_is_told_by_its_arguments() {
        let args: Vec<&[u8]> = vec![
            b"/usr/lib/postgresql/15/bin/postgres",
            b"-D",
            b"/tmp/d/data",
            b"-c",
            b"cluster_name=barmans3-drill",
        ];
        assert_eq!(drill_postmaster_data(&args), Some(&b"/tmp/d/data"[..]));
        let other: Vec<&[u8]> = vec![b"/usr/bin/postgres", b"-D", b"/srv/pg"];
        assert_eq!(drill_postmaster_data(&other), None);
        let retitled: Vec<&[u8]> = vec![b"postgres: barmans3-drill: checkpointer"];
        assert_eq!(drill_postmaster_data(&retitled), None);
    }
}
