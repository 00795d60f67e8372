//! Checking a whole source against its digests without copying it (`trailcopy verify`): the
//! files a copy of the same range would read, hashed and looked up, and the files authentic
//! digests list that the source lacks. aws-cli's `validate-logs` does this for a trail in S3;
//! this also reads local folders and organization trails, and names files no digest lists.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use serde::Serialize;

use super::index::Verdict;
use super::keys::PublicKeySource;
use super::load::{DigestScope, Requests, load_digests};
use super::signature::sha256;
use crate::error::{CopyError, Result};
use crate::layout::{self, TrailRoot};
use crate::range::{DELIVERY_SLACK, START_SLACK, Window};
use crate::record::FailureEntry;
use crate::storage::ObjectStore;

const CONCURRENCY: usize = 16;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyStatistics {
    /// Log files in scope (`.json.gz`, named within the range's delivery window).
    pub files_found: u64,
    pub files_verified: u64,
    /// No digest lists them (validation off, digest missing, or not delivered yet).
    pub files_not_in_digest: u64,
    /// Listed only by digests that failed their own check.
    pub files_unverified: u64,
    /// DigestMismatch: altered or damaged after delivery.
    pub files_mismatched: u64,
    /// LogFileMissing: authentic digests list them, the source lacks them.
    pub log_files_missing: u64,
    pub digests_verified: u64,
    pub digests_failed: u64,
    pub bytes_read: u64,
    pub bytes_hashed: u64,
    pub list_requests: u64,
    pub get_requests: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileResult {
    pub location: String,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// One digest read, as checked.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DigestResult {
    pub location: String,
    pub verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub start: Timestamp,
    pub end: Timestamp,
    pub public_keys: String,
    pub key_fingerprints: Vec<String>,
    pub statistics: VerifyStatistics,
    pub failures: Vec<FailureEntry>,
    pub files: Vec<FileResult>,
    pub digests: Vec<DigestResult>,
    /// Wall time, and the CPU time spent inflating and hashing (summed over threads).
    pub elapsed_seconds: f64,
    pub inflate_seconds: f64,
    pub hash_seconds: f64,
}

/// Lists one level, counting the request.
async fn dirs(source: &dyn ObjectStore, prefix: &str, requests: &Requests) -> Result<Vec<String>> {
    requests.lists.fetch_add(1, Ordering::Relaxed);
    Ok(source.list_dir(prefix).await?.dirs)
}

/// `(account root, region)` of every region folder under an account's `CloudTrail/` or
/// `CloudTrail-Digest/` (a day whose log files are all gone still has its digests). Levels the
/// source prefix fixes are built, not listed.
async fn account_regions(
    source: &dyn ObjectStore,
    root: &TrailRoot,
    requests: &Requests,
) -> Result<Vec<(String, String)>> {
    let narrow = &root.narrowing;
    let fixed = |pos: usize| narrow.get(pos).cloned();
    let mut accounts: Vec<(String, usize)> = Vec::new();
    let mut orgs: Vec<(String, usize)> = Vec::new();
    match fixed(0) {
        Some(s) if layout::is_org_id(&s) => orgs.push((format!("{}{s}/", root.awslogs), 1)),
        Some(s) => accounts.push((format!("{}{s}/", root.awslogs), 1)),
        None => {
            for d in dirs(source, &root.awslogs, requests).await? {
                let seg = layout::last_segment(&d);
                if layout::is_org_id(seg) {
                    orgs.push((d, 1));
                } else if layout::is_account_id(seg) {
                    accounts.push((d, 1));
                }
            }
        }
    }
    for (org, pos) in orgs {
        match fixed(pos) {
            Some(s) => accounts.push((format!("{org}{s}/"), pos + 1)),
            None => accounts.extend(
                dirs(source, &org, requests)
                    .await?
                    .into_iter()
                    .filter(|d| layout::is_account_id(layout::last_segment(d)))
                    .map(|d| (d, pos + 1)),
            ),
        }
    }
    let mut out = Vec::new();
    for (acct, pos) in accounts {
        if let Some(n) = fixed(pos)
            && n != "CloudTrail"
            && n != "CloudTrail-Digest"
        {
            return Err(CopyError::invalid(
                "source",
                format!("`{n}` folders are not verified: only CloudTrail/ log files have digests"),
            ));
        }
        let mut regions: Vec<String> = match fixed(pos + 1) {
            Some(r) => vec![r],
            None => {
                let mut rs = Vec::new();
                for folder in ["CloudTrail/", "CloudTrail-Digest/"] {
                    rs.extend(
                        dirs(source, &format!("{acct}{folder}"), requests)
                            .await?
                            .iter()
                            .map(|d| layout::last_segment(d).to_string()),
                    );
                }
                rs
            }
        };
        regions.sort();
        regions.dedup();
        out.extend(regions.into_iter().map(|r| (acct.clone(), r)));
    }
    Ok(out)
}

/// The one trail root `verify` checks: the source's own, or the only `AWSLogs/` the search finds
/// below it. A source above several trails is refused (each trail's digests chain on their own):
/// the message names them, so each can be verified in turn.
async fn verified_root(source: &dyn ObjectStore, source_prefix: &str) -> Result<TrailRoot> {
    let mut roots = crate::discover::trail_roots(source, source_prefix).await?;
    match roots.len() {
        0 => Ok(layout::trail_root(source_prefix)),
        1 => Ok(roots.remove(0)),
        n => Err(CopyError::invalid(
            "source",
            format!(
                "holds {n} trails ({}): verify one trail's folder at a time (`copy --verify-digests` \
                 checks them all at once)",
                roots.iter().map(|r| source.location(&r.awslogs)).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

/// Verifies the log files a copy of `window` would read from `source` (`source_prefix`: the
/// source location's prefix), with `keys`; with `require_verified`, every file not verified is
/// also a failure entry.
pub async fn verify_source(
    source: &dyn ObjectStore,
    source_prefix: &str,
    window: &Window,
    keys: &dyn PublicKeySource,
    require_verified: bool,
) -> Result<VerifyReport> {
    let started = Instant::now();
    let requests = Requests::default();
    let root = verified_root(source, source_prefix).await?;
    let from = window.effective_start().saturating_sub(START_SLACK).unwrap_or(Timestamp::MIN);
    let to = window.end.saturating_add(DELIVERY_SLACK).unwrap_or(Timestamp::MAX);
    let scopes: Vec<DigestScope> = account_regions(source, &root, &requests)
        .await?
        .into_iter()
        .map(|(account_root, region)| DigestScope { account_root, region, from, to })
        .collect();
    // A prefix narrowed below the region folder ([o-org/]acct/CloudTrail/region/) narrows the files too.
    let org = root.narrowing.first().is_some_and(|s| layout::is_org_id(s));
    let narrowed_below_region = root.narrowing.len() > if org { 4 } else { 3 };
    let in_source = |key: &str| !narrowed_below_region || key.starts_with(source_prefix);
    let in_scope = |key: &str| layout::file_timestamp(layout::file_name(key)).is_none_or(|t| window.file_in_scope(t));

    // The log files in scope.
    let (first, last) = window.day_span();
    let mut folders = Vec::new();
    for s in &scopes {
        let mut d = first;
        while d <= last {
            folders.push(format!("{}{}/", s.log_prefix(), d.strftime("%Y/%m/%d")));
            d = match d.tomorrow() {
                Ok(n) => n,
                Err(_) => break,
            };
        }
    }
    let listings: Vec<Vec<(String, u64)>> = futures::stream::iter(&folders)
        .map(|f| async {
            requests.lists.fetch_add(1, Ordering::Relaxed);
            Ok::<_, CopyError>(source.list_dir(f).await?.objects.into_iter().map(|o| (o.key, o.size)).collect())
        })
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    let mut present: HashSet<String> = listings.iter().flatten().map(|(k, _)| k.clone()).collect();
    let mut files: Vec<(String, u64)> =
        listings.into_iter().flatten().filter(|(k, _)| layout::is_gzip_log(k) && in_scope(k) && in_source(k)).collect();
    files.sort();

    let loaded = load_digests(source, &root.awslogs, keys, &scopes, &requests).await?;
    let index = &loaded.index;
    let mut stats = VerifyStatistics { files_found: files.len() as u64, ..Default::default() };
    let mut failures = loaded.failures.clone();
    stats.digests_verified = index.digests().iter().filter(|d| d.status.is_verified()).count() as u64;
    stats.digests_failed = loaded.digests_failed;

    let (mut inflate_time, mut hash_time) = (Duration::ZERO, Duration::ZERO);
    let counted = &requests;
    let read: Vec<(String, Option<HashedFile>)> =
        futures::stream::iter(files)
            .map(|(key, size)| async move {
                Ok::<_, CopyError>((key.clone(), hash_file(source, counted, key, size).await?))
            })
            .buffered(CONCURRENCY)
            .try_collect()
            .await?;
    // A file deleted since the listing is not in the source: LogFileMissing if a digest lists it.
    let mut hashed = Vec::with_capacity(read.len());
    for (key, h) in read {
        match h {
            Some(h) => hashed.push(h),
            None => {
                present.remove(&key);
                stats.files_found -= 1;
            }
        }
    }
    let mut results = Vec::with_capacity(hashed.len());
    for HashedFile { key, size, sha256: hash, inflated_len, inflate_time: t_inflate, hash_time: t_hash } in hashed {
        stats.bytes_read += size;
        stats.bytes_hashed += if hash.is_some() { inflated_len as u64 } else { 0 };
        inflate_time += t_inflate;
        hash_time += t_hash;
        let location = source.location(&key);
        let verdict = index.verdict(&key, hash.as_ref());
        match &verdict {
            Verdict::Verified { .. } => stats.files_verified += 1,
            Verdict::NotInDigest => {
                stats.files_not_in_digest += 1;
                if require_verified {
                    failures.push(FailureEntry::new(
                        location.clone(),
                        "FileNotInDigest",
                        "no digest lists this log file".into(),
                    ));
                }
            }
            Verdict::Unverified { digest, reason } => {
                stats.files_unverified += 1;
                if require_verified {
                    failures.push(FailureEntry::new(
                        location.clone(),
                        "FileNotVerified",
                        format!("only digest {digest} lists it, and that digest failed its check ({reason})"),
                    ));
                }
            }
            Verdict::Mismatch { digest, expected, actual } => {
                stats.files_mismatched += 1;
                failures.push(FailureEntry::new(
                    location.clone(),
                    "DigestMismatch",
                    mismatch_message(digest, expected, actual),
                ));
            }
        }
        results.push(FileResult { location, verdict });
    }

    let mut missing: Vec<(String, String)> = index
        .listed_by_verified()
        .filter(|(key, _)| {
            !present.contains(*key)
                && in_scope(key)
                && in_source(key)
                && scopes.iter().any(|s| key.starts_with(&s.log_prefix()))
        })
        .map(|(key, d)| (key.to_string(), d.location.clone()))
        .collect();
    missing.sort();
    stats.log_files_missing = missing.len() as u64;
    for (key, digest) in missing {
        failures.push(FailureEntry::new(
            source.location(&key),
            "LogFileMissing",
            format!("digest {digest} lists this log file, but the source does not have it (deleted or moved)"),
        ));
    }
    let (lists, gets) = requests.snapshot();
    stats.list_requests = lists;
    stats.get_requests = gets;
    Ok(VerifyReport {
        start: window.effective_start(),
        end: window.end,
        public_keys: keys.describe(),
        key_fingerprints: index.fingerprints().into_iter().collect(),
        statistics: stats,
        failures,
        files: results,
        digests: index
            .digests()
            .iter()
            .map(|d| DigestResult {
                location: d.location.clone(),
                verified: d.status.is_verified(),
                error_type: match &d.status {
                    super::chain::DigestStatus::Failed { error_type, .. } => Some((*error_type).to_string()),
                    super::chain::DigestStatus::Verified { .. } => None,
                },
            })
            .collect(),
        elapsed_seconds: started.elapsed().as_secs_f64(),
        inflate_seconds: inflate_time.as_secs_f64(),
        hash_seconds: hash_time.as_secs_f64(),
    })
}

/// A log file read and hashed, with the CPU time its inflating and hashing took.
struct HashedFile {
    key: String,
    size: u64,
    /// `None`: not a complete gzip stream.
    sha256: Option<[u8; 32]>,
    inflated_len: usize,
    inflate_time: Duration,
    hash_time: Duration,
}

/// `None`: deleted since it was listed.
async fn hash_file(
    source: &dyn ObjectStore,
    requests: &Requests,
    key: String,
    size: u64,
) -> Result<Option<HashedFile>> {
    requests.gets.fetch_add(1, Ordering::Relaxed);
    let bytes = match source.get(&key).await {
        Ok(b) => b,
        Err(CopyError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let location = source.location(&key);
    let (sha256, inflated_len, inflate_time, hash_time) = tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        let (text, damage) = crate::event::gunzip_partial(&bytes);
        let t1 = Instant::now();
        let hash = damage.is_none().then(|| sha256(&text));
        (hash, text.len(), t1 - t0, t1.elapsed())
    })
    .await
    .map_err(|e| CopyError::Storage { location, message: format!("hash task failed: {e}") })?;
    Ok(Some(HashedFile { key, size, sha256, inflated_len, inflate_time, hash_time }))
}

/// The DigestMismatch message (the copy uses it too).
pub fn mismatch_message(digest: &str, expected: &str, actual: &str) -> String {
    format!(
        "the SHA-256 of the inflated log file is {actual}, but digest {digest} lists {expected}: altered or damaged after CloudTrail delivered it"
    )
}
