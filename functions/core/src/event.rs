//! One CloudTrail log file → validated events as Arrow record batches, one per eventTime date.
//! Fields are borrowed from the decompressed text (no `serde_json::Value` tree); nested objects
//! are kept as their JSON text, and every field without a typed column lands in `otherFields`,
//! so each event can be rebuilt exactly.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::sync::{Arc, LazyLock};

use arrow_array::builder::{BooleanBuilder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use jiff::Timestamp;
use jiff::civil::Date;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::range::Window;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A JSON string.
    Str,
    /// A JSON boolean.
    Bool,
    /// Any JSON value, kept as its text.
    Json,
    /// `eventTime`: a UTC timestamp.
    Time,
}

/// The typed columns, in order. `otherFields` follows them.
pub const COLUMNS: &[(&str, Kind)] = &[
    ("eventVersion", Kind::Str),
    ("eventTime", Kind::Time),
    ("eventSource", Kind::Str),
    ("eventName", Kind::Str),
    ("awsRegion", Kind::Str),
    ("sourceIPAddress", Kind::Str),
    ("userAgent", Kind::Str),
    ("errorCode", Kind::Str),
    ("errorMessage", Kind::Str),
    ("requestID", Kind::Str),
    ("eventID", Kind::Str),
    ("eventType", Kind::Str),
    ("apiVersion", Kind::Str),
    ("readOnly", Kind::Bool),
    ("managementEvent", Kind::Bool),
    ("recipientAccountId", Kind::Str),
    ("sharedEventID", Kind::Str),
    ("vpcEndpointId", Kind::Str),
    ("vpcEndpointAccountId", Kind::Str),
    ("eventCategory", Kind::Str),
    ("sessionCredentialFromConsole", Kind::Str),
    ("userIdentity", Kind::Json),
    ("requestParameters", Kind::Json),
    ("responseElements", Kind::Json),
    ("additionalEventData", Kind::Json),
    ("resources", Kind::Json),
    ("serviceEventDetails", Kind::Json),
    ("tlsDetails", Kind::Json),
    ("addendum", Kind::Json),
    ("edgeDeviceDetails", Kind::Json),
    ("insightDetails", Kind::Json),
    ("eventContext", Kind::Json),
];
pub const OTHER_FIELDS: &str = "otherFields";
const EVENT_ID: usize = 10;

pub static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields: Vec<Field> = COLUMNS
        .iter()
        .map(|(name, kind)| match kind {
            Kind::Str | Kind::Json => Field::new(*name, DataType::Utf8, true),
            Kind::Bool => Field::new(*name, DataType::Boolean, true),
            Kind::Time => Field::new(*name, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        })
        .collect();
    fields.push(Field::new(OTHER_FIELDS, DataType::Utf8, true));
    Arc::new(Schema::new(fields))
});

fn column_index(name: &str) -> Option<usize> {
    COLUMNS.iter().position(|(n, _)| *n == name)
}

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

/// Hard cap on one decompressed log file (CloudTrail files are far smaller).
pub const MAX_DECOMPRESSED: u64 = 2 << 30;

/// Inflates a (multi-member) gzip file.
pub fn gunzip(compressed: &[u8]) -> Result<Vec<u8>, FileError> {
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(8).min(256 << 20));
    let decoder = flate2::read::MultiGzDecoder::new(compressed);
    match decoder.take(MAX_DECOMPRESSED + 1).read_to_end(&mut out) {
        Ok(n) if n as u64 > MAX_DECOMPRESSED => Err(FileError {
            error_type: "CorruptGzip",
            message: format!("decompresses to more than {MAX_DECOMPRESSED} bytes"),
        }),
        Ok(_) => Ok(out),
        Err(e) => Err(FileError { error_type: "CorruptGzip", message: format!("gzip: {e}") }),
    }
}

#[derive(Deserialize)]
struct LogFile<'a> {
    #[serde(rename = "Records", borrow)]
    records: Option<&'a RawValue>,
}

