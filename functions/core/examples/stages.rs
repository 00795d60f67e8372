//! Profiling aid: the copy path's CPU stages on one thread, timed apart — read + gunzip,
//! parse into Arrow (event.rs), Parquet encoding (store.rs) — over every `*.json.gz` under DIR.
//! Times are this thread's CPU time, so other load on the machine does not skew them.
//!
//! cargo run --release --example stages -- DIR

use std::path::{Path, PathBuf};
use std::time::Duration;

use trailcopy::event;
use trailcopy::range::Window;
use trailcopy::store::BatchWriter;

fn gz_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            gz_files(&p, out);
        } else if p.to_string_lossy().ends_with(".json.gz") {
            out.push(p);
        }
    }
}

/// A clock that only runs while this thread is on a CPU (the machine may be shared).
#[derive(Clone, Copy)]
struct Instant(u64);

impl Instant {
    fn now() -> Self {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
        Instant(s.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0))
    }
    fn elapsed(self) -> Duration {
        Duration::from_nanos(Instant::now().0 - self.0)
    }
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: stages DIR"));
    let mut files = Vec::new();
    gz_files(&dir, &mut files);
    files.sort();
    let window = Window {
        start: "2000-01-01T00:00:00Z".parse().expect("time"),
        end: "2100-01-01T00:00:00Z".parse().expect("time"),
        retention_cutoff: "1990-01-01T00:00:00Z".parse().expect("time"),
    };
    // Each stage over all files at once, so the clock's tick granularity does not matter.
    let t = Instant::now();
    let texts: Vec<Vec<u8>> =
        files.iter().map(|p| event::gunzip(&std::fs::read(p).expect("read")).expect("gunzip")).collect();
    let t_inflate = t.elapsed();
    let bytes: u64 = texts.iter().map(|t| t.len() as u64).sum();
    let t = Instant::now();
    let parsed: Vec<_> = texts.iter().map(|text| event::parse_log(text, &window).expect("parse")).collect();
    let t_parse = t.elapsed();
    let events: u64 = parsed.iter().map(|p| p.events_read).sum();
    drop(texts);
    let t = Instant::now();
    let mut writer = BatchWriter::new();
    let mut out_bytes = 0;
    for part in parsed.iter().flat_map(|p| &p.parts) {
        writer.write(part.date, &part.batch, "stages").expect("write");
    }
    out_bytes += writer.finish().expect("finish").iter().map(|(_, b)| b.len()).sum::<usize>();
    let t_write = t.elapsed();
    let mbs = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    let total = t_inflate + t_parse + t_write;
    println!(
        "{} files, {events} events, {:.1} MB JSON -> {:.1} MB Parquet",
        files.len(),
        bytes as f64 / 1e6,
        out_bytes as f64 / 1e6
    );
    for (name, d) in [("read+inflate", t_inflate), ("parse", t_parse), ("parquet", t_write), ("total", total)] {
        println!(
            "{name:>12}: {:8.3} s  {:8.1} MB/s  {:10.0} events/s",
            d.as_secs_f64(),
            mbs(d),
            events as f64 / d.as_secs_f64()
        );
    }
}
