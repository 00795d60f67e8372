//! A CloudTrail digest file: its name, its JSON body, and the keys it names.
//!
//! Layout and fields: <https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-log-file-validation-digest-file-structure.html>
//! `AWSLogs/[o-org/]<account>/CloudTrail-Digest/<region>/YYYY/MM/DD/
//! <account>_CloudTrail-Digest_<region>_<trail>_<home-region>_YYYYMMDDTHHmmssZ.json.gz`,
//! one per trail, account and region each hour, in the day folder of its end time.

use jiff::Timestamp;
use jiff::civil::DateTime;
use serde::Deserialize;

/// What a digest file's name says.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DigestName {
    pub account: String,
    /// The region the digest (and the log files it lists) was delivered from.
    pub region: String,
    /// Trail names may hold underscores; regions and the timestamp never do.
    pub trail: String,
    /// The trail's home region (where it was created).
    pub home_region: String,
    /// `digestEndTime` to the second.
    pub end: Timestamp,
    /// A backfill digest lists log files an earlier digest missed (`_backfill` in its name).
    pub backfill: bool,
}

impl DigestName {
    /// Parses a digest file name (the last path segment); `None` for anything else.
    pub fn parse(file_name: &str) -> Option<DigestName> {
        let stem = file_name.strip_suffix(".json.gz")?;
        let (stem, backfill) = match stem.strip_suffix("_backfill") {
            Some(s) => (s, true),
            None => (stem, false),
        };
        let (rest, stamp) = stem.rsplit_once('_')?;
        let end = parse_compact_time(stamp)?;
        let (rest, home_region) = rest.rsplit_once('_')?;
        let (account, rest) = rest.split_once("_CloudTrail-Digest_")?;
        let (region, trail) = rest.split_once('_')?;
        let ok = |s: &str| !s.is_empty();
        (crate::layout::is_account_id(account) && ok(region) && ok(trail) && ok(home_region)).then(|| DigestName {
            account: account.to_string(),
            region: region.to_string(),
            trail: trail.to_string(),
            home_region: home_region.to_string(),
            end,
            backfill,
        })
    }

    /// The chain a digest belongs to: one per trail, account and region.
    pub fn chain(&self) -> (String, String, String, String) {
        (self.account.clone(), self.region.clone(), self.trail.clone(), self.home_region.clone())
    }
}

