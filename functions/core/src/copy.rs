//! Copy a prepared work item in batches from its cursor. A batch is committed in order:
//! Parquet files (deterministic names), the batch's dedup keys, then the checkpoint; a crash
//! anywhere before the checkpoint re-runs the batch, which overwrites the same files.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use arrow_array::BooleanArray;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::{FutureExt, RemoteHandle};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::budget::{BytePermit, FetchBudget};
use crate::digest::ItemDigests;
use crate::error::{CopyError, Result};
use crate::event::{self, ParsedFile};
use crate::layout;
use crate::plan::CopyContext;
use crate::prepare::{load_item_state, save_item_state};
use crate::range::Window;
use crate::record::{
    BatchStarts, Cursor, FailedFile, FailureEntry, FileToCopy, ItemState, ItemStatus, Statistics, WorkItem, read_json,
};
use crate::rollup;
use crate::storage::ObjectStore;
use crate::store::{BatchWriter, event_file_key};

/// Compressed input per batch: sized so a batch's Parquet files suit query engines.
pub const DEFAULT_BATCH_BYTES: u64 = 64 << 20;

/// The files of the batch that starts at `start`: at least one, then until `limit` bytes.
fn batch_end(files: &[FileToCopy], start: usize, limit: u64) -> usize {
    let mut end = start;
    let mut bytes = 0;
    while end < files.len() && (end == start || bytes < limit) {
        bytes += files[end].size;
        end += 1;
    }
    end
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyOutcome {
    pub done: bool,
    pub stopped: bool,
    pub cursor: Cursor,
    pub files_completed: u64,
    pub events_completed: u64,
}

/// Limits of one `copy_item` call.
pub struct CopyLimits<'a> {
    /// Stop after the batch that ends past this instant (Lambda's remaining time).
    pub deadline: Option<Instant>,
    /// Set by Ctrl-C: stop at the next file, discarding the uncommitted batch.
    pub cancel: &'a AtomicBool,
    /// Called after each committed batch with the item's statistics.
    pub on_commit: &'a (dyn Fn(&ItemState) + Send + Sync),
    /// Called as each file is read, before its batch commits, with its bytes and the events it
    /// adds to the batch (a progress display moves per file).
    pub on_file: &'a (dyn Fn(u64, u64) + Send + Sync),
    /// GETs in flight, fetched bytes and parsers, shared with the other items of the process.
    pub budget: &'a FetchBudget,
    /// How many invocations may start the same batch without finishing it (the copy Lambda: an
    /// invocation that runs out of memory dies mid-batch, and Step Functions' retries would start
    /// it again and again); past that the item stops with one `BatchNeverFinished` entry. `None`:
    /// no limit (a local run resumes after a crash as often as it is asked to).
    pub max_batch_starts: Option<u32>,
}

impl<'a> CopyLimits<'a> {
    /// No deadline, no callbacks, no limit on batch starts: set what differs by struct update.
    pub fn new(cancel: &'a AtomicBool, budget: &'a FetchBudget) -> Self {
        CopyLimits { deadline: None, cancel, on_commit: &|_| {}, on_file: &|_, _| {}, budget, max_batch_starts: None }
    }
}

