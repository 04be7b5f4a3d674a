//! The Barman companion: hook, queue, base and WAL sync, listing, safe remote deletion and
//! restore, on the shared transfer engine. Each submodule owns one piece; `crate::app` runs them
//! for the CLI. Nothing here prints to stdout or knows an exit code.

pub mod admin;
pub mod backup;
pub mod basesync;
pub mod catalog;
pub mod conf;
pub mod eligibility;
pub mod follow;
pub mod fullsync;
pub mod info;
pub mod locks;
pub mod manifest;
pub mod metrics;
pub mod prefetch;
pub mod queue;
pub mod remote;
pub mod restore;
pub mod retention;
pub mod reuse;
pub mod spool;
pub mod state;
pub mod timeline;
pub mod verify;
pub mod wal;
pub mod walplan;
pub mod walrestore;
pub mod walsync;
