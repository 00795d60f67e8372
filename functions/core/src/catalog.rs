//! The copies a store holds: opening a store to read (one that is not there is refused, not
//! read as empty), listing its copies (`trailcopy list --store`, Lake's ListImports), and the
//! hint an unknown copy id gets.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use serde::Serialize;

use crate::error::{CopyError, Result};
use crate::record::{CopyRecord, RecordKeys, read_json};
use crate::storage::{AwsClients, Location, ObjectStore};

/// Records read at once when a store's copies are listed.
const RECORD_READS: usize = 16;

/// Ids shown when an unknown copy id is asked for.
const IDS_IN_HINT: usize = 10;

/// Opens an existing event data store to read (`summary`, `export`, `list`): a local folder
/// that does not exist, or a path or prefix that holds neither copies nor events, is an invalid
/// `store` naming it, so a typo is not reported as an empty store.
pub async fn open_existing(aws: &AwsClients, text: &str) -> Result<(Location, Arc<dyn ObjectStore>)> {
    let (location, store) = open_to_read(aws, text).await?;
    let top = store.list_dir(location.prefix()).await?;
    let holds = |name: &str| top.dirs.iter().any(|d| d.trim_end_matches('/').rsplit('/').next() == Some(name));
    if !(holds("copies") || holds("events")) {
        return Err(CopyError::invalid(
            "store",
            format!(
                "no event data store at {} (no copies/ or events/ there): give the --store a copy wrote to",
                location.display()
            ),
        ));
    }
    Ok((location, store))
}

/// Opens a store to read its copies: a local folder must exist (an S3 prefix may be empty).
pub async fn open_to_read(aws: &AwsClients, text: &str) -> Result<(Location, Arc<dyn ObjectStore>)> {
    let location = Location::parse("store", text)?;
    location.check_local_store_exists()?;
    let store = location.open(aws).await?;
    Ok((location, store))
}

/// One line of `trailcopy list --store` (and one object of its `--json`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CopySummary {
    pub copy_id: String,
    pub status: &'static str,
    pub source: String,
    /// The effective window: the start raised to the retention cutoff.
    pub start: Timestamp,
    pub end: Timestamp,
    pub events_copied: u64,
    pub created_time: Timestamp,
}

impl From<&CopyRecord> for CopySummary {
    fn from(r: &CopyRecord) -> Self {
        CopySummary {
            copy_id: r.copy_id.clone(),
            status: r.status.as_str(),
            source: r.request.source.clone(),
            start: r.request.start.max(r.request.retention_cutoff),
            end: r.request.end,
            events_copied: r.statistics.events_completed,
            created_time: r.created_time,
        }
    }
}

/// The ids of the copies under `prefix`, in key order.
pub async fn copy_ids(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<String>> {
    let listing = store.list_dir(&format!("{prefix}copies/")).await?;
    let mut ids: Vec<String> = listing
        .dirs
        .iter()
        .filter_map(|d| d.trim_end_matches('/').rsplit('/').next())
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .collect();
    ids.sort();
    Ok(ids)
}

/// Every copy's record, newest created first (a folder without a readable record is left out:
/// a copy whose planning never wrote one has nothing to show).
pub async fn list_copies(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<CopySummary>> {
    let ids = copy_ids(store, prefix).await?;
    let mut records: Vec<CopyRecord> = futures::stream::iter(ids)
        .map(|id| async move { read_json::<CopyRecord>(store, &RecordKeys::new(prefix, &id).record()).await })
        .buffered(RECORD_READS)
        .try_filter_map(|r| async move { Ok(r) })
        .try_collect()
        .await?;
    records.sort_by(|a, b| b.created_time.cmp(&a.created_time).then_with(|| b.copy_id.cmp(&a.copy_id)));
    Ok(records.iter().map(CopySummary::from).collect())
}

/// The error for a copy id the store does not hold: names the store's copies (the first few)
/// and the command that lists them.
pub async fn unknown_copy(store: &dyn ObjectStore, location: &Location, copy_id: &str) -> CopyError {
    let shown = location.display();
    let theirs = match copy_ids(store, location.prefix()).await {
        Ok(ids) if ids.is_empty() => "it holds no copies".to_string(),
        Ok(ids) if ids.len() > IDS_IN_HINT => {
            format!("its copies include {} and {} more", ids[..IDS_IN_HINT].join(", "), ids.len() - IDS_IN_HINT)
        }
        Ok(ids) => format!("its copies: {}", ids.join(", ")),
        Err(e) => format!("its copies could not be listed ({e})"),
    };
    CopyError::NoSuchCopy {
        copy_id: copy_id.to_string(),
        message: format!("no copy `{copy_id}` in {shown}; {theirs} (`trailcopy list --store {shown}`)"),
    }
}
