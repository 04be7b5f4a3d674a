//! The `store` command line: object-level operations on the configured store.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

use super::invocation::{Sink, Source, StoreAction};
use super::parse_age;

/// `store` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum StoreCommand {
    /// Upload a local file (or - for stdin) to KEY under the configured prefix
    Put {
        /// Local file, or - for standard input
        source: String,
        /// Object key, relative to the prefix
        key: String,
    },
    /// Download KEY to a local file (or - for stdout), verified
    Get {
        /// Object key, relative to the prefix
        key: String,
        /// Local file, or - for standard output
        dest: String,
    },
    /// List objects under a prefix: size and key, one line each
    ///
    /// Keys are printed relative to the configured prefix, as `store get` takes them. A control
    /// character in a key is printed escaped (\n, \r, \t, \xHH, \uHHHH) and a backslash
    /// doubled, so a key can never start a line of its own; `printf '%b' KEY` undoes it.
    Ls {
        /// Key prefix, relative to the configured prefix
        #[arg(default_value = "")]
        prefix: String,
        /// Print whole keys, with the configured prefix
        #[arg(long)]
        absolute: bool,
    },
    /// List incomplete multipart uploads; with --abort-older-than, abort the stale ones
    Uploads {
        /// Abort uploads started longer ago than this (e.g. 24h)
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        abort_older_than: Option<Duration>,
    },
}

pub(super) fn store_action(c: StoreCommand) -> StoreAction {
    match c {
        StoreCommand::Put { source, key } => StoreAction::Put {
            source: if source == "-" {
                Source::Stdin
            } else {
                Source::File(PathBuf::from(source))
            },
            key,
        },
        StoreCommand::Get { key, dest } => StoreAction::Get {
            key,
            dest: if dest == "-" {
                Sink::Stdout
            } else {
                Sink::File(PathBuf::from(dest))
            },
        },
        StoreCommand::Ls { prefix, absolute } => StoreAction::Ls { prefix, absolute },
        StoreCommand::Uploads { abort_older_than } => StoreAction::Uploads { abort_older_than },
    }
}
