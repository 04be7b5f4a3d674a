//! Gluster's extended attributes (spec §1.1, §1.4): their names, the namespace they live in
//! (`trusted.`, or `user.` for tests run without root), and reading and writing them without
//! following symlinks.

use std::borrow::Cow;
use std::path::Path;

use crate::error::{Error, Result};

/// The file's gfid, 16 bytes (`glusterfs.h`).
pub const GFID: &str = "trusted.gfid";
/// Set through the mount: "uploaded, truncate"; the value is the mtime in seconds.
pub const CSOU_COMPLETE: &str = "trusted.glusterfs.csou.complete";
/// Set by posix: the volume path the data was archived under. Present ⇔ remote.
pub const CS_REMOTE: &str = "trusted.glusterfs.cs.remote";
/// Set by cloudsync while a recall runs.
pub const CS_DOWNLOADING: &str = "trusted.glusterfs.cs.downloading";
/// The pre-truncation size, decimal; stat reports it whenever it is present.
pub const CS_OBJECT_SIZE: &str = "trusted.glusterfs.cs.object_size";
/// The pre-truncation block count, decimal.
pub const CS_NUM_BLOCKS: &str = "trusted.glusterfs.cs.num_blocks";
/// The pre-truncation block size, decimal.
pub const CS_BLOCK_SIZE: &str = "trusted.glusterfs.cs.block_size";
/// DHT link files (`posix.h`).
pub const DHT_LINKTO: &str = "trusted.glusterfs.dht.linkto";
/// Sharded files (`shard.h`).
pub const SHARD_BLOCK_SIZE: &str = "trusted.glusterfs.shard.block-size";
/// AFR changelogs: `trusted.afr.<vol>-client-N` and `trusted.afr.dirty`.
pub const AFR_PREFIX: &str = "trusted.afr.";
/// The virtual xattr a Gluster mount answers with the gfid of a path, as text.
pub const MOUNT_GFID_STRING: &str = "glusterfs.gfid.string";
/// The virtual xattr a Gluster mount answers with the brick paths behind a path:
/// `<POSIX(BRICK):HOST:BRICK/PATH>` per brick, nested in `(<REPLICATE:…> …)` or
/// `(<DISTRIBUTE:…> …)` groups.
pub const MOUNT_PATHINFO: &str = "glusterfs.pathinfo";
/// The gfid of a volume's root directory.
pub const ROOT_GFID: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// Where Gluster's `trusted.*` attributes are read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XattrNs {
    /// `trusted.*`, as Gluster has them (needs root).
    #[default]
    Trusted,
    /// `user.*` instead: tests run by a user who cannot write `trusted.*`.
    User,
}

impl XattrNs {
    /// The name of a `trusted.*` attribute in this namespace.
    pub fn name(self, trusted: &str) -> Cow<'_, str> {
        match (self, trusted.strip_prefix("trusted.")) {
            (XattrNs::User, Some(rest)) => Cow::Owned(format!("user.{rest}")),
            _ => Cow::Borrowed(trusted),
        }
    }

    /// Reads attribute `trusted` (mapped) of `path`; `None` when absent.
    pub fn get(self, path: &Path, trusted: &str) -> Result<Option<Vec<u8>>> {
        let name = self.name(trusted);
        xattr::get(path, name.as_ref())
            .map_err(|e| Error::io(format!("read {name} of {}", path.display()), e))
    }

    /// Reads attribute `trusted` as text (lossy; Gluster writes decimal ASCII).
    pub fn get_text(self, path: &Path, trusted: &str) -> Result<Option<String>> {
        Ok(self.get(path, trusted)?.map(|v| {
            String::from_utf8_lossy(&v)
                .trim_end_matches('\0')
                .to_string()
        }))
    }

    /// Writes attribute `trusted` (mapped) of `path`.
    pub fn set(self, path: &Path, trusted: &str, value: &[u8]) -> std::io::Result<()> {
        xattr::set(path, self.name(trusted).as_ref(), value)
    }

    /// Removes attribute `trusted` (mapped) of `path`; absent is fine.
    pub fn remove(self, path: &Path, trusted: &str) -> Result<()> {
        let name = self.name(trusted);
        match xattr::remove(path, name.as_ref()) {
            Err(e) if e.raw_os_error() != Some(61) => {
                Err(Error::io(format!("remove {name} of {}", path.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// Values of every attribute whose `trusted.*` name starts with `trusted_prefix`.
    pub fn with_prefix(self, path: &Path, trusted_prefix: &str) -> Result<Vec<Vec<u8>>> {
        let prefix = self.name(trusted_prefix);
        let names = xattr::list(path)
            .map_err(|e| Error::io(format!("list xattrs of {}", path.display()), e))?;
        let mut out = Vec::new();
        for n in names {
            if n.to_string_lossy().starts_with(prefix.as_ref())
                && let Some(v) = xattr::get(path, &n)
                    .map_err(|e| Error::io(format!("read xattr of {}", path.display()), e))?
            {
                out.push(v);
            }
        }
        Ok(out)
    }
}

/// A 16-byte gfid value, if it is one.
pub fn gfid_of(value: Option<Vec<u8>>) -> Option<[u8; 16]> {
    value.and_then(|v| v.try_into().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_namespace_maps_only_trusted_names() {
        assert_eq!(XattrNs::Trusted.name(CS_REMOTE), CS_REMOTE);
        assert_eq!(XattrNs::User.name(CS_REMOTE), "user.glusterfs.cs.remote");
        assert_eq!(XattrNs::User.name(GFID), "user.gfid");
        assert_eq!(XattrNs::User.name(MOUNT_GFID_STRING), MOUNT_GFID_STRING);
    }

    #[test]
    fn gfids_are_exactly_sixteen_bytes() {
        assert_eq!(gfid_of(Some(vec![1; 16])), Some([1; 16]));
        assert_eq!(gfid_of(Some(vec![1; 15])), None);
        assert_eq!(gfid_of(None), None);
    }
}
