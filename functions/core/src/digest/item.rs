//! Verification inside a copy (`--verify-digests`): per work item, the digests covering its day
//! folders ([`load_digests`]: one GET per digest hour per account-region), a verdict per file
//! from the SHA-256 of the bytes the copy inflates anyway, and, when the item completes, the
//! digest-level results and the files authentic digests list that the source lacks.
//!
//! Neighbouring items (day D and day D+1 of an account-region) both read the one or two
//! digests that end in the first 75 minutes of D+1. So that they are counted once, a digest
//! belongs to the item holding the earliest log file in the range it lists (its folder is that
//! item's); a digest listing none of them belongs to the item of its end time's day. Their
//! failure entries are the same in both items and the roll-up keeps one of each.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use jiff::{SignedDuration, Timestamp};

use super::chain::DigestStatus;
use super::file::DigestName;
use super::index::{CheckedDigest, Verdict};
use super::load::{DigestScope, LoadedDigests, Requests, load_digests};
use super::verify::mismatch_message;
use crate::error::{CopyError, Result};
use crate::layout;
use crate::plan::CopyContext;
use crate::range::{DELIVERY_SLACK, START_SLACK};
use crate::record::{FailureEntry, Statistics, WorkItem, read_json};
use crate::storage::ObjectInfo;

/// Failure entries about digests rather than files: neighbouring items may both report one.
pub const DIGEST_ERROR_TYPES: [&str; 5] = [
    "DigestInvalid",
    "DigestSignatureInvalid",
    "DigestSignatureMissing",
    "DigestPublicKeyNotFound",
    "DigestChainBroken",
];

/// The digests of one work item, checked.
pub struct ItemDigests {
    loaded: Vec<LoadedDigests>,
    require_verified: bool,
    /// The item's day folders, and every object in them (its frozen listing).
    folders: HashSet<String>,
    present: HashSet<String>,
    scopes: Vec<DigestScope>,
    date: jiff::civil::Date,
    /// LIST and GET requests the digests took.
    pub requests: (u64, u64),
}

/// `(…AWSLogs/, …AWSLogs/[o-org/]<account>/, region)` of a log file key.
fn log_file_scope(key: &str) -> Option<(String, String, String)> {
    let at = key.rfind("/CloudTrail/")?;
    let account_root = &key[..=at];
    let region = key[at + "/CloudTrail/".len()..].split('/').next().filter(|r| !r.is_empty())?;
    let awslogs = account_root.rfind("AWSLogs/").map(|i| &account_root[..i + "AWSLogs/".len()])?;
    Some((awslogs.to_string(), account_root.to_string(), region.to_string()))
}

fn folder_of(key: &str) -> &str {
    key.rfind('/').map_or("", |i| &key[..=i])
}

/// What stops verifying the whole item (every item alike): one failure entry naming the grant.
fn blocked(e: CopyError) -> CopyError {
    match e {
        CopyError::AccessDenied { location, message } if location.starts_with("cloudtrail:") => {
            CopyError::Blocked(Box::new(FailureEntry::new(location, "DigestPublicKeysAccessDenied", message)))
        }
        CopyError::AccessDenied { location, message } => CopyError::Blocked(Box::new(FailureEntry::new(
            location,
            "DigestAccessDenied",
            format!(
                "{message}; verifying needs s3:ListBucket and s3:GetObject on the trail's CloudTrail-Digest/ folders"
            ),
        ))),
        e => e,
    }
}

