//! Packing: day groups into work items by bytes. An item holds one date's account-region-days
//! (so a date partition gets few, large Parquet files) up to a byte target and a file cap; a
//! group bigger than the target is an item of its own. Memory stays bounded: per date one open
//! item, sealed as it fills, and when the buffered file lists pass a budget the fullest open
//! items are sealed early (a quiet organization's listing crosses every date at once).

use std::collections::BTreeMap;

use jiff::civil::Date;

use crate::discover::DayGroup;
use crate::layout;
use crate::range::Window;
use crate::storage::ObjectInfo;

/// Limits of one work item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackLimits {
    /// Bytes of in-scope log files: a few copy batches, so an item's Lambda invocations and
    /// Parquet files are few and large.
    pub target_bytes: u64,
    /// Objects: keeps the frozen file list small (~200 bytes of JSON each).
    pub max_files: usize,
    /// Objects buffered in open items across all dates before the fullest are sealed.
    pub buffered_files: usize,
}

/// 4 copy batches of 64 MiB.
pub const DEFAULT_ITEM_BYTES: u64 = 256 << 20;
pub const DEFAULT_ITEM_FILES: usize = 20_000;
/// ~190 bytes each in memory (key, size, class): ~570 MB at the limit. Sealing early makes items
/// of about this / the number of dates in range, so it sets how full a long range's items get.
pub const DEFAULT_BUFFERED_FILES: usize = 3_000_000;

impl Default for PackLimits {
    fn default() -> Self {
        PackLimits {
            target_bytes: DEFAULT_ITEM_BYTES,
            max_files: DEFAULT_ITEM_FILES,
            buffered_files: DEFAULT_BUFFERED_FILES,
        }
    }
}

impl PackLimits {
    /// The defaults, or the hooks `TRAILCOPY_ITEM_BYTES`, `TRAILCOPY_ITEM_FILES` (tests) and
    /// `TRAILCOPY_PLAN_BUFFERED_FILES` (the planning benchmark).
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok()).filter(|v| *v > 0);
        let d = PackLimits::default();
        PackLimits {
            target_bytes: var("TRAILCOPY_ITEM_BYTES").unwrap_or(d.target_bytes),
            max_files: var("TRAILCOPY_ITEM_FILES").map_or(d.max_files, |v| v as usize),
            buffered_files: var("TRAILCOPY_PLAN_BUFFERED_FILES").map_or(d.buffered_files, |v| v as usize),
        }
    }
}

/// A sealed item: what the Map sees, and its frozen file list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedItem {
    pub seq: usize,
    pub date: Date,
    pub prefixes: Vec<String>,
    pub files: Vec<ObjectInfo>,
    pub bytes: u64,
}

impl SealedItem {
    /// A hash of the frozen list: the same work gets the same output names.
    pub fn tag(&self) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3Default::new();
        for f in &self.files {
            h.update(f.key.as_bytes());
            h.update(&[0]);
        }
        format!("{:016x}", h.digest())
    }
}

#[derive(Default)]
struct Open {
    prefixes: Vec<String>,
    files: Vec<ObjectInfo>,
    bytes: u64,
}

/// Bytes a group adds to an item: its gzip log files whose name can hold events in the window.
pub fn scope_bytes(files: &[ObjectInfo], window: &Window) -> u64 {
    files
        .iter()
        .filter(|f| layout::is_gzip_log(&f.key))
        .filter(|f| layout::file_timestamp(layout::file_name(&f.key)).is_none_or(|t| window.file_in_scope(t)))
        .map(|f| f.size)
        .sum()
}

pub struct Packer {
    limits: PackLimits,
    window: Window,
    open: BTreeMap<Date, Open>,
    buffered: usize,
    sealed: usize,
}

impl Packer {
    pub fn new(limits: PackLimits, window: Window) -> Self {
        Packer { limits, window, open: BTreeMap::new(), buffered: 0, sealed: 0 }
    }

