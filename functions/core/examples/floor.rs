//! The floor of the copy's work for benches/run.sh (issue 13, point 3): on one thread, the CPU
//! time of the three things no copy into a zstd Parquet store can skip, each with the fastest
//! primitive at hand:
//! 1. inflating every `*.json.gz` under TRAIL (the copy path's own gunzip: libdeflate);
//! 2. checking the text is JSON (serde_json into `IgnoredAny`: a parser that keeps nothing);
//! 3. zstd (level 1, as the store) of the page bytes the copy wrote under STORE, read back
//!    uncompressed with parquet's page reader and compressed again with one reused context.
//!
//! It also times snappy over the same pages, the faster codec a store could take instead (its
//! floor is reported beside, not counted in `floorSeconds`).
//!
//! Prints one JSON line. The copy's CPU time over (1) can go no lower than (1 + 2 + 3) over (1).
//!
//! cargo run --release --example floor -- TRAIL STORE

use std::path::{Path, PathBuf};
use std::time::Duration;

use parquet::file::reader::{FileReader, SerializedFileReader};

fn files(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, suffix, out);
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
}

/// This thread's CPU time (the machine may be shared).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(trail), Some(store)) = (args.next(), args.next()) else {
        eprintln!("usage: floor TRAIL STORE");
        std::process::exit(2);
    };
    let mut logs = Vec::new();
    files(Path::new(&trail), ".json.gz", &mut logs);
    logs.sort();
    let (mut inflate, mut check, mut json_bytes) = (Duration::ZERO, Duration::ZERO, 0u64);
    for p in &logs {
        let compressed = std::fs::read(p).expect("read");
        let t = thread_cpu();
        let text = trailcopy::event::gunzip(&compressed).expect("gunzip");
        inflate += thread_cpu() - t;
        let t = thread_cpu();
        serde_json::from_slice::<serde::de::IgnoredAny>(&text).expect("JSON");
        check += thread_cpu() - t;
        json_bytes += text.len() as u64;
    }

    let mut parquets = Vec::new();
    files(Path::new(&store), ".parquet", &mut parquets);
    parquets.sort();
    let mut zstd = zstd::bulk::Compressor::new(1).expect("zstd context");
    let mut snappy = snap::raw::Encoder::new();
    let (mut compress, mut page_bytes, mut pages, mut zstd_bytes) = (Duration::ZERO, 0u64, 0u64, 0u64);
    let (mut snappy_time, mut snappy_bytes) = (Duration::ZERO, 0u64);
    for p in &parquets {
        let reader = SerializedFileReader::new(bytes::Bytes::from(std::fs::read(p).expect("read"))).expect("parquet");
        for g in 0..reader.num_row_groups() {
            let group = reader.get_row_group(g).expect("row group");
            for c in 0..group.num_columns() {
                let mut column = group.get_column_page_reader(c).expect("pages");
                while let Some(page) = column.get_next_page().expect("page") {
                    let data = page.buffer();
                    let t = thread_cpu();
                    let out = zstd.compress(data).expect("zstd");
                    compress += thread_cpu() - t;
                    page_bytes += data.len() as u64;
                    zstd_bytes += out.len() as u64;
                    let t = thread_cpu();
                    let out = snappy.compress_vec(data).expect("snappy");
                    snappy_time += thread_cpu() - t;
                    snappy_bytes += out.len() as u64;
                    pages += 1;
                }
            }
        }
    }
    let s = |d: Duration| d.as_secs_f64();
    let floor = s(inflate) + s(check) + s(compress);
    println!(
        "{{\"files\":{},\"jsonBytes\":{json_bytes},\"inflateSeconds\":{:.4},\"jsonCheckSeconds\":{:.4},\
         \"parquetFiles\":{},\"pages\":{pages},\"pageBytes\":{page_bytes},\"zstdBytes\":{zstd_bytes},\
         \"zstdSeconds\":{:.4},\"floorSeconds\":{floor:.4},\"floorOverInflate\":{:.2},\
         \"snappyBytes\":{snappy_bytes},\"snappySeconds\":{:.4},\"snappyFloorOverInflate\":{:.2}}}",
        logs.len(),
        s(inflate),
        s(check),
        parquets.len(),
        s(compress),
        floor / s(inflate),
        s(snappy_time),
        (s(inflate) + s(check) + s(snappy_time)) / s(inflate),
    );
}
