//! Prepare a work item: read its file list (frozen at plan time), keep the gzip logs in scope,
//! check storage classes, and restore archived objects. Run again, it polls the restores until
//! all are readable.

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{CopyError, Result};
use crate::kms::check_key;
use crate::layout;
use crate::plan::CopyContext;
use crate::record::{
    FailedFile, FailureEntry, FileToCopy, ItemState, ItemStatus, Statistics, WorkItem, read_json, write_json,
    write_json_compact,
};
use crate::rollup;
use crate::storage::ObjectInfo;
use crate::storage_class::{Readability, check_tier, classify, default_max_wait, needs_head};

/// What the state machine (or the local runner) needs to decide whether to wait.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrepareOutcome {
    pub pending_restores: u64,
    pub files_found: u64,
    pub restore_wait_exceeded: bool,
    /// How long to wait before asking again: as long as the restores have taken so far (at least
    /// the poll interval, at most [`MAX_POLL_SECONDS`]), so an item's wait costs a few polls
    /// (state transitions) however long the archive tier takes.
    pub wait_seconds: u64,
}

/// The longest wait between two restore polls.
pub const MAX_POLL_SECONDS: u64 = 4 * 3600;

const HEAD_CONCURRENCY: usize = 16;

pub async fn load_item_state(ctx: &CopyContext, item: &WorkItem) -> Result<ItemState> {
    Ok(read_json(ctx.store.as_ref(), &ctx.keys.item_state(&item.index)).await?.unwrap_or_else(|| ItemState::new(item)))
}

pub async fn save_item_state(ctx: &CopyContext, state: &ItemState) -> Result<()> {
    write_json(ctx.store.as_ref(), &ctx.keys.item_state(&state.index), state).await
}

pub async fn prepare_item(ctx: &CopyContext, item: &WorkItem) -> Result<PrepareOutcome> {
    let mut state = load_item_state(ctx, item).await?;
    match state.status {
        ItemStatus::Pending => list_and_classify(ctx, item, &mut state).await?,
        ItemStatus::Restoring => poll_restores(ctx, &mut state).await?,
        ItemStatus::Copying | ItemStatus::Completed | ItemStatus::Failed => {}
    }
    let pending = state.statistics.restores_pending;
    let restore = &ctx.request.restore;
    let max_wait =
        restore.max_wait_seconds.or(state.restore_max_wait_seconds).unwrap_or_else(|| restore.max_wait_limit());
    let exceeded = pending > 0
        && state.restore_started_time.is_some_and(|t| Timestamp::now().duration_since(t).as_secs() as u64 > max_wait);
    if exceeded {
        return Err(CopyError::Blocked(Box::new(FailureEntry::new(
            ctx.source.location(&item.first),
            "RestoreTimeout",
            format!(
                "{}: {pending} archived objects were still restoring after {max_wait} s (the maximum wait); \
                 retry the copy later: it resumes waiting",
                item.describe()
            ),
        ))));
    }
    let poll = ctx.request.restore.poll_seconds.max(1);
    let waited = state.restore_started_time.map_or(0, |t| Timestamp::now().duration_since(t).as_secs().max(0) as u64);
    let left = max_wait.saturating_sub(waited).max(poll);
    Ok(PrepareOutcome {
        pending_restores: pending,
        files_found: state.statistics.files_found,
        restore_wait_exceeded: exceeded,
        wait_seconds: waited.clamp(poll, MAX_POLL_SECONDS.max(poll)).min(left),
    })
}

/// What prepare does with a listed key, before any request.
enum Scope {
    Candidate,
    /// Not named like a log file (`.DS_Store`, `notes.txt`): skipped and listed.
    NotALogFile,
    /// Named like a log file, but not `.json.gz`: a failure (only gzip logs are read).
    NotGzip,
    /// Its file name's timestamp lies outside the window: skipped.
    OutOfRange,
}

fn scope(ctx: &CopyContext, key: &str) -> Scope {
    if !layout::is_log_file_name(layout::file_name(key)) {
        return Scope::NotALogFile;
    }
    if !layout::is_gzip_log(key) {
        return Scope::NotGzip;
    }
    match layout::file_timestamp(layout::file_name(key)) {
        Some(t) if !ctx.window.file_in_scope(t) => Scope::OutOfRange,
        _ => Scope::Candidate,
    }
}

/// The files a PENDING item's prepare will most likely keep, known before its requests: the
/// in-scope gzip logs of the frozen listing, when the listing shows each one readable (no
/// Intelligent-Tiering or archived class, which need a HEAD or a restore). `None` otherwise, or
/// when the item is past PENDING. A guess for fetching ahead, never the file list itself.
pub async fn expected_files(ctx: &CopyContext, item: &WorkItem) -> Result<Option<Vec<FileToCopy>>> {
    if load_item_state(ctx, item).await?.status != ItemStatus::Pending {
        return Ok(None);
    }
    let Some(listing) = read_json::<Vec<ObjectInfo>>(ctx.store.as_ref(), &ctx.keys.item_listing(&item.index)).await?
    else {
        return Ok(None);
    };
    let mut files = Vec::new();
    for o in listing {
        if !matches!(scope(ctx, &o.key), Scope::Candidate) {
            continue;
        }
        let class = o.storage_class.as_deref();
        if needs_head(class) || classify(class, None, None) != Readability::Readable {
            return Ok(None);
        }
        files.push(FileToCopy { key: o.key, size: o.size });
    }
    Ok(Some(files))
}

