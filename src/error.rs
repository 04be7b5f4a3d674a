//! Library error type, its retryable/permanent class, and the one exit-code table.
//!
//! Every failure the library can report is an [`Error`]. The transfer engine asks
//! [`Error::is_retryable`] before it retries a request, and the binaries turn an error into a
//! process exit code through [`Error::exit`] and [`Exit::code`], so the table in the README has
//! exactly one source in the code.

use std::fmt;
use std::process::ExitCode;

/// The process exit codes of both binaries. Documented in the README and the man page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked for was done and verified.
    Success,
    /// The operation failed (network, storage, verification, a task that failed).
    Failed,
    /// Usage or configuration error: nothing was attempted.
    Config,
    /// Unknown gpbackup plugin command (gpbackup / urfave-cli convention).
    UnknownCommand,
    /// `check`: the monitoring plugin's state (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
    Check(CheckLevel),
    /// Barman retry hook: give up on this hook and let Barman carry on (ABORT_CONTINUE).
    HookAbortContinue,
    /// Another run holds the lock for the same work; this run did nothing.
    Busy,
    /// `wal-restore` failed for a reason other than "the file is not in the bucket": a status
    /// above 125 makes PostgreSQL abort recovery instead of ending it and promoting.
    RecoveryAbort,
    /// Interrupted by SIGINT/SIGTERM; in-flight uploads were aborted.
    Interrupted,
}

/// The states of a monitoring check (Nagios plugin convention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum CheckLevel {
    /// 0.
    #[default]
    Ok,
    /// 1.
    Warning,
    /// 2.
    Critical,
    /// 3: the check could not tell.
    Unknown,
}

impl CheckLevel {
    /// The plugin output's word.
    pub fn word(self) -> &'static str {
        match self {
            CheckLevel::Ok => "OK",
            CheckLevel::Warning => "WARNING",
            CheckLevel::Critical => "CRITICAL",
            CheckLevel::Unknown => "UNKNOWN",
        }
    }
}

impl Exit {
    /// The numeric code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failed => 1,
            Exit::Config => 2,
            Exit::UnknownCommand => 3,
            Exit::Check(l) => l as u8,
            Exit::HookAbortContinue => 62,
            Exit::Busy => 75,
            Exit::Interrupted => 130,
            Exit::RecoveryAbort => 200,
        }
    }
}

impl Exit {
    /// The exit of a command line rejected before anything ran, given the subcommand it names
    /// and the code the rejection asks for (0 for `--help` and `--version`). A rejected
    /// `wal-restore` must abort recovery rather than end it, and a rejected `queue-add` run as a
    /// retry hook must not block Barman; everything else is a usage error.
    pub fn rejected(
        subcommand: Option<&str>,
        code: i32,
        retry_hook: impl FnOnce() -> bool,
    ) -> Exit {
        match subcommand {
            Some("wal-restore") if code != 0 => Exit::RecoveryAbort,
            Some("queue-add") if code != 0 && retry_hook() => Exit::HookAbortContinue,
            _ if code == 0 => Exit::Success,
            _ => Exit::Config,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e.code())
    }
}

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to a store, classified for the retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFailure {
    /// Operation name as in S3 (`PutObject`, `UploadPart`, ...).
    pub op: &'static str,
    /// Object key (or prefix) the request was about.
    pub key: String,
    /// HTTP status when the server answered.
    pub status: Option<u16>,
    /// S3 error code (`SlowDown`, `AccessDenied`, ...) when the server sent one.
    pub code: Option<String>,
    /// Human-readable reason, one line, never containing credentials.
    pub message: String,
    /// Whether repeating the same request may succeed.
    pub retryable: bool,
}

