//! The plugin's command table: every name gpbackup/gprestore may call, its argument counts and
//! its arguments parsed into one typed [`Request`]; the usage text that lists them lives here too.
//! Nothing here reads the config or touches the network.

use std::path::PathBuf;

use super::commands::check_timestamp;
use crate::error::{Error, Result};

/// Default worker count of the `*_directory_parallel` commands.
const DEFAULT_WORKERS: usize = 5;

/// The answer to no command and to `help`.
pub const USAGE: &str = "usage: gpbackup_s3_plugin <command> <config.yaml> [args...]

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

/// What one invocation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// No command, or `help`, `h`, `--help`, `-h` (with any arguments): [`USAGE`].
    Usage,
    /// `--version` (with any arguments): `<program> version <crate version>`.
    Version,
    /// `plugin_api_version`: [`super::API_VERSION`].
    ApiVersion,
    /// A name that is no command: gpbackup expects urfave-cli's `No help topic` and exit 3.
    Unknown(String),
    /// A plugin command with the config file named by its first argument.
    Command {
        /// The plugin config file.
        config: PathBuf,
        /// The command and its other arguments.
        command: PluginCommand,
    },
}

/// A plugin command with its arguments after the config, counted and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginCommand {
    /// `setup_plugin_for_backup <config> <local_dir> <scope> [<content>]`.
    SetupBackup {
        /// The local backup directory of this host.
        local_dir: String,
        /// `master`, `coordinator`, `segment_host` or `segment`.
        scope: String,
    },
    /// `setup_plugin_for_restore <config> <local_dir> <scope> [<content>]`.
    SetupRestore {
        /// As for [`PluginCommand::SetupBackup`].
        scope: String,
    },
    /// `cleanup_plugin_for_backup <config> <local_dir> <scope> [<content>]`.
    CleanupBackup,
    /// `cleanup_plugin_for_restore <config> <local_dir> <scope> [<content>]`.
    CleanupRestore,
    /// `backup_file <config> <path>`.
    BackupFile {
        /// The local file.
        path: String,
    },
    /// `restore_file <config> <path>`.
    RestoreFile {
        /// The local file.
        path: String,
    },
    /// `backup_data <config> <data_filekey>`: stdin to the bucket.
    BackupData {
        /// The path the object key is made from.
        key: String,
    },
    /// `restore_data <config> <data_filekey>`: the object to stdout.
    RestoreData {
        /// The path the object key is made from.
        key: String,
    },
    /// `restore_data_subset <config> <data_filekey> <offsets_file>`: ranges to stdout.
    RestoreDataSubset {
        /// The path the object key is made from.
        key: String,
        /// The file listing the byte ranges.
        offsets: String,
    },
    /// `delete_backup <config> <YYYYMMDDHHMMSS>`.
    DeleteBackup {
        /// The backup timestamp, already checked to be 14 digits.
        timestamp: String,
    },
    /// `list_directory <config> [<prefix>]`.
    ListDirectory {
        /// The key prefix; `None` lists the folder.
        prefix: Option<String>,
    },
    /// `delete_directory <config> <prefix inside folder>`.
    DeleteDirectory {
        /// The key prefix.
        prefix: String,
    },
    /// `backup_directory[_parallel] <config> <dir> [<workers>]`.
    BackupDirectory {
        /// The local directory.
        dir: String,
        /// How many files at once.
        workers: Workers,
    },
    /// `restore_directory[_parallel] <config> <prefix> [<workers>]`.
    RestoreDirectory {
        /// The key prefix, also the local directory.
        prefix: String,
        /// How many objects at once.
        workers: Workers,
    },
}

/// How many files a directory command moves at once, as given on its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workers {
    /// `backup_directory` / `restore_directory`: one at a time; a count argument is ignored.
    Serial,
    /// The `_parallel` commands: the count argument, if one was given.
    Parallel(Option<String>),
}

impl Workers {
    /// The worker count. It is checked when the command runs, not when it is parsed, so a bad
    /// count is reported after the config and the log are set up, like any other failure of a
    /// command body (in the log, prefixed with the command name).
    pub fn count(&self) -> Result<usize> {
        match self {
            Workers::Serial => Ok(1),
            Workers::Parallel(None) => Ok(DEFAULT_WORKERS),
            Workers::Parallel(Some(s)) => match s.parse::<usize>() {
                Ok(n) if (1..=256).contains(&n) => Ok(n),
                _ => Err(Error::Usage(format!(
                    "worker count {s:?}: use a whole number from 1 to 256"
                ))),
            },
        }
    }
}

