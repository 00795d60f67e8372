//! A quick look at an event data store without a query engine: rows per date and top event
//! names, read back from the Parquet files.

use std::collections::{BTreeMap, HashMap};

use arrow_array::Array;
use arrow_array::cast::AsArray;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::error::{CopyError, Result};
use crate::storage::ObjectStore;

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreSummary {
    pub files: u64,
    pub rows: u64,
    pub rows_by_date: BTreeMap<String, u64>,
    pub top_event_names: Vec<(String, u64)>,
}

pub async fn summarize_store(store: &dyn ObjectStore, prefix: &str, top: usize) -> Result<StoreSummary> {
    let mut summary = StoreSummary::default();
    let mut names: HashMap<String, u64> = HashMap::new();
    let dates = store.list_dir(&format!("{prefix}events/")).await?;
    for dir in dates.dirs {
        let date = crate::layout::last_segment(&dir).trim_start_matches("date=").to_string();
        for obj in store.list_dir(&dir).await?.objects {
            if !obj.key.ends_with(".parquet") {
                continue;
            }
            let bytes = store.get(&obj.key).await?;
            let bad = |e: parquet::errors::ParquetError| CopyError::Storage {
                location: store.location(&obj.key),
                message: e.to_string(),
            };
            let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(bad)?;
            let Some(col) = builder.schema().index_of("eventName").ok() else {
                continue;
            };
            let mask = ProjectionMask::roots(builder.parquet_schema(), [col]);
            let reader = builder.with_projection(mask).build().map_err(bad)?;
            summary.files += 1;
            for batch in reader {
                let batch = batch
                    .map_err(|e| CopyError::Storage { location: store.location(&obj.key), message: e.to_string() })?;
                let rows = batch.num_rows() as u64;
                summary.rows += rows;
                *summary.rows_by_date.entry(date.clone()).or_default() += rows;
                let col = batch.column(0).as_string::<i32>();
                for i in 0..col.len() {
                    let name = if col.is_null(i) { "(null)" } else { col.value(i) };
                    match names.get_mut(name) {
                        Some(n) => *n += 1,
                        None => {
                            names.insert(name.to_string(), 1);
                        }
                    }
                }
            }
        }
    }
    let mut top_names: Vec<(String, u64)> = names.into_iter().collect();
    top_names.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top_names.truncate(top);
    summary.top_event_names = top_names;
    Ok(summary)
}
