//! Recovery: everything that brings a server back from the bucket alone: base-restore,
//! wal-restore with its prefetcher and spool, timeline history, and catalog-restore of a lost
//! Barman host.

pub mod catalog;
pub mod restore;
pub mod timeline;
pub mod walrestore;

use std::path::Path;
use std::time::Duration;

use crate::barman::conf::BarmanConf;
use crate::codec::{Decryption, Filter};

/// How the files Barman encrypted for `server` (`encryption = gpg`) are decrypted:
/// `barman.decryption_command` when set; else gpg with the passphrase Barman's own
/// `encryption_passphrase_command` for the server prints, when the Barman config at
/// `barman_conf` can be read (a host restoring from the bucket alone may have none).
pub fn decryption(
    command: Option<&Filter>,
    barman_conf: &Path,
    server: &str,
    timeout: Duration,
) -> Option<Decryption> {
    if let Some(f) = command {
        return Some(Decryption::command(f.clone()));
    }
    let conf = match BarmanConf::load(barman_conf) {
        Ok(conf) => conf,
        Err(e) => {
            tracing::debug!("no Barman config to decrypt with: {e}");
            return None;
        }
    };
    let cmd = conf.setting(server, "encryption_passphrase_command")?;
    let cmd = cmd.trim();
    (!cmd.is_empty()).then(|| {
        let source = format!("{} [{server}]", barman_conf.display());
        Decryption::barman(cmd, source, timeout)
    })
}