    /// Adds a group (groups arrive in account-region order); returns the items it sealed.
    pub fn add(&mut self, group: DayGroup) -> Vec<SealedItem> {
        let mut out = Vec::new();
        let bytes = scope_bytes(&group.files, &self.window);
        let n = group.files.len();
        let lim = self.limits;
        if bytes >= lim.target_bytes || n >= lim.max_files {
            // Big enough alone: an item of its own; the date's open item stays open.
            let seq = self.next_seq();
            out.push(SealedItem { seq, date: group.date, prefixes: group.prefixes, files: sorted(group.files), bytes });
            return out;
        }
        let full = self.open.get(&group.date).is_some_and(|o| {
            !o.files.is_empty() && (o.bytes + bytes > lim.target_bytes || o.files.len() + n > lim.max_files)
        });
        if full {
            out.extend(self.seal(group.date));
        }
        let o = self.open.entry(group.date).or_default();
        o.prefixes.extend(group.prefixes);
        o.files.extend(group.files);
        o.bytes += bytes;
        self.buffered += n;
        while self.buffered > lim.buffered_files {
            let Some(fullest) = self.open.iter().max_by_key(|(_, o)| o.files.len()).map(|(d, _)| *d) else { break };
            out.extend(self.seal(fullest));
        }
        out
    }

    /// Seals every open item (in date order).
    pub fn finish(mut self) -> Vec<SealedItem> {
        let dates: Vec<Date> = self.open.keys().copied().collect();
        dates.into_iter().filter_map(|d| self.seal(d)).collect()
    }

    fn next_seq(&mut self) -> usize {
        self.sealed += 1;
        self.sealed - 1
    }

    fn seal(&mut self, date: Date) -> Option<SealedItem> {
        let o = self.open.remove(&date)?;
        self.buffered -= o.files.len();
        let seq = self.next_seq();
        Some(SealedItem { seq, date, prefixes: o.prefixes, files: sorted(o.files), bytes: o.bytes })
    }
}

