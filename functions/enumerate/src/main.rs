//! Enumerate: the execution input (merged with the stack's defaults) → a planned copy whose
//! work items sit in the store for the Distributed Map's ItemReader.

use jiff::Timestamp;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde::{Deserialize, Serialize};
use serde_json::Value;
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
    /// Resume the copy `copyId` (a new execution: completed items are skipped, failed ones resume).
    #[serde(default)]
    retry: bool,
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
    status: &'static str,
}

struct Defaults {
    source: Option<String>,
    store: Option<String>,
    last: String,
    retention_days: Option<u32>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn request(input: Input, d: &Defaults) -> Result<CopyRequest, CopyError> {
    let (mut start, mut end, mut last) = (input.start, input.end, input.last);
    if let Some(at) = input.scheduled_time {
        let window = input.window.unwrap_or_else(|| d.last.clone());
        let at: Timestamp = trailcopy::range::parse_instant("scheduledTime", &at)?;
        let span = trailcopy::range::parse_duration("window", &window)?;
        let from = at.checked_sub(span).map_err(|_| CopyError::invalid("window", "out of range"))?;
        (start, end, last) = (Some(from.to_string()), Some(at.to_string()), None);
    } else if start.is_none() && end.is_none() && last.is_none() {
        last = Some(d.last.clone());
    }
    Ok(CopyRequest {
        source: input.source.or_else(|| d.source.clone()),
        store: input.store.or_else(|| d.store.clone()),
        start,
        end,
        last,
        retention_days: input.retention_days.or(d.retention_days),
        copy_id: input.copy_id,
        restore: input.restore,
        store_kms_key: input.store_kms_key,
        allow_overlap: input.allow_overlap,
    })
}

async fn handle(aws: &AwsClients, defaults: &Defaults, event: LambdaEvent<Value>) -> Result<Output, Diagnostic> {
    let input: Input = serde_json::from_value(event.payload)
        .map_err(|e| diagnostic_of("InvalidRequest", format!("invalid execution input: {e}")))?;
    let retry = input.retry;
    let req = request(input, defaults).map_err(diagnostic)?;
    trailcopy::plan::check_serverless(&req, retry).map_err(diagnostic)?;
    let store_uri = req.store.clone().unwrap_or_default();
    let Ok(Location::S3 { bucket, .. }) = Location::parse("store", &store_uri) else {
        return Err(diagnostic_of(
            "InvalidRequest",
            format!("invalid store: `{store_uri}` must be s3://bucket[/prefix]"),
        ));
    };
    let (ctx, items, work_items_key) = if retry {
        let id = req
            .copy_id
            .as_deref()
            .ok_or_else(|| diagnostic_of("InvalidRequest", "invalid copyId: retry needs the copyId".into()))?;
        let (ctx, _all, pending) = trailcopy::runner::reopen(aws, &store_uri, id).await.map_err(diagnostic)?;
        // Completed items cost nothing on a retry: the Map reads only the others.
        let key = ctx.keys.pending_work_items();
        trailcopy::record::write_json(ctx.store.as_ref(), &key, &pending).await.map_err(diagnostic)?;
        (ctx, pending, key)
    } else {
        let (ctx, items) = trailcopy::plan_copy(aws, &req, Timestamp::now()).await.map_err(diagnostic)?;
        let key = ctx.keys.work_items();
        (ctx, items, key)
    };
    Ok(Output {
        copy_id: ctx.copy_id.clone(),
        store: ctx.store_location.display(),
        store_bucket: bucket,
        work_items_key,
        work_items: items.len(),
        prefixes_found: items.iter().map(|i| i.prefixes).sum(),
        poll_seconds: ctx.request.restore.poll_seconds,
        max_wait_seconds: ctx.request.restore.max_wait_seconds,
        status: "IN_PROGRESS",
    })
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let aws = AwsClients::new();
    let defaults = Defaults {
        source: env("DEFAULT_SOURCE"),
        store: env("DEFAULT_STORE"),
        last: env("DEFAULT_LAST").unwrap_or_else(|| "PT1H".into()),
        retention_days: env("RETENTION_DAYS").and_then(|v| v.parse().ok()),
    };
    lambda_runtime::run(service_fn(|e| handle(&aws, &defaults, e))).await
}
