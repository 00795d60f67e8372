//! Copy: the next batches of one work item from its checkpointed cursor, until done or the
//! invocation's time budget is spent; the state machine loops while `done` is false.

use std::sync::atomic::AtomicBool;

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use trailcopy::{AwsClients, CopyContext, CopyLimits, CopyOutcome, FetchBudget};
use trailcopy_lambda_support::{ItemInput, batch_deadline, diagnostic, item_result};

/// An invocation that dies mid-batch (out of memory: Step Functions reports it as `Lambda.Unknown`,
/// https://docs.aws.amazon.com/step-functions/latest/dg/bp-lambda-serviceexception.html, which the
/// Copy state retries) starts the same batch once more, not eight times: the third start ends the
/// item with one `BatchNeverFinished` entry.
const MAX_BATCH_STARTS: u32 = 2;

async fn handle(
    aws: &AwsClients,
    budget: &FetchBudget,
    event: LambdaEvent<ItemInput>,
) -> Result<CopyOutcome, Diagnostic> {
    let deadline = batch_deadline(event.context.deadline());
    let item = event.payload.item;
    let ctx = CopyContext::open(aws, &item.store, &item.copy_id).await.map_err(diagnostic)?;
    let never = AtomicBool::new(false);
    let limits = CopyLimits {
        deadline: Some(deadline),
        max_batch_starts: Some(MAX_BATCH_STARTS),
        ..CopyLimits::new(&never, budget)
    };
    item_result(&ctx, &item, trailcopy::copy_item(&ctx, &item, &limits).await).await
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let aws = AwsClients::with_app_name("trailcopy-copy");
    // TRAILCOPY_MAX_REQUESTS / TRAILCOPY_MAX_FETCH_MIB, else sized by the function's memory.
    let budget = FetchBudget::for_lambda();
    lambda_runtime::run(service_fn(|e| handle(&aws, &budget, e))).await
}
