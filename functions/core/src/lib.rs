//! trailcopy: copy AWS CloudTrail trail events into a Parquet event data store.
//!
//! The steps are the same for the state machine's Lambdas and the local runner:
//! [`plan_copy`] → per work item [`prepare_item`] (restores) and [`copy_item`] (batches from a
//! cursor) → [`finalize_copy`].

pub mod aws_error;
pub mod budget;
pub mod catalog;
pub mod claims;
pub mod copy;
pub mod digest;
pub mod discover;
pub mod error;
pub mod event;
pub mod export;
pub mod finalize;
pub mod kms;
pub mod layout;
pub mod pack;
pub mod plan;
pub mod prepare;
pub mod range;
pub mod record;
pub mod regional;
pub mod rollup;
pub mod runner;
pub mod serverless;
pub mod storage;
pub mod storage_class;
pub mod store;
pub mod summary;
pub mod tail;

pub use budget::FetchBudget;
pub use copy::{CopyLimits, CopyOutcome, copy_item, fail_item};
pub use error::CopyError;
pub use finalize::{current_record, finalize_copy, finalize_failed_run, read_failures};
pub use plan::{CopyContext, CopyRequest, RestoreRequest, plan_copy};
pub use prepare::{PrepareOutcome, prepare_item};
pub use record::{CopyRecord, CopyStatus, FailureEntry, Statistics, WorkItem};
pub use runner::{Amounts, Progress, ProgressTracker, RunOptions, reopen, retry_copy, run_copy};
pub use storage::AwsClients;
