//! The copy Lambda's handler path, in process, for benches/run.sh: plans a copy of SOURCE into
//! a local STORE, prepares the work item with the most bytes, then runs `copy_item` on it as the
//! copy Lambda does (one invocation, default 64 MiB batches), and prints one JSON line with the
//! throughput and the peak RSS (VmHWM) of the process. The batch's Parquet output is held in
//! memory, as the Lambda's S3 store holds it (a local store spools it to a file).
//!
//! cargo run --release --example copy_batch -- SOURCE STORE START END

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;
use trailcopy::claims::{Holder, NoProbe};

use async_trait::async_trait;
use bytes::Bytes;
use trailcopy::storage::{Listing, ObjectHead, ObjectInfo, ObjectStore, PutCondition, RangePage};
use trailcopy::{AwsClients, CopyLimits, CopyRequest, plan_copy, prepare_item};

/// A store that spools in memory, as an S3 store does (the trait's default), and otherwise is
/// the local store it wraps.
struct SpoolInMemory(Arc<dyn ObjectStore>);

type Result<T> = std::result::Result<T, trailcopy::CopyError>;

#[async_trait]
impl ObjectStore for SpoolInMemory {
    async fn list_dir(&self, prefix: &str) -> Result<Listing> {
        self.0.list_dir(prefix).await
    }
    async fn list_range(&self, prefix: &str, start_after: &str, end_before: &str) -> Result<Vec<ObjectInfo>> {
        self.0.list_range(prefix, start_after, end_before).await
    }
    async fn list_range_first(&self, prefix: &str, start_after: &str, end_before: &str) -> Result<RangePage> {
        self.0.list_range_first(prefix, start_after, end_before).await
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.0.get(key).await
    }
    async fn get_with_metadata(&self, key: &str) -> Result<(Bytes, HashMap<String, String>)> {
        self.0.get_with_metadata(key).await
    }
    async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, String)>> {
        self.0.get_versioned(key).await
    }
    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        self.0.put(key, body).await
    }
    async fn put_if(&self, key: &str, body: Bytes, condition: &PutCondition) -> Result<bool> {
        self.0.put_if(key, body, condition).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.0.delete(key).await
    }
    async fn head(&self, key: &str) -> Result<ObjectHead> {
        self.0.head(key).await
    }
    async fn restore(&self, key: &str, tier: &str, days: Option<i32>) -> Result<()> {
        self.0.restore(key, tier, days).await
    }
    fn location(&self, key: &str) -> String {
        self.0.location(key)
    }
}

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
    let (mut ctx, items) =
        plan_copy(&aws, &request, jiff::Timestamp::now(), Holder::this_process(), &NoProbe).await.expect("plan");
    ctx.store = Arc::new(SpoolInMemory(ctx.store.clone()));
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
    // As the copy Lambda sizes it (TRAILCOPY_MAX_REQUESTS etc. apply).
    let budget = trailcopy::FetchBudget::for_lambda();
    let limits = CopyLimits::new(&never, &budget);
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
