//! Logging of the barmans3 binary: stderr (colour only on a terminal) and, once
//! [`open_log_file`] ran, `<log_dir>/barmans3.log`. The file is opened once per run, so
//! logrotate can move it without a signal. The plugin has its own log ([`crate::gpplugin::log`]).

use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};

/// The optional log file (`state.log_dir`).
static LOG_FILE: OnceLock<Mutex<std::fs::File>> = OnceLock::new();

/// Writes log lines to the log file once one is open, else nowhere.
#[derive(Debug, Clone, Copy)]
struct LogFileWriter;

impl std::io::Write for LogFileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match LOG_FILE.get().and_then(|m| m.lock().ok()) {
            Some(mut f) => f.write_all(buf).map(|()| buf.len()),
            None => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Opens `<dir>/barmans3.log` for appending; later log lines also go there.
pub fn open_log_file(dir: &Path) -> Result<()> {
    if LOG_FILE.get().is_some() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("create log directory {}", dir.display()), e))?;
    let path = dir.join("barmans3.log");
    // Never through a link or into a FIFO someone put there, whoever can write the directory.
    let f = crate::fsutil::open_owned(&path, std::fs::OpenOptions::new().create(true).append(true))
        .map_err(|e| Error::io(format!("open log file {}", path.display()), e))?;
    let _ = LOG_FILE.set(Mutex::new(f));
    Ok(())
}

/// How much to log: `-q` errors, the default info (warnings and one summary line per run),
/// `-v` debug (what was decided: each task, each WAL uploaded, the config read), `-vv` (and more)
/// trace (every store request with its status, size and time). The AWS SDK's own lines stay at
/// warn at every level (`RUST_LOG` for those).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verbosity {
    /// Errors only (`-q`).
    Quiet,
    /// Info and above (the default).
    #[default]
    Normal,
    /// Debug (`-v`).
    Verbose,
    /// Trace (`-vv` and more).
    Trace,
}

/// Sets up logging on stderr (and the log file once opened). `RUST_LOG` replaces the filter,
/// for debugging the AWS SDK itself.
pub fn init(verbosity: Verbosity) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level = match verbosity {
        Verbosity::Quiet => "error",
        Verbosity::Normal => "info",
        Verbosity::Verbose => "debug",
        Verbosity::Trace => "trace",
    };
    // The SDK's own info lines (region probes, credential chain) are noise for an operator.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("barmans3={level},aws_config=error,warn"))
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(outputs())
        .try_init();
}

/// Logging for the lean `restore_command`: info and above, with the lines [`init`] writes, and
/// no filter to compile (the filter's regular expressions are most of what it would link).
pub fn init_plain() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(outputs())
        .try_init();
}

/// The two outputs every line goes to: stderr (colour only on a terminal) and the log file.
fn outputs<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let file = tracing_subscriber::fmt::layer()
        .with_writer(|| LogFileWriter)
        .with_ansi(false)
        .with_target(false);
    tracing_subscriber::Layer::and_then(stderr, file)
}
