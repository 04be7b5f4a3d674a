//! Restoring a tar-format backup (`backup_method = postgres` with `backup_compression`): each
//! archive streams from the bucket through its decoder into the tar reader, which writes the
//! entries under the data directory or the tablespace's home. No copy of the archive touches
//! the disk; the download verifies the stored object's size and CRC32C as it streams, and a
//! mismatch fails the restore (whose caller then removes what was written).
//!
//! The same rules as the plain restore hold: no entry outside its root, no link (tablespace
//! links come from the plan, `tablespace_map` and `recovery.conf` are left out as Barman does),
//! no device, FIFO or hard link, and `global/pg_control` lands under a temporary name that only
//! the very last step of the restore renames.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::plan::{Archive, PG_CONTROL};
use super::writer::Writer;
use crate::barman::server::Server;
use crate::codec::{Codec, Decryption};
use crate::error::{Error, Result};
use crate::transfer::download::piece_channel;
use crate::transfer::{Expect, Transfer, bounded};

/// Where `global/pg_control` waits until the restore is otherwise complete.
pub const PG_CONTROL_PENDING: &str = "global/pg_control.barmans3-pending";

/// Downloaded pieces waiting for the extraction (each is a ranged GET's body, at most
/// [`crate::transfer::download::MAX_PIECE`]), beside the one it reads.
const PIPE_PIECES: usize = 1;
/// The extraction writes each file in pieces this large (direct writes want large ones;
/// `std::io::copy` would write 8 KiB per system call), and reads a decryption's output
/// through a buffer this large.
const PIECE: usize = 4 << 20;

/// What the extraction of one archive wrote.
#[derive(Debug, Default)]
pub struct Extracted {
    /// Regular files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Directories with the modes the archive gave them, narrowed (applied at the end).
    pub dirs: Vec<(PathBuf, u32)>,
    /// Modes narrowed by [`super::modes::narrow`].
    pub narrowed: usize,
}

/// Streams every archive into its root: the base archive into `dest`, each tablespace archive
/// into its home; encrypted archives through `decrypt`. Archives are restored in parallel.
pub async fn write(
    srv: &Server,
    id: &str,
    archives: Vec<(Archive, PathBuf)>,
    decrypt: Option<&Decryption>,
) -> Result<Extracted> {
    let jobs = archives.into_iter().map(|(a, root)| {
        let key = srv.remote.backup_key(id, &a.path);
        (a, root, key)
    });
    let parts = bounded(jobs, 4, |(a, root, key)| {
        let t = srv.t.clone();
        let decrypt = if a.encrypted {
            decrypt
                .cloned()
                .map(Some)
                .ok_or_else(|| encrypted_without_key(&key))
        } else {
            Ok(None)
        };
        async move { restore_archive(&t, &key, &a, root, decrypt?).await }
    })
    .await?;
    let mut all = Extracted::default();
    for p in parts {
        all.files += p.files;
        all.bytes += p.bytes;
        all.dirs.extend(p.dirs);
        all.narrowed += p.narrowed;
    }
    Ok(all)
}

/// The refusal of an encrypted archive when nothing says how to decrypt it.
pub fn encrypted_without_key(what: &str) -> Error {
    Error::Config(format!(
        "{what} is encrypted with GPG (Barman's encryption = gpg): set encryption_passphrase_command in the Barman config barman.config names (the secret key in this user's keyring), or barman.decryption_command"
    ))
}

pub(crate) async fn restore_archive(
    t: &Transfer,
    key: &str,
    a: &Archive,
    root: PathBuf,
    decrypt: Option<Decryption>,
) -> Result<Extracted> {
    let (mut pieces, reader) = piece_channel(PIPE_PIECES);
    let (codec, base, what) = (a.codec, a.oid.is_none(), key.to_string());
    let extract = tokio::task::spawn_blocking(move || match decrypt {
        None => extract(reader, codec, &root, base, &what),
        Some(d) => extract_decrypted(&d, reader, codec, &root, base, &what),
    });
    let expect = Expect {
        size: Some(a.size),
        crc32c: a.crc32c,
    };
    let downloaded = t.download_into(key, &mut pieces, expect).await;
    // End of input for the extractor (or, after a failed download, a short stream it reports).
    drop(pieces);
    let extracted = extract
        .await
        .map_err(|e| Error::Failed(format!("extraction task failed: {e}")))?;
    match (downloaded, extracted) {
        (Ok(_), x) => x,
        // The extractor stopped reading (a refused entry, damaged data): its reason is the
        // cause, the download's broken pipe only the symptom.
        (Err(Error::Io { context, .. }), Err(x)) if context == "write output" => Err(x),
        // A failed or unverified download is the cause whatever the extractor made of it.
        (Err(d), _) => Err(d),
    }
}