fn batch_bytes() -> u64 {
    std::env::var("TRAILCOPY_BATCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(DEFAULT_BATCH_BYTES)
}

/// Test fault injection: counts committed batches in this process.
static COMMITS: AtomicU64 = AtomicU64::new(0);
static FAIL_AFTER: LazyLock<Option<u64>> =
    LazyLock::new(|| std::env::var("TRAILCOPY_FAULT_FAIL_AFTER_BATCHES").ok().and_then(|v| v.parse().ok()));
static ABORT_AFTER: LazyLock<Option<u64>> =
    LazyLock::new(|| std::env::var("TRAILCOPY_FAULT_ABORT_AFTER_BATCHES").ok().and_then(|v| v.parse().ok()));

/// One file's result: parsed events or a failure entry; a retryable error fails the batch.
enum FileResult {
    /// The events read, the damage that stopped the read early, if any, and (when the copy
    /// verifies digests) the SHA-256 of the inflated file.
    Parsed(ParsedFile, Option<FailureEntry>, Option<[u8; 32]>),
    Failed(FailureEntry),
}

async fn read_file(
    source: Arc<dyn ObjectStore>,
    window: Window,
    budget: FetchBudget,
    file: FileToCopy,
    hash: bool,
    parse: oneshot::Receiver<()>,
) -> Result<FileResult> {
    let location = source.location(&file.key);
    let got = {
        let _slot = budget.request().await;
        source.get(&file.key).await
    };
    let bytes: Bytes = match got {
        Ok(b) => b,
        // Transient, or the credentials went bad mid-copy: the batch fails and resumes from its
        // checkpoint, rather than every remaining file becoming a failure entry.
        Err(e @ (CopyError::Retryable { .. } | CopyError::Credentials { .. })) => return Err(e),
        Err(CopyError::Archived { .. }) => {
            return Ok(FileResult::Failed(FailureEntry::new(
                location,
                "ArchivedObject",
                "the object is archived and not restored; copy with --restore bulk (or standard/expedited)".into(),
            )));
        }
        Err(CopyError::AccessDenied { message, .. }) => {
            // Denied on an SSE-KMS object: the key policy (or the role's KMS grant) is missing. That
            // stops every object under the key, so the item stops with one entry naming the key;
            // retry resumes it from its checkpoint once decryption is allowed.
            let key = {
                let _slot = budget.request().await;
                source.head(&file.key).await.ok().and_then(|h| h.kms_key_id)
            };
            return match key {
                Some(k) => Err(CopyError::Blocked(Box::new(crate::kms::access_denied_entry(&location, &k, &message)))),
                None => Ok(FileResult::Failed(FailureEntry::new(location, "AccessDenied", message))),
            };
        }
        Err(CopyError::NotFound { .. }) => return Ok(FileResult::Failed(vanished_entry(location))),
        Err(e) => {
            return Ok(FileResult::Failed(FailureEntry::new(location, e.error_type(), e.to_string())));
        }
    };
    // Fetched files wait compressed until they are near the one being written: parsed, a file
    // takes several times its compressed size, and fetching (not parsing) is what needs a long
    // window ahead. A dropped sender means the reader is gone (and this task with it).
    if parse.await.is_err() {
        return Err(CopyError::State("the copy stopped reading".into()));
    }
    let _parser = budget.parser().await;
    let (parsed, damage, sha256) = tokio::task::spawn_blocking(move || event::read_log_hashed(&bytes, &window, hash))
        .await
        .map_err(|e| CopyError::Storage { location: location.clone(), message: format!("parser task failed: {e}") })?;
    Ok(match damage {
        None => FileResult::Parsed(parsed, None, sha256),
        // A damaged file is a failure entry; the events read before the damage still count.
        Some(fe) => FileResult::Parsed(parsed, Some(FailureEntry::new(location, fe.error_type, fe.message)), sha256),
    })
}

/// A log file listed when the copy was planned and gone when it was read (a lifecycle rule, a
/// delete): one entry naming it; the rest of the item is copied, and `retry` reads it again.
pub fn vanished_entry(location: String) -> FailureEntry {
    FailureEntry::new(
        location,
        "LogFileVanished",
        "listed when the copy was planned, gone when it was read (deleted since, e.g. by a lifecycle rule); \
         `retry` reads it again if it is put back"
            .into(),
    )
}

/// Files fetched ahead of the one being written, as tasks (they go on while the batch commits),
/// in file order; the next few of them (one more than the parsers) are parsed too. Bytes are
/// held in file order, by this one reader, so a later file never holds budget an earlier one
/// waits for. Dropped, it cancels what is ahead.
struct Ahead<'a> {
    ctx: &'a CopyContext,
    budget: &'a FetchBudget,
    files: Arc<[FileToCopy]>,
    /// The file the first result is of.
    start: usize,
    next: usize,
    queue: VecDeque<InFlight>,
}

struct InFlight {
    result: RemoteHandle<Result<FileResult>>,
    /// Sent when the file may be parsed (once it is among the next few to be written).
    parse: Option<oneshot::Sender<()>>,
    held: BytePermit,
}

