//! Progress reporting behind a small trait, so the engine never touches the terminal.
//!
//! The engine reports work added, bytes moved and objects started or finished; the binary picks
//! the implementation (a terminal bar, log lines, or nothing in plugin mode and under cron).

use std::fmt;

/// Receives progress events from the engine. Every method has a no-op default.
pub trait Progress: Send + Sync + fmt::Debug {
    /// More work became known.
    fn add_work(&self, _objects: u64, _bytes: u64) {}
    /// Bytes were transferred (uploaded or downloaded and verified as part of an object).
    fn bytes_done(&self, _bytes: u64) {}
    /// An object transfer started.
    fn object_started(&self, _key: &str, _size: u64) {}
    /// An object transfer finished (successfully or not).
    fn object_done(&self, _key: &str) {}
}

/// Reports nothing (plugin mode, cron, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {}
