//! Shared by the four Lambda adapters: stable `errorType` names for the state machine's
//! Retry/Catch, the work-item input, and the invocation's time budget.

use std::time::{Duration, Instant, SystemTime};

use lambda_runtime::Diagnostic;
use serde::Deserialize;
use trailcopy::CopyError;
use trailcopy::record::WorkItem;

/// `Retryable` (Retry with backoff), `InvalidRequest` (fail the execution at once),
/// `RestoreTimeout`, or `ItemFailed` (Catch: a failure of this item only).
pub fn diagnostic(e: CopyError) -> Diagnostic {
    let error_type = match &e {
        CopyError::InvalidRequest { .. } => "InvalidRequest",
        CopyError::Retryable { .. } => "Retryable",
        CopyError::Blocked(entry) if entry.error_type == "RestoreTimeout" => "RestoreTimeout",
        _ => "ItemFailed",
    };
    Diagnostic { error_type: error_type.into(), error_message: e.to_string() }
}

pub fn diagnostic_of(error_type: &str, message: String) -> Diagnostic {
    Diagnostic { error_type: error_type.into(), error_message: message }
}

/// One Distributed Map item, as prepare and copy receive it (extra fields are ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemInput {
    pub copy_id: String,
    pub store: String,
    pub index: String,
    pub prefix: String,
}

impl ItemInput {
    pub fn work_item(&self) -> WorkItem {
        WorkItem {
            copy_id: self.copy_id.clone(),
            store: self.store.clone(),
            index: self.index.clone(),
            prefix: self.prefix.clone(),
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
