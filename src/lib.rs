//! barmans3: ship PostgreSQL (Barman) and Greenplum (gpbackup) backups to S3-compatible object
//! storage and back, verified, resumable and with bounded memory.
//!
//! Layers, from the bottom: [`store`] (one trait, S3 and `file://` backends), [`transfer`]
//! (parallel, verified, retried multipart transfers), then the producers that know their
//! domain. Binaries stay thin; everything testable lives here.

pub mod app;
pub mod barman;
pub mod checksum;
pub mod cli;
pub mod clock;
pub mod codec;
pub mod config;
pub mod directio;
pub mod dplcompat;
pub mod error;
pub mod filesync;
pub mod fsutil;
pub mod gluster;
pub mod gpplugin;
pub mod lockfile;
pub mod logging;
pub mod progress;
pub mod runtime;
pub mod secret;
pub mod store;
pub mod transfer;
pub mod units;
pub mod volume;

pub use error::{Error, Exit, Result};
