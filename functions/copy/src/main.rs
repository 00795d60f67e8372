//! Copy: the next batches of one work item from its checkpointed cursor, until done or the
//! invocation's time budget is spent; the state machine loops while `done` is false.

use std::sync::atomic::AtomicBool;

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use trailcopy::{AwsClients, CopyContext, CopyLimits, CopyOutcome};
use trailcopy_lambda_support::{ItemInput, batch_deadline, diagnostic, item_result};

async fn handle(aws: &AwsClients, event: LambdaEvent<ItemInput>) -> Result<CopyOutcome, Diagnostic> {
    let deadline = batch_deadline(event.context.deadline());
    let item = event.payload.item;
    let ctx = CopyContext::open(aws, &item.store, &item.copy_id).await.map_err(diagnostic)?;
    let never = AtomicBool::new(false);
    let limits = CopyLimits { deadline: Some(deadline), cancel: &never, on_commit: &|_| {} };
    item_result(&ctx, &item, trailcopy::copy_item(&ctx, &item, &limits).await).await
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let aws = AwsClients::with_app_name("trailcopy-copy");
    lambda_runtime::run(service_fn(|e| handle(&aws, e))).await
}