/// An event's fields in document order, borrowed.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut fields = Vec::with_capacity(24);
                while let Some((k, v)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    fields.push((k, v));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Column builders for one date's rows.
struct Builders {
    cols: Vec<ColBuilder>,
    other: StringBuilder,
    keys: Vec<u128>,
}

enum ColBuilder {
    Str(StringBuilder),
    Bool(BooleanBuilder),
    Time(TimestampMicrosecondBuilder),
}

impl Builders {
    fn new() -> Self {
        let cols = COLUMNS
            .iter()
            .map(|(_, k)| match k {
                Kind::Str | Kind::Json => ColBuilder::Str(StringBuilder::new()),
                Kind::Bool => ColBuilder::Bool(BooleanBuilder::new()),
                Kind::Time => ColBuilder::Time(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
            })
            .collect();
        Builders { cols, other: StringBuilder::new(), keys: Vec::new() }
    }

    fn finish(mut self, date: Date) -> DatePart {
        let mut arrays: Vec<ArrayRef> = self
            .cols
            .iter_mut()
            .map(|c| -> ArrayRef {
                match c {
                    ColBuilder::Str(b) => Arc::new(b.finish()),
                    ColBuilder::Bool(b) => Arc::new(b.finish()),
                    ColBuilder::Time(b) => Arc::new(b.finish()),
                }
            })
            .collect();
        arrays.push(Arc::new(self.other.finish()));
        // Invariant: builders follow SCHEMA column for column.
        let batch = RecordBatch::try_new(SCHEMA.clone(), arrays).expect("builders match the schema");
        DatePart { date, batch, keys: self.keys }
    }
}

/// A typed slot value of one event.
enum Slot<'a> {
    Str(Cow<'a, str>),
    Bool(bool),
    Json(&'a str),
    Time(Timestamp),
}

/// Parses one decompressed log file. A file-level problem is an error; a bad event is counted.
pub fn parse_log(text: &[u8], window: &Window) -> Result<ParsedFile, FileError> {
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(b'[' | b'"' | b'0'..=b'9' | b'-' | b't' | b'f' | b'n')
            if serde_json::from_slice::<&RawValue>(text).is_ok() =>
        {
            return Err(FileError {
                error_type: "InvalidLogFile",
                message: "the file holds JSON but not an object: not a CloudTrail log file ({\"Records\":[...]})"
                    .into(),
            });
        }
        None => {
            return Err(FileError { error_type: "InvalidJson", message: "the file is empty".into() });
        }
        Some(_) => {}
    }
    let file: LogFile = serde_json::from_slice(text).map_err(|e| {
        // A type mismatch can surface before a syntax error: only valid JSON is a wrong *log file*.
        let valid_json = serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok();
        if e.classify() == serde_json::error::Category::Data && valid_json {
            FileError {
                error_type: "InvalidLogFile",
                message: format!("not a CloudTrail log file ({{\"Records\":[...]}}): {e}"),
            }
        } else {
            let e = serde_json::from_slice::<serde::de::IgnoredAny>(text).err().unwrap_or(e);
            FileError { error_type: "InvalidJson", message: format!("JSON: {e}") }
        }
    })?;
    let records = file.records.ok_or_else(|| FileError {
        error_type: "InvalidLogFile",
        message: "no \"Records\" field: not a CloudTrail log file".into(),
    })?;
    let records: Vec<&RawValue> = serde_json::from_str(records.get())
        .map_err(|_| FileError { error_type: "InvalidLogFile", message: "\"Records\" is not an array".into() })?;

    let mut out = ParsedFile { events_read: records.len() as u64, ..Default::default() };
    let mut by_date: BTreeMap<Date, Builders> = BTreeMap::new();
    let mut slots: Vec<Option<Slot>> = Vec::with_capacity(COLUMNS.len());
    let mut other = String::new();
    for (index, raw) in records.iter().enumerate() {
        slots.clear();
        slots.resize_with(COLUMNS.len(), || None);
        other.clear();
        match read_event(raw, &mut slots, &mut other) {
            Err(reason) => {
                out.events_invalid += 1;
                if out.invalid_samples.len() < 5 {
                    out.invalid_samples.push((index, reason));
                }
            }
            Ok(time) => {
                if !window.contains(time) {
                    out.events_out_of_range += 1;
                    continue;
                }
                let key = dedup_key(slots[EVENT_ID].as_ref(), raw.get());
                let date = time.to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
                let b = by_date.entry(date).or_insert_with(Builders::new);
                append(b, &slots, &other, key);
            }
        }
    }
    out.parts = by_date.into_iter().map(|(d, b)| b.finish(d)).collect();
    Ok(out)
}

/// eventID when present, else the record's own text (old 1.0 events have no eventID).
fn dedup_key(event_id: Option<&Slot>, raw: &str) -> u128 {
    match event_id {
        Some(Slot::Str(id)) => xxhash_rust::xxh3::xxh3_128(id.as_bytes()),
        _ => xxhash_rust::xxh3::xxh3_128(raw.as_bytes()) ^ 1,
    }
}

fn append(b: &mut Builders, slots: &[Option<Slot>], other: &str, key: u128) {
    for (col, slot) in b.cols.iter_mut().zip(slots) {
        match (col, slot) {
            (ColBuilder::Str(c), Some(Slot::Str(s))) => c.append_value(s),
            (ColBuilder::Str(c), Some(Slot::Json(s))) => c.append_value(s),
            (ColBuilder::Str(c), _) => c.append_null(),
            (ColBuilder::Bool(c), Some(Slot::Bool(v))) => c.append_value(*v),
            (ColBuilder::Bool(c), _) => c.append_null(),
            (ColBuilder::Time(c), Some(Slot::Time(t))) => c.append_value(t.as_microsecond()),
            (ColBuilder::Time(c), _) => c.append_value(0),
        }
    }
    if other.is_empty() {
        b.other.append_null();
    } else {
        b.other.append_value(format!("{{{other}}}"));
    }
    b.keys.push(key);
}

fn push_other(other: &mut String, name: &str, raw: &str) {
    if !other.is_empty() {
        other.push(',');
    }
    // A key is a plain string: its JSON form cannot fail.
    other.push_str(&serde_json::to_string(name).unwrap_or_default());
    other.push(':');
    other.push_str(raw);
}

/// The canonical text of a timestamp as CloudTrail writes it.
pub fn format_event_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Fills `slots`/`other` from one record; returns its eventTime, or why it is invalid.
fn read_event<'a>(raw: &'a RawValue, slots: &mut [Option<Slot<'a>>], other: &mut String) -> Result<Timestamp, String> {
    let fields: Fields<'a> = serde_json::from_str(raw.get()).map_err(|_| "event is not a JSON object".to_string())?;
    let mut time = None;
    for (name, value) in fields.0 {
        let text = value.get();
        let Some(i) = column_index(&name) else {
            push_other(other, &name, text);
            continue;
        };
        let slot = match COLUMNS[i].1 {
            Kind::Str => serde_json::from_str::<Cow<'a, str>>(text).ok().map(Slot::Str),
            Kind::Bool => serde_json::from_str::<bool>(text).ok().map(Slot::Bool),
            Kind::Json => Some(Slot::Json(text)),
            Kind::Time => {
                let s: Cow<str> = serde_json::from_str(text).map_err(|_| "eventTime is not a string".to_string())?;
                let t: Timestamp =
                    s.parse().map_err(|_| format!("eventTime `{}` is not an RFC 3339 time", truncate(&s, 40)))?;
                if format_event_time(t) != s {
                    // Keep the original spelling (fractional seconds, offsets) for the rebuild.
                    push_other(other, &name, text);
                }
                time = Some(t);
                Some(Slot::Time(t))
            }
        };
        match slot {
            // A duplicate key keeps the first value; the second goes to otherFields? No: JSON
            // readers keep the last, so the last wins here too.
            Some(s) => slots[i] = Some(s),
            None => push_other(other, &name, text),
        }
    }
    let time = time.ok_or_else(|| "missing eventTime".to_string())?;
    let version = match &slots[0] {
        Some(Slot::Str(v)) => {
            parse_version(v).ok_or_else(|| format!("eventVersion `{}` is not N.NN", truncate(v, 20)))?
        }
        _ => return Err("missing eventVersion".into()),
    };
    for (i, needed_since) in [(2, (1, 0)), (3, (1, 0)), (4, (1, 0)), (EVENT_ID, (1, 1)), (11, (1, 2))] {
        if version >= needed_since && !matches!(slots[i], Some(Slot::Str(_))) {
            return Err(format!(
                "missing {} (required since eventVersion {}.{:02})",
                COLUMNS[i].0, needed_since.0, needed_since.1
            ));
        }
    }
    Ok(time)
}

/// `1.0` → (1, 0), `1.08` → (1, 8), `1.10` → (1, 10).
fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(b.column_by_name("requestParameters").unwrap().as_string::<i32>().value(0), "null");
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
