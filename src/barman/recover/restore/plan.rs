//! What a restore will write, decided before it writes anything: the backup's layout (a copy of
//! PGDATA, or pg_basebackup's tar archives), where each tablespace goes, and every directory,
//! file and link with its local path. A pure function of the manifest and the options, so the
//! rules that keep a hostile or unusual manifest from writing outside its place are unit-tested:
//!
//! - only `data/pg_tblspc/<oid>` may be a symbolic link, and it is made to point at the
//!   tablespace's new home, whatever the manifest says; `pg_wal` as a link comes back as an
//!   empty directory (WAL comes from the archive); any other link refuses the backup;
//! - nothing may sit under a link, so no path is ever resolved through one;
//! - tablespace directories may not lie inside the data directory or inside each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::barman::manifest::{Entry, Manifest};
use crate::codec::Codec;
use crate::error::{Error, Result};

/// One archive of a tar-format backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// Its path in the manifest (`data/base.tar.gz`).
    pub path: String,
    /// Tablespace oid, or `None` for the base archive.
    pub oid: Option<String>,
    /// Its compression (`None`: a plain `.tar`).
    pub codec: Option<Codec>,
    /// Whether Barman encrypted it (`encryption = gpg`: `base.tar.gz.gpg`): it is decrypted
    /// before it is decompressed.
    pub encrypted: bool,
    /// Stored size.
    pub size: u64,
    /// CRC32C of the stored object.
    pub crc32c: Option<u32>,
}

/// A file to download: manifest path (the key's tail), local destination, size, mode, CRC32C.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileJob {
    /// Path relative to the backup (the key's tail).
    pub rel: String,
    /// Where it goes.
    pub to: PathBuf,
    /// Bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// CRC32C from the manifest.
    pub crc32c: Option<u32>,
}

/// The shape of the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// A copy of PGDATA under `data/` (or `pgdata/`), tablespaces under `<oid>/`.
    Plain,
    /// pg_basebackup's tar format: `data/base.tar[.gz|.lz4|.zst]` and one archive per tablespace.
    Tar {
        /// The base archive.
        base: Archive,
        /// One per tablespace.
        tablespaces: Vec<Archive>,
    },
}

/// Everything a restore writes, in the order it writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The layout.
    pub layout: Layout,
    /// The data directory (trailing slashes removed).
    pub dest: PathBuf,
    /// Tablespace oid → directory.
    pub tablespaces: BTreeMap<String, PathBuf>,
    /// Directories with their modes, parents first.
    pub dirs: Vec<(PathBuf, u32)>,
    /// Files to download (for a tar backup: the files beside the archives, e.g. backup_manifest).
    pub files: Vec<FileJob>,
    /// Links to create last: link path → target.
    pub links: Vec<(PathBuf, PathBuf)>,
    /// Notes for the operator (a link restored as a directory).
    pub notes: Vec<String>,
    /// Modes from the manifest narrowed by [`super::modes::narrow`].
    pub narrowed: usize,
}

impl Plan {
    /// Whether any archive is GPG-encrypted (Barman's `encryption = gpg`).
    pub fn encrypted(&self) -> bool {
        match &self.layout {
            Layout::Tar { base, tablespaces } => std::iter::once(base)
                .chain(tablespaces)
                .any(|a| a.encrypted),
            Layout::Plain => false,
        }
    }

    /// A mode from the manifest, narrowed ([`super::modes::narrow`]) and counted.
    fn narrow(&mut self, mode: u32) -> u32 {
        let (given, changed) = super::modes::narrow(mode);
        self.narrowed += usize::from(changed);
        given
    }
}

/// The name PostgreSQL checks last before it starts; restored last so an interrupted restore
/// can never be started.
pub const PG_CONTROL: &str = "global/pg_control";

