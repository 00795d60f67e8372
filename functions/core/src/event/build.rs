//! Arrow column builders for one date's rows, struct columns included.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch, StructArray};
use arrow_buffer::{BooleanBufferBuilder, NullBuffer};
use arrow_schema::{DataType, Fields};
use jiff::civil::Date;

use super::DatePart;
use super::nested::Leaf;
use super::scan::Slot;
use super::schema::{COLUMNS, Kind, NodeKind, SCHEMA, Shape};

/// Column builders for one date's rows.
pub(super) struct Builders {
    cols: Vec<ColBuilder>,
    other: Strings,
    keys: Vec<u128>,
}

enum ColBuilder {
    Str(Strings),
    Bool(BooleanBuilder),
    Time(TimestampMicrosecondBuilder),
    Struct(StructBuilder),
}

/// Bytes of log text per event, about (real files: 1.0–1.6 KB), to size builders from a file's
/// length. Arrow's default (1,024 rows per column) made a parsed 20-event file hold ~0.3 MiB,
/// and parsed files wait for the batch writer; growing from 16 rows by doubling cost a
/// reallocation per column per doubling, ~80 columns over, for every file.
const TEXT_BYTES_PER_EVENT: usize = 1_200;

/// A string column's builder with room for `rows` short values.
fn string_builder(rows: usize) -> Strings {
    Strings { builder: StringBuilder::with_capacity(rows, rows * 16), nulls: 0 }
}

/// A string column's builder that appends each run of nulls at once: most of the ~80 string
/// columns (struct leaves included) are null in most events. One `append_null` per column per
/// event was 2.7 % of a profiled parse-and-encode run; in runs, the appends take 12 % fewer
/// instructions (benches/RESULTS.md, issue 13 round 6).
struct Strings {
    builder: StringBuilder,
    /// Nulls not yet appended to `builder`.
    nulls: usize,
}

impl Strings {
    fn append_null(&mut self) {
        self.nulls += 1;
    }

    fn append_value(&mut self, s: &str) {
        self.builder().append_value(s);
    }

    /// The builder, with the pending nulls appended.
    fn builder(&mut self) -> &mut StringBuilder {
        if self.nulls > 0 {
            self.builder.append_nulls(self.nulls);
            self.nulls = 0;
        }
        &mut self.builder
    }

    fn finish(&mut self) -> arrow_array::StringArray {
        self.builder().finish()
    }
}

