//! Seal and open throughput of barmans3's age encryption, in memory, on 1 and 2 threads: parts of
//! whole chunks sealed and opened independently (the multipart path), and the stream sealer and
//! opener (the path for input of unknown length). Guidance for the engine, not a benchmark of
//! record (those are bench/run's, against peer tools):
//!
//! ```text
//! CARGO_PROFILE_RELEASE_LTO=false cargo run --release --example crypt_throughput -- [MiB] [part MiB]
//! ```

use std::time::Instant;

use age::x25519;
use barmans3::crypt::{CHUNK, Identities, Opener, Recipients, SEALED_CHUNK, Sealer, StreamOpener};

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn rate(bytes: usize, secs: f64) -> String {
    format!("{:.0} MB/s", bytes as f64 / secs / 1e6)
}

/// Runs `work` on each part, spread over `threads` threads; returns the wall time in seconds.
fn parallel(threads: usize, parts: usize, work: &(dyn Fn(usize, &mut Vec<u8>) + Sync)) -> f64 {
    let t = Instant::now();
    std::thread::scope(|s| {
        for first in 0..threads {
            s.spawn(move || {
                let mut out = Vec::new();
                for k in (first..parts).step_by(threads) {
                    out.clear();
                    work(k, &mut out);
                }
            });
        }
    });
    t.elapsed().as_secs_f64()
}

fn main() {
    let total = arg(1, 256) << 20;
    let part = (arg(2, 8) << 20).max(CHUNK as usize);
    let plain: Vec<u8> = (0..total).map(|i| (i * 7 % 251) as u8).collect();
    let me = x25519::Identity::generate();
    let recipients = Recipients::new([me.to_public()]).expect("recipient");
    let ids = Identities::new("encryption.identity_file", Vec::new(), vec![me]);
    let sealer = Sealer::new(&recipients, "bench").expect("sealer");
    let mut sealed = sealer.preamble().to_vec();
    sealer.seal(0, &plain, true, &mut sealed).expect("seal");
    let opener = Opener::open(&sealed, &ids, "bench").expect("open");
    let start = opener.layout().payload_start() as usize;
    let parts = total.div_ceil(part);
    let chunks_per_part = part / CHUNK as usize;
    println!(
        "| {} MiB, parts of {} MiB | 1 thread | 2 threads |",
        total >> 20,
        part >> 20
    );
    println!("|---|---|---|");
    let row = |name: &str, work: &(dyn Fn(usize, &mut Vec<u8>) + Sync)| {
        let r: Vec<String> = [1, 2]
            .iter()
            .map(|&t| rate(total, parallel(t, parts, work)))
            .collect();
        println!("| {name} | {} | {} |", r[0], r[1]);
    };
    row("seal parts", &|k, out| {
        let p = &plain[k * part..((k + 1) * part).min(total)];
        let first = (k * chunks_per_part) as u64;
        sealer.seal(first, p, k + 1 == parts, out).expect("seal");
    });
    row("open parts", &|k, out| {
        let first = k * chunks_per_part;
        let from = start + first * SEALED_CHUNK as usize;
        let to = (from + chunks_per_part * SEALED_CHUNK as usize).min(sealed.len());
        opener
            .open_chunks(first as u64, &sealed[from..to], k + 1 == parts, out)
            .expect("open");
    });
    let again = Sealer::resume(&sealer.resume_state(), "bench").expect("resume");
    let t = Instant::now();
    let mut s = again.into_stream();
    let mut out = Vec::with_capacity(sealed.len());
    for piece in plain.chunks(1 << 20) {
        s.update(piece, &mut out).expect("update");
    }
    s.finish(&mut out).expect("finish");
    let seal_secs = t.elapsed().as_secs_f64();
    assert!(out == sealed);
    let t = Instant::now();
    let mut o = StreamOpener::new(&ids, "bench");
    let mut back = Vec::with_capacity(total);
    for piece in sealed.chunks(1 << 20) {
        o.update(piece, &mut back).expect("update");
    }
    o.finish(&mut back).expect("finish");
    let open_secs = t.elapsed().as_secs_f64();
    assert!(back == plain);
    println!(
        "| stream sealer (1 MiB pieces) | {} | — |",
        rate(total, seal_secs)
    );
    println!(
        "| stream opener (1 MiB pieces) | {} | — |",
        rate(total, open_secs)
    );
}
