//! The local runner: the state machine's steps under tokio, with bounded concurrency and a
//! checkpoint per work item, so `retry` resumes the same way a redrive does.

use std::collections::{BTreeMap, HashMap};
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

/// Prefixes, files and bytes: a copy's totals, or how much of them is done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amounts {
    pub prefixes: u64,
    pub files: u64,
    pub bytes: u64,
}

/// What a progress display shows. The totals are known when planning ends (every item's file
/// list is frozen then, with each file's size) and never change while the copy runs; files and
/// bytes are done as each file is read (before its batch commits), so a display moves per file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// False while the copy is planned.
    pub planned: bool,
    pub total: Amounts,
    /// Never more than `total`; a retried copy starts from what its earlier runs did.
    pub done: Amounts,
    /// Events copied so far.
    pub events_copied: u64,
}

/// A running copy's progress, kept by the runner and read by a display as often as it likes
/// ([`snapshot`](Self::snapshot)). Each item's committed counts come from its checkpoint; the
/// files read since its last commit are counted apart and dropped when the commit takes them in,
/// so nothing is counted twice.
#[derive(Debug, Default)]
pub struct ProgressTracker(Mutex<Tracked>);

#[derive(Debug, Default)]
struct Tracked {
    planned: bool,
    items: Vec<WorkItem>,
    summaries: BTreeMap<String, ItemSummary>,
    /// Per item: files, bytes and events read since its last commit.
    reading: HashMap<String, (u64, u64, u64)>,
}

impl ProgressTracker {
    pub fn snapshot(&self) -> Progress {
        let t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut p = Progress { planned: t.planned, ..Default::default() };
        for item in &t.items {
            p.total.prefixes += item.prefixes;
            p.total.files += item.files;
            p.total.bytes += item.bytes;
            let (files, bytes, events) = t.reading.get(&item.index).copied().unwrap_or_default();
            let done = t.summaries.get(&item.index).map(|s| item_done(item, s)).unwrap_or_default();
            p.done.prefixes += done.prefixes;
            p.done.files += (done.files + files).min(item.files);
            p.done.bytes += (done.bytes + bytes).min(item.bytes);
            p.events_copied += t.summaries.get(&item.index).map_or(0, |s| s.statistics.events_completed) + events;
        }
        p
    }

    /// Planning is over: the items and what earlier runs did.
    fn planned(&self, items: &[WorkItem], summaries: BTreeMap<String, ItemSummary>) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        t.planned = true;
        t.items = items.to_vec();
        t.summaries = summaries;
        t.reading.clear();
    }

    /// An item's checkpoint was saved (listed, a batch committed, completed, failed).
    fn saved(&self, state: &ItemState) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        t.summaries.insert(state.index.clone(), ItemSummary::from(state));
        t.reading.remove(&state.index);
    }

    /// One file of an item read (not committed yet).
    fn file_read(&self, index: &str, bytes: u64, events: u64) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let r = t.reading.entry(index.to_string()).or_default();
        *r = (r.0 + 1, r.1 + bytes, r.2 + events);
    }

    /// The copy's statistics from the items' checkpoints (the record follows them).
    fn statistics(&self) -> Statistics {
        let t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        rollup(&t.items, &t.summaries, false).statistics
    }

    fn completed(&self, index: &str) -> bool {
        let t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        t.summaries.get(index).is_some_and(|s| s.status == ItemStatus::Completed)
    }
}

/// What an item's checkpoint says is done: all of it once completed; once listed, the files
/// skipped, failed and read and their bytes (with the bytes of files it will not read).
fn item_done(item: &WorkItem, s: &ItemSummary) -> Amounts {
    let st = &s.statistics;
    match s.status {
        ItemStatus::Completed => Amounts { prefixes: item.prefixes, files: item.files, bytes: item.bytes },
        ItemStatus::Pending => Amounts::default(),
        _ if st.files_found == 0 => Amounts::default(),
        _ => Amounts {
            prefixes: 0,
            files: st.files_skipped + st.files_completed + st.files_failed,
            bytes: st.bytes_read + item.bytes.saturating_sub(st.bytes_to_read),
        },
    }
}

pub struct RunOptions {
    pub concurrency: usize,
    /// GETs in flight and fetched bytes, shared by the items that run at once.
    pub budget: FetchBudget,
    pub cancel: Arc<AtomicBool>,
    /// The copy's progress, for a display to read.
    pub progress: Arc<ProgressTracker>,
    /// Tells whether a state machine execution holding a claim still runs.
    pub probe: Arc<dyn ExecutionProbe>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            concurrency: 4,
            budget: FetchBudget::default(),
            cancel: Arc::new(AtomicBool::new(false)),
            progress: Arc::default(),
            probe: Arc::new(NoProbe),
        }
    }
}

/// Plans and runs a new copy to its end.
pub async fn run_copy(aws: &AwsClients, request: &CopyRequest, opts: &RunOptions) -> Result<CopyRecord> {
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
    // Seeded from the roll-up: a retry starts from what is done.
    let tracker = &opts.progress;
    tracker.planned(&items, read_summaries(ctx).await?);

    // The record follows the copy every few seconds, not only at the end.
    let (done, mut finished) = tokio::sync::watch::channel(false);
    let ticker = async {
        loop {
            tokio::select! {
                _ = finished.changed() => break,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            if let Ok(mut record) = ctx.read_record().await {
                record.statistics = tracker.statistics();
                record.touch();
                let _ = ctx.write_record(&record).await;
            }
        }
    };
    let pending: Vec<WorkItem> = items.iter().filter(|i| !tracker.completed(&i.index)).cloned().collect();
    let work = async {
        futures::stream::iter(pending)
            .map(|item| run_item(ctx, item, opts))
            .buffer_unordered(opts.concurrency.max(1))
            .collect::<Vec<()>>()
            .await;
        let _ = done.send(true);
    };
    tokio::join!(work, ticker);
    finalize_copy(ctx, opts.cancel.load(Ordering::Relaxed), None).await
}

/// Prepare, wait for restores, copy; an error is recorded on the item and the rest go on.
async fn run_item(ctx: &CopyContext, item: WorkItem, opts: &RunOptions) {
    let tracker = &opts.progress;
    let saved = |s: &ItemState| tracker.saved(s);
    let read = |bytes: u64, events: u64| tracker.file_read(&item.index, bytes, events);
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
                saved(&load_item_state(ctx, &item).await?);
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
        let limits = CopyLimits { on_commit: &saved, on_file: &read, ..CopyLimits::new(&opts.cancel, &opts.budget) };
        copy_item_prefetched(ctx, &item, &limits, prefetch).await.map(|_| ())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(item = %item.describe(), error = %e, "work item failed");
        if let Ok(state) = fail_item(ctx, &item, &e).await {
            saved(&state);
        }
    }
}
