//! One CloudTrail log file → validated events as Arrow record batches, one per eventTime date.
//! Fields are borrowed from the decompressed text (no `serde_json::Value` tree); nested objects
//! are kept as their JSON text, and every field without a typed column lands in `otherFields`,
//! so each event can be rebuilt exactly.

mod build;
mod checked;
mod gzip;
mod nested;
pub mod rebuild;
mod scan;
pub mod schema;

use std::fmt;

use arrow_array::RecordBatch;
use jiff::Timestamp;
use jiff::civil::Date;

use crate::range::Window;

pub use gzip::{MAX_DECOMPRESSED, gunzip, gunzip_partial};
use gzip::{give_text_buffer, gunzip_into, take_text_buffer};
pub use scan::{parse_log, parse_log_partial};
pub use schema::{COLUMNS, Kind, Nested, OTHER_FIELDS, SCHEMA, SOURCE_LOG_FILE, STORE_SCHEMA};

/// Why a whole file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub error_type: &'static str,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

/// Events of one date from one file, with their dedup keys (row-aligned).
#[derive(Debug)]
pub struct DatePart {
    pub date: Date,
    pub batch: RecordBatch,
    pub keys: Vec<u128>,
}

/// The outcome of reading one file.
#[derive(Debug, Default)]
pub struct ParsedFile {
    pub parts: Vec<DatePart>,
    pub events_read: u64,
    pub events_out_of_range: u64,
    pub events_invalid: u64,
    /// The first few invalid events: (index in Records, reason).
    pub invalid_samples: Vec<(usize, String)>,
}