impl Builders {
    /// Builders for the events of a file of `text_len` bytes.
    pub(super) fn new(text_len: usize) -> Self {
        let rows = (text_len / TEXT_BYTES_PER_EVENT).clamp(16, 1 << 16);
        let cols = COLUMNS
            .iter()
            .map(|(_, k)| match k {
                Kind::Str | Kind::Json => ColBuilder::Str(string_builder(rows)),
                Kind::Bool => ColBuilder::Bool(BooleanBuilder::with_capacity(rows)),
                Kind::Time => ColBuilder::Time(TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC")),
                Kind::Struct(n) => ColBuilder::Struct(StructBuilder::new(n.shape(), rows)),
            })
            .collect();
        Builders { cols, other: string_builder(rows), keys: Vec::with_capacity(rows) }
    }

    pub(super) fn finish(mut self, date: Date) -> DatePart {
        let mut arrays: Vec<ArrayRef> = self
            .cols
            .iter_mut()
            .map(|c| -> ArrayRef {
                match c {
                    ColBuilder::Str(b) => Arc::new(b.finish()),
                    ColBuilder::Bool(b) => Arc::new(b.finish()),
                    ColBuilder::Time(b) => Arc::new(b.finish()),
                    ColBuilder::Struct(b) => b.finish(),
                }
            })
            .collect();
        arrays.push(Arc::new(self.other.finish()));
        // Invariant: builders follow SCHEMA column for column.
        let batch = RecordBatch::try_new(SCHEMA.clone(), arrays).expect("builders match the schema");
        DatePart { date, batch, keys: self.keys }
    }

    /// Appends one event: its slots, its struct columns' fields, its otherFields member list.
    pub(super) fn append(&mut self, slots: &[Option<Slot>], nested: &[Vec<Leaf>], other: &str, key: u128) {
        for (col, slot) in self.cols.iter_mut().zip(slots) {
            match (col, slot) {
                (ColBuilder::Str(c), Some(Slot::Str(s))) => c.append_value(s),
                (ColBuilder::Str(c), Some(Slot::Json(s))) => c.append_value(s),
                (ColBuilder::Str(c), _) => c.append_null(),
                (ColBuilder::Bool(c), Some(Slot::Bool(v))) => c.append_value(*v),
                (ColBuilder::Bool(c), _) => c.append_null(),
                (ColBuilder::Time(c), Some(Slot::Time(t))) => c.append_value(t.as_microsecond()),
                (ColBuilder::Time(c), _) => c.append_value(0),
                (ColBuilder::Struct(c), Some(Slot::Nested(n))) => c.append(Some(&nested[*n as usize])),
                (ColBuilder::Struct(c), _) => c.append(None),
            }
        }
        if other.is_empty() {
            self.other.append_null();
        } else {
            // Written into the builder's buffer (no String per event), then ended as one value.
            let builder = self.other.builder();
            let _ = write!(builder, "{{{other}}}");
            builder.append_value("");
        }
        self.keys.push(key);
    }
}

/// One builder per node of a struct column's shape: string leaves, and a validity per struct.
struct StructBuilder {
    shape: &'static Shape,
    strings: Vec<Option<Strings>>,
    valid: Vec<Option<BooleanBufferBuilder>>,
}

impl StructBuilder {
    fn new(shape: &'static Shape, rows: usize) -> Self {
        let strings = shape.nodes.iter().map(|n| (n.kind != NodeKind::Struct).then(|| string_builder(rows))).collect();
        let valid =
            shape.nodes.iter().map(|n| (n.kind == NodeKind::Struct).then(|| BooleanBufferBuilder::new(rows))).collect();
        StructBuilder { shape, strings, valid }
    }

    /// `None`: the column is NULL for this row (no object, or one that did not parse as one).
    fn append(&mut self, leaves: Option<&[Leaf]>) {
        for i in 0..self.shape.nodes.len() {
            let leaf = leaves.map(|l| &l[i]);
            if let Some(v) = &mut self.valid[i] {
                v.append(matches!(leaf, Some(Leaf::Present)));
            } else if let Some(b) = &mut self.strings[i] {
                match leaf {
                    Some(Leaf::Str(s)) => b.append_value(s),
                    Some(Leaf::Json(s)) => b.append_value(s),
                    _ => b.append_null(),
                }
            }
        }
    }

    fn finish(&mut self) -> ArrayRef {
        self.build(0, &self.shape.data_type.clone())
    }

    fn build(&mut self, i: usize, data_type: &DataType) -> ArrayRef {
        let DataType::Struct(fields) = data_type else {
            // Invariant: node kinds and data types come from the same shape.
            unreachable!("struct node {} without a struct type", self.shape.nodes[i].name)
        };
        let children = self.shape.nodes[i].children.clone();
        let arrays: Vec<ArrayRef> = children
            .iter()
            .zip(fields.iter())
            .map(|(&c, f)| match self.shape.nodes[c].kind {
                NodeKind::Struct => self.build(c, f.data_type()),
                _ => Arc::new(self.strings[c].as_mut().expect("a leaf has a string builder").finish()) as ArrayRef,
            })
            .collect();
        let nulls = self.valid[i].as_mut().map(|v| NullBuffer::new(v.finish()));
        let fields: Fields = fields.clone();
        Arc::new(StructArray::new(fields, arrays, nulls))
    }
}