impl<'a> Ahead<'a> {
    fn new(ctx: &'a CopyContext, budget: &'a FetchBudget, files: Arc<[FileToCopy]>, start: usize) -> Self {
        Ahead { ctx, budget, files, start, next: start, queue: VecDeque::new() }
    }

    fn spawn(&mut self, held: BytePermit) {
        let (parse, parse_rx) = oneshot::channel();
        let hash = self.ctx.request.verification.is_some();
        let file = self.files[self.next].clone();
        let task = read_file(self.ctx.source.clone(), self.ctx.window, self.budget.clone(), file, hash, parse_rx);
        let (task, result) = task.remote_handle();
        tokio::spawn(task);
        self.queue.push_back(InFlight { result, parse: Some(parse), held });
        self.next += 1;
    }

    /// Starts every file the budget allows now, up to a window of `max_requests` files, and
    /// lets the first few parse.
    fn fill(&mut self) {
        while self.next < self.files.len() && self.queue.len() < self.budget.max_requests() {
            match self.budget.try_hold_bytes(self.files[self.next].size) {
                Some(held) => self.spawn(held),
                None => break,
            }
        }
        self.release_parses();
    }

    fn release_parses(&mut self) {
        for f in self.queue.iter_mut().take(self.budget.parsers() + 1) {
            if let Some(go) = f.parse.take() {
                let _ = go.send(());
            }
        }
    }

    /// The next file's result, `None` past the end of the file list.
    async fn next(&mut self) -> Option<(Result<FileResult>, BytePermit)> {
        self.fill();
        if self.queue.is_empty() && self.next < self.files.len() {
            // Nothing of ours is in flight: wait for budget the other items give back.
            let held = self.budget.hold_bytes(self.files[self.next].size).await;
            self.spawn(held);
            self.release_parses();
        }
        let InFlight { result, held, .. } = self.queue.pop_front()?;
        let result = result.await;
        self.fill();
        Some((result, held))
    }
}

/// An item's dedup keys. They are xxh3-128 digests already, so SipHash's strength buys nothing;
/// foldhash (hashbrown's own default) hashes them in a few cycles and still seeds per process.
type SeenKeys = HashSet<u128, foldhash::fast::RandomState>;

/// The dedup keys of the committed batches, read a few at once (a resumed item reads one object
/// per batch; their order does not matter).
async fn load_seen(ctx: &CopyContext, index: &str, batches: u32) -> Result<SeenKeys> {
    let mut reads = futures::stream::iter(0..batches)
        .map(|b| async move { crate::storage::get_opt(ctx.store.as_ref(), &ctx.keys.item_seen(index, b)).await })
        .buffer_unordered(SEEN_READ_CONCURRENCY);
    let mut seen = SeenKeys::default();
    while let Some(bytes) = reads.next().await {
        if let Some(bytes) = bytes? {
            seen.extend(keys_of(&bytes));
        }
    }
    // Events earlier copies stored in this copy's window (their open tails) count as seen.
    if ctx.request.tail_until.is_some() {
        seen.extend(read_keys(ctx, &ctx.keys.tail_seen()).await?);
    }
    Ok(seen)
}

const SEEN_READ_CONCURRENCY: usize = 16;

/// Files fetched while the item is still prepared (the local runner overlaps prepare's HEADs
/// with the first GETs). Only fetched and parsed: [`copy_item_prefetched`] takes them when the
/// prepared file list and cursor are the ones they were started for, and drops them (cancelling
/// what is in flight, giving the budget back) otherwise, so nothing depends on the guess.
pub struct Prefetch<'a>(Ahead<'a>);

impl<'a> Prefetch<'a> {
    /// Starts fetching `files` from the first, as far as the budget allows.
    pub fn start(ctx: &'a CopyContext, budget: &'a FetchBudget, files: Vec<FileToCopy>) -> Prefetch<'a> {
        let mut ahead = Ahead::new(ctx, budget, files.into(), 0);
        ahead.fill();
        Prefetch(ahead)
    }
}

