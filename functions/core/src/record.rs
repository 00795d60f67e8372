//! The copy record under `STORE/copies/<copyId>/`: the resolved request, status, statistics,
//! failure entries, work items and per-item checkpoints.

use std::ops::AddAssign;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{CopyError, Result};
use crate::storage::{ObjectStore, get_opt};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CopyStatus {
    Initializing,
    InProgress,
    Completed,
    /// Finished with failures.
    Failed,
    Stopped,
}

impl CopyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CopyStatus::Initializing => "INITIALIZING",
            CopyStatus::InProgress => "IN_PROGRESS",
            CopyStatus::Completed => "COMPLETED",
            CopyStatus::Failed => "FAILED",
            CopyStatus::Stopped => "STOPPED",
        }
    }
}

/// How archived objects are handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreOptions {
    /// `Bulk`, `Standard`, `Expedited`, or `None` (archived objects become failure entries).
    pub tier: String,
    pub days: i32,
    pub poll_seconds: u64,
    /// Fail a work item whose restores take longer. None: by tier and storage class
    /// ([`crate::storage_class::default_max_wait`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_seconds: Option<u64>,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions { tier: "Bulk".into(), days: 7, poll_seconds: 900, max_wait_seconds: None }
    }
}

impl RestoreOptions {
    /// The longest any work item of the copy may wait for its restores.
    pub fn max_wait_limit(&self) -> u64 {
        self.max_wait_seconds.unwrap_or_else(|| crate::storage_class::worst_max_wait(&self.tier))
    }
}

/// The request as resolved at plan time: a retry copies exactly this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedRequest {
    pub source: String,
    pub store: String,
    pub start: Timestamp,
    pub end: Timestamp,
    /// The relative range asked for, if any (`1h`, `PT90M`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    pub retention_days: u32,
    pub retention_cutoff: Timestamp,
    #[serde(default)]
    pub restore: RestoreOptions,
    /// SSE-KMS key for the store's objects (None: the bucket's default encryption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_kms_key: Option<String>,
    /// The copy was allowed to overlap earlier copies' ranges from the same source.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_overlap: bool,
    /// Check every file read against CloudTrail's signed digests (`--verify-digests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationRequest>,
    /// The end asked for, when it lay after the planning time (`end` is then the planning time:
    /// nothing later can have been delivered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_end: Option<Timestamp>,
    /// Log files may arrive this long after their events (CloudTrail delivers in about 5 minutes
    /// on average, without a guarantee).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_allowance_seconds: Option<u64>,
    /// Every event up to here was delivered when the copy was planned: `end`, or planning time −
    /// the delivery allowance when `end` is closer to it. Later copies may start here (the open
    /// tail `[completeThrough, end)`); `--since-last` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete_through: Option<Timestamp>,
    /// `--since-last`: the copy this one continues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continues: Option<String>,
    /// Earlier copies' open tails overlap this copy's window up to here: the events they stored
    /// there are not stored again ([`RecordKeys::tail_seen`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail_until: Option<Timestamp>,
}

impl ResolvedRequest {
    /// Where this copy's window is final: events before it are all copied once the copy completes.
    pub fn complete_through(&self) -> Timestamp {
        self.complete_through.unwrap_or(self.end)
    }
}

/// How a copy verifies its files against the digests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationRequest {
    /// Skip (and list) every file not verified, instead of copying it anyway.
    #[serde(default)]
    pub require_verified: bool,
    /// The public keys given with the request, as `list-public-keys` entries; empty: CloudTrail
    /// ListPublicKeys (s3:// sources).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_keys: Vec<serde_json::Value>,
}

/// What the copy record says about verification: whether every file was proven, with which keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationSummary {
    /// Every file read was verified against an authentic digest, and no digest failed.
    pub verified: bool,
    pub require_verified: bool,
    /// Where the keys came from (CloudTrail ListPublicKeys, or the request).
    pub public_keys: String,
    /// Fingerprints of the keys that verified the digests used.
    pub key_fingerprints: Vec<String>,
}

