//! The memory of relayed copies: one budget for every relay of a run, and the share of it each
//! relay reserves before it reads a byte.
//!
//! A relay holds three kinds of buffers: the download's ranges (fetched, or waiting for their
//! turn to be written in order), the pipe to the upload, and the upload's parts in flight. Its
//! [`Share`] bounds each of them, and the relay takes the sum from the [`RelayBudget`] in one
//! acquisition, held until it ends. A relay that holds memory therefore never waits for more
//! (its download needs only request permits, its upload only request permits), so relays
//! cannot deadlock on the budget, whatever their number; one waiting for its share holds
//! nothing. A share is at most half the budget, so two large objects move at once, and the
//! budget is at least [`MIN_BUDGET`], which holds the smallest streamed relay (a 1 MiB range,
//! one 5 MiB part and the pipe) twice. So the buffers of all the relays of a run together stay
//! within
//!
//! ```text
//!     max(s3.stream_memory, 16 MiB)
//! ```
//!
//! whatever the number of the objects and their size up to 900 parts (4.4 GiB with the
//! smallest parts); the process adds its fixed footprint (the runtime, the HTTP clients and
//! their connections). Past 900 parts S3's 10 000-part limit makes a stream's parts grow: a
//! larger object's share is half the budget plus at most `size / 450`, and a share above the
//! whole budget takes the whole of it, so that relay then runs alone.
//!
//! An object of at most 16 MiB and half the budget is moved whole: one verified GET into
//! memory, one PUT, its size reserved (it is held once, not once per side).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};
use crate::store::limits::MIN_PART_SIZE;
use crate::transfer::download::MAX_PIECE;
use crate::transfer::plan::{self, GROWTH_EVERY};
use crate::transfer::{Cancel, Settings};

/// The pipe between a relay's download and its upload: enough for a few network reads.
pub(super) const PIPE: u64 = 1 << 20;
/// The smallest budget: the smallest streamed relay (1 MiB range, 5 MiB part, pipe) twice.
pub const MIN_BUDGET: u64 = 16 << 20;
/// Largest object moved whole (one GET, one PUT): a WAL segment.
pub const WHOLE_MAX: u64 = 16 << 20;
/// Accounting unit of the budget (a semaphore counts in `u32`).
const UNIT: u64 = 64 << 10;

/// The bytes every relay of a run may hold together.
#[derive(Debug)]
pub struct RelayBudget {
    total: u64,
    units: Arc<Semaphore>,
}

/// Budget units for `bytes`, rounded up.
fn units(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

impl RelayBudget {
    /// A budget of `bytes` (`s3.stream_memory`), raised to [`MIN_BUDGET`].
    pub fn new(bytes: u64) -> Self {
        let total = bytes.max(MIN_BUDGET);
        RelayBudget {
            total,
            units: Arc::new(Semaphore::new(units(total) as usize)),
        }
    }

    /// The budget in bytes.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Waits until `bytes` of the budget are free (never more than the whole of it, so a
    /// request cannot wait forever) and holds them until the permit is dropped.
    pub(super) async fn reserve(
        &self,
        bytes: u64,
        cancel: &Cancel,
    ) -> Result<OwnedSemaphorePermit> {
        let n = units(bytes).min(units(self.total));
        tokio::select! {
            p = self.units.clone().acquire_many_owned(n) => {
                p.map_err(|_| Error::Failed("relay budget closed".into()))
            }
            _ = cancel.cancelled() => Err(Error::Interrupted),
        }
    }
}

/// What one relay may hold, and how it moves its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// Moved whole: one GET into memory, one PUT.
    pub whole: bool,
    /// Largest range one GET of the download asks for.
    pub piece: u64,
    /// What the download may hold in ranges (its `stream_memory`).
    pub down: u64,
    /// What the upload may hold in parts (its `stream_memory`).
    pub up: u64,
    /// Bytes reserved from the budget: everything the relay may hold at once.
    pub reserve: u64,
}

