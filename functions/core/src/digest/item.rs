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
use crate::range::{DELIVERY_SLACK, START_SLACK, Window};
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
    fn owns(&self, window: &Window, digest: &CheckedDigest, files: &[&str]) -> bool {
        let earliest = files
            .iter()
            .filter(|k| self.scopes.iter().any(|s| k.starts_with(&s.log_prefix())))
            .filter_map(|k| layout::file_timestamp(layout::file_name(k)).map(|t| (t, *k)))
            .filter(|(t, _)| window.file_in_scope(*t))
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
                        if self.owns(&ctx.window, d, &files) {
                            stats.digests_verified += 1;
                        }
                    }
                    DigestStatus::Failed { .. } => {
                        if reported.contains(d.location.as_str()) && self.owns(&ctx.window, d, &files) {
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
    use crate::digest::DigestIndex;

    const ROOT: &str = "AWSLogs/111122223333/";

    /// `YYYY/MM/DD` of a `YYYYMMDDT…` time.
    fn day(t: &str) -> String {
        format!("{}/{}/{}", &t[..4], &t[4..6], &t[6..8])
    }

    fn log(t: &str) -> String {
        format!("{ROOT}CloudTrail/us-east-1/{}/111122223333_CloudTrail_us-east-1_{t}_x.json.gz", day(t))
    }

    fn digest_key(end: &str) -> String {
        let name = format!("111122223333_CloudTrail-Digest_us-east-1_t_us-east-1_{end}.json.gz");
        format!("{ROOT}CloudTrail-Digest/us-east-1/{}/{name}", day(end))
    }

    fn verified(key: &str) -> CheckedDigest {
        CheckedDigest {
            key: key.into(),
            location: key.into(),
            status: DigestStatus::Verified { fingerprint: "fp".into() },
        }
    }

    /// An item of `date` holding the day folder of `files` (whose keys are in its listing).
    fn item(date: &str, files: &[String], index: DigestIndex, require_verified: bool) -> ItemDigests {
        let (from, to): (Timestamp, Timestamp) = ("2024-03-01T00:00:00Z".parse().unwrap(), Timestamp::MAX);
        ItemDigests {
            loaded: vec![LoadedDigests { index, failures: Vec::new(), digests_failed: 0 }],
            require_verified,
            folders: files.iter().map(|k| folder_of(k).to_string()).collect(),
            present: files.iter().cloned().collect(),
            scopes: vec![DigestScope { account_root: ROOT.into(), region: "us-east-1".into(), from, to }],
            date: date.parse().unwrap(),
            requests: (0, 0),
        }
    }

    fn window(start: &str, end: &str) -> Window {
        Window { start: start.parse().unwrap(), end: end.parse().unwrap(), retention_cutoff: Timestamp::MIN }
    }

    #[test]
    fn each_verdict_is_counted_and_only_verified_files_pass_require_verified() {
        let (good, bad, absent, doubtful) =
            (log("20240301T0100Z"), log("20240301T0200Z"), log("20240301T0300Z"), log("20240301T0400Z"));
        let hash = [7u8; 32];
        let mut index = DigestIndex::default();
        let listed = |k: &String, h: &[u8; 32]| (k.clone(), hex::encode(h), None);
        index.add(verified(&digest_key("20240301T023148Z")), [listed(&good, &hash), listed(&bad, &[8; 32])]);
        let failed = DigestStatus::Failed { error_type: "DigestSignatureInvalid", message: "forged".into() };
        index
            .add(CheckedDigest { key: "d2".into(), location: "d2".into(), status: failed }, [listed(&doubtful, &hash)]);
        let mut stats = Statistics::default();
        let mut failures = Vec::new();
        let loose = item("2024-03-01", &[], index, false);
        let results: Vec<bool> = [&good, &bad, &absent, &doubtful]
            .iter()
            .map(|k| loose.check(k, k, Some(&hash), &mut stats, &mut failures))
            .collect();
        assert_eq!(results, [true, true, true, true], "without --require-verified every file is copied");
        assert_eq!(
            (stats.files_verified, stats.files_mismatched, stats.files_not_in_digest, stats.files_unverified),
            (1, 1, 1, 1)
        );
        let types: Vec<&str> = failures.iter().map(|f| f.error_type.as_str()).collect();
        assert_eq!(types, ["DigestMismatch"], "a mismatch is always listed; doubts only when required");

        let strict = ItemDigests { require_verified: true, ..loose };
        let (mut stats, mut failures) = (Statistics::default(), Vec::new());
        let results: Vec<bool> = [&good, &bad, &absent, &doubtful]
            .iter()
            .map(|k| strict.check(k, k, Some(&hash), &mut stats, &mut failures))
            .collect();
        assert_eq!(results, [true, false, false, false]);
        let types: Vec<&str> = failures.iter().map(|f| f.error_type.as_str()).collect();
        assert_eq!(types, ["DigestMismatch", "FileNotInDigest", "FileNotVerified"]);
        assert!(failures.iter().all(|f| f.error_message.ends_with("not copied (--require-verified)")));
        // A damaged file (no whole stream to hash) that a digest lists is a mismatch.
        assert!(!strict.check(&good, &good, None, &mut stats, &mut failures));
        assert_eq!(stats.files_mismatched, 2);
    }

    #[test]
    fn a_digest_next_to_two_items_days_is_counted_by_one() {
        let (late, early) = (log("20240301T2330Z"), log("20240302T0002Z"));
        let boundary = digest_key("20240302T003148Z");
        let empty = digest_key("20240302T013148Z");
        let index = || {
            let mut ix = DigestIndex::default();
            ix.add(verified(&boundary), [(late.clone(), "00".into(), None), (early.clone(), "00".into(), None)]);
            ix.add(verified(&empty), []);
            ix
        };
        let day1 = item("2024-03-01", std::slice::from_ref(&late), index(), false);
        let day2 = item("2024-03-02", std::slice::from_ref(&early), index(), false);
        let w = window("2024-03-01T00:00:00Z", "2024-03-03T00:00:00Z");
        let owners = |d: &CheckedDigest, files: &[&str]| (day1.owns(&w, d, files), day2.owns(&w, d, files));
        let (b, e) = (verified(&boundary), verified(&empty));
        // The earliest listed file in range is day 1's.
        assert_eq!(owners(&b, &[late.as_str(), early.as_str()]), (true, false));
        // A digest listing nothing belongs to the day it ends in.
        assert_eq!(owners(&e, &[]), (false, true));
        // When day 1's file is out of range, day 2 counts the digest.
        let late_range = window("2024-03-02T00:00:00Z", "2024-03-03T00:00:00Z");
        assert!(!day1.owns(&late_range, &b, &[late.as_str(), early.as_str()]));
        assert!(day2.owns(&late_range, &b, &[late.as_str(), early.as_str()]));
    }

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
