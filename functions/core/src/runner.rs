//! The local runner: the state machine's steps under tokio, with bounded concurrency and a
//! checkpoint per work item, so `retry` resumes the same way a redrive does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;

use crate::budget::FetchBudget;
use crate::claims::{self, Claim, ExecutionProbe, Holder, NoProbe};
use crate::copy::{CopyLimits, Prefetch, copy_item_prefetched, fail_item};
use crate::error::Result;
use crate::finalize::{finalize_copy, rollup};
use crate::plan::{CopyContext, CopyRequest, discover_work_items, plan_copy};
use crate::prepare::{expected_files, load_item_state, prepare_item, save_item_state};
use crate::record::{Attempt, CopyRecord, CopyStatus, ItemState, ItemStatus, Repair, Statistics, WorkItem, read_json};
use crate::rollup::{self, ItemSummary, read_summaries};
use crate::storage::AwsClients;

/// What a progress display shows, from the engine's own counters. Totals only grow and never
/// fall behind what is done: the work items are known when planning ends, the files and bytes of
/// each item when it is listed (its file list is frozen at planning, so an item's totals are
/// final once it is prepared).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// The copy's statistics so far (those of a retried copy include its earlier runs).
    pub statistics: Statistics,
    /// False while the copy is planned.
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
    /// GETs in flight and fetched bytes, shared by the items that run at once.
    pub budget: FetchBudget,
    pub cancel: Arc<AtomicBool>,
    /// Called as the copy is planned, as each item is listed and as batches commit.
    pub progress: Arc<dyn Fn(&Progress) + Send + Sync>,
    /// Tells whether a state machine execution holding a claim still runs.
    pub probe: Arc<dyn ExecutionProbe>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            concurrency: 4,
            budget: FetchBudget::default(),
            cancel: Arc::new(AtomicBool::new(false)),
            progress: Arc::new(|_: &Progress| {}),
            probe: Arc::new(NoProbe),
        }
    }
}

/// Plans and runs a new copy to its end.
pub async fn run_copy(aws: &AwsClients, request: &CopyRequest, opts: &RunOptions) -> Result<CopyRecord> {
    (opts.progress)(&Progress::default());
    let (ctx, items) = plan_copy(aws, request, Timestamp::now(), Holder::this_process(), opts.probe.as_ref()).await?;
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
    let (ctx, items, _) = reopen(aws, store, copy_id, Holder::this_process(), opts.probe.as_ref()).await?;
    run_items(&ctx, items, opts).await
}

/// Makes a copy ready to run again (the local retry and the state machine's retry execution):
/// takes over its claim (refused while its holder still runs), plans it if planning never
/// finished, puts failed items back in the state they failed in, sets every item with failed
/// files to read them again, and marks the record IN_PROGRESS with a new attempt. Completed
/// items without failed files stay completed. Returns every item and the ones to run.
pub async fn reopen(
    aws: &AwsClients,
    store: &str,
    copy_id: &str,
    holder: Holder,
    probe: &dyn ExecutionProbe,
) -> Result<(CopyContext, Vec<WorkItem>, Vec<WorkItem>)> {
    let ctx = CopyContext::open(aws, store, copy_id).await?;
    // The source folder may have moved since: say so, rather than fail every file.
    ctx.source_location.check_local_source()?;
    let claim = Claim::new(copy_id, &ctx.request, holder);
    claims::claim(ctx.store.as_ref(), ctx.store_location.prefix(), &claim, true, probe).await?;
    let mut record = ctx.read_record().await?;
    let same_run = matches!(&claim.holder, Holder::Execution { execution } if record.executions.contains(execution));
    let attempt = match record.attempts.last() {
        Some(a) if same_run => a.number,
        Some(a) => a.number + 1,
        None => 2,
    };
    // A copy whose planning never finished (a crash, or a failure before its first work item).
    let items = match read_json::<Vec<WorkItem>>(ctx.store.as_ref(), &ctx.keys.work_items()).await? {
        Some(items) => items,
        None => discover_work_items(&ctx).await?,
    };
    let summaries = read_summaries(&ctx).await?;
    let pending: Vec<WorkItem> = items
        .iter()
        .filter(|i| summaries.get(&i.index).is_none_or(|s| s.status != ItemStatus::Completed || s.failed_files > 0))
        .cloned()
        .collect();
    // Only these items' checkpoints are read (a crash can leave a checkpoint FAILED whose roll-up
    // entry does not say so yet).
    for item in &pending {
        let mut state = load_item_state(&ctx, item).await?;
        let before = state.clone();
        if state.status == ItemStatus::Failed {
            state.status = state.resume_status.take().unwrap_or(ItemStatus::Pending);
            state.error = None;
            // A batch that never finished gets its starts again (the cause may be fixed).
            state.batch_starts = None;
            if state.status == ItemStatus::Restoring {
                // A new maximum wait starts with the retry.
                state.restore_started_time = Some(Timestamp::now());
            }
        }
        if !state.failed_files.is_empty() {
            state.repair = Some(Repair { attempt, pending: true, ..Default::default() });
            if state.status == ItemStatus::Completed {
                state.status = ItemStatus::Copying;
            }
        }
        if state != before {
            save_item_state(&ctx, &state).await?;
            rollup::record_item(&ctx, &state).await?;
        }
    }
    record.status = CopyStatus::InProgress;
    record.message = None;
    if record.attempts.is_empty() {
        // A record written before attempts were kept: its first run is attempt 1.
        record.attempts.push(Attempt { started_time: record.created_time, ..Attempt::start(1, "copy") });
    }
    // A retried Enumerate of the same retry execution continues its attempt. The execution is
    // recorded now, so that retry and a Finalize of its end (an ExecutionEndedRule event) know it.
    if !same_run {
        record.attempts.push(Attempt::start(attempt, "retry"));
        if let Holder::Execution { execution } = &claim.holder {
            record.executions.push(execution.clone());
        }
    }
    record.touch();
    ctx.write_record(&record).await?;
    Ok((ctx, items, pending))
}

