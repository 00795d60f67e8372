//! The copy Lambda's handler path, in process, for benches/run.sh: plans a copy of SOURCE into
//! a local STORE, prepares the work item with the most bytes, then runs `copy_item` on it as the
//! copy Lambda does (one invocation, default 64 MiB batches), and prints one JSON line with the
//! throughput and the peak RSS (VmHWM) of the process.
//!
//! cargo run --release --example copy_batch -- SOURCE STORE START END

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use trailcopy::{AwsClients, CopyLimits, CopyRequest, plan_copy, prepare_item};

/// A line of /proc/self/status in kB (VmHWM: peak RSS; VmRSS: current).
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [source, store, start, end] = args.as_slice() else {
        eprintln!("usage: copy_batch SOURCE STORE START END");
        std::process::exit(2);
    };
    let aws = AwsClients::new();
    let request = CopyRequest {
        source: Some(source.clone()),
        store: Some(store.clone()),
        start: Some(start.clone()),
        end: Some(end.clone()),
        ..Default::default()
    };
    let (ctx, items) = plan_copy(&aws, &request, jiff::Timestamp::now()).await.expect("plan");
    // The item with the most files: a Lambda invocation's worst case.
    let mut best = None;
    for item in items {
        let p = prepare_item(&ctx, &item).await.expect("prepare");
        assert_eq!(p.pending_restores, 0);
        let state = trailcopy::prepare::load_item_state(&ctx, &item).await.expect("state");
        let bytes = state.statistics.files_found;
        if best.as_ref().is_none_or(|(b, _)| bytes > *b) {
            best = Some((bytes, item));
        }
    }
    let (_, item) = best.expect("a work item");
    let before_kb = status_kb("VmHWM");
    let never = AtomicBool::new(false);
    let limits = CopyLimits { deadline: None, cancel: &never, on_commit: &|_| {} };
    let started = Instant::now();
    let outcome = trailcopy::copy_item(&ctx, &item, &limits).await.expect("copy");
    let seconds = started.elapsed().as_secs_f64();
    let state = trailcopy::prepare::load_item_state(&ctx, &item).await.expect("state");
    let s = &state.statistics;
    println!(
        "{{\"item\":{:?},\"batches\":{},\"files\":{},\"events\":{},\"bytesRead\":{},\"seconds\":{seconds:.4},\"eventsPerSecond\":{:.0},\"compressedMbPerSecond\":{:.2},\"vmHwmKbBeforeCopy\":{before_kb},\"vmHwmKb\":{}}}",
        item.first,
        outcome.cursor.batch,
        s.files_completed,
        s.events_completed,
        s.bytes_read,
        s.events_completed as f64 / seconds,
        s.bytes_read as f64 / seconds / 1e6,
        status_kb("VmHWM"),
    );
}
