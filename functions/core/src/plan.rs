//! Plan a copy: validate the request, resolve its window once, find the day prefixes in scope
//! (discover.rs: bounded listing, never the whole bucket) and pack them into work items
//! (pack.rs).

use std::sync::Arc;

use futures::StreamExt;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::claims::{self, Claim, ExecutionProbe, Holder};
use crate::digest::keys::{PublicKey, parse_public_keys};
use crate::digest::{CloudTrailKeys, KeyFile, PublicKeySource};
use crate::discover;
use crate::error::{CopyError, Result};
use crate::kms::{KeyChecker, KeyState, KmsKeyChecker};
use crate::layout;
use crate::pack::{PackLimits, Packer, SealedItem};
use crate::range::{self, DEFAULT_RETENTION_DAYS, Window};
use crate::record::{
    Attempt, CopyRecord, CopyStatus, RecordKeys, ResolvedRequest, RestoreOptions, Statistics, VerificationRequest,
    WorkItem, new_copy_id, read_json, validate_copy_id, write_json, write_json_compact,
};
use crate::storage::{AwsClients, Location, ObjectStore, PutCondition};
use crate::storage_class::check_tier;

/// Local folders have no KMS keys.
struct NoKeys;

#[async_trait::async_trait]
impl KeyChecker for NoKeys {
    async fn describe(&self, _key_id: &str) -> Result<KeyState> {
        Ok(KeyState::Enabled)
    }
}

/// A copy request: the execution input and the CLI flags alike.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CopyRequest {
    pub source: Option<String>,
    pub store: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub last: Option<String>,
    pub retention_days: Option<u32>,
    pub copy_id: Option<String>,
    pub restore: Option<RestoreRequest>,
    /// SSE-KMS key (id or ARN) for the store's objects.
    pub store_kms_key: Option<String>,
    /// Copy even when an earlier copy from the same source into this store overlaps the range.
    #[serde(default)]
    pub allow_overlap: bool,
    /// Check every file read against CloudTrail's signed digests.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify_digests: bool,
    /// Skip (and list) files not verified; implies `verifyDigests`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_verified: bool,
    /// CloudTrail's public keys, as `aws cloudtrail list-public-keys` prints them (one document per
    /// region); without them an s3:// source asks CloudTrail ListPublicKeys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest_public_keys: Option<Vec<serde_json::Value>>,
    /// Copy from where the last completed copy of this source into this store is complete, to now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub since_last: bool,
    /// How late log files may arrive (default [`DEFAULT_DELIVERY_ALLOWANCE`]): a window ending
    /// closer than this to the planning time is complete only through planning time − it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_allowance: Option<String>,
}

/// The default delivery allowance: CloudTrail delivers a log file about 5 minutes after its events
/// on average, without a guarantee
/// (https://docs.aws.amazon.com/awscloudtrail/latest/userguide/get-and-view-cloudtrail-log-files.html).
pub const DEFAULT_DELIVERY_ALLOWANCE: &str = "1h";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreRequest {
    /// `Bulk` (default), `Standard`, `Expedited`, or `None`.
    pub tier: Option<String>,
    pub days: Option<i32>,
    pub poll_seconds: Option<u64>,
    pub max_wait_seconds: Option<u64>,
}

/// Everything a step needs to work on one copy.
pub struct CopyContext {
    pub copy_id: String,
    pub request: ResolvedRequest,
    pub window: Window,
    pub source_location: Location,
    pub source: Arc<dyn ObjectStore>,
    pub store_location: Location,
    pub store: Arc<dyn ObjectStore>,
    pub keys: RecordKeys,
    /// Checks the source's SSE-KMS keys.
    pub kms: Arc<dyn KeyChecker>,
    /// CloudTrail's public keys, when the copy verifies digests.
    pub digest_keys: Option<Arc<dyn PublicKeySource>>,
}