async fn run_items(ctx: &CopyContext, items: Vec<WorkItem>, opts: &RunOptions) -> Result<CopyRecord> {
    // Live summaries per item, seeded from the roll-up (a retry starts from what is done).
    let live: Arc<Mutex<BTreeMap<String, ItemSummary>>> = Arc::new(Mutex::new(read_summaries(ctx).await?));
    let statistics = {
        let live = live.clone();
        let items = items.clone();
        move || rollup(&items, &live.lock().unwrap_or_else(|p| p.into_inner()), false).statistics
    };
    let now = {
        let live = live.clone();
        let items = items.clone();
        move || {
            let live = live.lock().unwrap_or_else(|p| p.into_inner());
            let listed = items.iter().filter(|i| live.get(&i.index).is_some_and(is_listed)).map(|i| i.prefixes).sum();
            Progress { statistics: rollup(&items, &live, false).statistics, planned: true, prefixes_listed: listed }
        }
    };
    let report = {
        let live = live.clone();
        let progress = opts.progress.clone();
        let now = now.clone();
        move |s: &ItemState| {
            live.lock().unwrap_or_else(|p| p.into_inner()).insert(s.index.clone(), ItemSummary::from(s));
            progress(&now());
        }
    };
    (opts.progress)(&now());

    // The record follows the copy every few seconds, not only at the end.
    let (done, mut finished) = tokio::sync::watch::channel(false);
    let ticker = async {
        loop {
            tokio::select! {
                _ = finished.changed() => break,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            if let Ok(mut record) = ctx.read_record().await {
                record.statistics = statistics();
                record.touch();
                let _ = ctx.write_record(&record).await;
            }
        }
    };
    let pending: Vec<WorkItem> = {
        let live = live.lock().unwrap_or_else(|p| p.into_inner());
        items.iter().filter(|i| live.get(&i.index).is_none_or(|s| s.status != ItemStatus::Completed)).cloned().collect()
    };
    let work = async {
        futures::stream::iter(pending)
            .map(|item| run_item(ctx, item, opts, &report))
            .buffer_unordered(opts.concurrency.max(1))
            .collect::<Vec<()>>()
            .await;
        let _ = done.send(true);
    };
    tokio::join!(work, ticker);
    finalize_copy(ctx, opts.cancel.load(Ordering::Relaxed), None).await
}

/// Whether an item's files are listed (its file and byte counts are in the statistics).
fn is_listed(s: &ItemSummary) -> bool {
    match s.status {
        ItemStatus::Pending => false,
        ItemStatus::Failed => s.statistics.files_found > 0 || s.statistics.prefixes_found > 0,
        _ => true,
    }
}

/// Prepare, wait for restores, copy; an error is recorded on the item and the rest go on.
async fn run_item(ctx: &CopyContext, item: WorkItem, opts: &RunOptions, report: &(dyn Fn(&ItemState) + Send + Sync)) {
    if opts.cancel.load(Ordering::Relaxed) {
        return;
    }
    let result = async {
        // The first files are fetched while prepare checks the item (its HEADs are a round trip
        // the GETs need not wait for); copy_item uses them only if prepare kept the same list.
        let mut prefetch = expected_files(ctx, &item).await?.map(|files| Prefetch::start(ctx, &opts.budget, files));
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
            // Waiting for restores: give the budget back to the other items.
            prefetch = None;
            if opts.cancel.load(Ordering::Relaxed) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(p.wait_seconds.max(1))).await;
        }
        let limits = CopyLimits {
            deadline: None,
            cancel: &opts.cancel,
            on_commit: report,
            budget: &opts.budget,
            max_batch_starts: None,
        };
        copy_item_prefetched(ctx, &item, &limits, prefetch).await.map(|_| ())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(item = %item.describe(), error = %e, "work item failed");
        if let Ok(state) = fail_item(ctx, &item, &e).await {
            report(&state);
        }
    }
}
