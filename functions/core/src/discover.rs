//! Discovery: the trails' `AWSLogs/` roots under a source (several trails may deliver into one
//! bucket under different key prefixes), their account-regions by delimiter listing (`AWSLogs/`
//! → `[o-org/]` → accounts → `CloudTrail/` → regions; levels a narrowed source fixes are built,
//! never listed), then per account-region one un-delimited listing of the range's day folders,
//! with every trail's copy of an account-region-day in one group.
//!
//! A source with few accounts lists ahead: the first page of the day listing of every Region
//! CloudTrail delivers from goes out with the regions listing ([`source_account_regions_ahead`]),
//! so the first files are known one round trip sooner; the pages of Regions the listing does not
//! return are dropped (errors too). Same work items, more LISTs (see [`LIST_AHEAD_ACCOUNTS`]).

use std::collections::{BTreeMap, HashMap};

use futures::{StreamExt, TryStreamExt};
use jiff::civil::Date;

use crate::error::{CopyError, Result};
use crate::layout::{self, TrailRoot};
use crate::storage::{ObjectInfo, ObjectStore, RangePage};

/// Delimiter listings in flight while discovering account-regions.
const LIST_CONCURRENCY: usize = 16;

/// Regions CloudTrail delivers from in the commercial partition
/// (https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-supported-regions.html;
/// https://docs.aws.amazon.com/global-infrastructure/latest/regions/aws-regions.html): the day
/// listings started before the regions listing returns. A Region missing here (a new one, another
/// partition) is listed after the regions listing, as without the list.
pub const CLOUDTRAIL_REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-south-1",
    "ap-south-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
];

/// A trail root with at most this many account folders lists ahead: up to
/// `LIST_AHEAD_ACCOUNTS × CLOUDTRAIL_REGIONS.len()` (8 × 34) one-page LISTs beside the regions
/// listings, of which those for Regions an account has would be made anyway. The price of the
/// others: ~27 LISTs per account, $0.005 per 1,000 (S3 Standard in us-east-1,
/// https://aws.amazon.com/s3/pricing/), for one round trip less before the first GET. A big
/// organization's discovery takes many rounds anyway, and is not listed ahead.
pub const LIST_AHEAD_ACCOUNTS: usize = 8;

/// How many folders deep below a source the search for `AWSLogs/` goes: a trail's S3 key prefix
/// (`corp/trails/AWSLogs/`) is usually one or two folders.
pub const ROOT_SEARCH_DEPTH: usize = 4;

/// Folders the search may list before it gives up and asks for a narrower source: a bucket that
/// holds much else besides trails is not walked.
const ROOT_SEARCH_LISTINGS: usize = 1_000;

/// The `AWSLogs/` roots under a source, sorted. A source prefix inside `AWSLogs/` is its own root
/// (with its narrowing). Otherwise the folders below the source are searched, up to
/// [`ROOT_SEARCH_DEPTH`] deep, for every `AWSLogs/` (never descending into one): an organization
/// trail at `AWSLogs/` and an account trail at `acct/AWSLogs/` of the same bucket are both read,
/// so an event both deliver is stored once.
pub async fn trail_roots(source: &dyn ObjectStore, source_prefix: &str) -> Result<Vec<TrailRoot>> {
    if layout::has_awslogs(source_prefix) {
        return Ok(vec![layout::trail_root(source_prefix)]);
    }
    let (mut roots, mut frontier, mut listed) = (Vec::new(), vec![source_prefix.to_string()], 0);
    for depth in 0..=ROOT_SEARCH_DEPTH {
        if frontier.is_empty() {
            break;
        }
        listed += frontier.len();
        if listed > ROOT_SEARCH_LISTINGS {
            return Err(CopyError::invalid(
                "source",
                format!(
                    "searching for AWSLogs/ folders listed {ROOT_SEARCH_LISTINGS} folders without finishing: give \
                     the folder or prefix that holds a trail's AWSLogs/ (or a folder inside it)"
                ),
            ));
        }
        let listings: Vec<Vec<String>> = futures::stream::iter(frontier)
            .map(|prefix| async move { source.list_dir(&prefix).await.map(|l| l.dirs) })
            .buffered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        let (found, below): (Vec<String>, Vec<String>) =
            listings.into_iter().flatten().partition(|d| layout::last_segment(d) == "AWSLogs");
        roots.extend(found.into_iter().map(|awslogs| TrailRoot { awslogs, narrowing: Vec::new() }));
        frontier = if depth < ROOT_SEARCH_DEPTH { below } else { Vec::new() };
    }
    roots.sort_by(|a, b| a.awslogs.cmp(&b.awslogs));
    Ok(roots)
}

