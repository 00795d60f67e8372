//! Planning benchmark at organization scale, without a bucket: a fake object store at the
//! storage seam answers the listings of an organization trail (N accounts × R regions × D days,
//! F files per day prefix) with a latency per LIST page, and a sink store takes the copy record.
//! Reports LIST calls, PUTs, wall time, peak RSS and the size of workitems.json.
//!
//!     cargo run --release -p trailcopy-core --example plan_org -- 1000 17 365 2 20
//!     (accounts, regions, days, files per day prefix, latency ms per LIST page)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use jiff::civil::Date;
use trailcopy::CopyContext;
use trailcopy::error::{CopyError, Result};
use trailcopy::kms::{KeyChecker, KeyState};
use trailcopy::range::Window;
use trailcopy::record::{CopyRecord, CopyStatus, RecordKeys, ResolvedRequest, RestoreOptions, Statistics};
use trailcopy::storage::{Listing, Location, ObjectHead, ObjectInfo, ObjectStore, PutCondition};

const ORG: &str = "o-benchorg01";
const PAGE: usize = 1000;

struct OrgSource {
    accounts: usize,
    regions: usize,
    first: Date,
    days: usize,
    files: usize,
    latency: Duration,
    lists: AtomicU64,
}

impl OrgSource {
    fn account(i: usize) -> String {
        format!("{:012}", 100_000_000_000u64 + i as u64 * 7919)
    }
    async fn pages(&self, n: usize) {
        let pages = n.div_ceil(PAGE).max(1);
        self.lists.fetch_add(pages as u64, Ordering::Relaxed);
        tokio::time::sleep(self.latency * pages as u32).await;
    }
}

#[async_trait]
impl ObjectStore for OrgSource {
    async fn list_dir(&self, prefix: &str) -> Result<Listing> {
        let segs: Vec<&str> = prefix.trim_end_matches('/').split('/').collect();
        let dirs: Vec<String> = match segs.as_slice() {
            ["AWSLogs"] => vec![format!("AWSLogs/{ORG}/")],
            ["AWSLogs", _] => (0..self.accounts).map(|i| format!("{prefix}{}/", Self::account(i))).collect(),
            ["AWSLogs", _, _] => vec![format!("{prefix}CloudTrail/"), format!("{prefix}CloudTrail-Digest/")],
            ["AWSLogs", _, _, "CloudTrail"] => (0..self.regions).map(|r| format!("{prefix}region-{r:02}/")).collect(),
            _ => Vec::new(),
        };
        self.pages(dirs.len()).await;
        Ok(Listing { dirs, objects: Vec::new() })
    }
    async fn list_range(&self, prefix: &str, start_after: &str, end_before: &str) -> Result<Vec<ObjectInfo>> {
        let segs: Vec<&str> = prefix.trim_end_matches('/').split('/').collect();
        let (acct, region) = (segs[2], segs[4]);
        let mut out = Vec::new();
        for d in 0..self.days {
            let day = self
                .first
                .checked_add(jiff::Span::new().days(d as i64))
                .map_err(|e| CopyError::State(e.to_string()))?;
            let folder = format!("{prefix}{:04}/{:02}/{:02}/", day.year(), day.month(), day.day());
            for f in 0..self.files {
                let minute = 5 + f * (1430 / self.files.max(1));
                let key = format!(
                    "{folder}{acct}_CloudTrail_{region}_{:04}{:02}{:02}T{:02}{:02}Z_{:016x}.json.gz",
                    day.year(),
                    day.month(),
                    day.day(),
                    minute / 60,
                    minute % 60,
                    xxhash_rust::xxh3::xxh3_64(folder.as_bytes()) ^ f as u64
                );
                if key.as_str() > start_after && key.as_str() < end_before {
                    out.push(ObjectInfo { key, size: 1200, storage_class: None });
                }
            }
        }
        self.pages(out.len()).await;
        Ok(out)
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        Err(CopyError::NotFound { location: key.into() })
    }
    async fn get_versioned(&self, _key: &str) -> Result<Option<(Bytes, String)>> {
        Ok(None)
    }
    async fn put(&self, _key: &str, _body: Bytes) -> Result<()> {
        unreachable!("read-only source")
    }
    async fn put_if(&self, _key: &str, _body: Bytes, _c: &PutCondition) -> Result<bool> {
        unreachable!("read-only source")
    }
    async fn delete(&self, _key: &str) -> Result<()> {
        unreachable!("read-only source")
    }
    async fn head(&self, _key: &str) -> Result<ObjectHead> {
        Ok(ObjectHead::default())
    }
    async fn restore(&self, _key: &str, _tier: &str, _days: Option<i32>) -> Result<()> {
        Ok(())
    }
    fn location(&self, key: &str) -> String {
        format!("s3://bench-trail/{key}")
    }
}

/// Keeps the copy record and workitems.json; counts (and drops) the items' file lists.
#[derive(Default)]
struct SinkStore {
    kept: Mutex<BTreeMap<String, Bytes>>,
    puts: AtomicU64,
    listing_bytes: AtomicU64,
}

