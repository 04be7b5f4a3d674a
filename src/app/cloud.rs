//! The commands on a bucket barman-cloud wrote (`--layout barman-cloud`) as the CLI runs them:
//! the listing printed (stdout is data), the work in [`crate::barman::cloud`].

use crate::barman::cloud::list::backups;
use crate::barman::remote::BucketLayout;
use crate::barman::server::Server;
use crate::cli::invocation::Options;
use crate::config::Config;
use crate::error::{Exit, Result};
use crate::transfer::Transfer;
use crate::units::human_bytes;

/// `base-ls SERVER --layout barman-cloud`.
pub(super) async fn base_ls(o: &Options, cfg: &Config, t: &Transfer, server: &str) -> Result<Exit> {
    let srv = Server::new(t, cfg.location.prefix(), server).with_layout(BucketLayout::BarmanCloud);
    let list = backups(&srv).await?;
    if list.is_empty() {
        eprintln!(
            "barmans3 base-ls: no barman-cloud backups for {server} in {} (keys {}*)",
            cfg.location,
            srv.remote.base_prefix()
        );
    }
    if o.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        )?;
        return Ok(Exit::Success);
    }
    outln!(
        "{:<16} {:<8} {:<19} {:>10}  {:<24}  {:<6} {:<4} COMPLETE",
        "ID",
        "STATUS",
        "END",
        "STORED",
        "BEGIN WAL",
        "COMPR",
        "TBS"
    )?;
    for b in list {
        outln!(
            "{:<16} {:<8} {:<19} {:>10}  {:<24}  {:<6} {:<4} {}",
            b.id,
            if b.status.is_empty() { "-" } else { &b.status },
            b.end_time
                .as_deref()
                .map_or("-", |t| t.get(..19).unwrap_or(t)),
            human_bytes(b.stored),
            b.begin_wal.as_deref().unwrap_or("-"),
            b.compression,
            b.tablespaces.len(),
            match &b.problem {
                None => "yes".to_string(),
                Some(p) => format!("no ({p})"),
            }
        )?;
    }
    Ok(Exit::Success)
}
