//! Prepare: one work item → its file list, storage classes checked, restores started;
//! called again by the state machine's wait loop until no restore is pending.

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use trailcopy::{AwsClients, CopyContext, PrepareOutcome};
use trailcopy_lambda_support::{ItemInput, diagnostic, item_result};

async fn handle(aws: &AwsClients, event: LambdaEvent<ItemInput>) -> Result<PrepareOutcome, Diagnostic> {
    let item = event.payload.item;
    let ctx = CopyContext::open(aws, &item.store, &item.copy_id).await.map_err(diagnostic)?;
    item_result(&ctx, &item, trailcopy::prepare_item(&ctx, &item).await).await
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let aws = AwsClients::with_app_name("trailcopy-prepare");
    lambda_runtime::run(service_fn(|e| handle(&aws, e))).await
}
