//! The cloudsync emulator of the tests (spec §5; `--emulate-cloudsync`, accepted only with
//! `BARMANS3_TEST=1`). The tests have no Gluster: the "mount" is the brick directory itself,
//! and instead of setting `csou.complete` through a FUSE mount, `archive` hands the mark to
//! this emulator, which applies what posix does on receiving it (§1.1,
//! `posix-inode-fd-ops.c`): refuse unless the file is LOCAL, refuse an mtime that sorts later
//! than the value (a string compare of seconds), write the three size xattrs, set `cs.remote`
//! to the volume path, truncate, and drop `cs.remote` again if the truncate fails. Refusals are
//! EINVAL, as posix gives them.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::decide::posix_refuses_mark;
use super::xattrs::{self, XattrNs};

const EINVAL: i32 = 22;

/// The emulated posix side of a cloudsync volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Emulator {
    /// Where the Gluster xattrs live.
    pub ns: XattrNs,
    /// Put in front of the volume path in `cs.remote`: the tests' way to make posix record
    /// another path than the one archived (a misconfiguration step 8 must catch).
    pub remote_prefix: String,
}

impl Emulator {
    /// Applies posix's handling of `csou.complete = value` to the brick file `brick` at
    /// volume path `volume_path` (no leading `/`).
    pub fn mark(&self, brick: &Path, volume_path: &str, value: &str) -> io::Result<()> {
        let has = |name| xattr::get(brick, self.ns.name(name).as_ref()).map(|v| v.is_some());
        if has(xattrs::CS_REMOTE)? || has(xattrs::CS_DOWNLOADING)? {
            return Err(io::Error::from_raw_os_error(EINVAL));
        }
        let m = std::fs::symlink_metadata(brick)?;
        if posix_refuses_mark(&m.mtime().to_string(), value) {
            return Err(io::Error::from_raw_os_error(EINVAL));
        }
        self.ns.set(
            brick,
            xattrs::CS_OBJECT_SIZE,
            m.len().to_string().as_bytes(),
        )?;
        self.ns.set(
            brick,
            xattrs::CS_NUM_BLOCKS,
            m.blocks().to_string().as_bytes(),
        )?;
        self.ns.set(
            brick,
            xattrs::CS_BLOCK_SIZE,
            m.blksize().to_string().as_bytes(),
        )?;
        let remote = format!("{}{volume_path}", self.remote_prefix);
        self.ns.set(brick, xattrs::CS_REMOTE, remote.as_bytes())?;
        let truncated = std::fs::OpenOptions::new()
            .write(true)
            .open(brick)
            .and_then(|f| f.set_len(0));
        if let Err(e) = truncated {
            let _ = xattr::remove(brick, self.ns.name(xattrs::CS_REMOTE).as_ref());
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(path: &Path, name: &str) -> Option<String> {
        xattr::get(path, XattrNs::User.name(name).as_ref())
            .expect("getxattr")
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    #[test]
    fn posix_steps_apply_and_refuse_as_gluster_does() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("f");
        std::fs::write(&p, vec![7u8; 5000]).expect("w");
        let secs = std::fs::metadata(&p).expect("stat").mtime();
        let emu = Emulator {
            ns: XattrNs::User,
            remote_prefix: String::new(),
        };
        let einval = |r: io::Result<()>| r.err().and_then(|e| e.raw_os_error()) == Some(EINVAL);
        assert!(
            einval(emu.mark(&p, "d/f", &(secs - 1).to_string())),
            "a later mtime"
        );
        assert_eq!(std::fs::metadata(&p).expect("stat").len(), 5000);
        emu.mark(&p, "d/f", &secs.to_string()).expect("mark");
        assert_eq!(std::fs::metadata(&p).expect("stat").len(), 0);
        assert_eq!(user(&p, xattrs::CS_REMOTE).as_deref(), Some("d/f"));
        assert_eq!(user(&p, xattrs::CS_OBJECT_SIZE).as_deref(), Some("5000"));
        assert!(user(&p, xattrs::CS_NUM_BLOCKS).is_some());
        assert!(
            einval(emu.mark(&p, "d/f", &secs.to_string())),
            "already remote"
        );
    }
}