impl CopyContext {
    /// Opens an existing copy from its record in the store.
    pub async fn open(aws: &AwsClients, store_uri: &str, copy_id: &str) -> Result<CopyContext> {
        validate_copy_id(copy_id)?;
        let (store_location, store) = crate::catalog::open_to_read(aws, store_uri).await?;
        let keys = RecordKeys::new(store_location.prefix(), copy_id);
        let Some(record) = read_json::<CopyRecord>(store.as_ref(), &keys.record()).await? else {
            return Err(crate::catalog::unknown_copy(store.as_ref(), &store_location, copy_id).await);
        };
        Self::from_record(aws, record, store_location, store, keys).await
    }

    async fn from_record(
        aws: &AwsClients,
        record: CopyRecord,
        store_location: Location,
        store: Arc<dyn ObjectStore>,
        keys: RecordKeys,
    ) -> Result<CopyContext> {
        let source_location = Location::parse_source(&record.request.source)?;
        let source = source_location.open(aws).await?;
        let store = match &record.request.store_kms_key {
            Some(k) => store_location.open_store(aws, Some(k)).await?,
            None => store,
        };
        let kms: Arc<dyn KeyChecker> = match &source_location {
            Location::S3 { .. } => Arc::new(KmsKeyChecker::new(aws.sdk_config().await.clone())),
            Location::Local { .. } => Arc::new(NoKeys),
        };
        let r = &record.request;
        let window = Window { start: r.start, end: r.end, retention_cutoff: r.retention_cutoff };
        let digest_keys = match &r.verification {
            Some(v) => Some(digest_key_source(aws, v, &source_location).await?),
            None => None,
        };
        Ok(CopyContext {
            copy_id: record.copy_id.clone(),
            request: record.request,
            window,
            source_location,
            source,
            store_location,
            store,
            keys,
            kms,
            digest_keys,
        })
    }

    pub async fn read_record(&self) -> Result<CopyRecord> {
        read_json(self.store.as_ref(), &self.keys.record())
            .await?
            .ok_or_else(|| CopyError::State(format!("copy record of `{}` disappeared", self.copy_id)))
    }

    pub async fn write_record(&self, record: &CopyRecord) -> Result<()> {
        write_json(self.store.as_ref(), &self.keys.record(), record).await
    }

    pub async fn work_items(&self) -> Result<Vec<WorkItem>> {
        read_json(self.store.as_ref(), &self.keys.work_items())
            .await?
            .ok_or_else(|| CopyError::State(format!("copy `{}` has no work items yet", self.copy_id)))
    }
}

/// The keys a verifying copy checks digests with: the request's, else CloudTrail ListPublicKeys.
async fn digest_key_source(
    aws: &AwsClients,
    v: &VerificationRequest,
    source: &Location,
) -> Result<Arc<dyn PublicKeySource>> {
    if !v.public_keys.is_empty() {
        let entries = [serde_json::Value::Array(v.public_keys.clone())];
        return Ok(Arc::new(KeyFile::new(parse_request_keys(&entries)?, "the copy request".into())));
    }
    match source {
        Location::S3 { .. } => Ok(Arc::new(CloudTrailKeys::new(aws.sdk_config().await.clone()))),
        Location::Local { .. } => Err(CopyError::invalid("digestPublicKeys", LOCAL_NEEDS_KEYS)),
    }
}

const LOCAL_NEEDS_KEYS: &str = "a local folder needs CloudTrail's public keys: save `aws cloudtrail list-public-keys \
     --start-time ... --end-time ... --region R` for each region and pass the files";

/// The request's key documents (each what `list-public-keys` prints), checked, as keys.
fn parse_request_keys(docs: &[serde_json::Value]) -> Result<Vec<PublicKey>> {
    let mut keys = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let bytes = serde_json::to_vec(doc).map_err(|e| CopyError::invalid("digestPublicKeys", e.to_string()))?;
        keys.extend(
            parse_public_keys(&bytes).map_err(|e| CopyError::invalid("digestPublicKeys", format!("[{i}]: {e}")))?,
        );
    }
    Ok(keys)
}

