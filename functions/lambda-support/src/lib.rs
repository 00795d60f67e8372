//! Shared by the four Lambda adapters: stable `errorType` names for the state machine's
//! Retry/Catch, the work-item input and result, and the invocation's time budget.

use std::time::{Duration, Instant, SystemTime};

use lambda_runtime::Diagnostic;
use serde::Deserialize;
use trailcopy::record::WorkItem;
use trailcopy::{CopyContext, CopyError};

/// `Retryable` (Retry with backoff), `InvalidRequest` (fail the execution at once),
/// `RestoreTimeout`, `DigestPublicKeysAccessDenied`, or `ItemFailed` (Catch: a failure of this
/// item only).
pub fn diagnostic(e: CopyError) -> Diagnostic {
    let error_type = match &e {
        CopyError::InvalidRequest { .. } | CopyError::NoSuchCopy { .. } => "InvalidRequest",
        CopyError::Retryable { .. } => "Retryable",
        CopyError::Blocked(entry) if entry.error_type == "RestoreTimeout" => "RestoreTimeout",
        // cloudtrail:ListPublicKeys denied (verifyDigests without keys in the request): every
        // item fails alike; the Map's Catch (States.ALL) records it, named, once per copy.
        CopyError::Blocked(entry) if entry.error_type == "DigestPublicKeysAccessDenied" => {
            "DigestPublicKeysAccessDenied"
        }
        _ => "ItemFailed",
    };
    Diagnostic { error_type: error_type.into(), error_message: e.to_string() }
}

pub fn diagnostic_of(error_type: &str, message: String) -> Diagnostic {
    Diagnostic { error_type: error_type.into(), error_message: message }
}

/// Prepare's and Copy's payload: the work item's summary as workitems.json holds it (the
/// ItemSelector passes `$$.Map.Item.Value`); the state machine's own fields (cursor, waited
/// seconds) are ignored, the checkpoint in the store is what counts.
#[derive(Debug, Deserialize)]
pub struct ItemInput {
    pub item: WorkItem,
}

/// An item step's result for Step Functions: a retryable error goes back as is (Retry);
/// any other error is first recorded on the item, so Finalize and `retry` know what stopped it.
pub async fn item_result<T>(ctx: &CopyContext, item: &WorkItem, result: Result<T, CopyError>) -> Result<T, Diagnostic> {
    match result {
        Ok(v) => Ok(v),
        Err(e) if e.is_retryable() => Err(diagnostic(e)),
        Err(e) => {
            if let Err(record_error) = trailcopy::fail_item(ctx, item, &e).await {
                tracing::warn!(error = %record_error, "could not record the item's failure");
            }
            Err(diagnostic(e))
        }
    }
}

/// When to stop starting batches: leave a margin of the invocation's remaining time for the
/// batch in flight and the checkpoint.
pub fn batch_deadline(lambda_deadline: SystemTime) -> Instant {
    let remaining = lambda_deadline.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
    let margin = if remaining > Duration::from_secs(180) { Duration::from_secs(90) } else { remaining / 2 };
    Instant::now() + remaining.saturating_sub(margin)
}
