//! Errors a caller acts on: an invalid request (fix the input), a retryable fault (try again),
//! or a failure of one work item (record it, go on with the rest).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CopyError {
    /// The copy request is wrong; `field` names the request field (e.g. `end`, `source`).
    #[error("invalid {field}: {reason}")]
    InvalidRequest { field: &'static str, reason: String },

    /// A transient fault (throttling, 5xx, timeouts, a connection that failed). By the time a
    /// user reads it the SDK's own retries are spent, so its text never says "retryable".
    #[error("{message} ({location}; still failing after retries)")]
    Retryable { location: String, message: String },

    /// AWS credentials are missing, expired or rejected: the user fixes the setup (the message
    /// says how); nothing is wrong with the copy, and `retry` resumes it once fixed.
    #[error("{message}")]
    Credentials { message: String },

    /// An object or record that does not exist.
    #[error("not found: {location}")]
    NotFound { location: String },

    /// Access was denied (IAM, bucket policy, KMS key policy).
    #[error("access denied: {location}: {message}")]
    AccessDenied { location: String, message: String },

    /// An archived object (GLACIER, DEEP_ARCHIVE, Intelligent-Tiering archive) that is not restored.
    #[error("object is archived and not restored: {location}")]
    Archived { location: String },

    /// Any other permanent storage error.
    #[error("{location}: {message}")]
    Storage { location: String, message: String },

    /// No copy of that id in the store (the message names the store's copies). A request error
    /// for a user; for Finalize of an execution refused before it wrote a record, nothing to do.
    #[error("{message}")]
    NoSuchCopy { copy_id: String, message: String },

    /// The copy record is not in a state that allows the operation.
    #[error("{0}")]
    State(String),

    /// Something outside the copy blocks a whole work item (a KMS key, a restore that never ends);
    /// the entry says what and how to fix it. Retry resumes the item.
    #[error("{}: {}", .0.error_type, .0.error_message)]
    Blocked(Box<crate::record::FailureEntry>),

    /// A fault injected by a test (TRAILCOPY_FAULT_*).
    #[error("injected fault: {0}")]
    Injected(String),
}

impl CopyError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        CopyError::InvalidRequest { field, reason: reason.into() }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, CopyError::Retryable { .. })
    }

    /// Stable names for the state machine's Retry/Catch and for failure entries.
    pub fn error_type(&self) -> &'static str {
        match self {
            CopyError::InvalidRequest { .. } => "InvalidRequest",
            CopyError::Retryable { .. } => "Retryable",
            CopyError::Credentials { .. } => "Credentials",
            CopyError::NotFound { .. } => "NotFound",
            CopyError::AccessDenied { .. } => "AccessDenied",
            CopyError::Archived { .. } => "ArchivedObject",
            CopyError::Storage { .. } => "StorageError",
            CopyError::NoSuchCopy { .. } => "InvalidRequest",
            CopyError::State(_) => "InvalidState",
            CopyError::Blocked(_) => "Blocked",
            CopyError::Injected(_) => "InjectedFault",
        }
    }
}

pub type Result<T, E = CopyError> = std::result::Result<T, E>;
