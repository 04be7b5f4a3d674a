//! `barmans3-dplcompat`: the object-storage program of Bareos' `dplcompat` backend (Bareos 24
//! and later). The storage daemon runs it once per operation as `program <op> [VOL [PART]]`,
//! with the device options as environment variables, a chunk on stdin for `upload` and on
//! stdout for `download`; any non-zero exit is a failure. This module owns one such call, from
//! argv to exit code; the protocol's rules are in [`protocol`], the store operations in
//! [`ops`], the guarded stdin and stdout in [`input`].
//!
//! What the daemon really does shapes the rest: it merges our stderr into the data it reads,
//! so nothing is printed there unless the call fails (no log subscriber on stderr, whatever
//! `RUST_LOG` says); it kills a call that moves no data for `program_timeout` seconds (an
//! `upload` or `download` keeps it alive with every 256 KiB, anything else must end within
//! it), so every other call runs under the `timeout` option; it reads a failed `stat` or
//! `download` while restoring as the end of the volume, so transient errors are retried here
//! (the engine's bounded retries); and it starts one process per chunk, so a call does only
//! what its operation needs (no checksum probe but for `upload`, no TLS roots for plain HTTP).

pub mod input;
pub mod ops;
pub mod protocol;
pub mod s3cfg;

use std::io::Write;
use std::sync::Arc;

use crate::config::{Config, PermissionPolicy};
use crate::error::{Error, Exit, Result};
use crate::store::Location;
use crate::transfer::{Cancel, EngineBuilder};
use ops::Device;
use protocol::{DeviceOptions, Request};

/// The program's name in messages.
pub const PROGRAM: &str = "barmans3-dplcompat";

/// Runs one call. `args[0]` is the program path. Data goes to stdout; a failure is one line on
/// stderr, prefixed with the program's name and the operation.
pub fn run(args: &[String]) -> Exit {
    match args.get(1).map(String::as_str) {
        Some("--version" | "-V") => {
            return exit_of(emit(
                format!("{PROGRAM} {}\n", env!("CARGO_PKG_VERSION")).as_bytes(),
            ));
        }
        Some("--help" | "-h") => return exit_of(emit(USAGE.as_bytes())),
        _ => {}
    }
    let request = match Request::parse(args.get(1..).unwrap_or_default()) {
        Ok(r) => r,
        Err(e) => return fail("", &Error::Usage(e)),
    };
    if request == Request::Options {
        // Never fails and reads nothing: the daemon asks before it sets any option.
        return exit_of(emit(protocol::options_text().as_bytes()));
    }
    let op = request.name();
    let result = DeviceOptions::read(|n| std::env::var(n).ok())
        .map_err(Error::Config)
        .and_then(|opts| {
            let mut cfg = load_config(&opts)?;
            if cfg.encryption.is_some() {
                // Bareos reads volume parts by their stored sizes; sealed parts would not match.
                return Err(Error::Config(
                    "encryption: is configured: barmans3-dplcompat does not encrypt volumes yet and will not store them in the clear; use a config without encryption: for the device".into(),
                ));
            }
            within_timeout(&mut cfg.s3, opts.timeout);
            crate::runtime::block_on_with(threads(&request), |cancel| {
                call(cfg, opts, request, cancel)
            })
        });
    match result {
        Ok(()) => Exit::Success,
        Err(e) => fail(op, &e),
    }
}

/// The runtime's threads for one call. The daemon starts a process per call, so what a runtime
/// costs to start and stop is paid per chunk: a worker per core (dozens on a storage host) for
/// a request or two is most of a `stat`. A chunk's data needs no more than two: one to
/// checksum and copy while the other moves bytes between the pipe and the store.
fn threads(request: &Request) -> crate::runtime::Threads {
    match request {
        Request::Upload(_) | Request::Download(_) => crate::runtime::Threads::AtMost(2),
        _ => crate::runtime::Threads::One,
    }
}

/// What `--help` prints.
const USAGE: &str = "\
usage: barmans3-dplcompat OPERATION [VOLUME [PART]], run by Bareos' storage daemon
operations: options, testconnection, list VOLUME, stat|upload|download|remove VOLUME PART
device options (environment): config, bucket, prefix, base_url, storage_class, timeout
see man barmans3-dplcompat
";

