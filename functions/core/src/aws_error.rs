//! What an AWS SDK error means for the person running trailcopy: errors they can fix (no
//! credentials, an expired token, access denied, no such bucket, an endpoint out of reach)
//! become one plain sentence naming the fix, not the SDK's debug dump.
//!
//! The SDK reports a credentials provider chain that found nothing as a dispatch failure whose
//! source is a `CredentialsError` (aws-sdk-rust issue 979 and smithy-rs PR 4725 describe the
//! shape); a denied or rejected request is a service error with S3's error code
//! (<https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html>).

use std::error::Error as StdError;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::error::CopyError;

/// What fixes missing credentials, first: the rest of a credentials message says what was seen.
const SET_CREDENTIALS: &str = "run `aws configure` (`aws sso login` for an SSO profile), or set \
     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)";

/// The credentials problem behind an error, if that is what it is.
pub fn credentials_problem(err: &(dyn StdError + 'static)) -> Option<CopyError> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            let message = match c {
                CredentialsError::CredentialsNotLoaded(_) => format!(
                    "no AWS credentials: {SET_CREDENTIALS}; none were found in the environment, the shared config \
                     and credentials files, web identity, ECS or EC2 instance metadata"
                ),
                CredentialsError::ProviderTimedOut(_) => {
                    "loading AWS credentials timed out: check the network to the credentials source (SSO, \
                     instance metadata) or set AWS_PROFILE / AWS_ACCESS_KEY_ID"
                        .to_string()
                }
                CredentialsError::InvalidConfiguration(_) => format!(
                    "the AWS credentials configuration is invalid ({}): check AWS_PROFILE and ~/.aws/config",
                    root_cause(c)
                ),
                // The chain reports the last provider it tried (on a laptop, EC2 instance
                // metadata): that is where it stopped looking, rarely what is wrong.
                _ => format!(
                    "no usable AWS credentials: {SET_CREDENTIALS}; the last source tried said: {}",
                    root_cause(c)
                ),
            };
            return Some(CopyError::Credentials { message });
        }
        cur = e.source();
    }
    None
}

/// The innermost cause's text: the part of an error chain that says what actually happened.
pub fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut e = err;
    while let Some(next) = e.source() {
        e = next;
    }
    e.to_string()
}

/// Maps an error of any AWS SDK client (after the SDK's own retries) to what a caller acts on.
/// `action` is the IAM action the request needs (named in access-denied messages); `endpoint`
/// names where the client was talking to (for connection failures).
pub fn sdk_error<E, R>(location: String, action: &str, endpoint: &str, err: SdkError<E, R>) -> CopyError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if let Some(e) = credentials_problem(&err) {
        return e;
    }
    match &err {
        SdkError::TimeoutError(_) => {
            CopyError::Retryable { location, message: format!("{endpoint} did not answer in time") }
        }
        SdkError::DispatchFailure(_) => CopyError::Retryable {
            location,
            message: format!(
                "cannot connect to {endpoint} ({}): check the network, AWS_ENDPOINT_URL and proxy settings",
                root_cause(&err)
            ),
        },
        SdkError::ResponseError(_) => {
            CopyError::Retryable { location, message: format!("the response broke off ({})", root_cause(&err)) }
        }
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("");
            let message = se.err().message().unwrap_or(code).to_string();
            let server_error = format!("{:?}", se.raw()).contains("StatusCode(5");
            service_error(location, action, code, message, server_error)
        }
        _ => CopyError::Storage { location, message: root_cause(&err) },
    }
}

fn service_error(location: String, action: &str, code: &str, message: String, server_error: bool) -> CopyError {
    let credentials = |m: &str| CopyError::Credentials { message: format!("{m} ({code})") };
    match code {
        "NoSuchKey" | "NotFound" => CopyError::NotFound { location },
        "NoSuchBucket" => {
            let bucket = location.strip_prefix("s3://").and_then(|r| r.split('/').next()).unwrap_or("").to_string();
            CopyError::Storage { location, message: format!("bucket `{bucket}` does not exist: check the bucket name") }
        }
        "AccessDenied" | "Forbidden" | "AllAccessDisabled" | "AccessDeniedException" | "KMS.AccessDeniedException" => {
            CopyError::AccessDenied {
                location,
                message: format!(
                    "{message} ({code}): the credentials in use need {action} on it (IAM policy and bucket policy)"
                ),
            }
        }
        "ExpiredToken" | "ExpiredTokenException" | "TokenRefreshRequired" => credentials(
            "the AWS session token has expired: refresh the credentials (`aws sso login`, or new temporary \
             credentials) and run the command again",
        ),
        "InvalidAccessKeyId" | "UnrecognizedClientException" => {
            credentials("AWS does not know the access key in use: check AWS_ACCESS_KEY_ID or AWS_PROFILE")
        }
        "SignatureDoesNotMatch" | "InvalidSignatureException" => {
            credentials("AWS rejected the request signature: check AWS_SECRET_ACCESS_KEY or AWS_PROFILE")
        }
        "InvalidToken" => credentials("AWS rejected the session token: check AWS_SESSION_TOKEN or AWS_PROFILE"),
        "InvalidObjectState" => CopyError::Archived { location },
        "SlowDown"
        | "Throttling"
        | "ThrottlingException"
        | "RequestTimeout"
        | "InternalError"
        | "ServiceUnavailable"
        | "RequestTimeTooSkewed" => CopyError::Retryable { location, message: format!("{code}: {message}") },
        _ if server_error => CopyError::Retryable { location, message: format!("{code}: {message}") },
        _ => CopyError::Storage { location, message: format!("{code}: {message}") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(code: &str) -> CopyError {
        service_error("s3://b/AWSLogs/".into(), "s3:ListBucket", code, "Access Denied".into(), false)
    }

    #[test]
    fn fixable_errors_name_the_fix() {
        let e = denied("AccessDenied").to_string();
        assert!(e.contains("s3:ListBucket") && e.contains("s3://b/AWSLogs/"), "{e}");
        for code in ["ExpiredToken", "TokenRefreshRequired", "InvalidAccessKeyId", "SignatureDoesNotMatch"] {
            let e = denied(code);
            assert!(matches!(e, CopyError::Credentials { .. }), "{code}: {e:?}");
            assert!(e.to_string().contains(code), "{e}");
        }
        assert!(denied("ExpiredToken").to_string().contains("aws sso login"));
        let e = denied("NoSuchBucket").to_string();
        assert!(e.contains("bucket `b` does not exist"), "{e}");
    }

    #[test]
    fn nothing_says_retryable() {
        let e = service_error("s3://b/k".into(), "s3:GetObject", "SlowDown", "Please reduce".into(), true);
        assert!(e.is_retryable());
        assert!(!e.to_string().to_lowercase().contains("retryable"), "{e}");
    }

    #[test]
    fn a_credentials_chain_failure_anywhere_in_the_chain_is_no_credentials() {
        #[derive(Debug)]
        struct Wrap(CredentialsError);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("dispatch failure")
            }
        }
        impl StdError for Wrap {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let e = Wrap(CredentialsError::not_loaded("no providers in chain provided credentials"));
        let got = credentials_problem(&e).expect("a credentials problem");
        let said = got.to_string();
        assert!(said.contains(&format!("no AWS credentials: {SET_CREDENTIALS}")), "{said}");
        assert!(credentials_problem(&std::io::Error::other("x")).is_none());
    }
}
