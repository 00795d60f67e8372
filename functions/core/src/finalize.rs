//! Roll the items' summaries (rollup.rs shards) up into the copy record and its failure list:
//! a bounded number of reads, whatever the number of items.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::digest::item::DIGEST_ERROR_TYPES;
use crate::error::{CopyError, Result};
use crate::plan::CopyContext;
use crate::record::{
    CopyRecord, CopyStatus, FailureEntry, ItemStatus, Repair, Statistics, VerificationSummary, WorkItem, write_json,
};
use crate::rollup::{ItemSummary, read_summaries};

/// Everything the items report, summed.
pub struct Rollup {
    pub statistics: Statistics,
    pub failures: Vec<FailureEntry>,
    /// Files skipped by name (not log files), listed apart from the failures.
    pub skipped: Vec<FailureEntry>,
    pub all_completed: bool,
    /// Fingerprints of the keys that verified the items' digests.
    pub key_fingerprints: BTreeSet<String>,
    /// What the items' latest re-reads did, per attempt.
    pub repairs: BTreeMap<u32, Repair>,
    /// Items that never started (a stopped copy).
    pub not_started: u64,
}

/// Sums the summaries of `items`; an item without a completed summary is a failure entry, unless
/// the copy was `stopped` (then it is not started, or stopped, and a retry resumes it).
pub fn rollup(items: &[WorkItem], summaries: &BTreeMap<String, ItemSummary>, stopped: bool) -> Rollup {
    let mut statistics = Statistics::default();
    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    let mut repairs: BTreeMap<u32, Repair> = BTreeMap::new();
    let mut not_started = 0;
    let mut completed = 0;
    let mut key_fingerprints = BTreeSet::new();
    // A digest next to two items' days is checked by both: its entry is kept once.
    let mut digest_entries = HashSet::new();
    for item in items {
        let s = summaries.get(&item.index);
        if let Some(s) = s {
            statistics += s.statistics;
            skipped.extend(s.skipped.iter().cloned());
            if let Some(r) = s.repair {
                let sum = repairs.entry(r.attempt).or_insert(Repair { attempt: r.attempt, ..Default::default() });
                sum.files_reread += r.files_reread;
                sum.files_fixed += r.files_fixed;
                sum.events_copied += r.events_copied;
                sum.pending |= r.pending;
            }
            key_fingerprints.extend(s.key_fingerprints.iter().cloned());
            failures.extend(
                s.failures
                    .iter()
                    .filter(|f| {
                        !DIGEST_ERROR_TYPES.contains(&f.error_type.as_str())
                            || digest_entries.insert((f.location.clone(), f.error_type.clone()))
                    })
                    .cloned(),
            );
        }
        if s.is_some_and(|s| s.status == ItemStatus::Completed) {
            completed += 1;
            continue;
        }
        let error = s.and_then(|s| s.error.clone());
        if s.is_none_or(|s| s.status == ItemStatus::Pending) && error.is_none() {
            not_started += 1;
        }
        if stopped && error.is_none() {
            continue;
        }
        // One entry per blocking cause (e.g. a disabled KMS key shared by many items).
        if let Some(e) = &error
            && failures.iter().any(|f: &FailureEntry| f.location == e.location && f.error_type == e.error_type)
        {
            continue;
        }
        failures.push(error.unwrap_or_else(|| {
            FailureEntry::new(
                item.first.clone(),
                "WorkItemFailed",
                format!(
                    "{} did not complete (last status {}); retry resumes it",
                    item.describe(),
                    s.map_or("PENDING".to_string(), |s| format!("{:?}", s.status).to_uppercase())
                ),
            )
        }));
    }
    statistics.prefixes_found = items.iter().map(|i| i.prefixes).sum();
    statistics.prefixes_completed = items
        .iter()
        .filter(|i| summaries.get(&i.index).is_some_and(|s| s.status == ItemStatus::Completed))
        .map(|i| i.prefixes)
        .sum();
    statistics.work_items_found = items.len() as u64;
    statistics.work_items_completed = completed;
    statistics.failed_entries = failures.len() as u64;
    Rollup {
        statistics,
        failures,
        skipped,
        all_completed: completed == items.len() as u64,
        key_fingerprints,
        repairs,
        not_started,
    }
}