impl Request {
    /// Parses `argv` without the program path: the command name, then its arguments.
    pub fn parse(argv: &[String]) -> Result<Request> {
        let Some((name, args)) = argv.split_first() else {
            return Ok(Request::Usage);
        };
        match name.as_str() {
            "--version" => Ok(Request::Version),
            "help" | "h" | "--help" | "-h" => Ok(Request::Usage),
            "plugin_api_version" if args.is_empty() => Ok(Request::ApiVersion),
            // The reference names no command in this one message.
            "plugin_api_version" => Err(Error::Usage(format!(
                "Invalid number of arguments to plugin command. Expected 0 arguments. Got {} arguments",
                args.len()
            ))),
            _ => Ok(match PluginCommand::parse(name, args)? {
                Some(command) => Request::Command {
                    config: PathBuf::from(&args[0]),
                    command,
                },
                None => Request::Unknown(name.clone()),
            }),
        }
    }
}

impl PluginCommand {
    /// The command `name` with `args` (config first), or `None` if `name` is no plugin command.
    /// Argument counts include the config, as in the reference's messages.
    pub fn parse(name: &str, args: &[String]) -> Result<Option<PluginCommand>> {
        use PluginCommand as C;
        let take = |min, max| operands(name, args, min, max);
        let dir_workers = |parallel: bool| -> Result<(String, Workers)> {
            let a = take(2, 3)?;
            let workers = if parallel {
                Workers::Parallel(a.get(1).cloned())
            } else {
                Workers::Serial
            };
            Ok((a[0].clone(), workers))
        };
        let command = match name {
            "setup_plugin_for_backup" => {
                let a = take(3, 4)?;
                let (local_dir, scope) = (a[0].clone(), a[1].clone());
                C::SetupBackup { local_dir, scope }
            }
            "setup_plugin_for_restore" => C::SetupRestore {
                scope: take(3, 4)?[1].clone(),
            },
            "cleanup_plugin_for_backup" => take(3, 4).map(|_| C::CleanupBackup)?,
            "cleanup_plugin_for_restore" => take(3, 4).map(|_| C::CleanupRestore)?,
            "backup_file" => C::BackupFile { path: one(take)? },
            "restore_file" => C::RestoreFile { path: one(take)? },
            "backup_data" => C::BackupData { key: one(take)? },
            "restore_data" => C::RestoreData { key: one(take)? },
            "restore_data_subset" => {
                let a = take(3, 3)?;
                let (key, offsets) = (a[0].clone(), a[1].clone());
                C::RestoreDataSubset { key, offsets }
            }
            "delete_backup" => {
                let timestamp = one(take)?;
                // Checked before the config is read: a bad timestamp needs no bucket to refuse.
                check_timestamp(&timestamp)?;
                C::DeleteBackup { timestamp }
            }
            "list_directory" => C::ListDirectory {
                prefix: take(1, 2)?.first().cloned(),
            },
            "delete_directory" => C::DeleteDirectory { prefix: one(take)? },
            "backup_directory" | "backup_directory_parallel" => {
                let (dir, workers) = dir_workers(name.ends_with("_parallel"))?;
                C::BackupDirectory { dir, workers }
            }
            "restore_directory" | "restore_directory_parallel" => {
                let (prefix, workers) = dir_workers(name.ends_with("_parallel"))?;
                C::RestoreDirectory { prefix, workers }
            }
            _ => return Ok(None),
        };
        Ok(Some(command))
    }

    /// Whether the command has nothing to do on this host: the cleanups, and the setups outside
    /// the scopes that probe the bucket. The reference answers these without reading the config.
    pub fn is_no_op(&self) -> bool {
        let probes = |scope: &str| matches!(scope, "master" | "coordinator" | "segment_host");
        match self {
            PluginCommand::CleanupBackup | PluginCommand::CleanupRestore => true,
            PluginCommand::SetupBackup { scope, .. } | PluginCommand::SetupRestore { scope } => {
                !probes(scope)
            }
            _ => false,
        }
    }
}

/// The single operand of a command taking exactly `<config> <operand>`.
fn one<'a>(take: impl Fn(usize, usize) -> Result<&'a [String]>) -> Result<String> {
    Ok(take(2, 2)?[0].clone())
}

