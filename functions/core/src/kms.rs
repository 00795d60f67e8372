//! SSE-KMS keys of the source: checked once per key before copying, so a disabled or deleted key
//! becomes one clear failure naming the key, not thousands of per-file errors.
//!
//! DescribeKey is only a hint. Key policies often let a role decrypt without letting it describe
//! the key: CloudTrail's default key policy lets every principal of the account decrypt log files
//! (Principal `*`, condition `kms:CallerAccount`) and grants DescribeKey to nobody but the key
//! administrators and CloudTrail
//! (https://docs.aws.amazon.com/awscloudtrail/latest/userguide/default-kms-key-policy.html), and
//! DescribeKey needs a key-policy statement or an IAM grant in the key's account
//! (https://docs.aws.amazon.com/kms/latest/APIReference/API_DescribeKey.html). So AccessDenied or
//! NotFound from DescribeKey means "unknown": GetObject decides, and a GetObject denied on an
//! SSE-KMS object becomes one entry per key ([`access_denied_entry`]). Only a state DescribeKey
//! did report (disabled, pending deletion, ...) fails the item at once.

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

/// DescribeKey through aws-sdk-kms, in the key's own region (taken from its ARN: KMS keys are
/// regional, and a trail bucket's key is often in another region than the copy).
pub struct KmsKeyChecker {
    config: aws_config::SdkConfig,
    clients: std::sync::Mutex<std::collections::HashMap<String, aws_sdk_kms::Client>>,
}

impl KmsKeyChecker {
    pub fn new(config: aws_config::SdkConfig) -> Self {
        KmsKeyChecker { config, clients: Default::default() }
    }

    fn client_for(&self, key_id: &str) -> aws_sdk_kms::Client {
        let region = key_region(key_id).map(str::to_string).unwrap_or_default();
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(region.clone())
            .or_insert_with(|| {
                let mut b = aws_sdk_kms::config::Builder::from(&self.config);
                if !region.is_empty() {
                    b = b.region(aws_sdk_kms::config::Region::new(region));
                }
                aws_sdk_kms::Client::from_conf(b.build())
            })
            .clone()
    }
}

/// The region of a key ARN (`arn:aws:kms:<region>:<account>:key/<id>`); `None` for a bare key id or alias.
pub fn key_region(key_id: &str) -> Option<&str> {
    let mut parts = key_id.splitn(6, ':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_partition), Some("kms"), Some(region)) if !region.is_empty() => Some(region),
        _ => None,
    }
}

#[async_trait]
impl KeyChecker for KmsKeyChecker {
    async fn describe(&self, key_id: &str) -> Result<KeyState> {
        match self.client_for(key_id).describe_key().key_id(key_id).send().await {
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

/// One failure entry for a key that DescribeKey says cannot decrypt, or `None` when the key is
/// usable or its state is unknown (DescribeKey denied or not found: GetObject decides).
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
        KeyState::NotFound | KeyState::AccessDenied(_) => {
            tracing::info!(key, "DescribeKey gave no key state; S3 decides when the objects are read");
            None
        }
    })
}

/// An AccessDenied on GetObject of an SSE-KMS object is a KMS problem: one entry for the key
/// (its location is the key), naming an object it stopped and the statement the role needs.
pub fn access_denied_entry(object: &str, key: &str, message: &str) -> FailureEntry {
    FailureEntry::new(
        key.to_string(),
        "KmsAccessDenied",
        format!(
            "GetObject was denied for {object}, encrypted with KMS key {key} ({message}); {}. \
             The work item stopped before this object: retry resumes it once the key allows decryption",
            needed_statement(key)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::key_region;

    #[test]
    fn key_regions_come_from_the_arn() {
        assert_eq!(key_region("arn:aws:kms:eu-west-1:111122223333:key/1234"), Some("eu-west-1"));
        assert_eq!(key_region("arn:aws-cn:kms:cn-north-1:111122223333:key/1234"), Some("cn-north-1"));
        assert_eq!(key_region("1234abcd-12ab-34cd-56ef-1234567890ab"), None);
        assert_eq!(key_region("alias/trail"), None);
        assert_eq!(key_region("arn:aws:s3:::bucket"), None);
    }
}
