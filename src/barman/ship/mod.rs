//! Shipping: everything that takes Barman's backups and WALs to the bucket and keeps the bucket
//! in step: the hook's queue, base-sync and full-sync with their pure decisions (eligibility,
//! reuse, retention), which files of a backup are already there, wal-sync and its plan, `--follow`, Object Lock on deletes, and our state.

pub mod backup;
pub mod basesync;
pub mod eligibility;
pub mod follow;
pub mod fullsync;
pub mod locks;
pub mod present;
pub mod queue;
pub mod retention;
pub mod reuse;
pub mod state;
pub mod walplan;
pub mod walscan;
pub mod walsync;
