//! The wall clock as the crate records it: whole seconds since the epoch, the unit of every
//! timestamp in our state, task and journal files. One function, so every layer that stamps a
//! file (barman, volume, gluster, the transfer engine's probe cache) reads the same clock.

/// Seconds since the epoch (0 on a clock set before 1970).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