/// The files named in the first hour of their day, which can hold the previous day's last events,
/// come first, in delivery order, so only an item's first batch writes to the previous date. The
/// rest follow by file name, `Account_CloudTrail_Region_Time_...`: each account-region's rows lie
/// together in time order, so row groups' min/max statistics skip other accounts, regions and
/// their principals (issue 33).
fn sorted(mut files: Vec<ObjectInfo>) -> Vec<ObjectInfo> {
    files.sort_by_cached_key(|f| {
        let name = layout::file_name(&f.key);
        let first_hour = layout::first_hour_delivery(name);
        (first_hour.is_none(), first_hour, name.to_string(), f.key.clone())
    });
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> Window {
        Window {
            start: "2024-03-01T00:00:00Z".parse().unwrap(),
            end: "2024-03-04T00:00:00Z".parse().unwrap(),
            retention_cutoff: "2020-01-01T00:00:00Z".parse().unwrap(),
        }
    }

    fn group(acct: &str, day: i8, files: usize, size: u64) -> DayGroup {
        let prefix = format!("AWSLogs/{acct}/CloudTrail/us-east-1/2024/03/{day:02}/");
        DayGroup {
            date: Date::constant(2024, 3, day),
            files: (0..files)
                .map(|i| ObjectInfo {
                    key: format!(
                        "{prefix}{acct}_CloudTrail_us-east-1_202403{day:02}T{:02}00Z_x{i}.json.gz",
                        23 - i % 24
                    ),
                    size,
                    storage_class: None,
                })
                .collect(),
            prefixes: vec![prefix],
        }
    }

    #[test]
    fn an_items_files_put_the_first_hour_first_then_each_account_region_together() {
        let key = |acct: &str, region: &str, time: &str| ObjectInfo {
            key: format!(
                "AWSLogs/o-x/{acct}/CloudTrail/{region}/2024/03/02/{acct}_CloudTrail_{region}_20240302T{time}Z_a.json.gz"
            ),
            size: 1,
            storage_class: None,
        };
        let files = vec![
            key("222222222222", "us-east-1", "0905"),
            key("111111111111", "us-east-1", "1200"),
            key("222222222222", "eu-west-1", "0010"),
            key("111111111111", "eu-west-1", "0300"),
            key("111111111111", "us-east-1", "0005"),
            key("111111111111", "eu-west-1", "0100"),
            key("111111111111", "us-east-1", "0400"),
        ];
        let got: Vec<String> = sorted(files)
            .iter()
            .map(|f| {
                let name = layout::file_name(&f.key);
                format!("{}:{}", &name[..1], &name[name.len() - 15..name.len() - 11])
            })
            .collect();
        // 00:05 and 00:10 can hold the previous day's events: first, by delivery time; then by
        // account, region (eu-west-1 before us-east-1) and time.
        assert_eq!(got, ["1:0005", "2:0010", "1:0100", "1:0300", "1:0400", "1:1200", "2:0905"]);
    }

    fn limits(target_bytes: u64, max_files: usize, buffered_files: usize) -> PackLimits {
        PackLimits { target_bytes, max_files, buffered_files }
    }

    fn pack(p: &mut Packer, groups: Vec<DayGroup>) -> Vec<SealedItem> {
        let mut out: Vec<SealedItem> = groups.into_iter().flat_map(|g| p.add(g)).collect();
        let fresh = Packer::new(p.limits, p.window);
        out.extend(std::mem::replace(p, fresh).finish());
        out
    }

    #[test]
    fn one_date_per_item_up_to_the_target() {
        let mut p = Packer::new(limits(1000, 100, 10_000), window());
        let mut groups = Vec::new();
        for a in 0..10 {
            for d in 1..=2 {
                groups.push(group(&format!("1111222233{a:02}"), d, 2, 100));
            }
        }
        let items = pack(&mut p, groups);
        // Each date: 10 groups × 200 bytes = 2,000 bytes → 2 items of 5 groups (1,000 bytes).
        assert_eq!(items.len(), 4, "{items:?}");
        for it in &items {
            assert!(it.files.iter().all(|f| f.key.contains(&format!("/2024/03/{:02}/", it.date.day()))));
            assert!(it.bytes <= 1000, "{}", it.bytes);
            assert_eq!(it.prefixes.len(), 5);
        }
        let mut seqs: Vec<usize> = items.iter().map(|i| i.seq).collect();
        seqs.sort();
        assert_eq!(seqs, (0..4).collect::<Vec<_>>());
    }

    #[test]
    fn a_big_group_is_an_item_of_its_own_and_files_are_capped() {
        let mut p = Packer::new(limits(1000, 5, 10_000), window());
        let items = pack(
            &mut p,
            vec![group("111122223301", 1, 1, 100), group("111122223302", 1, 3, 400), group("111122223303", 1, 3, 10)],
        );
        // The big group (1,200 bytes) is alone; the others (1 + 3 files > cap 5? no: 4) share one.
        assert_eq!(items.len(), 2, "{items:?}");
        assert_eq!(items[0].files.len(), 3);
        assert_eq!(items[1].files.len(), 4);
        let mut p = Packer::new(limits(1_000_000, 5, 10_000), window());
        let items = pack(&mut p, vec![group("111122223301", 1, 3, 1), group("111122223302", 1, 3, 1)]);
        assert_eq!(items.len(), 2, "file cap");
    }

    #[test]
    fn the_memory_budget_seals_the_fullest_open_item() {
        let mut p = Packer::new(limits(1 << 30, 1000, 10), window());
        let mut sealed = Vec::new();
        for a in 0..3 {
            for d in 1..=3 {
                sealed.extend(p.add(group(&format!("1111222233{a:02}"), d, 2, 1)));
            }
            assert!(p.buffered <= 10, "{}", p.buffered);
        }
        assert!(!sealed.is_empty());
        let rest = p.finish();
        assert_eq!(sealed.iter().chain(&rest).map(|i| i.files.len()).sum::<usize>(), 18, "nothing lost");
    }

    #[test]
    fn files_after_midnight_come_first_and_tags_follow_the_files() {
        let mut p = Packer::new(limits(1 << 30, 1000, 10_000), window());
        let items = pack(&mut p, vec![group("111122223301", 2, 24, 1)]);
        let first = layout::file_timestamp(layout::file_name(&items[0].files[0].key)).unwrap();
        assert_eq!(first, "2024-03-02T00:00:00Z".parse().unwrap());
        let mut again = Packer::new(limits(1 << 30, 1000, 10_000), window());
        assert_eq!(pack(&mut again, vec![group("111122223301", 2, 24, 1)])[0].tag(), items[0].tag());
        let mut other = Packer::new(limits(1 << 30, 1000, 10_000), window());
        assert_ne!(pack(&mut other, vec![group("111122223301", 2, 23, 1)])[0].tag(), items[0].tag());
    }

    #[test]
    fn bytes_count_only_log_files_in_scope() {
        let w = window();
        let f = |k: &str| ObjectInfo { key: k.into(), size: 10, storage_class: None };
        let files = vec![
            f("p/1_CloudTrail_r_20240301T1000Z_a.json.gz"),
            f("p/notes.txt"),
            f("p/1_CloudTrail_r_20240310T1000Z_b.json.gz"),
            f("p/odd-name.json.gz"),
        ];
        assert_eq!(scope_bytes(&files, &w), 20);
    }
}
