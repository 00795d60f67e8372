//! One CloudTrail log file → validated events as Arrow record batches, one per eventTime date.
//! Fields are borrowed from the decompressed text (no `serde_json::Value` tree); nested objects
//! are kept as their JSON text, and every field without a typed column lands in `otherFields`,
//! so each event can be rebuilt exactly.

use std::borrow::Cow;
use std::fmt;
use std::io::Read;
use std::sync::{Arc, LazyLock};

use arrow_array::builder::{BooleanBuilder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use jiff::Timestamp;
use jiff::civil::Date;
use serde::de::{DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
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

/// The index of a field's column in [`COLUMNS`] (a `match`: this runs for every field read).
fn column_index(name: &str) -> Option<usize> {
    Some(match name {
        "eventVersion" => 0,
        "eventTime" => 1,
        "eventSource" => 2,
        "eventName" => 3,
        "awsRegion" => 4,
        "sourceIPAddress" => 5,
        "userAgent" => 6,
        "errorCode" => 7,
        "errorMessage" => 8,
        "requestID" => 9,
        "eventID" => 10,
        "eventType" => 11,
        "apiVersion" => 12,
        "readOnly" => 13,
        "managementEvent" => 14,
        "recipientAccountId" => 15,
        "sharedEventID" => 16,
        "vpcEndpointId" => 17,
        "vpcEndpointAccountId" => 18,
        "eventCategory" => 19,
        "sessionCredentialFromConsole" => 20,
        "userIdentity" => 21,
        "requestParameters" => 22,
        "responseElements" => 23,
        "additionalEventData" => 24,
        "resources" => 25,
        "serviceEventDetails" => 26,
        "tlsDetails" => 27,
        "addendum" => 28,
        "edgeDeviceDetails" => 29,
        "insightDetails" => 30,
        "eventContext" => 31,
        _ => return None,
    })
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

/// No CloudTrail event comes near this (the service caps events far lower).
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Hard cap on one decompressed log file (CloudTrail files are far smaller).
pub const MAX_DECOMPRESSED: u64 = 2 << 30;

/// Inflates a (multi-member) gzip file.
pub fn gunzip(compressed: &[u8]) -> Result<Vec<u8>, FileError> {
    match gunzip_partial(compressed) {
        (out, None) => Ok(out),
        (_, Some(e)) => Err(e),
    }
}

/// Inflates what it can: a damaged or truncated stream keeps the text before the damage.
pub fn gunzip_partial(compressed: &[u8]) -> (Vec<u8>, Option<FileError>) {
    if compressed.is_empty() {
        let e =
            FileError { error_type: "CorruptGzip", message: "the object is empty (0 bytes): not a gzip file".into() };
        return (Vec::new(), Some(e));
    }
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(8).min(256 << 20));
    let decoder = flate2::read::MultiGzDecoder::new(compressed);
    match decoder.take(MAX_DECOMPRESSED + 1).read_to_end(&mut out) {
        Ok(n) if n as u64 > MAX_DECOMPRESSED => {
            let e = FileError {
                error_type: "CorruptGzip",
                message: format!("decompresses to more than {MAX_DECOMPRESSED} bytes"),
            };
            (Vec::new(), Some(e))
        }
        Ok(_) => (out, None),
        Err(e) => {
            let e = FileError {
                error_type: "CorruptGzip",
                message: format!("gzip: {e} (after {} readable bytes)", out.len()),
            };
            (out, Some(e))
        }
    }
}

/// Reads one compressed log file as far as it can be read. Events before damage (a truncated or
/// corrupt gzip stream, broken JSON) are kept and counted; the damage is the returned error.
pub fn read_log(compressed: &[u8], window: &Window) -> (ParsedFile, Option<FileError>) {
    let (text, gzip_error) = gunzip_partial(compressed);
    match gzip_error {
        None => parse_log_partial(&text, window),
        Some(mut e) => {
            let (parsed, _) = parse_log_partial(&text, window);
            if parsed.events_read > 0 {
                e.message.push_str(&format!("; the {} events before the damage were read", parsed.events_read));
            }
            (parsed, Some(e))
        }
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
///
/// One pass over the text: the `Records` array is walked in place and each event's fields are
/// borrowed from the text as they are read (no `Value` tree, no per-event re-scan).
pub fn parse_log(text: &[u8], window: &Window) -> Result<ParsedFile, FileError> {
    match parse_log_partial(text, window) {
        (parsed, None) => Ok(parsed),
        (_, Some(e)) => Err(e),
    }
}

/// Like [`parse_log`], but keeps the events read before a file-level error.
pub fn parse_log_partial(text: &[u8], window: &Window) -> (ParsedFile, Option<FileError>) {
    match check_document_start(text) {
        Ok(()) => {}
        Err(e) => return (ParsedFile::default(), Some(e)),
    }
    let mut state = State {
        window,
        out: ParsedFile::default(),
        days: Vec::new(),
        fields: Vec::with_capacity(32),
        slots: Vec::with_capacity(COLUMNS.len()),
        other: String::new(),
        lossy: false,
    };
    // UTF-8 is checked once, up front (fast for ASCII), so the parser does not check each string
    // again. Text that is not UTF-8 is read with replacement characters, and the events that hold
    // them are invalid: bad bytes spoil their event, not the file.
    let lossy;
    let walked = match std::str::from_utf8(text) {
        Ok(s) => walk(serde_json::Deserializer::from_str(s), &mut state),
        Err(_) => {
            lossy = String::from_utf8_lossy(text);
            state.lossy = true;
            walk(serde_json::Deserializer::from_str(&lossy), &mut state)
        }
    };
    let error = match walked {
        Ok(true) => None,
        Ok(false) => Some(FileError {
            error_type: "InvalidLogFile",
            message: "no \"Records\" field: not a CloudTrail log file".into(),
        }),
        Err(e) => {
            // A type mismatch can surface before a syntax error: only valid JSON is a wrong *log file*.
            let syntax = serde_json::from_slice::<IgnoredAny>(text).err();
            Some(match syntax {
                None if e.classify() == serde_json::error::Category::Data => FileError {
                    error_type: "InvalidLogFile",
                    message: format!("not a CloudTrail log file ({{\"Records\":[...]}}): {e}"),
                },
                _ => FileError { error_type: "InvalidJson", message: format!("JSON: {}", syntax.unwrap_or(e)) },
            })
        }
    };
    let mut days = std::mem::take(&mut state.days);
    days.sort_by_key(|(day, _, _)| *day);
    let mut out = std::mem::take(&mut state.out);
    out.parts = days.into_iter().map(|(_, d, b)| b.finish(d)).collect();
    (out, error)
}

fn check_document_start(text: &[u8]) -> Result<(), FileError> {
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[' | b'"' | b'0'..=b'9' | b'-' | b't' | b'f' | b'n')
            if serde_json::from_slice::<&RawValue>(text).is_ok() =>
        {
            Err(FileError {
                error_type: "InvalidLogFile",
                message: "the file holds JSON but not an object: not a CloudTrail log file ({\"Records\":[...]})"
                    .into(),
            })
        }
        None => Err(FileError { error_type: "InvalidJson", message: "the file is empty (no JSON in it)".into() }),
        _ => Ok(()),
    }
}

/// Walks the whole document (then checks nothing follows it); `true` when `Records` was found.
fn walk<'a, R: serde_json::de::Read<'a>>(
    mut de: serde_json::Deserializer<R>,
    st: &mut State<'_, 'a>,
) -> serde_json::Result<bool> {
    let found = de.deserialize_map(FileVisitor { st })?;
    de.end()?;
    Ok(found)
}

/// The parse of one file in progress; buffers are reused from event to event.
struct State<'w, 'a> {
    window: &'w Window,
    out: ParsedFile,
    /// (days since the epoch, date, builders), usually one or two per file.
    days: Vec<(i64, Date, Builders)>,
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
    slots: Vec<Option<Slot<'a>>>,
    other: String,
    /// The text was not UTF-8: bad bytes were replaced by U+FFFD.
    lossy: bool,
}

impl<'a> State<'_, 'a> {
    fn invalid(&mut self, reason: String) {
        let index = self.out.events_read as usize;
        self.out.events_read += 1;
        self.out.events_invalid += 1;
        if self.out.invalid_samples.len() < 5 {
            self.out.invalid_samples.push((index, reason));
        }
    }

    /// The event whose fields are in `self.fields`.
    fn event(&mut self) {
        let size: usize = self.fields.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum();
        if size > MAX_EVENT_BYTES {
            return self.invalid(format!("event is {size} bytes, over the {MAX_EVENT_BYTES}-byte (1 MiB) limit"));
        }
        if self.lossy && self.fields.iter().any(|(k, v)| k.contains('\u{FFFD}') || v.get().contains('\u{FFFD}')) {
            return self.invalid("event holds bytes that are not UTF-8".into());
        }
        self.slots.clear();
        self.slots.resize_with(COLUMNS.len(), || None);
        self.other.clear();
        let time = match read_event(&self.fields, &mut self.slots, &mut self.other) {
            Ok(time) => time,
            Err(reason) => return self.invalid(reason),
        };
        self.out.events_read += 1;
        if !self.window.contains(time) {
            self.out.events_out_of_range += 1;
            return;
        }
        let key = dedup_key(self.slots[EVENT_ID].as_ref(), &self.fields);
        let day = time.as_second().div_euclid(86_400);
        let b = match self.days.iter().position(|(d, _, _)| *d == day) {
            Some(i) => &mut self.days[i].2,
            None => {
                let date = time.to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
                self.days.push((day, date, Builders::new()));
                &mut self.days.last_mut().expect("just pushed").2
            }
        };
        append(b, &self.slots, &self.other, key);
    }
}

/// The top-level object: walks `Records`, skips other keys; `true` when `Records` was found.
struct FileVisitor<'s, 'w, 'a> {
    st: &'s mut State<'w, 'a>,
}

impl<'de> Visitor<'de> for FileVisitor<'_, '_, 'de> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a CloudTrail log file object ({\"Records\":[...]})")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<bool, M::Error> {
        let mut found = false;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "Records" {
                if found {
                    return Err(M::Error::custom("duplicate field `Records`"));
                }
                map.next_value_seed(RecordsSeed { st: self.st })?;
                found = true;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

struct RecordsSeed<'s, 'w, 'a> {
    st: &'s mut State<'w, 'a>,
}

impl<'de> DeserializeSeed<'de> for RecordsSeed<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RecordsSeed<'_, '_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("\"Records\" to be an array")
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        while seq.next_element_seed(RecordSeed { st: &mut *self.st })?.is_some() {}
        Ok(())
    }
}

