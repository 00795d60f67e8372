//! SSE-KMS keys of the source: checked once per key before copying, so a disabled, deleted or
//! inaccessible key becomes one clear failure naming the key and the statement it needs,
//! not thousands of per-file AccessDenied entries.

use async_trait::async_trait;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};

use crate::error::{CopyError, Result};
use crate::record::FailureEntry;

/// What DescribeKey says about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
    /// Any other unusable state (PendingImport, Unavailable, ...).
    Unusable(String),
    NotFound,
    AccessDenied(String),
}

/// The KMS seam: aws-sdk-kms in production, fakes in unit tests.
#[async_trait]
pub trait KeyChecker: Send + Sync {
    async fn describe(&self, key_id: &str) -> Result<KeyState>;
}

pub struct KmsKeyChecker {
    client: aws_sdk_kms::Client,
}

impl KmsKeyChecker {
    pub fn new(client: aws_sdk_kms::Client) -> Self {
        KmsKeyChecker { client }
    }
}

#[async_trait]
impl KeyChecker for KmsKeyChecker {
    async fn describe(&self, key_id: &str) -> Result<KeyState> {
        match self.client.describe_key().key_id(key_id).send().await {
            Ok(out) => {
                let Some(meta) = out.key_metadata() else { return Ok(KeyState::NotFound) };
                let state = meta.key_state().map(|s| s.as_str().to_string()).unwrap_or_default();
                Ok(match state.as_str() {
                    "Enabled" if meta.enabled() => KeyState::Enabled,
                    "Enabled" | "Disabled" => KeyState::Disabled,
                    "PendingDeletion" | "PendingReplicaDeletion" => KeyState::PendingDeletion,
                    "" if meta.enabled() => KeyState::Enabled,
                    other => KeyState::Unusable(other.to_string()),
                })
            }
            Err(SdkError::ServiceError(se)) => {
                let code = se.err().code().unwrap_or("");
                let message = se.err().message().unwrap_or(code).to_string();
                match code {
                    "NotFoundException" => Ok(KeyState::NotFound),
                    "AccessDeniedException" => Ok(KeyState::AccessDenied(message)),
                    "ThrottlingException" | "KMSInternalException" | "DependencyTimeoutException" => {
                        Err(CopyError::Retryable { location: key_id.to_string(), message })
                    }
                    _ => {
                        Err(CopyError::Storage { location: key_id.to_string(), message: format!("{code}: {message}") })
                    }
                }
            }
            Err(e) => Err(CopyError::Retryable {
                location: key_id.to_string(),
                message: aws_sdk_kms::error::DisplayErrorContext(&e).to_string(),
            }),
        }
    }
}

/// The key policy statement (and IAM statement) a copy role needs to read objects under `key`.
pub fn needed_statement(key: &str) -> String {
    format!(
        "allow the copy role kms:Decrypt on {key} with condition kms:ViaService = s3.<region>.amazonaws.com \
         (in the key policy, and in the role's policy: the template's SourceKmsKeyArns parameter)"
    )
}

/// One failure entry for a key that blocks a copy, or `None` when the key is usable.
pub async fn check_key(checker: &dyn KeyChecker, key: &str) -> Result<Option<FailureEntry>> {
    let entry = |t: &str, why: String| Some(FailureEntry::new(key.to_string(), t, why));
    Ok(match checker.describe(key).await? {
        KeyState::Enabled => None,
        KeyState::Disabled => entry(
            "KmsKeyDisabled",
            format!("KMS key {key} is disabled: enable it (kms:EnableKey) so the trail's objects can be decrypted"),
        ),
        KeyState::PendingDeletion => entry(
            "KmsKeyPendingDeletion",
            format!(
                "KMS key {key} is pending deletion: cancel the deletion (kms:CancelKeyDeletion) and enable it, or the objects it encrypts are lost"
            ),
        ),
        KeyState::Unusable(state) => {
            entry("KmsKeyUnusable", format!("KMS key {key} is in state {state} and cannot decrypt"))
        }
        KeyState::NotFound => {
            entry("KmsKeyNotFound", format!("KMS key {key} does not exist (or not in this account/region)"))
        }
        KeyState::AccessDenied(m) => {
            entry("KmsAccessDenied", format!("access to KMS key {key} is denied ({m}); {}", needed_statement(key)))
        }
    })
}

/// An AccessDenied on GetObject of an SSE-KMS object is a KMS problem: say which key.
pub fn access_denied_entry(location: String, key: &str, message: &str) -> FailureEntry {
    FailureEntry::new(
        location,
        "KmsAccessDenied",
        format!(
            "GetObject was denied for an object encrypted with KMS key {key} ({message}); {}",
            needed_statement(key)
        ),
    )
}
