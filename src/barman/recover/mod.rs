//! Recovery: everything that brings a server back from the bucket alone: base-restore,
//! wal-restore with its prefetcher and spool, timeline history, and catalog-restore of a lost
//! Barman host.

pub mod catalog;
pub mod restore;
pub mod timeline;
pub mod walrestore;