/// CloudTrail's ImportStatistics names, plus ours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Statistics {
    pub prefixes_found: u64,
    pub prefixes_completed: u64,
    pub files_completed: u64,
    pub events_completed: u64,
    pub failed_entries: u64,
    pub files_found: u64,
    /// Files not read by their name: timestamps outside the window, and names that are not log
    /// file names (`filesNotLogFiles`).
    pub files_skipped: u64,
    /// Files in day folders not named like CloudTrail log files (`.DS_Store`, `notes.txt`):
    /// skipped and listed, not failures.
    pub files_not_log_files: u64,
    /// Files that are failure entries as a whole (not a log file, unreadable, damaged): with
    /// the skipped and completed ones they add up to the files found once every item completed.
    pub files_failed: u64,
    /// Compressed bytes of the log files to read (the items' frozen file lists).
    pub bytes_to_read: u64,
    pub bytes_read: u64,
    pub events_read: u64,
    pub events_out_of_range: u64,
    pub events_invalid: u64,
    pub events_duplicate: u64,
    pub restores_started: u64,
    pub restores_pending: u64,
    pub restores_finished: u64,
    /// Work items: day prefixes packed by bytes (the Distributed Map's items).
    pub work_items_found: u64,
    pub work_items_completed: u64,
    /// Digest verification (`--verify-digests`): files an authentic digest lists with their hash.
    pub files_verified: u64,
    /// No digest lists them (validation off then, digest missing or not yet delivered).
    pub files_not_in_digest: u64,
    /// Listed only by digests that failed their own check.
    pub files_unverified: u64,
    /// DigestMismatch: altered or damaged after delivery.
    pub files_mismatched: u64,
    /// With --require-verified: files not copied because they were not verified (each a failure
    /// entry, counted in filesFailed; their events in eventsUnverified).
    pub files_rejected: u64,
    /// Events read from rejected files (not copied): with the others they add up to eventsRead.
    pub events_unverified: u64,
    /// LogFileMissing: authentic digests list them in the range, the source lacks them.
    pub log_files_missing: u64,
    pub digests_verified: u64,
    pub digests_failed: u64,
}

/// Every counter of [`Statistics`], for the sums and differences below.
macro_rules! each_counter {
    ($m:ident) => {
        $m!(
            prefixes_found,
            prefixes_completed,
            files_completed,
            events_completed,
            failed_entries,
            files_found,
            files_skipped,
            files_not_log_files,
            files_failed,
            bytes_to_read,
            bytes_read,
            events_read,
            events_out_of_range,
            events_invalid,
            events_duplicate,
            restores_started,
            restores_pending,
            restores_finished,
            work_items_found,
            work_items_completed,
            files_verified,
            files_not_in_digest,
            files_unverified,
            files_mismatched,
            files_rejected,
            events_unverified,
            log_files_missing,
            digests_verified,
            digests_failed
        );
    };
}

impl AddAssign for Statistics {
    fn add_assign(&mut self, o: Statistics) {
        macro_rules! add {
            ($($f:ident),*) => { $(self.$f += o.$f;)* };
        }
        each_counter!(add);
    }
}

