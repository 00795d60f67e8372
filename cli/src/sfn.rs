//! Copies run by the deployed state machine: start, status, retry, stop, list (aws-sdk-sfn).

use aws_sdk_sfn::Client;
use aws_sdk_sfn::types::ExecutionListItem;
use serde_json::{Value, json};
use trailcopy::CopyError;

fn sfn_error(what: &str, e: impl std::fmt::Display) -> CopyError {
    CopyError::Storage { location: format!("Step Functions {what}"), message: e.to_string() }
}

/// `arn:aws:states:r:a:stateMachine:name` → `arn:aws:states:r:a:execution:name:<execution>`.
pub fn execution_arn(state_machine: &str, name: &str) -> Result<String, CopyError> {
    if !state_machine.contains(":stateMachine:") {
        return Err(CopyError::invalid("stateMachine", format!("`{state_machine}` is not a state machine ARN")));
    }
    Ok(format!("{}:{name}", state_machine.replacen(":stateMachine:", ":execution:", 1)))
}

pub async fn start(client: &Client, state_machine: &str, name: &str, input: &Value) -> Result<String, CopyError> {
    execution_arn(state_machine, name)?;
    let out = client
        .start_execution()
        .state_machine_arn(state_machine)
        .name(name)
        .input(input.to_string())
        .send()
        .await
        .map_err(|e| sfn_error("StartExecution", aws_sdk_sfn::error::DisplayErrorContext(e)))?;
    Ok(out.execution_arn().to_string())
}

/// The executions of one copy (its first run and its retries), newest first.
pub async fn executions(
    client: &Client,
    state_machine: &str,
    copy_id: Option<&str>,
) -> Result<Vec<ExecutionListItem>, CopyError> {
    let mut pages = client.list_executions().state_machine_arn(state_machine).into_paginator().send();
    let mut all = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| sfn_error("ListExecutions", aws_sdk_sfn::error::DisplayErrorContext(e)))?;
        all.extend(page.executions().iter().filter(|e| copy_id.is_none_or(|id| belongs(e.name(), id))).cloned());
    }
    all.sort_by_key(|e| std::cmp::Reverse(e.start_date().secs()));
    Ok(all)
}

fn belongs(execution: &str, copy_id: &str) -> bool {
    execution == copy_id || execution.strip_prefix(copy_id).is_some_and(|rest| rest.starts_with("-retry-"))
}

/// The copy an execution ran: the copyId of its input, the scheduled copy id of a scheduled run,
/// or (started without one, from the console) the execution's name, which Enumerate takes as the
/// copy id. A retry execution's input names its copy.
pub async fn copy_id_of(client: &Client, e: &ExecutionListItem) -> Option<String> {
    let input = client.describe_execution().execution_arn(e.execution_arn()).send().await.ok()?.input()?.to_string();
    let v: Value = serde_json::from_str(&input).ok()?;
    trailcopy::serverless::copy_id_of_input(&v, e.execution_arn())
}

/// Execution status plus the Distributed Map's item counts where the service reports them.
pub async fn describe(client: &Client, execution_arn: &str) -> Result<Value, CopyError> {
    let e = client
        .describe_execution()
        .execution_arn(execution_arn)
        .send()
        .await
        .map_err(|e| sfn_error("DescribeExecution", aws_sdk_sfn::error::DisplayErrorContext(e)))?;
    let mut v = json!({
        "executionArn": execution_arn,
        "status": e.status().as_str(),
        "startDate": e.start_date().to_string(),
        "stopDate": e.stop_date().map(|d| d.to_string()),
        "error": e.error(),
        "cause": e.cause(),
    });
    if let Ok(runs) = client.list_map_runs().execution_arn(execution_arn).send().await {
        let mut counts = Vec::new();
        for run in runs.map_runs() {
            if let Ok(d) = client.describe_map_run().map_run_arn(run.map_run_arn()).send().await
                && let Some(c) = d.item_counts()
            {
                counts.push(json!({
                    "status": d.status().as_str(),
                    "total": c.total(), "succeeded": c.succeeded(), "failed": c.failed(),
                    "running": c.running(), "pending": c.pending(), "aborted": c.aborted(),
                }));
            }
        }
        v["mapRuns"] = json!(counts);
    }
    Ok(v)
}

pub async fn stop(client: &Client, execution_arn: &str) -> Result<(), CopyError> {
    client
        .stop_execution()
        .execution_arn(execution_arn)
        .error("trailcopy.Stopped")
        .cause("stopped with `trailcopy stop`")
        .send()
        .await
        .map_err(|e| sfn_error("StopExecution", aws_sdk_sfn::error::DisplayErrorContext(e)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_arns() {
        let sm = "arn:aws:states:us-east-1:111122223333:stateMachine:trailcopy";
        assert_eq!(execution_arn(sm, "c1").unwrap(), "arn:aws:states:us-east-1:111122223333:execution:trailcopy:c1");
        assert!(execution_arn("arn:aws:s3:::b", "c1").is_err());
        assert!(belongs("c1", "c1") && belongs("c1-retry-5", "c1") && !belongs("c10", "c1"));
    }
}
