//! The trail's key layout:
//! `[prefix/]AWSLogs/[o-orgid/]<account>/CloudTrail/<region>/YYYY/MM/DD/<file>.json.gz`.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};

/// Where discovery starts and what a source prefix pins down below `AWSLogs/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailRoot {
    /// Key prefix ending in `AWSLogs/`.
    pub awslogs: String,
    /// Path segments the source prefix fixes after `AWSLogs/` (org?, account, CloudTrail, region, y, m, d).
    pub narrowing: Vec<String>,
}

/// Splits a source prefix into the `AWSLogs/` root and the segments that narrow it.
pub fn trail_root(source_prefix: &str) -> TrailRoot {
    let segments: Vec<&str> = source_prefix.split('/').filter(|s| !s.is_empty()).collect();
    match segments.iter().position(|s| *s == "AWSLogs") {
        Some(i) => TrailRoot {
            awslogs: format!("{}/", segments[..=i].join("/")),
            narrowing: segments[i + 1..].iter().map(|s| s.to_string()).collect(),
        },
        None => TrailRoot { awslogs: format!("{source_prefix}AWSLogs/"), narrowing: Vec::new() },
    }
}

/// Whether a source prefix lies inside a trail's `AWSLogs/` tree (or is one).
pub fn has_awslogs(source_prefix: &str) -> bool {
    source_prefix.split('/').any(|s| s == "AWSLogs")
}

pub fn is_org_id(segment: &str) -> bool {
    segment.len() > 2 && segment.starts_with("o-") && segment[2..].bytes().all(|c| c.is_ascii_alphanumeric())
}

pub fn is_account_id(segment: &str) -> bool {
    segment.len() == 12 && segment.bytes().all(|c| c.is_ascii_digit())
}