impl ItemDigests {
    /// Lists, reads and checks the digests covering the item's day folders, within the window.
    pub async fn load(ctx: &CopyContext, item: &WorkItem, require_verified: bool) -> Result<Self> {
        let keys = ctx
            .digest_keys
            .as_deref()
            .ok_or_else(|| CopyError::State("the copy verifies digests but has no public keys".into()))?;
        let listing: Vec<ObjectInfo> = read_json(ctx.store.as_ref(), &ctx.keys.item_listing(&item.index))
            .await?
            .ok_or_else(|| CopyError::State(format!("{} has no frozen file list", item.describe())))?;
        let date: jiff::civil::Date =
            item.date.parse().map_err(|e| CopyError::State(format!("{}: bad date: {e}", item.describe())))?;
        let utc = jiff::tz::TimeZone::UTC;
        let day_start = date.to_zoned_datetime(utc.clone()).map(|z| z.timestamp()).unwrap_or(Timestamp::MIN);
        let day_end = day_start.saturating_add(SignedDuration::from_hours(24)).unwrap_or(Timestamp::MAX);
        let w = &ctx.window;
        let from = day_start.max(w.effective_start().saturating_sub(START_SLACK).unwrap_or(Timestamp::MIN));
        let to = day_end.min(w.end.saturating_add(DELIVERY_SLACK).unwrap_or(Timestamp::MAX));

        let mut by_root: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
        for o in listing.iter().filter(|o| layout::is_gzip_log(&o.key)) {
            if let Some((awslogs, account_root, region)) = log_file_scope(&o.key) {
                by_root.entry(awslogs).or_default().insert((account_root, region));
            }
        }
        let requests = Requests::default();
        let mut loaded = Vec::new();
        let mut all_scopes = Vec::new();
        for (awslogs, units) in by_root {
            let scopes: Vec<DigestScope> = units
                .into_iter()
                .map(|(account_root, region)| DigestScope { account_root, region, from, to })
                .collect();
            loaded.push(load_digests(ctx.source.as_ref(), &awslogs, keys, &scopes, &requests).await.map_err(blocked)?);
            all_scopes.extend(scopes);
        }
        Ok(ItemDigests {
            loaded,
            require_verified,
            folders: listing.iter().map(|o| folder_of(&o.key).to_string()).collect(),
            present: listing.into_iter().map(|o| o.key).collect(),
            scopes: all_scopes,
            date,
            requests: requests.snapshot(),
        })
    }

    fn verdict(&self, key: &str, sha256: Option<&[u8; 32]>) -> Verdict {
        let mut verdict = Verdict::NotInDigest;
        for l in &self.loaded {
            match l.index.verdict(key, sha256) {
                Verdict::NotInDigest => {}
                v => verdict = v,
            }
        }
        verdict
    }

    /// Counts the file's verdict in `stats` and lists a failing one; whether it may be copied
    /// (a file that fails is copied anyway unless the copy requires verified files).
    pub fn check(
        &self,
        key: &str,
        location: &str,
        sha256: Option<&[u8; 32]>,
        stats: &mut Statistics,
        failures: &mut Vec<FailureEntry>,
    ) -> bool {
        let require = self.require_verified;
        let not_copied = if require { "; not copied (--require-verified)" } else { "" };
        let mut fail = |error_type: &str, message: String| {
            failures.push(FailureEntry::new(location.to_string(), error_type, format!("{message}{not_copied}")));
        };
        match self.verdict(key, sha256) {
            Verdict::Verified { .. } => {
                stats.files_verified += 1;
                return true;
            }
            Verdict::NotInDigest => {
                stats.files_not_in_digest += 1;
                if require {
                    fail("FileNotInDigest", "no digest lists this log file".into());
                }
            }
            Verdict::Unverified { digest, reason } => {
                stats.files_unverified += 1;
                if require {
                    fail(
                        "FileNotVerified",
                        format!("only digest {digest} lists it, and that digest failed its check ({reason})"),
                    );
                }
            }
            Verdict::Mismatch { digest, expected, actual } => {
                stats.files_mismatched += 1;
                fail("DigestMismatch", mismatch_message(&digest, &expected, &actual));
            }
        }
        !require
    }