/// One element of `Records`: an object is an event; anything else is an invalid event.
struct RecordSeed<'s, 'w, 'a> {
    st: &'s mut State<'w, 'a>,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

const NOT_AN_OBJECT: &str = "event is not a JSON object";

impl<'de> Visitor<'de> for RecordSeed<'_, '_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a CloudTrail event")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        self.st.fields.clear();
        while let Some(entry) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
            self.st.fields.push(entry);
        }
        self.st.event();
        Ok(())
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.st.invalid(NOT_AN_OBJECT.into());
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.st.invalid(NOT_AN_OBJECT.into());
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.st.invalid(NOT_AN_OBJECT.into());
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.st.invalid(NOT_AN_OBJECT.into());
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.st.invalid(NOT_AN_OBJECT.into());
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.st.invalid(NOT_AN_OBJECT.into());
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.st.invalid(NOT_AN_OBJECT.into());
        Ok(())
    }
}

/// eventID when present, else the hash of the record's text (old 1.0 events have no eventID).
/// The record is hashed as its compact form `{"k":v,...}` rebuilt from the borrowed fields,
/// which is byte for byte the text of a compact (CloudTrail-written) record.
fn dedup_key(event_id: Option<&Slot>, fields: &[(Cow<str>, &RawValue)]) -> u128 {
    match event_id {
        Some(Slot::Str(id)) => xxhash_rust::xxh3::xxh3_128(id.as_bytes()),
        _ => {
            let mut h = xxhash_rust::xxh3::Xxh3Default::new();
            h.update(b"{");
            for (i, (name, value)) in fields.iter().enumerate() {
                if i > 0 {
                    h.update(b",");
                }
                h.update(b"\"");
                h.update(name.as_bytes());
                h.update(b"\":");
                h.update(value.get().as_bytes());
            }
            h.update(b"}");
            h.digest128() ^ 1
        }
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

/// A JSON string's value: borrowed from the text unless it has escapes.
fn json_str(text: &str) -> Option<Cow<'_, str>> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.as_bytes().contains(&b'\\') {
        // The text is a valid JSON string token (the parser checked it): no escapes, no quotes.
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str(text).ok()
}

/// `YYYY-MM-DDTHH:MM:SSZ` (seconds not 60): then the text is the canonical spelling of its time.
fn is_canonical_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18].iter().all(|&i| b[i].is_ascii_digit())
        && &b[17..19] != b"60"
}

