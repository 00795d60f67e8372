//! Rules of the deployed stack that the local runner does not have: an execution may only use the
//! source and store the stack's IAM, ItemReader and ResultWriter cover, in the stack's region,
//! within the execution's time limit; and the names Step Functions accepts.

use jiff::Timestamp;

use crate::error::{CopyError, Result};
use crate::plan::CopyRequest;
use crate::storage::Location;

/// The state machine's overall `TimeoutSeconds` (statemachine/copy-trail-events.asl.json): a stuck
/// execution ends TIMED_OUT instead of running for a year (a Standard workflow's limit,
/// https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html).
pub const EXECUTION_TIMEOUT_SECONDS: u64 = 7 * 86_400;

/// The longest restore wait an execution accepts: it leaves two days of the execution's time for
/// copying after the restores.
pub const MAX_RESTORE_WAIT_SECONDS: u64 = EXECUTION_TIMEOUT_SECONDS - 2 * 86_400;

/// Step Functions names (state machines, executions): 1-80 characters, none of whitespace,
/// `< > { } [ ] ? * " # % \ ^ | ~ ` $ & , ; : /` or control characters
/// (https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html).
pub const MAX_NAME_LEN: usize = 80;

pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_NAME_LEN
        && name.chars().all(|c| {
            !c.is_whitespace()
                && !c.is_control()
                && !('\u{7f}'..='\u{9f}').contains(&c)
                && !"<>{}[]?*\"#%\\^|~`$&,;:/".contains(c)
        })
}

/// What the stack's policies cover: the source (and anything under it) and exactly one store.
#[derive(Debug, Clone)]
pub struct StackScope {
    pub source: Location,
    pub store: Location,
}

impl StackScope {
    /// From the functions' environment (DEFAULT_SOURCE, DEFAULT_STORE in template.yaml).
    pub fn new(source: &str, store: &str) -> Result<StackScope> {
        Ok(StackScope { source: Location::parse("source", source)?, store: Location::parse("store", store)? })
    }