/// The verification part of a request: the keys checked and kept as `list-public-keys` entries.
fn resolve_verification(req: &CopyRequest, source: &Location) -> Result<Option<VerificationRequest>> {
    let docs = req.digest_public_keys.as_deref().unwrap_or_default();
    if !(req.verify_digests || req.require_verified) {
        if !docs.is_empty() {
            return Err(CopyError::invalid("digestPublicKeys", "is only used with --verify-digests (verifyDigests)"));
        }
        return Ok(None);
    }
    let keys = parse_request_keys(docs)?;
    if !docs.is_empty() && keys.is_empty() {
        return Err(CopyError::invalid("digestPublicKeys", "no public keys in the document(s)"));
    }
    if keys.is_empty() && matches!(source, Location::Local { .. }) {
        return Err(CopyError::invalid("digestPublicKeys", LOCAL_NEEDS_KEYS));
    }
    Ok(Some(VerificationRequest {
        require_verified: req.require_verified,
        public_keys: keys.iter().map(PublicKey::to_entry).collect(),
    }))
}

/// Each restore wait loop of the state machine costs ~11 history events; an execution has 25,000.
pub const MAX_RESTORE_POLLS: u64 = 2000;

/// What the serverless runner needs beyond a valid request: S3 on both sides (Lambdas have no
/// local folders) and a restore wait that fits the execution history.
pub fn check_serverless(req: &CopyRequest, retry: bool) -> Result<()> {
    for (field, value) in [("source", &req.source), ("store", &req.store)] {
        if retry && field == "source" {
            continue;
        }
        match value.as_deref().map(|v| Location::parse(field, v)).transpose()? {
            Some(Location::S3 { .. }) => {}
            Some(Location::Local { .. }) => {
                return Err(CopyError::invalid(field, "must be s3://bucket[/prefix] on the state machine"));
            }
            None => return Err(CopyError::invalid(field, "is required (no default in the stack)")),
        }
    }
    if let Some(r) = &req.restore {
        let tier = RestoreOptions { tier: canonical_tier(r.tier.as_deref()), ..Default::default() };
        let polls = r.max_wait_seconds.unwrap_or_else(|| tier.max_wait_limit())
            / r.poll_seconds.unwrap_or(RestoreOptions::default().poll_seconds).max(1);
        if polls > MAX_RESTORE_POLLS {
            return Err(CopyError::invalid(
                "restore.pollSeconds",
                format!(
                    "restore.maxWaitSeconds / restore.pollSeconds is {polls} polls; at most {MAX_RESTORE_POLLS} fit an \
                     execution: poll less often or wait less"
                ),
            ));
        }
    }
    Ok(())
}

/// The tier name a request's `restore.tier` stands for (unknown names are refused later).
fn canonical_tier(tier: Option<&str>) -> String {
    match tier.map(str::to_ascii_lowercase).as_deref() {
        Some("standard") => "Standard",
        Some("expedited") => "Expedited",
        Some("no" | "none") => "None",
        _ => "Bulk",
    }
    .into()
}

