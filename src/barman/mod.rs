//! The Barman companion: hook, queue, base and WAL sync, listing, safe remote deletion and
//! restore, on the shared transfer engine. `crate::app` runs it for the CLI; nothing here prints
//! to stdout or knows an exit code.
//!
//! Laid out by flow: [`ship`] takes Barman's backups and WALs to the bucket, [`recover`] brings
//! them back, [`observe`] reports on both, [`drill`] proves a restore end to end. The shared base beside them reads Barman's tree
//! ([`conf`], [`info`], [`wal`]) and knows the bucket's ([`remote`], [`manifest`]); a
//! [`server::Server`] bundles a server's keys with the run's engine.

pub mod cloud;
pub mod conf;
pub mod drill;
pub mod hooks;
pub mod info;
pub mod manifest;
pub mod observe;
pub mod recover;
pub mod remote;
pub mod replica;
pub mod server;
pub mod ship;
pub mod wal;
