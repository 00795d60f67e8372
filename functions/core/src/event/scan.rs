//! The scanner: one pass over a log file's text. The `Records` array is walked in place and each
//! event's fields are borrowed from the text as they are read (no `Value` tree); typed fields go
//! to slots, everything else to `otherFields`, so each event can be rebuilt exactly.

use std::borrow::Cow;
use std::fmt;

use jiff::Timestamp;
use jiff::civil::Date;
use serde::de::{DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::build::Builders;
use super::nested::{Leaf, close_member, open_member, push_member, read_object};
use super::schema::{COLUMNS, EVENT_ID, EVENT_VERSION, Kind, Nested, column_index};
use super::{FileError, MAX_EVENT_BYTES, ParsedFile, format_event_time};
use crate::range::Window;

/// A typed slot value of one event.
pub(super) enum Slot<'a> {
    Str(Cow<'a, str>),
    Bool(bool),
    Json(&'a str),
    Time(Timestamp),
    /// The struct's fields are in `State::nested[n]`.
    Nested(Nested),
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
        nested: Nested::ALL.map(|n| Vec::with_capacity(n.shape().nodes.len())),
        other: String::new(),
        lossy: false,
        text_len: text.len(),
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
    /// The fields of each struct column, one slot per node of its shape.
    nested: [Vec<Leaf<'a>>; 2],
    other: String,
    /// The text was not UTF-8: bad bytes were replaced by U+FFFD.
    lossy: bool,
    /// The file's length, to size column builders.
    text_len: usize,
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
        for (n, leaves) in Nested::ALL.iter().zip(&mut self.nested) {
            leaves.clear();
            leaves.resize(n.shape().nodes.len(), Leaf::Absent);
        }
        self.other.clear();
        let time = match read_event(&self.fields, &mut self.slots, &mut self.nested, &mut self.other) {
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
                self.days.push((day, date, Builders::new(self.text_len)));
                &mut self.days.last_mut().expect("just pushed").2
            }
        };
        b.append(&self.slots, &self.nested, &self.other, key);
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
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
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
        while let Some((Key(key), value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
            self.st.fields.push((key, value));
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

/// An object key borrowed from the text unless it has escapes. (A bare `Cow<str>` always
/// allocates: serde deserializes it through `String`; `#[serde(borrow)]` borrows.)
#[derive(serde::Deserialize)]
#[serde(transparent)]
pub(super) struct Key<'a>(#[serde(borrow)] pub Cow<'a, str>);

/// A JSON string's value: borrowed from the text unless it has escapes.
pub(super) fn json_str(text: &str) -> Option<Cow<'_, str>> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if memchr::memchr(b'\\', inner.as_bytes()).is_none() {
        // The text is a valid JSON string token (the parser checked it): no escapes, no quotes.
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str(text).ok()
}

/// `YYYY-MM-DDTHH:MM:SSZ` (seconds not 60): then the text is the canonical spelling of its time.
pub(super) fn is_canonical_time(s: &str) -> bool {
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
    nested: &mut [Vec<Leaf<'a>>; 2],
    other: &mut String,
) -> Result<Timestamp, String> {
    let mut time = None;
    for (name, value) in fields {
        let text: &'a str = value.get();
        let Some(i) = column_index(name) else {
            push_member(other, name, text);
            continue;
        };
        let slot = match COLUMNS[i].1 {
            Kind::Str => json_str(text).map(Slot::Str),
            Kind::Bool => match text {
                "true" => Some(Slot::Bool(true)),
                "false" => Some(Slot::Bool(false)),
                _ => None,
            },
            // JSON null is SQL NULL, and `"name": null` in otherFields keeps it for the rebuild.
            Kind::Json => (text != "null").then_some(Slot::Json(text)),
            Kind::Struct(n) => {
                let leaves = &mut nested[n as usize];
                leaves.fill(Leaf::Absent);
                let mark = other.len();
                open_member(other, name);
                let inner = other.len();
                if read_object(n.shape(), 0, text, leaves, other) {
                    leaves[0] = Leaf::Present;
                    close_member(other, mark, inner);
                    Some(Slot::Nested(n))
                } else {
                    // Not an object (null, a string, ...): the whole value goes to otherFields.
                    other.truncate(mark);
                    None
                }
            }
            Kind::Time => {
                let s = json_str(text).ok_or_else(|| "eventTime is not a string".to_string())?;
                let t: Timestamp =
                    s.parse().map_err(|_| format!("eventTime `{}` is not an RFC 3339 time", truncate(&s, 40)))?;
                if !is_canonical_time(&s) && format_event_time(t) != s {
                    // Keep the original spelling (fractional seconds, offsets) for the rebuild.
                    push_member(other, name, text);
                }
                time = Some(t);
                Some(Slot::Time(t))
            }
        };
        match slot {
            // JSON readers keep the last value of a duplicate key: so does this.
            Some(s) => slots[i] = Some(s),
            None => push_member(other, name, text),
        }
    }
    let time = time.ok_or_else(|| "missing eventTime".to_string())?;
    let version = match &slots[EVENT_VERSION] {
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
