//! The local `file://` backend: a directory that behaves like a bucket.
//!
//! Objects are plain files at `<root>/<key>`, so the tree stays readable with `ls` and `cp`.
//! What S3 keeps beside an object (checksum, ETag, user metadata) lives in a sidecar under
//! `<root>/.barmans3/meta/`, multipart uploads are emulated under `<root>/.barmans3/multipart/`,
//! and every write goes to `<root>/.barmans3/tmp/` first and is renamed into place, so readers
//! never see half an object. Keys beginning with `.barmans3/` are reserved.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{
    Archive, Body, BodyReader, ByteRange, DeleteFailure, GetResponse, ListPage, ListRequest,
    Multipart, ObjectMeta, PutOptions, PutReceipt, Retention, ServerCopy, Store, page_from_sorted,
};
use crate::checksum;
use crate::error::{Error, Result, StoreFailure};
use crate::fsutil;

mod copy;
mod multipart;

const RESERVED: &str = ".barmans3";
const READ_CHUNK: usize = 1 << 20;

/// A directory standing in for a bucket.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    /// The sorted walk of the last listing, reused by its continuation pages so a listing of
    /// n keys walks the tree once, not n/1000 times.
    last_walk: std::sync::Arc<std::sync::Mutex<Option<Walk>>>,
}

/// A listing prefix and the sorted objects under it.
type Walk = (String, std::sync::Arc<Vec<ObjectMeta>>);

#[derive(Debug, Serialize, Deserialize)]
struct Sidecar {
    size: u64,
    etag: String,
    crc32c: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

fn fail(op: &'static str, key: &str, code: &str, message: impl Into<String>) -> Error {
    Error::Store(StoreFailure {
        op,
        key: key.to_string(),
        status: None,
        code: Some(code.to_string()),
        message: message.into(),
        retryable: false,
    })
}

fn io(op: &'static str, key: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        return Error::NotFound {
            key: key.to_string(),
        };
    }
    Error::io(format!("{op} {key}"), e)
}