/// The work items and the shards are read at once (independent reads: one round trip, not two).
async fn read_rollup(ctx: &CopyContext, stopped: bool) -> Result<Rollup> {
    let (items, summaries) = tokio::try_join!(ctx.work_items(), read_summaries(ctx))?;
    Ok(rollup(&items, &summaries, stopped))
}

/// Final status: COMPLETED only when every item completed without a failure entry.
pub async fn finalize_copy(ctx: &CopyContext, stopped: bool, message: Option<String>) -> Result<CopyRecord> {
    let (record, rolled) = tokio::join!(ctx.read_record(), read_rollup(ctx, stopped));
    let mut record = record?;
    let r = match rolled {
        Ok(r) => r,
        Err(CopyError::State(_)) if stopped => rollup(&[], &BTreeMap::new(), true),
        Err(e) => return Err(e),
    };
    write_failures(ctx, &r).await?;
    record.statistics = r.statistics;
    record.verification = verification_summary(ctx, &r);
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
            "{} of {} ({} of {}) did not complete; resume with `{retry}`",
            s.work_items_found - s.work_items_completed,
            count(s.work_items_found, "work item", "work items"),
            s.prefixes_found - s.prefixes_completed,
            count(s.prefixes_found, "day prefix", "day prefixes"),
        )),
        CopyStatus::Failed => {
            Some(format!("finished with {}", count(r.failures.len() as u64, "failure entry", "failure entries")))
        }
        CopyStatus::Stopped if r.not_started > 0 => Some(format!(
            "stopped: {} of {} not started; resume with `{retry}`",
            r.not_started,
            count(s.work_items_found, "work item", "work items"),
        )),
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
    end_attempt(&mut record, &r);
    record.touch();
    ctx.write_record(&record).await?;
    release_claim(ctx).await;
    Ok(record)
}

/// The failure list and the skipped list, as `failures` shows them.
async fn write_failures(ctx: &CopyContext, r: &Rollup) -> Result<()> {
    write_json(ctx.store.as_ref(), &ctx.keys.failures(), &r.failures).await?;
    write_json(ctx.store.as_ref(), &ctx.keys.skipped(), &r.skipped).await
}

/// Records how the current attempt ended, with what its re-reads did.
fn end_attempt(record: &mut CopyRecord, r: &Rollup) {
    let status = record.status;
    let failed_entries = r.failures.len() as u64;
    if let Some(a) = record.attempts.last_mut() {
        if let Some(repair) = r.repairs.get(&a.number) {
            a.files_reread = repair.files_reread;
            a.files_fixed = repair.files_fixed;
            a.events_copied = repair.events_copied;
        }
        a.finished_time = Some(jiff::Timestamp::now().max(a.started_time));
        a.status = Some(status);
        a.failed_entries = failed_entries;
    }
}

/// The copy is no longer running: its claim goes (best effort: a claim left behind is taken
/// over by `retry`, or shown as not running).
async fn release_claim(ctx: &CopyContext) {
    if let Err(e) = crate::claims::release(ctx.store.as_ref(), ctx.store_location.prefix(), &ctx.copy_id).await {
        tracing::warn!(error = %e, "could not release the copy's claim");
    }
}

