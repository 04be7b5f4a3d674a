//! A spooled file read back whole before it is served: its CRC-32C and its first page, the
//! two halves of a large file read by two threads. PostgreSQL waits for this read in every
//! `restore_command` call the prefetcher kept up with, so its latency is the call's.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::checksum;

/// Below this a second thread costs more than it saves.
const SPLIT_FROM: u64 = 4 << 20;
/// The read size: the buffer stays in the core's cache while it is checksummed.
const BUF: usize = 256 << 10;

/// What was read: the CRC-32C of the whole file and its first `head` bytes (or fewer).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ReadBack {
    pub(super) crc: u32,
    pub(super) head: Vec<u8>,
}

/// Reads `f`, of `size` bytes when it was opened, whole. A file that is shorter or longer than
/// `size` by the end of the read changed under it: an error, never a checksum of a mixture.
pub(super) fn read_back(f: &File, size: u64, head: usize) -> io::Result<ReadBack> {
    let split = if size >= SPLIT_FROM {
        (size / 2) & !(BUF as u64 - 1)
    } else {
        size
    };
    let (first, second) = std::thread::scope(|s| {
        let second = (split < size).then(|| s.spawn(|| crc_of(f, split, size - split, 0)));
        let first = crc_of(f, 0, split, head);
        let second = second.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(io::Error::other("the reading thread failed")))
        });
        (first, second)
    });
    let (mut crc, head) = first?;
    if let Some(second) = second {
        crc = checksum::crc32c_combine(crc, second?.0, size - split);
    }
    if f.read_at(&mut [0u8; 1], size)? != 0 {
        return Err(io::Error::other("it grew while it was being read"));
    }
    Ok(ReadBack { crc, head })
}

/// The CRC-32C of `len` bytes of `f` from `start`, and the first `head` of them.
fn crc_of(f: &File, start: u64, len: u64, head: usize) -> io::Result<(u32, Vec<u8>)> {
    let mut buf = vec![0u8; BUF.min(len as usize).max(1)];
    let (mut crc, mut at, end) = (0u32, start, start + len);
    let mut first = Vec::with_capacity(head);
    while at < end {
        let want = buf.len().min((end - at) as usize);
        let n = f.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Err(io::Error::other("it shrank while it was being read"));
        }
        let take = head.saturating_sub(first.len()).min(n);
        first.extend_from_slice(&buf[..take]);
        crc = checksum::crc32c_append(crc, &buf[..n]);
        at += n as u64;
    }
    Ok((crc, first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn every_size_reads_back_to_the_whole_files_checksum_and_head() {
        let d = tempfile::tempdir().expect("tmp");
        for size in [
            0usize,
            1,
            8191,
            8192,
            (4 << 20) - 1,
            4 << 20,
            (16 << 20) + 3,
        ] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 251) as u8).collect();
            let p = d.path().join(format!("f{size}"));
            std::fs::write(&p, &data).expect("write");
            let f = File::open(&p).expect("open");
            let r = read_back(&f, size as u64, 8192).expect("read back");
            assert_eq!(r.crc, checksum::crc32c(&data), "size {size}");
            assert_eq!(r.head, data[..size.min(8192)], "size {size}");
        }
    }

    #[test]
    fn a_file_of_another_size_than_it_had_is_refused() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("f");
        std::fs::write(&p, vec![5u8; 5 << 20]).expect("write");
        let f = File::open(&p).expect("open");
        for (claimed, says) in [((6 << 20) as u64, "shrank"), ((5 << 20) - 1, "grew")] {
            let e = read_back(&f, claimed, 8192).expect_err("size changed");
            assert!(e.to_string().contains(says), "{claimed}: {e}");
        }
        // Appended to after it was opened: the same.
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .expect("append");
        w.write_all(b"x").expect("grow");
        assert!(read_back(&f, 5 << 20, 8192).is_err());
    }
}
