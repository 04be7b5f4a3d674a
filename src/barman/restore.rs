//! Restore from the bucket alone: `base-restore` rebuilds a data directory (and its
//! tablespaces) from a backup's manifest, verifying every file; `wal-restore` is PostgreSQL's
//! `restore_command`.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::remote::{Entry, INFO, MANIFEST, Manifest, Remote};
use super::wal::{self, Compression};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::transfer::{Expect, Transfer, bounded};

/// Options of `base-restore`.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Where each tablespace goes (oid → directory); default `<DEST>_tblspc/<oid>`.
    pub tablespaces: BTreeMap<String, PathBuf>,
    /// `restore_command` to write with `recovery.signal` (None: leave recovery to the user).
    pub restore_command: Option<String>,
}

/// What a restore produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// Files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Tablespace oid → directory.
    pub tablespaces: BTreeMap<String, PathBuf>,
}

async fn fetch_small(t: &Transfer, key: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    t.download_to(key, &mut buf, Expect::default()).await?;
    Ok(buf)
}

/// Reads a backup's manifest; the backup must be complete (backup.info present).
pub async fn manifest(t: &Transfer, remote: &Remote, id: &str) -> Result<Manifest> {
    if !super::info::is_backup_id(id) {
        return Err(Error::Usage(format!(
            "invalid backup id {id:?}: expected YYYYMMDDTHHMMSS (see base-ls)"
        )));
    }
    let info_key = remote.backup_key(id, INFO);
    if t.head_opt(&info_key).await?.is_none() {
        return Err(Error::Failed(format!(
            "backup {id} is not complete in the bucket ({info_key} is missing); see base-ls"
        )));
    }
    let key = remote.backup_key(id, MANIFEST);
    let bytes = fetch_small(t, &key).await?;
    let m = Manifest::parse(&bytes, &key)?;
    if m.backup_id != id {
        return Err(Error::Failed(format!(
            "{key} describes backup {}, not {id}",
            m.backup_id
        )));
    }
    Ok(m)
}

/// Maps a manifest path to a local path: `data/…` (or `pgdata/…`) under `dest`, `<oid>/…`
/// under the tablespace's directory. Other top-level entries are not part of PGDATA.
fn target(path: &str, dest: &Path, tbs: &BTreeMap<String, PathBuf>) -> Option<PathBuf> {
    let (top, rest) = path.split_once('/').unwrap_or((path, ""));
    let base = match top {
        "data" | "pgdata" => dest.to_path_buf(),
        oid if oid.bytes().all(|b| b.is_ascii_digit()) => tbs.get(oid)?.clone(),
        _ => return None,
    };
    Some(if rest.is_empty() {
        base
    } else {
        base.join(rest)
    })
}