/// The share of a relay of an object of `size` bytes to an engine with settings `to`, out of a
/// budget of `budget` bytes.
pub fn share(size: u64, budget: u64, to: &Settings) -> Share {
    let half = budget.max(MIN_BUDGET) / 2;
    if size <= WHOLE_MAX.min(half) {
        return Share {
            whole: true,
            piece: size,
            down: size,
            up: size,
            reserve: size,
        };
    }
    let room = half - PIPE;
    // The download's ranges are written out in order as they come, so a few suffice; the
    // upload's parts are at least 5 MiB, and more of them in flight is what makes a relay fast.
    let up = (room - room / 3).max(MIN_PART_SIZE);
    let down = room - up;
    // Three ranges in flight keep the pipe fed; smaller ones would cost a request per MiB.
    let piece = (down / 3).clamp(1 << 20, MAX_PIECE);
    let piece = piece - piece % (1 << 20);
    let first = plan::stream_first_part(to.part_size, up, to.concurrency);
    let in_flight = plan::stream_parts_in_flight(up, first, to.concurrency) as u64;
    // Parts are allocated whole, the last one too; past GROWTH_EVERY parts they grow, and
    // fewer of them are in flight, so one part may then exceed `up`.
    let parts = plan::layout(size, first, GROWTH_EVERY).len() as u64;
    let up_held = if parts <= in_flight {
        parts * first
    } else {
        let largest = plan::part_size_at(first, GROWTH_EVERY, parts - 1);
        (in_flight * first).max(largest)
    };
    Share {
        whole: false,
        piece,
        down,
        up,
        reserve: down.min(size) + up_held + PIPE.min(size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(part_size: u64, concurrency: usize) -> Settings {
        Settings {
            part_size,
            concurrency,
            ..Settings::default()
        }
    }

    #[test]
    fn a_wal_is_moved_whole_and_reserves_its_size() {
        let s = settings(64 << 20, 8);
        let w = share(16 << 20, 128 << 20, &s);
        assert!(w.whole);
        assert_eq!(w.reserve, 16 << 20);
        // Not when half the budget cannot hold it.
        let w = share(16 << 20, 16 << 20, &s);
        assert!(!w.whole);
        assert!(w.reserve <= 8 << 20, "{w:?}");
    }

    #[test]
    fn no_share_exceeds_half_the_budget_whatever_the_object() {
        for budget in [0, 5 << 20, 16 << 20, 24 << 20, 128 << 20, 1 << 30] {
            for (part, conc) in [(5 << 20, 1), (8 << 20, 4), (64 << 20, 8), (500_000_000, 64)] {
                let s = settings(part, conc);
                for size in [
                    0,
                    1,
                    1 << 20,
                    17 << 20,
                    100 << 20,
                    4500 << 20,
                    5 << 30,
                    4 << 40,
                ] {
                    let sh = share(size, budget, &s);
                    let half = budget.max(MIN_BUDGET) / 2;
                    // Up to 900 parts of at least 5 MiB, within half the budget; beyond, the
                    // growing parts S3's part limit requires.
                    let beyond = if size <= 900 * MIN_PART_SIZE {
                        0
                    } else {
                        size / 450
                    };
                    assert!(
                        sh.reserve <= half + beyond,
                        "{budget} {part} {conc} {size}: {sh:?}"
                    );
                    assert!(sh.piece >= 1 << 20 || sh.whole, "{sh:?}");
                    assert!(sh.piece <= sh.down, "{sh:?}");
                }
            }
        }
    }

    #[test]
    fn a_share_covers_what_the_stream_engines_may_hold() {
        let s = settings(8 << 20, 4);
        let size = 300 << 20;
        let sh = share(size, 24 << 20, &s);
        assert!(!sh.whole);
        // The upload's parts in flight, as the stream upload sizes them from `up`.
        let first = plan::stream_first_part(s.part_size, sh.up, s.concurrency);
        let held = first * plan::stream_parts_in_flight(sh.up, first, s.concurrency) as u64;
        // The download's window, as the stream download sizes it from `down`.
        let window = plan::stream_parts_in_flight(sh.down, sh.piece, s.concurrency) as u64;
        assert!(sh.reserve >= held + window * sh.piece + PIPE, "{sh:?}");
        assert!(window >= 1 && held >= MIN_PART_SIZE);
    }

    #[test]
    fn a_small_streamed_object_reserves_no_more_than_it_needs() {
        let s = settings(8 << 20, 4);
        // Its range window, the pipe, and as many parts as it has, each allocated whole.
        let sh = share(17 << 20, 1 << 30, &s);
        let first = plan::stream_first_part(s.part_size, sh.up, s.concurrency);
        let parts = (17u64 << 20).div_ceil(first);
        assert_eq!(sh.reserve, (17 << 20) + parts * first + PIPE, "{sh:?}");
    }

    #[tokio::test]
    async fn reservations_wait_for_each_other_and_never_for_more_than_the_whole() {
        let b = Arc::new(RelayBudget::new(16 << 20));
        let cancel = Cancel::default();
        let a = b.reserve(10 << 20, &cancel).await.expect("first");
        // More than the whole budget is the whole budget: it waits for `a`, then runs.
        let b2 = b.clone();
        let waiter = tokio::spawn(async move {
            let c = Cancel::default();
            b2.reserve(1 << 40, &c).await.map(drop)
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "it must wait for the first reservation"
        );
        drop(a);
        waiter.await.expect("join").expect("reserved once free");
        // A cancelled run stops waiting.
        let _all = b.reserve(16 << 20, &cancel).await.expect("all");
        cancel.cancel();
        let e = b.reserve(1, &cancel).await.expect_err("cancelled");
        assert!(matches!(e, Error::Interrupted), "{e}");
    }
}
