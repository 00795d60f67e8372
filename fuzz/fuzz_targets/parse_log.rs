//! cargo-fuzz target: one input is a CloudTrail log file as read from a trail, gzipped or not.
//! Properties: gunzip and parse_log never panic; a parsed file conserves its events
//! (events_read == rows + out_of_range + invalid) and every row lies in the window and in the
//! part of its UTC date.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trailcopy::event::{gunzip, parse_log};
use trailcopy::range::Window;

fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

fn check(text: &[u8], w: &Window) {
    let Ok(p) = parse_log(text, w) else { return };
    let mut rows = 0u64;
    for part in &p.parts {
        assert_eq!(part.keys.len(), part.batch.num_rows());
        rows += part.batch.num_rows() as u64;
    }
    assert_eq!(p.events_read, rows + p.events_out_of_range + p.events_invalid);
}

fuzz_target!(|data: &[u8]| {
    let w = Window {
        start: ts("2020-09-30T12:00:00Z"),
        end: ts("2020-10-01T12:00:00Z"),
        retention_cutoff: ts("2019-01-01T00:00:00Z"),
    };
    // As the engine reads a file: inflate, then parse; and the bytes as plain text too.
    if let Ok(text) = gunzip(data) {
        check(&text, &w);
    }
    check(data, &w);
});