/// Plans the restore of `m` into `dest`, with tablespace overrides `requested`.
pub fn plan(m: &Manifest, dest: &Path, requested: &BTreeMap<String, PathBuf>) -> Result<Plan> {
    let id = &m.backup_id;
    let dest = normalize(dest);
    let layout = layout(m)?;
    let found: Vec<String> = match &layout {
        Layout::Plain => m
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Dir { path, .. } if is_oid(path) => Some(path.clone()),
                _ => None,
            })
            .collect(),
        Layout::Tar { tablespaces, .. } => {
            tablespaces.iter().filter_map(|a| a.oid.clone()).collect()
        }
    };
    let tablespaces = place_tablespaces(id, &dest, &found, requested)?;
    let mut p = Plan {
        layout,
        dest,
        tablespaces,
        dirs: Vec::new(),
        files: Vec::new(),
        links: Vec::new(),
        notes: Vec::new(),
        narrowed: 0,
    };
    match p.layout.clone() {
        Layout::Plain => plan_plain(m, &mut p)?,
        Layout::Tar { base, tablespaces } => {
            let archives: BTreeSet<&str> = std::iter::once(base.path.as_str())
                .chain(tablespaces.iter().map(|a| a.path.as_str()))
                .collect();
            p.dirs.push((p.dest.clone(), 0o700));
            // The base archive's own pg_tblspc links (and its tablespace_map) name the old
            // homes; the restore makes its own.
            for (oid, home) in &p.tablespaces {
                p.links
                    .push((p.dest.join("pg_tblspc").join(oid), home.clone()));
            }
            for e in &m.entries {
                if let Entry::File {
                    path,
                    size,
                    mode,
                    crc32c,
                    ..
                } = e
                    && !archives.contains(path.as_str())
                    && let Some(rest) = path.strip_prefix("data/")
                    && !rest.contains('/')
                {
                    let mode = p.narrow(*mode);
                    p.files.push(FileJob {
                        rel: path.clone(),
                        to: p.dest.join(rest),
                        size: *size,
                        mode,
                        crc32c: u32::from_str_radix(crc32c, 16).ok(),
                    });
                }
            }
        }
    }
    Ok(p)
}

/// `DEST/` and `DEST` are the same directory: the default tablespace homes are `DEST_tblspc`
/// beside it, never inside it.
fn normalize(dest: &Path) -> PathBuf {
    dest.components().collect()
}