fn system_time_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl LocalStore {
    /// Opens (and creates) a store rooted at `root`.
    pub fn open(root: &Path) -> Result<Self> {
        for sub in ["tmp", "meta", "multipart"] {
            let d = root.join(RESERVED).join(sub);
            fs::create_dir_all(&d).map_err(|e| {
                Error::Config(format!(
                    "store file://{}: cannot create {}: {}",
                    root.display(),
                    d.display(),
                    crate::error::reason(&e)
                ))
            })?;
        }
        Ok(LocalStore {
            root: root.to_path_buf(),
            last_walk: Default::default(),
        })
    }

    fn check_key(&self, op: &'static str, key: &str) -> Result<PathBuf> {
        let bad = key.is_empty()
            || key.starts_with('/')
            || key.ends_with('/')
            || key
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
            || key.split('/').next() == Some(RESERVED)
            || key.contains('\0');
        if bad {
            return Err(fail(
                op,
                key,
                "InvalidKey",
                "key not representable in a file:// store",
            ));
        }
        Ok(self.root.join(key))
    }

    fn sidecar_path(&self, key: &str) -> PathBuf {
        self.root
            .join(RESERVED)
            .join("meta")
            .join(format!("{key}.json"))
    }

    fn upload_dir(&self, upload_id: &str) -> Result<PathBuf> {
        if upload_id.is_empty() || !upload_id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::NotFound {
                key: format!("upload {upload_id}"),
            });
        }
        Ok(self.root.join(RESERVED).join("multipart").join(upload_id))
    }

    fn temp_file(&self) -> Result<(PathBuf, fs::File)> {
        let name = format!(
            "{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        let p = self.root.join(RESERVED).join("tmp").join(name);
        let f = fs::File::create_new(&p)
            .map_err(|e| Error::io(format!("create {}", p.display()), e))?;
        Ok((p, f))
    }

    /// Writes a temp file through `write`, which returns the CRC32C and size of what it wrote;
    /// a failed write leaves no temp file.
    fn write_temp(
        &self,
        write: impl FnOnce(&mut fs::File) -> Result<(u32, u64)>,
    ) -> Result<(PathBuf, u32, u64)> {
        let (tmp, mut f) = self.temp_file()?;
        match write(&mut f) {
            Ok((crc, size)) => Ok((tmp, crc, size)),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Writes an object through `write` (which returns its CRC32C and size) into a temp file,
    /// then installs it.
    fn put_with(
        &self,
        key: &str,
        opts: &PutOptions,
        write: impl FnOnce(&mut fs::File) -> Result<(u32, u64)>,
    ) -> Result<PutReceipt> {
        let (tmp, crc, size) = self.write_temp(write)?;
        let etag = format!("{crc:08x}{size:016x}");
        let side = Sidecar {
            size,
            etag: etag.clone(),
            crc32c: checksum::crc32c_header(crc),
            metadata: opts.metadata.clone(),
        };
        self.install(key, &tmp, &side)?;
        Ok(PutReceipt { etag: Some(etag) })
    }

    /// Writes the sidecar, then moves the data file into place.
    fn install(&self, key: &str, tmp: &Path, sidecar: &Sidecar) -> Result<()> {
        let dest = self.check_key("PutObject", key)?;
        let side = self.sidecar_path(key);
        for p in [&dest, &side] {
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
            }
        }
        let json = serde_json::to_vec(sidecar).map_err(|e| Error::Failed(e.to_string()))?;
        // Sidecar first, then the object: a crash between them leaves the old object with a
        // sidecar whose size disagrees, which read_meta ignores (no checksum rather than a
        // wrong one).
        fsutil::write_atomic(&side, &json)?;
        fsutil::persist(tmp, &dest)
    }

    fn read_meta(&self, op: &'static str, key: &str) -> Result<ObjectMeta> {
        let path = self.check_key(op, key)?;
        let st = fs::metadata(&path).map_err(|e| io(op, key, e))?;
        if !st.is_file() {
            return Err(Error::NotFound { key: key.into() });
        }
        let mut meta = ObjectMeta::listed(key, st.len());
        meta.last_modified = st.modified().ok();
        // A sidecar whose size disagrees belongs to an older version of the file.
        if let Ok(raw) = fs::read(self.sidecar_path(key))
            && let Ok(side) = serde_json::from_slice::<Sidecar>(&raw)
            && side.size == st.len()
        {
            meta.etag = Some(side.etag);
            meta.crc32c = Some(side.crc32c);
            meta.metadata = side.metadata;
        }
        Ok(meta)
    }

    /// Every object under `prefix`, sorted by key as S3 sorts them (byte order of the UTF-8
    /// key), so paging, `start_after` and delimiters behave as on a bucket. Directories are
    /// not objects; the reserved tree and names that are not UTF-8 are not keys.
    fn walk(&self, prefix: &str) -> Vec<ObjectMeta> {
        // Start at the deepest directory the prefix names, not at the root.
        let dir_part = prefix.rsplit_once('/').map_or("", |(d, _)| d);
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.root.join(dir_part)
        };
        let mut out = Vec::new();
        let walker = walkdir::WalkDir::new(&start)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| !(e.depth() == 1 && start == self.root && e.file_name() == RESERVED));
        for entry in walker.flatten() {
            if !entry.file_type().is_file() {
                continue;
            }
            let Ok(rel) = entry.path().strip_prefix(&self.root) else {
                continue;
            };
            let Some(key) = rel.to_str() else { continue };
            if !key.starts_with(prefix) {
                continue;
            }
            let Ok(st) = entry.metadata() else { continue };
            let mut m = ObjectMeta::listed(key, st.len());
            m.last_modified = st.modified().ok();
            out.push(m);
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    fn remove_empty_parents(&self, mut p: &Path, stop: &Path) {
        while let Some(parent) = p.parent() {
            if parent == stop || !parent.starts_with(stop) || fs::remove_dir(parent).is_err() {
                break;
            }
            p = parent;
        }
    }
}

#[derive(Debug)]
struct FileBody {
    file: Option<fs::File>,
    remaining: u64,
    key: String,
}

#[async_trait]
impl BodyReader for FileBody {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let Some(mut file) = self.file.take() else {
            return Ok(None);
        };
        let want = self.remaining.min(READ_CHUNK as u64) as usize;
        let key = self.key.clone();
        let (file, res) = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; want];
            let r = file.read_exact(&mut buf).map(|_| buf);
            (file, r)
        })
        .await
        .map_err(|e| Error::Failed(format!("read task failed: {e}")))?;
        let buf = res.map_err(|e| Error::io(format!("read {key}"), e))?;
        self.remaining -= buf.len() as u64;
        self.file = Some(file);
        Ok(Some(Bytes::from(buf)))
    }
}

