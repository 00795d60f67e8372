//! `trailcopy export`: the stored events back as CloudTrail records, one compact JSON object per
//! line, each equal as a JSON value to the record that was copied (rebuilt by
//! [`crate::event::rebuild`]). Streams: one Parquet file and one record batch at a time.

use std::io::Write;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use jiff::Timestamp;
use jiff::civil::Date;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::error::CopyError;
use crate::event::rebuild::Rebuilder;
use crate::storage::ObjectStore;

/// Rows per record batch read: bounds memory beyond the one Parquet file held.
const BATCH_ROWS: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] CopyError),
    /// Writing the output failed (a closed pipe is [`ExportError::is_closed_pipe`]).
    #[error("writing the output: {0}")]
    Output(#[source] std::io::Error),
}

impl ExportError {
    /// The reader went away (`trailcopy export | head`): not a failure of the export.
    pub fn is_closed_pipe(&self) -> bool {
        matches!(self, ExportError::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportStats {
    pub files: u64,
    pub events: u64,
    /// Store files that could not be read: (location, why). The other files are still exported.
    pub failed_files: Vec<(String, String)>,
}

/// Writes every stored event with `start <= eventTime < end` (either bound optional) to `out`,
/// in date, file and row order.
pub async fn export_events(
    store: &dyn ObjectStore,
    prefix: &str,
    start: Option<Timestamp>,
    end: Option<Timestamp>,
    out: &mut dyn Write,
) -> Result<ExportStats, ExportError> {
    let mut stats = ExportStats::default();
    let mut dates = store.list_dir(&format!("{prefix}events/")).await?.dirs;
    dates.sort();
    let mut line = String::with_capacity(4096);
    for dir in dates {
        let name = crate::layout::last_segment(&dir);
        let Some(date) = name.strip_prefix("date=").and_then(|d| d.parse::<Date>().ok()) else {
            continue;
        };
        if !date_overlaps(date, start, end) {
            continue;
        }
        let mut objects = store.list_dir(&dir).await?.objects;
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        for obj in objects.iter().filter(|o| o.key.ends_with(".parquet")) {
            let bytes = store.get(&obj.key).await?;
            let location = store.location(&obj.key);
            match export_file(bytes, start, end, &mut line, out) {
                Ok(n) => {
                    stats.files += 1;
                    stats.events += n;
                }
                Err(FileFailure::Output(e)) => return Err(ExportError::Output(e)),
                Err(FileFailure::Unreadable(why)) => stats.failed_files.push((location, why)),
            }
        }
    }
    out.flush().map_err(ExportError::Output)?;
    Ok(stats)
}

enum FileFailure {
    Output(std::io::Error),
    Unreadable(String),
}

fn export_file(
    bytes: bytes::Bytes,
    start: Option<Timestamp>,
    end: Option<Timestamp>,
    line: &mut String,
    out: &mut dyn Write,
) -> Result<u64, FileFailure> {
    let bad = |e: &dyn std::fmt::Display| FileFailure::Unreadable(e.to_string());
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| bad(&e))?;
    let rebuilder = Rebuilder::new(builder.schema()).map_err(|e| bad(&e))?;
    let time_col = builder.schema().index_of("eventTime").map_err(|e| bad(&e))?;
    let reader = builder.with_batch_size(BATCH_ROWS).build().map_err(|e| bad(&e))?;
    let (lo, hi) = (start.map(|t| t.as_microsecond()), end.map(|t| t.as_microsecond()));
    let mut n = 0;
    for batch in reader {
        let batch = batch.map_err(|e| bad(&e))?;
        let Some(times) = batch.column(time_col).as_primitive_opt::<TimestampMicrosecondType>() else {
            return Err(FileFailure::Unreadable("eventTime is not a timestamp column".into()));
        };
        for row in 0..batch.num_rows() {
            let t = times.is_valid(row).then(|| times.value(row));
            if lo.is_some_and(|lo| t.is_none_or(|t| t < lo)) || hi.is_some_and(|hi| t.is_none_or(|t| t >= hi)) {
                continue;
            }
            line.clear();
            rebuilder.write_row(&batch, row, line);
            line.push('\n');
            out.write_all(line.as_bytes()).map_err(FileFailure::Output)?;
            n += 1;
        }
    }
    Ok(n)
}

/// A date partition holds events of [date, date + 1 day).
fn date_overlaps(date: Date, start: Option<Timestamp>, end: Option<Timestamp>) -> bool {
    let Ok(day_start) = jiff::tz::TimeZone::UTC.to_timestamp(date.to_datetime(jiff::civil::Time::midnight())) else {
        return false;
    };
    let day_end = day_start + jiff::SignedDuration::from_hours(24);
    start.is_none_or(|s| day_end > s) && end.is_none_or(|e| day_start < e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_partitions_are_pruned_by_the_range() {
        let d = Date::constant(2024, 3, 2);
        let t = |s: &str| Some(s.parse::<Timestamp>().unwrap());
        assert!(date_overlaps(d, None, None));
        assert!(date_overlaps(d, t("2024-03-02T23:59:59Z"), None));
        assert!(!date_overlaps(d, t("2024-03-03T00:00:00Z"), None));
        assert!(!date_overlaps(d, None, t("2024-03-02T00:00:00Z")));
        assert!(date_overlaps(d, None, t("2024-03-02T00:00:01Z")));
    }
}
