//! `barmans3-wal-restore`, the lean `restore_command`: the same arguments as `barmans3
//! wal-restore`, served by this small program when the segment is spooled (nothing of the store
//! client, the async runtime or the command-line parser is linked into it, so it starts in a
//! fraction of the time), and handed whole to the barmans3 program beside it otherwise.
//!
//! PostgreSQL waits for every call in turn during recovery, so the call's own cost is on the
//! critical path of replay: most of a spooled call's time in the full program was its start
//! (mapping and relocating a large binary, building its command line).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::barman::remote::BucketLayout;
use crate::cli::invocation::Options;
use crate::error::Exit;

/// The program the lean one hands requests to, installed beside it.
const FULL: &str = "barmans3";
/// The lean program's name.
pub(crate) const LEAN_WAL_RESTORE: &str = "barmans3-wal-restore";

/// A command line the lean program serves itself: positional `SERVER NAME DEST`, `--config`
/// and `--layout`. Anything else (`-v`, `--store`, `--as-of`, ...) goes to the full program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeanArgs {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// The Barman server.
    pub server: String,
    /// `%f`.
    pub name: String,
    /// `%p`.
    pub dest: PathBuf,
    /// `--layout`.
    pub layout: BucketLayout,
}

/// Reads `args` (without the program name) as a lean command line; `None` for any other,
/// including one the full program would refuse (an option given twice).
pub fn parse(args: &[OsString]) -> Option<LeanArgs> {
    let mut config = None;
    let mut layout = None;
    let mut positional = Vec::with_capacity(3);
    let mut it = args.iter().map(|a| a.to_str());
    while let Some(arg) = it.next() {
        let arg = arg?;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().flatten().map(String::from))
        };
        match flag {
            "--config" if config.is_none() => {
                config = Some(PathBuf::from(value().filter(|v| !v.is_empty())?))
            }
            "--layout" if layout.is_none() => {
                layout = Some(match value()?.as_str() {
                    "barmans3" => BucketLayout::Barmans3,
                    "barman-cloud" => BucketLayout::BarmanCloud,
                    _ => return None,
                })
            }
            _ if arg.starts_with('-') || arg.is_empty() => return None,
            _ => positional.push(arg.to_string()),
        }
    }
    let [server, name, dest] = <[String; 3]>::try_from(positional).ok()?;
    Some(LeanArgs {
        config,
        server,
        name,
        dest: PathBuf::from(dest),
        layout: layout.unwrap_or(BucketLayout::Barmans3),
    })
}

/// The full program: `barmans3` beside this one (`exe`, this program's own path), from the
/// same package; `None` when this program cannot tell where it is. Never one found on the
/// `PATH` (a bare name would be looked up there): another version could name or fill the spool
/// differently.
fn full_program(exe: std::io::Result<PathBuf>) -> Option<PathBuf> {
    let exe = exe.ok()?;
    Some(exe.parent()?.join(FULL))
}

/// Runs one call: `args` is argv without the program name. Returns only when the call was
/// served here or the full program could not be started.
pub fn wal_restore(args: Vec<OsString>) -> Exit {
    let Some(full) = full_program(std::env::current_exe()) else {
        eprintln!(
            "barmans3-wal-restore: cannot tell its own directory (/proc/self/exe), where barmans3 must be; run barmans3 wal-restore instead; aborting recovery"
        );
        return Exit::RecoveryAbort;
    };
    // RUST_LOG asks for the full program's diagnostics.
    if let Some(a) = parse(&args).filter(|_| std::env::var_os("RUST_LOG").is_none()) {
        crate::logging::init_plain();
        let o = Options {
            config: a.config.clone(),
            ..Options::default()
        };
        let served =
            super::walrestore::restore_spooled(&o, &full, &a.server, &a.name, &a.dest, a.layout);
        if let Some(exit) = served {
            return exit;
        }
    }
    hand_over(&full, args)
}

/// Replaces this process with `full wal-restore ARGS`.
fn hand_over(full: &Path, args: Vec<OsString>) -> Exit {
    use std::os::unix::process::CommandExt;
    let e = std::process::Command::new(full)
        .arg("wal-restore")
        .args(args)
        .exec();
    eprintln!(
        "barmans3-wal-restore: cannot run {} ({e}); install barmans3 beside barmans3-wal-restore (the same package); aborting recovery",
        full.display()
    );
    Exit::RecoveryAbort
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_lean_command_line_is_three_names_a_config_and_a_layout() {
        let want = |config: Option<&str>, layout| LeanArgs {
            config: config.map(PathBuf::from),
            server: "pg".into(),
            name: "000000010000000000000001".into(),
            dest: PathBuf::from("pg_wal/RECOVERYXLOG"),
            layout,
        };
        let f = ["pg", "000000010000000000000001", "pg_wal/RECOVERYXLOG"];
        assert_eq!(parse(&args(&f)), Some(want(None, BucketLayout::Barmans3)));
        let mut with = vec!["--config", "/etc/b 3.yaml"];
        with.extend(f);
        assert_eq!(
            parse(&args(&with)),
            Some(want(Some("/etc/b 3.yaml"), BucketLayout::Barmans3))
        );
        let mut with = f.to_vec();
        with.extend(["--config=/c.yaml", "--layout", "barman-cloud"]);
        assert_eq!(
            parse(&args(&with)),
            Some(want(Some("/c.yaml"), BucketLayout::BarmanCloud))
        );
    }

    /// Only the `barmans3` beside this program is ever run: with no path of its own, none
    /// (a bare `barmans3` would be looked up on the `PATH`).
    #[test]
    fn the_full_program_is_the_one_beside_this_one_or_none() {
        assert_eq!(
            full_program(Ok(PathBuf::from("/usr/bin/barmans3-wal-restore"))),
            Some(PathBuf::from("/usr/bin/barmans3"))
        );
        let gone = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(full_program(Err(gone)), None);
        assert_eq!(full_program(Ok(PathBuf::from("/"))), None);
    }

    #[test]
    fn every_other_command_line_goes_to_the_full_program() {
        let f = ["pg", "000000010000000000000001", "pg_wal/RECOVERYXLOG"];
        for extra in [
            &["-v"][..],
            &["--quiet"],
            &["--store", "file:///x"],
            &["--as-of", "2026-01-01T00:00:00Z"],
            &["--layout", "other"],
            &["--layout"],
            &["--config"],
            &["--config="],
            &["--help"],
            &["--"],
            &["extra"],
            &[""],
            &["--config", "/a.yaml", "--config", "/b.yaml"],
            &["--layout", "barmans3", "--layout=barman-cloud"],
        ] {
            let mut words = f.to_vec();
            words.extend(extra);
            assert_eq!(parse(&args(&words)), None, "{words:?}");
        }
        assert_eq!(parse(&args(&f[..2])), None, "two names");
        assert_eq!(parse(&[]), None);
        use std::os::unix::ffi::OsStringExt;
        let mut bad = args(&f);
        bad[2] = OsString::from_vec(b"pg_wal/\xff".to_vec());
        assert_eq!(parse(&bad), None, "not UTF-8");
    }
}