/// Checks a request and resolves it against `now`, before any work. Source and store are
/// kept in their canonical form (see [`Location`]); a local source must be a trail folder.
pub fn resolve_request(req: &CopyRequest, now: Timestamp) -> Result<(ResolvedRequest, Location, Location)> {
    let source_text = req.source.as_deref().ok_or_else(|| CopyError::invalid("source", "is required"))?;
    let store_text = req.store.as_deref().ok_or_else(|| CopyError::invalid("store", "is required"))?;
    let source = Location::parse_source(source_text)?;
    let store = Location::parse("store", store_text)?;
    if source.contains(&store) {
        return Err(CopyError::invalid(
            "store",
            format!(
                "{} lies inside the source {}: the copy would read its own output",
                store.display(),
                source.display()
            ),
        ));
    }
    if let Some(id) = &req.copy_id {
        validate_copy_id(id)?;
    }
    let retention_days = req.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS);
    if req.since_last && req.last.is_some() {
        return Err(CopyError::invalid("sinceLast", "give either --since-last or a range (--start/--end, --last)"));
    }
    let (window, asked_end) = range::resolve_window_asked(
        req.start.as_deref(),
        req.end.as_deref(),
        req.last.as_deref(),
        retention_days,
        now,
    )?;
    let allowance = range::parse_duration(
        "deliveryAllowance",
        req.delivery_allowance.as_deref().unwrap_or(DEFAULT_DELIVERY_ALLOWANCE),
    )?;
    let settled = now.saturating_sub(allowance).unwrap_or(Timestamp::MIN);
    let mut restore = RestoreOptions::default();
    if let Some(r) = &req.restore {
        if let Some(t) = &r.tier {
            let tier = match t.to_ascii_lowercase().as_str() {
                "bulk" => "Bulk",
                "standard" => "Standard",
                "expedited" => "Expedited",
                "no" | "none" => "None",
                _ => {
                    return Err(CopyError::invalid(
                        "restore",
                        format!("tier `{t}`: use no, bulk, standard or expedited"),
                    ));
                }
            };
            restore.tier = tier.into();
        }
        if let Some(d) = r.days {
            if !(1..=30).contains(&d) {
                return Err(CopyError::invalid("restore", "days must be 1..30"));
            }
            restore.days = d;
        }
        if let Some(p) = r.poll_seconds {
            restore.poll_seconds = p.max(1);
        }
        if let Some(m) = r.max_wait_seconds {
            restore.max_wait_seconds = Some(m);
        }
    }
    if restore.tier != "None" {
        check_tier(&restore.tier, None).map_err(|e| CopyError::invalid("restore", e))?;
    }
    let resolved = ResolvedRequest {
        source: source.display(),
        store: store.display(),
        start: window.start,
        end: window.end,
        last: req.last.clone(),
        retention_days,
        retention_cutoff: window.retention_cutoff,
        restore,
        store_kms_key: req.store_kms_key.clone().filter(|k| !k.is_empty()),
        allow_overlap: req.allow_overlap,
        verification: resolve_verification(req, &source)?,
        requested_end: (asked_end != window.end).then_some(asked_end),
        delivery_allowance_seconds: Some(allowance.as_secs().max(0) as u64),
        complete_through: Some(window.end.min(settled).max(window.start)),
        continues: None,
        tail_until: None,
    };
    if resolved.store_kms_key.is_some() && matches!(store, Location::Local { .. }) {
        return Err(CopyError::invalid("storeKmsKey", "SSE-KMS needs an s3:// store"));
    }
    // What the request says is checked first; then whether the source can be a trail at all.
    check_narrowing(&source)?;
    source.check_local_source()?;
    Ok((resolved, source, store))
}

/// A source narrowed below an account names its service folder: only `CloudTrail/` is read.
fn check_narrowing(source: &Location) -> Result<()> {
    let narrowing = layout::trail_root(source.prefix()).narrowing;
    let service = if narrowing.first().is_some_and(|s| layout::is_org_id(s)) { 2 } else { 1 };
    match narrowing.get(service) {
        Some(n) if n != "CloudTrail" => Err(CopyError::invalid(
            "source",
            format!("`{n}` folders are not read: only CloudTrail/ holds trail events"),
        )),
        _ => Ok(()),
    }
}

