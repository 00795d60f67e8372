//! Claims: which copies run into a store, over what. A copy adds its claim (source, effective
//! window, holder) to `STORE/claims.json` by compare-and-swap (S3 `If-None-Match`/`If-Match`;
//! a local store's exclusive-create lock), after checking that no running copy overlaps it. So of
//! two copies planned at the same instant exactly one proceeds: the other's swap fails, it reads
//! the winner's claim and is refused. Finalize releases the claim; a claim whose holder died
//! (its process is gone, its execution is no longer RUNNING) is taken over by `retry`.

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{CopyError, Result};
use crate::record::ResolvedRequest;
use crate::storage::{Location, ObjectStore, PutCondition};

/// Who runs a copy: a local process, or a state machine execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Holder {
    Process { pid: u32, host: String },
    Execution { execution: String },
}

impl Holder {
    /// This process.
    pub fn this_process() -> Holder {
        Holder::Process { pid: std::process::id(), host: host_name() }
    }

    pub fn describe(&self) -> String {
        match self {
            Holder::Process { pid, host } => format!("pid {pid} on {host}"),
            Holder::Execution { execution } => format!("execution {execution}"),
        }
    }
}

/// One running copy's claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    pub copy_id: String,
    pub source: String,
    pub start: Timestamp,
    pub end: Timestamp,
    pub holder: Holder,
    pub since: Timestamp,
}

impl Claim {
    pub fn new(copy_id: &str, request: &ResolvedRequest, holder: Holder) -> Claim {
        Claim {
            copy_id: copy_id.to_string(),
            source: request.source.clone(),
            start: request.start.max(request.retention_cutoff),
            end: request.end,
            holder,
            since: Timestamp::now(),
        }
    }

