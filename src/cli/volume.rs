//! The `volume` command line and its validation into a [`VolumeAction`].

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::error::{Error, Result};
use crate::volume::{
    GetRequest, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, PutMode, PutRequest, Sink, Source, VolumeAction,
    VolumeName,
};

/// `volume` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum VolumeCommand {
    /// Upload a file (or - for stdin) as volume VOL: chunks VOL/0000, VOL/0001, ... as Bareos'
    /// droplet and dplcompat devices write them
    ///
    /// Every chunk holds --chunk-size bytes but the last. Chunks are stored in parallel (memory:
    /// about concurrency + 1 chunks), each checked in the store after its PUT; then
    /// VOL/barmans3.volume.json records the chunk size and a CRC32C per chunk (Bareos ignores
    /// it). A chunk is never given up: when its retries run out the put exits 1, keeping the
    /// chunks already stored, and `volume put --resume` sends only what is missing. While it
    /// runs, `volume status VOL` shows the pending chunks and their tries.
    ///
    /// A volume holds at most 10000 chunks (0000 to 9999): a file that needs more is refused
    /// before anything is sent, naming a chunk size that fits; stdin fails before chunk 10000.
    Put(PutArgs),
    /// Download volume VOL (or a byte range of it) to a file, written atomically, or - for
    /// stdout
    ///
    /// Chunks must run from 0000 without a gap, every chunk but the last holding the chunk size
    /// (our manifest's, else the size of 0000), each matching our manifest's CRC32C when there
    /// is one. Volumes without a manifest (made by Bareos) are read the same way. Droplet ends
    /// a volume silently at its first missing chunk; here a missing chunk followed by others,
    /// or fewer chunks than our manifest lists, is an error unless --allow-truncated, which
    /// returns the bytes up to the gap and warns.
    Get(GetArgs),
    /// List the volumes under the prefix (chunks, bytes, state), or the chunks of VOL
    Ls {
        /// Volume name
        volume: Option<String>,
    },
    /// Show what a running (or the last) put of VOL is doing, as Bareos' `status storage` does
    ///
    /// The chunks read and not yet verified in the store, in flight or waiting, each with its
    /// failed tries so far, and whether the backend answers, from <state_dir>/volume/<VOL>.json,
    /// which a running put keeps current. --json prints that file as it is.
    Status {
        /// Volume name [default: every volume put from this host]
        volume: Option<String>,
    },
    /// Delete volume VOL: its chunks, our manifest and droplet's directory marker
    Rm {
        /// Volume name
        volume: String,
        /// Also delete a volume without our manifest (made by Bareos, or a put that did not
        /// finish)
        #[arg(long)]
        force: bool,
    },
}

/// `volume put` arguments.
#[derive(Debug, Clone, Args)]
pub struct PutArgs {
    /// Volume name (letters, digits and - _ . :, as Bareos names volumes)
    pub volume: String,
    /// Local file, or - for standard input
    pub source: String,
    /// Chunk size: the device's `chunksize`; at least 10MiB, at most 5GiB. Units are binary
    /// (10M = 10MiB), where Bareos reads `mb` as 10^6 bytes: give Bareos' value in bytes or
    /// with k/m/g [default: 10MiB; for --resume and --append, the volume's own]
    #[arg(long, value_name = "SIZE")]
    pub chunk_size: Option<String>,
    /// Complete an interrupted put (or append) of the same data: chunks already stored with the
    /// same bytes are kept, others sent
    #[arg(long, conflicts_with = "append")]
    pub resume: bool,
    /// Add the data at the end of the volume: the last chunk is rewritten with the new bytes
    /// after it, as Bareos appends
    #[arg(long)]
    pub append: bool,
    /// Accept chunk sizes below 10MiB (tests only)
    #[arg(long, hide = true)]
    pub allow_small_chunks: bool,
}

/// `volume get` arguments.
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// Volume name
    pub volume: String,
    /// Local file (written atomically), or - for standard output
    pub dest: String,
    /// First byte to read
    #[arg(long, value_name = "BYTES", default_value = "0")]
    pub offset: String,
    /// Bytes to read [default: to the end]
    #[arg(long, value_name = "BYTES")]
    pub length: Option<String>,
    /// Read a volume with a missing chunk up to the gap (droplet's behaviour) instead of
    /// failing
    #[arg(long)]
    pub allow_truncated: bool,
}

fn name(s: &str) -> Result<VolumeName> {
    VolumeName::parse(s).map_err(Error::Usage)
}

fn bytes(flag: &str, s: &str) -> Result<u64> {
    crate::units::parse_size(s).map_err(|e| Error::Usage(format!("{flag}: {e}")))
}

impl PutArgs {
    fn validate(self) -> Result<PutRequest> {
        let chunk_size = self
            .chunk_size
            .as_deref()
            .map(|s| bytes("--chunk-size", s))
            .transpose()?;
        let min = if self.allow_small_chunks {
            1
        } else {
            MIN_CHUNK_SIZE
        };
        if let Some(c) = chunk_size
            && !(min..=MAX_CHUNK_SIZE).contains(&c)
        {
            return Err(Error::Usage(format!(
                "--chunk-size {c}: use 10MiB (droplet's default and minimum) to 5GiB"
            )));
        }
        Ok(PutRequest {
            name: name(&self.volume)?,
            source: match self.source.as_str() {
                "-" => Source::Stdin,
                p => Source::File(PathBuf::from(p)),
            },
            chunk_size,
            mode: match (self.resume, self.append) {
                (true, _) => PutMode::Resume,
                (false, true) => PutMode::Append,
                (false, false) => PutMode::New,
            },
        })
    }
}

impl GetArgs {
    fn validate(self) -> Result<GetRequest> {
        Ok(GetRequest {
            name: name(&self.volume)?,
            dest: match self.dest.as_str() {
                "-" => Sink::Stdout,
                p => Sink::File(PathBuf::from(p)),
            },
            offset: bytes("--offset", &self.offset)?,
            length: self
                .length
                .as_deref()
                .map(|s| bytes("--length", s))
                .transpose()?,
            allow_truncated: self.allow_truncated,
        })
    }
}

impl VolumeCommand {
    /// Checks the arguments and builds the validated action.
    pub fn validate(self) -> Result<VolumeAction> {
        Ok(match self {
            VolumeCommand::Put(a) => VolumeAction::Put(a.validate()?),
            VolumeCommand::Get(a) => VolumeAction::Get(a.validate()?),
            VolumeCommand::Ls { volume } => {
                VolumeAction::Ls(volume.as_deref().map(name).transpose()?)
            }
            VolumeCommand::Status { volume } => {
                VolumeAction::Status(volume.as_deref().map(name).transpose()?)
            }
            VolumeCommand::Rm { volume, force } => VolumeAction::Rm {
                name: name(&volume)?,
                force,
            },
        })
    }
}
