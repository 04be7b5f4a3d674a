//! Multipart uploads on the `file://` backend, emulated as S3 behaves: an upload is a directory
//! under `<root>/.barmans3/multipart/<id>/` holding a record of the key and one file per part
//! (written to a temp name and renamed, with a JSON record of its ETag, CRC32C and size);
//! completing checks every part, then builds the object in a temp file from the parts
//! themselves (consuming them, so it needs the object's space once) and installs it like a
//! single put, so an object appears whole or not at all. The same refusals as S3: parts out of
//! order, unknown or changed parts, parts under 5 MiB but the last.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::copy::write_body;
use super::{LocalStore, RESERVED, Sidecar, fail, io, system_time_secs};
use crate::checksum;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::store::limits::{MAX_PARTS, MIN_PART_SIZE};
use crate::store::{
    Body, Integrity, Multipart, MultipartUpload, PartReceipt, PutOptions, PutReceipt, Upload,
};

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct UploadRecord {
    key: String,
    initiated: u64,
    crc32c: bool,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PartRecord {
    etag: String,
    crc32c: u32,
    size: u64,
}

#[async_trait]
impl Multipart for LocalStore {
    async fn create(&self, key: &str, opts: &PutOptions) -> Result<Upload> {
        self.check_key("CreateMultipartUpload", key)?;
        let id = format!(
            "{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        let dir = self.upload_dir(&id)?;
        fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let rec = UploadRecord {
            key: key.into(),
            initiated: system_time_secs(SystemTime::now()),
            crc32c: opts.part_checksum.is_some(),
            metadata: opts.metadata.clone(),
        };
        let json = serde_json::to_vec(&rec).map_err(|e| Error::Failed(e.to_string()))?;
        fsutil::write_atomic(&dir.join("upload.json"), &json)?;
        Ok(Upload::new(key, id))
    }

    async fn upload_part(&self, up: &Upload, part: u32, body: Body) -> Result<PartReceipt> {
        let (dir, rec) = self.upload("UploadPart", up, part)?;
        if rec.crc32c && !matches!(body.integrity, Integrity::Crc32c(_)) {
            return Err(fail(
                "UploadPart",
                &up.key,
                "InvalidRequest",
                "upload was created with CRC32C; the part has none",
            ));
        }
        self.store_part(&dir, &rec, part, |f| {
            write_body("UploadPart", &up.key, &body, f)
        })
    }

    async fn complete(&self, up: &Upload, parts: &[PartReceipt]) -> Result<PutReceipt> {
        let key = up.key.as_str();
        let dir = self.upload_dir(&up.id)?;
        let rec = read_upload(&dir, key)?;
        if parts.is_empty() {
            return Err(fail(
                "CompleteMultipartUpload",
                key,
                "MalformedXML",
                "no parts given",
            ));
        }
        // Every part is checked before any is consumed: a refused completion leaves the upload
        // as it was, as S3 leaves it.
        let mut checked = Vec::with_capacity(parts.len());
        for i in 0..parts.len() {
            let prev = i.checked_sub(1).map_or(0, |j| parts[j].part_number);
            checked.push(checked_part(&dir, &rec, key, parts, i, prev)?);
        }
        let total: u64 = checked.iter().map(|p| p.size).sum();
        let tmp = self.assemble(&dir, key, parts, total)?;
        let crcs: Vec<u32> = checked.iter().map(|p| p.crc32c).collect();
        let composite = checksum::composite_crc32c(&crcs);
        let etag = format!(
            "{}-{}",
            checksum::hex(&checksum::md5(composite.as_bytes())),
            parts.len()
        );
        let side = Sidecar {
            size: total,
            etag: etag.clone(),
            crc32c: composite,
            metadata: rec.metadata,
        };
        if let Err(e) = self.install(key, &tmp, &side) {
            // The parts are in the temp file now: nothing else would free its space.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let _ = fs::remove_dir_all(&dir);
        Ok(PutReceipt { etag: Some(etag) })
    }

    async fn abort(&self, up: &Upload) -> Result<()> {
        let dir = self.upload_dir(&up.id)?;
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove {}", dir.display()), e)),
        }
    }

    async fn list_parts(&self, up: &Upload) -> Result<Vec<PartReceipt>> {
        let key = up.key.as_str();
        let dir = self.upload_dir(&up.id)?;
        let rec = read_upload(&dir, key)?;
        let mut out = Vec::new();
        let rd = fs::read_dir(&dir).map_err(|e| io("ListParts", key, e))?;
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(num) = name
                .strip_prefix("part-")
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let Ok(part_number) = num.parse::<u32>() else {
                continue;
            };
            let Some(pr) = fs::read(entry.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<PartRecord>(&b).ok())
            else {
                continue;
            };
            // Listed only as what was recorded: a part file of another length is sent again.
            if !part_file_holds(&dir, part_number, pr.size) {
                continue;
            }
            out.push(PartReceipt {
                part_number,
                etag: pr.etag,
                crc32c: rec.crc32c.then_some(pr.crc32c),
                size: pr.size,
            });
        }
        out.sort_by_key(|p| p.part_number);
        Ok(out)
    }

    async fn list_uploads(&self, prefix: &str) -> Result<Vec<MultipartUpload>> {
        let base = self.root.join(RESERVED).join("multipart");
        let mut out = Vec::new();
        let rd =
            fs::read_dir(&base).map_err(|e| Error::io(format!("list {}", base.display()), e))?;
        for entry in rd.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            let Some(rec) = fs::read(entry.path().join("upload.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<UploadRecord>(&b).ok())
            else {
                continue;
            };
            if rec.key.starts_with(prefix) {
                out.push(MultipartUpload {
                    upload: Upload::new(rec.key, id),
                    initiated: Some(
                        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(rec.initiated),
                    ),
                });
            }
        }
        out.sort_by(|a, b| (&a.upload.key, &a.upload.id).cmp(&(&b.upload.key, &b.upload.id)));
        Ok(out)
    }
}

impl LocalStore {
    /// Builds the object of a checked completion in a temp file by consuming its parts: the
    /// first part is moved there and each further one appended, then removed. A completion so
    /// needs the object's space once, not twice (a 2 GiB stream into a nearly full disk). An
    /// I/O error part-way leaves an upload whose consumed parts are gone: the completion's
    /// retry is refused (`InvalidPart`) and the object must be sent again, never installed from
    /// a part that is missing. Each part's record goes before its file, so no record names a
    /// file that is gone.
    fn assemble(
        &self,
        dir: &Path,
        key: &str,
        parts: &[PartReceipt],
        total: u64,
    ) -> Result<PathBuf> {
        const OP: &str = "CompleteMultipartUpload";
        let (tmp, placeholder) = self.temp_file()?;
        drop(placeholder);
        let take = |p: &PartReceipt| -> Result<PathBuf> {
            // Gone since the check: another completion of the same upload took it.
            fs::remove_file(dir.join(format!("part-{:05}.json", p.part_number))).map_err(|e| {
                match e.kind() {
                    std::io::ErrorKind::NotFound => not_uploaded(key, p.part_number),
                    _ => io(OP, key, e),
                }
            })?;
            Ok(dir.join(format!("part-{:05}", p.part_number)))
        };
        let result = (|| {
            let first = take(&parts[0])?;
            fs::rename(&first, &tmp)
                .map_err(|e| Error::io(format!("rename {}", first.display()), e))?;
            let mut out = fs::OpenOptions::new()
                .append(true)
                .open(&tmp)
                .map_err(|e| Error::io(format!("open {}", tmp.display()), e))?;
            for p in &parts[1..] {
                let part = take(p)?;
                let mut src = fs::File::open(&part)
                    .map_err(|e| Error::io(format!("open {}", part.display()), e))?;
                std::io::copy(&mut src, &mut out)
                    .map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
                fs::remove_file(&part)
                    .map_err(|e| Error::io(format!("remove {}", part.display()), e))?;
            }
            out.sync_all()
                .map_err(|e| Error::io(format!("fsync {}", tmp.display()), e))?;
            // The parts' records add up to `total`; an object of another length is not theirs.
            let len = out
                .metadata()
                .map_err(|e| Error::io(format!("stat {}", tmp.display()), e))?
                .len();
            if len != total {
                return Err(fail(
                    OP,
                    key,
                    "InvalidPart",
                    format!("the parts hold {len} bytes, their records {total}"),
                ));
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(tmp),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// The directory and record of an upload that a part `part` is sent to, refused as S3
    /// refuses it before reading a body: an unknown upload, another key's, a part number
    /// outside 1..=10000.
    pub(super) fn upload(
        &self,
        op: &'static str,
        up: &Upload,
        part: u32,
    ) -> Result<(PathBuf, UploadRecord)> {
        let dir = self.upload_dir(&up.id)?;
        let rec = read_upload(&dir, &up.key)?;
        if !(1..=MAX_PARTS).contains(&u64::from(part)) {
            return Err(fail(
                op,
                &up.key,
                "InvalidArgument",
                "part number must be 1..=10000",
            ));
        }
        Ok((dir, rec))
    }

    /// Writes a part through `write` (which returns its CRC32C and size) to a temp file,
    /// renames it into place and records it.
    pub(super) fn store_part(
        &self,
        dir: &Path,
        rec: &UploadRecord,
        part_number: u32,
        write: impl FnOnce(&mut fs::File) -> Result<(u32, u64)>,
    ) -> Result<PartReceipt> {
        let part = dir.join(format!("part-{part_number:05}"));
        let (tmp, crc, size) = self.write_temp(write)?;
        fs::rename(&tmp, &part).map_err(|e| Error::io(format!("rename {}", part.display()), e))?;
        let etag = format!("{crc:08x}{size:016x}");
        let pr = PartRecord {
            etag: etag.clone(),
            crc32c: crc,
            size,
        };
        let json = serde_json::to_vec(&pr).map_err(|e| Error::Failed(e.to_string()))?;
        fsutil::write_atomic(&dir.join(format!("part-{part_number:05}.json")), &json)?;
        Ok(PartReceipt {
            part_number,
            etag,
            crc32c: rec.crc32c.then_some(crc),
            size,
        })
    }
}

/// Whether part `n`'s file in upload `dir` has the `size` its record gives: one of another
/// length (a crash that kept appended data but not a rename, or anyone writing there) is not
/// the part that was recorded.
fn part_file_holds(dir: &Path, n: u32, size: u64) -> bool {
    fs::metadata(dir.join(format!("part-{n:05}"))).is_ok_and(|m| m.len() == size)
}

/// A completion naming part `n`, which has no record (never uploaded, or taken by another
/// completion of the same upload).
fn not_uploaded(key: &str, n: u32) -> Error {
    fail(
        "CompleteMultipartUpload",
        key,
        "InvalidPart",
        format!("part {n} was not uploaded"),
    )
}

fn read_upload(dir: &Path, key: &str) -> Result<UploadRecord> {
    let rec: UploadRecord = fs::read(dir.join("upload.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| Error::NotFound {
            key: format!("{key} (upload {})", dir.display()),
        })?;
    if rec.key != key {
        return Err(fail(
            "UploadPart",
            key,
            "NoSuchUpload",
            "upload belongs to another key",
        ));
    }
    Ok(rec)
}

/// The stored record of part `i` of a completion request, checked as S3 checks it: ascending
/// part numbers, uploaded, the same ETag (and CRC32C), at least 5 MiB unless it is the last.
fn checked_part(
    dir: &Path,
    rec: &UploadRecord,
    key: &str,
    parts: &[PartReceipt],
    i: usize,
    prev: u32,
) -> Result<PartRecord> {
    const OP: &str = "CompleteMultipartUpload";
    let p = &parts[i];
    if p.part_number <= prev {
        return Err(fail(
            OP,
            key,
            "InvalidPartOrder",
            "parts must be in ascending order",
        ));
    }
    let stored: PartRecord = fs::read(dir.join(format!("part-{:05}.json", p.part_number)))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| not_uploaded(key, p.part_number))?;
    if stored.etag != p.etag
        || (rec.crc32c && p.crc32c != Some(stored.crc32c))
        || !part_file_holds(dir, p.part_number, stored.size)
    {
        return Err(fail(
            OP,
            key,
            "InvalidPart",
            format!("part {} does not match", p.part_number),
        ));
    }
    if i + 1 < parts.len() && stored.size < MIN_PART_SIZE {
        return Err(fail(
            OP,
            key,
            "EntityTooSmall",
            format!("part {} is smaller than 5 MiB", p.part_number),
        ));
    }
    Ok(stored)
}
