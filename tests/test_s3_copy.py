"""End-to-end against the S3 API (moto server): the generated org trail in a bucket as source, a
bucket/prefix as store. Same expected outcome as the local copy (tests/expect.py)."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from conftest import GEN_ORG_RANGE, read_store, rebuild_event, store_schema
from expect import canon, expected, stats_diff, ts

SRC_BUCKET = "trail-src"
STORE_BUCKET = "event-store"
STORE_PREFIX = "eds/v1"


@pytest.fixture(scope="module")
def s3_org(moto_s3, gen_trail_org):
    s3 = moto_s3.client()
    s3.create_bucket(Bucket=SRC_BUCKET)
    s3.create_bucket(Bucket=STORE_BUCKET)
    n = moto_s3.upload_dir(SRC_BUCKET, gen_trail_org["root"])
    assert n == len(gen_trail_org["files"])
    return moto_s3


@pytest.fixture(scope="module")
def s3_copy(s3_org, trailcopy, gen_trail_org, tmp_path_factory):
    start, end = GEN_ORG_RANGE
    source = f"s3://{SRC_BUCKET}/{gen_trail_org['prefix'].rstrip('/')}"
    store = f"s3://{STORE_BUCKET}/{STORE_PREFIX}"
    r = trailcopy("copy", "--source", source, "--store", store, "--start", start, "--end", end,
                  "--copy-id", "s3-org-1", "--json", env=s3_org.env)
    if r.returncode not in (0, 1):
        pytest.fail("the copy every test here reads did not run:\n" + r.describe())
    local = s3_org.download_prefix(STORE_BUCKET, STORE_PREFIX, tmp_path_factory.mktemp("s3-store") / "store")
    return r, store, local, expected(gen_trail_org, start, end)


def test_s3_copy_statistics(s3_copy):
    r, store, local, exp = s3_copy
    assert r.returncode == 1, r.describe()
    rec = r.json
    assert rec["copyId"] == "s3-org-1" and rec["status"] == "FAILED"
    s = rec["statistics"]
    assert stats_diff(s, exp) == {}, f"(got, expected): {stats_diff(s, exp)}"
    assert s.get("filesNotLogFiles") == exp["filesNotLogFiles"] == 1, s
    assert s["eventsRead"] == s["eventsCompleted"] + s["eventsOutOfRange"] + s["eventsInvalid"] + s["eventsDuplicate"]
    assert s["prefixesCompleted"] == s["prefixesFound"]
    assert 0 < s["bytesRead"] <= exp["bytesInScope"]


def test_s3_copy_failures(s3_copy, s3_org, trailcopy):
    r, store, local, exp = s3_copy
    fr = trailcopy("failures", "s3-org-1", "--store", store, "--json", env=s3_org.env)
    assert fr.returncode in (0, 1), fr.describe()
    assert fr.json["copyId"] == "s3-org-1"
    got = sorted((f["location"], f["errorType"]) for f in fr.json["failures"])
    # ENGINE BUG (open): non-JSON text starting with a digit is reported InvalidLogFile, not InvalidJson
    # (see test_local_copy.py::test_org_copy_failures).
    assert got == sorted((f"s3://{SRC_BUCKET}/{k}", t) for k, t in exp["failures"])
    for f in fr.json["failures"]:
        assert f["status"] == "FAILED" and f["errorMessage"]
        ts(f["lastUpdatedTime"])
    # notes-*.txt is not named like a log file: skipped (issue 30), listed apart from the failures
    assert sorted(f["location"] for f in fr.json.get("skipped", [])) == \
        [f"s3://{SRC_BUCKET}/{k}" for k in exp["skipped"]], fr.json
    for f in fr.json["skipped"]:
        assert (f["status"], f["errorType"]) == ("SKIPPED", "NotALogFile") and f["errorMessage"], f


def test_s3_store_objects_under_prefix(s3_copy, s3_org):
    r, store, local, exp = s3_copy
    keys = s3_org.list_keys(STORE_BUCKET)
    assert keys and all(k.startswith(STORE_PREFIX + "/") for k in keys), keys[:5]
    rel = [k[len(STORE_PREFIX) + 1:] for k in keys]
    assert "copies/s3-org-1/record.json" in rel
    assert "copies/s3-org-1/workitems.json" in rel
    events = [k for k in rel if k.startswith("events/")]
    assert events and all(re.fullmatch(r"events/date=\d{4}-\d{2}-\d{2}/[^/]+\.parquet", k) for k in events), events
    record = json.loads(s3_org.client().get_object(Bucket=STORE_BUCKET, Key=f"{STORE_PREFIX}/copies/s3-org-1/record.json")["Body"].read())
    assert record["status"] == "FAILED" and record["statistics"] == r.json["statistics"]


def test_s3_store_contents(s3_copy):
    r, store, local, exp = s3_copy
    rows = read_store(local)
    assert len(rows) == exp["eventsCompleted"] == r.json["statistics"]["eventsCompleted"]
    ids = [row["eventID"] for row in rows if row["eventID"] is not None]
    assert len(ids) == len(set(ids)), "duplicate eventIDs in the store"
    assert all(row["date"] == row["eventTime"][:10] for row in rows)
    types = store_schema(local)
    assert types["eventTime"] == "TIMESTAMP WITH TIME ZONE" and types["readOnly"] == "BOOLEAN"
    assert types["eventName"] == "VARCHAR"
    assert Counter(canon(rebuild_event(row)) for row in rows) == Counter(canon(json.loads(j)) for j in exp["copied"])


def test_s3_status(s3_copy, s3_org, trailcopy):
    r, store, local, exp = s3_copy
    st = trailcopy("status", "s3-org-1", "--store", store, "--json", env=s3_org.env)
    assert st.returncode in (0, 1), st.describe()
    assert st.json["status"] == "FAILED" and st.json["statistics"] == r.json["statistics"]


def test_s3_source_bucket_root_and_local_store(s3_org, trailcopy, make_trail, tmp_path):
    """A standard (non-org) trail at the bucket root, copied to a local store."""
    m = make_trail("s3-plain", seed=21, accounts=2, regions="us-west-2", start_day="2024-06-10", days=2,
                   files_per_day=4, events_per_file=10, duplicates=2)
    s3 = s3_org.client()
    s3.create_bucket(Bucket="plain-trail")
    s3_org.upload_dir("plain-trail", m["root"])
    store = tmp_path / "store"
    r = trailcopy("copy", "--source", "s3://plain-trail", "--store", store, "--start", "2024-06-10",
                  "--end", "2024-06-12", "--copy-id", "plain-1", "--json", env=s3_org.env)
    exp = expected(m, "2024-06-10", "2024-06-12")
    assert r.returncode == 0, r.describe()
    assert r.json["status"] == "COMPLETED"
    assert stats_diff(r.json["statistics"], exp) == {}, stats_diff(r.json["statistics"], exp)
    rows = read_store(store)
    assert Counter(canon(rebuild_event(row)) for row in rows) == Counter(canon(json.loads(j)) for j in exp["copied"])