/// Copies batches of a prepared item from its cursor until done, stopped, or past the deadline.
pub async fn copy_item(ctx: &CopyContext, item: &WorkItem, limits: &CopyLimits<'_>) -> Result<CopyOutcome> {
    copy_item_prefetched(ctx, item, limits, None).await
}

/// [`copy_item`], taking over the files a [`Prefetch`] has fetched when they are the ones to copy.
pub async fn copy_item_prefetched<'a>(
    ctx: &'a CopyContext,
    item: &WorkItem,
    limits: &CopyLimits<'a>,
    prefetch: Option<Prefetch<'a>>,
) -> Result<CopyOutcome> {
    // The checkpoint and the file list are independent reads: one round trip.
    let files_key = ctx.keys.item_files(&item.index);
    let (state, files) =
        tokio::join!(load_item_state(ctx, item), read_json::<Vec<FileToCopy>>(ctx.store.as_ref(), &files_key));
    let mut state = state?;
    let mut outcome = CopyOutcome { cursor: state.cursor, ..Default::default() };
    match state.status {
        ItemStatus::Completed => {
            // A crash may have come between the checkpoint and the roll-up: record it (a no-op
            // when the roll-up already has it) and tidy again.
            rollup::record_item(ctx, &state).await?;
            tidy_item(ctx, item, &state).await;
            outcome.done = true;
            return Ok(outcome);
        }
        ItemStatus::Pending | ItemStatus::Restoring | ItemStatus::Failed => {
            return Err(CopyError::State(format!("{} is not ready to copy ({:?})", item.describe(), state.status)));
        }
        ItemStatus::Copying => {}
    }
    // A completed item reopened to re-read its failed files has no file list any more.
    let files: Vec<FileToCopy> = match files? {
        Some(files) => files,
        None if state.repair.is_some_and(|r| r.pending) && state.statistics.work_items_completed > 0 => Vec::new(),
        None => return Err(CopyError::State(format!("{} has no file list", item.describe()))),
    };
    let mut seen = load_seen(ctx, &item.index, state.cursor.batch).await?;
    let digests = match &ctx.request.verification {
        Some(v) => {
            let d = ItemDigests::load(ctx, item, v.require_verified).await?;
            let (lists, gets) = d.requests;
            tracing::info!(item = %item.index, lists, gets, "digests read");
            Some(d)
        }
        None => None,
    };
    let limit = batch_bytes();
    let source_name = ctx.source_location.display();

    // Files are fetched and parsed ahead, across batch boundaries, while earlier ones are
    // written and committed; they are taken in file order, so batches and names are as without.
    // A prefetch of other files is dropped here, before anything waits for the budget it holds.
    let mut ahead = match prefetch.filter(|Prefetch(a)| a.start == state.cursor.next_file && *a.files == *files) {
        Some(Prefetch(a)) => a,
        None => Ahead::new(ctx, limits.budget, files.into(), state.cursor.next_file),
    };
    let files = ahead.files.clone();
    // Set once an item first completes: a completed item reopened to re-read failed files has
    // its digests' end-of-item entries already.
    let completed_before = state.statistics.work_items_completed > 0;
    while state.cursor.next_file < files.len() {
        let start = state.cursor.next_file;
        let end = batch_end(&files, start, limit);
        let batch_no = state.cursor.batch;
        if let Some(max) = limits.max_batch_starts {
            note_batch_start(ctx, item, &mut state, &files[start..end], max).await?;
        }
        let mut batch = Batch::new(ctx);
        let mut cluster: Option<Option<&str>> = None;
        for file in &files[start..end] {
            // Each account-region's rows in row groups of their own (see `pack::sorted`).
            let this = layout::cluster_of(layout::file_name(&file.key));
            if let Some(c) = cluster.filter(|c| *c != this) {
                // Leaving the first hour's files: their row group ends, however small.
                batch.writer.end_cluster(c.is_none())?;
            }
            cluster = Some(this);
            let (result, held) =
                ahead.next().await.ok_or_else(|| CopyError::State("the file list ended early".into()))?;
            if limits.cancel.load(Ordering::Relaxed) {
                outcome.stopped = true;
                drop(ahead);
                rollup::record_item(ctx, &state).await?;
                return Ok(outcome);
            }
            let account = account_file(ctx, file, result?, digests.as_ref(), &mut seen, None, &mut batch.writer)?;
            // The file's bytes are in the batch writer now: they leave the fetch budget.
            drop(held);
            (limits.on_file)(file.size, account.delta.events_completed);
            batch.add(file, account);
        }
        if let Some(n) = *FAIL_AFTER
            && COMMITS.load(Ordering::SeqCst) >= n
        {
            return Err(CopyError::Injected(format!("batch {batch_no} of item {} failed before commit", item.index)));
        }
        let delta = commit_batch(ctx, item, &source_name, batch_no, batch, &mut state).await?;
        state.cursor = Cursor { next_file: end, batch: batch_no + 1 };
        state.batch_starts = None;
        state.status = ItemStatus::Copying;
        state.error = None;
        save_item_state(ctx, &state).await?;
        COMMITS.fetch_add(1, Ordering::SeqCst);
        (limits.on_commit)(&state);
        outcome.cursor = state.cursor;
        outcome.files_completed += delta.files_completed;
        outcome.events_completed += delta.events_completed;
        if limits.deadline.is_some_and(|d| Instant::now() >= d) && state.cursor.next_file < files.len() {
            // The invocation ends here: `status` sees the item's progress in the roll-up.
            rollup::record_item(ctx, &state).await?;
            return Ok(outcome);
        }
    }
    drop(ahead);
    if state.repair.is_some_and(|r| r.pending) {
        reread_failed_files(ctx, item, &source_name, &mut state, digests.as_ref(), &mut seen, limits).await?;
        (limits.on_commit)(&state);
    }
    if let Some(d) = &digests
        && !completed_before
    {
        // Once, with the first completion.
        let (stats, failures, fingerprints) = d.finish(ctx);
        state.statistics += stats;
        state.failures.extend(failures);
        state.key_fingerprints = fingerprints;
    }
    state.status = ItemStatus::Completed;
    state.statistics.prefixes_completed = item.prefixes;
    state.statistics.work_items_completed = 1;
    state.error = None;
    save_item_state(ctx, &state).await?;
    rollup::record_item(ctx, &state).await?;
    (limits.on_commit)(&state);
    tidy_item(ctx, item, &state).await;
    outcome.done = true;
    outcome.cursor = state.cursor;
    Ok(outcome)
}

