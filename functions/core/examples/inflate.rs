//! The decompression floor for benches/run.sh: reads and inflates every `*.json.gz` under a
//! folder with the copy path's own gunzip (libdeflate for one-member files, else flate2 +
//! zlib-rs), on N threads, and prints one JSON line. Nothing else is done with the text, so a
//! copy can at best approach this rate.
//!
//! cargo run --release --example inflate -- DIR [THREADS]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

fn gz_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            gz_files(&p, out);
        } else if p.to_string_lossy().ends_with(".json.gz") {
            out.push(p);
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: inflate DIR [THREADS]"));
    let threads: usize = args
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut files = Vec::new();
    gz_files(&dir, &mut files);
    files.sort();
    let next = AtomicUsize::new(0);
    let bytes_in = AtomicU64::new(0);
    let bytes_out = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = files.get(i) else { break };
                    let compressed = std::fs::read(path).expect("read");
                    let text = trailcopy::event::gunzip(&compressed).expect("gunzip");
                    bytes_in.fetch_add(compressed.len() as u64, Ordering::Relaxed);
                    bytes_out.fetch_add(text.len() as u64, Ordering::Relaxed);
                    std::hint::black_box(&text);
                }
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let out = bytes_out.load(Ordering::Relaxed);
    println!(
        "{{\"files\":{},\"threads\":{threads},\"bytesIn\":{},\"bytesOut\":{out},\"seconds\":{seconds:.4},\"mbPerSecond\":{:.1}}}",
        files.len(),
        bytes_in.load(Ordering::Relaxed),
        out as f64 / seconds / 1e6,
    );
}
