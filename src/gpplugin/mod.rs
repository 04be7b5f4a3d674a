//! The gpbackup/gprestore storage plugin: `gpbackup_s3_plugin <command> <config> ...` (also
//! `barmans3 gp-plugin <command> ...`). This module owns argv handling, argument counts, the
//! exit codes of the plugin protocol (0 ok, 1 error, 3 unknown command) and the runtime; the
//! command bodies are in [`commands`], the config file in [`config`], the log in [`log`].
//!
//! stdout carries only the two version answers, `list_directory`'s table, and the data of
//! `restore_data` / `restore_data_subset`. Errors are one line on stderr and in the log.

pub mod commands;
pub mod config;
pub mod log;

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Exit, Result};
use commands::Plugin;
use config::{PluginConfig, Verbosity};

/// The plugin API version this plugin speaks.
pub const API_VERSION: &str = "0.5.0";

/// Default worker count of the `*_directory_parallel` commands.
const DEFAULT_WORKERS: usize = 5;

/// Accepted argument counts (after the command) of every command.
const COMMANDS: &[(&str, usize, usize)] = &[
    ("setup_plugin_for_backup", 3, 4),
    ("setup_plugin_for_restore", 3, 4),
    ("cleanup_plugin_for_backup", 3, 4),
    ("cleanup_plugin_for_restore", 3, 4),
    ("backup_file", 2, 2),
    ("restore_file", 2, 2),
    ("backup_data", 2, 2),
    ("restore_data", 2, 2),
    ("restore_data_subset", 3, 3),
    ("delete_backup", 2, 2),
    ("list_directory", 1, 2),
    ("delete_directory", 2, 2),
    ("backup_directory", 2, 3),
    ("backup_directory_parallel", 2, 3),
    ("restore_directory", 2, 3),
    ("restore_directory_parallel", 2, 3),
];

const USAGE: &str = "usage: gpbackup_s3_plugin <command> <config.yaml> [args...]

Commands (gpbackup/gprestore storage plugin API 0.5.0):
  --version, plugin_api_version
  setup_plugin_for_backup|setup_plugin_for_restore <config> <local_dir> <scope> [<content>]
  cleanup_plugin_for_backup|cleanup_plugin_for_restore <config> <local_dir> <scope> [<content>]
  backup_file|restore_file <config> <path>
  backup_data <config> <data_filekey>            (reads stdin)
  restore_data <config> <data_filekey>           (writes stdout)
  restore_data_subset <config> <data_filekey> <offsets_file>
  delete_backup <config> <YYYYMMDDHHMMSS>
  list_directory <config> [<prefix>]
  delete_directory <config> <prefix inside folder>
";