/// [`extract`] of what `d` decrypts from `input`. When the extraction fails, a failed
/// decryption is the cause (a missing key makes an empty stream, not a damaged archive).
fn extract_decrypted(
    d: &Decryption,
    input: impl Read + Send + 'static,
    codec: Option<Codec>,
    root: &Path,
    base: bool,
    what: &str,
) -> Result<Extracted> {
    let mut plain = d.stream(input, what)?;
    // The decryption's output is a pipe: read in pieces, not a system call per codec header.
    match extract(
        std::io::BufReader::with_capacity(PIECE, &mut plain),
        codec,
        root,
        base,
        what,
    ) {
        Ok(x) => plain.finish().map(|()| x),
        Err(e) => Err(plain.failure().unwrap_or(e)),
    }
}

/// Tablespace links in a base archive: skipped (the restore makes its own), and nothing may be
/// written under one or where one belongs, whichever entry comes first. Returns whether the
/// entry was such a link; an error says why an entry is refused.
fn tablespace_link(
    root: &Path,
    rel: &Path,
    name: &str,
    is_link: bool,
    links: &mut Vec<PathBuf>,
) -> std::result::Result<bool, String> {
    if let Some(link) = links.iter().find(|l| rel.starts_with(l)) {
        return Err(format!(
            "refusing entry {name:?}: it lies under {}, a tablespace link in the archive",
            link.display()
        ));
    }
    if !is_link {
        return Ok(false);
    }
    if std::fs::symlink_metadata(root.join(rel)).is_ok() {
        return Err(format!(
            "refusing entry {name:?}: a tablespace link where the archive already wrote something"
        ));
    }
    links.push(rel.to_path_buf());
    Ok(true)
}

/// Reads a (compressed) tar stream and writes its entries under `root`.
pub fn extract(
    input: impl Read + Send,
    codec: Option<Codec>,
    root: &Path,
    base: bool,
    what: &str,
) -> Result<Extracted> {
    let reader: Box<dyn Read + Send> = match codec {
        Some(c) => c.decoder(input)?,
        None => Box::new(input),
    };
    let mut archive = ::tar::Archive::new(reader);
    let out = std::thread::scope(|s| {
        let mut w = Writer::start(s, PIECE);
        let out = entries(&mut archive, root, base, what, &mut w)?;
        w.finish().map(|()| out)
    })?;
    // Read to the end (the archive's padding, the codec's trailer): the download verifies the
    // whole object and must not find its reader gone.
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(|e| {
        Error::Failed(format!(
            "{what}: damaged data after the archive: {}",
            crate::error::reason(&e)
        ))
    })?;
    Ok(out)
}

/// Extracts every entry of `archive` under `root`, the files' data through `w`.
fn entries(
    archive: &mut ::tar::Archive<Box<dyn Read + Send + '_>>,
    root: &Path,
    base: bool,
    what: &str,
    w: &mut Writer<'_>,
) -> Result<Extracted> {
    let bad = |why: String| Error::Failed(format!("{what}: {why}"));
    let mut out = Extracted::default();
    // The tablespace links the archive holds and the restore does not make (it links each
    // tablespace to its new home itself): nothing may be written under one of those names, or
    // the directory made there would stand where PostgreSQL expects a link, and a link made
    // later would lead wherever the archive's entries prepared.
    let mut tablespace_links: Vec<PathBuf> = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {}", crate::error::reason(&e))))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| bad(format!("damaged archive: {}", crate::error::reason(&e))))?;
        let raw = entry.path_bytes().into_owned();
        let Some(rel) = relative(&raw).map_err(|why| {
            bad(format!(
                "refusing entry {:?}: {why}",
                String::from_utf8_lossy(&raw)
            ))
        })?
        else {
            continue;
        };
        let kind = entry.header().entry_type();
        let (mode, narrowed) = super::modes::narrow(entry.header().mode().unwrap_or(0o600));
        let name = String::from_utf8_lossy(rel.as_os_str().as_bytes()).into_owned();
        if base && (name == "tablespace_map" || name == "recovery.conf") {
            continue;
        }
        let link = base && kind.is_symlink() && name.starts_with("pg_tblspc/");
        if tablespace_link(root, &rel, &name, link, &mut tablespace_links).map_err(bad)? {
            continue;
        }
        let to = root.join(&rel);
        out.narrowed += usize::from(narrowed && (kind.is_dir() || kind.is_file()));
        if kind.is_dir() {
            std::fs::create_dir_all(&to)
                .map_err(|e| Error::io(format!("create {}", to.display()), e))?;
            out.dirs.push((to, mode));
        } else if kind.is_file() || kind == ::tar::EntryType::Continuous {
            let to = if base && name == PG_CONTROL {
                root.join(PG_CONTROL_PENDING)
            } else {
                to
            };
            out.bytes += w.file(&mut entry, &to, mode)?;
            out.files += 1;
        } else {
            return Err(bad(format!(
                "refusing entry {name:?}: a {kind:?} entry where PostgreSQL keeps regular files and directories only"
            )));
        }
    }
    Ok(out)
}