/// Plans a copy: claims its range in the store (atomically: of two overlapping copies planned
/// at once, one is refused), writes the record (INITIALIZING), the work items, then the record
/// IN_PROGRESS. A copy that fails before its first work item is recorded FAILED with the reason,
/// so nothing is left INITIALIZING and `retry` plans it again once the cause is fixed.
pub async fn plan_copy(
    aws: &AwsClients,
    req: &CopyRequest,
    now: Timestamp,
    holder: Holder,
    probe: &dyn ExecutionProbe,
) -> Result<(CopyContext, Vec<WorkItem>)> {
    // Truncated, never rounded up: createdTime must not lie after the record's first update.
    let now =
        now.round(jiff::TimestampRound::new().smallest(jiff::Unit::Second).mode(jiff::RoundMode::Trunc)).unwrap_or(now);
    let mut req = req.clone();
    let mut continues = None;
    if req.since_last {
        continues = Some(resolve_since_last(aws, &mut req, now).await?);
    }
    let (mut resolved, _source, store_location) = resolve_request(&req, now)?;
    store_location.check_local_store_writable()?;
    resolved.continues = continues;
    let copy_id = req.copy_id.clone().unwrap_or_else(|| new_copy_id(now));
    let store = store_location.open(aws).await?;
    let keys = RecordKeys::new(store_location.prefix(), &copy_id);
    if let Some(existing) = read_json::<CopyRecord>(store.as_ref(), &keys.record()).await? {
        if replans(&existing, &holder) {
            // A retried Enumerate of this execution (a timeout, a transient error): plan again.
            let claim = Claim::new(&copy_id, &existing.request, holder);
            claims::claim(store.as_ref(), store_location.prefix(), &claim, true, probe).await?;
            let ctx = CopyContext::from_record(aws, existing, store_location, store, keys).await?;
            let items = discover_work_items(&ctx).await?;
            return Ok((ctx, items));
        }
        let hint = match existing.status {
            CopyStatus::Completed => "it is complete: pick another --copy-id".to_string(),
            _ => format!("resume it with `{}`", retry_command(&copy_id, &existing.request.store)),
        };
        return Err(CopyError::invalid(
            "copyId",
            format!("copy `{copy_id}` already exists ({}); {hint}", existing.status.as_str()),
        ));
    }
    let prefix = &store_location.prefix().to_string();
    claims::claim(
        store.as_ref(),
        prefix,
        &Claim::new(&copy_id, &resolved, holder.clone()),
        resolved.allow_overlap,
        probe,
    )
    .await?;
    let record = async {
        if !resolved.allow_overlap {
            resolved.tail_until = check_overlap(store.as_ref(), prefix, &copy_id, &resolved).await?;
        }
        if let Some(until) = resolved.tail_until {
            let seen = crate::tail::stored_keys(store.as_ref(), prefix, resolved.start, until).await?;
            store.put(&keys.tail_seen(), crate::copy::key_bytes(&seen).into()).await?;
        }
        let record = CopyRecord {
            copy_id: copy_id.clone(),
            status: CopyStatus::Initializing,
            request: resolved,
            statistics: Statistics::default(),
            created_time: now,
            updated_time: now,
            message: None,
            // Recorded at once: a retried Enumerate of this execution finds its own record.
            executions: match &holder {
                Holder::Execution { execution } => vec![execution.clone()],
                Holder::Process { .. } => Vec::new(),
            },
            verification: None,
            attempts: vec![Attempt::start(1, "copy")],
        };
        write_json(store.as_ref(), &keys.record(), &record).await?;
        Ok(record)
    }
    .await;
    let record = match record {
        Ok(r) => r,
        Err(e) => {
            if let Err(release_error) = claims::release(store.as_ref(), prefix, &copy_id).await {
                tracing::warn!(error = %release_error, "could not release the claim of a refused copy");
            }
            return Err(e);
        }
    };
    let planned = match CopyContext::from_record(aws, record.clone(), store_location, store.clone(), keys.clone()).await
    {
        Ok(ctx) => discover_work_items(&ctx).await.map(|items| (ctx, items)),
        Err(e) => Err(e),
    };
    if let Err(e) = &planned {
        // Only a record still INITIALIZING becomes FAILED: one stopped meanwhile (a console Stop
        // finalized it while this Lambda went on) stays as its Finalize left it.
        let current = read_json::<CopyRecord>(store.as_ref(), &keys.record()).await.ok().flatten();
        if current.is_none_or(|r| r.status == CopyStatus::Initializing) {
            let mut failed = record;
            failed.status = CopyStatus::Failed;
            failed.message = Some(format!("{PLANNING_FAILED}: {e}"));
            failed.touch();
            if let Err(write_error) = write_json(store.as_ref(), &keys.record(), &failed).await {
                tracing::warn!(error = %write_error, "could not record the failed plan");
            }
        }
        if let Err(release_error) = claims::release(store.as_ref(), prefix, &copy_id).await {
            tracing::warn!(error = %release_error, "could not release the claim of a failed plan");
        }
    }
    planned
}