#[async_trait]
impl Store for LocalStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn put(&self, key: &str, body: Body, opts: &PutOptions) -> Result<PutReceipt> {
        self.check_key("PutObject", key)?;
        self.put_with(key, opts, |f| copy::write_body("PutObject", key, &body, f))
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetResponse> {
        let meta = self.read_meta("GetObject", key)?;
        let path = self.check_key("GetObject", key)?;
        let mut file = fs::File::open(&path).map_err(|e| io("GetObject", key, e))?;
        let (start, end) = match range {
            None => (0, meta.size),
            Some(r) => {
                if r.start >= meta.size || r.is_empty() {
                    return Err(Error::Store(StoreFailure {
                        op: "GetObject",
                        key: key.into(),
                        status: Some(416),
                        code: Some("InvalidRange".into()),
                        message: "the requested range is not satisfiable".into(),
                        retryable: false,
                    }));
                }
                (r.start, r.end.min(meta.size))
            }
        };
        file.seek(SeekFrom::Start(start))
            .map_err(|e| io("GetObject", key, e))?;
        Ok(GetResponse {
            meta,
            body: Box::new(FileBody {
                file: Some(file),
                remaining: end - start,
                key: key.into(),
            }),
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.read_meta("HeadObject", key)
    }

    async fn list_page(&self, req: &ListRequest, token: Option<&str>) -> Result<ListPage> {
        let cached = match (token, self.last_walk.lock()) {
            (Some(_), Ok(slot)) => slot
                .as_ref()
                .filter(|(p, _)| *p == req.prefix)
                .map(|(_, w)| w.clone()),
            _ => None,
        };
        let entries = match cached {
            Some(w) => w,
            None => {
                let this = self.clone();
                let prefix = req.prefix.clone();
                let walked = tokio::task::spawn_blocking(move || this.walk(&prefix))
                    .await
                    .map_err(|e| Error::Failed(format!("listing task failed: {e}")))?;
                let walked = std::sync::Arc::new(walked);
                if let Ok(mut slot) = self.last_walk.lock() {
                    *slot = Some((req.prefix.clone(), walked.clone()));
                }
                walked
            }
        };
        Ok(page_from_sorted(&entries, req, token))
    }

    async fn delete_batch(&self, keys: &[String]) -> Result<Vec<DeleteFailure>> {
        let mut failures = Vec::new();
        for key in keys {
            let path = match self.check_key("DeleteObjects", key) {
                Ok(p) => p,
                Err(e) => {
                    failures.push(DeleteFailure {
                        key: key.clone(),
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            match fs::remove_file(&path) {
                Ok(()) => self.remove_empty_parents(&path, &self.root),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    failures.push(DeleteFailure {
                        key: key.clone(),
                        message: e.to_string(),
                    });
                    continue;
                }
            }
            let side = self.sidecar_path(key);
            if fs::remove_file(&side).is_ok() {
                self.remove_empty_parents(&side, &self.root.join(RESERVED).join("meta"));
            }
        }
        Ok(failures)
    }

    fn multipart(&self) -> &dyn Multipart {
        self
    }

    fn copier(&self) -> Option<&dyn ServerCopy> {
        Some(self)
    }

    fn archive(&self) -> Option<&dyn Archive> {
        None
    }

    fn retention(&self) -> Option<&dyn Retention> {
        None
    }
}