/// `args` after the config, once their count (config included) is within `min..=max`.
fn operands<'a>(name: &str, args: &'a [String], min: usize, max: usize) -> Result<&'a [String]> {
    if !(min..=max).contains(&args.len()) {
        let expected = if min == max {
            min.to_string()
        } else {
            format!("{min} or {max}")
        };
        return Err(Error::Usage(format!(
            "Invalid number of arguments to plugin command {name}. Expected {expected} arguments. Got {} arguments",
            args.len()
        )));
    }
    Ok(&args[1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, args: &[&str]) -> Result<Request> {
        let argv: Vec<String> = std::iter::once(name)
            .chain(args.iter().copied())
            .map(String::from)
            .collect();
        Request::parse(&argv)
    }

    fn command(name: &str, args: &[&str]) -> PluginCommand {
        match parse(name, args) {
            Ok(Request::Command { command, .. }) => command,
            other => panic!("{name} {args:?}: {other:?}"),
        }
    }

    #[test]
    fn probes_take_no_config() {
        assert_eq!(Request::parse(&[]).ok(), Some(Request::Usage));
        assert_eq!(parse("-h", &["x"]).ok(), Some(Request::Usage));
        assert_eq!(parse("--version", &["x"]).ok(), Some(Request::Version));
        assert_eq!(
            parse("plugin_api_version", &[]).ok(),
            Some(Request::ApiVersion)
        );
        let e = parse("plugin_api_version", &["x"]).expect_err("argument");
        assert_eq!(
            e.to_string(),
            "Invalid number of arguments to plugin command. Expected 0 arguments. Got 1 arguments"
        );
        assert_eq!(
            parse("frobnicate", &[]).ok(),
            Some(Request::Unknown("frobnicate".into()))
        );
    }

    #[test]
    fn arguments_become_typed_fields() {
        assert_eq!(
            parse("restore_data_subset", &["c.yaml", "k", "o"]).ok(),
            Some(Request::Command {
                config: PathBuf::from("c.yaml"),
                command: PluginCommand::RestoreDataSubset {
                    key: "k".into(),
                    offsets: "o".into()
                }
            })
        );
        assert_eq!(
            command("list_directory", &["c"]),
            PluginCommand::ListDirectory { prefix: None }
        );
        assert_eq!(
            command("backup_directory", &["c", "d", "9"]),
            PluginCommand::BackupDirectory {
                dir: "d".into(),
                workers: Workers::Serial
            }
        );
        assert_eq!(
            command("restore_directory_parallel", &["c", "p"]),
            PluginCommand::RestoreDirectory {
                prefix: "p".into(),
                workers: Workers::Parallel(None)
            }
        );
        let e = parse("delete_backup", &["c", "2026"]).expect_err("timestamp");
        assert!(e.to_string().contains("invalid timestamp"), "{e}");
    }

    #[test]
    fn worker_counts_are_checked_when_asked_for() {
        let count = |s: &str| Workers::Parallel(Some(s.into())).count();
        assert_eq!(count("7").ok(), Some(7));
        assert_eq!(Workers::Parallel(None).count().ok(), Some(DEFAULT_WORKERS));
        assert_eq!(Workers::Serial.count().ok(), Some(1));
        for bad in ["0", "257", "x", ""] {
            assert!(count(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_ops_are_the_cleanups_and_setups_outside_the_probing_scopes() {
        for scope in ["master", "coordinator", "segment_host"] {
            assert!(!command("setup_plugin_for_restore", &["c", "d", scope]).is_no_op());
        }
        assert!(command("setup_plugin_for_backup", &["c", "d", "segment", "3"]).is_no_op());
        assert!(command("cleanup_plugin_for_backup", &["c", "d", "master"]).is_no_op());
        assert!(!command("backup_data", &["c", "k"]).is_no_op());
    }

    /// Every command the usage text names parses with exactly the counts the text shows, so
    /// the hand-written text cannot drift from the table.
    #[test]
    fn usage_text_matches_the_table() {
        let mut checked = 0;
        let lines = USAGE.lines().skip_while(|l| !l.starts_with("Commands"));
        for line in lines.skip(2).filter(|l| !l.trim().is_empty()) {
            let mut words = line.split_whitespace();
            let names = words.next().expect("names");
            let rest = words.collect::<Vec<_>>().join(" ");
            let rest = rest.split(" (").next().unwrap_or_default();
            let max = rest.matches('<').count();
            let min = max - rest.matches("[<").count();
            for name in names.split('|') {
                // Every operand looks like a timestamp, which delete_backup checks.
                let args = |n: usize| vec!["20240101120000".to_string(); n];
                let ok = PluginCommand::parse(name, &args(min));
                assert!(matches!(ok, Ok(Some(_))), "{name} with {min}: {ok:?}");
                if min > 0 {
                    assert!(
                        PluginCommand::parse(name, &args(min - 1)).is_err(),
                        "{name}"
                    );
                }
                assert!(
                    PluginCommand::parse(name, &args(max + 1)).is_err(),
                    "{name}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 12, "commands named in the usage text");
    }
}