impl Statistics {
    /// Takes back what `o` added (a re-read file's earlier counts, which its new ones replace).
    pub fn subtract(&mut self, o: &Statistics) {
        macro_rules! sub {
            ($($f:ident),*) => { $(self.$f = self.$f.saturating_sub(o.$f);)* };
        }
        each_counter!(sub);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureEntry {
    pub location: String,
    pub status: String,
    pub error_type: String,
    pub error_message: String,
    pub last_updated_time: Timestamp,
}

impl FailureEntry {
    pub fn new(location: String, error_type: &str, error_message: String) -> Self {
        FailureEntry {
            location,
            status: "FAILED".into(),
            error_type: error_type.into(),
            error_message,
            last_updated_time: Timestamp::now(),
        }
    }

    /// A file skipped by its name (not a failure): listed beside the failures as SKIPPED.
    pub fn skipped(location: String, error_type: &str, error_message: String) -> Self {
        FailureEntry { status: "SKIPPED".into(), ..FailureEntry::new(location, error_type, error_message) }
    }
}

/// One run of a copy: the first (`copy`) and each `retry`, with what its re-reads did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub number: u32,
    /// `copy` or `retry`.
    pub kind: String,
    pub started_time: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_time: Option<Timestamp>,
    /// Failed files of earlier attempts read again, those that now read cleanly, and the events
    /// the re-reads stored.
    #[serde(default)]
    pub files_reread: u64,
    #[serde(default)]
    pub files_fixed: u64,
    #[serde(default)]
    pub events_copied: u64,
    /// The copy's status when the attempt ended, and its failure entries then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CopyStatus>,
    #[serde(default)]
    pub failed_entries: u64,
}

impl Attempt {
    pub fn start(number: u32, kind: &str) -> Self {
        Attempt {
            number,
            kind: kind.into(),
            started_time: Timestamp::now(),
            finished_time: None,
            files_reread: 0,
            files_fixed: 0,
            events_copied: 0,
            status: None,
            failed_entries: 0,
        }
    }
}

/// A file that got a failure entry: what a retry reads again. Its counts are replaced by the
/// re-read's; the keys of the events stored from it (a damaged file's first events, an
/// InvalidEvents file's valid ones) are kept under [`RecordKeys::item_salvaged`], so a re-read
/// stores each event once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedFile {
    pub key: String,
    pub size: u64,
    /// What the file added to the item's statistics.
    pub statistics: Statistics,
    /// Events stored from it (their keys are in the salvaged object when > 0).
    #[serde(default)]
    pub salvaged: u64,
}

/// A retry's re-read of an item's failed files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Repair {
    /// The copy's attempt that re-reads them.
    pub attempt: u32,
    /// Set by the retry; cleared once the re-read is committed.
    pub pending: bool,
    pub files_reread: u64,
    pub files_fixed: u64,
    pub events_copied: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyRecord {
    pub copy_id: String,
    pub status: CopyStatus,
    pub request: ResolvedRequest,
    pub statistics: Statistics,
    pub created_time: Timestamp,
    pub updated_time: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The state machine executions that ran this copy (its first run and its retries), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub executions: Vec<String>,
    /// Set when the copy verified its files against CloudTrail's digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationSummary>,
    /// The first run and each retry, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
}

impl CopyRecord {
    /// Marks the record updated now; never before it was created (the plan's clock may lead).
    pub fn touch(&mut self) {
        self.updated_time = Timestamp::now().max(self.created_time);
    }
}

/// A work item: day prefixes of one date packed up to a size target (every trail's prefix of
/// an account-region-day in the same item). Its file list is frozen at plan time in
/// `items/<index>/listing.json`; this summary is the Distributed Map's item, so it stays small.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkItem {
    pub copy_id: String,
    pub store: String,
    pub index: String,
    /// The UTC day (`YYYY-MM-DD`) of the item's day folders.
    pub date: String,
    /// Day prefixes in the item (one per trail and account-region).
    pub prefixes: u64,
    /// Objects listed in its day prefixes.
    pub files: u64,
    /// Bytes of the log files in scope.
    pub bytes: u64,
    /// A hash of the frozen file list: output names follow the work, not only its position.
    pub tag: String,
    /// First and last day prefix, for messages and failure locations.
    pub first: String,
    pub last: String,
}