/// The entry path relative to its root, `None` for the root itself (`./`). Refuses absolute
/// paths and `..`.
fn relative(raw: &[u8]) -> std::result::Result<Option<PathBuf>, &'static str> {
    let trimmed: Vec<&[u8]> = raw
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if raw.starts_with(b"/") {
        return Err("absolute path");
    }
    if trimmed.iter().any(|c| *c == b"..") {
        return Err("path with '..'");
    }
    if raw.contains(&0) {
        return Err("path with a NUL byte");
    }
    if trimmed.is_empty() {
        return Ok(None);
    }
    Ok(Some(PathBuf::from(std::ffi::OsStr::from_bytes(
        &trimmed.join(&b'/'),
    ))))
}

/// Tablespace oid → home, for the archives of a plan.
pub fn roots(
    base: &Archive,
    tablespaces: &[Archive],
    dest: &Path,
    homes: &BTreeMap<String, PathBuf>,
) -> Vec<(Archive, PathBuf)> {
    std::iter::once((base.clone(), dest.to_path_buf()))
        .chain(tablespaces.iter().filter_map(|a| {
            let home = homes.get(a.oid.as_deref()?)?;
            Some((a.clone(), home.clone()))
        }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn archive(entries: &[(&str, ::tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = ::tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = ::tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o600);
            h.set_size(data.len() as u64);
            if kind.is_symlink() {
                h.set_link_name("/etc").expect("link");
            }
            // Write the name bytes directly: set_path refuses '..', a hostile archive does not.
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    use ::tar::EntryType as T;

    #[test]
    fn a_base_archive_restores_with_pg_control_pending() {
        let tar = archive(&[
            ("./", T::Directory, b""),
            ("PG_VERSION", T::Regular, b"15\n"),
            ("global/", T::Directory, b""),
            ("global/pg_control", T::Regular, b"ctl"),
            ("tablespace_map", T::Regular, b"16386 /old/place\n"),
            ("pg_tblspc/16386", T::Symlink, b""),
        ]);
        let d = tempfile::tempdir().expect("tmp");
        let x = extract(tar.as_slice(), None, d.path(), true, "t").expect("extract");
        assert_eq!(x.files, 2);
        assert_eq!(
            std::fs::read(d.path().join("PG_VERSION")).expect("v"),
            b"15\n"
        );
        assert!(!d.path().join("global/pg_control").exists());
        assert!(d.path().join(PG_CONTROL_PENDING).exists());
        assert!(!d.path().join("tablespace_map").exists());
        assert!(!d.path().join("pg_tblspc/16386").exists());
    }

    #[test]
    fn files_of_many_pieces_and_odd_tails_come_back_whole_with_their_modes() {
        // Sizes around the piece: whole direct writes, a tail written through the page cache,
        // and an empty file.
        let sizes = [0, 1, PIECE - 1, PIECE, 2 * PIECE + 4097];
        let bodies: Vec<Vec<u8>> = sizes
            .iter()
            .map(|n| (0..*n).map(|i| (i * 7 + i / 4096) as u8).collect())
            .collect();
        let names: Vec<String> = sizes.iter().map(|n| format!("base/1/{n}")).collect();
        let entries: Vec<(&str, T, &[u8])> = names
            .iter()
            .zip(&bodies)
            .map(|(n, b)| (n.as_str(), T::Regular, b.as_slice()))
            .collect();
        let tar = archive(&entries);
        let d = tempfile::tempdir().expect("tmp");
        let x = extract(tar.as_slice(), None, d.path(), false, "t").expect("extract");
        assert_eq!(x.files, sizes.len());
        assert_eq!(x.bytes, sizes.iter().sum::<usize>() as u64);
        for (n, b) in names.iter().zip(&bodies) {
            let p = d.path().join(n);
            assert!(std::fs::read(&p).expect("read") == *b, "{n} differs");
            let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o7777;
            assert_eq!(mode, 0o600, "{n}");
        }
    }

    #[test]
    fn hostile_archives_write_nothing_outside_their_root() {
        let outside = tempfile::tempdir().expect("tmp");
        let escape = format!(
            "../{}/x",
            outside.path().file_name().expect("n").to_string_lossy()
        );
        for entries in [
            vec![(escape.as_str(), T::Regular, b"x".as_slice())],
            vec![("/etc/evil", T::Regular, b"x".as_slice())],
            vec![("esc", T::Symlink, b"".as_slice())],
            vec![("hard", T::Link, b"".as_slice())],
            vec![("dev", T::Char, b"".as_slice())],
            vec![
                ("a", T::Regular, b"1".as_slice()),
                ("a", T::Regular, b"2".as_slice()),
            ],
        ] {
            let d = tempfile::tempdir().expect("tmp");
            let root = d.path().join("root");
            std::fs::create_dir(&root).expect("root");
            let tar = archive(&entries);
            assert!(
                extract(tar.as_slice(), None, &root, false, "t").is_err(),
                "{entries:?}"
            );
            assert!(
                std::fs::read_dir(outside.path())
                    .expect("ls")
                    .next()
                    .is_none()
            );
        }
    }

    #[test]
    fn nothing_is_written_under_a_tablespace_link_of_the_archive() {
        for entries in [
            // A link chain: the second link, then a file through the first.
            vec![
                ("pg_tblspc/16390", T::Symlink, b"".as_slice()),
                ("pg_tblspc/16391", T::Symlink, b"".as_slice()),
                ("pg_tblspc/16390/planted", T::Regular, b"x".as_slice()),
            ],
            vec![
                ("pg_tblspc/16390", T::Symlink, b"".as_slice()),
                (
                    "pg_tblspc/16390/PG_15_202209061/",
                    T::Directory,
                    b"".as_slice(),
                ),
            ],
            vec![
                ("pg_tblspc/16390", T::Symlink, b"".as_slice()),
                ("pg_tblspc/16390", T::Regular, b"x".as_slice()),
            ],
        ] {
            let d = tempfile::tempdir().expect("tmp");
            let tar = archive(&entries);
            let e = extract(tar.as_slice(), None, d.path(), true, "t").expect_err("refused");
            assert!(
                e.to_string().contains("a tablespace link in the archive"),
                "{e}"
            );
            assert!(!d.path().join("pg_tblspc/16390").exists(), "{entries:?}");
        }
        // In-place tablespaces (a directory under pg_tblspc, no link) restore as they are.
        let tar = archive(&[
            ("pg_tblspc/16392/", T::Directory, b""),
            ("pg_tblspc/16392/f", T::Regular, b"x"),
        ]);
        let d = tempfile::tempdir().expect("tmp");
        extract(tar.as_slice(), None, d.path(), true, "t").expect("in place");
        assert!(d.path().join("pg_tblspc/16392/f").is_file());
        // The file first, the link after it: refused all the same.
        let tar = archive(&[
            ("pg_tblspc/16393/planted", T::Regular, b"x"),
            ("pg_tblspc/16393", T::Symlink, b""),
        ]);
        let d = tempfile::tempdir().expect("tmp");
        let e = extract(tar.as_slice(), None, d.path(), true, "t").expect_err("refused");
        assert!(e.to_string().contains("a tablespace link where"), "{e}");
    }

    #[test]
    fn setuid_sticky_and_world_writable_modes_are_narrowed_and_counted() {
        let mut b = ::tar::Builder::new(Vec::new());
        for (path, kind, mode, data) in [
            ("sh", T::Regular, 0o4755, b"#!".as_slice()),
            ("tmp/", T::Directory, 0o1777, b"".as_slice()),
            ("ok", T::Regular, 0o600, b"1".as_slice()),
        ] {
            let mut h = ::tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(data.len() as u64);
            h.set_path(path).expect("path");
            h.set_cksum();
            b.append(&h, data).expect("append");
        }
        let tar = b.into_inner().expect("tar");
        let d = tempfile::tempdir().expect("tmp");
        let x = extract(tar.as_slice(), None, d.path(), false, "t").expect("extract");
        let mode = |p: &str| {
            std::fs::metadata(d.path().join(p))
                .expect("stat")
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("sh"), 0o750);
        assert_eq!(mode("ok"), 0o600);
        assert_eq!(x.dirs, vec![(d.path().join("tmp"), 0o750)]);
        assert_eq!(x.narrowed, 2);
    }

    #[test]
    fn a_truncated_compressed_archive_is_an_error() {
        let tar = archive(&[("PG_VERSION", T::Regular, &[7u8; 100_000])]);
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("zstd");
        std::io::Write::write_all(&mut enc, &tar).expect("w");
        let z = enc.finish().expect("zstd");
        let d = tempfile::tempdir().expect("tmp");
        let e = extract(&z[..z.len() / 2], Some(Codec::Zstd), d.path(), true, "t")
            .expect_err("truncated");
        assert!(
            e.to_string().contains("t:") || e.to_string().contains("damaged"),
            "{e}"
        );
    }
}