/// Counts the invocations that started this batch (in the checkpoint, before any work): one that
/// died mid-batch (out of memory, killed) never cleared it. Past `max` the item stops with one entry
/// that says what to change, instead of dying on the same input until the retries run out.
async fn note_batch_start(
    ctx: &CopyContext,
    item: &WorkItem,
    state: &mut ItemState,
    files: &[FileToCopy],
    max: u32,
) -> Result<()> {
    let at = state.cursor;
    let starts = match state.batch_starts {
        Some(b) if b.cursor == at => b.starts + 1,
        _ => 1,
    };
    if starts > max {
        let bytes: u64 = files.iter().map(|f| f.size).sum();
        return Err(CopyError::Blocked(Box::new(FailureEntry::new(
            ctx.source.location(&files[0].key),
            "BatchNeverFinished",
            format!(
                "{}: batch {} ({} files, {:.1} MiB of gzip, from this file on) was started {} times and never \
                 finished: the copy function ran out of memory or was killed (Step Functions: Lambda.Unknown). \
                 Raise the Copy function's MemorySize, or lower TRAILCOPY_BATCH_BYTES, then retry the copy: \
                 it resumes at this batch",
                item.describe(),
                at.batch,
                files.len(),
                bytes as f64 / (1 << 20) as f64,
                starts - 1
            ),
        ))));
    }
    state.batch_starts = Some(BatchStarts { cursor: at, starts });
    save_item_state(ctx, state).await
}

