//! Finalize: roll the items' checkpoints up into the copy record and set its final status.

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use trailcopy::{AwsClients, CopyContext, FailureEntry, Statistics};
use trailcopy_lambda_support::diagnostic;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Input {
    copy_id: String,
    store: String,
    /// The Map's error (`{Error, Cause}`) when it failed as a whole.
    #[serde(default)]
    map_error: Option<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Output {
    copy_id: String,
    status: &'static str,
    statistics: Statistics,
    failed_entries: u64,
}

async fn handle(aws: &AwsClients, event: LambdaEvent<Input>) -> Result<Output, Diagnostic> {
    let input = event.payload;
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

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let aws = AwsClients::with_app_name("trailcopy-finalize");
    lambda_runtime::run(service_fn(|e| handle(&aws, e))).await
}
