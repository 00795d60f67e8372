//! Reading the digests that cover a set of log files: one LIST per digest day folder and one
//! GET per digest hour of each account-region (plus, where the source keeps no object metadata,
//! the digest after the last, whose `previousDigestSignature` signs it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp, ToSpan};

use super::chain::{Fetched, Listed, Loaded, check_chain};
use super::file::{DigestName, parse_digest, source_key};
use super::index::{CheckedDigest, DigestIndex};
use super::keys::{KeySet, PublicKeySource};
use super::signature::sha256;
use crate::error::{CopyError, Result};
use crate::record::FailureEntry;
use crate::storage::ObjectStore;

/// A digest lists the files delivered in its hour and ends a little after the hour starts
/// (e.g. :01:31); a file named T (minute precision, delivered seconds later) is in the digest
/// ending within this after T.
pub const DIGEST_SPAN: SignedDuration = SignedDuration::from_mins(75);
/// How far past the last needed digest its successor is looked for (digests are hourly).
const SUCCESSOR_SPAN: SignedDuration = SignedDuration::from_hours(2);
const CONCURRENCY: usize = 16;

/// Log files of one account-region named in `[from, to)`; `account_root` is
/// `…AWSLogs/[o-org/]<account>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestScope {
    pub account_root: String,
    pub region: String,
    pub from: Timestamp,
    pub to: Timestamp,
}

impl DigestScope {
    fn digest_window(&self) -> (Timestamp, Timestamp) {
        (self.from, self.to.saturating_add(DIGEST_SPAN).unwrap_or(Timestamp::MAX))
    }

    /// Is `key` a log file of the scope (its folder, named within `[from, to)`)?
    pub fn holds(&self, key: &str) -> bool {
        key.starts_with(&self.log_prefix())
            && crate::layout::file_timestamp(crate::layout::file_name(key))
                .is_none_or(|t| t >= self.from && t < self.to)
    }

    /// The log folder prefix of the scope (`…/CloudTrail/<region>/`).
    pub fn log_prefix(&self) -> String {
        format!("{}CloudTrail/{}/", self.account_root, self.region)
    }
}

/// Requests made, for the cost report.
#[derive(Debug, Default)]
pub struct Requests {
    pub lists: AtomicU64,
    pub gets: AtomicU64,
}

impl Requests {
    pub fn snapshot(&self) -> (u64, u64) {
        (self.lists.load(Ordering::Relaxed), self.gets.load(Ordering::Relaxed))
    }
}

/// The checked digests covering the scopes, and the digest-level failure entries (invalid,
/// unsigned, forged digests; broken chains) for digests inside the scopes' windows.
pub struct LoadedDigests {
    pub index: DigestIndex,
    pub failures: Vec<FailureEntry>,
    /// Digests with a failure entry.
    pub digests_failed: u64,
}

fn day_folders(account_root: &str, region: &str, from: Timestamp, to: Timestamp) -> Vec<String> {
    let utc = |t: Timestamp| t.to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
    let (mut d, last) = (utc(from), utc(to));
    let mut out = Vec::new();
    while d <= last {
        out.push(format!("{account_root}CloudTrail-Digest/{region}/{}/", d.strftime("%Y/%m/%d")));
        match d.checked_add(1.day()) {
            Ok(n) => d = n,
            Err(_) => break,
        }
    }
    out
}

async fn fetch(source: &dyn ObjectStore, requests: &Requests, key: String, name: DigestName) -> Result<Fetched> {
    requests.gets.fetch_add(1, Ordering::Relaxed);
    let (bytes, meta) = match source.get_with_metadata(&key).await {
        Ok(x) => x,
        // Deleted between the listing and the read: it is missing, which the chain reports.
        Err(CopyError::NotFound { .. }) => {
            return Ok(Fetched { key, name, body: Err("deleted while being read".into()) });
        }
        Err(e) => return Err(e),
    };
    let (inflated, damage) = crate::event::gunzip_partial(&bytes);
    let body = match damage {
        Some(e) => Err(e.message),
        None => parse_digest(&inflated).map(|file| Loaded {
            sha256: sha256(&inflated),
            file,
            signature: meta.get("signature").cloned(),
            signature_algorithm: meta.get("signature-algorithm").cloned(),
        }),
    };
    Ok(Fetched { key, name, body })
}

type ChainId = (String, String, String, String, String);