/// What reading one file added: its counts, its failure entries, the dedup keys it stored.
struct FileAccount {
    delta: Statistics,
    failures: Vec<FailureEntry>,
    /// Keys of the events written now (new in the item).
    new_keys: Vec<u128>,
    /// On a re-read: keys of the file's events an earlier attempt stored (not written again).
    stored_before: Vec<u128>,
}

/// Accounts for one file's result: every event read is copied, out of range, invalid, duplicate
/// (or, on a re-read, already stored from this file by an earlier attempt: `stored_before`), and
/// the events to store go to `writer`. Any failure entry makes the file a failed file.
fn account_file(
    ctx: &CopyContext,
    file: &FileToCopy,
    result: FileResult,
    digests: Option<&ItemDigests>,
    seen: &mut SeenKeys,
    stored_before: Option<&SeenKeys>,
    writer: &mut BatchWriter<'_>,
) -> Result<FileAccount> {
    let mut a = FileAccount {
        delta: Statistics { bytes_read: file.size, ..Default::default() },
        failures: Vec::new(),
        new_keys: Vec::new(),
        stored_before: Vec::new(),
    };
    let delta = &mut a.delta;
    let (parsed, damage, sha256) = match result {
        FileResult::Failed(entry) => {
            delta.files_failed += 1;
            a.failures.push(entry);
            return Ok(a);
        }
        FileResult::Parsed(parsed, damage, sha256) => (parsed, damage, sha256),
    };
    let source_log_file = ctx.source.location(&file.key);
    let copy_it = digests.is_none_or(|d| d.check(&file.key, &source_log_file, sha256.as_ref(), delta, &mut a.failures));
    let damaged = damage.is_some();
    if let Some(entry) = damage {
        a.failures.push(entry);
    }
    if damaged || !copy_it {
        delta.files_failed += 1;
    } else {
        delta.files_completed += 1;
    }
    delta.events_read += parsed.events_read;
    if !copy_it {
        // --require-verified: read (to hash it), counted, and not copied.
        delta.files_rejected += 1;
        delta.events_unverified += parsed.events_read;
        return Ok(a);
    }
    delta.events_out_of_range += parsed.events_out_of_range;
    delta.events_invalid += parsed.events_invalid;
    if parsed.events_invalid > 0 {
        let samples: Vec<String> =
            parsed.invalid_samples.iter().map(|(i, why)| format!("Records[{i}]: {why}")).collect();
        a.failures.push(FailureEntry::new(
            source_log_file.clone(),
            "InvalidEvents",
            format!("{} of {} events invalid; {}", parsed.events_invalid, parsed.events_read, samples.join("; ")),
        ));
    }
    for part in parsed.parts {
        let mut already = 0usize;
        let mask: BooleanArray = part
            .keys
            .iter()
            .map(|k| {
                if stored_before.is_some_and(|s| s.contains(k)) {
                    already += 1;
                    a.stored_before.push(*k);
                    Some(false)
                } else {
                    Some(seen.insert(*k))
                }
            })
            .collect();
        let kept = part.keys.iter().zip(mask.values().iter()).filter(|(_, keep)| *keep);
        a.new_keys.extend(kept.map(|(k, _)| *k));
        // Usually nothing is a duplicate: then the batch is written as it is, uncopied.
        let rows = if mask.values().count_set_bits() == part.batch.num_rows() {
            part.batch
        } else {
            arrow_select::filter::filter_record_batch(&part.batch, &mask)
                .map_err(|e| CopyError::Storage { location: "arrow filter".into(), message: e.to_string() })?
        };
        delta.events_duplicate += (part.keys.len() - rows.num_rows() - already) as u64;
        delta.events_completed += (rows.num_rows() + already) as u64;
        if rows.num_rows() > 0 {
            writer.write(part.date, &rows, &source_log_file)?;
        }
    }
    Ok(a)
}

/// One batch's results before its commit.
struct Batch<'a> {
    writer: BatchWriter<'a>,
    delta: Statistics,
    failures: Vec<FailureEntry>,
    new_keys: Vec<u128>,
    /// Files with failure entries, and the keys of the events stored from each.
    failed: Vec<(FailedFile, Vec<u128>)>,
}

