//! Finalize: roll the items' checkpoints up into the copy record and set its final status. Invoked
//! by the state machine's Finalize state, and by an EventBridge rule when an execution ends FAILED,
//! TIMED_OUT or ABORTED without reaching that state (a console Stop, a timeout, States.Runtime).

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use trailcopy::finalize::EndedExecution;
use trailcopy::serverless;
use trailcopy::{AwsClients, CopyContext, CopyError, FailureEntry, Statistics};
use trailcopy_lambda_support::{diagnostic, diagnostic_of};

/// The state machine's Finalize state, or Step Functions' "Execution Status Change" event.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Invocation {
    Step(Input),
    Ended(StatusChange),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Input {
    copy_id: String,
    store: String,
    /// The Map's error (`{Error, Cause}`) when it failed as a whole.
    #[serde(default)]
    map_error: Option<Value>,
}

/// The EventBridge event (https://docs.aws.amazon.com/step-functions/latest/dg/eventbridge-integration.html).
#[derive(Debug, Deserialize)]
struct StatusChange {
    #[serde(rename = "detail-type")]
    detail_type: String,
    detail: StatusDetail,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusDetail {
    execution_arn: String,
    status: String,
    /// The execution's input as JSON text.
    input: Option<String>,
    error: Option<String>,
    cause: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Output {
    copy_id: String,
    status: &'static str,
    statistics: Statistics,
    failed_entries: u64,
}

async fn handle(
    aws: &AwsClients,
    default_store: Option<&str>,
    event: LambdaEvent<Invocation>,
) -> Result<Output, Diagnostic> {
    let input = match event.payload {
        Invocation::Step(input) => input,
        Invocation::Ended(change) => return finalize_ended(aws, default_store, change).await,
    };
    let ctx = CopyContext::open(aws, &input.store, &input.copy_id).await.map_err(diagnostic)?;
    let record = match input.map_error.filter(|v| !v.is_null()) {
        // The Map itself failed (ItemReader, ResultWriter, threshold, anything the Catch took).
        Some(e) => {
            let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let (error, cause) = (text("Error"), text("Cause"));
            let entry = FailureEntry::new(
                ctx.keys.work_items_location(&ctx.store_location),
                "MapRunFailed",
                format!(
                    "the Distributed Map failed with {}{}",
                    if error.is_empty() { "an unknown error" } else { &error },
                    if cause.is_empty() { String::new() } else { format!(": {cause}") }
                ),
            );
            trailcopy::finalize_failed_run(&ctx, entry).await
        }
        None => trailcopy::finalize_copy(&ctx, false, None).await,
    }
    .map_err(diagnostic)?;
    Ok(Output {
        copy_id: record.copy_id,
        status: record.status.as_str(),
        failed_entries: record.statistics.failed_entries,
        statistics: record.statistics,
    })
}

/// An execution that ended without reaching Finalize: its copy becomes STOPPED or FAILED, unless
/// it is final already or a later execution runs it (then nothing changes).
async fn finalize_ended(
    aws: &AwsClients,
    default_store: Option<&str>,
    change: StatusChange,
) -> Result<Output, Diagnostic> {
    let d = change.detail;
    let input: Value = d.input.as_deref().and_then(|t| serde_json::from_str(t).ok()).unwrap_or(Value::Null);
    let store =
        input.get("store").or_else(|| input.pointer("/request/store")).and_then(Value::as_str).or(default_store);
    let (Some(copy_id), Some(store)) = (serverless::copy_id_of_input(&input, &d.execution_arn), store) else {
        return Err(diagnostic_of(
            "InvalidRequest",
            format!("{}: no copy or store for {}", change.detail_type, d.execution_arn),
        ));
    };
    let unchanged = |status: &'static str| Output {
        copy_id: copy_id.clone(),
        status,
        statistics: Statistics::default(),
        failed_entries: 0,
    };
    let ctx = match CopyContext::open(aws, store, &copy_id).await {
        Ok(ctx) => ctx,
        // Refused before it wrote a record (an overlapping copy runs, an invalid request).
        Err(CopyError::NoSuchCopy { .. }) => return Ok(unchanged("NO_RECORD")),
        Err(e) => return Err(diagnostic(e)),
    };
    let end = EndedExecution { execution_arn: d.execution_arn, status: d.status, error: d.error, cause: d.cause };
    match trailcopy::finalize::finalize_ended_execution(&ctx, &end).await.map_err(diagnostic)? {
        Some(record) => Ok(Output {
            copy_id: record.copy_id,
            status: record.status.as_str(),
            failed_entries: record.statistics.failed_entries,
            statistics: record.statistics,
        }),
        None => Ok(unchanged("UNCHANGED")),
    }
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let aws = AwsClients::with_app_name("trailcopy-finalize");
    let default_store = std::env::var("DEFAULT_STORE").ok().filter(|s| !s.is_empty());
    lambda_runtime::run(service_fn(|e| handle(&aws, default_store.as_deref(), e))).await
}
