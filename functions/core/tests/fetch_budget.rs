//! Issue 13: the fetch budget changes how many files are in flight, never the output. The same
//! copy with one GET and one file's bytes at a time, and with 64 GETs and the default bytes,
//! writes the same Parquet objects (names and bytes) and the same statistics, over batches
//! small enough that files are fetched ahead across batch boundaries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use trailcopy::claims::{Holder, NoProbe};

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use trailcopy::copy::{Prefetch, copy_item_prefetched};
use trailcopy::record::FileToCopy;
use trailcopy::{
    AwsClients, CopyLimits, CopyRequest, CopyStatus, FetchBudget, RunOptions, plan_copy, prepare_item, run_copy,
};

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sample-trail").canonicalize().unwrap()
}

/// Every file under `dir/events`, by path relative to the store, with its bytes.
fn events(store: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(path.strip_prefix(root).unwrap().display().to_string(), std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(store, &store.join("events"), &mut out);
    out
}

fn request(store: &Path) -> CopyRequest {
    CopyRequest {
        source: Some(sample().display().to_string()),
        store: Some(store.display().to_string()),
        start: Some("2026-11-01".into()),
        end: Some("2026-11-03".into()),
        ..Default::default()
    }
}

async fn copy_with(budget: FetchBudget, store: &Path) -> trailcopy::CopyRecord {
    let request = request(store);
    let opts = RunOptions { concurrency: 3, budget, ..Default::default() };
    // A budget held by what nobody reads would hang the copy: fail instead.
    tokio::time::timeout(Duration::from_secs(120), run_copy(&AwsClients::new(), &request, &opts))
        .await
        .expect("the copy finished")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_the_same_whatever_the_budget() {
    // SAFETY: the only test of this binary, set before anything reads the environment.
    unsafe { std::env::set_var("TRAILCOPY_BATCH_BYTES", "20000") };
    let dir = std::env::temp_dir().join(format!("trailcopy-fetch-budget-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let narrow = copy_with(FetchBudget::new(1, 1), &dir.join("narrow")).await;
    let wide = copy_with(FetchBudget::new(64, 64 << 20), &dir.join("wide")).await;
    assert_eq!(narrow.status, CopyStatus::Completed, "{narrow:?}");
    assert_eq!(narrow.statistics, wide.statistics);
    assert!(narrow.statistics.events_completed > 0);
    let (a, b) = (events(&dir.join("narrow")), events(&dir.join("wide")));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "the same Parquet names");
    // Several batches per item: the wide run fetched across batch boundaries.
    assert!(a.keys().any(|k| k.ends_with("_000002.parquet")), "{:?}", a.keys());
    for (name, bytes) in &a {
        assert!(b[name] == *bytes, "{name} differs between budgets");
    }

    // A prefetch of the wrong files (here: the item's files in reverse) is dropped before the
    // copy waits for budget: with one byte of budget, one it kept would hang the copy.
    let store = dir.join("mismatched");
    let (ctx, items) =
        plan_copy(&AwsClients::new(), &request(&store), jiff::Timestamp::now(), Holder::this_process(), &NoProbe)
            .await
            .unwrap();
    let budget = FetchBudget::new(1, 1);
    let never = AtomicBool::new(false);
    let limits = CopyLimits::new(&never, &budget);
    for item in &items {
        prepare_item(&ctx, item).await.unwrap();
        let listed: Vec<FileToCopy> =
            serde_json::from_slice(&std::fs::read(store.join(ctx.keys.item_files(&item.index))).unwrap()).unwrap();
        let wrong: Vec<FileToCopy> = listed.into_iter().rev().collect();
        let prefetch = Prefetch::start(&ctx, &budget, wrong);
        let copied =
            tokio::time::timeout(Duration::from_secs(60), copy_item_prefetched(&ctx, item, &limits, Some(prefetch)))
                .await
                .expect("the copy went on without the mismatched prefetch's budget")
                .unwrap();
        assert!(copied.done);
    }
    let c = events(&store);
    assert_eq!(c.keys().collect::<Vec<_>>(), a.keys().collect::<Vec<_>>());
    for (name, bytes) in &a {
        assert!(c[name] == *bytes, "{name} differs with a mismatched prefetch");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
