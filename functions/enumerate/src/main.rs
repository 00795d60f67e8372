//! Enumerate: the execution input (merged with the stack's defaults) → a planned copy whose
//! work items sit in the store for the Distributed Map's ItemReader.
//!
//! The state machine sends `{"input": <execution input>, "executionArn": <$$.Execution.Id>}`.

use jiff::Timestamp;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use trailcopy::claims::{Holder, SfnProbe};
use trailcopy::serverless::{self, StackScope};
use trailcopy::storage::Location;
use trailcopy::{AwsClients, CopyError, CopyRequest, RestoreRequest};
use trailcopy_lambda_support::{diagnostic, diagnostic_of};

/// The execution input. Every field is optional: `{}` copies the last hour with the stack's defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Input {
    source: Option<String>,
    store: Option<String>,
    start: Option<String>,
    end: Option<String>,
    last: Option<String>,
    retention_days: Option<u32>,
    copy_id: Option<String>,
    restore: Option<RestoreRequest>,
    /// Set by the schedule: copy the `window` that ends at this time, so runs neither overlap nor gap.
    scheduled_time: Option<String>,
    window: Option<String>,
    #[serde(default)]
    allow_overlap: bool,
    store_kms_key: Option<String>,
    /// Check every file read against CloudTrail's signed digests.
    #[serde(default)]
    verify_digests: bool,
    /// Skip (and list) files not verified; implies verifyDigests.
    #[serde(default)]
    require_verified: bool,
    /// CloudTrail's public keys (`aws cloudtrail list-public-keys` documents); default: ListPublicKeys.
    digest_public_keys: Option<Vec<Value>>,
    /// Resume the copy `copyId` (a new execution: completed items are skipped, failed ones resume).
    #[serde(default)]
    retry: bool,
    /// Copy from where the last completed copy of the source into the store is complete, to now.
    #[serde(default)]
    since_last: bool,
    /// How late log files may arrive (default 1h): a window ending closer to now is complete only
    /// through now minus it.
    delivery_allowance: Option<String>,
}

/// What the Enumerate state passes: the execution's input, its ARN, and the stack's MaxConcurrency.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Invocation {
    input: Value,
    execution_arn: Option<String>,
    max_concurrency: Option<u32>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Output {
    copy_id: String,
    store: String,
    store_bucket: String,
    /// What the Map reads: every work item, or on a retry only those not completed.
    work_items_key: String,
    work_items: usize,
    prefixes_found: u64,
    poll_seconds: u64,
    max_wait_seconds: u64,
    /// The Map's concurrency (its MaxConcurrencyPath): MaxConcurrency capped to the account's.
    max_concurrency: u32,
    status: &'static str,
}

struct Defaults {
    source: Option<String>,
    store: Option<String>,
    last: String,
    retention_days: Option<u32>,
    /// What the stack's IAM covers: an input pointing elsewhere is refused.
    scope: Option<StackScope>,
    /// The Copy function's reserved concurrency (CopyReservedConcurrency; 0: none).
    copy_reserved: u32,
}

/// The template's MaxConcurrency default, when the state machine does not pass one.
const DEFAULT_MAX_CONCURRENCY: u32 = 40;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn request(input: Input, d: &Defaults, execution_arn: Option<&str>) -> Result<CopyRequest, CopyError> {
    let (mut start, mut end, mut last) = (input.start, input.end, input.last);
    let mut copy_id = input.copy_id;
    if let Some(at) = input.scheduled_time {
        let window = input.window.unwrap_or_else(|| d.last.clone());
        let at: Timestamp = trailcopy::range::parse_instant("scheduledTime", &at)?;
        let span = trailcopy::range::parse_duration("window", &window)?;
        let from = at.checked_sub(span).map_err(|_| CopyError::invalid("window", "out of range"))?;
        (start, end, last) = (Some(from.to_string()), Some(at.to_string()), None);
        copy_id = copy_id.or_else(|| Some(serverless::scheduled_copy_id(at)));
    } else if start.is_none() && end.is_none() && last.is_none() && !input.since_last {
        last = Some(d.last.clone());
    }
    if !input.retry {
        copy_id = copy_id.or_else(|| execution_arn.and_then(serverless::copy_id_of_execution));
    }
    Ok(CopyRequest {
        source: input.source.or_else(|| d.source.clone()),
        store: input.store.or_else(|| d.store.clone()),
        start,
        end,
        last,
        retention_days: input.retention_days.or(d.retention_days),
        copy_id,
        restore: input.restore,
        store_kms_key: input.store_kms_key,
        allow_overlap: input.allow_overlap,
        verify_digests: input.verify_digests,
        require_verified: input.require_verified,
        digest_public_keys: input.digest_public_keys,
        since_last: input.since_last,
        delivery_allowance: input.delivery_allowance,
    })
}

/// The clients Enumerate uses besides S3 (built once, in main).
struct Clients {
    aws: AwsClients,
    probe: SfnProbe,
    lambda: aws_sdk_lambda::Client,
}