/// One account and region, with the `.../CloudTrail/<region>/` folder of every trail that
/// delivers it (an organization trail and an account trail both count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRegion {
    pub account: String,
    pub region: String,
    /// `(region folder, listing prefix)`: the listing prefix adds what a narrowed source fixes
    /// below the region (`YYYY/`, `YYYY/MM/`, `YYYY/MM/DD/`).
    pub roots: Vec<(String, String)>,
}

/// The files of one account-region-day from every trail: they always share a work item, so
/// the item's dedup (by eventID) catches a cross-trail redelivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayGroup {
    pub date: Date,
    /// The day prefixes (one per trail that has the day).
    pub prefixes: Vec<String>,
    pub files: Vec<ObjectInfo>,
}

/// A narrowing segment at `pos` must match exactly; past the narrowing anything goes.
fn fixed(root: &TrailRoot, pos: usize) -> Option<&str> {
    root.narrowing.get(pos).map(String::as_str)
}

/// The sub-folders of each prefix that `keep` accepts, or the one the narrowing fixes (built,
/// not listed: a narrowed source is never listed above its prefix).
async fn level(
    source: &dyn ObjectStore,
    root: &TrailRoot,
    prefixes: Vec<(String, usize)>,
    keep: impl Fn(&str) -> bool + Copy,
) -> Result<Vec<(String, usize)>> {
    let lists: Vec<Vec<(String, usize)>> = futures::stream::iter(prefixes)
        .map(|(prefix, pos)| async move {
            if let Some(seg) = fixed(root, pos) {
                return Ok::<_, CopyError>(if keep(seg) { vec![(format!("{prefix}{seg}/"), pos + 1)] } else { vec![] });
            }
            let listing = source.list_dir(&prefix).await?;
            Ok(listing.dirs.into_iter().filter(|d| keep(layout::last_segment(d))).map(|d| (d, pos + 1)).collect())
        })
        .buffered(LIST_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(lists.into_iter().flatten().collect())
}

/// Every account-region under the trail roots, sorted by (account, region); an account-region
/// that several roots deliver is one unit with a folder per trail.
pub async fn account_regions(source: &dyn ObjectStore, roots: &[TrailRoot]) -> Result<Vec<AccountRegion>> {
    let per_root = futures::future::try_join_all(roots.iter().map(|r| root_account_regions(source, r, None))).await?;
    Ok(merge(per_root).0)
}

/// Every account-region of every trail under a source prefix ([`trail_roots`], then
/// [`account_regions`]). The usual root, `<source>AWSLogs/`, is walked while the search runs, so
/// a source holding one trail costs no round trip more than before the search existed.
pub async fn source_account_regions(source: &dyn ObjectStore, source_prefix: &str) -> Result<Vec<AccountRegion>> {
    Ok(discover(source, source_prefix, None).await?.0)
}

/// [`source_account_regions`], listing the days `[first, last]` ahead when a root holds few
/// accounts (see [`LIST_AHEAD_ACCOUNTS`]): hand each unit's pages to [`day_groups_listed`]. The
/// units are the same as without listing ahead, and so are the day groups.
pub async fn source_account_regions_ahead(
    source: &dyn ObjectStore,
    source_prefix: &str,
    first: Date,
    last: Date,
) -> Result<(Vec<AccountRegion>, EarlyPages)> {
    discover(source, source_prefix, Some((first, last))).await
}

async fn discover(
    source: &dyn ObjectStore,
    source_prefix: &str,
    ahead: Option<(Date, Date)>,
) -> Result<(Vec<AccountRegion>, EarlyPages)> {
    if layout::has_awslogs(source_prefix) {
        return Ok(merge(vec![root_account_regions(source, &layout::trail_root(source_prefix), ahead).await?]));
    }
    let usual = layout::trail_root(source_prefix);
    let (roots, walked) =
        futures::join!(trail_roots(source, source_prefix), root_account_regions(source, &usual, ahead));
    let roots = roots?;
    let others = roots.iter().filter(|r| r.awslogs != usual.awslogs);
    let mut others =
        futures::future::try_join_all(others.map(|r| root_account_regions(source, r, ahead))).await?.into_iter();
    // In the roots' order (folder order within a unit stays deterministic); the speculative walk
    // counts only if the search found that root (its error too).
    let (mut walked, mut per_root) = (Some(walked), Vec::with_capacity(roots.len()));
    for r in &roots {
        let folders = if r.awslogs == usual.awslogs { walked.take().transpose()? } else { others.next() };
        per_root.extend(folders);
    }
    Ok(merge(per_root))
}

fn merge(per_root: Vec<(Folders, EarlyPages)>) -> (Vec<AccountRegion>, EarlyPages) {
    let (mut units, mut pages) = (Folders::new(), EarlyPages::default());
    for (folders, early) in per_root {
        for (key, folders) in folders {
            units.entry(key).or_default().extend(folders);
        }
        pages.0.extend(early.0);
    }
    (units.into_iter().map(|((account, region), roots)| AccountRegion { account, region, roots }).collect(), pages)
}

/// First pages of day listings made ahead, by listing prefix.
#[derive(Debug, Default)]
pub struct EarlyPages(HashMap<String, RangePage>);

impl EarlyPages {
    /// The pages listed ahead for `unit`'s folders (in `unit.roots` order), taken out.
    pub fn take(&mut self, unit: &AccountRegion) -> Vec<Option<RangePage>> {
        unit.roots.iter().map(|(_, list_prefix)| self.0.remove(list_prefix)).collect()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

type Folders = BTreeMap<(String, String), Vec<(String, String)>>;

/// The account-regions of one `AWSLogs/` root, each with its region folders.
async fn root_account_regions(
    source: &dyn ObjectStore,
    root: &TrailRoot,
    ahead: Option<(Date, Date)>,
) -> Result<(Folders, EarlyPages)> {
    if let Some(first) = root.narrowing.first()
        && !layout::is_org_id(first)
        && !layout::is_account_id(first)
    {
        return Err(CopyError::invalid(
            "source",
            format!("`{first}` after AWSLogs/ is neither an organization id (o-...) nor a 12-digit account id"),
        ));
    }
    let top =
        level(source, root, vec![(root.awslogs.clone(), 0)], |s| layout::is_org_id(s) || layout::is_account_id(s))
            .await?;
    let (orgs, mut accounts): (Vec<_>, Vec<_>) =
        top.into_iter().partition(|(p, _)| layout::is_org_id(layout::last_segment(p)));
    accounts.extend(level(source, root, orgs, layout::is_account_id).await?);
    // Only CloudTrail/ (not CloudTrail-Digest, -Insight, other services).
    let mut trails = Vec::new();
    for (acct, pos) in accounts {
        if let Some(n) = fixed(root, pos)
            && n != "CloudTrail"
        {
            return Err(CopyError::invalid(
                "source",
                format!("`{n}` folders are not read: only CloudTrail/ holds trail events"),
            ));
        }
        trails.push((format!("{acct}CloudTrail/"), pos + 1));
    }
    let (regions, early) = match ahead.filter(|_| trails.len() <= LIST_AHEAD_ACCOUNTS) {
        Some(days) => regions_listing_ahead(source, root, trails, days).await?,
        None => (level(source, root, trails, |_| true).await?, EarlyPages::default()),
    };
    let mut units = Folders::new();
    for (region_dir, pos) in regions {
        // .../<account>/CloudTrail/<region>/
        let segs: Vec<&str> = region_dir.trim_end_matches('/').rsplit('/').take(3).collect();
        let [region, _, account] = segs.as_slice() else { continue };
        let below: String = root.narrowing.iter().skip(pos).map(|s| format!("{s}/")).collect();
        let list_prefix = format!("{region_dir}{below}");
        units.entry((account.to_string(), region.to_string())).or_default().push((region_dir, list_prefix));
    }
    Ok((units, early))
}

/// The regions level ([`level`] keeping every folder), with the first page of the day listing of
/// each [`CLOUDTRAIL_REGIONS`] folder started beside each `<account>/CloudTrail/` listing. Kept:
/// the pages of folders the listing returned (a page that failed is dropped: the plain listing
/// makes that request again and reports its own error). The rest is dropped, unfinished ones
/// cancelled. Listed only where no narrowing fixes the region: there the listing prefix is the
/// region folder.
async fn regions_listing_ahead(
    source: &dyn ObjectStore,
    root: &TrailRoot,
    trails: Vec<(String, usize)>,
    (first, last): (Date, Date),
) -> Result<(Vec<(String, usize)>, EarlyPages)> {
    let lists: Vec<(Vec<(String, usize)>, EarlyPages)> = futures::stream::iter(trails)
        .map(|(prefix, pos)| async move {
            if fixed(root, pos).is_some() {
                let built = level(source, root, vec![(prefix, pos)], |_| true).await?;
                return Ok::<_, CopyError>((built, EarlyPages::default()));
            }
            // The regions listing goes out first: it is the one the rest waits for.
            let listing = source.list_dir(&prefix);
            let mut listing = std::pin::pin!(listing);
            let first_poll = futures::poll!(listing.as_mut());
            let mut ahead: futures::stream::FuturesUnordered<_> = CLOUDTRAIL_REGIONS
                .iter()
                .map(|r| {
                    let dir = format!("{prefix}{r}/");
                    async move {
                        let (start_after, end_before) = day_range(&dir, first, last);
                        let page = source.list_range_first(&dir, &start_after, &end_before).await;
                        (dir, page)
                    }
                })
                .collect();
            let mut done = HashMap::new();
            let regions = match first_poll {
                std::task::Poll::Ready(l) => l?.dirs,
                std::task::Poll::Pending => loop {
                    tokio::select! {
                        biased;
                        l = &mut listing => break l?.dirs,
                        Some((dir, page)) = ahead.next() => { done.insert(dir, page); }
                    }
                },
            };
            let mut wanted: Vec<&String> = regions.iter().filter(|d| is_listed_ahead(&prefix, d)).collect();
            while wanted.iter().any(|d| !done.contains_key(*d)) {
                let Some((dir, page)) = ahead.next().await else { break };
                done.insert(dir, page);
            }
            wanted.retain(|d| done.get(*d).is_some_and(|p| p.is_ok()));
            let pages =
                EarlyPages(wanted.into_iter().filter_map(|d| Some((d.clone(), done.remove(d)?.ok()?))).collect());
            Ok((regions.into_iter().map(|d| (d, pos + 1)).collect(), pages))
        })
        .buffered(LIST_CONCURRENCY)
        .try_collect()
        .await?;
    let mut early = EarlyPages::default();
    let mut regions = Vec::new();
    for (dirs, pages) in lists {
        regions.extend(dirs);
        early.0.extend(pages.0);
    }
    Ok((regions, early))
}

/// Whether `dir` (below `<account>/CloudTrail/` = `prefix`) is one of [`CLOUDTRAIL_REGIONS`].
fn is_listed_ahead(prefix: &str, dir: &str) -> bool {
    dir.strip_prefix(prefix).and_then(|r| r.strip_suffix('/')).is_some_and(|r| CLOUDTRAIL_REGIONS.contains(&r))
}

/// The `(start_after, end_before)` of the day listing of `[first, last]` below a region folder:
/// from just before the first day's folder to the day after the last.
fn day_range(region_dir: &str, first: Date, last: Date) -> (String, String) {
    let after = last.tomorrow().unwrap_or(last);
    (format!("{region_dir}{}", day_key(first)), format!("{region_dir}{}", day_key(after)))
}

/// `YYYY/MM/DD` of a day, as a key fragment (fixed width: key order is date order).
fn day_key(d: Date) -> String {
    format!("{:04}/{:02}/{:02}", d.year(), d.month(), d.day())
}

/// The day folder a key lies directly in, below its region folder: `YYYY/MM/DD/<name>`.
fn day_of_key(region_dir: &str, key: &str) -> Option<Date> {
    let rest = key.strip_prefix(region_dir)?;
    let mut parts = rest.splitn(4, '/');
    let (y, m, d, name) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if name.is_empty() || name.contains('/') || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    Date::new(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?).ok()
}

/// The day groups of one account-region within `[first, last]`: per trail one un-delimited
/// listing from just before the first day's folder to the day after the last.
pub async fn day_groups(
    source: &dyn ObjectStore,
    unit: &AccountRegion,
    first: Date,
    last: Date,
) -> Result<Vec<DayGroup>> {
    day_groups_listed(source, unit, first, last, Vec::new()).await
}

/// [`day_groups`], from the first pages listed ahead for the unit's folders ([`EarlyPages::take`]):
/// a folder with a page lists only the rest, if any, after the page's last key.
pub async fn day_groups_listed(
    source: &dyn ObjectStore,
    unit: &AccountRegion,
    first: Date,
    last: Date,
    mut early: Vec<Option<RangePage>>,
) -> Result<Vec<DayGroup>> {
    let mut by_day: BTreeMap<Date, DayGroup> = BTreeMap::new();
    for (i, (region_dir, list_prefix)) in unit.roots.iter().enumerate() {
        let (start_after, end_before) = day_range(region_dir, first, last);
        let objects = match early.get_mut(i).and_then(Option::take) {
            Some(page) if page.complete => page.objects,
            Some(mut page) => {
                let from = page.objects.last().map_or(start_after, |o| o.key.clone());
                page.objects.extend(source.list_range(list_prefix, &from, &end_before).await?);
                page.objects
            }
            None => source.list_range(list_prefix, &start_after, &end_before).await?,
        };
        for o in objects {
            let Some(date) = day_of_key(region_dir, &o.key).filter(|d| (first..=last).contains(d)) else { continue };
            let g = by_day.entry(date).or_insert_with(|| DayGroup { date, prefixes: Vec::new(), files: Vec::new() });
            let prefix = &o.key[..o.key.rfind('/').map_or(0, |i| i + 1)];
            if g.prefixes.last().map(String::as_str) != Some(prefix) {
                g.prefixes.push(prefix.to_string());
            }
            g.files.push(o);
        }
    }
    Ok(by_day.into_values().collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::storage::{Listing, ObjectHead, PutCondition};

    /// An in-memory bucket that records every listing it answers; with `round_trip`, each request
    /// takes that long and `rounds` tells in which round trip it started (the round trip is long
    /// against the test's own work); `page` keys per [`ObjectStore::list_range_first`] page (0: all).
    #[derive(Default)]
    struct Recorder {
        keys: Vec<String>,
        dirs_listed: Mutex<Vec<String>>,
        ranges_listed: Mutex<Vec<(String, String, String)>>,
        round_trip: Option<(std::time::Instant, std::time::Duration)>,
        rounds: Mutex<Vec<(u128, &'static str, String)>>,
        page: usize,
    }

    impl Recorder {
        async fn request(&self, kind: &'static str, prefix: &str) {
            if let Some((t0, rt)) = self.round_trip {
                self.rounds.lock().unwrap().push((t0.elapsed().as_millis() / rt.as_millis(), kind, prefix.to_string()));
                tokio::time::sleep(rt).await;
            }
        }

        fn in_range(&self, prefix: &str, start_after: &str, end_before: &str) -> Vec<ObjectInfo> {
            self.keys
                .iter()
                .filter(|k| k.starts_with(prefix) && k.as_str() > start_after && k.as_str() < end_before)
                .map(|k| ObjectInfo { key: k.clone(), size: 1, storage_class: None })
                .collect()
        }

        /// The round trips of requests of `kind` whose prefix passes `pick`.
        fn rounds_of(&self, kind: &str, pick: impl Fn(&str) -> bool) -> Vec<u128> {
            let rounds = self.rounds.lock().unwrap();
            rounds.iter().filter(|(_, k, p)| *k == kind && pick(p)).map(|(r, _, _)| *r).collect()
        }
    }

    #[async_trait]
    impl ObjectStore for Recorder {
        async fn list_dir(&self, prefix: &str) -> Result<Listing> {
            self.request("dir", prefix).await;
            self.dirs_listed.lock().unwrap().push(prefix.to_string());
            let mut l = Listing::default();
            for k in self.keys.iter().filter(|k| k.starts_with(prefix)) {
                match k[prefix.len()..].split_once('/') {
                    Some((d, _)) => {
                        let d = format!("{prefix}{d}/");
                        if !l.dirs.contains(&d) {
                            l.dirs.push(d);
                        }
                    }
                    None => l.objects.push(ObjectInfo { key: k.clone(), size: 1, storage_class: None }),
                }
            }
            Ok(l)
        }
        async fn list_range(&self, prefix: &str, start_after: &str, end_before: &str) -> Result<Vec<ObjectInfo>> {
            self.request("range", prefix).await;
            self.ranges_listed.lock().unwrap().push((prefix.into(), start_after.into(), end_before.into()));
            Ok(self.in_range(prefix, start_after, end_before))
        }
        async fn list_range_first(&self, prefix: &str, start_after: &str, end_before: &str) -> Result<RangePage> {
            self.request("first", prefix).await;
            let mut objects = self.in_range(prefix, start_after, end_before);
            let complete = self.page == 0 || objects.len() <= self.page;
            objects.truncate(if complete { objects.len() } else { self.page });
            Ok(RangePage { objects, complete })
        }
        async fn get(&self, key: &str) -> Result<Bytes> {
            Err(CopyError::NotFound { location: key.into() })
        }
        async fn get_versioned(&self, _key: &str) -> Result<Option<(Bytes, String)>> {
            Ok(None)
        }
        async fn put(&self, _key: &str, _body: Bytes) -> Result<()> {
            unreachable!()
        }
        async fn put_if(&self, _key: &str, _body: Bytes, _c: &PutCondition) -> Result<bool> {
            unreachable!()
        }
        async fn delete(&self, _key: &str) -> Result<()> {
            unreachable!()
        }
        async fn head(&self, _key: &str) -> Result<ObjectHead> {
            Ok(ObjectHead::default())
        }
        async fn restore(&self, _key: &str, _tier: &str, _days: Option<i32>) -> Result<()> {
            Ok(())
        }
        fn location(&self, key: &str) -> String {
            key.into()
        }
    }

    const ORG: &str = "AWSLogs/o-abc123/111122223333/CloudTrail/us-east-1/";
    const ACCT: &str = "AWSLogs/111122223333/CloudTrail/us-east-1/";

    fn bucket() -> Recorder {
        let mut keys = Vec::new();
        for root in [ORG, ACCT, "AWSLogs/o-abc123/444455556666/CloudTrail/eu-west-1/"] {
            for day in 1..=9 {
                keys.push(format!("{root}2024/03/{day:02}/x_CloudTrail_r_202403{day:02}T1000Z_a.json.gz"));
            }
        }
        keys.push("AWSLogs/o-abc123/111122223333/CloudTrail-Digest/us-east-1/2024/03/02/d.json.gz".into());
        keys.sort();
        Recorder { keys, ..Default::default() }
    }

    #[tokio::test]
    async fn one_ranged_listing_per_trail_and_account_region_and_trails_share_groups() {
        let b = bucket();
        let units = account_regions(&b, &trail_roots(&b, "").await.unwrap()).await.unwrap();
        assert_eq!(units.len(), 2);
        assert_eq!(units[0].account, "111122223333");
        assert_eq!(units[0].roots.len(), 2, "organization and account trail: one account-region");
        let groups = day_groups(&b, &units[0], Date::constant(2024, 3, 3), Date::constant(2024, 3, 5)).await.unwrap();
        assert_eq!(groups.iter().map(|g| g.date.day()).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert!(groups.iter().all(|g| g.prefixes.len() == 2 && g.files.len() == 2), "{groups:?}");
        let ranges = b.ranges_listed.lock().unwrap().clone();
        assert_eq!(ranges.len(), 2, "{ranges:?}");
        assert!(ranges.contains(&(ORG.into(), format!("{ORG}2024/03/03"), format!("{ORG}2024/03/06"))), "{ranges:?}");
        // Delimiter listings only down to the regions: never a year, month or day folder.
        let dirs = b.dirs_listed.lock().unwrap().clone();
        assert!(dirs.iter().all(|d| !d.contains("/2024/")), "{dirs:?}");
    }

    #[tokio::test]
    async fn a_narrowed_source_builds_its_fixed_levels() {
        let b = bucket();
        let root = crate::layout::trail_root("AWSLogs/o-abc123/111122223333/CloudTrail/us-east-1/2024/03/");
        let units = account_regions(&b, std::slice::from_ref(&root)).await.unwrap();
        assert_eq!(units.len(), 1);
        assert_eq!(units[0].roots, vec![(ORG.to_string(), format!("{ORG}2024/03/"))]);
        assert!(b.dirs_listed.lock().unwrap().is_empty(), "every level is fixed: nothing listed");
        let groups = day_groups(&b, &units[0], Date::constant(2024, 3, 8), Date::constant(2024, 4, 2)).await.unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(b.ranges_listed.lock().unwrap()[0].0, format!("{ORG}2024/03/"), "listed below the narrowing only");
    }

    /// Every account-region and its day groups, as the plan packs them.
    async fn plain(b: &Recorder, first: Date, last: Date) -> Vec<(AccountRegion, Vec<DayGroup>)> {
        let mut out = Vec::new();
        for u in source_account_regions(b, "").await.unwrap() {
            let groups = day_groups(b, &u, first, last).await.unwrap();
            out.push((u, groups));
        }
        out
    }

    #[tokio::test]
    async fn listing_ahead_saves_a_round_trip_and_changes_nothing() {
        let mut keys = bucket().keys;
        // A Region CloudTrail's list lacks (listed after the regions listing), and a second
        // listed one; ap-south-1 (in the list) exists nowhere.
        for region in ["xx-test-9", "eu-west-1"] {
            for day in 1..=9 {
                keys.push(format!("AWSLogs/111122223333/CloudTrail/{region}/2024/03/{day:02}/y_{day}.json.gz"));
            }
        }
        keys.sort();
        let rt = std::time::Duration::from_millis(150);
        let recorder = |page| Recorder {
            keys: keys.clone(),
            round_trip: Some((std::time::Instant::now(), rt)),
            page,
            ..Default::default()
        };
        let (first, last) = (Date::constant(2024, 3, 3), Date::constant(2024, 3, 7));
        let b = recorder(0);
        let expected = plain(&b, first, last).await;
        assert_eq!(expected.len(), 4, "{expected:?}");
        let cloudtrail_dirs = |p: &str| p.ends_with("/CloudTrail/");
        let regions_round = *b.rounds_of("dir", cloudtrail_dirs).iter().max().unwrap();
        assert_eq!(
            b.rounds_of("range", |_| true).into_iter().min(),
            Some(regions_round + 1),
            "plain: after the regions"
        );

        // Pages of 2 keys: the folders of 5 days continue after the page listed ahead.
        for page in [0, 2] {
            let a = recorder(page);
            let (units, mut early) = source_account_regions_ahead(&a, "", first, last).await.unwrap();
            assert_eq!(units, expected.iter().map(|(u, _)| u.clone()).collect::<Vec<_>>());
            // us-east-1 of both trails, eu-west-1 of both accounts; not xx-test-9 nor ap-south-1.
            assert_eq!(early.len(), 4, "{early:?}");
            let mut got = Vec::new();
            for u in units {
                let pages = early.take(&u);
                let groups = day_groups_listed(&a, &u, first, last, pages).await.unwrap();
                got.push((u, groups));
            }
            assert_eq!(got, expected, "page {page}");
            assert!(early.is_empty());
            // The listed-ahead pages start with the regions listings, in the same round trip.
            let regions_round = *a.rounds_of("dir", cloudtrail_dirs).iter().max().unwrap();
            let firsts = a.rounds_of("first", |_| true);
            assert_eq!(firsts.len(), 3 * CLOUDTRAIL_REGIONS.len(), "three CloudTrail/ folders");
            assert!(firsts.iter().all(|r| *r == regions_round), "{firsts:?} vs {regions_round}");
            assert!(a.rounds_of("first", |p| p.contains("ap-south-1")).len() == 3);
            // Only the Region the list lacks waits for the regions listing (and, with pages of 2,
            // the rest of each listed-ahead folder).
            let later = a.rounds.lock().unwrap().iter().filter(|(_, k, _)| *k == "range").cloned().collect::<Vec<_>>();
            let unlisted = later.iter().filter(|(_, _, p)| p.contains("xx-test-9")).count();
            assert_eq!((unlisted, later.len()), (1, if page == 0 { 1 } else { 5 }), "{later:?}");
        }
    }

    #[tokio::test]
    async fn many_accounts_are_not_listed_ahead() {
        let mut keys = Vec::new();
        for acct in 0..=LIST_AHEAD_ACCOUNTS {
            keys.push(format!("AWSLogs/{:012}/CloudTrail/us-east-1/2024/03/01/f.json.gz", acct + 100_000_000_000));
        }
        let b = Recorder { keys, ..Default::default() };
        let day = Date::constant(2024, 3, 1);
        let (units, early) = source_account_regions_ahead(&b, "", day, day).await.unwrap();
        assert_eq!((units.len(), early.len()), (LIST_AHEAD_ACCOUNTS + 1, 0));
    }

    #[test]
    fn keys_in_day_folders() {
        let r = "AWSLogs/1/CloudTrail/us-east-1/";
        assert_eq!(day_of_key(r, &format!("{r}2024/03/01/x.json.gz")), Some(Date::constant(2024, 3, 1)));
        assert_eq!(day_of_key(r, &format!("{r}2024/03/01/sub/x.json.gz")), None, "below a day folder");
        assert_eq!(day_of_key(r, &format!("{r}2024/03/x.json.gz")), None, "not in a day folder");
        assert_eq!(day_of_key(r, &format!("{r}2024/3/1/x.json.gz")), None);
        assert_eq!(day_of_key(r, &format!("{r}2024/02/30/x.json.gz")), None);
        assert!(day_key(Date::constant(2024, 3, 9)) < day_key(Date::constant(2024, 3, 10)));
    }
}
