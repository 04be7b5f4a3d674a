//! The plugin's log in the gpbackup convention: `~/gpAdminLogs/gpbackup_s3_plugin_<date>.log`,
//! appended, one `YYYYMMDD:HH:MM:SS gpbackup_s3_plugin:<user>:<host>:<pid>-[LEVEL]:-<text>` line
//! per event. When the directory or file cannot be used (HOME unset or read-only), lines go to
//! stderr instead: the plugin never fails because of its log. stdout is never touched.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::config::Verbosity;

/// Program name used in log file names and line prefixes.
pub const PROGRAM: &str = "gpbackup_s3_plugin";

/// Where the log went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// The gpAdminLogs file.
    File(PathBuf),
    /// stderr, because the file could not be used.
    Stderr,
}

/// The gplog line prefix after the timestamp: `gpbackup_s3_plugin:<user>:<host>:<pid>`.
pub fn prefix() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(user_from_uid)
        .unwrap_or_else(|| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{PROGRAM}:{user}:{host}:{:06}", std::process::id())
}

/// The login name of this process's real uid, from `/proc/self/status` and `/etc/passwd`
/// (segment postgres processes may run without USER set).
fn user_from_uid() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)? == uid).then(|| name.to_string())
    })
}

/// A full gplog line (no newline) for `level` and `text`, stamped now.
pub fn line(level: &str, text: &str) -> String {
    format!(
        "{} {}-[{level}]:-{text}",
        chrono::Local::now().format("%Y%m%d:%H:%M:%S"),
        prefix()
    )
}

struct GpFormat {
    prefix: String,
}

impl<S, N> FormatEvent<S, N> for GpFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARNING",
            Level::INFO => "INFO",
            _ => "DEBUG",
        };
        write!(
            writer,
            "{} {}-[{level}]:-",
            chrono::Local::now().format("%Y%m%d:%H:%M:%S"),
            self.prefix
        )?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The log file path for today: `$HOME/gpAdminLogs/gpbackup_s3_plugin_<YYYYMMDD>.log`.
pub fn log_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    let date = chrono::Local::now().format("%Y%m%d");
    Some(
        PathBuf::from(home)
            .join("gpAdminLogs")
            .join(format!("{PROGRAM}_{date}.log")),
    )
}

/// Installs the process-wide subscriber. Returns where lines go.
pub fn init(verbosity: Verbosity) -> LogTarget {
    let filter = match verbosity {
        Verbosity::Error => "error",
        Verbosity::Info => "barmans3=info,aws_config=error,warn",
        Verbosity::Verbose => "barmans3=debug,aws_config=error,warn",
        // The SDK's own debug output names the access key and is noise to a DBA: it stays
        // at warnings here as everywhere.
        Verbosity::Debug => "barmans3=trace,aws_config=error,warn",
    };
    let file = log_path().and_then(|p| {
        let dir = p.parent()?;
        std::fs::create_dir_all(dir).ok()?;
        let f = crate::fsutil::open_owned(&p, OpenOptions::new().create(true).append(true)).ok()?;
        Some((p, f))
    });
    let (target, writer, ansi) = match file {
        Some((p, f)) => (LogTarget::File(p), BoxMakeWriter::new(Mutex::new(f)), false),
        None => (
            LogTarget::Stderr,
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(ansi)
        .with_writer(writer)
        .event_format(GpFormat { prefix: prefix() })
        .try_init();
    target
}
