//! The gpbackup/gprestore storage plugin: `gpbackup_s3_plugin <command> <config> ...` (also
//! `barmans3 gp-plugin <command> ...`). This module owns one invocation from argv to exit code:
//! the exit codes of the plugin protocol (0 ok, 1 error, 3 unknown command), where errors go,
//! config and log set-up, the runtime, and the dispatch of each command. The command table is
//! in [`protocol`], the command bodies in [`commands`], the config file in [`config`], the log
//! in [`log`], the path from the engine to the caller's stdout in [`output`].
//!
//! stdout carries only the two version answers, `list_directory`'s table, and the data of
//! `restore_data` / `restore_data_subset`. Errors are one line on stderr and in the log.

pub mod commands;
pub mod config;
pub mod log;
pub mod output;
pub mod protocol;

use std::io::Write;
use std::path::Path;

use crate::error::{Exit, Result};
use commands::Plugin;
use config::{PluginConfig, Verbosity};
use protocol::{PluginCommand, Request, USAGE};

/// The plugin API version this plugin speaks.
pub const API_VERSION: &str = "0.5.0";

/// Runs one plugin invocation. `argv[0]` is the program path, `argv[1]` the command.
pub fn run(argv: &[String], out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    let request = match Request::parse(argv.get(1..).unwrap_or_default()) {
        Ok(r) => r,
        Err(e) => return fail(err, &e.one_line()),
    };
    match request {
        Request::Usage => print(out, USAGE),
        Request::Version => print(
            out,
            &format!("{} version {}\n", program(argv), env!("CARGO_PKG_VERSION")),
        ),
        Request::ApiVersion => print(out, &format!("{API_VERSION}\n")),
        Request::Unknown(name) => {
            let _ = writeln!(err, "No help topic for '{name}'");
            Exit::UnknownCommand
        }
        // Commands with nothing to do on this host: the reference answers these without
        // reading the config.
        Request::Command { command, .. } if command.is_no_op() => Exit::Success,
        Request::Command { config, command } => {
            // A command has a name (argv[1]) and a config (argv[2]), so both slices exist.
            let (name, operands) = (&argv[1], &argv[3..]);
            let Some((cfg, target)) = load_config(&config, err) else {
                return Exit::Failed;
            };
            tracing::debug!("{name} {}", operands.join(" "));
            match execute(cfg, command, out) {
                Ok(()) => Exit::Success,
                Err(e) => {
                    let msg = format!("{name}: {}", e.one_line());
                    tracing::error!("{msg}");
                    if target != log::LogTarget::Stderr {
                        let _ = writeln!(err, "{}", log::line("ERROR", &msg));
                    }
                    Exit::Failed
                }
            }
        }
    }
}

/// The program's file name, for `--version`.
fn program(argv: &[String]) -> String {
    argv.first()
        .and_then(|p| Path::new(p).file_name())
        .map_or(log::PROGRAM.into(), |n| n.to_string_lossy().into_owned())
}

/// Writes one of the plugin's answers to stdout.
fn print(out: &mut dyn Write, s: &str) -> Exit {
    if out
        .write_all(s.as_bytes())
        .and_then(|()| out.flush())
        .is_ok()
    {
        Exit::Success
    } else {
        Exit::Failed
    }
}

/// Writes `msg` to stderr as one gplog `ERROR` line; the invocation fails (exit 1).
fn fail(err: &mut dyn Write, msg: &str) -> Exit {
    let _ = writeln!(err, "{}", log::line("ERROR", msg));
    Exit::Failed
}

/// Reads the config and sets up the log at its verbosity. On a bad config the error goes to the
/// log at `info`, and also to stderr when the log is a file; `None` then means exit 1.
fn load_config(path: &Path, err: &mut dyn Write) -> Option<(PluginConfig, log::LogTarget)> {
    let cfg = match PluginConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            let target = log::init(Verbosity::Info);
            tracing::error!("{}", e.one_line());
            if target != log::LogTarget::Stderr {
                fail(err, &e.one_line());
            }
            return None;
        }
    };
    let target = log::init(cfg.verbosity);
    if cfg.credentials.is_some()
        && let Err(e) =
            crate::config::check_permissions(&cfg.path, crate::config::PermissionPolicy::Warn)
    {
        tracing::warn!("{}", e.one_line());
    }
    Some((cfg, target))
}