impl<'a> Batch<'a> {
    fn new(ctx: &'a CopyContext) -> Self {
        Batch {
            writer: BatchWriter::new(ctx.store.as_ref()),
            delta: Statistics::default(),
            failures: Vec::new(),
            new_keys: Vec::new(),
            failed: Vec::new(),
        }
    }

    fn add(&mut self, file: &FileToCopy, a: FileAccount) {
        self.delta += a.delta;
        if !a.failures.is_empty() {
            // A failed file's stored events (a retry does not store them again).
            let mut stored = a.stored_before;
            stored.extend_from_slice(&a.new_keys);
            let failed = FailedFile {
                key: file.key.clone(),
                size: file.size,
                statistics: a.delta,
                salvaged: stored.len() as u64,
            };
            self.failed.push((failed, stored));
            self.failures.extend(a.failures);
        }
        self.new_keys.extend(a.new_keys);
    }
}

/// Commits a batch in order: data, dedup keys, the failed files' stored keys; then the caller
/// writes the checkpoint. Adds the batch to `state` (not yet saved) and returns its counts.
async fn commit_batch(
    ctx: &CopyContext,
    item: &WorkItem,
    source_name: &str,
    batch_no: u32,
    batch: Batch<'_>,
    state: &mut ItemState,
) -> Result<Statistics> {
    let Batch { writer, mut delta, failures, new_keys, failed } = batch;
    for (date, spool) in writer.finish()? {
        let key = event_file_key(ctx.store_location.prefix(), date, &ctx.window, source_name, item, batch_no);
        ctx.store.put_spool(&key, spool).await?;
    }
    if let Some(n) = *ABORT_AFTER
        && COMMITS.load(Ordering::SeqCst) >= n
    {
        eprintln!("trailcopy: injected crash after writing batch {batch_no} of item {}", item.index);
        std::process::abort();
    }
    ctx.store.put(&ctx.keys.item_seen(&item.index, batch_no), key_bytes(&new_keys).into()).await?;
    for (f, stored) in &failed {
        if !stored.is_empty() {
            ctx.store.put(&ctx.keys.item_salvaged(&item.index, &f.key), key_bytes(stored).into()).await?;
        }
    }
    delta.failed_entries = failures.len() as u64;
    state.statistics += delta;
    state.failures.extend(failures);
    state.failed_files.extend(failed.into_iter().map(|(f, _)| f));
    Ok(delta)
}

/// A retry's re-read of the item's failed files, checked afresh as one more batch: each file's
/// earlier counts and entries are taken back and replaced by the new read's; events an earlier
/// attempt stored from it are not stored again. Committed as a batch is (a crash re-runs it and
/// overwrites the same output); the caller saves the checkpoint.
async fn reread_failed_files(
    ctx: &CopyContext,
    item: &WorkItem,
    source_name: &str,
    state: &mut ItemState,
    digests: Option<&ItemDigests>,
    seen: &mut SeenKeys,
    limits: &CopyLimits<'_>,
) -> Result<()> {
    let Some(mut repair) = state.repair else { return Ok(()) };
    let failed = std::mem::take(&mut state.failed_files);
    let batch_no = state.cursor.batch;
    let mut batch = Batch::new(ctx);
    // Only gzip logs are fetched; a log-like name that is not .json.gz fails again as it is.
    let (fetch, by_name): (Vec<FailedFile>, Vec<FailedFile>) =
        failed.into_iter().partition(|f| layout::is_gzip_log(&f.key));
    for f in fetch.iter().chain(&by_name) {
        let location = ctx.source.location(&f.key);
        state.statistics.subtract(&f.statistics);
        state.failures.retain(|e| e.location != location);
    }
    for f in &by_name {
        let account = FileAccount {
            delta: Statistics { files_failed: 1, ..Default::default() },
            failures: vec![crate::prepare::not_gzip_entry(ctx, &f.key)],
            new_keys: Vec::new(),
            stored_before: Vec::new(),
        };
        batch.add(&FileToCopy { key: f.key.clone(), size: f.size }, account);
    }
    let files: Arc<[FileToCopy]> = fetch.iter().map(|f| FileToCopy { key: f.key.clone(), size: f.size }).collect();
    let mut ahead = Ahead::new(ctx, limits.budget, files.clone(), 0);
    for (f, file) in fetch.iter().zip(files.iter()) {
        let (result, held) = ahead.next().await.ok_or_else(|| CopyError::State("the file list ended early".into()))?;
        let before = match f.salvaged {
            0 => SeenKeys::default(),
            _ => read_keys(ctx, &ctx.keys.item_salvaged(&item.index, &f.key)).await?,
        };
        let account = account_file(ctx, file, result?, digests, seen, Some(&before), &mut batch.writer)?;
        drop(held);
        repair.events_copied += account.new_keys.len() as u64;
        if account.failures.is_empty() {
            repair.files_fixed += 1;
        }
        batch.add(file, account);
    }
    drop(ahead);
    repair.files_reread = (fetch.len() + by_name.len()) as u64;
    let fixed: Vec<String> = fetch
        .iter()
        .filter(|f| f.salvaged > 0 && !batch.failed.iter().any(|(g, _)| g.key == f.key))
        .map(|f| ctx.keys.item_salvaged(&item.index, &f.key))
        .collect();
    commit_batch(ctx, item, source_name, batch_no, batch, state).await?;
    state.cursor.batch = batch_no + 1;
    repair.pending = false;
    state.repair = Some(repair);
    save_item_state(ctx, state).await?;
    for key in fixed {
        if let Err(e) = ctx.store.delete(&key).await {
            tracing::warn!(key = %key, error = %e, "could not remove a fixed file's stored keys");
        }
    }
    Ok(())
}

