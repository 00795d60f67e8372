//! A stored row → the CloudTrail record it came from, as JSON text (docs/contracts.md, "Rebuild"):
//! the non-NULL columns (JSON columns as their text, structs as objects of their non-NULL
//! fields, eventTime as `%Y-%m-%dT%H:%M:%SZ`), then `otherFields` on top: a member whose value is
//! an object and whose column or field is a present struct is merged into it, field by field, at
//! every depth; any other member replaces the column or field of its name, or is added.
//! `sourceLogFile` is provenance, not part of the record.

use std::borrow::Cow;
use std::fmt;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, ArrayRef, RecordBatch, StructArray};
use arrow_schema::{DataType, SchemaRef};
use jiff::Timestamp;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::format_event_time;
use super::nested::push_json_string;
use super::scan::Key;
use super::schema::{COLUMNS, Kind, NodeKind, OTHER_FIELDS, Shape, column_index};

/// Why a stored file cannot be rebuilt: its columns are not the store's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column `{column}`: {reason}")]
pub struct SchemaMismatch {
    pub column: String,
    pub reason: String,
}

enum Col {
    Str(usize),
    Bool(usize),
    Time(usize),
    Json(usize),
    Struct(usize, &'static Shape),
}

/// Rebuilds the rows of record batches that share one schema.
pub struct Rebuilder {
    /// (name, how to read it), in the store's column order.
    cols: Vec<(&'static str, Col)>,
    other: Option<usize>,
}

impl Rebuilder {
    /// Checks a stored file's schema: every known column present has the store's type;
    /// unknown columns other than provenance are refused (their values would be lost).
    pub fn new(schema: &SchemaRef) -> Result<Rebuilder, SchemaMismatch> {
        let mut cols = Vec::new();
        let mut other = None;
        for (i, field) in schema.fields().iter().enumerate() {
            let name = field.name().as_str();
            let bad = |want: &str| SchemaMismatch {
                column: name.to_string(),
                reason: format!("is {}, expected {want}", field.data_type()),
            };
            if name == OTHER_FIELDS {
                if field.data_type() != &DataType::Utf8 {
                    return Err(bad("Utf8"));
                }
                other = Some(i);
                continue;
            }
            if name == super::SOURCE_LOG_FILE {
                continue;
            }
            let Some(c) = column_index(name) else {
                return Err(SchemaMismatch { column: name.into(), reason: "is not a column of the store".into() });
            };
            let (static_name, kind) = COLUMNS[c];
            let col = match (kind, field.data_type()) {
                (Kind::Str, DataType::Utf8) => Col::Str(i),
                (Kind::Json, DataType::Utf8) => Col::Json(i),
                (Kind::Bool, DataType::Boolean) => Col::Bool(i),
                (Kind::Time, DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, _)) => Col::Time(i),
                (Kind::Struct(n), dt) if dt == &n.shape().data_type => Col::Struct(i, n.shape()),
                (Kind::Struct(n), _) => return Err(bad(&n.shape().data_type.to_string())),
                (Kind::Bool, _) => return Err(bad("Boolean")),
                (Kind::Time, _) => return Err(bad("Timestamp(us)")),
                _ => return Err(bad("Utf8")),
            };
            cols.push((static_name, col));
        }
        Ok(Rebuilder { cols, other })
    }

