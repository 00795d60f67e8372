//! The local runner: the state machine's steps under tokio, with bounded concurrency and a
//! checkpoint per work item, so `retry` resumes the same way a redrive does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;

use crate::copy::{CopyLimits, copy_item, fail_item};
use crate::error::Result;
use crate::finalize::{finalize_copy, read_item_states, rollup};
use crate::plan::{CopyContext, CopyRequest, discover_work_items, plan_copy};
use crate::prepare::{load_item_state, prepare_item, save_item_state};
use crate::record::{CopyRecord, CopyStatus, ItemState, ItemStatus, Statistics, WorkItem, read_json};
use crate::storage::AwsClients;

/// What a progress display shows, from the engine's own counters. Totals only grow and never
/// fall behind what is done: the prefixes are known when planning ends, the files and bytes of
/// each prefix when it is listed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// The copy's statistics so far (those of a retried copy include its earlier runs).
    pub statistics: Statistics,
    /// False while the copy is planned (its day prefixes listed).
    pub planned: bool,
    /// Day prefixes whose files are listed: the file and byte totals are final once this
    /// reaches `statistics.prefixes_found`.
    pub prefixes_listed: u64,
}

impl Progress {
    /// Files read (copied or failed) and files to read.
    pub fn files(&self) -> (u64, u64) {
        let s = &self.statistics;
        (s.files_completed + s.files_failed, s.files_found - s.files_skipped)
    }

    pub fn totals_final(&self) -> bool {
        self.planned && self.prefixes_listed >= self.statistics.prefixes_found
    }
}

pub struct RunOptions {
    pub concurrency: usize,
    pub cancel: Arc<AtomicBool>,
    /// Called as the copy is planned, as each prefix is listed and as batches commit.
    pub progress: Arc<dyn Fn(&Progress) + Send + Sync>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { concurrency: 4, cancel: Arc::new(AtomicBool::new(false)), progress: Arc::new(|_: &Progress| {}) }
    }
}

/// Plans and runs a new copy to its end.
pub async fn run_copy(aws: &AwsClients, request: &CopyRequest, opts: &RunOptions) -> Result<CopyRecord> {
    (opts.progress)(&Progress::default());
    let (ctx, items) = plan_copy(aws, request, Timestamp::now()).await?;
    run_items(&ctx, items, opts).await
}

/// Resumes a copy at its checkpoints: failed and unfinished items go on from their cursors.
/// A COMPLETED copy has nothing to resume: its record comes back unchanged.
pub async fn retry_copy(aws: &AwsClients, store: &str, copy_id: &str, opts: &RunOptions) -> Result<CopyRecord> {
    let record = CopyContext::open(aws, store, copy_id).await?.read_record().await?;
    if record.status == CopyStatus::Completed {
        return Ok(record);
    }
    (opts.progress)(&Progress::default());
    let (ctx, items) = reopen_copy(aws, store, copy_id).await?;
    run_items(&ctx, items, opts).await
}

/// Makes a copy ready to run again (the local retry and the state machine's retry execution):
/// plans it if planning never finished, puts failed items back in the state they failed in,
/// and marks the record IN_PROGRESS. Completed items stay completed.
pub async fn reopen_copy(aws: &AwsClients, store: &str, copy_id: &str) -> Result<(CopyContext, Vec<WorkItem>)> {
    let ctx = CopyContext::open(aws, store, copy_id).await?;
    // The source folder may have moved since: say so, rather than fail every file.
    ctx.source_location.check_local_source()?;
    // A copy whose planning never finished (a crash, or a failure before its first work item).
    let items = match read_json::<Vec<WorkItem>>(ctx.store.as_ref(), &ctx.keys.work_items()).await? {
        Some(items) => items,
        None => discover_work_items(&ctx).await?,
    };
    for item in &items {
        let mut state = load_item_state(&ctx, item).await?;
        if state.status == ItemStatus::Failed {
            state.status = state.resume_status.take().unwrap_or(ItemStatus::Pending);
            state.error = None;
            if state.status == ItemStatus::Restoring {
                // A new maximum wait starts with the retry.
                state.restore_started_time = Some(Timestamp::now());
            }
            save_item_state(&ctx, &state).await?;
        }
    }
    let mut record = ctx.read_record().await?;
    record.status = CopyStatus::InProgress;
    record.message = None;
    record.touch();
    ctx.write_record(&record).await?;
    Ok((ctx, items))
}