/// The last path segment of a prefix or key (`a/b/c/` → `c`).
pub fn last_segment(prefix: &str) -> &str {
    prefix.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

/// The file name of a key.
pub fn file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Only gzipped JSON log files are read.
pub fn is_gzip_log(key: &str) -> bool {
    file_name(key).ends_with(".json.gz")
}

/// Whether a file is named like a CloudTrail log file:
/// `AccountID_CloudTrail_RegionName_YYYYMMDDTHHmmZ_UniqueString.FileNameFormat`
/// (https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-log-file-examples.html).
/// Only the head (`<12 digits>_CloudTrail_`) is required: hand-made names in real trails drop the
/// unique part or use a dash before the time, and are still log files. Any other name in a day
/// folder (`.DS_Store`, `notes.txt`) is not a log file: skipped, not a failure.
pub fn is_log_file_name(name: &str) -> bool {
    name.get(..12).is_some_and(is_account_id) && name.get(12..).is_some_and(|rest| rest.starts_with("_CloudTrail_"))
}

/// Which rows of an item lie together in its Parquet files: `None` for a file delivered in the
/// first hour of its day (it can hold the previous day's last events: these files come first),
/// else the name up to its delivery time, `Account_CloudTrail_Region_` (an item's other files
/// follow in name order, so each account-region's rows are contiguous).
pub fn cluster_of(name: &str) -> Option<&str> {
    if first_hour_delivery(name).is_some() {
        return None;
    }
    let account_region = name.match_indices('_').nth(2).map_or(name, |(i, _)| &name[..=i]);
    Some(account_region)
}

/// The delivery time of a file named in the first hour of its day (see [`cluster_of`]).
pub fn first_hour_delivery(name: &str) -> Option<Timestamp> {
    file_timestamp(name).filter(|t| t.as_second().rem_euclid(86_400) < 3_600)
}

/// The delivery timestamp in a log file name: the first `YYYYMMDDTHHmm` (optionally `Z`),
/// e.g. `123456789012_CloudTrail_us-east-1_20201001T0005Z_abc.json.gz`. `None` when absent.
pub fn file_timestamp(name: &str) -> Option<Timestamp> {
    let b = name.as_bytes();
    (0..b.len().saturating_sub(12)).find_map(|i| {
        let w = &b[i..i + 13];
        let digits = |r: std::ops::Range<usize>| w[r].iter().all(u8::is_ascii_digit);
        if !(digits(0..8) && w[8] == b'T' && digits(9..13)) {
            return None;
        }
        // Not part of a longer digit run.
        if i > 0 && b[i - 1].is_ascii_digit() || b.get(i + 13).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        let n = |r: std::ops::Range<usize>| -> i32 {
            std::str::from_utf8(&w[r]).ok().and_then(|s| s.parse().ok()).unwrap_or(-1)
        };
        let dt =
            DateTime::new(n(0..4) as i16, n(4..6) as i8, n(6..8) as i8, n(9..11) as i8, n(11..13) as i8, 0, 0).ok()?;
        dt.to_zoned_datetime(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp())
    })
}

/// The trail a log file key belongs to: everything before its account folder
/// (`[prefix/]AWSLogs/` or `[prefix/]AWSLogs/o-org/`).
pub fn trail_of_key(key: &str) -> &str {
    let mut end = 0;
    for seg in key.split('/') {
        if is_account_id(seg) {
            break;
        }
        end += seg.len() + 1;
    }
    &key[..end.min(key.len())]
}

/// The date of a day prefix `.../YYYY/MM/DD/`.
pub fn day_of_prefix(prefix: &str) -> Option<Date> {
    let segs: Vec<&str> = prefix.trim_end_matches('/').rsplit('/').take(3).collect();
    if segs.len() != 3 {
        return None;
    }
    let (d, m, y) = (segs[0].parse().ok()?, segs[1].parse().ok()?, segs[2].parse().ok()?);
    Date::new(y, m, d).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_without_prefix() {
        assert_eq!(trail_root(""), TrailRoot { awslogs: "AWSLogs/".into(), narrowing: vec![] });
    }

    #[test]
    fn root_with_custom_prefix() {
        assert_eq!(trail_root("trails/prod/").awslogs, "trails/prod/AWSLogs/");
    }

    #[test]
    fn root_narrowed_to_an_org_account_region() {
        let r = trail_root("x/AWSLogs/o-abc123/111122223333/CloudTrail/eu-west-1/");
        assert_eq!(r.awslogs, "x/AWSLogs/");
        assert_eq!(r.narrowing, vec!["o-abc123", "111122223333", "CloudTrail", "eu-west-1"]);
    }

    #[test]
    fn ids() {
        assert!(is_org_id("o-abcd1234"));
        assert!(!is_org_id("o-"));
        assert!(!is_org_id("111122223333"));
        assert!(is_account_id("111122223333"));
        assert!(!is_account_id("11112222333"));
        assert!(!is_account_id("o-abcd"));
    }

    #[test]
    fn timestamp_standard_name() {
        let t = file_timestamp("111122223333_CloudTrail_us-east-1_20201001T0005Z_AbCdEf0123456789.json.gz");
        assert_eq!(t, Some("2020-10-01T00:05:00Z".parse().unwrap()));
    }

    #[test]
    fn timestamp_odd_names() {
        // Hand-made names in the real sample: a dash, no Z, no unique part.
        let t = file_timestamp("811596193553_CloudTrail_us-east-1-20200930T2300.json");
        assert_eq!(t, Some("2020-09-30T23:00:00Z".parse().unwrap()));
        assert_eq!(file_timestamp("notes.json.gz"), None);
        assert_eq!(file_timestamp("x_20201301T0000Z.json.gz"), None, "month 13");
        assert_eq!(file_timestamp("x_120201001T0000Z.json.gz"), None, "longer digit run");
    }

    #[test]
    fn gzip_only() {
        assert!(is_gzip_log("a/b/x.json.gz"));
        assert!(!is_gzip_log("a/b/x.json"));
        assert!(!is_gzip_log("a/b/x.gz"));
    }

    #[test]
    fn log_file_names() {
        for (name, log) in [
            ("111122223333_CloudTrail_us-east-1_20201001T0005Z_AbCdEf0123456789.json.gz", true),
            ("111122223333_CloudTrail_us-east-1_20201001T0005Z_AbCdEf0123456789.json", true),
            ("811596193553_CloudTrail_us-east-1-20200930T2300.json", true),
            ("111122223333_CloudTrail_x", true),
            ("111122223333_CloudTrail-Digest_us-east-1_management-events_us-east-1_20201001T000000Z.json.gz", false),
            (".DS_Store", false),
            ("notes.txt", false),
            ("notes-abc123.txt", false),
            ("11112222333_CloudTrail_us-east-1_20201001T0005Z_x.json.gz", false),
            ("1111222233334_CloudTrail_us-east-1_20201001T0005Z_x.json.gz", false),
            ("111122223333_cloudtrail_us-east-1_20201001T0005Z_x.json.gz", false),
            ("1111222233\u{e9}_CloudTrail_x", false),
            ("11112222333\u{e9}_CloudTrail_x", false),
            ("", false),
        ] {
            assert_eq!(is_log_file_name(name), log, "{name}");
        }
    }

    #[test]
    fn trails_of_keys() {
        assert_eq!(trail_of_key("p/AWSLogs/o-abc/111122223333/CloudTrail/r/2024/01/01/x"), "p/AWSLogs/o-abc/");
        assert_eq!(trail_of_key("AWSLogs/111122223333/CloudTrail/r/2024/01/01/x"), "AWSLogs/");
    }

    #[test]
    fn day_prefix() {
        assert_eq!(day_of_prefix("AWSLogs/1/CloudTrail/r/2020/09/30/"), Some(Date::constant(2020, 9, 30)));
        assert_eq!(day_of_prefix("AWSLogs/1/CloudTrail/r/2020/02/30/"), None);
        assert_eq!(last_segment("a/b/c/"), "c");
    }
}