#[async_trait]
impl ObjectStore for SinkStore {
    async fn list_dir(&self, _prefix: &str) -> Result<Listing> {
        Ok(Listing::default())
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.kept.lock().unwrap().get(key).cloned().ok_or(CopyError::NotFound { location: key.into() })
    }
    async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, String)>> {
        Ok(self.kept.lock().unwrap().get(key).cloned().map(|b| (b, String::new())))
    }
    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        if key.ends_with("listing.json") {
            self.listing_bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        } else {
            self.kept.lock().unwrap().insert(key.to_string(), body);
        }
        Ok(())
    }
    async fn put_if(&self, key: &str, body: Bytes, _c: &PutCondition) -> Result<bool> {
        self.put(key, body).await.map(|_| true)
    }
    async fn delete(&self, _key: &str) -> Result<()> {
        Ok(())
    }
    async fn head(&self, _key: &str) -> Result<ObjectHead> {
        Ok(ObjectHead::default())
    }
    async fn restore(&self, _key: &str, _tier: &str, _days: Option<i32>) -> Result<()> {
        Ok(())
    }
    fn location(&self, key: &str) -> String {
        format!("s3://bench-store/{key}")
    }
}

struct NoKeys;

#[async_trait]
impl KeyChecker for NoKeys {
    async fn describe(&self, _key_id: &str) -> Result<KeyState> {
        Ok(KeyState::Enabled)
    }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() {
    let arg = |i: usize, d: usize| std::env::args().nth(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (accounts, regions, days, files, latency_ms) = (arg(1, 1000), arg(2, 17), arg(3, 365), arg(4, 2), arg(5, 20));
    let first = Date::constant(2024, 1, 1);
    let midnight = |d: Date| d.to_zoned_datetime(jiff::tz::TimeZone::UTC).unwrap().timestamp();
    let start = midnight(first);
    let end = midnight(first.checked_add(jiff::Span::new().days(days as i64)).unwrap());
    let window = Window { start, end, retention_cutoff: "2000-01-01T00:00:00Z".parse().unwrap() };
    let source = Arc::new(OrgSource {
        accounts,
        regions,
        first,
        days,
        files,
        latency: Duration::from_millis(latency_ms as u64),
        lists: AtomicU64::new(0),
    });
    let store = Arc::new(SinkStore::default());
    let request = ResolvedRequest {
        source: "s3://bench-trail/".into(),
        store: "s3://bench-store/".into(),
        start,
        end,
        last: None,
        retention_days: 9999,
        retention_cutoff: window.retention_cutoff,
        restore: RestoreOptions::default(),
        store_kms_key: None,
        allow_overlap: false,
        verification: None,
        requested_end: None,
        delivery_allowance_seconds: None,
        complete_through: None,
        continues: None,
        tail_until: None,
    };
    let ctx = CopyContext {
        copy_id: "bench".into(),
        request: request.clone(),
        window,
        source_location: Location::S3 { bucket: "bench-trail".into(), prefix: String::new() },
        source: source.clone(),
        store_location: Location::S3 { bucket: "bench-store".into(), prefix: String::new() },
        store: store.clone(),
        keys: RecordKeys::new("", "bench"),
        kms: Arc::new(NoKeys),
        digest_keys: None,
    };
    let now = jiff::Timestamp::now();
    let record = CopyRecord {
        copy_id: "bench".into(),
        status: CopyStatus::Initializing,
        request,
        statistics: Statistics::default(),
        created_time: now,
        updated_time: now,
        message: None,
        executions: Vec::new(),
        verification: None,
        attempts: Vec::new(),
    };
    ctx.write_record(&record).await.unwrap();
    let rss_before = peak_rss_mib();
    let t = Instant::now();
    let items = trailcopy::plan::discover_work_items(&ctx).await.unwrap();
    let took = t.elapsed().as_secs_f64();
    let workitems = store.kept.lock().unwrap().get(&ctx.keys.work_items()).map_or(0, |b| b.len());
    let prefixes: u64 = items.iter().map(|i| i.prefixes).sum();
    let largest = items.iter().map(|i| i.files).max().unwrap_or(0);
    let per_date = items.len() as f64 / days as f64;
    println!(
        "{{\"accounts\":{accounts},\"regions\":{regions},\"days\":{days},\"filesPerDayPrefix\":{files},\
         \"latencyMsPerList\":{latency_ms},\"dayPrefixes\":{prefixes},\"files\":{},\"listCalls\":{},\
         \"puts\":{},\"seconds\":{took:.1},\"peakRssMiB\":{:.0},\"rssBeforeMiB\":{rss_before:.0},\
         \"workItems\":{},\"workItemsPerDate\":{per_date:.1},\"largestItemFiles\":{largest},\
         \"workItemsJsonBytes\":{workitems},\"listingJsonBytes\":{}}}",
        items.iter().map(|i| i.files).sum::<u64>(),
        source.lists.load(Ordering::Relaxed),
        store.puts.load(Ordering::Relaxed),
        peak_rss_mib(),
        items.len(),
        store.listing_bytes.load(Ordering::Relaxed),
    );
}
