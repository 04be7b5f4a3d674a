//! A Barman server as one run reaches it in the bucket: the run's engine and the server's keys,
//! handed around together because nearly everything `ship`, `recover` and `observe` do with the
//! bucket needs both.

use crate::barman::remote::Remote;
use crate::transfer::Transfer;

/// One server's side of the bucket, for one run. Cheap to clone (the engine is shared).
#[derive(Debug, Clone)]
pub struct Server {
    /// The run's engine.
    pub t: Transfer,
    /// Where the server's objects are.
    pub remote: Remote,
    /// The server's name (its Barman section), for messages.
    pub name: String,
}

impl Server {
    /// Server `name` under the configured key prefix, reached through `t`.
    pub fn new(t: &Transfer, prefix: &str, name: &str) -> Server {
        Server {
            t: t.clone(),
            remote: Remote::new(prefix, name),
            name: name.to_string(),
        }
    }

    /// The backup ids under the server's `base/` (names that are not backup ids ignored), in
    /// listing order.
    pub async fn backup_ids(&self) -> crate::error::Result<Vec<String>> {
        let base = self.remote.base_prefix();
        let req = crate::store::ListRequest {
            prefix: base.clone(),
            delimiter: Some("/".into()),
            ..Default::default()
        };
        let mut ids = Vec::new();
        self.t
            .list_pages(&req, |_, prefixes| {
                ids.extend(
                    prefixes
                        .iter()
                        .filter_map(|p| p.strip_prefix(&base)?.strip_suffix('/'))
                        .filter(|id| crate::barman::info::is_backup_id(id))
                        .map(str::to_string),
                );
                true
            })
            .await?;
        Ok(ids)
    }

    /// The same server, its keys written in `layout`.
    pub fn with_layout(mut self, layout: crate::barman::remote::BucketLayout) -> Server {
        self.remote = self.remote.with_layout(layout);
        self
    }
}
