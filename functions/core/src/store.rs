//! The event data store's Parquet output: one file per (work item, batch, eventTime date),
//! named deterministically so re-running a batch overwrites instead of duplicating.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, DictionaryArray, Int32Array, RecordBatch, StringArray};
use jiff::civil::Date;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;

use crate::error::{CopyError, Result};
use crate::event::STORE_SCHEMA;
use crate::range::Window;
use crate::record::WorkItem;
use crate::storage::{ObjectStore, Spool};

/// Rows per row group at most. Row groups also end where an item's rows pass from one
/// account-region to the next (see [`BatchWriter::end_cluster`]), so most hold one account-region's
/// events of a day; this bounds a busy one's (one account-region can log millions of events a day),
/// so a needle's row group is at most this many rows.
const ROW_GROUP_ROWS: usize = 16 * 1024;

/// Rows a row group needs before a new account-region may start a new one: a quiet one's few rows
/// share a row group with the next (contiguous in name order, so min/max stay narrow), rather than
/// make row groups too small to compress well.
const MIN_CLUSTER_ROWS: usize = 2 * 1024;

/// The columns investigations look up one value of (issue 33): split-block bloom filters let a
/// reader skip every row group that cannot hold it (Spark, Trino, DuckDB read them; min/max cannot
/// place a random eventID, requestID, access key or address). Sized per row group to its rows,
/// then folded to the values it holds.
const NEEDLE_COLUMNS: &[&str] = &[
    "eventID",
    "requestID",
    "userIdentity.accessKeyId",
    "sourceIPAddress",
    "userIdentity.arn",
    "recipientAccountId",
    "eventName",
];

/// False positive probability of the bloom filters: 2 % of the row groups without the value are
/// read anyway. On the benchmark trail 1 % costs +0.8 % of store size for a median share read of
/// 1.1 % instead of 1.8 % (benches/RESULTS.md, issue 33).
const BLOOM_FPP: f64 = 0.02;

/// Columns whose values are (nearly) all distinct or long JSON text: a dictionary would only
/// cost hashing before it falls back to plain encoding, and min/max statistics prune nothing.
const HIGH_CARDINALITY: &[&str] = &[
    "eventID",
    "requestID",
    "sharedEventID",
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

/// Struct leaves that are (nearly) unique per event or free-form JSON: no dictionary, no
/// statistics. The other leaves (type, accountId, invokedBy, sessionIssuer.*, userName, arn,
/// tlsVersion, ...) repeat across events, so they get dictionaries and min/max statistics.
const HIGH_CARDINALITY_LEAVES: &[&str] = &[
    "userIdentity.accessKeyId",
    "userIdentity.credentialId",
    "userIdentity.sessionContext.attributes.creationDate",
    "userIdentity.sessionContext.webIdFederationData.attributes",
];

/// `userIdentity.arn` → the nested column's path (`ColumnPath::from` would make one part of it).
fn column_path(dotted: &str) -> ColumnPath {
    ColumnPath::new(dotted.split('.').map(String::from).collect())
}

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
    for path in NEEDLE_COLUMNS.iter().map(|c| column_path(c)) {
        b = b.set_column_bloom_filter_enabled(path.clone(), true).set_column_bloom_filter_fpp(path, BLOOM_FPP);
    }
    let leaves = HIGH_CARDINALITY_LEAVES.iter().map(|p| column_path(p));
    for path in HIGH_CARDINALITY.iter().map(|c| ColumnPath::from(*c)).chain(leaves) {
        b = b
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_statistics_enabled(path, EnabledStatistics::None);
    }
    b.build()
}

/// Writes one batch's events, split by date, into Parquet files on spools the store gives
/// (a local store's are temporary files, so the batch's output is not held in memory).
pub struct BatchWriter<'a> {
    /// `None`: in memory.
    store: Option<&'a dyn ObjectStore>,
    writers: BTreeMap<Date, ArrowWriter<Spool>>,
}

impl<'a> BatchWriter<'a> {
    /// Writes into the spools of `store`.
    pub fn new(store: &'a dyn ObjectStore) -> Self {
        BatchWriter { store: Some(store), writers: BTreeMap::new() }
    }

    /// Writes into memory.
    pub fn in_memory() -> BatchWriter<'static> {
        BatchWriter { store: None, writers: BTreeMap::new() }
    }

    /// Writes a parsed batch (`event::SCHEMA`) with its provenance: the log file it came from.
    pub fn write(&mut self, date: Date, batch: &RecordBatch, source_log_file: &str) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = with_source_log_file(batch, source_log_file)?;
        let w = match self.writers.entry(date) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                let spool = self.store.map_or(Ok(Spool::Memory(Vec::new())), |s| s.spool())?;
                let w = ArrowWriter::try_new(spool, STORE_SCHEMA.clone(), Some(writer_properties()))
                    .map_err(parquet_error)?;
                v.insert(w)
            }
        };
        w.write(&batch).map_err(parquet_error)
    }

    /// The next rows are another account-region (or leave the first hour's files): a file's row
    /// group ends here if it holds enough rows, so row groups' min/max statistics separate
    /// accounts, regions and principals (issue 33). Smaller ones go on: a quiet account-region's
    /// few rows share a row group with the next ones (contiguous, so min/max still stay narrow).
    /// `whole`: end the row group however few rows it holds (the first hour's files, which hold
    /// every account-region, are kept apart from the rest).
    pub fn end_cluster(&mut self, whole: bool) -> Result<()> {
        for w in self.writers.values_mut() {
            if w.in_progress_rows() >= MIN_CLUSTER_ROWS || whole && w.in_progress_rows() > 0 {
                w.flush().map_err(parquet_error)?;
            }
        }
        Ok(())
    }

    /// Closes every file: (date, its spool, for [`ObjectStore::put_spool`]).
    pub fn finish(self) -> Result<Vec<(Date, Spool)>> {
        self.writers.into_iter().map(|(d, w)| w.into_inner().map(|b| (d, b)).map_err(parquet_error)).collect()
    }
}

/// Appends `sourceLogFile`: a one-entry dictionary and a zero key per row.
fn with_source_log_file(batch: &RecordBatch, source_log_file: &str) -> Result<RecordBatch> {
    let keys = Int32Array::from(vec![0; batch.num_rows()]);
    let values = Arc::new(StringArray::from(vec![source_log_file]));
    let column: ArrayRef = Arc::new(DictionaryArray::new(keys, values));
    let mut columns = batch.columns().to_vec();
    columns.push(column);
    RecordBatch::try_new(STORE_SCHEMA.clone(), columns)
        .map_err(|e| CopyError::Storage { location: "arrow batch".into(), message: e.to_string() })
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