    /// Same or nested sources, and windows that intersect.
    fn overlaps(&self, other: &Claim) -> bool {
        let sources = match (Location::parse_source(&self.source), Location::parse_source(&other.source)) {
            (Ok(a), Ok(b)) => crate::plan::sources_overlap(&a, &b),
            _ => self.source == other.source,
        };
        sources && self.start < other.end && other.start < self.end
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Claims {
    claims: Vec<Claim>,
}

/// Whether an execution is still running: Step Functions DescribeExecution (the CLI and the
/// Enumerate Lambda have a client); `None` when it cannot tell.
#[async_trait]
pub trait ExecutionProbe: Send + Sync {
    async fn is_running(&self, execution_arn: &str) -> Option<bool>;
}

/// No Step Functions client: executions are taken to be running (the safe side).
pub struct NoProbe;

#[async_trait]
impl ExecutionProbe for NoProbe {
    async fn is_running(&self, _execution_arn: &str) -> Option<bool> {
        None
    }
}

/// Step Functions DescribeExecution. PENDING_REDRIVE counts as running: a redrive resumes it
/// (https://docs.aws.amazon.com/step-functions/latest/apireference/API_DescribeExecution.html).
pub struct SfnProbe(aws_sdk_sfn::Client);

impl SfnProbe {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        SfnProbe(aws_sdk_sfn::Client::new(config))
    }
}

#[async_trait]
impl ExecutionProbe for SfnProbe {
    async fn is_running(&self, execution_arn: &str) -> Option<bool> {
        let out = self.0.describe_execution().execution_arn(execution_arn).send().await.ok()?;
        Some(matches!(out.status().as_str(), "RUNNING" | "PENDING_REDRIVE"))
    }
}

/// Why a holder is known to be gone; `None` while it runs or cannot be told.
pub async fn holder_gone(holder: &Holder, probe: &dyn ExecutionProbe) -> Option<String> {
    match holder {
        Holder::Process { pid, host } if *host == host_name() => {
            (!process_alive(*pid)).then(|| format!("its process (pid {pid} on {host}) is gone"))
        }
        // Another machine's process: only that machine can tell.
        Holder::Process { .. } => None,
        Holder::Execution { execution } => match probe.is_running(execution).await {
            Some(false) => Some(format!("its execution {execution} is no longer RUNNING")),
            _ => None,
        },
    }
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // Signal 0 checks existence only; EPERM means it exists under another user.
    // SAFETY: kill with signal 0 sends nothing and touches no memory.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The store as the record spells it: `s3://bucket/prefix/`, or a folder without a trailing `/`.
fn store_display(store: &dyn ObjectStore, store_prefix: &str) -> String {
    let place = store.location(store_prefix);
    if place.starts_with("s3://") { place } else { place.trim_end_matches('/').to_string() }
}

fn claims_key(store_prefix: &str) -> String {
    format!("{store_prefix}claims.json")
}

/// Compare-and-swap attempts before giving up (retryable): planners of one store are few.
const CAS_ATTEMPTS: u32 = 50;

/// Adds `mine` to the store's claims, atomically with the check that no other running copy
/// overlaps it (skipped with `allow_overlap`). A claim of the same copy is replaced only when its
/// holder is gone (a retry taking over a crashed run), else the copy is refused as running.
pub async fn claim(
    store: &dyn ObjectStore,
    store_prefix: &str,
    mine: &Claim,
    allow_overlap: bool,
    probe: &dyn ExecutionProbe,
) -> Result<()> {
    let key = claims_key(store_prefix);
    for attempt in 0..CAS_ATTEMPTS {
        let (mut claims, condition) = read(store, &key).await?;
        let mut kept = Vec::with_capacity(claims.claims.len() + 1);
        for other in claims.claims.drain(..) {
            if other.copy_id == mine.copy_id {
                if other.holder != mine.holder && holder_gone(&other.holder, probe).await.is_none() {
                    return Err(CopyError::invalid(
                        "copyId",
                        format!(
                            "copy `{}` is running ({}, since {})",
                            other.copy_id,
                            other.holder.describe(),
                            other.since
                        ),
                    ));
                }
                continue;
            }
            if !allow_overlap && other.overlaps(mine) {
                let state = match holder_gone(&other.holder, probe).await {
                    None => format!("which is running ({}, since {})", other.holder.describe(), other.since),
                    Some(why) => format!(
                        "which is not running ({why}); resume it with `{}`",
                        crate::plan::retry_command(&other.copy_id, &store_display(store, store_prefix))
                    ),
                };
                return Err(CopyError::invalid(
                    "range",
                    format!(
                        "overlaps copy `{}`, {state}: it copies {} .. {} from {} into this store, and one copy at \
                         a time runs per range",
                        other.copy_id, other.start, other.end, other.source
                    ),
                ));
            }
            kept.push(other);
        }
        kept.push(mine.clone());
        if write(store, &key, &Claims { claims: kept }, &condition).await? {
            return Ok(());
        }
        backoff(attempt, &mine.copy_id).await;
    }
    Err(contended(store, &key))
}

/// Removes the copy's claim (finalize; a plan refused after claiming). Idempotent.
pub async fn release(store: &dyn ObjectStore, store_prefix: &str, copy_id: &str) -> Result<()> {
    let key = claims_key(store_prefix);
    for attempt in 0..CAS_ATTEMPTS {
        let (mut claims, condition) = read(store, &key).await?;
        let before = claims.claims.len();
        claims.claims.retain(|c| c.copy_id != copy_id);
        if claims.claims.len() == before {
            return Ok(());
        }
        if write(store, &key, &claims, &condition).await? {
            return Ok(());
        }
        backoff(attempt, copy_id).await;
    }
    Err(contended(store, &key))
}

/// The copy's claim, if it has one.
pub async fn claim_of(store: &dyn ObjectStore, store_prefix: &str, copy_id: &str) -> Result<Option<Claim>> {
    let (claims, _) = read(store, &claims_key(store_prefix)).await?;
    Ok(claims.claims.into_iter().find(|c| c.copy_id == copy_id))
}

/// Why an unfinished copy is not running: no claim, or its holder is gone. `None` while it runs
/// (or nothing can tell).
pub async fn not_running(
    store: &dyn ObjectStore,
    store_prefix: &str,
    copy_id: &str,
    probe: &dyn ExecutionProbe,
) -> Result<Option<String>> {
    Ok(match claim_of(store, store_prefix, copy_id).await? {
        None => Some("no process or execution holds it".into()),
        Some(c) => holder_gone(&c.holder, probe).await,
    })
}

async fn read(store: &dyn ObjectStore, key: &str) -> Result<(Claims, PutCondition)> {
    Ok(match store.get_versioned(key).await? {
        Some((body, tag)) => (
            serde_json::from_slice(&body).map_err(|e| CopyError::Storage {
                location: store.location(key),
                message: format!("unreadable claims: {e}"),
            })?,
            PutCondition::Matches(tag),
        ),
        None => (Claims::default(), PutCondition::Absent),
    })
}

async fn write(store: &dyn ObjectStore, key: &str, claims: &Claims, condition: &PutCondition) -> Result<bool> {
    let body = serde_json::to_vec_pretty(claims)
        .map_err(|e| CopyError::Storage { location: store.location(key), message: e.to_string() })?;
    store.put_if(key, body.into(), condition).await
}

async fn backoff(attempt: u32, salt: &str) {
    let jitter = u64::from(attempt.min(10)) * 5 + xxhash_rust::xxh3::xxh3_64(salt.as_bytes()) % 20;
    tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
}

fn contended(store: &dyn ObjectStore, key: &str) -> CopyError {
    CopyError::Retryable {
        location: store.location(key),
        message: format!("the store's claims are still contended after {CAS_ATTEMPTS} attempts"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn c(id: &str, source: &str, start: &str, end: &str) -> Claim {
        Claim {
            copy_id: id.into(),
            source: source.into(),
            start: ts(start),
            end: ts(end),
            holder: Holder::this_process(),
            since: ts(start),
        }
    }

    #[test]
    fn overlap_needs_nested_sources_and_intersecting_windows() {
        let a = c("a", "s3://trail/AWSLogs/", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z");
        for (other, overlaps) in [
            (c("b", "s3://trail/AWSLogs/", "2026-01-01T12:00:00Z", "2026-01-03T00:00:00Z"), true),
            (c("b", "s3://trail/", "2025-12-01T00:00:00Z", "2026-01-01T00:00:01Z"), true),
            (c("b", "s3://trail/AWSLogs/", "2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"), false),
            (c("b", "s3://trail/AWSLogs/", "2025-12-31T00:00:00Z", "2026-01-01T00:00:00Z"), false),
            (c("b", "s3://other-trail/AWSLogs/", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"), false),
        ] {
            assert_eq!(a.overlaps(&other), overlaps, "{other:?}");
            assert_eq!(other.overlaps(&a), overlaps, "{other:?}");
        }
    }

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_gone() {
        assert!(process_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!process_alive(pid));
        assert!(!host_name().is_empty());
    }

    #[test]
    fn holders_serialize_as_the_record_shows_them() {
        let p = serde_json::to_value(Holder::Process { pid: 7, host: "h".into() }).unwrap();
        assert_eq!(p, serde_json::json!({"pid": 7, "host": "h"}));
        let e: Holder = serde_json::from_value(serde_json::json!({"execution": "arn:x"})).unwrap();
        assert_eq!(e, Holder::Execution { execution: "arn:x".into() });
    }
}
