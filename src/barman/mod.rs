//! The Barman companion: hook, queue, base and WAL sync, listing, safe remote deletion and
//! restore, on the shared transfer engine. Each submodule owns one piece; [`cmd`] runs them
//! for the CLI.

pub mod admin;
pub mod backup;
pub mod basesync;
pub mod cmd;
pub mod conf;
pub mod fullsync;
pub mod info;
pub mod queue;
pub mod remote;
pub mod restore;
pub mod wal;
pub mod walsync;
