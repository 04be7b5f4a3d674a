//! A segment being written into the spool: a `.fetch-` file under the spool's descriptor,
//! read back and renamed to its checked name only when whole and as fetched, removed when
//! dropped unfinished.

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

    /// [`Pending::finish`] with the CRC-32C of `data` already taken (as it arrived). The file
    /// is read back whole and named only when it holds `data.len()` bytes of that CRC-32C:
    /// calls of this boot serve it without reading it again ([`Spool::claim_boot`]). A wrong
    /// CRC-32C fails here, and the segment is fetched again.
    pub fn finish_with(mut self, data: &[u8], crc: u32) -> Result<()> {
        let temp = format!("{FETCH}{}", self.name);
        let mut f = self
            .file
            .take()
            .ok_or_else(|| Error::Failed("spool entry reused".into()))?;
        let written = f
            .write_all(data)
            .and_then(|()| crate::checksum::crc32c_of_file(&f))
            .and_then(|(sum, len)| {
                if (sum, len) == (crc, data.len() as u64) {
                    Ok(())
                } else {
                    Err(std::io::Error::other(format!(
                        "it reads back as {len} bytes of CRC-32C {sum:08x}, not the {} bytes of {crc:08x} fetched",
                        data.len()
                    )))
                }
            });
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
