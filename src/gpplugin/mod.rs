//! The gpbackup/gprestore storage-plugin entry point (`gpbackup_s3_plugin <command> ...`).
//!
//! This build answers the two version probes gpbackup sends first. The data commands are not in
//! this build yet: they fail with a one-line error and a non-zero exit, so gpbackup stops before
//! writing a backup it could not restore, rather than believing an upload happened.

use std::io::Write;

use crate::error::Exit;

/// The plugin API version this plugin speaks.
pub const API_VERSION: &str = "0.5.0";

/// Runs one plugin invocation. `argv[0]` is the program path, `argv[1]` the command.
pub fn run(argv: &[String], out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    let name = argv
        .first()
        .and_then(|p| std::path::Path::new(p).file_name())
        .map_or("gpbackup_s3_plugin".into(), |n| {
            n.to_string_lossy().into_owned()
        });
    let cmd = argv.get(1).map(String::as_str);
    let args = argv.len().saturating_sub(2);
    let print = |out: &mut dyn Write, s: String| {
        if writeln!(out, "{s}").is_ok() {
            Exit::Success
        } else {
            Exit::Failed
        }
    };
    match cmd {
        Some("--version") => print(out, format!("{name} version {}", env!("CARGO_PKG_VERSION"))),
        Some("plugin_api_version") if args == 0 => print(out, API_VERSION.to_string()),
        Some("plugin_api_version") => {
            let _ = writeln!(
                err,
                "{name}: Invalid number of arguments to plugin command. Expected 0 arguments. Got {args} arguments"
            );
            Exit::Failed
        }
        Some(
            c @ ("setup_plugin_for_backup"
            | "setup_plugin_for_restore"
            | "cleanup_plugin_for_backup"
            | "cleanup_plugin_for_restore"
            | "backup_file"
            | "restore_file"
            | "backup_data"
            | "restore_data"
            | "restore_data_subset"
            | "delete_backup"
            | "list_directory"
            | "delete_directory"
            | "backup_directory"
            | "backup_directory_parallel"
            | "restore_directory"
            | "restore_directory_parallel"),
        ) => {
            let _ = writeln!(
                err,
                "{name}: {c} is not available in this build of barmans3 {}; use a build with gpbackup plugin support",
                env!("CARGO_PKG_VERSION")
            );
            Exit::Failed
        }
        Some(other) => {
            let _ = writeln!(err, "No help topic for '{other}'");
            Exit::UnknownCommand
        }
        None => {
            let _ = writeln!(err, "usage: {name} <command> <config.yaml> [args...]");
            Exit::Failed
        }
    }
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
    fn unavailable_and_unknown_commands_fail_without_stdout() {
        let (code, out, err) = call(&["backup_data", "/tmp/c.yaml", "/a/b/c/d"]);
        assert_eq!(code, Exit::Failed);
        assert!(out.is_empty() && err.contains("backup_data"));
        let (code, out, _) = call(&["frobnicate"]);
        assert_eq!((code, out.as_str()), (Exit::UnknownCommand, ""));
        assert_eq!(call(&["plugin_api_version", "x"]).0, Exit::Failed);
    }
}
