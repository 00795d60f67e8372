//! Roll-up shards: each item merges its latest summary (status, statistics, failures) into one
//! of [`SHARDS`] objects by compare-and-swap, keyed by its index, so a retried completion
//! replaces its own entry instead of counting twice. Finalize and `status` read the shards: a
//! bounded number of reads, whatever the number of items.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{CopyError, Result};
use crate::plan::CopyContext;
use crate::record::{FailureEntry, ItemState, ItemStatus, Repair, Statistics};
use crate::storage::PutCondition;

pub const SHARDS: usize = 16;
/// Compare-and-swap attempts before giving up (retryable): writers of one shard are the few
/// items that finish at the same moment.
const CAS_ATTEMPTS: u32 = 40;

/// What the roll-up keeps of one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemSummary {
    pub status: ItemStatus,
    pub statistics: Statistics,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<FailureEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<FailureEntry>,
    /// The item's first day prefix (failure locations).
    pub prefix: String,
    /// Fingerprints of the keys that verified its digests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_fingerprints: Vec<String>,
    /// Files skipped by name (not log files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<FailureEntry>,
    /// Files a retry reads again.
    #[serde(default)]
    pub failed_files: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<Repair>,
}

impl From<&ItemState> for ItemSummary {
    fn from(s: &ItemState) -> Self {
        ItemSummary {
            status: s.status,
            statistics: s.statistics,
            failures: s.failures.clone(),
            error: s.error.clone(),
            prefix: s.prefix.clone(),
            key_fingerprints: s.key_fingerprints.clone(),
            skipped: s.skipped.clone(),
            failed_files: s.failed_files.len() as u64,
            repair: s.repair,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Shard {
    items: BTreeMap<String, ItemSummary>,
}

fn shard_of(index: &str) -> usize {
    (xxhash_rust::xxh3::xxh3_64(index.as_bytes()) % SHARDS as u64) as usize
}

/// Merges the item's current state into its shard (idempotent: the entry is replaced).
pub async fn record_item(ctx: &CopyContext, state: &ItemState) -> Result<()> {
    let key = ctx.keys.rollup_shard(shard_of(&state.index));
    let summary = ItemSummary::from(state);
    for attempt in 0..CAS_ATTEMPTS {
        let (mut shard, condition) = match ctx.store.get_versioned(&key).await? {
            Some((body, tag)) => (parse(ctx, &key, &body)?, PutCondition::Matches(tag)),
            None => (Shard::default(), PutCondition::Absent),
        };
        if shard.items.get(&state.index) == Some(&summary) {
            return Ok(());
        }
        shard.items.insert(state.index.clone(), summary.clone());
        let body = serde_json::to_vec(&shard)
            .map_err(|e| CopyError::Storage { location: ctx.store.location(&key), message: e.to_string() })?;
        if ctx.store.put_if(&key, body.into(), &condition).await? {
            return Ok(());
        }
        // Lost the race: back off a little (jittered by the item) and merge again.
        let jitter = u64::from(attempt) * 5 + xxhash_rust::xxh3::xxh3_64(state.index.as_bytes()) % 20;
        tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
    }
    Err(CopyError::Retryable {
        location: ctx.store.location(&key),
        message: format!("roll-up shard still contended after {CAS_ATTEMPTS} attempts"),
    })
}

fn parse(ctx: &CopyContext, key: &str, body: &[u8]) -> Result<Shard> {
    serde_json::from_slice(body).map_err(|e| CopyError::Storage {
        location: ctx.store.location(key),
        message: format!("unreadable roll-up shard: {e}"),
    })
}

/// Every item's latest summary, from the shards ([`SHARDS`] reads).
pub async fn read_summaries(ctx: &CopyContext) -> Result<BTreeMap<String, ItemSummary>> {
    use futures::{StreamExt, TryStreamExt};
    let shards: Vec<Option<Shard>> = futures::stream::iter(0..SHARDS)
        .map(|n| async move {
            let key = ctx.keys.rollup_shard(n);
            match ctx.store.get_versioned(&key).await? {
                Some((body, _)) => parse(ctx, &key, &body).map(Some),
                None => Ok(None),
            }
        })
        .buffer_unordered(SHARDS)
        .try_collect()
        .await?;
    Ok(shards.into_iter().flatten().flat_map(|s| s.items).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_spread_items() {
        let used: std::collections::BTreeSet<usize> = (0..200).map(|i| shard_of(&format!("{i:06}"))).collect();
        assert_eq!(used.len(), SHARDS);
    }
}