async fn list_and_classify(ctx: &CopyContext, item: &WorkItem, state: &mut ItemState) -> Result<()> {
    let listing: Vec<ObjectInfo> = read_json(ctx.store.as_ref(), &ctx.keys.item_listing(&item.index))
        .await?
        .ok_or_else(|| CopyError::State(format!("{} has no frozen file list", item.describe())))?;
    // Every failure entry made here is one file's.
    let entries_before = state.failures.len();
    let tier = ctx.request.restore.tier.clone();
    let mut files = Vec::new();
    let mut to_restore: Vec<(ObjectInfo, bool)> = Vec::new();
    let mut failed_by_name: Vec<(String, u64)> = Vec::new();
    let stats = &mut state.statistics;
    stats.files_found = listing.len() as u64;
    stats.prefixes_found = item.prefixes;
    stats.work_items_found = 1;
    let candidates: Vec<ObjectInfo> = listing
        .into_iter()
        .filter(|o| match scope(ctx, &o.key) {
            Scope::Candidate => true,
            Scope::NotALogFile => {
                stats.files_skipped += 1;
                stats.files_not_log_files += 1;
                state.skipped.push(FailureEntry::skipped(
                    ctx.source.location(&o.key),
                    "NotALogFile",
                    format!(
                        "`{}` is not named like a CloudTrail log file \
                         (AccountID_CloudTrail_RegionName_YYYYMMDDTHHmmZ_UniqueString.json.gz): skipped",
                        layout::file_name(&o.key)
                    ),
                ));
                false
            }
            Scope::NotGzip => {
                state.failures.push(not_gzip_entry(ctx, &o.key));
                failed_by_name.push((o.key.clone(), o.size));
                false
            }
            Scope::OutOfRange => {
                stats.files_skipped += 1;
                false
            }
        })
        .collect();
    // HeadObject only where the listing cannot tell (Intelligent-Tiering, archived classes).
    // The first file of each trail in the item is always headed: a sample of its SSE-KMS key
    // (one trail, one key; an organization and an account trail may have two).
    let mut trails = std::collections::BTreeSet::new();
    let sampled: Vec<bool> = candidates.iter().map(|o| trails.insert(layout::trail_of_key(&o.key))).collect();
    let tier_ref = tier.as_str();
    // A file deleted since planning has no head: `None`, one entry for it (the item goes on).
    let heads: Vec<(ObjectInfo, Option<Readability>, Option<String>, u64)> =
        futures::stream::iter(candidates.into_iter().zip(sampled))
            .map(|(o, sample)| async move {
                if !sample && !needs_head(o.storage_class.as_deref()) {
                    let r = classify(o.storage_class.as_deref(), None, None);
                    return Ok::<_, CopyError>((o, Some(r), None, 0));
                }
                let h = match ctx.source.head(&o.key).await {
                    Ok(h) => h,
                    Err(CopyError::NotFound { .. }) => return Ok((o, None, None, 0)),
                    Err(e) => return Err(e),
                };
                let class = h.storage_class.or_else(|| o.storage_class.clone());
                let r = classify(class.as_deref(), h.archive_status.as_deref(), h.restore.as_deref());
                let wait = match r {
                    Readability::Restoring | Readability::NeedsRestore { .. } => {
                        default_max_wait(tier_ref, class.as_deref(), h.archive_status.as_deref())
                    }
                    _ => 0,
                };
                Ok((o, Some(r), h.kms_key_id, wait))
            })
            .buffered(HEAD_CONCURRENCY)
            .try_collect()
            .await?;
    check_keys(ctx, heads.iter().filter_map(|(_, _, k, _)| k.as_deref())).await?;
    let mut restoring = Vec::new();
    let mut max_wait = 0;
    let mut failed_here = failed_by_name;
    for (o, readability, _, wait) in heads {
        let entries = state.failures.len();
        let (key, size) = (o.key.clone(), o.size);
        let Some(readability) = readability else {
            state.failures.push(crate::copy::vanished_entry(ctx.source.location(&o.key)));
            failed_here.push((key, size));
            continue;
        };
        match readability {
            Readability::Readable => files.push(FileToCopy { key: o.key, size: o.size }),
            Readability::Restoring => {
                max_wait = max_wait.max(wait);
                restoring.push(o.key.clone());
                files.push(FileToCopy { key: o.key, size: o.size });
            }
            Readability::NeedsRestore { with_days } => {
                if tier == "None" {
                    state.failures.push(FailureEntry::new(
                        ctx.source.location(&o.key),
                        "ArchivedObject",
                        format!(
                            "stored as {}; restore it first (aws s3api restore-object --bucket ... --key ... \
                             --restore-request Days=7,GlacierJobParameters={{Tier=Bulk}}) or copy with --restore bulk",
                            o.storage_class.as_deref().unwrap_or("an archive tier")
                        ),
                    ));
                } else if let Err(e) = check_tier(&tier, o.storage_class.as_deref()) {
                    state.failures.push(FailureEntry::new(ctx.source.location(&o.key), "RestoreTierInvalid", e));
                } else {
                    max_wait = max_wait.max(wait);
                    files.push(FileToCopy { key: o.key.clone(), size: o.size });
                    to_restore.push((o, with_days));
                }
            }
            Readability::Unreadable(class) => state.failures.push(FailureEntry::new(
                ctx.source.location(&o.key),
                "UnsupportedStorageClass",
                format!("storage class {class} cannot be read by trailcopy"),
            )),
        }
        if state.failures.len() > entries {
            failed_here.push((key, size));
        }
    }
    // Files failed before any read: a retry checks them again.
    state.failed_files.extend(failed_here.into_iter().map(|(key, size)| FailedFile {
        key,
        size,
        statistics: Statistics { files_failed: 1, ..Default::default() },
        salvaged: 0,
    }));
    let days = ctx.request.restore.days;
    let started: Vec<String> = futures::stream::iter(to_restore)
        .map(|(o, with_days)| {
            let tier = tier.clone();
            async move { ctx.source.restore(&o.key, &tier, with_days.then_some(days)).await.map(|()| o.key) }
        })
        .buffered(HEAD_CONCURRENCY)
        .try_collect()
        .await?;
    state.statistics.restores_started = started.len() as u64;
    state.statistics.files_failed = (state.failures.len() - entries_before) as u64;
    state.statistics.bytes_to_read = files.iter().map(|f| f.size).sum();
    restoring.extend(started);
    state.statistics.restores_pending = restoring.len() as u64;
    state.restoring = restoring;
    state.restore_max_wait_seconds = (max_wait > 0).then_some(max_wait);
    write_json_compact(ctx.store.as_ref(), &ctx.keys.item_files(&state.index), &files).await?;
    if state.statistics.restores_pending > 0 {
        state.status = ItemStatus::Restoring;
        state.restore_started_time = Some(Timestamp::now());
    } else {
        state.status = ItemStatus::Copying;
    }
    save_item_state(ctx, state).await?;
    rollup::record_item(ctx, state).await
}

