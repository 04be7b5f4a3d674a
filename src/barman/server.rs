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

    /// The same server, its keys written in `layout`.
    pub fn with_layout(mut self, layout: crate::barman::remote::BucketLayout) -> Server {
        self.remote = self.remote.with_layout(layout);
        self
    }
}