fn is_oid(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Tells a tar-format backup from a copy of PGDATA, and refuses what is neither.
fn layout(m: &Manifest) -> Result<Layout> {
    let id = &m.backup_id;
    let mut base = None;
    let mut tbs = Vec::new();
    for e in &m.entries {
        let Entry::File {
            path, size, crc32c, ..
        } = e
        else {
            continue;
        };
        let Some(name) = path.strip_prefix("data/").filter(|n| !n.contains('/')) else {
            continue;
        };
        let (plain, encrypted) = match name.strip_suffix(".gpg") {
            Some(plain) => (plain, true),
            None => (name, false),
        };
        let Some((stem, _)) = plain.split_once(".tar") else {
            continue;
        };
        if stem != "base" && !is_oid(stem) {
            continue;
        }
        let codec = Codec::of_tar_name(plain).ok_or_else(|| {
            Error::Failed(format!(
                "backup {id} holds {path}, a compressed archive: barmans3 restores plain, gzip, lz4, zstd, bzip2 and xz tar archives only (GPG-encrypted or not)"
            ))
        })?;
        let a = Archive {
            path: path.clone(),
            oid: (stem != "base").then(|| stem.to_string()),
            codec,
            encrypted,
            size: *size,
            crc32c: u32::from_str_radix(crc32c, 16).ok(),
        };
        if a.oid.is_none() {
            base = Some(a);
        } else {
            tbs.push(a);
        }
    }
    let has = |p: &str| m.entries.iter().any(|e| e.path() == p);
    match base {
        Some(base) => Ok(Layout::Tar {
            base,
            tablespaces: tbs,
        }),
        None if !tbs.is_empty() => Err(Error::Failed(format!(
            "backup {id} has tablespace archives but no data/base.tar*: incomplete tar backup"
        ))),
        None if has("data/PG_VERSION") || has("pgdata/PG_VERSION") => Ok(Layout::Plain),
        None => Err(Error::Failed(format!(
            "backup {id} has neither a data directory (data/PG_VERSION) nor pg_basebackup tar archives (data/base.tar*): not a kind of backup barmans3 can restore"
        ))),
    }
}

/// Where each tablespace goes: the operator's choice, else `<DEST>_tblspc/<oid>`. Every
/// requested oid must exist; no home may be inside DEST or inside another home.
fn place_tablespaces(
    id: &str,
    dest: &Path,
    found: &[String],
    requested: &BTreeMap<String, PathBuf>,
) -> Result<BTreeMap<String, PathBuf>> {
    for oid in requested.keys() {
        if !found.contains(oid) {
            return Err(Error::Usage(format!(
                "--tablespace {oid}=...: backup {id} has no tablespace {oid} (it has: {})",
                if found.is_empty() {
                    "none".to_string()
                } else {
                    found.join(", ")
                }
            )));
        }
    }
    let homes: BTreeMap<String, PathBuf> = found
        .iter()
        .map(|oid| {
            let home = requested.get(oid).map_or_else(
                || PathBuf::from(format!("{}_tblspc", dest.display())).join(oid),
                |p| normalize(p),
            );
            (oid.clone(), home)
        })
        .collect();
    for (oid, home) in &homes {
        let inside = |other: &Path| home.starts_with(other) || other.starts_with(home);
        if inside(dest) {
            return Err(Error::Usage(format!(
                "tablespace {oid} would go to {}, which overlaps the data directory {}; choose another --tablespace {oid}=DIR",
                home.display(),
                dest.display()
            )));
        }
        if let Some((other, _)) = homes.iter().find(|(o, h)| *o != oid && inside(h)) {
            return Err(Error::Usage(format!(
                "tablespaces {oid} and {other} would share {}; give each its own directory",
                home.display()
            )));
        }
    }
    Ok(homes)
}

/// Maps a manifest path to a local path: `data/…` (or `pgdata/…`) under DEST, `<oid>/…`
/// under the tablespace's home. Other top-level entries are not part of PGDATA.
fn target(local: &Path, p: &Plan) -> Option<PathBuf> {
    let mut parts = local.components();
    let top = parts.next()?.as_os_str().to_str()?;
    let rest = parts.as_path();
    let base = match top {
        "data" | "pgdata" => p.dest.clone(),
        oid if is_oid(oid) => p.tablespaces.get(oid)?.clone(),
        _ => return None,
    };
    Some(if rest.as_os_str().is_empty() {
        base
    } else {
        base.join(rest)
    })
}

fn plan_plain(m: &Manifest, p: &mut Plan) -> Result<()> {
    let refuse = |path: &str, why: String| refusal(&m.backup_id, path, why);
    // Links first, so that entries under them can be refused.
    let link_paths = plan_links(m, p)?;
    for e in &m.entries {
        let path = e.path();
        if let Some(l) = link_paths.iter().find(|l| {
            path.len() > l.len() && path.starts_with(l.as_str()) && path.as_bytes()[l.len()] == b'/'
        }) {
            return Err(refuse(path, format!("it lies under the link {l}")));
        }
        let Some(to) = target(&e.local_path()?, p) else {
            continue;
        };
        match e {
            Entry::Dir { mode, .. } => {
                let mode = p.narrow(*mode);
                p.dirs.push((to, mode));
            }
            Entry::File {
                size, mode, crc32c, ..
            } => {
                let mode = p.narrow(*mode);
                p.files.push(FileJob {
                    rel: path.to_string(),
                    to,
                    size: *size,
                    mode,
                    crc32c: u32::from_str_radix(crc32c, 16).ok(),
                });
            }
            Entry::Symlink { .. } => {}
        }
    }
    p.dirs.sort_by(|a, b| a.0.cmp(&b.0));
    // pg_control last: a restore stopped before it leaves nothing PostgreSQL would start on.
    let control = |f: &FileJob| {
        f.rel == format!("data/{PG_CONTROL}") || f.rel == format!("pgdata/{PG_CONTROL}")
    };
    p.files.sort_by_key(|f| control(f));
    Ok(())
}

/// The plan's links: tablespace links to their homes, `pg_wal` as an empty directory; any other
/// link is refused. Returns the link paths, under which no entry may lie.
fn plan_links(m: &Manifest, p: &mut Plan) -> Result<BTreeSet<String>> {
    let refuse = |path: &str, why: String| refusal(&m.backup_id, path, why);
    let mut link_paths = BTreeSet::new();
    for e in &m.entries {
        let Entry::Symlink {
            path, target: to, ..
        } = e
        else {
            continue;
        };
        let local = e.local_path()?;
        let oid = path
            .strip_prefix("data/pg_tblspc/")
            .or_else(|| path.strip_prefix("pgdata/pg_tblspc/"));
        if let Some(oid) = oid.filter(|o| is_oid(o)) {
            let home = p.tablespaces.get(oid).ok_or_else(|| {
                refuse(
                    path,
                    format!("a link to tablespace {oid}, which the backup does not hold"),
                )
            })?;
            if let Some(link) = target(&local, p) {
                p.links.push((link, home.clone()));
            }
        } else if matches!(path.as_str(), "data/pg_wal" | "data/pg_xlog") {
            if let Some(dir) = target(&local, p) {
                p.notes.push(format!(
                    "{path} was a link to {to}; restored as an empty directory (WAL comes from the archive)"
                ));
                p.dirs.push((dir, 0o700));
            }
        } else {
            return Err(refuse(
                path,
                format!(
                    "a symbolic link (to {to}) where PostgreSQL keeps none; only pg_tblspc/<oid> may be a link"
                ),
            ));
        }
        link_paths.insert(path.clone());
    }
    Ok(link_paths)
}

fn refusal(id: &str, path: &str, why: String) -> Error {
    Error::Failed(format!(
        "refusing to restore backup {id}: {path}: {why}; nothing was written"
    ))
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