async fn run_items(ctx: &CopyContext, items: Vec<WorkItem>, opts: &RunOptions) -> Result<CopyRecord> {
    // Live statistics per item, seeded from checkpoints (a retry starts from what is done).
    let live: Arc<Mutex<BTreeMap<String, ItemState>>> =
        Arc::new(Mutex::new(read_item_states(ctx).await?.into_iter().map(|s| (s.index.clone(), s)).collect()));
    let report = {
        let live = live.clone();
        let progress = opts.progress.clone();
        move |s: &ItemState| {
            let now = {
                let mut map = live.lock().unwrap_or_else(|p| p.into_inner());
                map.insert(s.index.clone(), s.clone());
                let states: Vec<ItemState> = map.values().cloned().collect();
                Progress {
                    statistics: rollup(&states).statistics,
                    planned: true,
                    prefixes_listed: states.iter().filter(|s| is_listed(s)).count() as u64,
                }
            };
            progress(&now);
        }
    };
    let first = live.lock().unwrap_or_else(|p| p.into_inner()).values().next().cloned();
    if let Some(any) = first {
        report(&any);
    }

    // The record follows the copy every few seconds, not only at the end.
    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let done = done.clone();
        let live = live.clone();
        async move {
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let stats = {
                    let map = live.lock().unwrap_or_else(|p| p.into_inner());
                    let states: Vec<ItemState> = map.values().cloned().collect();
                    rollup(&states).statistics
                };
                if let Ok(mut record) = ctx.read_record().await {
                    record.statistics = Statistics { prefixes_found: record.statistics.prefixes_found, ..stats };
                    record.touch();
                    let _ = ctx.write_record(&record).await;
                }
            }
        }
    };
    let work = async {
        futures::stream::iter(items)
            .map(|item| run_item(ctx, item, opts, &report))
            .buffer_unordered(opts.concurrency.max(1))
            .collect::<Vec<()>>()
            .await;
        done.store(true, Ordering::Relaxed);
    };
    tokio::join!(work, async {
        tokio::select! {
            _ = ticker => {}
            _ = wait_for(&done) => {}
        }
    });
    finalize_copy(ctx, opts.cancel.load(Ordering::Relaxed), None).await
}

/// Whether an item's files are listed (its file and byte counts are in the statistics).
fn is_listed(s: &ItemState) -> bool {
    match s.status {
        ItemStatus::Pending => false,
        ItemStatus::Failed => s.resume_status.is_some_and(|r| r != ItemStatus::Pending),
        _ => true,
    }
}

async fn wait_for(flag: &AtomicBool) {
    while !flag.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Prepare, wait for restores, copy; an error is recorded on the item and the rest go on.
async fn run_item(ctx: &CopyContext, item: WorkItem, opts: &RunOptions, report: &(dyn Fn(&ItemState) + Send + Sync)) {
    if opts.cancel.load(Ordering::Relaxed) {
        return;
    }
    let result = async {
        let mut listed = false;
        loop {
            let p = prepare_item(ctx, &item).await?;
            if !listed {
                listed = true;
                report(&load_item_state(ctx, &item).await?);
            }
            if p.pending_restores == 0 {
                break;
            }
            if opts.cancel.load(Ordering::Relaxed) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(ctx.request.restore.poll_seconds.max(1))).await;
        }
        let limits = CopyLimits { deadline: None, cancel: &opts.cancel, on_commit: report };
        copy_item(ctx, &item, &limits).await.map(|_| ())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(item = %item.prefix, error = %e, "work item failed");
        if let Ok(state) = fail_item(ctx, &item, &e).await {
            report(&state);
        }
    }
}
