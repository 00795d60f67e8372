"""Faults (issue 6.1): S3 errors injected on ~10% of requests by a proxy in front of moto
(tests/fault_proxy.py: 503 SlowDown, 500 InternalError, stalls past the client's timeout, connection
resets). A copy through the proxy (S3 source -> S3 store, and S3 -> local store) must complete with
exactly the counts and the events of the same copy without faults: the SDK's retries (adaptive,
8 attempts) absorb them, and no event is lost or stored twice.

Stalls: the engine's read timeout is 60 s by default; the copies here run with
TRAILCOPY_S3_READ_TIMEOUT=1 (seconds), and test_stall_hits_the_client_read_timeout checks that the
client, not the proxy, gave up. (The proxy ends a stall itself after STALL_SECONDS with a reset, so
the test stays fast even if the knob is lost.) test_broken_downloads_are_retried cuts GetObject
bodies half-way, which the SDK's retries do not cover.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import logging

import pytest

from conftest import read_store, rebuild_event
from expect import EXACT_STATS, canon, expected, stats_diff
from fault_proxy import DEFAULT_KINDS, FaultProxy

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's access log: thousands of lines

SRC_BUCKET = "fault-src"
STORE_BUCKET = "fault-store"
START, END = "2024-07-01T00:00:00Z", "2024-07-03T00:00:00Z"
RATE = 0.10
STALL_SECONDS = 1.5
# Small batches: more PUTs (Parquet, dedup keys, checkpoints) go through the proxy too.
ENV = {"TRAILCOPY_BATCH_BYTES": "20000", "TRAILCOPY_S3_READ_TIMEOUT": "1", "TRAILCOPY_S3_CONNECT_TIMEOUT": "1"}

# Every fault injected in this module, by kind (printed at the end of the last test).
TOTAL = Counter()


@pytest.fixture(scope="module")
def trail(make_trail, moto_s3):
    m = make_trail("faults", seed=41, accounts=2, regions="us-east-1,eu-west-1", start_day="2024-07-01", days=2,
                   files_per_day=6, events_per_file=12, duplicates=4, stray=1, digest=True)
    s3 = moto_s3.client()
    s3.create_bucket(Bucket=SRC_BUCKET)
    s3.create_bucket(Bucket=STORE_BUCKET)
    assert moto_s3.upload_dir(SRC_BUCKET, m["root"]) == len(m["files"])
    exp = expected(m, START, END)
    assert exp["failedEntries"] == 0 and exp["eventsDuplicate"] > 0 and exp["filesCompleted"] >= 40
    return m, exp


def copy(trailcopy, env, store, copy_id):
    t = time.monotonic()
    r = trailcopy("copy", "--source", f"s3://{SRC_BUCKET}", "--store", store, "--start", START, "--end", END,
                  "--copy-id", copy_id, "--json", env={**env, **ENV}, timeout=120)
    return r, time.monotonic() - t


@pytest.fixture(scope="module")
def baseline(trail, moto_s3, trailcopy, tmp_path_factory):
    """The same copy without faults."""
    m, exp = trail
    r, _ = copy(trailcopy, moto_s3.env, f"s3://{STORE_BUCKET}/baseline", "base-1")
    assert r.returncode == 0, r.describe()
    assert stats_diff(r.json["statistics"], exp) == {}, stats_diff(r.json["statistics"], exp)
    return r.json["statistics"]


def faulty_env(moto_s3, proxy):
    return {**moto_s3.env, "AWS_ENDPOINT_URL": proxy.endpoint}


def assert_same_outcome(r, baseline, exp, local_store):
    assert r.returncode == 0, r.describe()
    rec = r.json
    assert rec["status"] == "COMPLETED", rec
    s = rec["statistics"]
    assert {k: s[k] for k in s} == {k: baseline[k] for k in s}, \
        {k: (s[k], baseline[k]) for k in s if s[k] != baseline.get(k)}
    assert stats_diff(s, exp) == {}
    rows = read_store(local_store)
    ids = Counter(row["eventID"] for row in rows if row["eventID"] is not None)
    assert not [i for i, n in ids.items() if n > 1], "eventIDs stored twice"
    assert len(rows) == exp["eventsCompleted"]
    assert Counter(canon(rebuild_event(row)) for row in rows) == Counter(canon(json.loads(j)) for j in exp["copied"])


def check_faults(proxy, label):
    print(f"\n[{label}] {proxy.summary()}")
    TOTAL.update(proxy.counts)
    TOTAL["requests"] += proxy.requests
    assert proxy.requests >= 60, proxy.summary()
    for kind in DEFAULT_KINDS:
        assert proxy.counts[kind] > 0, f"no {kind} fault injected: {proxy.summary()}"
    assert 0.04 <= sum(proxy.counts.values()) / proxy.requests <= 0.2, proxy.summary()


def test_s3_to_s3_through_faults(trail, baseline, moto_s3, trailcopy, tmp_path):
    m, exp = trail
    with FaultProxy(moto_s3.endpoint, rate=RATE, seed=5, stall_seconds=STALL_SECONDS) as proxy:
        r, took = copy(trailcopy, faulty_env(moto_s3, proxy), f"s3://{STORE_BUCKET}/faulty", "faulty-1")
    print(f"\n[s3->s3] copy took {took:.1f} s")
    local = moto_s3.download_prefix(STORE_BUCKET, "faulty", tmp_path / "store")
    check_faults(proxy, "s3->s3")
    assert_same_outcome(r, baseline, exp, local)
    # the record in the store says the same
    st = json.loads((local / "copies" / "faulty-1" / "record.json").read_text())
    assert st["status"] == "COMPLETED" and st["statistics"] == r.json["statistics"]


def test_s3_to_local_through_faults(trail, baseline, moto_s3, trailcopy, tmp_path):
    m, exp = trail
    store = tmp_path / "store"
    with FaultProxy(moto_s3.endpoint, rate=RATE, seed=9, stall_seconds=STALL_SECONDS) as proxy:
        r, took = copy(trailcopy, faulty_env(moto_s3, proxy), store, "faulty-2")
    print(f"\n[s3->local] copy took {took:.1f} s")
    check_faults(proxy, "s3->local")
    assert_same_outcome(r, baseline, exp, store)


def test_stall_hits_the_client_read_timeout(trail, moto_s3, trailcopy, tmp_path):
    """Every stall must end because the client gave up (its read timeout, TRAILCOPY_S3_READ_TIMEOUT=1),
    not because the proxy hung up. With the engine's fixed 60 s read timeout a stalled request would
    hang for a minute: the knob lets tests (and users behind slow proxies) set it."""
    m, exp = trail
    with FaultProxy(moto_s3.endpoint, rate=0.10, seed=13, kinds=("stall",), stall_seconds=3.0,
                    methods={"GET"}) as proxy:
        r, took = copy(trailcopy, faulty_env(moto_s3, proxy), tmp_path / "store", "stall-1")
    print(f"\n[stalls] {proxy.summary()}; copy took {took:.1f} s")
    TOTAL["stall"] += proxy.counts["stall"]
    assert r.returncode == 0, r.describe()
    assert stats_diff(r.json["statistics"], exp) == {}
    assert proxy.counts["stall"] > 0
    assert proxy.stalls_ended_by_proxy == 0, (
        f"{proxy.stalls_ended_by_proxy} of {proxy.counts['stall']} stalls outlasted the client's read timeout "
        f"(the proxy reset them after {proxy.stall_seconds} s): TRAILCOPY_S3_READ_TIMEOUT=1 is not honoured")


def test_broken_downloads_are_retried(trail, moto_s3, trailcopy, tmp_path):
    """A connection reset in the middle of a GetObject body (headers and half the body sent). The SDK
    retries failed requests but not a streaming body that breaks after the response arrived: the engine
    must retry the download itself (or the file), not fail the work item."""
    m, exp = trail
    with FaultProxy(moto_s3.endpoint, rate=0.10, seed=17, kinds=("body_cut",), methods={"GET"}) as proxy:
        r, took = copy(trailcopy, faulty_env(moto_s3, proxy), tmp_path / "store", "cut-1")
    print(f"\n[body_cut] {proxy.summary()}; copy took {took:.1f} s")
    TOTAL["body_cut"] += proxy.counts["body_cut"]
    assert proxy.counts["body_cut"] > 0
    assert r.returncode == 0, r.describe()
    assert r.json["status"] == "COMPLETED"
    assert stats_diff(r.json["statistics"], exp) == {}, stats_diff(r.json["statistics"], exp)
    assert len(read_store(tmp_path / "store")) == exp["eventsCompleted"]


def test_zz_fault_totals():
    print("\n[faults injected in test_faults.py] " + ", ".join(f"{k}={v}" for k, v in sorted(TOTAL.items())))