/// Runs one plugin invocation. `argv[0]` is the program path, `argv[1]` the command.
pub fn run(argv: &[String], out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    let name = argv
        .first()
        .and_then(|p| Path::new(p).file_name())
        .map_or(log::PROGRAM.into(), |n| n.to_string_lossy().into_owned());
    let print = |out: &mut dyn Write, s: &str| {
        if out
            .write_all(s.as_bytes())
            .and_then(|()| out.flush())
            .is_ok()
        {
            Exit::Success
        } else {
            Exit::Failed
        }
    };
    let Some(cmd) = argv.get(1).map(String::as_str) else {
        return print(out, USAGE);
    };
    let args = &argv[2..];
    let fail = |err: &mut dyn Write, msg: &str| {
        let _ = writeln!(err, "{}", log::line("ERROR", msg));
        Exit::Failed
    };
    match cmd {
        "--version" => {
            return print(
                out,
                &format!("{name} version {}\n", env!("CARGO_PKG_VERSION")),
            );
        }
        "help" | "h" | "--help" | "-h" => return print(out, USAGE),
        "plugin_api_version" if args.is_empty() => return print(out, &format!("{API_VERSION}\n")),
        "plugin_api_version" => {
            return fail(
                err,
                &format!(
                    "Invalid number of arguments to plugin command. Expected 0 arguments. Got {} arguments",
                    args.len()
                ),
            );
        }
        _ => {}
    }
    let Some(&(_, min, max)) = COMMANDS.iter().find(|(c, _, _)| *c == cmd) else {
        let _ = writeln!(err, "No help topic for '{cmd}'");
        return Exit::UnknownCommand;
    };
    if !(min..=max).contains(&args.len()) {
        let expected = if min == max {
            min.to_string()
        } else {
            format!("{min} or {max}")
        };
        return fail(
            err,
            &format!(
                "Invalid number of arguments to plugin command {cmd}. Expected {expected} arguments. Got {} arguments",
                args.len()
            ),
        );
    }
    // Commands that need no config: the reference answers these without reading it.
    let bucket_scope = || matches!(args[2].as_str(), "master" | "coordinator" | "segment_host");
    let no_op = match cmd {
        "cleanup_plugin_for_backup" | "cleanup_plugin_for_restore" => true,
        "setup_plugin_for_backup" | "setup_plugin_for_restore" => !bucket_scope(),
        _ => false,
    };
    if no_op {
        return Exit::Success;
    }
    if cmd == "delete_backup"
        && let Err(e) = commands::check_timestamp(&args[1])
    {
        return fail(err, &e.one_line());
    }
    let cfg = match PluginConfig::load(Path::new(&args[0])) {
        Ok(c) => c,
        Err(e) => {
            let target = log::init(Verbosity::Info);
            tracing::error!("{}", e.one_line());
            if target != log::LogTarget::Stderr {
                return fail(err, &e.one_line());
            }
            return Exit::Failed;
        }
    };
    let target = log::init(cfg.verbosity);
    if cfg.credentials.is_some()
        && let Err(e) =
            crate::config::check_permissions(&cfg.path, crate::config::PermissionPolicy::Warn)
    {
        tracing::warn!("{}", e.one_line());
    }
    tracing::debug!("{cmd} {}", args[1..].join(" "));
    let result = execute(cfg, cmd, &args[1..], out);
    match result {
        Ok(()) => Exit::Success,
        Err(e) => {
            let msg = format!("{cmd}: {}", e.one_line());
            tracing::error!("{msg}");
            if target != log::LogTarget::Stderr {
                let _ = writeln!(err, "{}", log::line("ERROR", &msg));
            }
            Exit::Failed
        }
    }
}

fn workers(arg: Option<&String>) -> Result<usize> {
    match arg {
        None => Ok(DEFAULT_WORKERS),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=256).contains(&n) => Ok(n),
            _ => Err(Error::Usage(format!(
                "worker count {s:?}: use a whole number from 1 to 256"
            ))),
        },
    }
}

fn execute(cfg: PluginConfig, cmd: &str, a: &[String], out: &mut dyn Write) -> Result<()> {
    crate::runtime::block_on(|cancel| async move {
        let plugin = Plugin::new(cfg, cancel);
        match cmd {
            "setup_plugin_for_backup" => plugin.setup_backup(&a[0]).await,
            "setup_plugin_for_restore" => plugin.setup_restore().await,
            "backup_file" => plugin.backup_file(&a[0]).await,
            "restore_file" => plugin.restore_file(&a[0]).await,
            "backup_data" => plugin.backup_data(&a[0]).await,
            "restore_data" => plugin.restore_data(&a[0]).await,
            "restore_data_subset" => plugin.restore_data_subset(&a[0], &a[1]).await,
            "delete_backup" => plugin.delete_backup(&a[0]).await,
            "list_directory" => {
                plugin
                    .list_directory(a.first().map(String::as_str), out)
                    .await
            }
            "delete_directory" => plugin.delete_directory(&a[0]).await,
            "backup_directory" => plugin.backup_directory(&a[0], 1).await,
            "backup_directory_parallel" => plugin.backup_directory(&a[0], workers(a.get(1))?).await,
            "restore_directory" => plugin.restore_directory(&a[0], 1).await,
            "restore_directory_parallel" => {
                plugin.restore_directory(&a[0], workers(a.get(1))?).await
            }
            other => Err(Error::Usage(format!("{other}: not a data command"))),
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
