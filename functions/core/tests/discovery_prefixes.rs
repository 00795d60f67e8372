//! Discovery at the storage seam: a store that records every listing. For each documented form of a
//! source (bucket root, custom prefix, AWSLogs/, an organization, an account of it, a region of it,
//! an account trail without an organization), no listing names a prefix above the source's prefix
//! (the levels it fixes are built, not listed), so a role whose `s3:prefix` condition is the source
//! prefix suffices; and the day prefixes found are exactly those under the source.

use std::collections::BTreeSet;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use trailcopy::discover::{ROOT_SEARCH_DEPTH, account_regions, day_groups, source_account_regions, trail_roots};
use trailcopy::error::{CopyError, Result};
use trailcopy::range::Window;
use trailcopy::storage::{Listing, ObjectHead, ObjectInfo, ObjectStore, PutCondition};

/// A bucket of keys that answers delimiter and range listings and records their prefixes.
struct RecordingBucket {
    keys: BTreeSet<String>,
    lists: Mutex<Vec<String>>,
    ranges: Mutex<Vec<String>>,
}

/// The day prefixes discovery finds: the trail roots, their account-regions, then each one's days
/// in the window.
async fn discover_day_prefixes(store: &RecordingBucket, source_prefix: &str, window: &Window) -> Result<Vec<String>> {
    let (first, last) = window.day_span();
    let mut prefixes = BTreeSet::new();
    for unit in source_account_regions(store, source_prefix).await? {
        for g in day_groups(store, &unit, first, last).await? {
            prefixes.extend(g.prefixes);
        }
    }
    Ok(prefixes.into_iter().collect())
}

#[async_trait]
impl ObjectStore for RecordingBucket {
    async fn list_dir(&self, prefix: &str) -> Result<Listing> {
        self.lists.lock().unwrap().push(prefix.to_string());
        let mut listing = Listing::default();
        let mut dirs = BTreeSet::new();
        for k in self.keys.iter().filter(|k| k.starts_with(prefix)) {
            match k[prefix.len()..].find('/') {
                Some(i) => {
                    dirs.insert(format!("{prefix}{}", &k[prefix.len()..=prefix.len() + i]));
                }
                None => listing.objects.push(ObjectInfo { key: k.clone(), size: 1, storage_class: None }),
            }
        }
        listing.dirs = dirs.into_iter().collect();
        Ok(listing)
    }
    async fn list_range(&self, prefix: &str, start_after: &str, end_before: &str) -> Result<Vec<ObjectInfo>> {
        self.ranges.lock().unwrap().push(prefix.to_string());
        Ok(self
            .keys
            .iter()
            .filter(|k| k.starts_with(prefix) && k.as_str() > start_after && k.as_str() < end_before)
            .map(|k| ObjectInfo { key: k.clone(), size: 1, storage_class: None })
            .collect())
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        Err(CopyError::NotFound { location: key.into() })
    }
    async fn get_versioned(&self, _key: &str) -> Result<Option<(Bytes, String)>> {
        Ok(None)
    }
    async fn put(&self, _key: &str, _body: Bytes) -> Result<()> {
        unreachable!("discovery only lists")
    }
    async fn put_if(&self, _key: &str, _body: Bytes, _condition: &PutCondition) -> Result<bool> {
        unreachable!("discovery only lists")
    }
    async fn delete(&self, _key: &str) -> Result<()> {
        unreachable!("discovery only lists")
    }
    async fn head(&self, key: &str) -> Result<ObjectHead> {
        Err(CopyError::NotFound { location: key.into() })
    }
    async fn restore(&self, _key: &str, _tier: &str, _days: Option<i32>) -> Result<()> {
        unreachable!("discovery only lists")
    }
    fn location(&self, key: &str) -> String {
        format!("s3://trail/{key}")
    }
}

const ORG: &str = "o-abc123defg";
const A: &str = "111122223333";
const B: &str = "444455556666";

/// Under `root`: an organization trail of accounts A and B and an account trail of A, two regions,
/// two days in range and one outside, plus digest and other-service folders that must not be read.
fn bucket(root: &str) -> RecordingBucket {
    let trails =
        [format!("{root}AWSLogs/{ORG}/{A}/"), format!("{root}AWSLogs/{ORG}/{B}/"), format!("{root}AWSLogs/{A}/")];
    bucket_of(&trails)
}

