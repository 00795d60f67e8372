//! Profiling aid: the copy path's CPU stages on one thread, timed apart — read + gunzip,
//! parse into Arrow (event.rs), Parquet encoding (store.rs) — over every `*.json.gz` under DIR.
//! Also the floor of any serde_json-based scanner: checking the text is JSON and skipping it
//! (`IgnoredAny`), which is not part of the total.
//! Times are this thread's CPU time, so other load on the machine does not skew them; Parquet
//! includes freeing each file's batches.
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

/// A clock that only runs while this thread is on a CPU (the machine may be shared):
/// CLOCK_THREAD_CPUTIME_ID, to the nanosecond.
#[derive(Clone, Copy)]
struct Instant(Duration);

impl Instant {
    fn now() -> Self {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Instant(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }
    fn elapsed(self) -> Duration {
        Instant::now().0 - self.0
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
    // File by file, as the copy goes: each file is read, inflated, parsed and written before the
    // next, so memory stays flat (holding every parsed file made the parse times swing ±40 %).
    let (mut t_inflate, mut t_parse, mut t_write) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut t_skip = Duration::ZERO;
    let (mut bytes, mut events) = (0u64, 0u64);
    let mut writer = BatchWriter::in_memory();
    for p in &files {
        let t = Instant::now();
        let text = event::gunzip(&std::fs::read(p).expect("read")).expect("gunzip");
        t_inflate += t.elapsed();
        bytes += text.len() as u64;
        let t = Instant::now();
        serde_json::from_slice::<serde::de::IgnoredAny>(&text).expect("JSON");
        t_skip += t.elapsed();
        let t = Instant::now();
        let parsed = event::parse_log(&text, &window).expect("parse");
        drop(text);
        t_parse += t.elapsed();
        events += parsed.events_read;
        let t = Instant::now();
        for part in &parsed.parts {
            writer.write(part.date, &part.batch, "stages").expect("write");
        }
        drop(parsed);
        t_write += t.elapsed();
    }
    let t = Instant::now();
    let out_bytes =
        writer.finish().expect("finish").into_iter().map(|(_, b)| b.into_bytes().map_or(0, |b| b.len())).sum::<usize>();
    t_write += t.elapsed();
    let mbs = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    let total = t_inflate + t_parse + t_write;
    println!(
        "{} files, {events} events, {:.1} MB JSON -> {:.1} MB Parquet",
        files.len(),
        bytes as f64 / 1e6,
        out_bytes as f64 / 1e6
    );
    let stages = [("read+inflate", t_inflate), ("parse", t_parse), ("parquet", t_write), ("total", total)];
    for (name, d) in stages.into_iter().chain([("json skip", t_skip)]) {
        println!(
            "{name:>12}: {:8.3} s  {:8.1} MB/s  {:10.0} events/s",
            d.as_secs_f64(),
            mbs(d),
            events as f64 / d.as_secs_f64()
        );
    }
}