/// `YYYYMMDDTHHmmssZ`.
fn parse_compact_time(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| -> Option<i32> {
        let part = s.get(r)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let dt = DateTime::new(
        n(0..4)? as i16,
        n(4..6)? as i8,
        n(6..8)? as i8,
        n(9..11)? as i8,
        n(11..13)? as i8,
        n(13..15)? as i8,
        0,
    )
    .ok()?;
    dt.to_zoned_datetime(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// The part of a key from its `AWSLogs/` segment on: digests name keys as delivered (with the
/// trail's own prefix, in the trail's bucket); a copy (a local folder, a replica bucket, another
/// prefix) keeps that part.
pub fn awslogs_suffix(key: &str) -> Option<&str> {
    if key.starts_with("AWSLogs/") {
        return Some(key);
    }
    key.find("/AWSLogs/").map(|i| &key[i + 1..])
}

/// The source key of `named` (a key as a digest names it) under the source's `AWSLogs/` root.
pub fn source_key(awslogs_root: &str, named: &str) -> Option<String> {
    awslogs_suffix(named).map(|s| format!("{awslogs_root}{}", &s["AWSLogs/".len()..]))
}

/// The digest body. Field names as CloudTrail writes them.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DigestFile {
    pub digest_start_time: String,
    pub digest_end_time: String,
    pub digest_s3_bucket: String,
    pub digest_s3_object: String,
    pub digest_public_key_fingerprint: String,
    #[serde(default)]
    pub digest_signature_algorithm: Option<String>,
    #[serde(default)]
    pub previous_digest_s3_bucket: Option<String>,
    #[serde(default)]
    pub previous_digest_s3_object: Option<String>,
    #[serde(default)]
    pub previous_digest_hash_value: Option<String>,
    #[serde(default)]
    pub previous_digest_hash_algorithm: Option<String>,
    /// `null` in a starting digest (the first after validation or logging was turned on).
    pub previous_digest_signature: Option<String>,
    #[serde(default)]
    pub log_files: Vec<ListedLogFile>,
}

/// One `logFiles` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedLogFile {
    #[serde(default)]
    pub s3_bucket: Option<String>,
    pub s3_object: String,
    pub hash_value: String,
    #[serde(default)]
    pub hash_algorithm: Option<String>,
}

/// Fields a digest must carry, null or not (aws-cli's `required_digest_keys`): without them
/// the string to sign cannot be rebuilt.
const REQUIRED: [&str; 6] = [
    "digestPublicKeyFingerprint",
    "digestS3Bucket",
    "digestS3Object",
    "previousDigestSignature",
    "digestEndTime",
    "digestStartTime",
];

/// Parses an inflated digest body; the error says what is wrong.
pub fn parse_digest(json: &[u8]) -> Result<DigestFile, String> {
    let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
    let Some(object) = value.as_object() else { return Err("not a JSON object".into()) };
    if let Some(missing) = REQUIRED.iter().find(|k| !object.contains_key(**k)) {
        return Err(format!("no `{missing}` field"));
    }
    serde_json::from_value(value).map_err(|e| format!("unexpected field value: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_of_an_hourly_digest() {
        let n = DigestName::parse(
            "111122223333_CloudTrail-Digest_us-east-2_your-trail-name_us-east-2_20150817T150131Z.json.gz",
        )
        .unwrap();
        assert_eq!(n.account, "111122223333");
        assert_eq!(n.region, "us-east-2");
        assert_eq!(n.trail, "your-trail-name");
        assert_eq!(n.home_region, "us-east-2");
        assert_eq!(n.end, "2015-08-17T15:01:31Z".parse().unwrap());
        assert!(!n.backfill);
    }

    #[test]
    fn name_with_underscores_in_the_trail_and_a_backfill_suffix() {
        let n = DigestName::parse(
            "111122223333_CloudTrail-Digest_eu-west-1_org_trail_v2_us-east-1_20240301T000131Z_backfill.json.gz",
        )
        .unwrap();
        assert_eq!(
            (n.region.as_str(), n.trail.as_str(), n.home_region.as_str()),
            ("eu-west-1", "org_trail_v2", "us-east-1")
        );
        assert!(n.backfill);
    }

    #[test]
    fn names_that_are_not_digests() {
        for bad in [
            "111122223333_CloudTrail_us-east-1_20201001T0005Z_AbCdEf0123456789.json.gz",
            "111122223333_CloudTrail-Digest_us-east-1_t_us-east-1_20150817T150131Z.json",
            "111122223333_CloudTrail-Digest_us-east-1_t_us-east-1_20151317T150131Z.json.gz",
            "11112222333_CloudTrail-Digest_us-east-1_t_us-east-1_20150817T150131Z.json.gz",
            "111122223333_CloudTrail-Digest_us-east-1__us-east-1_20150817T150131Z.json.gz",
            "111122223333_CloudTrail-Digest_us-east-1_t_us-east-1_2015081T1501310Z.json.gz",
        ] {
            assert_eq!(DigestName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_map_by_their_awslogs_part() {
        assert_eq!(awslogs_suffix("corp/AWSLogs/o-a/1/CloudTrail/x"), Some("AWSLogs/o-a/1/CloudTrail/x"));
        assert_eq!(awslogs_suffix("AWSLogs/1/x"), Some("AWSLogs/1/x"));
        assert_eq!(awslogs_suffix("corp/NotAWSLogs/1/x"), None);
        assert_eq!(
            source_key("mirror/AWSLogs/", "corp/AWSLogs/1/CloudTrail/f").as_deref(),
            Some("mirror/AWSLogs/1/CloudTrail/f")
        );
    }

    #[test]
    fn a_starting_digest_has_null_previous_fields() {
        let d = parse_digest(
            br#"{"digestStartTime":"a","digestEndTime":"b","digestS3Bucket":"bk","digestS3Object":"AWSLogs/1/x",
                "digestPublicKeyFingerprint":"f","previousDigestS3Bucket":null,"previousDigestS3Object":null,
                "previousDigestHashValue":null,"previousDigestHashAlgorithm":null,"previousDigestSignature":null,
                "logFiles":[]}"#,
        )
        .unwrap();
        assert!(d.previous_digest_signature.is_none() && d.previous_digest_s3_object.is_none());
    }

    #[test]
    fn a_digest_without_a_required_field_is_refused_by_name() {
        let e = parse_digest(br#"{"digestStartTime":"a","digestEndTime":"b","logFiles":[]}"#).unwrap_err();
        assert!(e.contains("digestPublicKeyFingerprint"), "{e}");
        assert!(parse_digest(b"[1]").unwrap_err().contains("object"));
        assert!(parse_digest(b"{").unwrap_err().contains("not JSON"));
    }
}