/// What the record says of a verifying copy: verified only if every item completed, every file
/// read is in an authentic digest with its hash, nothing a digest lists is missing, and no digest
/// failed its check.
fn verification_summary(ctx: &CopyContext, r: &Rollup) -> Option<VerificationSummary> {
    let v = ctx.request.verification.as_ref()?;
    let s = &r.statistics;
    let doubts = s.files_not_in_digest + s.files_unverified + s.files_mismatched + s.log_files_missing;
    let digest_failures = r.failures.iter().any(|f| DIGEST_ERROR_TYPES.contains(&f.error_type.as_str()));
    Some(VerificationSummary {
        verified: r.all_completed && doubts == 0 && s.digests_failed == 0 && !digest_failures,
        require_verified: v.require_verified,
        public_keys: ctx.digest_keys.as_ref().map_or_else(String::new, |k| k.describe()),
        key_fingerprints: r.key_fingerprints.iter().cloned().collect(),
    })
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
    let (record, rolled) = tokio::join!(ctx.read_record(), read_rollup(ctx, false));
    let mut record = record?;
    let mut r = rolled.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the work items cannot be read; finalizing without them");
        let mut r = rollup(&[], &BTreeMap::new(), false);
        r.statistics.prefixes_found = record.statistics.prefixes_found;
        r
    });
    r.failures.push(failure.clone());
    r.statistics.failed_entries = r.failures.len() as u64;
    write_failures(ctx, &r).await?;
    record.statistics = r.statistics;
    record.verification = verification_summary(ctx, &r);
    record.status = CopyStatus::Failed;
    record.message = Some(format!(
        "{}: {}; completed items stay completed: resume with `{}`",
        failure.error_type,
        failure.error_message,
        crate::plan::retry_command(&ctx.copy_id, &ctx.store_location.display())
    ));
    end_attempt(&mut record, &r);
    record.touch();
    ctx.write_record(&record).await?;
    release_claim(ctx).await;
    Ok(record)
}

/// How a state machine execution ended, as Step Functions' "Execution Status Change" event says
/// (https://docs.aws.amazon.com/step-functions/latest/dg/eventbridge-integration.html).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedExecution {
    pub execution_arn: String,
    /// FAILED, TIMED_OUT or ABORTED.
    pub status: String,
    pub error: Option<String>,
    pub cause: Option<String>,
}

