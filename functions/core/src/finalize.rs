//! Roll the items' checkpoints up into the copy record and its failure list.

use futures::{StreamExt, TryStreamExt};

use crate::error::{CopyError, Result};
use crate::plan::CopyContext;
use crate::prepare::load_item_state;
use crate::record::{CopyRecord, CopyStatus, FailureEntry, ItemState, ItemStatus, Statistics, write_json};

const READ_CONCURRENCY: usize = 32;

/// Everything the items report, summed.
pub struct Rollup {
    pub statistics: Statistics,
    pub failures: Vec<FailureEntry>,
    pub all_completed: bool,
}

pub async fn read_item_states(ctx: &CopyContext) -> Result<Vec<ItemState>> {
    let items = ctx.work_items().await?;
    futures::stream::iter(items)
        .map(|item| async move { load_item_state(ctx, &item).await })
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await
}

pub fn rollup(states: &[ItemState]) -> Rollup {
    let mut statistics = Statistics::default();
    let mut failures = Vec::new();
    for s in states {
        statistics += s.statistics;
        failures.extend(s.failures.iter().cloned());
        if s.status != ItemStatus::Completed {
            // One entry per blocking cause (e.g. a disabled KMS key shared by many prefixes).
            if let Some(e) = &s.error
                && failures.iter().any(|f: &FailureEntry| f.location == e.location && f.error_type == e.error_type)
            {
                continue;
            }
            failures.push(s.error.clone().unwrap_or_else(|| {
                FailureEntry::new(
                    s.prefix.clone(),
                    "WorkItemFailed",
                    format!("work item {} did not complete (last status {:?}); retry resumes it", s.index, s.status),
                )
            }));
        }
    }
    statistics.prefixes_found = states.len() as u64;
    statistics.prefixes_completed = states.iter().filter(|s| s.status == ItemStatus::Completed).count() as u64;
    statistics.failed_entries = failures.len() as u64;
    let all_completed = states.iter().all(|s| s.status == ItemStatus::Completed);
    Rollup { statistics, failures, all_completed }
}

/// Final status: COMPLETED only when every item completed without a failure entry.
pub async fn finalize_copy(ctx: &CopyContext, stopped: bool, message: Option<String>) -> Result<CopyRecord> {
    let mut record = ctx.read_record().await?;
    let states = match ctx.work_items().await {
        Ok(_) => read_item_states(ctx).await?,
        Err(CopyError::State(_)) if stopped => Vec::new(),
        Err(e) => return Err(e),
    };
    let r = rollup(&states);
    write_json(ctx.store.as_ref(), &ctx.keys.failures(), &r.failures).await?;
    record.statistics = r.statistics;
    record.status = if stopped {
        CopyStatus::Stopped
    } else if r.all_completed && r.failures.is_empty() {
        CopyStatus::Completed
    } else {
        CopyStatus::Failed
    };
    let retry = crate::plan::retry_command(&ctx.copy_id, &ctx.store_location.display());
    let s = &r.statistics;
    record.message = message.or_else(|| match record.status {
        CopyStatus::Failed if !r.all_completed => Some(format!(
            "{} of {} did not complete; resume with `{retry}`",
            s.prefixes_found - s.prefixes_completed,
            count(s.prefixes_found, "prefix", "prefixes"),
        )),
        CopyStatus::Failed => {
            Some(format!("finished with {}", count(r.failures.len() as u64, "failure entry", "failure entries")))
        }
        CopyStatus::Stopped => Some(format!("stopped; resume with `{retry}`")),
        // Nothing to copy is a legitimate result, but one a user should not mistake for a copy.
        CopyStatus::Completed if s.prefixes_found == 0 => Some(format!(
            "nothing to copy: no CloudTrail day folders for {} .. {} under {}",
            ctx.request.start, ctx.request.end, ctx.request.source
        )),
        CopyStatus::Completed if s.events_read == 0 => Some(format!(
            "nothing to copy: no log files for {} .. {} in {}",
            ctx.request.start,
            ctx.request.end,
            count(s.prefixes_found, "day folder", "day folders")
        )),
        _ => None,
    });
    record.touch();
    ctx.write_record(&record).await?;
    Ok(record)
}

/// `1 prefix`, `2 prefixes`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Ends a copy whose run failed as a whole (the Distributed Map, its ItemReader or ResultWriter,
/// a tolerated-failure threshold): FAILED, with one failure entry for the run's error besides the
/// items' entries, whatever the items say, even when the work items cannot be read. So a record
/// never stays IN_PROGRESS after its execution ended.
pub async fn finalize_failed_run(ctx: &CopyContext, failure: FailureEntry) -> Result<CopyRecord> {
    let mut record = ctx.read_record().await?;
    let states = read_item_states(ctx).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the work items cannot be read; finalizing without them");
        Vec::new()
    });
    let mut r = rollup(&states);
    r.failures.push(failure.clone());
    r.statistics.failed_entries = r.failures.len() as u64;
    if states.is_empty() {
        r.statistics.prefixes_found = record.statistics.prefixes_found;
    }
    write_json(ctx.store.as_ref(), &ctx.keys.failures(), &r.failures).await?;
    record.statistics = r.statistics;
    record.status = CopyStatus::Failed;
    record.message = Some(format!(
        "{}: {}; completed items stay completed: resume with `{}`",
        failure.error_type,
        failure.error_message,
        crate::plan::retry_command(&ctx.copy_id, &ctx.store_location.display())
    ));
    record.touch();
    ctx.write_record(&record).await?;
    Ok(record)
}

/// The record with live statistics while a copy runs (items checkpoint faster than the record).
pub async fn current_record(ctx: &CopyContext) -> Result<CopyRecord> {
    let mut record = ctx.read_record().await?;
    if record.status == CopyStatus::InProgress
        && let Ok(states) = read_item_states(ctx).await
    {
        record.statistics = rollup(&states).statistics;
    }
    Ok(record)
}

pub async fn read_failures(ctx: &CopyContext) -> Result<Vec<FailureEntry>> {
    let record = ctx.read_record().await?;
    if record.status == CopyStatus::InProgress || record.status == CopyStatus::Initializing {
        return Ok(rollup(&read_item_states(ctx).await.unwrap_or_default()).failures);
    }
    Ok(crate::record::read_json(ctx.store.as_ref(), &ctx.keys.failures()).await?.unwrap_or_default())
}