impl fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: ", self.op)?;
        } else {
            write!(f, "{} {}: ", self.op, self.key)?;
        }
        match (&self.code, self.status) {
            (Some(code), Some(status)) => write!(f, "{code} (HTTP {status}): ")?,
            (Some(code), None) => write!(f, "{code}: ")?,
            (None, Some(status)) => write!(f, "HTTP {status}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)?;
        if let Some(hint) = self.hint() {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl StoreFailure {
    /// What to do about an answer that means the settings are wrong.
    fn hint(&self) -> Option<&'static str> {
        match (self.code.as_deref(), self.status) {
            (Some("NoSuchBucket"), _) => Some("the bucket does not exist: check the bucket name"),
            (Some("InvalidObjectState"), _) => Some(
                "the object is in an archive storage class (GLACIER or DEEP_ARCHIVE) and must be restored before it can be read: for a backup, run base-restore with --request-restore DAYS, wait for the restore, then run it again",
            ),
            (Some("InvalidAccessKeyId"), _) => {
                Some("the access key is unknown to the server: check the access key id")
            }
            (Some("SignatureDoesNotMatch"), _) => {
                Some("the signature was refused: check the secret access key and the region")
            }
            (_, Some(401 | 403)) => Some(
                "the credentials were refused or may not use this bucket: check the access key, the secret and the bucket's permissions",
            ),
            _ => None,
        }
    }
}

/// Every error the library reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration file, key, flag or environment variable. Exit 2.
    #[error("{0}")]
    Config(String),
    /// Bad command-line usage. Exit 2.
    #[error("{0}")]
    Usage(String),
    /// The object does not exist.
    #[error("object not found: {key}")]
    NotFound {
        /// The missing key.
        key: String,
    },
    /// A store request failed.
    #[error("{0}")]
    Store(StoreFailure),
    /// Data read back does not match what was written or recorded.
    #[error("checksum mismatch for {key}: expected {expected}, got {actual}")]
    Checksum {
        /// Object key or local path.
        key: String,
        /// What the record says.
        expected: String,
        /// What the bytes say.
        actual: String,
    },
    /// Local filesystem error, with the path or action that failed.
    #[error("{context}: {}", reason(source))]
    Io {
        /// What we were doing (includes the path).
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Another process holds the lock for this work.
    #[error("{0}")]
    Busy(String),
    /// SIGINT or SIGTERM arrived.
    #[error("interrupted")]
    Interrupted,
    /// The reader of our standard output went away (`barmans3 store ls | head -1`): the run
    /// ends quietly, as `ls | head` does.
    #[error("standard output was closed by its reader")]
    StdoutClosed,
    /// The store refused a server-side copy, or made one it cannot vouch for: upload instead.
    #[error("server-side copy refused: {0}")]
    CopyRefused(String),
    /// An object could not be sealed or opened: the keys do not fit (exit 2) or the object
    /// failed authentication (exit 1). Never retried: the same bytes fail the same way.
    #[error("{0}")]
    Crypt(crate::crypt::CryptError),
    /// Any other failed operation, with a complete one-line reason.
    #[error("{0}")]
    Failed(String),
}

impl Error {
    /// Builds an [`Error::Io`] with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether the same request may succeed when repeated (5xx, throttling, timeouts, resets,
    /// truncated bodies). Everything else fails fast.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store(f) => f.retryable,
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }

    /// Whether the error says the credentials, bucket or endpoint are wrong: a configuration
    /// problem rather than a transient one.
    pub fn is_access_problem(&self) -> bool {
        match self {
            Error::Store(f) => {
                matches!(f.status, Some(401 | 403))
                    || matches!(
                        f.code.as_deref(),
                        Some(
                            "NoSuchBucket"
                                | "AccessDenied"
                                | "InvalidAccessKeyId"
                                | "SignatureDoesNotMatch"
                                | "InvalidBucketName"
                                | "AuthorizationHeaderMalformed"
                        )
                    )
            }
            _ => false,
        }
    }

    /// The process exit code for this error.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Config(_) | Error::Usage(_) => Exit::Config,
            Error::Crypt(e) if e.is_key_problem() => Exit::Config,
            Error::Busy(_) => Exit::Busy,
            Error::Interrupted => Exit::Interrupted,
            Error::StdoutClosed => Exit::Success,
            _ => Exit::Failed,
        }
    }

    /// One line, whatever the underlying message contained.
    pub fn one_line(&self) -> String {
        one_line(&self.to_string())
    }
}

/// Collapses a message onto one line (error texts from YAML parsers and servers can span lines).
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The reason of an I/O error for a message: the system's wording without the `(os error N)`
/// suffix ("No such file or directory", "Is a directory").
pub fn reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(status: Option<u16>, code: Option<&str>, retryable: bool) -> Error {
        Error::Store(StoreFailure {
            op: "PutObject",
            key: "k".into(),
            status,
            code: code.map(str::to_string),
            message: "m".into(),
            retryable,
        })
    }

    #[test]
    fn exit_codes_follow_the_table() {
        assert_eq!(Error::Config("x".into()).exit().code(), 2);
        assert_eq!(Error::Usage("x".into()).exit().code(), 2);
        assert_eq!(Error::Interrupted.exit().code(), 130);
        assert_eq!(Error::Busy("x".into()).exit().code(), 75);
        assert_eq!(store(Some(500), None, true).exit().code(), 1);
        assert_eq!(Exit::UnknownCommand.code(), 3);
    }

    #[test]
    fn a_rejected_command_line_exits_as_its_command_promises() {
        let cases: &[(Option<&str>, i32, bool, Exit)] = &[
            (Some("wal-restore"), 2, false, Exit::RecoveryAbort),
            (Some("wal-restore"), 0, false, Exit::Success),
            (Some("queue-add"), 2, true, Exit::HookAbortContinue),
            (Some("queue-add"), 2, false, Exit::Config),
            (Some("queue-add"), 0, true, Exit::Success),
            (Some("base-sync"), 2, true, Exit::Config),
            (None, 2, false, Exit::Config),
            (None, 0, false, Exit::Success),
        ];
        for &(sub, code, hook, want) in cases {
            assert_eq!(
                Exit::rejected(sub, code, || hook),
                want,
                "{sub:?} {code} {hook}"
            );
        }
    }

    #[test]
    fn access_problems_are_recognised_by_status_and_code() {
        assert!(store(Some(403), None, false).is_access_problem());
        assert!(store(Some(404), Some("NoSuchBucket"), false).is_access_problem());
        assert!(!store(Some(404), Some("NoSuchKey"), false).is_access_problem());
        assert!(!store(Some(503), Some("SlowDown"), true).is_access_problem());
    }

    #[test]
    fn one_line_collapses_newlines() {
        assert_eq!(one_line("a\n  b\tc\n"), "a b c");
    }

    #[test]
    fn io_errors_read_in_the_systems_words_without_the_code() {
        let e = Error::io("open /x", std::io::Error::from_raw_os_error(2));
        assert_eq!(e.to_string(), "open /x: No such file or directory");
        let plain = std::io::Error::other("short read");
        assert_eq!(reason(&plain), "short read");
    }

    #[test]
    fn io_timeouts_are_retryable_but_not_found_is_not() {
        let t = Error::io("x", std::io::Error::from(std::io::ErrorKind::TimedOut));
        let n = Error::io("x", std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(t.is_retryable());
        assert!(!n.is_retryable());
    }
}