/// The entry of a file named like a log file that is not `.json.gz`.
pub fn not_gzip_entry(ctx: &CopyContext, key: &str) -> FailureEntry {
    FailureEntry::new(
        ctx.source.location(key),
        "UnsupportedFileType",
        format!("`{}` is not a gzipped CloudTrail log file (.json.gz); only those are read", layout::file_name(key)),
    )
}

/// A key that cannot decrypt blocks the whole item with one entry naming the key.
async fn check_keys<'a>(ctx: &CopyContext, keys: impl Iterator<Item = &'a str>) -> Result<()> {
    let distinct: std::collections::BTreeSet<&str> = keys.collect();
    for key in distinct {
        if let Some(entry) = check_key(ctx.kms.as_ref(), key).await? {
            return Err(CopyError::Blocked(Box::new(entry)));
        }
    }
    Ok(())
}

/// HEADs only the objects still being restored (not every file of the item).
async fn poll_restores(ctx: &CopyContext, state: &mut ItemState) -> Result<()> {
    let mut keys = std::mem::take(&mut state.restoring);
    if keys.is_empty() && state.statistics.restores_pending > 0 {
        // A checkpoint written before pending objects were listed: ask about every file once.
        let files: Vec<FileToCopy> = read_json(ctx.store.as_ref(), &ctx.keys.item_files(&state.index))
            .await?
            .ok_or_else(|| CopyError::State(format!("work item {} has no file list", state.index)))?;
        keys = files.into_iter().map(|f| f.key).collect();
    }
    let pending: Vec<(String, bool)> = futures::stream::iter(keys)
        .map(|key| async move {
            // Deleted while restoring: not waited for; the copy step records it as vanished.
            let h = match ctx.source.head(&key).await {
                Ok(h) => h,
                Err(CopyError::NotFound { .. }) => return Ok((key, false)),
                Err(e) => return Err(e),
            };
            let r = classify(h.storage_class.as_deref(), h.archive_status.as_deref(), h.restore.as_deref());
            Ok::<_, CopyError>((key, matches!(r, Readability::Restoring | Readability::NeedsRestore { .. })))
        })
        .buffered(HEAD_CONCURRENCY)
        .try_collect()
        .await?;
    state.restoring = pending.into_iter().filter_map(|(k, still)| still.then_some(k)).collect();
    let still = state.restoring.len() as u64;
    let s = &mut state.statistics;
    s.restores_finished = (s.restores_pending + s.restores_finished).saturating_sub(still);
    s.restores_pending = still;
    if still == 0 {
        state.status = ItemStatus::Copying;
    }
    save_item_state(ctx, state).await?;
    rollup::record_item(ctx, state).await
}