/// No CloudTrail event comes near this (the service caps events far lower).
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Reads one compressed log file as far as it can be read. Events before damage (a truncated or
/// corrupt gzip stream, broken JSON) are kept and counted; the damage is the returned error.
pub fn read_log(compressed: &[u8], window: &Window) -> (ParsedFile, Option<FileError>) {
    let (parsed, damage, _) = read_log_hashed(compressed, window, false);
    (parsed, damage)
}

/// [`read_log`], and with `hash` the SHA-256 of the inflated bytes (what a digest lists), taken
/// from the same inflate; `None` when the stream is damaged (there is no whole file to hash).
pub fn read_log_hashed(
    compressed: &[u8],
    window: &Window,
    hash: bool,
) -> (ParsedFile, Option<FileError>, Option<[u8; 32]>) {
    let mut text = take_text_buffer();
    let gzip_error = gunzip_into(compressed, &mut text);
    let sha256 = (hash && gzip_error.is_none()).then(|| crate::digest::signature::sha256(&text));
    let (parsed, damage) = match gzip_error {
        None => parse_log_partial(&text, window),
        Some(mut e) => {
            let (parsed, _) = parse_log_partial(&text, window);
            if parsed.events_read > 0 {
                e.message.push_str(&format!("; the {} events before the damage were read", parsed.events_read));
            }
            (parsed, Some(e))
        }
    };
    give_text_buffer(text);
    (parsed, damage, sha256)
}

/// The canonical text of a timestamp as CloudTrail writes it.
pub fn format_event_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::scan::is_canonical_time;
    use super::schema::column_index;
    use super::*;
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMicrosecondType;

    fn window() -> Window {
        Window {
            start: "2000-01-01T00:00:00Z".parse().unwrap(),
            end: "2030-01-01T00:00:00Z".parse().unwrap(),
            retention_cutoff: "1990-01-01T00:00:00Z".parse().unwrap(),
        }
    }

    fn example(name: &str) -> Vec<u8> {
        let p = format!("{}/../../tests/data/real-umccr/examples/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[test]
    fn every_record_version_example_is_valid() {
        for v in [
            "1_0",
            "1_01",
            "1_02",
            "1_03",
            "1_04",
            "1_05",
            "1_06",
            "1_07",
            "1_08",
            "1_09",
            "1_10",
            "1_11",
            "idc",
            "federated",
            "discard_kms_crypto",
        ] {
            let p = parse_log(&example(&format!("{v}.json")), &window()).unwrap();
            assert_eq!(p.events_invalid, 0, "{v}: {:?}", p.invalid_samples);
            assert!(p.events_read > 0);
        }
    }

    fn rebuilt(p: &ParsedFile) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for part in &p.parts {
            let r = rebuild::Rebuilder::new(&part.batch.schema()).unwrap();
            for row in 0..part.batch.num_rows() {
                let mut line = String::new();
                r.write_row(&part.batch, row, &mut line);
                out.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")));
            }
        }
        out
    }

    fn originals(text: &[u8]) -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_slice(text).unwrap();
        v["Records"].as_array().unwrap().clone()
    }

    #[test]
    fn every_record_version_example_rebuilds_exactly() {
        for v in ["1_0", "1_01", "1_05", "1_08", "1_09", "1_10", "1_11", "idc", "federated", "discard_kms_crypto"] {
            let text = example(&format!("{v}.json"));
            let p = parse_log(&text, &window()).unwrap();
            assert_eq!(rebuilt(&p), originals(&text), "{v}");
        }
    }

    #[test]
    fn user_identity_is_a_struct_and_odd_shapes_rebuild() {
        let ev = |ui: &str| {
            format!(
                r#"{{"eventVersion":"1.08","eventTime":"2020-10-01T00:00:00Z","eventSource":"s","eventName":"n","awsRegion":"r","eventID":"e","eventType":"t"{ui}}}"#
            )
        };
        let shapes = [
            r#","userIdentity":{"type":"AssumedRole","arn":"a","sessionContext":{"sessionIssuer":{},"webIdFederationData":{},"attributes":{"creationDate":"2020-10-01T00:00:00Z","mfaAuthenticated":"false"}}}"#,
            r#","userIdentity":{"type":7,"arn":null,"newField":{"deep":[1,2.50,123456789012345678901234567890]},"sessionContext":{"attributes":{"mfaAuthenticated":true,"x":"y"},"sessionIssuer":"odd"}}"#,
            r#","userIdentity":{"sessionContext":{"webIdFederationData":{"federatedProvider":"p","attributes":{"aud":"x"}}}}"#,
            r#","userIdentity":{"sessionContext":{"webIdFederationData":{"attributes":null}}}"#,
            r#","userIdentity":null"#,
            r#","userIdentity":"a string""#,
            r#","userIdentity":[1,{"type":"x"}]"#,
            r#","userIdentity":{}"#,
            r#","userIdentity":{"type":"Root","type":"IAMUser"}"#,
            r#","tlsDetails":{"tlsVersion":"TLSv1.3","cipherSuite":"c","clientProvidedHostHeader":"h","extra":1}"#,
            r#","tlsDetails":{"tlsVersion":null}"#,
            "",
        ];
        let records: Vec<String> = shapes.iter().map(|s| ev(s)).collect();
        let text = format!("{{\"Records\":[{}]}}", records.join(","));
        let p = parse_log(text.as_bytes(), &window()).unwrap();
        assert_eq!(p.events_invalid, 0, "{:?}", p.invalid_samples);
        let b = &p.parts[0].batch;
        let ui = b.column_by_name("userIdentity").unwrap().as_struct();
        assert!(matches!(ui.data_type(), arrow_schema::DataType::Struct(_)));
        let field = |row: usize, path: &[&str]| -> Option<String> {
            let mut s = ui.clone();
            for (i, name) in path.iter().enumerate() {
                let c = s.column_by_name(name).unwrap().clone();
                if c.is_null(row) {
                    return None;
                }
                if i + 1 == path.len() {
                    return Some(c.as_string::<i32>().value(row).to_string());
                }
                s = c.as_struct().clone();
            }
            None
        };
        assert_eq!(field(0, &["type"]).as_deref(), Some("AssumedRole"));
        assert_eq!(field(0, &["sessionContext", "attributes", "mfaAuthenticated"]).as_deref(), Some("false"));
        assert!(field(0, &["sessionContext", "sessionIssuer", "arn"]).is_none());
        assert_eq!(field(1, &["type"]), None, "a number is not a string: it goes to otherFields");
        assert_eq!(
            field(2, &["sessionContext", "webIdFederationData", "attributes"]).as_deref(),
            Some(r#"{"aud":"x"}"#)
        );
        assert!(ui.is_null(4) && ui.is_null(5) && ui.is_null(6) && ui.is_null(11));
        assert!(ui.is_valid(7));
        let other = b.column_by_name(OTHER_FIELDS).unwrap().as_string::<i32>();
        assert!(other.is_null(0) && other.is_null(2) && other.is_null(7), "nothing odd in rows 0, 2, 7");
        let o1: serde_json::Value = serde_json::from_str(other.value(1)).unwrap();
        assert_eq!(o1["userIdentity"]["type"], 7);
        assert_eq!(o1["userIdentity"]["sessionContext"]["sessionIssuer"], "odd");
        let tls = b.column_by_name("tlsDetails").unwrap().as_struct();
        assert_eq!(tls.column_by_name("tlsVersion").unwrap().as_string::<i32>().value(9), "TLSv1.3");
        // Every shape rebuilds to the original, as a JSON value (123456789012345678901234567890 aside, which no JSON
        // holds exactly: compare the text of that event instead).
        let got = rebuilt(&p);
        let want = originals(text.as_bytes());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if i != 1 {
                assert_eq!(g, w, "shape {i}: {}", shapes[i]);
            }
        }
        let mut line = String::new();
        let r = rebuild::Rebuilder::new(&b.schema()).unwrap();
        r.write_row(b, 1, &mut line);
        assert!(
            line.contains(r#""newField":{"deep":[1,2.50,123456789012345678901234567890]}"#),
            "numbers keep their text: {line}"
        );
    }

    #[test]
    fn keys_are_borrowed_unless_escaped() {
        let text = r#"{"eventName":1,"a\u0042c":2}"#;
        let mut de = serde_json::Deserializer::from_str(text);
        let got = serde::Deserializer::deserialize_map(&mut de, Pairs).unwrap();
        let keys: Vec<_> = got.into_iter().map(|(k, _)| k.0).collect();
        assert!(matches!(&keys[0], std::borrow::Cow::Borrowed("eventName")), "{keys:?}");
        assert!(matches!(&keys[1], std::borrow::Cow::Owned(k) if k == "aBc"), "{keys:?}");
    }

    /// Collects an object's (key, ignored value) pairs.
    struct Pairs;

    impl<'de> serde::de::Visitor<'de> for Pairs {
        type Value = Vec<(scan::Key<'de>, serde::de::IgnoredAny)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry()? {
                out.push(entry);
            }
            Ok(out)
        }
    }

    #[test]
    fn column_index_matches_columns() {
        for (i, (name, _)) in COLUMNS.iter().enumerate() {
            assert_eq!(column_index(name), Some(i), "{name}");
        }
        assert_eq!(column_index("otherFields"), None);
        assert!(is_canonical_time("2020-10-01T00:00:00Z"));
        for t in ["2020-10-01T00:00:60Z", "2020-10-01T00:00:00.1Z", "2020-10-01T00:00:00+00:00"] {
            assert!(!is_canonical_time(t), "{t}");
        }
    }

    #[test]
    fn version_claims_are_checked() {
        // bad1_01.json says eventVersion 1.02 but has no eventType (required since 1.02).
        let p = parse_log(&example("bad1_01.json"), &window()).unwrap();
        assert_eq!(p.events_invalid, 1);
        assert!(p.invalid_samples[0].1.contains("eventType"), "{:?}", p.invalid_samples);
    }

    #[test]
    fn file_level_errors() {
        let err = |t: &str| parse_log(t.as_bytes(), &window()).unwrap_err().error_type;
        assert_eq!(err("not json"), "InvalidJson");
        assert_eq!(err("{\"Records\": [ {\"a\":1}"), "InvalidJson");
        assert_eq!(err("[1,2]"), "InvalidLogFile");
        assert_eq!(err("{\"records\": []}"), "InvalidLogFile");
        assert_eq!(err("{\"Records\": {}}"), "InvalidLogFile");
        assert_eq!(gunzip(b"\x1f\x8b\x08garbage").unwrap_err().error_type, "CorruptGzip");
    }

    #[test]
    fn bad_events_are_counted_not_fatal() {
        let text = r#"{"Records":[
            1, "x", null,
            {"eventVersion":"1.08","eventSource":"s","eventName":"n","awsRegion":"r","eventID":"a","eventType":"t"},
            {"eventVersion":"1.08","eventTime":"yesterday","eventSource":"s","eventName":"n","awsRegion":"r","eventID":"b","eventType":"t"},
            {"eventVersion":"1.08","eventTime":"2020-10-01T00:00:00Z","eventSource":"s","awsRegion":"r","eventID":"c","eventType":"t"},
            {"eventVersion":"1.08","eventTime":"2020-10-01T00:00:00Z","eventSource":"s","eventName":"n","awsRegion":"r","eventID":"d","eventType":"t"}
        ]}"#;
        let p = parse_log(text.as_bytes(), &window()).unwrap();
        assert_eq!((p.events_read, p.events_invalid), (7, 6));
        assert_eq!(p.parts.iter().map(|d| d.batch.num_rows()).sum::<usize>(), 1);
        let reasons: Vec<_> = p.invalid_samples.iter().map(|(_, r)| r.as_str()).collect();
        assert!(reasons[0].contains("not a JSON object"));
        assert!(reasons[3].contains("missing eventTime"));
        assert!(reasons[4].contains("yesterday"));
    }

    #[test]
    fn odd_types_and_unknown_fields_go_to_other_fields() {
        let text = r#"{"Records":[{"eventVersion":"1.08","eventTime":"2020-10-01T00:00:00.250Z","eventSource":"s",
            "eventName":"n","awsRegion":"r","eventID":"e","eventType":"t","errorCode":null,"readOnly":"true",
            "futureField":{"x":[1,2]},"requestParameters":null}]}"#;
        let p = parse_log(text.as_bytes(), &window()).unwrap();
        let b = &p.parts[0].batch;
        let other = b.column_by_name(OTHER_FIELDS).unwrap().as_string::<i32>().value(0);
        let v: serde_json::Value = serde_json::from_str(other).unwrap();
        assert_eq!(v["errorCode"], serde_json::Value::Null);
        assert_eq!(v["readOnly"], "true");
        assert_eq!(v["futureField"]["x"][1], 2);
        assert_eq!(v["eventTime"], "2020-10-01T00:00:00.250Z");
        // JSON null: SQL NULL in its column, `null` in otherFields.
        assert!(b.column_by_name("requestParameters").unwrap().is_null(0));
        assert_eq!(v["requestParameters"], serde_json::Value::Null);
        let t = b.column_by_name("eventTime").unwrap().as_primitive::<TimestampMicrosecondType>().value(0);
        assert_eq!(t, "2020-10-01T00:00:00.25Z".parse::<Timestamp>().unwrap().as_microsecond());
    }

    #[test]
    fn events_split_by_utc_date_and_range() {
        let ev = |t: &str, id: &str| {
            format!(
                r#"{{"eventVersion":"1.08","eventTime":"{t}","eventSource":"s","eventName":"n","awsRegion":"r","eventID":"{id}","eventType":"t"}}"#
            )
        };
        let text = format!(
            "{{\"Records\":[{},{},{}]}}",
            ev("2020-09-30T23:59:59Z", "a"),
            ev("2020-10-01T00:00:00Z", "b"),
            ev("2031-01-01T00:00:00Z", "c")
        );
        let p = parse_log(text.as_bytes(), &window()).unwrap();
        assert_eq!(p.events_out_of_range, 1);
        let dates: Vec<String> = p.parts.iter().map(|d| d.date.to_string()).collect();
        assert_eq!(dates, ["2020-09-30", "2020-10-01"]);
    }
}