fn exit_of(r: Result<()>) -> Exit {
    match r {
        Ok(()) => Exit::Success,
        Err(e) => fail("", &e),
    }
}

/// Prints the failure and picks the exit code (never 0: a reader of our stdout that went away
/// is a failed download here, not a quiet end).
fn fail(op: &str, e: &Error) -> Exit {
    let op = if op.is_empty() {
        String::new()
    } else {
        format!("{op}: ")
    };
    say_within(
        format!("{PROGRAM}: {op}{}\n", e.one_line()),
        REASON_PATIENCE,
    );
    match e.exit() {
        Exit::Success => Exit::Failed,
        x => x,
    }
}

/// How long the reason of a failure waits for the daemon to read what came before it.
const REASON_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Writes `line` to stderr after whatever a download wrote on the same pipe, waiting for the
/// daemon to read that rather than losing the line to a full non-blocking pipe, but at most
/// `patience`: a daemon that stopped reading (and whose SIGTERM the runtime's handler, still
/// installed, would swallow) never keeps the program from exiting. The writing thread is left
/// behind only then, and ends with the process a moment later. Not eprintln!: a daemon that
/// went away must not turn the message into a panic.
fn say_within(line: String, patience: std::time::Duration) {
    let (done, written) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        input::blocking_again();
        let _ = std::io::stderr().write_all(line.as_bytes());
        let _ = done.send(());
    });
    if written.recv_timeout(patience).is_ok() {
        let _ = writer.join();
    }
}

fn emit(bytes: &[u8]) -> Result<()> {
    input::blocking_again();
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("write stdout", e))
}

/// The barmans3 config the `config` option names (else `BARMANS3_CONFIG`, else the default),
/// with the device's `bucket`, `prefix` and `storage_class` over it.
fn load_config(o: &DeviceOptions) -> Result<Config> {
    if let Some(s3cfg) = &o.s3cfg {
        return from_s3cfg(std::path::Path::new(s3cfg), o);
    }
    let path = Config::resolve_path(o.config.as_deref().map(std::path::Path::new));
    let mut cfg = Config::load(&path, PermissionPolicy::Refuse)?;
    match (&mut cfg.location, &o.bucket) {
        (Location::S3 { bucket, .. }, Some(b)) => b.clone_into(bucket),
        (Location::Local { .. }, Some(b)) => {
            return Err(Error::Config(format!(
                "bucket={b}: the store of {} is a directory (file://), not a bucket",
                path.display()
            )));
        }
        _ => {}
    }
    if let (Location::S3 { prefix, .. }, Some(p)) = (&mut cfg.location, &o.prefix) {
        p.clone_into(prefix);
    }
    if let Some(c) = &o.storage_class {
        cfg.s3.storage_classes.default = Some(c.clone());
    }
    Ok(cfg)
}

/// The settings of a device that kept the s3cmd wrapper's options: the store from its s3cmd
/// configuration, the bucket and prefix from `bucket`/`base_url`/`prefix`. Content-MD5 on
/// every upload, as s3cmd sends (every S3 store checks it), and no probe: such a device has no
/// state directory of ours.
fn from_s3cfg(path: &std::path::Path, o: &DeviceOptions) -> Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "s3cfg={}: cannot read it: {}",
            path.display(),
            crate::error::reason(&e)
        ))
    })?;
    crate::config::check_permissions(path, PermissionPolicy::Refuse)?;
    let s3 =
        s3cfg::parse(&text).map_err(|e| Error::Config(format!("s3cfg={}: {e}", path.display())))?;
    let mut cfg = Config::for_location(Location::S3 {
        bucket: o.bucket.clone().unwrap_or_default(),
        prefix: o.prefix.clone().unwrap_or_default(),
    });
    cfg.s3 = s3;
    cfg.source = Some(path.to_path_buf());
    cfg.transfer.checksum = crate::transfer::ChecksumMode::WhenRequired;
    cfg.transfer.probe_checksum = false;
    if let Some(c) = &o.storage_class {
        cfg.s3.storage_classes.default = Some(c.clone());
    }
    Ok(cfg)
}