/// Finalizes the copy of an execution that ended without reaching Finalize (a console Stop,
/// a timeout, an error no Catch takes: States.Runtime, States.DataLimitExceeded): STOPPED for an
/// ABORTED execution, FAILED with an entry naming the end otherwise. Idempotent with a normal
/// Finalize: a copy already final, or run by a later execution (a retry), is left as it is
/// (`None`).
pub async fn finalize_ended_execution(ctx: &CopyContext, end: &EndedExecution) -> Result<Option<CopyRecord>> {
    let record = ctx.read_record().await?;
    if !matches!(record.status, CopyStatus::InProgress | CopyStatus::Initializing) {
        return Ok(None);
    }
    // The copy's latest execution, or the one its claim names (a claim is taken before the record
    // names the execution that took it).
    let holder = crate::claims::Holder::Execution { execution: end.execution_arn.clone() };
    let ours = record.executions.last() == Some(&end.execution_arn)
        || crate::claims::claim_of(ctx.store.as_ref(), ctx.store_location.prefix(), &ctx.copy_id)
            .await?
            .is_some_and(|c| c.holder == holder);
    if !ours {
        return Ok(None);
    }
    let retry = match crate::serverless::state_machine_of(&end.execution_arn) {
        Some(sm) => {
            format!("{} --state-machine {sm}", crate::plan::retry_command(&ctx.copy_id, &ctx.store_location.display()))
        }
        None => crate::plan::retry_command(&ctx.copy_id, &ctx.store_location.display()),
    };
    let why = [end.error.as_deref(), end.cause.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(": ");
    let record = if end.status == "ABORTED" {
        let note = format!(
            "stopped: execution {} was stopped (Step Functions console or StopExecution){}; resume with `{retry}`",
            end.execution_arn,
            if why.is_empty() { String::new() } else { format!(" ({why})") }
        );
        finalize_copy(ctx, true, Some(note)).await?
    } else {
        let (error_type, what) = match end.status.as_str() {
            "TIMED_OUT" => ("ExecutionTimedOut", "timed out"),
            _ => ("ExecutionFailed", "failed before Finalize"),
        };
        let entry = FailureEntry::new(
            end.execution_arn.clone(),
            error_type,
            format!("execution {what}{}", if why.is_empty() { String::new() } else { format!(": {why}") }),
        );
        finalize_failed_run(ctx, entry).await?
    };
    Ok(Some(record))
}

/// The record with live statistics while a copy runs (items report faster than the record); items
/// still running are not failures yet.
pub async fn current_record(ctx: &CopyContext) -> Result<CopyRecord> {
    let mut record = ctx.read_record().await?;
    if record.status == CopyStatus::InProgress
        && let Ok(r) = read_rollup(ctx, true).await
    {
        record.statistics = r.statistics;
        record.verification = verification_summary(ctx, &r);
    }
    Ok(record)
}

pub async fn read_failures(ctx: &CopyContext) -> Result<Vec<FailureEntry>> {
    Ok(read_failures_and_skipped(ctx).await?.0)
}

/// The failure entries and the files skipped by name.
pub async fn read_failures_and_skipped(ctx: &CopyContext) -> Result<(Vec<FailureEntry>, Vec<FailureEntry>)> {
    let record = ctx.read_record().await?;
    if record.status == CopyStatus::InProgress || record.status == CopyStatus::Initializing {
        return Ok(read_rollup(ctx, true).await.map(|r| (r.failures, r.skipped)).unwrap_or_default());
    }
    let (failures_key, skipped_key) = (ctx.keys.failures(), ctx.keys.skipped());
    let (failures, skipped) = tokio::try_join!(
        crate::record::read_json::<Vec<FailureEntry>>(ctx.store.as_ref(), &failures_key),
        crate::record::read_json::<Vec<FailureEntry>>(ctx.store.as_ref(), &skipped_key)
    )?;
    Ok((failures.unwrap_or_default(), skipped.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(index: &str) -> WorkItem {
        WorkItem {
            copy_id: "c".into(),
            store: "s".into(),
            index: index.into(),
            date: "2024-03-01".into(),
            prefixes: 1,
            files: 1,
            bytes: 1,
            tag: "t".into(),
            first: format!("p{index}/"),
            last: format!("p{index}/"),
        }
    }

    #[test]
    fn a_digest_entry_both_neighbouring_items_report_is_kept_once_and_fingerprints_are_united() {
        let entry = |location: &str, t: &str| FailureEntry::new(location.into(), t, "m".into());
        let summary = |failures: Vec<FailureEntry>, fp: &str| ItemSummary {
            status: ItemStatus::Completed,
            statistics: Statistics { files_verified: 2, ..Default::default() },
            failures,
            error: None,
            prefix: "p/".into(),
            key_fingerprints: vec![fp.into()],
            skipped: Vec::new(),
            failed_files: 0,
            repair: None,
        };
        let summaries = BTreeMap::from([
            ("1".to_string(), summary(vec![entry("d", "DigestChainBroken"), entry("f1", "DigestMismatch")], "a")),
            ("2".to_string(), summary(vec![entry("d", "DigestChainBroken"), entry("f1", "DigestMismatch")], "b")),
        ]);
        let r = rollup(&[item("1"), item("2")], &summaries, false);
        let types: Vec<&str> = r.failures.iter().map(|f| f.error_type.as_str()).collect();
        // A file's entries are never merged (two items never read the same file).
        assert_eq!(types, ["DigestChainBroken", "DigestMismatch", "DigestMismatch"]);
        assert_eq!(r.statistics.failed_entries, 3);
        assert_eq!(r.statistics.files_verified, 4);
        assert_eq!(r.key_fingerprints.into_iter().collect::<Vec<_>>(), ["a", "b"]);
    }
}