/// The account's unreserved concurrency (Lambda GetAccountSettings); `None` when it cannot be
/// read (then the Map runs MaxConcurrency items, as the stack asks).
async fn unreserved_concurrency(lambda: &aws_sdk_lambda::Client) -> Option<u32> {
    match lambda.get_account_settings().send().await {
        Ok(out) => out.account_limit().map(|l| l.unreserved_concurrent_executions().unwrap_or(0).max(0) as u32),
        Err(e) => {
            lambda_runtime::tracing::warn!(error = %aws_sdk_lambda::error::DisplayErrorContext(e), "GetAccountSettings failed; MaxConcurrency as asked");
            None
        }
    }
}

async fn handle(clients: &Clients, defaults: &Defaults, event: LambdaEvent<Invocation>) -> Result<Output, Diagnostic> {
    let (aws, probe) = (&clients.aws, &clients.probe);
    let Invocation { input, execution_arn, max_concurrency } = event.payload;
    let input: Input = serde_json::from_value(input)
        .map_err(|e| diagnostic_of("InvalidRequest", format!("invalid execution input: {e}")))?;
    let retry = input.retry;
    let req = request(input, defaults, execution_arn.as_deref()).map_err(diagnostic)?;
    trailcopy::plan::check_serverless(&req, retry).map_err(diagnostic)?;
    serverless::check_restore_wait(&req).map_err(diagnostic)?;
    if let Some(scope) = &defaults.scope {
        scope.check(&req).map_err(diagnostic)?;
    }
    let store_uri = req.store.clone().unwrap_or_default();
    let Ok(Location::S3 { bucket, .. }) = Location::parse("store", &store_uri) else {
        return Err(diagnostic_of(
            "InvalidRequest",
            format!("invalid store: `{store_uri}` must be s3://bucket[/prefix]"),
        ));
    };
    let bucket_region = aws.bucket_region(&bucket).await;
    serverless::check_store_region(&bucket, bucket_region.as_deref(), aws.region().await.as_deref())
        .map_err(diagnostic)?;
    // The claim names this execution: another planner asks Step Functions whether it still runs.
    let holder = match &execution_arn {
        Some(arn) => Holder::Execution { execution: arn.clone() },
        None => Holder::this_process(),
    };
    let (ctx, items, work_items_key) = if retry {
        let id = req
            .copy_id
            .as_deref()
            .ok_or_else(|| diagnostic_of("InvalidRequest", "invalid copyId: retry needs the copyId".into()))?;
        let (ctx, _all, pending) = trailcopy::reopen(aws, &store_uri, id, holder, probe).await.map_err(diagnostic)?;
        // Completed items cost nothing on a retry: the Map reads only the others.
        let key = ctx.keys.pending_work_items();
        trailcopy::record::write_json(ctx.store.as_ref(), &key, &pending).await.map_err(diagnostic)?;
        (ctx, pending, key)
    } else {
        let (ctx, items) =
            trailcopy::plan_copy(aws, &req, Timestamp::now(), holder, probe).await.map_err(diagnostic)?;
        let key = ctx.keys.work_items();
        (ctx, items, key)
    };
    if let Some(arn) = &execution_arn {
        serverless::record_execution(&ctx, arn).await.map_err(diagnostic)?;
    }
    let account = serverless::AccountConcurrency {
        unreserved: unreserved_concurrency(&clients.lambda).await,
        copy_reserved: defaults.copy_reserved,
    };
    let max_concurrency = serverless::map_concurrency(max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY), account);
    Ok(Output {
        max_concurrency,
        copy_id: ctx.copy_id.clone(),
        store: ctx.store_location.display(),
        store_bucket: bucket,
        work_items_key,
        work_items: items.len(),
        prefixes_found: items.iter().map(|i| i.prefixes).sum(),
        poll_seconds: ctx.request.restore.poll_seconds,
        max_wait_seconds: ctx.request.restore.max_wait_limit(),
        status: "IN_PROGRESS",
    })
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let aws = AwsClients::with_app_name("trailcopy-enumerate");
    let (source, store) = (env("DEFAULT_SOURCE"), env("DEFAULT_STORE"));
    let scope = match (&source, &store) {
        (Some(s), Some(t)) => Some(StackScope::new(s, t)?),
        _ => None,
    };
    let defaults = Defaults {
        source,
        store,
        last: env("DEFAULT_LAST").unwrap_or_else(|| "PT1H".into()),
        retention_days: env("RETENTION_DAYS").and_then(|v| v.parse().ok()),
        scope,
        copy_reserved: env("COPY_RESERVED_CONCURRENCY").and_then(|v| v.parse().ok()).unwrap_or(0),
    };
    let config = aws.sdk_config().await.clone();
    let clients = Clients { probe: SfnProbe::new(&config), lambda: aws_sdk_lambda::Client::new(&config), aws };
    lambda_runtime::run(service_fn(|e| handle(&clients, &defaults, e))).await
}
