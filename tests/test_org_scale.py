"""Organization scale (issue 11): a generated quiet organization trail (100 accounts × 17 regions ×
2 days, 2 tiny files per day prefix) plus one account delivered again by an account trail
(AWSLogs/<acct>/..., the same events under other file names). Work is planned by bytes, not by
layout: few work items, few large Parquet files per date partition, a store smaller than its gzipped
source, and each cross-trail event stored once and counted in eventsDuplicate. Locally and with
moto S3 as source and store (the state-machine variant is in test_statemachine.py).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from conftest import duck, parquet_files, read_store, rebuild_event, source_dir
from expect import canon, expected, stats_diff
from fault_proxy import FaultProxy

REGIONS = ("us-east-1,us-east-2,us-west-1,us-west-2,eu-west-1,eu-west-2,eu-west-3,eu-central-1,eu-north-1,"
           "ap-south-1,ap-northeast-1,ap-northeast-2,ap-northeast-3,ap-southeast-1,ap-southeast-2,"
           "ca-central-1,sa-east-1")
START, END = "2024-06-01T00:00:00Z", "2024-06-03T00:00:00Z"
MAX_FILES_PER_DATE = 4


@pytest.fixture(scope="module")
def quiet_org(make_trail):
    m = make_trail("quiet-org", seed=41, accounts=100, regions=REGIONS, start_day="2024-06-01", days=2,
                   files_per_day=2, events_per_file=3, org_id="o-quietorg01", account_trail_accounts=1)
    exp = expected(m, START, END)
    cross = [f for f in m["files"] if f.get("trail") == "account"]
    assert len(cross) == 17 * 2 * 2, "one account, 17 regions, 2 days, 2 files: also under the account trail"
    assert exp["prefixesFound"] == 100 * 17 * 2 + 17 * 2
    assert exp["eventsDuplicate"] >= sum(f["events"] for f in cross) - 40, "the account trail's events are duplicates"
    assert exp["failedEntries"] == 0
    return m, exp


def source_bytes(m: dict) -> int:
    return sum(f["size"] for f in m["files"] if f["kind"] == "trail")


def check_store(store: Path, m: dict, exp: dict, record: dict):
    """The org-scale promises, read back with DuckDB from the store's Parquet files."""
    s = record["statistics"]
    assert record["status"] == "COMPLETED", record
    assert stats_diff(s, exp) == {}, stats_diff(s, exp)
    assert s["eventsDuplicate"] > 0
    con, src = duck(store)
    n, distinct = con.execute(f"SELECT count(*), count(DISTINCT eventID) FROM {src}").fetchone()
    nulls = con.execute(f"SELECT count(*) FROM {src} WHERE eventID IS NULL").fetchone()[0]
    assert n == exp["eventsCompleted"], (n, exp["eventsCompleted"])
    assert distinct == n - nulls, "an eventID stored twice (a cross-trail duplicate kept?)"
    want = Counter(canon(json.loads(j)) for j in exp["copied"])
    assert Counter(canon(rebuild_event(r)) for r in read_store(store)) == want
    per_date = Counter(p.split("/")[1] for p in parquet_files(store))
    assert per_date and max(per_date.values()) <= MAX_FILES_PER_DATE, per_date
    stored = sum(os.path.getsize(store / p) for p in parquet_files(store))
    assert stored < source_bytes(m), f"store {stored} bytes >= gzipped source {source_bytes(m)} bytes"
    # 3,434 day prefixes of 2 dates (and the day after the range's end): a handful of work items.
    assert s["prefixesFound"] == exp["prefixesFound"]
    assert 2 <= s["workItemsFound"] <= 6 and s["workItemsCompleted"] == s["workItemsFound"], s
    return per_date, stored


def test_quiet_org_local(trailcopy, quiet_org, tmp_path):
    m, exp = quiet_org
    store = tmp_path / "store"
    r = trailcopy("copy", "--source", source_dir(m), "--store", store, "--start", START, "--end", END,
                  "--copy-id", "quiet-1", "--json", timeout=300)
    assert r.returncode == 0, r.describe()
    per_date, stored = check_store(store, m, exp, r.json)
    print(f"\nquiet org local: {r.json['statistics']['workItemsFound']} work items, Parquet per date {dict(per_date)}, "
          f"store {stored} B vs source {source_bytes(m)} B")
    # Tidy: a completed item keeps its checkpoint; its file lists and dedup keys are gone.
    items = store / "copies" / "quiet-1" / "items"
    left = sorted(p.name for p in items.rglob("*") if p.is_file())
    assert left and set(left) == {"state.json"}, left[:10]


class CountingProxy(FaultProxy):
    """The fault proxy with no faults, counting S3 requests by kind (LIST = ListObjectsV2)."""

    def __init__(self, upstream):
        super().__init__(upstream, rate=0.0)
        self.by_kind = Counter()

    def decide(self, method, path):
        kind = "LIST" if method == "GET" and "list-type=2" in path else method
        with self.lock:
            self.by_kind[kind] += 1
        return super().decide(method, path)