    /// Does this item count `digest` (listing `files`)? See the module comment.
    fn owns(&self, ctx: &CopyContext, digest: &CheckedDigest, files: &[&str]) -> bool {
        let earliest = files
            .iter()
            .filter(|k| self.scopes.iter().any(|s| k.starts_with(&s.log_prefix())))
            .filter_map(|k| layout::file_timestamp(layout::file_name(k)).map(|t| (t, *k)))
            .filter(|(t, _)| ctx.window.file_in_scope(*t))
            .min();
        if let Some((_, key)) = earliest {
            return self.folders.contains(folder_of(key));
        }
        let Some(name) = DigestName::parse(layout::file_name(&digest.key)) else { return false };
        let root = digest.key.split("CloudTrail-Digest/").next().unwrap_or("");
        let day = name.end.saturating_sub(SignedDuration::from_secs(1)).unwrap_or(name.end);
        day.to_zoned_datetime(jiff::tz::TimeZone::UTC).date() == self.date
            && self.scopes.iter().any(|s| s.account_root == root && s.region == name.region)
    }

    /// The item's digest-level results, counted once: statistics (digests verified or failed,
    /// log files missing), failure entries, and the fingerprints of the keys used.
    pub fn finish(&self, ctx: &CopyContext) -> (Statistics, Vec<FailureEntry>, Vec<String>) {
        let mut stats = Statistics::default();
        let mut failures = Vec::new();
        let mut fingerprints = BTreeSet::new();
        let mut missing = BTreeMap::new();
        for l in &self.loaded {
            let reported: HashSet<&str> = l.failures.iter().map(|f| f.location.as_str()).collect();
            for (d, files) in l.index.digests().iter().zip(l.index.files_by_digest()) {
                match &d.status {
                    DigestStatus::Verified { fingerprint } => {
                        fingerprints.insert(fingerprint.clone());
                        if self.owns(ctx, d, &files) {
                            stats.digests_verified += 1;
                        }
                    }
                    DigestStatus::Failed { .. } => {
                        if reported.contains(d.location.as_str()) && self.owns(ctx, d, &files) {
                            stats.digests_failed += 1;
                        }
                    }
                }
            }
            failures.extend(l.failures.iter().cloned());
            let source_prefix = ctx.source_location.prefix();
            for (key, d) in l.index.listed_by_verified() {
                let in_scope =
                    layout::file_timestamp(layout::file_name(key)).is_none_or(|t| ctx.window.file_in_scope(t));
                if !self.present.contains(key)
                    && self.folders.contains(folder_of(key))
                    && key.starts_with(source_prefix)
                    && in_scope
                {
                    missing.insert(key.to_string(), d.location.clone());
                }
            }
        }
        stats.log_files_missing = missing.len() as u64;
        for (key, digest) in missing {
            failures.push(FailureEntry::new(
                ctx.source.location(&key),
                "LogFileMissing",
                format!("digest {digest} lists this log file, but the source does not have it (deleted or moved)"),
            ));
        }
        stats.failed_entries = failures.len() as u64;
        (stats, failures, fingerprints.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_file_key_names_its_trail_root_account_and_region() {
        let key = "p/AWSLogs/o-abc/111122223333/CloudTrail/eu-west-1/2026/01/02/111122223333_CloudTrail_eu-west-1_20260102T0005Z_x.json.gz";
        let (awslogs, root, region) = log_file_scope(key).unwrap();
        assert_eq!(awslogs, "p/AWSLogs/");
        assert_eq!(root, "p/AWSLogs/o-abc/111122223333/");
        assert_eq!(region, "eu-west-1");
        assert_eq!(folder_of(key), "p/AWSLogs/o-abc/111122223333/CloudTrail/eu-west-1/2026/01/02/");
        assert!(log_file_scope("AWSLogs/111122223333/CloudTrail-Digest/eu-west-1/x").is_none());
    }

    #[test]
    fn access_denied_on_keys_or_digests_blocks_the_item_with_one_named_entry() {
        let e = blocked(CopyError::AccessDenied {
            location: "cloudtrail:ListPublicKeys in us-east-1".into(),
            message: "denied".into(),
        });
        assert!(matches!(&e, CopyError::Blocked(f) if f.error_type == "DigestPublicKeysAccessDenied"), "{e}");
        let e = blocked(CopyError::AccessDenied { location: "s3://b/k".into(), message: "denied".into() });
        assert!(matches!(&e, CopyError::Blocked(f) if f.error_type == "DigestAccessDenied"), "{e}");
        assert!(matches!(blocked(CopyError::State("x".into())), CopyError::State(_)));
    }
}
