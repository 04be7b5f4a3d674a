//! A running put's state file (`<state_dir>/volume/<VOL>.json`) and `volume status`.
//!
//! The [`Tracker`] watches the put's requests as a store [`Observer`]: each chunk read and not
//! yet verified is pending, in flight while a PUT of it is out, with its failed tries so far,
//! and the last request says whether the backend answers. It rewrites the file (atomically) at
//! most twice a second while something changed, and once more at the end. [`render`] prints it
//! as Bareos' `status storage` prints a chunked device (`chunked_device.cc`), after one line
//! naming the volume and the run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::VolumeName;
use super::layout::{chunk_index, chunk_name};
use crate::clock::now;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::store::reqlog::{Observer, Op, Request};

/// How often a changed state is written out.
const WRITE_EVERY: Duration = Duration::from_millis(500);

/// What the run is doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Uploading.
    #[default]
    Running,
    /// Every chunk and the manifest are stored and verified.
    Done,
    /// Stopped on an error; `--resume` completes it.
    Failed,
}

/// A chunk read and not yet verified in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChunk {
    /// Chunk number.
    pub chunk: u32,
    /// Bytes.
    pub size: u64,
    /// Failed tries so far (Bareos' `try`).
    pub tries: u32,
    /// A PUT of it is out.
    pub in_flight: bool,
}

/// The state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeState {
    /// Volume name.
    pub volume: String,
    /// The store, as described in messages.
    pub store: String,
    /// `put` or `append`.
    pub operation: String,
    /// Running, done or failed.
    pub state: RunState,
    /// The process doing it.
    pub pid: u32,
    /// Start, seconds since the epoch.
    pub started: u64,
    /// Last change, seconds since the epoch.
    pub updated: u64,
    /// Chunk size.
    pub chunk_size: u64,
    /// Volume offset where this run's data starts (the volume's size before an append).
    pub base: u64,
    /// Chunks stored and verified by this run.
    pub chunks_stored: u32,
    /// Bytes in them.
    pub bytes_stored: u64,
    /// Whether the last request got an answer.
    pub connection_ok: bool,
    /// Chunks read and not yet verified, by number.
    pub pending: Vec<PendingChunk>,
    /// Why the run stopped, when it failed.
    pub error: Option<String>,
}

/// The state file of a volume.
pub fn state_path(state_dir: &Path, name: &VolumeName) -> PathBuf {
    state_dir
        .join("volume")
        .join(format!("{}.json", name.file_stem()))
}