fn bucket_of(trails: &[String]) -> RecordingBucket {
    let mut keys = BTreeSet::new();
    for trail in trails {
        for region in ["us-east-1", "eu-west-1"] {
            for day in ["2026/11/01", "2026/11/02", "2026/10/15"] {
                keys.insert(format!("{trail}CloudTrail/{region}/{day}/f.json.gz"));
            }
            keys.insert(format!("{trail}CloudTrail-Digest/{region}/2026/11/01/d.json.gz"));
        }
        keys.insert(format!("{trail}elasticloadbalancing/us-east-1/2026/11/01/x.log.gz"));
    }
    RecordingBucket { keys, lists: Mutex::new(Vec::new()), ranges: Mutex::new(Vec::new()) }
}

fn window() -> Window {
    Window {
        start: "2026-11-01T00:00:00Z".parse().unwrap(),
        end: "2026-11-03T00:00:00Z".parse().unwrap(),
        retention_cutoff: "2020-01-01T00:00:00Z".parse().unwrap(),
    }
}

/// (the source prefix, the bucket's root above AWSLogs/, the trail prefixes the days must come from)
fn cases() -> Vec<(String, &'static str, Vec<String>)> {
    let org_a = format!("AWSLogs/{ORG}/{A}/");
    let org_b = format!("AWSLogs/{ORG}/{B}/");
    let acct_a = format!("AWSLogs/{A}/");
    let all = |root: &str| vec![format!("{root}{org_a}"), format!("{root}{org_b}"), format!("{root}{acct_a}")];
    vec![
        (String::new(), "", all("")),
        ("trails/prod/".into(), "trails/prod/", all("trails/prod/")),
        ("AWSLogs/".into(), "", all("")),
        (format!("AWSLogs/{ORG}/"), "", vec![org_a.clone(), org_b.clone()]),
        (org_a.clone(), "", vec![org_a.clone()]),
        (format!("{org_a}CloudTrail/"), "", vec![org_a.clone()]),
        (format!("{org_a}CloudTrail/eu-west-1/"), "", vec![format!("{org_a}CloudTrail/eu-west-1/")]),
        (format!("{org_a}CloudTrail/eu-west-1/2026/11/"), "", vec![format!("{org_a}CloudTrail/eu-west-1/2026/11/")]),
        (acct_a.clone(), "", vec![acct_a.clone()]),
        (format!("trails/prod/{org_b}"), "trails/prod/", vec![format!("trails/prod/{org_b}")]),
    ]
}

#[tokio::test]
async fn a_narrowed_source_never_lists_above_its_prefix() {
    for (source_prefix, root, trails) in cases() {
        assert!(trails.iter().all(|t| t.starts_with(root)));
        let store = bucket(root);
        let found = discover_day_prefixes(&store, &source_prefix, &window()).await.unwrap();
        let mut lists = store.lists.lock().unwrap().clone();
        lists.extend(store.ranges.lock().unwrap().iter().cloned());
        let above: Vec<&String> = lists.iter().filter(|p| !p.starts_with(&source_prefix)).collect();
        assert!(above.is_empty(), "source `{source_prefix}` listed above its prefix: {above:?}");
        assert!(!found.is_empty(), "source `{source_prefix}` found nothing");
        for day in &found {
            assert!(day.starts_with(&source_prefix), "`{source_prefix}` found {day}");
            assert!(
                trails.iter().any(|t| day.starts_with(t.as_str())),
                "`{source_prefix}`: {day} is not under {trails:?}"
            );
            assert!(day.contains("/CloudTrail/") && !day.contains("2026/10/15"), "`{source_prefix}` found {day}");
        }
        // Every day in range under the expected trails, none missed.
        let expected: BTreeSet<String> = store
            .keys
            .iter()
            .filter(|k| k.starts_with(&source_prefix) && k.contains("/CloudTrail/") && !k.contains("2026/10/15"))
            .map(|k| k.rsplit_once('/').unwrap().0.to_string() + "/")
            .collect();
        assert_eq!(found.iter().cloned().collect::<BTreeSet<_>>(), expected, "source `{source_prefix}`");
    }
}

#[tokio::test]
async fn fixed_levels_cost_no_listing() {
    // Narrowed to a region: no delimiter listing at all (every level down to the region is fixed),
    // and one range listing of the region's days.
    let source_prefix = format!("AWSLogs/{ORG}/{A}/CloudTrail/us-east-1/");
    let store = bucket("");
    discover_day_prefixes(&store, &source_prefix, &window()).await.unwrap();
    let lists = store.lists.lock().unwrap().clone();
    assert!(lists.is_empty(), "{lists:?}");
    let ranges = store.ranges.lock().unwrap().clone();
    assert_eq!(ranges, vec![source_prefix.clone()]);
    // Narrowed to an organization's account: the regions are listed, nothing above the account.
    let source_prefix = format!("AWSLogs/{ORG}/{A}/");
    let store = bucket("");
    discover_day_prefixes(&store, &source_prefix, &window()).await.unwrap();
    let lists = store.lists.lock().unwrap().clone();
    assert_eq!(lists, vec![format!("{source_prefix}CloudTrail/")]);
    assert_eq!(store.ranges.lock().unwrap().len(), 2, "one range listing per region");
}

