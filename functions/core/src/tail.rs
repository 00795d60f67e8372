//! Open tails: a copy that ends near its planning time is complete only through planning time −
//! the delivery allowance; a later copy may start inside that tail. The events earlier copies
//! stored there are read back from the store (their eventIDs, as dedup keys) so the later copy
//! stores each of them once. A tail is at most the delivery allowance of events.

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, RecordBatch};
use jiff::Timestamp;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{CopyError, Result};
use crate::storage::ObjectStore;

/// The dedup keys (xxh3-128 of eventID, as the copy computes them) of the stored events with
/// `from <= eventTime < until`.
pub async fn stored_keys(
    store: &dyn ObjectStore,
    store_prefix: &str,
    from: Timestamp,
    until: Timestamp,
) -> Result<Vec<u128>> {
    let mut keys = Vec::new();
    if from >= until {
        return Ok(keys);
    }
    let utc = |t: Timestamp| t.to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
    let (first, last) = (utc(from), utc(until));
    let mut day = first;
    while day <= last {
        let dir = format!("{store_prefix}events/date={day}/");
        for obj in store.list_dir(&dir).await?.objects {
            if obj.key.ends_with(".parquet") {
                let bytes = store.get(&obj.key).await?;
                keys_in_file(bytes, from, until, &mut keys)
                    .map_err(|message| CopyError::Storage { location: store.location(&obj.key), message })?;
            }
        }
        match day.tomorrow() {
            Ok(d) => day = d,
            Err(_) => break,
        }
    }
    Ok(keys)
}

fn keys_in_file(
    bytes: bytes::Bytes,
    from: Timestamp,
    until: Timestamp,
    keys: &mut Vec<u128>,
) -> std::result::Result<(), String> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| e.to_string())?;
    let schema = builder.schema().clone();
    let (Ok(id), Ok(time)) = (schema.index_of("eventID"), schema.index_of("eventTime")) else {
        return Ok(());
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), [id, time]);
    let reader = builder.with_projection(mask).build().map_err(|e| e.to_string())?;
    let (from, until) = (from.as_microsecond(), until.as_microsecond());
    for batch in reader {
        let batch: RecordBatch = batch.map_err(|e| e.to_string())?;
        let (Some(ids), Some(times)) = (
            batch.column_by_name("eventID").and_then(|c| c.as_string_opt::<i32>()),
            batch.column_by_name("eventTime").and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>()),
        ) else {
            return Err("eventID or eventTime has an unexpected type".into());
        };
        for i in 0..batch.num_rows() {
            if ids.is_null(i) || times.is_null(i) {
                continue;
            }
            let t = times.value(i);
            if t >= from && t < until {
                keys.push(xxhash_rust::xxh3::xxh3_128(ids.value(i).as_bytes()));
            }
        }
    }
    Ok(())
}