/// Restores backup `id` into `dest` (absent or empty), verifying every file's size and CRC32C.
pub async fn base_restore(
    t: &Transfer,
    remote: &Remote,
    id: &str,
    dest: &Path,
    opts: &RestoreOptions,
) -> Result<Restored> {
    let m = manifest(t, remote, id).await?;
    let mut tbs = BTreeMap::new();
    for e in &m.entries {
        if let Entry::Dir { path, .. } = e
            && !path.contains('/')
            && path.bytes().all(|b| b.is_ascii_digit())
        {
            let default = PathBuf::from(format!("{}_tblspc", dest.display())).join(path);
            let to = opts.tablespaces.get(path).cloned().unwrap_or(default);
            tbs.insert(path.clone(), to);
        }
    }
    for oid in opts.tablespaces.keys() {
        if !tbs.contains_key(oid) {
            return Err(Error::Usage(format!(
                "--tablespace {oid}=...: backup {id} has no tablespace {oid} (it has: {})",
                tbs.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let mut claimed = Claimed::default();
    claimed.claim(dest)?;
    for dir in tbs.values() {
        claimed.claim(dir)?;
    }
    let result = write_tree(t, remote, id, dest, &m, tbs, opts).await;
    if result.is_err() {
        // Only what this restore wrote is there: leave the destinations as they were, so a
        // half-restored directory can never be started and the restore can simply be rerun.
        claimed.undo();
    }
    result
}

/// Destination directories a restore may write into, each absent or empty beforehand.
#[derive(Debug, Default)]
struct Claimed(Vec<(PathBuf, Option<PathBuf>)>);

impl Claimed {
    /// Refuses a non-empty `dir`; remembers what to remove on failure (its contents when it
    /// exists, else the topmost missing ancestor the restore will create).
    fn claim(&mut self, dir: &Path) -> Result<()> {
        if dir.exists() {
            let mut entries = std::fs::read_dir(dir)
                .map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
            if entries.next().is_some() {
                return Err(Error::Usage(format!(
                    "{} is not empty; restore into a new or empty directory",
                    dir.display()
                )));
            }
            self.0.push((dir.to_path_buf(), None));
        } else {
            let mut top = dir.to_path_buf();
            while let Some(parent) = top.parent().filter(|p| !p.as_os_str().is_empty()) {
                if parent.exists() {
                    break;
                }
                top = parent.to_path_buf();
            }
            self.0.push((dir.to_path_buf(), Some(top)));
        }
        Ok(())
    }

    fn undo(&self) {
        for (dir, created) in self.0.iter().rev() {
            let gone = match created {
                Some(top) => remove_all(top),
                None => std::fs::read_dir(dir).and_then(|mut entries| {
                    entries.try_for_each(|e| e.and_then(|e| remove_all(&e.path())))
                }),
            };
            match gone {
                Ok(()) => tracing::warn!("removed the incomplete restore from {}", dir.display()),
                Err(e) => tracing::error!(
                    "could not remove the incomplete restore from {}: {e}; delete it before starting PostgreSQL",
                    dir.display()
                ),
            }
        }
    }
}

fn remove_all(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes the manifest's tree into the claimed destinations.
async fn write_tree(
    t: &Transfer,
    remote: &Remote,
    id: &str,
    dest: &Path,
    m: &Manifest,
    tbs: BTreeMap<String, PathBuf>,
    opts: &RestoreOptions,
) -> Result<Restored> {
    std::fs::create_dir_all(dest)
        .map_err(|e| Error::io(format!("create {}", dest.display()), e))?;
    for dir in tbs.values() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    // Directories first (all of them, so empty ones come back), then files, then links.
    let mut modes = Vec::new();
    for e in &m.entries {
        if let Entry::Dir { path, mode } = e
            && let Some(p) = target(path, dest, &tbs)
        {
            std::fs::create_dir_all(&p)
                .map_err(|err| Error::io(format!("create {}", p.display()), err))?;
            modes.push((p, *mode));
        }
    }
    let jobs: Vec<_> = m
        .entries
        .iter()
        .filter_map(|e| match e {
            Entry::File {
                path,
                size,
                mode,
                crc32c,
            } => Some((path.clone(), *size, *mode, crc32c.clone())),
            _ => None,
        })
        .filter_map(|(path, size, mode, crc)| {
            target(&path, dest, &tbs).map(|p| (remote.backup_key(id, &path), p, size, mode, crc))
        })
        .collect();
    let files = jobs.len();
    t.progress()
        .add_work(files as u64, jobs.iter().map(|j| j.2).sum());
    let sizes = bounded(
        jobs,
        t.config().concurrency.max(1) * 2,
        |(key, p, size, mode, crc)| {
            let t = t.clone();
            async move {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
                }
                let expect = Expect {
                    size: Some(size),
                    crc32c: u32::from_str_radix(&crc, 16).ok(),
                };
                t.download_file(&key, &p, expect).await?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| Error::io(format!("chmod {}", p.display()), e))?;
                Ok(size)
            }
        },
    )
    .await?;
    for e in &m.entries {
        if let Entry::Symlink { path, target: to } = e {
            let Some(link) = target(path, dest, &tbs) else {
                continue;
            };
            // data/pg_tblspc/<oid> points at the tablespace's new home, not Barman's copy.
            let to = match path.strip_prefix("data/pg_tblspc/") {
                Some(oid) if tbs.contains_key(oid) => tbs[oid].clone(),
                _ => PathBuf::from(to),
            };
            std::os::unix::fs::symlink(&to, &link)
                .map_err(|err| Error::io(format!("symlink {}", link.display()), err))?;
        }
    }
    for (p, mode) in modes.iter().rev() {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| Error::io(format!("chmod {}", p.display()), e))?;
    }
    if let Some(cmd) = &opts.restore_command {
        fsutil::write_atomic(&dest.join("recovery.signal"), b"")?;
        let auto = dest.join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
        text.push_str(&format!(
            "# added by barmans3 base-restore\nrestore_command = '{}'\nrecovery_target_timeline = 'latest'\n",
            cmd.replace('\'', "''")
        ));
        fsutil::write_atomic(&auto, text.as_bytes())?;
    }
    Ok(Restored {
        files,
        bytes: sizes.iter().sum(),
        tablespaces: tbs,
    })
}

/// Fetches WAL file `name` into `dest` (PostgreSQL's `%f` and `%p`), expanding gzip. Returns
/// [`Error::NotFound`] when the bucket does not have it.
pub async fn wal_restore(t: &Transfer, remote: &Remote, name: &str, dest: &Path) -> Result<u64> {
    let rel = wal::relative_path(name).ok_or_else(|| {
        Error::Usage(format!(
            "{name:?} is not a WAL file name (segment, .partial, .backup or .history)"
        ))
    })?;
    let bytes = fetch_small(t, &remote.wal_key(&rel)).await?;
    let plain = match wal::sniff(&bytes) {
        Compression::None => bytes,
        Compression::Gzip => {
            let mut out = Vec::with_capacity(16 << 20);
            flate2::read::MultiGzDecoder::new(bytes.as_slice())
                .read_to_end(&mut out)
                .map_err(|e| Error::Failed(format!("{name}: corrupt gzip data: {e}")))?;
            out
        }
        Compression::Other(alg) => {
            return Err(Error::Failed(format!(
                "{name} is {alg}-compressed; barmans3 expands gzip only (set Barman's compression to gzip, or expand it by hand)"
            )));
        }
    };
    fsutil::write_atomic(dest, &plain)?;
    Ok(plain.len() as u64)
}
