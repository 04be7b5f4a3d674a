//! The file writes of a tar extraction, on a thread of their own: the extractor decodes the
//! next piece of the archive while the previous one goes to disk. Pieces are written past the
//! page cache where the filesystem allows ([`OutFile`]); such a write returns only when the
//! device has the data, so done in line it would stall the decoding for as long again.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

use crate::directio::{AlignedBuf, OutFile};
use crate::error::{Error, Result};

/// Pieces in play per extraction: one being filled, the others written or waiting.
const BUFFERS: usize = 3;

/// One piece of a file, and for its last piece the mode the file gets once written.
struct Job {
    file: Arc<OutFile>,
    path: Arc<PathBuf>,
    offset: u64,
    buf: AlignedBuf,
    mode: Option<u32>,
}

/// The writer thread of one extraction and its pieces.
pub(super) struct Writer<'scope> {
    jobs: Option<SyncSender<Job>>,
    free: Receiver<AlignedBuf>,
    thread: Option<ScopedJoinHandle<'scope, Result<()>>>,
}

impl<'scope> Writer<'scope> {
    /// Starts the writer in `scope` with [`BUFFERS`] pieces of `piece` bytes.
    pub(super) fn start<'env>(scope: &'scope Scope<'scope, 'env>, piece: usize) -> Writer<'scope> {
        let (jobs, todo) = sync_channel::<Job>(BUFFERS);
        let (give_back, free) = sync_channel::<AlignedBuf>(BUFFERS);
        for _ in 0..BUFFERS {
            give_back
                .send(AlignedBuf::new(piece))
                .expect("room for every buffer");
        }
        let thread = scope.spawn(move || {
            for mut job in todo {
                run(&job)?;
                job.buf.clear();
                // The extractor may have stopped; the buffer is then simply dropped.
                let _ = give_back.send(job.buf);
            }
            Ok(())
        });
        Writer {
            jobs: Some(jobs),
            free,
            thread: Some(thread),
        }
    }

    /// Writes what `input` holds to `to`, which must not exist yet (`create_new` never follows
    /// a link either); the file gets `mode` once written. Returns the bytes read; they are on
    /// disk only when [`Writer::finish`] says so.
    pub(super) fn file(
        &mut self,
        input: &mut impl std::io::Read,
        to: &Path,
        mode: u32,
    ) -> Result<u64> {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
        }
        let mut file: Option<(Arc<OutFile>, Arc<PathBuf>)> = None;
        let mut offset = 0u64;
        loop {
            let Ok(mut buf) = self.free.recv() else {
                return Err(self.failure());
            };
            let filled = buf.read_from(input).map_err(|e| {
                Error::Failed(format!(
                    "{}: damaged archive data: {}",
                    to.display(),
                    crate::error::reason(&e)
                ))
            })?;
            let last = !buf.is_full();
            let (file, path) = match &file {
                Some(f) => f.clone(),
                None => file.insert(create(to, last)?).clone(),
            };
            let job = Job {
                file,
                path,
                offset,
                buf,
                mode: last.then_some(mode),
            };
            offset += filled as u64;
            let sent = self.jobs.as_ref().map(|j| j.send(job));
            if !matches!(sent, Some(Ok(()))) {
                return Err(self.failure());
            }
            if last {
                return Ok(offset);
            }
        }
    }

    /// Waits for every write; the first that failed is the error.
    pub(super) fn finish(mut self) -> Result<()> {
        self.join()
    }

    /// Why the writer stopped taking pieces.
    fn failure(&mut self) -> Error {
        self.join()
            .err()
            .unwrap_or_else(|| Error::Failed("the file writer stopped".into()))
    }

    /// Closes the job channel and waits for the thread: its result.
    fn join(&mut self) -> Result<()> {
        self.jobs = None;
        match self.thread.take().map(ScopedJoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::Failed("the file writer panicked".into())),
            // Only a failure takes the thread before this.
            None => Err(Error::Failed("the file writer had stopped".into())),
        }
    }
}

/// Creates `to`, writable by its owner whatever the archive's mode (set last). A file of one
/// piece is written through the page cache: direct, small files would each wait for the
/// device; the restore's sync before `pg_control` writes them all back at once.
fn create(to: &Path, small: bool) -> Result<(Arc<OutFile>, Arc<PathBuf>)> {
    let file = if small {
        OutFile::create_new_buffered(to, 0o600)
    } else {
        OutFile::create_new(to, 0o600)
    };
    let file = file.map_err(|e| Error::io(format!("create {}", to.display()), e))?;
    Ok((Arc::new(file), Arc::new(to.to_path_buf())))
}

/// One piece to disk, and the mode after the last one.
fn run(job: &Job) -> Result<()> {
    if !job.buf.is_empty() {
        job.file
            .write_at(&job.buf, job.offset)
            .map_err(|e| Error::io(format!("write {}", job.path.display()), e))?;
    }
    if let Some(mode) = job.mode {
        std::fs::set_permissions(&*job.path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(format!("chmod {}", job.path.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Input whose reads remove the file being written: its mode cannot be set then.
    struct Vanishing<'a> {
        path: PathBuf,
        data: &'a [u8],
    }

    impl std::io::Read for Vanishing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let _ = std::fs::remove_file(&self.path);
            self.data.read(buf)
        }
    }

    #[test]
    fn files_are_whole_and_have_their_mode_once_finished() {
        let d = tempfile::tempdir().expect("tmp");
        let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::thread::scope(|s| {
            let mut w = Writer::start(s, 4096);
            for (name, mode) in [("a", 0o640), ("sub/b", 0o400)] {
                let n = w.file(&mut body.as_slice(), &d.path().join(name), mode);
                assert_eq!(n.expect("queued"), body.len() as u64);
            }
            w.finish().expect("written");
        });
        for (name, mode) in [("a", 0o640), ("sub/b", 0o400)] {
            let p = d.path().join(name);
            assert!(std::fs::read(&p).expect("read") == body, "{name}");
            let m = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o7777;
            assert_eq!(m, mode, "{name}");
        }
    }

    #[test]
    fn a_failed_write_is_the_error_of_the_extraction_and_nothing_hangs() {
        let d = tempfile::tempdir().expect("tmp");
        let a = d.path().join("a");
        let e = std::thread::scope(|s| {
            let mut w = Writer::start(s, 4096);
            // Two pieces: the file is created after the first, removed during the second.
            let mut input = Vanishing {
                path: a.clone(),
                data: &[1u8; 5000],
            };
            w.file(&mut input, &a, 0o600).expect("queued");
            // Later files fail with the writer's error once it has stopped, or finish says it.
            for i in 0..2 * BUFFERS {
                let to = d.path().join(format!("b{i}"));
                if let Err(e) = w.file(&mut [0u8; 5000].as_slice(), &to, 0o600) {
                    return e;
                }
            }
            w.finish().expect_err("a write failed")
        });
        assert!(
            e.to_string().contains(&format!("chmod {}", a.display())),
            "{e}"
        );
    }
}