/// Lists, reads and checks the digests covering `scopes`.
pub async fn load_digests(
    source: &dyn ObjectStore,
    awslogs_root: &str,
    keys: &dyn PublicKeySource,
    scopes: &[DigestScope],
    requests: &Requests,
) -> Result<LoadedDigests> {
    // Folders: every day from the first scope start to past the last window (for successors).
    let mut folders: Vec<String> = scopes
        .iter()
        .flat_map(|s| {
            let (from, to) = s.digest_window();
            day_folders(&s.account_root, &s.region, from, to.saturating_add(SUCCESSOR_SPAN).unwrap_or(Timestamp::MAX))
        })
        .collect();
    folders.sort();
    folders.dedup();
    let listings: Vec<Vec<String>> = futures::stream::iter(&folders)
        .map(|f| async move {
            requests.lists.fetch_add(1, Ordering::Relaxed);
            Ok::<_, CopyError>(source.list_dir(f).await?.objects.into_iter().map(|o| o.key).collect::<Vec<_>>())
        })
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    let listed_keys: HashSet<String> = listings.iter().flatten().cloned().collect();
    let listed_folders: HashSet<String> = folders.iter().cloned().collect();

    // Chains (account root, region, trail, home region) → digests by end time.
    let mut chains: BTreeMap<ChainId, Vec<(String, DigestName)>> = BTreeMap::new();
    for key in &listed_keys {
        let Some(name) = DigestName::parse(crate::layout::file_name(key)) else { continue };
        let root = key.split("CloudTrail-Digest/").next().unwrap_or("").to_string();
        let id = (root, name.region.clone(), name.trail.clone(), name.home_region.clone(), name.account.clone());
        chains.entry(id).or_default().push((key.clone(), name));
    }
    let in_window = |root: &str, name: &DigestName| {
        scopes.iter().any(|s| {
            let (from, to) = s.digest_window();
            s.account_root == root && s.region == name.region && name.end > from && name.end <= to
        })
    };

    // Read the digests in the windows; then, for chains whose newest read digest has no
    // signature metadata, the next one (it repeats that signature).
    let mut wanted: Vec<(ChainId, String, DigestName)> = Vec::new();
    for (id, ds) in chains.iter_mut() {
        ds.sort_by(|a, b| (a.1.end, a.1.backfill, &a.0).cmp(&(b.1.end, b.1.backfill, &b.0)));
        for (k, n) in ds.iter() {
            if in_window(&id.0, n) {
                wanted.push((id.clone(), k.clone(), n.clone()));
            }
        }
    }
    let fetched: Vec<(ChainId, Fetched)> = futures::stream::iter(wanted)
        .map(|(id, k, n)| async move { Ok::<_, CopyError>((id, fetch(source, requests, k, n).await?)) })
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    let mut by_chain: BTreeMap<ChainId, Vec<Fetched>> = BTreeMap::new();
    for (id, f) in fetched {
        by_chain.entry(id).or_default().push(f);
    }
    let mut helpers: HashSet<String> = HashSet::new();
    let mut successors = Vec::new();
    for (id, ds) in &by_chain {
        let Some(last) = ds.iter().rev().find(|d| !d.name.backfill) else { continue };
        if matches!(&last.body, Ok(l) if l.signature.is_some()) {
            continue;
        }
        let next = chains[id].iter().find(|(_, n)| n.end > last.name.end && !n.backfill);
        if let Some((k, n)) = next {
            helpers.insert(k.clone());
            successors.push((id.clone(), k.clone(), n.clone()));
        }
    }
    for (id, k, n) in successors {
        let f = fetch(source, requests, k, n).await?;
        by_chain.entry(id).or_default().push(f);
    }

    // Keys: one request per region (ListPublicKeys covers a time range).
    let mut spans: HashMap<String, (Timestamp, Timestamp)> = HashMap::new();
    for (id, ds) in &by_chain {
        for d in ds {
            let e = spans.entry(id.1.clone()).or_insert((d.name.end, d.name.end));
            e.0 = e.0.min(d.name.end);
            e.1 = e.1.max(d.name.end);
        }
    }
    let mut keysets: HashMap<String, KeySet> = HashMap::new();
    for (region, (first, last)) in spans {
        let start = first.saturating_sub(SignedDuration::from_hours(2)).unwrap_or(first);
        keysets.insert(region.clone(), keys.public_keys(&region, start, last).await?);
    }

    let listed = Listed { keys: &listed_keys, folders: &listed_folders };
    let mut index = DigestIndex::default();
    let mut failures = Vec::new();
    let mut digests_failed = 0;
    let empty = KeySet::new();
    for (id, ds) in by_chain.iter_mut() {
        ds.sort_by(|a, b| (a.name.end, a.name.backfill, &a.key).cmp(&(b.name.end, b.name.backfill, &b.key)));
        let (statuses, breaks) = check_chain(ds, keysets.get(&id.1).unwrap_or(&empty), awslogs_root, &listed);
        for (d, status) in ds.iter().zip(statuses) {
            if helpers.contains(&d.key) {
                continue; // read for its previousDigestSignature only; its files are past the scopes
            }
            let location = source.location(&d.key);
            let listed_files: Vec<(String, String, Option<String>)> = match &d.body {
                Ok(l) => l
                    .file
                    .log_files
                    .iter()
                    .filter_map(|f| {
                        Some((source_key(awslogs_root, &f.s3_object)?, f.hash_value.clone(), f.hash_algorithm.clone()))
                    })
                    .collect(),
                Err(_) => Vec::new(),
            };
            if let super::chain::DigestStatus::Failed { error_type, message } = &status {
                // A digest we cannot get a signature for (the newest of a local copy) matters only
                // if it lists files we read; every other failure is reported (an emptied digest too).
                let lists_in_scope = listed_files.iter().any(|(k, _, _)| scopes.iter().any(|s| s.holds(k)));
                if *error_type != "DigestSignatureMissing" || lists_in_scope {
                    failures.push(FailureEntry::new(location.clone(), error_type, message.clone()));
                    digests_failed += 1;
                }
            }
            index.add(CheckedDigest { key: d.key.clone(), location, status }, listed_files);
        }
        for b in breaks {
            let relevant = DigestName::parse(crate::layout::file_name(&b.key)).is_none_or(|n| in_window(&id.0, &n));
            if relevant {
                failures.push(FailureEntry::new(source.location(&b.key), "DigestChainBroken", b.message));
            }
        }
    }
    Ok(LoadedDigests { index, failures, digests_failed })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::digest::chain::tests::{ROOT, chain, keyset, log_body, log_key};
    use crate::digest::index::Verdict;
    use crate::digest::keys::KeyFile;
    use crate::storage::{Listing, ObjectHead, ObjectInfo, PutCondition};

    /// An object's body and user metadata.
    type Object = (Bytes, HashMap<String, String>);

    /// Objects with metadata (an S3 bucket) or without (a local folder), at the storage seam.
    #[derive(Default)]
    struct MemStore {
        objects: Mutex<BTreeMap<String, Object>>,
    }

    #[async_trait]
    impl ObjectStore for MemStore {
        async fn list_dir(&self, prefix: &str) -> Result<Listing> {
            let objects = self.objects.lock().unwrap();
            let objects = objects
                .iter()
                .filter(|(k, _)| k.starts_with(prefix) && !k[prefix.len()..].contains('/'))
                .map(|(k, (b, _))| ObjectInfo { key: k.clone(), size: b.len() as u64, storage_class: None })
                .collect();
            Ok(Listing { dirs: Vec::new(), objects })
        }
        async fn get(&self, key: &str) -> Result<Bytes> {
            Ok(self.get_with_metadata(key).await?.0)
        }
        async fn get_with_metadata(&self, key: &str) -> Result<(Bytes, HashMap<String, String>)> {
            self.objects.lock().unwrap().get(key).cloned().ok_or(CopyError::NotFound { location: key.into() })
        }
        async fn put(&self, key: &str, body: Bytes) -> Result<()> {
            self.objects.lock().unwrap().insert(key.into(), (body, HashMap::new()));
            Ok(())
        }
        async fn get_versioned(&self, _key: &str) -> Result<Option<(Bytes, String)>> {
            unreachable!("verification only reads")
        }
        async fn put_if(&self, _key: &str, _body: Bytes, _condition: &PutCondition) -> Result<bool> {
            unreachable!("verification only reads")
        }
        async fn delete(&self, _key: &str) -> Result<()> {
            unreachable!("verification only reads")
        }
        async fn head(&self, _key: &str) -> Result<ObjectHead> {
            Ok(ObjectHead::default())
        }
        async fn restore(&self, _: &str, _: &str, _: Option<i32>) -> Result<()> {
            Ok(())
        }
        fn location(&self, key: &str) -> String {
            format!("s3://b/{key}")
        }
    }

    fn gz(b: &[u8]) -> Bytes {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap().into()
    }

    fn store(hours: u32, metadata: bool, skip: &[u32]) -> MemStore {
        let s = MemStore::default();
        for (i, (key, raw, sig)) in chain(hours).into_iter().enumerate() {
            if skip.contains(&(i as u32 + 1)) {
                continue;
            }
            let meta = if metadata {
                [("signature".to_string(), sig), ("signature-algorithm".to_string(), "SHA256withRSA".to_string())]
                    .into()
            } else {
                HashMap::new()
            };
            s.objects.lock().unwrap().insert(key, (gz(&raw), meta));
        }
        s
    }

    fn scope(from_hour: i8, to_hour: i8) -> DigestScope {
        let t = |h: i8| {
            jiff::civil::date(2024, 3, 1).at(h, 0, 0, 0).to_zoned_datetime(jiff::tz::TimeZone::UTC).unwrap().timestamp()
        };
        DigestScope { account_root: ROOT.into(), region: "us-east-1".into(), from: t(from_hour), to: t(to_hour) }
    }

    fn keys() -> KeyFile {
        KeyFile::new(keyset().into_values().collect(), "test".into())
    }

    async fn load(s: &MemStore, scopes: &[DigestScope]) -> (LoadedDigests, (u64, u64)) {
        let requests = Requests::default();
        let loaded = load_digests(s, "AWSLogs/", &keys(), scopes, &requests).await.unwrap();
        (loaded, requests.snapshot())
    }

    #[tokio::test]
    async fn reads_one_digest_per_hour_of_the_files_and_one_folder_per_day() {
        let s = store(20, true, &[]);
        // Files named in [03:00, 06:00): the digests ending in (03:00, 07:15] (03:01:31 .. 07:01:31).
        let (loaded, (lists, gets)) = load(&s, &[scope(3, 6)]).await;
        assert_eq!(gets, 5, "one per digest hour");
        assert_eq!(lists, 1, "one day folder");
        assert!(loaded.failures.is_empty(), "{:?}", loaded.failures);
        for h in 3..=6 {
            let v = loaded.index.verdict(&log_key(h), Some(&crate::digest::signature::sha256(&log_body(h))));
            assert!(v.is_verified(), "{h}: {v:?}");
        }
        assert_eq!(
            loaded.index.verdict(&log_key(3), Some(&[0; 32])).clone(),
            Verdict::Mismatch {
                digest: format!("s3://b/{}", crate::digest::chain::tests::digest_key(3)),
                expected: hex::encode(crate::digest::signature::sha256(&log_body(3))),
                actual: hex::encode([0u8; 32]),
            }
        );
    }

    #[tokio::test]
    async fn without_metadata_the_next_digest_is_read_for_the_last_signature() {
        let s = store(20, false, &[]);
        let (loaded, (_, gets)) = load(&s, &[scope(3, 6)]).await;
        assert_eq!(gets, 6, "five digests and the one after them");
        assert!(loaded.failures.is_empty(), "{:?}", loaded.failures);
        assert_eq!(loaded.index.digests().len(), 5, "the helper is not indexed");
    }

    #[tokio::test]
    async fn a_missing_digest_is_one_chain_broken_entry_and_its_files_are_in_no_digest() {
        let s = store(20, true, &[5]);
        let (loaded, _) = load(&s, &[scope(3, 6)]).await;
        let types: Vec<(&str, &str)> =
            loaded.failures.iter().map(|f| (f.error_type.as_str(), f.location.as_str())).collect();
        let missing = format!("s3://b/{}", crate::digest::chain::tests::digest_key(5));
        assert_eq!(types, [("DigestChainBroken", missing.as_str())]);
        assert_eq!(
            loaded.index.verdict(&log_key(5), Some(&crate::digest::signature::sha256(&log_body(5)))),
            Verdict::NotInDigest
        );
    }

    #[tokio::test]
    async fn the_newest_digest_of_a_local_copy_is_reported_only_if_it_lists_files_read() {
        let s = store(6, false, &[]);
        // Files 03:00..06:00: the 06:01 digest lists the 06:00 file and has no successor.
        let (loaded, _) = load(&s, &[scope(3, 7)]).await;
        let types: Vec<&str> = loaded.failures.iter().map(|f| f.error_type.as_str()).collect();
        assert_eq!(types, ["DigestSignatureMissing"]);
        assert!(matches!(loaded.index.verdict(&log_key(6), None), Verdict::Unverified { .. }));
        // Files up to 05:30 only: the 06:01 digest lists none of them; nothing to report.
        let (loaded, _) = load(&s, &[scope(3, 5)]).await;
        assert!(loaded.failures.is_empty(), "{:?}", loaded.failures);
    }
}
