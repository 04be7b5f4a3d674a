//! A segment being written into the spool: a `.fetch-` file under the spool's descriptor,
//! renamed to its checked name only when whole, removed when dropped unfinished.

use std::fs::File;
use std::io::Write;

use super::{FETCH, Spool};
use crate::error::{Error, Result};

/// A segment being written into the spool: visible only once [`Pending::finish`] renamed it
/// whole; dropped unfinished (a failed or cancelled fetch), its file is removed.
#[derive(Debug)]
pub struct Pending {
    pub(super) spool: Spool,
    pub(super) name: String,
    pub(super) file: Option<File>,
}

impl Pending {
    /// Writes the segment and gives it its name with its CRC-32C.
    pub fn finish(self, data: &[u8]) -> Result<()> {
        self.finish_with(data, crate::checksum::crc32c(data))
    }

    /// [`Pending::finish`] with the CRC-32C of `data` already taken (as it arrived): it must
    /// be of these bytes. Calls during this boot serve the file by its first page, as a direct
    /// fetch writes the bytes it checked; only a spool of another boot proves it whole
    /// ([`Spool::claim_boot`]).
    pub fn finish_with(mut self, data: &[u8], crc: u32) -> Result<()> {
        let temp = format!("{FETCH}{}", self.name);
        let mut f = self
            .file
            .take()
            .ok_or_else(|| Error::Failed("spool entry reused".into()))?;
        let written = f.write_all(data);
        drop(f);
        let done = written.and_then(|()| {
            let file = format!("{}.{crc:08x}", self.name);
            rustix::fs::renameat(
                &*self.spool.fd,
                temp.as_str(),
                &*self.spool.fd,
                file.as_str(),
            )
            .map_err(std::io::Error::from)
        });
        done.map_err(|e| {
            self.spool.remove(&temp);
            Error::io(format!("spool {}", self.spool.dir.join(&temp).display()), e)
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            self.spool.remove(&format!("{FETCH}{}", self.name));
        }
    }
}