impl WorkItem {
    /// What a failure of the whole item points at: its day prefix, or the first of several.
    pub fn describe(&self) -> String {
        if self.prefixes <= 1 {
            format!("work item {} ({})", self.index, self.first)
        } else {
            format!(
                "work item {} ({} day prefixes of {}: {} .. {})",
                self.index, self.prefixes, self.date, self.first, self.last
            )
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ItemStatus {
    Pending,
    /// Listed; waiting for restores of archived objects.
    Restoring,
    /// Listed and readable: copying from the cursor.
    Copying,
    Completed,
    Failed,
}

/// Where a work item's copy resumes: the next file of its frozen list and the next batch number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cursor {
    pub next_file: usize,
    pub batch: u32,
}

/// Per-item checkpoint, written after every committed batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemState {
    pub index: String,
    /// The item's first day prefix (failure locations).
    pub prefix: String,
    pub status: ItemStatus,
    pub cursor: Cursor,
    pub statistics: Statistics,
    pub failures: Vec<FailureEntry>,
    /// The last error that stopped the item (it resumes from `cursor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<FailureEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_started_time: Option<Timestamp>,
    /// The status a FAILED item resumes in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_status: Option<ItemStatus>,
    /// Objects whose restore is still running: the only ones a poll asks about again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restoring: Vec<String>,
    /// The restore wait this item allows by its objects' classes (when the request gives none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_max_wait_seconds: Option<u64>,
    /// Fingerprints of the keys that verified the item's digests (set when it completes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_fingerprints: Vec<String>,
    /// Files skipped by name (not log files), listed, not failures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<FailureEntry>,
    /// Files with failure entries: a retry reads them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_files: Vec<FailedFile>,
    /// The latest retry's re-read of `failed_files`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<Repair>,
    /// Invocations that started the batch at `cursor` (cleared when it commits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_starts: Option<BatchStarts>,
}

/// How often the batch at a cursor was started without being committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchStarts {
    pub cursor: Cursor,
    pub starts: u32,
}

impl ItemState {
    pub fn new(item: &WorkItem) -> Self {
        ItemState {
            index: item.index.clone(),
            prefix: item.first.clone(),
            status: ItemStatus::Pending,
            cursor: Cursor::default(),
            statistics: Statistics::default(),
            failures: Vec::new(),
            error: None,
            restore_started_time: None,
            resume_status: None,
            restoring: Vec::new(),
            restore_max_wait_seconds: None,
            key_fingerprints: Vec::new(),
            skipped: Vec::new(),
            failed_files: Vec::new(),
            repair: None,
            batch_starts: None,
        }
    }
}

/// A file the copy step reads, frozen at prepare time so batches are deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileToCopy {
    pub key: String,
    pub size: u64,
}

/// Key layout of a copy's record inside the store.
#[derive(Debug, Clone)]
pub struct RecordKeys {
    base: String,
}

impl RecordKeys {
    pub fn new(store_prefix: &str, copy_id: &str) -> Self {
        RecordKeys { base: format!("{store_prefix}copies/{copy_id}/") }
    }
    pub fn record(&self) -> String {
        format!("{}record.json", self.base)
    }
    pub fn work_items(&self) -> String {
        format!("{}workitems.json", self.base)
    }
    /// The items a retry execution's Map runs (those not completed).
    pub fn pending_work_items(&self) -> String {
        format!("{}workitems-pending.json", self.base)
    }
    pub fn failures(&self) -> String {
        format!("{}failures.json", self.base)
    }
    /// Files skipped by name (not log files), as `failures` lists them.
    pub fn skipped(&self) -> String {
        format!("{}skipped.json", self.base)
    }
    pub fn item_state(&self, index: &str) -> String {
        format!("{}items/{index}/state.json", self.base)
    }
    /// The objects of the item's day prefixes, frozen at plan time.
    pub fn item_listing(&self, index: &str) -> String {
        format!("{}items/{index}/listing.json", self.base)
    }
    /// The files the item copies (in scope, readable or restoring), frozen by prepare.
    pub fn item_files(&self, index: &str) -> String {
        format!("{}items/{index}/files.json", self.base)
    }
    /// Roll-up shard `n`: the final (or latest) summary of the items that hash to it.
    pub fn rollup_shard(&self, n: usize) -> String {
        format!("{}rollup/{n:02}.json", self.base)
    }
    /// `s3://bucket/<prefix>copies/<id>/workitems.json` (or the path), for messages.
    pub fn work_items_location(&self, store: &crate::storage::Location) -> String {
        match store {
            crate::storage::Location::S3 { bucket, .. } => format!("s3://{bucket}/{}", self.work_items()),
            crate::storage::Location::Local { root, .. } => root.join(self.work_items()).display().to_string(),
        }
    }
    pub fn item_seen(&self, index: &str, batch: u32) -> String {
        format!("{}items/{index}/seen-{batch:06}.bin", self.base)
    }
    /// The dedup keys of the events stored from a failed file (see [`FailedFile`]).
    pub fn item_salvaged(&self, index: &str, file_key: &str) -> String {
        format!("{}items/{index}/salvaged-{:016x}.bin", self.base, xxhash_rust::xxh3::xxh3_64(file_key.as_bytes()))
    }
    /// The dedup keys of the events earlier copies stored in this copy's open tail.
    pub fn tail_seen(&self) -> String {
        format!("{}tail-seen.bin", self.base)
    }
    /// Everything of one item (listing, files, dedup keys, checkpoint).
    pub fn item_dir(&self, index: &str) -> String {
        format!("{}items/{index}/", self.base)
    }
}

