//! The event data store's Parquet output: one file per (work item, batch, eventTime date),
//! named deterministically so re-running a batch overwrites instead of duplicating.

use std::collections::BTreeMap;

use arrow_array::RecordBatch;
use jiff::civil::Date;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;

use crate::error::{CopyError, Result};
use crate::event::SCHEMA;
use crate::range::Window;
use crate::record::WorkItem;

/// Rows per row group: large enough for engines to skip well, small enough to bound memory.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// Columns whose values are (nearly) all distinct or long JSON text: a dictionary would only
/// cost hashing before it falls back to plain encoding, and min/max statistics prune nothing.
const HIGH_CARDINALITY: &[&str] = &[
    "eventID",
    "requestID",
    "sharedEventID",
    "userIdentity",
    "requestParameters",
    "responseElements",
    "additionalEventData",
    "resources",
    "serviceEventDetails",
    "addendum",
    "edgeDeviceDetails",
    "insightDetails",
    "eventContext",
    crate::event::OTHER_FIELDS,
];

fn writer_properties() -> WriterProperties {
    // Chunk (row group) statistics everywhere, page statistics (the page index) only for
    // eventTime, the column queries filter on most: page-level min/max of every string column
    // costs more CPU than the whole zstd compression.
    let mut b = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_column_statistics_enabled(ColumnPath::from("eventTime"), EnabledStatistics::Page)
        .set_created_by("trailcopy".into());
    for c in HIGH_CARDINALITY {
        b = b
            .set_column_dictionary_enabled(ColumnPath::from(*c), false)
            .set_column_statistics_enabled(ColumnPath::from(*c), EnabledStatistics::None);
    }
    b.build()
}

/// Writes one batch's events, split by date, into in-memory Parquet files.
pub struct BatchWriter {
    writers: BTreeMap<Date, ArrowWriter<Vec<u8>>>,
}

impl Default for BatchWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchWriter {
    pub fn new() -> Self {
        BatchWriter { writers: BTreeMap::new() }
    }

    pub fn write(&mut self, date: Date, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let w = match self.writers.entry(date) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                let w = ArrowWriter::try_new(Vec::new(), SCHEMA.clone(), Some(writer_properties()))
                    .map_err(parquet_error)?;
                v.insert(w)
            }
        };
        w.write(batch).map_err(parquet_error)
    }

    /// Closes every file: (date, Parquet bytes).
    pub fn finish(self) -> Result<Vec<(Date, Vec<u8>)>> {
        self.writers.into_iter().map(|(d, w)| w.into_inner().map(|b| (d, b)).map_err(parquet_error)).collect()
    }
}

fn parquet_error(e: parquet::errors::ParquetError) -> CopyError {
    CopyError::Storage { location: "parquet writer".into(), message: e.to_string() }
}

/// `events/date=YYYY-MM-DD/<item day>_<tag>_<item>_<batch>.parquet`, where the tag hashes
/// (window, source, the item's frozen file list): the same work always gets the same name, and
/// different work never does.
pub fn event_file_key(
    store_prefix: &str,
    date: Date,
    window: &Window,
    source: &str,
    item: &WorkItem,
    batch: u32,
) -> String {
    let seed = format!("{}|{}|{}|{}|{}", window.start, window.end, source, item.date, item.tag);
    let tag = xxhash_rust::xxh3::xxh3_128(seed.as_bytes());
    let day = item.date.replace('-', "");
    format!("{store_prefix}events/date={date}/{day}_{:020x}_{}_{batch:06}.parquet", tag >> 48, item.index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_and_distinct() {
        let w = Window {
            start: "2020-10-01T00:00:00Z".parse().unwrap(),
            end: "2020-10-02T00:00:00Z".parse().unwrap(),
            retention_cutoff: "2019-01-01T00:00:00Z".parse().unwrap(),
        };
        let item = WorkItem {
            copy_id: "c".into(),
            store: "s".into(),
            index: "000003".into(),
            date: "2020-10-01".into(),
            prefixes: 2,
            files: 2,
            bytes: 10,
            tag: "00ff".into(),
            first: String::new(),
            last: String::new(),
        };
        let d = Date::constant(2020, 10, 1);
        let a = event_file_key("s/", d, &w, "s3://b/", &item, 0);
        assert_eq!(a, event_file_key("s/", d, &w, "s3://b/", &item, 0));
        assert!(a.starts_with("s/events/date=2020-10-01/20201001_"), "{a}");
        assert!(a.ends_with("_000003_000000.parquet"), "{a}");
        assert_ne!(a, event_file_key("s/", d, &w, "s3://b/", &item, 1));
        assert_ne!(a, event_file_key("s/", d, &w, "s3://other/", &item, 0));
        let other_files = WorkItem { tag: "0100".into(), ..item.clone() };
        assert_ne!(a, event_file_key("s/", d, &w, "s3://b/", &other_files, 0), "different work, different name");
        let w2 = Window { end: "2020-10-03T00:00:00Z".parse().unwrap(), ..w };
        assert_ne!(a, event_file_key("s/", d, &w2, "s3://b/", &item, 0));
    }
}