async fn read_keys(ctx: &CopyContext, key: &str) -> Result<SeenKeys> {
    let bytes = crate::storage::get_opt(ctx.store.as_ref(), key).await?.unwrap_or_default();
    Ok(keys_of(&bytes).collect())
}

/// Dedup keys as stored (`seen-*.bin`, salvaged keys, an open tail's keys): 16 bytes each, little endian.
pub fn key_bytes(keys: &[u128]) -> Vec<u8> {
    keys.iter().flat_map(|k| k.to_le_bytes()).collect()
}

fn keys_of(bytes: &[u8]) -> impl Iterator<Item = u128> + '_ {
    bytes.chunks_exact(16).map(|c| u128::from_le_bytes(c.try_into().unwrap_or([0; 16])))
}

/// A completed item runs again only to re-read failed files: its file lists, and (without failed
/// files) its dedup keys, are only needed to resume, so they go (its checkpoint, with statistics
/// and failures, stays). Best effort: an object left by a crash here is only clutter.
async fn tidy_item(ctx: &CopyContext, item: &WorkItem, state: &ItemState) {
    let seen = if state.failed_files.is_empty() { state.cursor.batch } else { 0 };
    let keys = [ctx.keys.item_listing(&item.index), ctx.keys.item_files(&item.index)]
        .into_iter()
        .chain((0..seen).map(|b| ctx.keys.item_seen(&item.index, b)));
    let deletes = futures::stream::iter(keys)
        .map(|k| async move {
            if let Err(e) = ctx.store.delete(&k).await {
                tracing::warn!(key = %k, error = %e, "could not remove a resume-only object");
            }
        })
        .buffer_unordered(16);
    deletes.collect::<Vec<()>>().await;
}

/// Records an error that stopped an item; it resumes from its cursor on retry.
pub async fn fail_item(ctx: &CopyContext, item: &WorkItem, error: &CopyError) -> Result<ItemState> {
    let mut state = load_item_state(ctx, item).await?;
    if state.status != ItemStatus::Failed {
        state.resume_status = Some(state.status);
    }
    state.status = ItemStatus::Failed;
    state.error = Some(match error {
        CopyError::Blocked(entry) => (**entry).clone(),
        _ => FailureEntry::new(
            ctx.source.location(&item.first),
            if error.is_retryable() { "Retryable" } else { "WorkItemFailed" },
            format!("{}: {error}", item.describe()),
        ),
    });
    save_item_state(ctx, &state).await?;
    rollup::record_item(ctx, &state).await?;
    Ok(state)
}