/// Reads a state file; a missing one is `None`.
pub fn load(path: &Path) -> Result<Option<VolumeState>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            Error::Failed(format!("{}: not a volume state file: {e}", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

#[derive(Debug, Default)]
struct Inner {
    state: VolumeState,
    dirty: bool,
    begun: bool,
}

/// Keeps a running put's state file current.
#[derive(Debug)]
pub struct Tracker {
    path: PathBuf,
    /// The volume's key prefix (`…/<VOL>/`), to recognise its chunks among the requests.
    dir: String,
    /// What the file said before this run.
    previous: Option<VolumeState>,
    inner: Mutex<Inner>,
}

impl Tracker {
    /// A tracker for the state file `path` of the volume whose keys start with `dir`; it reads
    /// what an earlier run left there and writes nothing until [`Tracker::begin`].
    pub fn new(path: PathBuf, dir: String) -> Result<Tracker> {
        Ok(Tracker {
            previous: load(&path)?,
            path,
            dir,
            inner: Mutex::default(),
        })
    }

    /// What an earlier run left in the state file.
    pub fn previous(&self) -> Option<&VolumeState> {
        self.previous.as_ref()
    }

    /// Starts recording this run (and writes the file at once).
    pub fn begin(&self, state: VolumeState) -> Result<()> {
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
        }
        {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            *g = Inner {
                state,
                dirty: true,
                begun: true,
            };
        }
        self.flush()
    }

    fn with<R>(&self, f: impl FnOnce(&mut VolumeState) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.dirty = true;
        g.state.updated = now();
        f(&mut g.state)
    }

    fn pending(s: &mut VolumeState, chunk: u32) -> Option<&mut PendingChunk> {
        s.pending.iter_mut().find(|p| p.chunk == chunk)
    }

    /// A chunk was read and waits to be stored.
    pub fn queued(&self, chunk: u32, size: u64) {
        self.with(|s| {
            s.pending.push(PendingChunk {
                chunk,
                size,
                tries: 0,
                in_flight: false,
            });
            s.pending.sort_by_key(|p| p.chunk);
        });
    }

    /// A chunk is stored and verified (or was already there).
    pub fn stored(&self, chunk: u32, size: u64) {
        self.with(|s| {
            s.pending.retain(|p| p.chunk != chunk);
            s.chunks_stored += 1;
            s.bytes_stored += size;
        });
    }

    /// The run ended.
    pub fn finish(&self, error: Option<&Error>) -> Result<()> {
        self.with(|s| {
            for p in &mut s.pending {
                p.in_flight = false;
            }
            match error {
                None => s.state = RunState::Done,
                Some(e) => {
                    s.state = RunState::Failed;
                    s.error = Some(e.one_line());
                }
            }
        });
        self.flush()
    }

    /// Writes the file if something changed since the last write.
    pub fn flush(&self) -> Result<()> {
        let json = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if !g.dirty || !g.begun {
                return Ok(());
            }
            g.dirty = false;
            serde_json::to_vec_pretty(&g.state).map_err(|e| Error::Failed(e.to_string()))?
        };
        fsutil::write_atomic(&self.path, &json)
    }

    /// Writes the file whenever it changed, until the caller stops polling this future.
    pub async fn keep_current(&self) {
        let mut warned = false;
        loop {
            tokio::time::sleep(WRITE_EVERY).await;
            if let Err(e) = self.flush()
                && !std::mem::replace(&mut warned, true)
            {
                tracing::warn!("volume status not updated: {}", e.one_line());
            }
        }
    }

    fn chunk_of(&self, req: &Request<'_>) -> Option<u32> {
        (req.op == Op::Put)
            .then(|| req.key.strip_prefix(&self.dir).and_then(chunk_index))
            .flatten()
    }
}

impl Observer for Tracker {
    fn sending(&self, req: &Request<'_>) {
        if let Some(n) = self.chunk_of(req) {
            self.with(|s| {
                if let Some(p) = Self::pending(s, n) {
                    p.in_flight = true;
                    p.tries = req.attempt.saturating_sub(1);
                }
            });
        }
    }

    fn answered(&self, req: &Request<'_>, status: Option<u16>, _received: u64) {
        let chunk = self.chunk_of(req);
        self.with(|s| {
            s.connection_ok = status.is_some();
            if let Some(p) = chunk.and_then(|n| Self::pending(s, n)) {
                p.in_flight = false;
                if !status.is_some_and(|c| (200..300).contains(&c)) {
                    p.tries = req.attempt;
                }
            }
        });
    }
}

fn when(secs: u64) -> String {
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| secs.to_string())
}

/// `status storage` for one volume; `alive` says whether the recorded process still runs.
pub fn render(s: &VolumeState, alive: bool) -> String {
    let what = format!(
        "Volume {} ({}): {}",
        s.volume,
        s.store,
        match (s.state, alive) {
            (RunState::Running, true) => format!(
                "{} running since {} (pid {}), {} chunks ({} bytes) stored so far",
                s.operation,
                when(s.started),
                s.pid,
                s.chunks_stored,
                s.bytes_stored
            ),
            (RunState::Running, false) => format!(
                "{} interrupted (pid {} is gone, last update {}): volume put --resume completes it",
                s.operation,
                s.pid,
                when(s.updated)
            ),
            (RunState::Done, _) => format!(
                "{} done at {}: {} chunks ({} bytes) stored and verified",
                s.operation,
                when(s.updated),
                s.chunks_stored,
                s.bytes_stored
            ),
            (RunState::Failed, _) => format!(
                "{} failed at {}: {}; volume put --resume completes it",
                s.operation,
                when(s.updated),
                s.error.as_deref().unwrap_or("unknown error")
            ),
        }
    );
    let running = s.state == RunState::Running && alive;
    let mut out = format!(
        "{what}\nBackend connection is {}working.\n",
        if s.connection_ok { "" } else { "not " }
    );
    let in_flight = s.pending.iter().filter(|p| running && p.in_flight).count();
    out.push_str(&format!("Inflight chunks: {in_flight}\n"));
    if s.pending.is_empty() {
        out.push_str("No pending IO flush requests.\n");
    } else {
        out.push_str("Pending IO flush requests:\n");
        for p in &s.pending {
            out.push_str(&format!(
                "   /{}/{} - {} (try={})\n",
                s.volume,
                chunk_name(p.chunk),
                p.size,
                p.tries
            ));
        }
    }
    out
}