/// Fills `slots`/`other` from one record's fields; returns its eventTime, or why it is invalid.
fn read_event<'a>(
    fields: &[(Cow<'a, str>, &'a RawValue)],
    slots: &mut [Option<Slot<'a>>],
    other: &mut String,
) -> Result<Timestamp, String> {
    let mut time = None;
    for (name, value) in fields {
        let text: &'a str = value.get();
        let Some(i) = column_index(name) else {
            push_other(other, name, text);
            continue;
        };
        let slot = match COLUMNS[i].1 {
            Kind::Str => json_str(text).map(Slot::Str),
            Kind::Bool => match text {
                "true" => Some(Slot::Bool(true)),
                "false" => Some(Slot::Bool(false)),
                _ => None,
            },
            // JSON `null` is SQL NULL, and `"name": null` in otherFields keeps it apart from absent.
            Kind::Json => (text != "null").then_some(Slot::Json(text)),
            Kind::Time => {
                let s = json_str(text).ok_or_else(|| "eventTime is not a string".to_string())?;
                let t: Timestamp =
                    s.parse().map_err(|_| format!("eventTime `{}` is not an RFC 3339 time", truncate(&s, 40)))?;
                if !is_canonical_time(&s) && format_event_time(t) != s {
                    // Keep the original spelling (fractional seconds, offsets) for the rebuild.
                    push_other(other, name, text);
                }
                time = Some(t);
                Some(Slot::Time(t))
            }
        };
        match slot {
            // JSON readers keep the last value of a duplicate key: so does this.
            Some(s) => slots[i] = Some(s),
            None => push_other(other, name, text),
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
        assert_eq!(v["requestParameters"], serde_json::Value::Null);
        assert!(b.column_by_name("requestParameters").unwrap().is_null(0), "JSON null is SQL NULL, not the text null");
        let t = b.column_by_name("eventTime").unwrap().as_primitive::<TimestampMicrosecondType>().value(0);
        assert_eq!(t, "2020-10-01T00:00:00.25Z".parse::<Timestamp>().unwrap().as_microsecond());
    }

    #[test]
    fn json_null_and_absent_stay_apart() {
        let ev = |extra: &str| {
            format!(
                r#"{{"eventVersion":"1.08","eventTime":"2020-10-01T00:00:00Z","eventSource":"s","eventName":"n","awsRegion":"r","eventID":"e","eventType":"t"{extra}}}"#
            )
        };
        let text = format!(
            "{{\"Records\":[{},{},{}]}}",
            ev(r#","responseElements":null"#),
            ev(""),
            ev(r#","responseElements":{"x":null}"#)
        );
        let p = parse_log(text.as_bytes(), &window()).unwrap();
        let b = &p.parts[0].batch;
        let col = b.column_by_name("responseElements").unwrap().as_string::<i32>();
        let other = b.column_by_name(OTHER_FIELDS).unwrap().as_string::<i32>();
        assert!(col.is_null(0) && col.is_null(1), "null and absent are both SQL NULL");
        assert_eq!(other.value(0), r#"{"responseElements":null}"#, "null is kept for the rebuild");
        assert!(other.is_null(1), "absent leaves no trace");
        assert_eq!(col.value(2), r#"{"x":null}"#, "a null inside an object stays in its JSON text");
        assert!(other.is_null(2));
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