/// Caps the store's connect and read timeouts at the `timeout` option: one request the store
/// never answers must not outlast the daemon's `program_timeout` (which kills a download that
/// moves no byte, and an upload whose end the store does not take), so the bounded retries can
/// end in a line that says why instead of a SIGTERM.
pub fn within_timeout(s3: &mut crate::store::s3::S3Options, timeout: std::time::Duration) {
    s3.connect_timeout = s3.connect_timeout.min(timeout);
    s3.read_timeout = s3.read_timeout.min(timeout);
}

/// Builds the engine and runs the operation; every operation but `upload` and `download` within
/// the `timeout` option, retries included.
async fn call(
    cfg: Config,
    opts: DeviceOptions,
    request: Request,
    cancel: Arc<Cancel>,
) -> Result<()> {
    let budget = opts.timeout;
    let streaming = matches!(request, Request::Upload(_) | Request::Download(_));
    let stopped = cancel.clone();
    let work = async {
        let device = device(&cfg, &opts, &request, cancel.clone()).await?;
        operate(&device, request, cancel).await
    };
    if streaming {
        // A signal surfaces as whatever the engine was doing (a read, a request): say what
        // it was.
        return match work.await {
            Err(_) if stopped.is_cancelled() => Err(Error::Interrupted),
            r => r,
        };
    }
    tokio::time::timeout(budget, work).await.unwrap_or_else(|_| {
        Err(Error::Failed(format!(
            "no answer from the store within {} s (the timeout option); nothing was changed by this call unless the store applied it late",
            budget.as_secs()
        )))
    })
}

/// The engine for one call: the store, the run's cancel flag, and for `upload` the checksum
/// probe when the config asks for it (its answer is cached in `state.dir`).
async fn device(
    cfg: &Config,
    opts: &DeviceOptions,
    request: &Request,
    cancel: Arc<Cancel>,
) -> Result<Device> {
    let mut b = EngineBuilder::new(cfg.transfer.clone()).cancel(cancel);
    if matches!(request, Request::Upload(_)) {
        // Applied only when the settings ask for the probe (`s3.request_checksum: auto`).
        b = b.checksum_probe(cfg.checksum_probe());
    }
    let t = b.open(&cfg.location, &cfg.s3).await?;
    let prefix = match (&cfg.location, &opts.prefix) {
        (Location::Local { .. }, Some(p)) => p.clone(),
        (loc, _) => loc.prefix().to_string(),
    };
    Ok(Device {
        t,
        location: cfg.location.to_string(),
        prefix,
    })
}

async fn operate(d: &Device, request: Request, cancel: Arc<Cancel>) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let text = match request {
        Request::Options => protocol::options_text(),
        Request::TestConnection => d.test_connection().await?,
        Request::List(v) => d.list(&v).await?,
        Request::Stat(p) => format!("{}\n", d.stat(&p).await?),
        Request::Upload(p) => {
            let input = input::Guarded::new(input::stdin(), cancel);
            let up = d.upload(&p, input).await?;
            format!("{} bytes stored\n", up.size)
        }
        Request::Download(p) => {
            let mut out = input::stdout();
            let mut stop = std::pin::pin!(cancel.cancelled());
            // A signal ends a write the daemon no longer reads; the bytes sent are its problem.
            tokio::select! {
                r = d.download(&p, &mut out) => r?,
                () = &mut stop => return Err(Error::Interrupted),
            };
            out.flush()
                .await
                .map_err(|e| Error::io("write stdout", e))?;
            return Ok(());
        }
        Request::Remove(p) => {
            d.remove(&p).await?;
            String::new()
        }
    };
    emit(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::s3::S3Options;

    #[test]
    fn the_stores_timeouts_fit_inside_the_timeout_option() {
        let mut s3 = S3Options::default();
        within_timeout(&mut s3, Duration::from_secs(20));
        assert_eq!(s3.read_timeout, Duration::from_secs(20));
        assert_eq!(s3.connect_timeout, Duration::from_secs(10));
        within_timeout(&mut s3, Duration::from_secs(3));
        assert_eq!(
            (s3.connect_timeout, s3.read_timeout),
            (Duration::from_secs(3), Duration::from_secs(3))
        );
        // Shorter settings of the config stay.
        s3.read_timeout = Duration::from_secs(1);
        within_timeout(&mut s3, Duration::from_secs(20));
        assert_eq!(s3.read_timeout, Duration::from_secs(1));
    }
}