def test_quiet_org_s3(trailcopy, quiet_org, moto_s3, tmp_path):
    m, exp = quiet_org
    s3 = moto_s3.client()
    s3.create_bucket(Bucket="quiet-org-trail")
    s3.create_bucket(Bucket="quiet-org-store")
    moto_s3.upload_dir("quiet-org-trail", m["root"])
    source = "s3://quiet-org-trail/" + m["prefix"]
    with CountingProxy(moto_s3.endpoint) as proxy:
        env = {**moto_s3.env, "AWS_ENDPOINT_URL": proxy.endpoint}
        r = trailcopy("copy", "--source", source, "--store", "s3://quiet-org-store/eds/", "--start", START,
                      "--end", END, "--copy-id", "quiet-s3", "--json", env=env, timeout=600)
    assert r.returncode == 0, r.describe()
    files = sum(1 for f in m["files"] if f["kind"] == "trail")
    print(f"\nquiet org via S3: {files} log files, requests {dict(proxy.by_kind)}")
    # LIST calls follow the account-regions and files, not the 3,434 day folders: one delimiter
    # listing per level down to the regions (1 + 1 + 101 accounts), one ranged listing per
    # account-region and trail (1,717), plus the store's overlap check. The account trail's root
    # holds one account, so discovery lists its days ahead: one page for each of the 34 Regions
    # in discover.rs CLOUDTRAIL_REGIONS (17 of them instead of its ranged listings).
    assert proxy.by_kind["LIST"] <= 1 + 1 + 101 + 1717 + 34 + files // 1000 + 5, proxy.by_kind
    # Each log file is read once; state reads and writes stay a small fraction of it.
    assert proxy.by_kind["GET"] <= files + 150, proxy.by_kind
    assert proxy.by_kind["PUT"] <= 100, proxy.by_kind
    local = moto_s3.download_prefix("quiet-org-store", "eds", tmp_path / "store")
    check_store(local, m, exp, r.json)
    # Finalize read the roll-up shards, not one object per item; status reads the same.
    st = trailcopy("status", "quiet-s3", "--store", "s3://quiet-org-store/eds/", "--json", env=moto_s3.env)
    assert st.returncode == 0 and st.json["statistics"] == r.json["statistics"], st.describe()


@pytest.fixture(scope="module")
def two_trails(make_trail):
    """An organization trail at org/AWSLogs/ and an account trail of two of its accounts at
    acct/trail/AWSLogs/ of the same bucket (CloudTrail lets each trail pick its key prefix)."""
    m = make_trail("two-trails", seed=47, accounts=3, regions="us-east-1,eu-west-1", start_day="2024-06-01",
                   days=2, files_per_day=2, events_per_file=5, org_id="o-twotrails1", prefix="org",
                   account_trail_accounts=2, account_trail_prefix="acct/trail")
    cross = [f for f in m["files"] if f.get("trail") == "account"]
    assert cross and all(f["key"].startswith("acct/trail/AWSLogs/") for f in cross)
    exp = expected(m, START, END)
    assert exp["eventsDuplicate"] >= sum(f["events"] for f in cross) - 10 > 0
    return m, exp


def check_two_trails(store: Path, exp: dict, record: dict):
    s = record["statistics"]
    assert record["status"] == "COMPLETED" and stats_diff(s, exp) == {}, stats_diff(s, exp)
    con, src = duck(store)
    n, distinct = con.execute(f"SELECT count(*), count(DISTINCT eventID) FROM {src}").fetchone()
    assert n == distinct == exp["eventsCompleted"], (n, distinct, exp["eventsCompleted"])
    assert Counter(canon(rebuild_event(r)) for r in read_store(store)) == Counter(canon(json.loads(j))
                                                                               for j in exp["copied"])


def test_trails_under_different_prefixes_store_each_event_once(trailcopy, two_trails, moto_s3, tmp_path):
    """The source above both trails reads both; an account-region-day both deliver shares one work
    item, so each cross-trail event is stored once and counted in eventsDuplicate. Locally and with
    moto S3; a later copy of one trail's folder overlaps the first copy and is refused."""
    m, exp = two_trails
    store = tmp_path / "store"
    r = trailcopy("copy", "--source", m["root"], "--store", store, "--start", START, "--end", END,
                  "--copy-id", "two-1", "--json")
    assert r.returncode == 0, r.describe()
    check_two_trails(store, exp, r.json)
    again = trailcopy("copy", "--source", os.path.join(m["root"], "acct", "trail"), "--store", store,
                      "--start", START, "--end", END, "--json")
    assert again.returncode == 2 and "overlaps copy `two-1`" in again.stderr, again.describe()

    s3 = moto_s3.client()
    s3.create_bucket(Bucket="two-trails-src")
    s3.create_bucket(Bucket="two-trails-store")
    moto_s3.upload_dir("two-trails-src", m["root"])
    r = trailcopy("copy", "--source", "s3://two-trails-src/", "--store", "s3://two-trails-store/eds/",
                  "--start", START, "--end", END, "--copy-id", "two-s3", "--json", env=moto_s3.env)
    assert r.returncode == 0, r.describe()
    check_two_trails(moto_s3.download_prefix("two-trails-store", "eds", tmp_path / "s3store"), exp, r.json)