/// Whether an existing record is this execution's own plan that did not finish (Step Functions
/// retried Enumerate after a timeout or a transient error): it is planned again, not refused.
fn replans(existing: &CopyRecord, holder: &Holder) -> bool {
    let own = matches!(holder, Holder::Execution { execution } if existing.executions.last() == Some(execution));
    let unfinished = match existing.status {
        CopyStatus::Initializing => true,
        CopyStatus::Failed => existing.message.as_deref().is_some_and(|m| m.starts_with(PLANNING_FAILED)),
        _ => false,
    };
    own && unfinished
}

/// How a plan that failed before its first work item is recorded.
const PLANNING_FAILED: &str = "planning failed";

/// `--since-last`: the range from where the latest completed copy of this source (or of one
/// holding it) into this store is complete, to now. Returns that copy's id.
async fn resolve_since_last(aws: &AwsClients, req: &mut CopyRequest, now: Timestamp) -> Result<String> {
    if req.start.is_some() || req.end.is_some() || req.last.is_some() {
        return Err(CopyError::invalid("sinceLast", "give either --since-last or a range (--start/--end, --last)"));
    }
    let source =
        Location::parse_source(req.source.as_deref().ok_or_else(|| CopyError::invalid("source", "is required"))?)?;
    let store_location =
        Location::parse("store", req.store.as_deref().ok_or_else(|| CopyError::invalid("store", "is required"))?)?;
    let store = store_location.open(aws).await?;
    let mut latest: Option<(Timestamp, String)> = None;
    for other in read_records(store.as_ref(), store_location.prefix()).await? {
        let covers = Location::parse_source(&other.request.source).is_ok_and(|s| s.contains(&source));
        if other.status == CopyStatus::Completed && covers {
            let through = other.request.complete_through();
            if latest.as_ref().is_none_or(|(t, _)| through > *t) {
                latest = Some((through, other.copy_id));
            }
        }
    }
    let (from, id) = latest.ok_or_else(|| {
        CopyError::invalid(
            "sinceLast",
            format!(
                "no completed copy of {} into {} yet: make the first one with --start/--end or --last",
                source.display(),
                store_location.display()
            ),
        )
    })?;
    if from >= now {
        return Err(CopyError::invalid(
            "sinceLast",
            format!("copy `{id}` is complete through {from}: nothing newer yet"),
        ));
    }
    req.start = Some(from.to_string());
    req.end = Some(now.to_string());
    Ok(id)
}

/// Every copy record in the store.
async fn read_records(store: &dyn ObjectStore, store_prefix: &str) -> Result<Vec<CopyRecord>> {
    let copies = store.list_dir(&format!("{store_prefix}copies/")).await?;
    let reads = futures::stream::iter(copies.dirs)
        .map(|dir| async move { read_json::<CopyRecord>(store, &format!("{dir}record.json")).await })
        .buffered(RECORD_READ_CONCURRENCY);
    let records: Vec<Option<CopyRecord>> = futures::TryStreamExt::try_collect(reads).await?;
    Ok(records.into_iter().flatten().collect())
}

const RECORD_READ_CONCURRENCY: usize = 16;