pub async fn read_json<T: for<'de> Deserialize<'de>>(store: &dyn ObjectStore, key: &str) -> Result<Option<T>> {
    match get_opt(store, key).await? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| CopyError::Storage {
            location: store.location(key),
            message: format!("unreadable copy record file: {e}"),
        }),
    }
}

pub async fn write_json<T: Serialize>(store: &dyn ObjectStore, key: &str, value: &T) -> Result<()> {
    let body = serde_json::to_vec_pretty(value)
        .map_err(|e| CopyError::Storage { location: store.location(key), message: e.to_string() })?;
    store.put(key, body.into()).await
}

/// `write_json` without the indentation, for machine-only objects (frozen file lists).
pub async fn write_json_compact<T: Serialize>(store: &dyn ObjectStore, key: &str, value: &T) -> Result<()> {
    let body = serde_json::to_vec(value)
        .map_err(|e| CopyError::Storage { location: store.location(key), message: e.to_string() })?;
    store.put(key, body.into()).await
}

/// Valid copy ids are safe as one path segment: `[A-Za-z0-9._-]{1,80}`, not starting with `.`.
pub fn validate_copy_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 80
        && !id.starts_with('.')
        && id.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if ok { Ok(()) } else { Err(CopyError::invalid("copyId", format!("`{id}`: use 1-80 of A-Z a-z 0-9 . _ -"))) }
}

/// A fresh copy id: the UTC time plus a random suffix, sortable by start time.
pub fn new_copy_id(now: Timestamp) -> String {
    let seed = format!("{}-{}-{:?}", now.as_nanosecond(), std::process::id(), std::thread::current().id());
    let r = xxhash_rust::xxh3::xxh3_64(seed.as_bytes());
    format!("{}-{:08x}", now.strftime("%Y%m%dT%H%M%SZ"), r as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_ids() {
        assert!(validate_copy_id("20261124T000000Z-abcd1234").is_ok());
        assert!(validate_copy_id("../x").is_err());
        assert!(validate_copy_id("a/b").is_err());
        assert!(validate_copy_id("").is_err());
        let id = new_copy_id(Timestamp::now());
        assert!(validate_copy_id(&id).is_ok(), "{id}");
    }

    #[test]
    fn statistics_use_cloudtrail_names() {
        let v = serde_json::to_value(Statistics::default()).unwrap();
        for k in [
            "prefixesFound",
            "prefixesCompleted",
            "filesCompleted",
            "eventsCompleted",
            "failedEntries",
            "filesFound",
            "filesSkipped",
            "bytesRead",
            "eventsOutOfRange",
            "eventsInvalid",
            "eventsDuplicate",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
    }
}