/// Runs one command on the bucket. Data for stdout goes to `out`.
fn execute(cfg: PluginConfig, command: PluginCommand, out: &mut dyn Write) -> Result<()> {
    use PluginCommand as C;
    crate::runtime::block_on(|cancel| async move {
        let plugin = &Plugin::new(cfg, cancel);
        match command {
            C::SetupBackup { local_dir, .. } => plugin.setup_backup(&local_dir).await,
            C::SetupRestore { .. } => plugin.setup_restore().await,
            // Answered in `run` before the config is read; nothing to do here either.
            C::CleanupBackup | C::CleanupRestore => Ok(()),
            C::BackupFile { path } => plugin.backup_file(&path).await,
            C::RestoreFile { path } => plugin.restore_file(&path).await,
            C::BackupData { key } => plugin.backup_data(&key).await,
            C::RestoreData { key } => {
                output::piped(out, |mut pipe| async move {
                    plugin.restore_data(&key, &mut pipe).await
                })
                .await
            }
            C::RestoreDataSubset { key, offsets } => {
                output::piped(out, |mut pipe| async move {
                    plugin.restore_data_subset(&key, &offsets, &mut pipe).await
                })
                .await
            }
            C::DeleteBackup { timestamp } => plugin.delete_backup(&timestamp).await,
            C::ListDirectory { prefix } => plugin.list_directory(prefix.as_deref(), out).await,
            C::DeleteDirectory { prefix } => plugin.delete_directory(&prefix).await,
            C::BackupDirectory { dir, workers } => {
                plugin.backup_directory(&dir, workers.count()?).await
            }
            C::RestoreDirectory { prefix, workers } => {
                plugin.restore_directory(&prefix, workers.count()?).await
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(args: &[&str]) -> (Exit, String, String) {
        let argv: Vec<String> = std::iter::once("/usr/local/bin/gpbackup_s3_plugin")
            .chain(args.iter().copied())
            .map(String::from)
            .collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(&argv, &mut out, &mut err);
        (
            code,
            String::from_utf8_lossy(&out).into(),
            String::from_utf8_lossy(&err).into(),
        )
    }

    #[test]
    fn version_probes_answer_on_stdout() {
        assert_eq!(
            call(&["plugin_api_version"]),
            (Exit::Success, "0.5.0\n".into(), String::new())
        );
        let (code, out, _) = call(&["--version"]);
        assert_eq!(code, Exit::Success);
        let tokens: Vec<_> = out.trim().split(' ').collect();
        assert_eq!(tokens.len(), 3);
        assert_eq!(&tokens[..2], ["gpbackup_s3_plugin", "version"]);
    }

    #[test]
    fn counts_and_unknown_commands_fail_without_stdout() {
        let (code, out, err) = call(&["backup_data", "/tmp/c.yaml"]);
        assert_eq!(code, Exit::Failed);
        assert!(
            out.is_empty() && err.contains("Expected 2 arguments. Got 1"),
            "{err}"
        );
        let (code, out, err) = call(&["frobnicate"]);
        assert_eq!((code, out.as_str()), (Exit::UnknownCommand, ""));
        assert!(err.contains("No help topic for 'frobnicate'"));
        assert_eq!(call(&["plugin_api_version", "x"]).0, Exit::Failed);
        assert_eq!(call(&[]).0, Exit::Success);
    }

    #[test]
    fn no_op_scopes_and_cleanups_need_no_config() {
        for args in [
            [
                "cleanup_plugin_for_backup",
                "/nonexistent.yaml",
                "/d",
                "master",
            ],
            [
                "setup_plugin_for_backup",
                "/nonexistent.yaml",
                "/d",
                "segment",
            ],
            [
                "setup_plugin_for_restore",
                "/nonexistent.yaml",
                "/d",
                "whatever",
            ],
        ] {
            assert_eq!(call(&args).0, Exit::Success, "{args:?}");
        }
    }
}