/// The command that resumes a copy (local runner; a state machine copy adds `--state-machine`).
pub fn retry_command(copy_id: &str, store: &str) -> String {
    format!("trailcopy retry {copy_id} --store {store}")
}

/// Whether two trail sources can hold the same log files: one lies inside the other (a source
/// above `AWSLogs/` reads every trail below it, so `s3://b/` overlaps `s3://b/trails/a/AWSLogs/`;
/// two accounts, or two trails' prefixes side by side, do not).
pub fn sources_overlap(a: &Location, b: &Location) -> bool {
    a.contains(b) || b.contains(a)
}

/// Refuses a copy whose range overlaps an earlier copy from the same source into the same store:
/// their events would be stored twice (output names differ with the range). Sources compare in
/// their canonical form, so no spelling of the same folder or prefix escapes. A completed copy's
/// open tail (`[completeThrough, end)`: files may still have been on their way) is no overlap:
/// returns how far into this window such tails reach, so the events they stored are not stored
/// again.
async fn check_overlap(
    store: &dyn ObjectStore,
    store_prefix: &str,
    copy_id: &str,
    req: &ResolvedRequest,
) -> Result<Option<Timestamp>> {
    let start = req.start.max(req.retention_cutoff);
    let source = Location::parse_source(&req.source)?;
    let mut tail_until: Option<Timestamp> = None;
    for other in read_records(store, store_prefix).await? {
        if other.copy_id == copy_id {
            continue;
        }
        let o = &other.request;
        if !Location::parse_source(&o.source).is_ok_and(|s| sources_overlap(&s, &source)) {
            continue;
        }
        let o_start = o.start.max(o.retention_cutoff);
        let complete = other.status == CopyStatus::Completed;
        let o_final = if complete { o.complete_through() } else { o.end };
        if o_start < req.end && start < o_final {
            let what_now = match other.status {
                CopyStatus::Completed => "That range is already copied: pick a range that does not overlap it, \
                     or pass --allow-overlap to store those events again"
                    .to_string(),
                _ => format!(
                    "Resume that copy with `{}`, pick a range that does not overlap it, or pass --allow-overlap",
                    retry_command(&other.copy_id, &o.store)
                ),
            };
            return Err(CopyError::invalid(
                "range",
                format!(
                    "overlaps copy `{}` ({} .. {}, {}) from {} into this store: its events would be stored \
                     twice. {what_now}",
                    other.copy_id,
                    o_start,
                    o_final,
                    other.status.as_str(),
                    o.source,
                ),
            ));
        }
        if complete && start < o.end && o_start < req.end {
            let reach = o.end.min(req.end);
            tail_until = Some(tail_until.map_or(reach, |t| t.max(reach)));
        }
    }
    Ok(tail_until)
}