    /// Appends row `row` of `batch` as one compact JSON object.
    pub fn write_row(&self, batch: &RecordBatch, row: usize, out: &mut String) {
        let other_text = self.other.map(|i| batch.column(i).as_string::<i32>()).filter(|c| c.is_valid(row));
        let mut overlay = other_text.map(|c| Overlay::parse(c.value(row))).unwrap_or_default();
        out.push('{');
        let mut first = true;
        for (name, col) in &self.cols {
            let array: &ArrayRef = batch.column(col.index());
            let present = array.is_valid(row);
            match overlay.take(name) {
                Some(o) => {
                    sep(out, &mut first);
                    push_json_string(out, name);
                    out.push(':');
                    match col {
                        Col::Struct(_, shape) if present && o.starts_with('{') => {
                            write_struct(shape, 0, array.as_struct(), row, Some(o), out)
                        }
                        _ => out.push_str(o),
                    }
                }
                None if present => {
                    sep(out, &mut first);
                    push_json_string(out, name);
                    out.push(':');
                    match col {
                        Col::Str(_) => push_json_string(out, array.as_string::<i32>().value(row)),
                        Col::Json(_) => out.push_str(array.as_string::<i32>().value(row)),
                        Col::Bool(_) => out.push_str(if array.as_boolean().value(row) { "true" } else { "false" }),
                        Col::Time(_) => {
                            let us = array.as_primitive::<TimestampMicrosecondType>().value(row);
                            let t = Timestamp::from_microsecond(us).unwrap_or(Timestamp::UNIX_EPOCH);
                            push_json_string(out, &format_event_time(t));
                        }
                        Col::Struct(_, shape) => write_struct(shape, 0, array.as_struct(), row, None, out),
                    }
                }
                None => {}
            }
        }
        overlay.write_rest(out, &mut first);
        out.push('}');
    }
}

impl Col {
    fn index(&self) -> usize {
        match self {
            Col::Str(i) | Col::Bool(i) | Col::Time(i) | Col::Json(i) | Col::Struct(i, _) => *i,
        }
    }
}

fn sep(out: &mut String, first: &mut bool) {
    if !*first {
        out.push(',');
    }
    *first = false;
}

/// Struct node `node` at `row`, with the otherFields object for it merged in.
fn write_struct(shape: &Shape, node: usize, array: &StructArray, row: usize, other: Option<&str>, out: &mut String) {
    let mut overlay = other.map(Overlay::parse).unwrap_or_default();
    out.push('{');
    let mut first = true;
    for (k, &c) in shape.nodes[node].children.iter().enumerate() {
        let child = array.column(k);
        let name = shape.nodes[c].name;
        let present = child.is_valid(row);
        match overlay.take(name) {
            Some(o) => {
                sep(out, &mut first);
                push_json_string(out, name);
                out.push(':');
                if shape.nodes[c].kind == NodeKind::Struct && present && o.starts_with('{') {
                    write_struct(shape, c, child.as_struct(), row, Some(o), out);
                } else {
                    out.push_str(o);
                }
            }
            None if present => {
                sep(out, &mut first);
                push_json_string(out, name);
                out.push(':');
                match shape.nodes[c].kind {
                    NodeKind::Str => push_json_string(out, child.as_string::<i32>().value(row)),
                    NodeKind::Json => out.push_str(child.as_string::<i32>().value(row)),
                    NodeKind::Struct => write_struct(shape, c, child.as_struct(), row, None, out),
                }
            }
            None => {}
        }
    }
    overlay.write_rest(out, &mut first);
    out.push('}');
}

/// The members of an otherFields object (or of one of its nested objects), as raw JSON text.
#[derive(Default)]
struct Overlay<'a> {
    members: Vec<(Cow<'a, str>, &'a str, bool)>,
}

impl<'a> Overlay<'a> {
    /// otherFields is written by the scanner as an object; anything else is ignored.
    fn parse(text: &'a str) -> Overlay<'a> {
        let mut members = Vec::new();
        let mut de = serde_json::Deserializer::from_str(text);
        if de.deserialize_map(MembersVisitor(&mut members)).is_err() {
            members.clear();
        }
        Overlay { members: members.into_iter().map(|(k, v)| (k, v.get(), false)).collect() }
    }

    /// The last member named `name` not yet written (a JSON reader keeps the last duplicate).
    fn take(&mut self, name: &str) -> Option<&'a str> {
        let mut found = None;
        for m in self.members.iter_mut().filter(|m| !m.2 && m.0 == name) {
            m.2 = true;
            found = Some(m.1);
        }
        found
    }

    fn write_rest(&mut self, out: &mut String, first: &mut bool) {
        for i in 0..self.members.len() {
            let name = self.members[i].0.clone();
            if let Some(v) = self.take(&name) {
                sep(out, first);
                push_json_string(out, &name);
                out.push(':');
                out.push_str(v);
            }
        }
    }
}

struct MembersVisitor<'v, 'a>(&'v mut Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Visitor<'de> for MembersVisitor<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        while let Some((Key(key), value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
            self.0.push((key, value));
        }
        Ok(())
    }
}
