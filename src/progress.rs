//! Progress reporting behind a small trait, so the engine never touches the terminal.
//!
//! The engine reports work added, bytes moved and objects started or finished; the binary picks
//! the implementation (a terminal bar, log lines, or nothing in plugin mode and under cron).

use std::fmt;

/// Receives progress events from the engine. Every method has a no-op default.
pub trait Progress: Send + Sync + fmt::Debug {
    /// More work became known.
    fn add_work(&self, _objects: u64, _bytes: u64) {}
    /// Bytes were transferred (uploaded or downloaded and verified as part of an object).
    fn bytes_done(&self, _bytes: u64) {}
    /// An object transfer started.
    fn object_started(&self, _key: &str, _size: u64) {}
    /// An object transfer finished (successfully or not).
    fn object_done(&self, _key: &str) {}
    /// The run ended: remove any display.
    fn finish(&self) {}
}

/// Reports nothing (plugin mode, cron, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {}

/// Objects at least this large get a line of their own under the aggregate bar.
const LARGE: u64 = 64 << 20;

/// The terminal display (indicatif on stderr): one aggregate bar with bytes, rate, ETA and
/// objects done/total, and one line per large object in flight.
#[derive(Debug)]
pub struct Bars {
    multi: indicatif::MultiProgress,
    total: indicatif::ProgressBar,
    large: std::sync::Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
    objects_total: std::sync::atomic::AtomicU64,
    objects_done: std::sync::atomic::AtomicU64,
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

impl Bars {
    /// A display drawing to stderr.
    pub fn new() -> Self {
        let multi = indicatif::MultiProgress::with_draw_target(
            indicatif::ProgressDrawTarget::stderr_with_hz(4),
        );
        let total = multi.add(indicatif::ProgressBar::new(0));
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:30.cyan/blue} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
        ) {
            total.set_style(style.progress_chars("=> "));
        }
        Bars {
            multi,
            total,
            large: Default::default(),
            objects_total: Default::default(),
            objects_done: Default::default(),
        }
    }

    fn message(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.total.set_message(format!(
            "{}/{} objects",
            self.objects_done.load(Relaxed),
            self.objects_total.load(Relaxed)
        ));
    }
}

impl Progress for Bars {
    fn add_work(&self, objects: u64, bytes: u64) {
        self.objects_total
            .fetch_add(objects, std::sync::atomic::Ordering::Relaxed);
        self.total.inc_length(bytes);
        self.message();
    }

    fn bytes_done(&self, bytes: u64) {
        self.total.inc(bytes);
    }

    fn object_started(&self, key: &str, size: u64) {
        if size < LARGE {
            return;
        }
        let bar = self.multi.add(indicatif::ProgressBar::new_spinner());
        bar.set_message(format!("{key} ({})", crate::units::human_bytes(size)));
        bar.enable_steady_tick(std::time::Duration::from_millis(250));
        if let Ok(mut m) = self.large.lock() {
            m.insert(key.to_string(), bar);
        }
    }

    fn object_done(&self, key: &str) {
        self.objects_done
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(bar) = self.large.lock().ok().and_then(|mut m| m.remove(key)) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        self.message();
    }

    fn finish(&self) {
        self.total.finish_and_clear();
        let _ = self.multi.clear();
    }
}