    /// Refuses a request that points the execution elsewhere: the stack's IAM grants, the
    /// ItemReader (`<store>copies/*`) and the ResultWriter (`<store>map-runs`) cover only these.
    pub fn check(&self, req: &CopyRequest) -> Result<()> {
        if let Some(s) = &req.source {
            let source = Location::parse("source", s)?;
            if !self.source.contains(&source) {
                return Err(CopyError::invalid(
                    "source",
                    format!(
                        "{} is outside this stack's source {}: its IAM policies only read that (deploy the stack \
                         with SourceBucket/SourcePrefix for another source)",
                        source.display(),
                        self.source.display()
                    ),
                ));
            }
        }
        if let Some(s) = &req.store {
            let store = Location::parse("store", s)?;
            if store != self.store {
                return Err(CopyError::invalid(
                    "store",
                    format!(
                        "{} is not this stack's store {}: its IAM policies, the Distributed Map's ItemReader and \
                         ResultWriter and the Athena table cover only that",
                        store.display(),
                        self.store.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The store bucket must be in the stack's region: the Distributed Map's ResultWriter fails with
/// States.ResultWriterFailed otherwise
/// (https://docs.aws.amazon.com/step-functions/latest/dg/input-output-resultwriter.html).
pub fn check_store_region(store_bucket: &str, bucket_region: Option<&str>, stack_region: Option<&str>) -> Result<()> {
    match (bucket_region, stack_region) {
        (Some(b), Some(s)) if b != s => Err(CopyError::invalid(
            "store",
            format!(
                "bucket {store_bucket} is in {b}, the stack in {s}: the Distributed Map writes its results only to a \
                 bucket in its own region; use a store bucket in {s} (or deploy the stack in {b})"
            ),
        )),
        _ => Ok(()),
    }
}

/// Refuses a restore wait longer than an execution can wait and still copy.
pub fn check_restore_wait(req: &CopyRequest) -> Result<()> {
    match req.restore.as_ref().and_then(|r| r.max_wait_seconds) {
        Some(w) if w > MAX_RESTORE_WAIT_SECONDS => Err(CopyError::invalid(
            "restore.maxWaitSeconds",
            format!(
                "{w} s is longer than an execution may wait ({MAX_RESTORE_WAIT_SECONDS} s: the state machine times out \
                 after {EXECUTION_TIMEOUT_SECONDS} s); wait less and retry the copy once the restores have finished"
            ),
        )),
        _ => Ok(()),
    }
}

/// What the account leaves the copy's Lambdas: `UnreservedConcurrentExecutions` of Lambda
/// GetAccountSettings (unknown when it cannot be read), and the Copy function's reservation
/// (`CopyReservedConcurrency`, 0 for none). New accounts can have far less than the default 1,000
/// (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountConcurrency {
    pub unreserved: Option<u32>,
    pub copy_reserved: u32,
}

/// The Distributed Map's concurrency: what the stack asks (`MaxConcurrency`), capped to what the
/// copy can have, so that no item runs out of its throttling retries. Each running item holds one
/// Prepare or one Copy invocation: Copy within its reservation when it has one, Prepare (and Copy
/// without one) in the unreserved pool, of which a fifth is left to the account's other functions
/// (and this stack's Enumerate and Finalize). At least 1.
pub fn map_concurrency(asked: u32, account: AccountConcurrency) -> u32 {
    let mut cap = asked;
    if account.copy_reserved > 0 {
        cap = cap.min(account.copy_reserved);
    }
    if let Some(unreserved) = account.unreserved {
        cap = cap.min(unreserved - unreserved.div_ceil(5));
    }
    cap.max(1)
}

/// The copy id of a scheduled run: findable by its scheduled time (`scheduled-20261124T010000Z`),
/// and the same for a schedule's redelivery of that time, which is then refused (copy exists).
pub fn scheduled_copy_id(scheduled: Timestamp) -> String {
    format!("scheduled-{}", scheduled.strftime("%Y%m%dT%H%M%SZ"))
}

/// The copy id of an execution started without one (console, API): the execution's own name, so
/// the console's execution list and the store's copies agree; `None` when the name is not a valid
/// copy id.
pub fn copy_id_of_execution(execution_arn: &str) -> Option<String> {
    let name = execution_arn.rsplit(':').next()?;
    crate::record::validate_copy_id(name).ok().map(|()| name.to_string())
}

/// The copy an execution runs, from its input: the `copyId` (a retry names its copy), the scheduled
/// copy id of a scheduled run, or (started without one, from the console) the execution's name,
/// which Enumerate takes as the copy id.
pub fn copy_id_of_input(input: &serde_json::Value, execution_arn: &str) -> Option<String> {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    if let Some(id) = input.get("copyId").and_then(text) {
        return Some(id);
    }
    let scheduled = input.get("scheduledTime").or_else(|| input.pointer("/request/scheduledTime"));
    if let Some(t) = scheduled.and_then(serde_json::Value::as_str) {
        return t.parse().ok().map(scheduled_copy_id);
    }
    copy_id_of_execution(execution_arn)
}

/// The state machine of an execution: `arn:P:states:R:A:execution:NAME:ID` → `arn:P:states:R:A:stateMachine:NAME`.
pub fn state_machine_of(execution_arn: &str) -> Option<String> {
    let (head, _id) = execution_arn.rsplit_once(':')?;
    head.contains(":execution:").then(|| head.replacen(":execution:", ":stateMachine:", 1))
}

/// The name of a retry execution: `<copyId>-retry-<unix seconds>`, shortened with a hash of the
/// copy id when that would pass 80 characters, so any valid copy id gets a legal, distinct name.
pub fn retry_execution_name(copy_id: &str, now: Timestamp) -> String {
    let suffix = format!("-retry-{}", now.as_second());
    if copy_id.len() + suffix.len() <= MAX_NAME_LEN {
        return format!("{copy_id}{suffix}");
    }
    let hash = format!("-{:08x}", xxhash_rust::xxh3::xxh3_64(copy_id.as_bytes()) as u32);
    let keep = MAX_NAME_LEN - suffix.len() - hash.len();
    // Copy ids are ASCII, so any byte index is a char boundary.
    format!("{}{hash}{suffix}", &copy_id[..keep.min(copy_id.len())])
}

/// Adds an execution to the copy's record, so `trailcopy status` finds the executions of any copy
/// (a scheduled run's execution name is not its copy id).
pub async fn record_execution(ctx: &crate::CopyContext, execution_arn: &str) -> Result<()> {
    let mut record = ctx.read_record().await?;
    if !record.executions.iter().any(|e| e == execution_arn) {
        record.executions.push(execution_arn.to_string());
        ctx.write_record(&record).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::validate_copy_id;

    #[test]
    fn retry_names_are_legal_for_every_valid_copy_id() {
        let now: Timestamp = "2026-11-24T01:02:03Z".parse().unwrap();
        let alphabet = b"AZaz09._-";
        let mut seen = std::collections::HashSet::new();
        let mut ids = std::collections::BTreeSet::new();
        for len in 1..=80 {
            for &c in alphabet {
                ids.insert(std::iter::once('a').chain(std::iter::repeat_n(c as char, len - 1)).collect::<String>());
            }
        }
        {
            for id in ids {
                assert!(validate_copy_id(&id).is_ok(), "{id}");
                let name = retry_execution_name(&id, now);
                assert!(is_valid_name(&name), "{id} -> {name} ({} chars)", name.len());
                assert!(seen.insert(name.clone()), "two copy ids share the retry name {name}");
            }
        }
        assert_eq!(retry_execution_name("c1", now), format!("c1-retry-{}", now.as_second()));
    }

    #[test]
    fn step_functions_name_rules() {
        assert!(is_valid_name("20261124T010203Z-1a2b3c4d"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name(&"a".repeat(81)));
        for bad in ["a b", "a:b", "a/b", "a*b", "a{b", "a$b", "a,b", "a\u{7}b", "a\u{85}b"] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn scheduled_and_execution_copy_ids() {
        let at: Timestamp = "2026-11-24T01:00:00Z".parse().unwrap();
        assert_eq!(scheduled_copy_id(at), "scheduled-20261124T010000Z");
        assert!(validate_copy_id(&scheduled_copy_id(at)).is_ok());
        let arn = "arn:aws:states:us-east-1:111122223333:execution:trailcopy-x:6f1c0b8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(copy_id_of_execution(arn).as_deref(), Some("6f1c0b8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"));
        assert_eq!(copy_id_of_execution("arn:aws:states:r:a:execution:sm:.hidden"), None);
    }

    #[test]
    fn the_map_runs_no_more_items_than_the_account_can_invoke() {
        let acct = |unreserved, copy_reserved| AccountConcurrency { unreserved, copy_reserved };
        for (asked, account, cap) in [
            (40, acct(Some(1000), 0), 40), // the default account: MaxConcurrency as asked
            (40, acct(Some(50), 0), 40),   // 50 - 10 for the rest of the account
            (40, acct(Some(10), 0), 8),    // a fresh account's 10
            (40, acct(Some(1), 0), 1),     // never 0
            (40, acct(Some(0), 0), 1),
            (40, acct(Some(900), 20), 20), // the Copy function's reservation
            (40, acct(Some(10), 20), 8),   // Prepare still runs in the unreserved pool
            (500, acct(None, 0), 500),     // GetAccountSettings unreadable: as asked
            (500, acct(None, 30), 30),
        ] {
            assert_eq!(map_concurrency(asked, account), cap, "{asked} {account:?}");
        }
    }

    #[test]
    fn the_copy_of_an_execution_comes_from_its_input() {
        let arn = "arn:aws:states:us-east-1:111122223333:execution:trailcopy-x:console-run-1";
        for (input, id) in [
            (serde_json::json!({"copyId": "c1", "retry": true}), Some("c1")),
            (
                serde_json::json!({"request": {"scheduledTime": "2026-11-24T01:00:00Z"}}),
                Some("scheduled-20261124T010000Z"),
            ),
            (serde_json::json!({"scheduledTime": "2026-11-24T01:00:00Z"}), Some("scheduled-20261124T010000Z")),
            (serde_json::json!({"last": "1h"}), Some("console-run-1")),
            (serde_json::json!({}), Some("console-run-1")),
        ] {
            assert_eq!(copy_id_of_input(&input, arn).as_deref(), id, "{input}");
        }
        assert_eq!(
            state_machine_of(arn).as_deref(),
            Some("arn:aws:states:us-east-1:111122223333:stateMachine:trailcopy-x")
        );
        assert_eq!(state_machine_of("arn:aws:s3:::bucket"), None);
    }

    #[test]
    fn the_stack_scope_covers_its_source_and_only_its_store() {
        let scope = StackScope::new("s3://trail/AWSLogs/o-abc123/", "s3://store/eds/").unwrap();
        let req = |source: &str, store: &str| CopyRequest {
            source: Some(source.into()),
            store: Some(store.into()),
            ..Default::default()
        };
        assert!(scope.check(&req("s3://trail/AWSLogs/o-abc123/", "s3://store/eds/")).is_ok());
        assert!(scope.check(&req("s3://trail/AWSLogs/o-abc123/111122223333/", "s3://store/eds")).is_ok());
        for (source, store, field) in [
            ("s3://trail/AWSLogs/", "s3://store/eds/", "source"),
            ("s3://other/AWSLogs/o-abc123/", "s3://store/eds/", "source"),
            ("s3://trail/AWSLogs/o-abc123/", "s3://store/", "store"),
            ("s3://trail/AWSLogs/o-abc123/", "s3://store/eds/sub/", "store"),
            ("s3://trail/AWSLogs/o-abc123/", "s3://elsewhere/eds/", "store"),
        ] {
            match scope.check(&req(source, store)) {
                Err(CopyError::InvalidRequest { field: f, reason }) => {
                    assert_eq!(f, field, "{source} {store}: {reason}");
                }
                other => panic!("{source} {store}: {other:?}"),
            }
        }
    }

    #[test]
    fn store_region_and_restore_wait() {
        assert!(check_store_region("b", Some("us-east-1"), Some("us-east-1")).is_ok());
        assert!(check_store_region("b", None, Some("us-east-1")).is_ok());
        let e = check_store_region("b", Some("eu-west-1"), Some("us-east-1")).unwrap_err();
        assert!(matches!(e, CopyError::InvalidRequest { field: "store", .. }), "{e}");
        let wait = |s| CopyRequest {
            restore: Some(crate::plan::RestoreRequest { max_wait_seconds: Some(s), ..Default::default() }),
            ..Default::default()
        };
        assert!(check_restore_wait(&wait(MAX_RESTORE_WAIT_SECONDS)).is_ok());
        assert!(check_restore_wait(&wait(MAX_RESTORE_WAIT_SECONDS + 1)).is_err());
    }
}