/// Whether process `pid` still runs.
pub fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// The state of every volume put from this host, by name.
pub fn load_all(state_dir: &Path) -> Result<BTreeMap<String, VolumeState>> {
    let dir = state_dir.join("volume");
    let mut out = BTreeMap::new();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(format!("read {}", dir.display()), e)),
    };
    for e in rd {
        let p = e
            .map_err(|e| Error::io(format!("read {}", dir.display()), e))?
            .path();
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(vol) = name.as_deref().and_then(|n| n.strip_suffix(".json"))
            && !vol.starts_with('.')
            && let Some(s) = load(&p)?
        {
            out.insert(vol.to_string(), s);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> VolumeState {
        VolumeState {
            volume: "Full-0001".into(),
            store: "s3://b/p".into(),
            operation: "put".into(),
            state: RunState::Running,
            pid: 42,
            started: 1_700_000_000,
            updated: 1_700_000_100,
            chunk_size: 10,
            base: 0,
            chunks_stored: 1,
            bytes_stored: 10,
            connection_ok: true,
            pending: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn status_reads_like_bareos_status_storage() {
        let mut s = state();
        s.pending = vec![
            PendingChunk {
                chunk: 1,
                size: 10,
                tries: 0,
                in_flight: true,
            },
            PendingChunk {
                chunk: 2,
                size: 5,
                tries: 2,
                in_flight: false,
            },
        ];
        let text = render(&s, true);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("Volume Full-0001 (s3://b/p): put running since 2023-11-14"));
        assert_eq!(
            lines[1..],
            [
                "Backend connection is working.",
                "Inflight chunks: 1",
                "Pending IO flush requests:",
                "   /Full-0001/0001 - 10 (try=0)",
                "   /Full-0001/0002 - 5 (try=2)",
            ]
        );
        s.pending.clear();
        s.connection_ok = false;
        s.state = RunState::Done;
        let text = render(&s, false);
        assert!(text.ends_with(
            "Backend connection is not working.\nInflight chunks: 0\nNo pending IO flush requests.\n"
        ));
        assert!(text.contains("put done at 2023-11-14"));
        s.state = RunState::Running;
        assert!(render(&s, false).contains("interrupted (pid 42 is gone"));
    }

    #[test]
    fn the_tracker_follows_attempts_of_chunk_puts() {
        let d = tempfile::tempdir().expect("tmp");
        let path = d.path().join("volume/V.json");
        let t = Tracker::new(path.clone(), "p/V/".into()).expect("new");
        t.queued(1, 1);
        t.flush().expect("nothing to write before begin");
        assert!(!path.exists());
        t.begin(state()).expect("begin");
        assert!(
            Tracker::new(path.clone(), "p/V/".into())
                .expect("again")
                .previous()
                .is_some()
        );
        t.queued(3, 10);
        let req = |attempt| Request {
            op: Op::Put,
            key: "p/V/0003",
            attempt,
            sent: 10,
            ranged: false,
            started: std::time::Instant::now(),
        };
        t.sending(&req(1));
        t.answered(&req(1), Some(503), 0);
        t.sending(&req(2));
        t.flush().expect("flush");
        let s = load(&path).expect("load").expect("there");
        assert_eq!(
            s.pending,
            [PendingChunk {
                chunk: 3,
                size: 10,
                tries: 1,
                in_flight: true
            }]
        );
        t.answered(&req(2), None, 0);
        t.stored(3, 10);
        t.finish(None).expect("finish");
        let s = load(&path).expect("load").expect("there");
        assert!(s.pending.is_empty() && !s.connection_ok && s.state == RunState::Done);
        assert_eq!((s.chunks_stored, s.bytes_stored), (2, 20));
        assert_eq!(load_all(d.path()).expect("all").len(), 1);
    }
}
