//! The operations on the store, each a few engine calls on the keys of the droplet layout
//! (`<prefix>/<VOL>/<PART>`, the keys `volume put|get` and Bareos' s3cmd wrapper use).
//!
//! Every change to a volume (`upload`, `remove`) deletes our `barmans3.volume.json` beside the
//! parts before the part changes: the daemon rewrites, appends and truncates volumes without knowing of it,
//! and a manifest that described the volume before would then lie to `volume get`.

use tokio::io::{AsyncRead, AsyncWrite};

use super::input::EndsAfter;
use super::protocol::Part;
use crate::error::{Error, Result};
use crate::store::ListRequest;
use crate::transfer::{Downloaded, Expect, Transfer, Uploaded};
use crate::volume::layout::{self, chunk_name};
use crate::volume::{Volume, VolumeName};

/// The store as the device sees it: an engine and where the volumes are.
#[derive(Debug)]
pub struct Device {
    /// The engine.
    pub t: Transfer,
    /// The store, for messages (`s3://bucket/prefix`).
    pub location: String,
    /// The key prefix of the volumes ("" for none).
    pub prefix: String,
}

impl Device {
    fn volume(&self, name: &VolumeName) -> Volume {
        Volume {
            location: self.location.clone(),
            prefix: self.prefix.clone(),
            name: name.clone(),
            marker: false,
        }
    }

    fn key(&self, p: &Part) -> String {
        self.volume(&p.volume).chunk_key(p.chunk)
    }

    fn describe(&self, p: &Part) -> String {
        format!(
            "part {}/{} in {}",
            p.volume,
            chunk_name(p.chunk),
            self.location
        )
    }

    /// `testconnection`: one listing request under the prefix, with the configured
    /// credentials. Returns the line the daemon logs.
    pub async fn test_connection(&self) -> Result<String> {
        let req = ListRequest {
            prefix: if self.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", self.prefix)
            },
            max_keys: Some(1),
            ..Default::default()
        };
        self.t.list_pages(&req, |_, _| false).await?;
        Ok(format!("{} is reachable\n", self.location))
    }

    /// `list VOL`: a `PART SIZE` line per part (four-digit names only, the only ones the
    /// device uses), in order. A volume without parts gives no lines.
    pub async fn list(&self, name: &VolumeName) -> Result<String> {
        let vol = self.volume(name);
        let req = ListRequest {
            prefix: vol.dir(),
            delimiter: Some("/".into()),
            ..Default::default()
        };
        let listed = layout::parse_listing(&vol.dir(), &self.t.list_all(&req).await?);
        Ok(listed
            .chunks
            .iter()
            .map(|(&n, size)| format!("{} {size}\n", chunk_name(n)))
            .collect())
    }

    /// `stat VOL PART`: the exact size; a missing part is an error (the daemon reads a failed
    /// `stat` as "absent", a `0` as an empty part).
    pub async fn stat(&self, p: &Part) -> Result<u64> {
        match self.t.head(&self.key(p)).await {
            Ok(m) => Ok(m.size),
            Err(Error::NotFound { .. }) => Err(Error::Failed(format!(
                "{} does not exist",
                self.describe(p)
            ))),
            Err(e) => Err(e),
        }
    }

    /// `upload VOL PART`: `input` to the part through the engine's stream upload (one PUT for
    /// a chunk within a part, else multipart, memory bounded by the engine's settings),
    /// checked by the store as it arrives. The part changes only when the whole input arrived:
    /// a failed or abandoned upload leaves the previous version. Our manifest is deleted while
    /// the chunk arrives (its round trip hidden behind the daemon's writes), and the input ends
    /// only after that, so the part still never changes under a manifest that describes it.
    pub async fn upload<R: AsyncRead + Unpin + Send>(
        &self,
        p: &Part,
        input: R,
    ) -> Result<Uploaded> {
        let failed = std::sync::Mutex::new(None);
        let input = EndsAfter::new(input, self.forget_manifest(&p.volume), &failed);
        let sent = self.t.upload_stream(input, &self.key(p)).await;
        match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => sent,
        }
    }

    /// `download VOL PART`: the part to `out`, verified against the store's checksum as it
    /// streams; a mismatch is an error after the bytes.
    pub async fn download<W: AsyncWrite + Unpin + Send>(
        &self,
        p: &Part,
        out: &mut W,
    ) -> Result<Downloaded> {
        match self
            .t
            .download_to(&self.key(p), out, Expect::default())
            .await
        {
            Err(Error::NotFound { .. }) => Err(Error::Failed(format!(
                "{} does not exist",
                self.describe(p)
            ))),
            other => other,
        }
    }

    /// `remove VOL PART`: deletes the part; a missing part is an error, as the protocol asks.
    pub async fn remove(&self, p: &Part) -> Result<()> {
        self.stat(p).await?;
        self.forget_manifest(&p.volume).await?;
        self.t.delete_keys(&[self.key(p)]).await
    }

    /// Deletes our manifest of the volume, if any (one request either way).
    async fn forget_manifest(&self, name: &VolumeName) -> Result<()> {
        self.t
            .delete_keys(&[self.volume(name).manifest_key()])
            .await
    }
}