/// Finds the day prefixes in scope, packs them into work items (freezing each item's file
/// list as it seals), writes `workitems.json` and marks the record IN_PROGRESS. Safe to run
/// again on a copy left INITIALIZING by a crash.
pub async fn discover_work_items(ctx: &CopyContext) -> Result<Vec<WorkItem>> {
    let store_uri = ctx.store_location.display();
    let mut items = Vec::new();
    if !ctx.window.is_empty() {
        let (first, last) = ctx.window.day_span();
        let source = ctx.source.as_ref();
        let prefix = ctx.source_location.prefix();
        let (units, mut early) = match &ctx.source_location {
            // A local folder answers at once: listing ahead would hide no round trip.
            Location::Local { .. } => {
                (discover::source_account_regions(source, prefix).await?, discover::EarlyPages::default())
            }
            Location::S3 { .. } => discover::source_account_regions_ahead(source, prefix, first, last).await?,
        };
        let mut listings = futures::stream::iter(units)
            .map(|u| {
                let pages = early.take(&u);
                async move { discover::day_groups_listed(source, &u, first, last, pages).await }
            })
            .buffered(RANGE_LIST_CONCURRENCY);
        let mut packer = Packer::new(PackLimits::from_env(), ctx.window);
        let mut writes = futures::stream::FuturesUnordered::new();
        let mut seal = |sealed: SealedItem, writes: &mut futures::stream::FuturesUnordered<_>| {
            let item = WorkItem {
                copy_id: ctx.copy_id.clone(),
                store: store_uri.clone(),
                index: format!("{:06}", sealed.seq),
                date: sealed.date.to_string(),
                prefixes: sealed.prefixes.len() as u64,
                files: sealed.files.len() as u64,
                bytes: sealed.bytes,
                tag: sealed.tag(),
                first: sealed.prefixes.iter().min().cloned().unwrap_or_default(),
                last: sealed.prefixes.iter().max().cloned().unwrap_or_default(),
            };
            let key = ctx.keys.item_listing(&item.index);
            items.push(item);
            writes.push(async move { write_json_compact(ctx.store.as_ref(), &key, &sealed.files).await });
        };
        while let Some(groups) = listings.next().await {
            for g in groups? {
                for sealed in packer.add(g) {
                    seal(sealed, &mut writes);
                }
            }
            // A bounded number of file lists in flight (and in memory).
            while writes.len() >= WRITE_CONCURRENCY {
                if let Some(r) = writes.next().await {
                    r?;
                }
            }
        }
        for sealed in packer.finish() {
            seal(sealed, &mut writes);
        }
        while let Some(r) = writes.next().await {
            r?;
        }
    }
    items.sort_by(|a, b| a.index.cmp(&b.index));
    write_json(ctx.store.as_ref(), &ctx.keys.work_items(), &items).await?;
    mark_in_progress(ctx, &items).await?;
    Ok(items)
}

/// Marks the planned record IN_PROGRESS by compare-and-swap: a console Stop may have finalized the
/// copy (STOPPED, by the ExecutionEndedRule) while its Enumerate was still planning, and a Lambda
/// goes on after its execution stopped; such a copy stays STOPPED (`retry` resumes it).
async fn mark_in_progress(ctx: &CopyContext, items: &[WorkItem]) -> Result<()> {
    let key = ctx.keys.record();
    for _ in 0..RECORD_CAS_ATTEMPTS {
        let (body, tag) = ctx
            .store
            .get_versioned(&key)
            .await?
            .ok_or_else(|| CopyError::State(format!("copy record of `{}` disappeared", ctx.copy_id)))?;
        let mut record: CopyRecord = serde_json::from_slice(&body)
            .map_err(|e| CopyError::Storage { location: ctx.store.location(&key), message: e.to_string() })?;
        if matches!(record.status, CopyStatus::Stopped | CopyStatus::Completed) {
            return Err(CopyError::State(format!(
                "copy `{}` became {} while it was planned; resume it with `{}`",
                ctx.copy_id,
                record.status.as_str(),
                retry_command(&ctx.copy_id, &ctx.store_location.display())
            )));
        }
        record.status = CopyStatus::InProgress;
        record.statistics.prefixes_found = items.iter().map(|i| i.prefixes).sum();
        record.statistics.work_items_found = items.len() as u64;
        record.message = None;
        record.touch();
        let body = serde_json::to_vec_pretty(&record)
            .map_err(|e| CopyError::Storage { location: ctx.store.location(&key), message: e.to_string() })?;
        if ctx.store.put_if(&key, body.into(), &PutCondition::Matches(tag)).await? {
            return Ok(());
        }
    }
    Err(CopyError::Retryable { location: ctx.store.location(&key), message: "the copy record kept changing".into() })
}

/// Compare-and-swap attempts on a copy record (its writers are this plan and a Finalize).
const RECORD_CAS_ATTEMPTS: u32 = 10;

/// Account-regions listed at once (each one un-delimited listing per trail).
const RANGE_LIST_CONCURRENCY: usize = 32;
/// Sealed items' file lists written at once.
const WRITE_CONCURRENCY: usize = 16;