#[tokio::test]
async fn a_source_naming_something_else_after_awslogs_is_refused() {
    let store = bucket("");
    for bad in ["AWSLogs/not-an-account/", "AWSLogs/12345/"] {
        match discover_day_prefixes(&store, bad, &window()).await {
            Err(CopyError::InvalidRequest { field: "source", reason }) => {
                assert!(reason.contains("account"), "{reason}")
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    match discover_day_prefixes(&store, &format!("AWSLogs/{A}/CloudTrail-Digest/"), &window()).await {
        Err(CopyError::InvalidRequest { field: "source", .. }) => {}
        other => panic!("digest folder: {other:?}"),
    }
    assert!(store.lists.lock().unwrap().is_empty(), "refused before listing");
    assert!(store.ranges.lock().unwrap().is_empty(), "refused before listing");
}

/// Two trails under different prefixes of one bucket (an organization trail at `AWSLogs/` and an
/// account trail at `acct/trail/AWSLogs/`): a source above both finds both, and account A's
/// account-regions are one unit each, with a folder per trail, so their days share a work item.
#[tokio::test]
async fn trails_under_different_prefixes_are_one_account_region() {
    let acct_trail = format!("acct/trail/AWSLogs/{A}/");
    let store = bucket_of(&[format!("AWSLogs/{ORG}/{A}/"), format!("AWSLogs/{ORG}/{B}/"), acct_trail.clone()]);
    let roots = trail_roots(&store, "").await.unwrap();
    let found: Vec<&str> = roots.iter().map(|r| r.awslogs.as_str()).collect();
    assert_eq!(found, ["AWSLogs/", "acct/trail/AWSLogs/"]);
    let units = account_regions(&store, &roots).await.unwrap();
    assert_eq!(units.len(), 4, "2 accounts x 2 regions: {units:?}");
    for u in &units {
        let want = if u.account == A { 2 } else { 1 };
        assert_eq!(u.roots.len(), want, "{u:?}");
    }
    let (first, last) = window().day_span();
    let a_east = units.iter().find(|u| u.account == A && u.region == "us-east-1").unwrap();
    let groups = day_groups(&store, a_east, first, last).await.unwrap();
    assert_eq!(groups.len(), 2);
    assert!(groups.iter().all(|g| g.prefixes.len() == 2 && g.prefixes[1].starts_with(&acct_trail)), "{groups:?}");
    // Listed at most at the bucket root and below it, never inside either trail's day folders.
    let lists = store.lists.lock().unwrap().clone();
    assert!(lists.iter().all(|p| !p.contains("/2026/")), "{lists:?}");
}

/// The search goes ROOT_SEARCH_DEPTH folders deep and no deeper; a source prefix inside AWSLogs/
/// is not searched at all.
#[tokio::test]
async fn the_root_search_is_bounded() {
    let deep = |n: usize| (0..n).map(|i| format!("d{i}/")).collect::<String>();
    let at = format!("{}AWSLogs/{A}/", deep(ROOT_SEARCH_DEPTH));
    let too_deep = format!("{}AWSLogs/{B}/", deep(ROOT_SEARCH_DEPTH + 1));
    let store = bucket_of(&[at, too_deep]);
    let roots = trail_roots(&store, "").await.unwrap();
    let found: Vec<&str> = roots.iter().map(|r| r.awslogs.as_str()).collect();
    assert_eq!(found, [format!("{}AWSLogs/", deep(ROOT_SEARCH_DEPTH))]);
    let store = bucket("");
    let roots = trail_roots(&store, &format!("AWSLogs/{ORG}/")).await.unwrap();
    assert_eq!(roots.len(), 1);
    assert!(store.lists.lock().unwrap().is_empty());
}

/// A bucket with more folders than the search may list is refused with a message that says how to
/// narrow the source, instead of being walked.
#[tokio::test]
async fn a_bucket_of_many_other_folders_asks_for_a_narrower_source() {
    let trails: Vec<String> = (0..1_001).map(|i| format!("data{i:04}/x/AWSLogs/{A}/")).collect();
    let store = bucket_of(&trails);
    match trail_roots(&store, "").await {
        Err(CopyError::InvalidRequest { field: "source", reason }) => {
            assert!(reason.contains("folder or prefix that holds a trail's AWSLogs/"), "{reason}")
        }
        other => panic!("{:?}", other.map(|r| r.len())),
    }
}
