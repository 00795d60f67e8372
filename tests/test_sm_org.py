"""Organization scale through the real state machine (issue 11): a quiet organization (20 accounts ×
17 regions × 2 days, one tiny file per day prefix; smaller than test_org_scale.py's for CI time: moto
serves a few hundred requests/s) plus one account also delivered by an account trail. moto executes
the ASL; the real Lambda binaries run under `cargo lambda watch` with the default batch size (the
session in test_statemachine.py runs tiny batches). The account trail delivers under its own key
prefix (acct-trail/AWSLogs/...), beside the organization trail's AWSLogs/ at the bucket root. The Map runs a few packed items, not one child per
day prefix; the store holds each event once (cross-trail duplicates counted), few Parquet files per
date, and is smaller than its gzipped source.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sm_harness as h  # noqa: E402
from expect import expected, stats_diff  # noqa: E402
from test_org_scale import REGIONS  # noqa: E402
from test_statemachine import (  # noqa: E402
    LAMBDA_CRATES, SOURCE, SOURCE_BUCKET, STORE, STORE_BUCKET, STORE_PREFIX, _ping, diagnose, invokes_of, needs_lambdas,
    prepare_s3, store_json)

pytestmark = needs_lambdas
START, END = "2024-06-01T00:00:00Z", "2024-06-03T00:00:00Z"


@pytest.fixture(scope="module")
def org_env(tmp_path_factory):
    logs = tmp_path_factory.mktemp("sm-org")
    h.build_lambda_binaries(LAMBDA_CRATES)
    moto_port = h.free_port()
    fn_env = h.function_env(f"http://127.0.0.1:{moto_port}", SOURCE, STORE)
    watch = h.CargoLambdaWatch(fn_env, logs)
    moto = None
    try:
        moto = h.Moto(watch.url, routes={}, log_dir=logs, port=moto_port)
        for name in LAMBDA_CRATES:
            h.wait_for(lambda n=name: _ping(watch.url, n), 1800, f"binary {name} under cargo lambda watch",
                       interval=2, proc=watch.proc)
        yield moto, logs
    finally:
        if moto:
            moto.stop()
        watch.stop()


def test_lambdas_quiet_org_packs_items_and_stores_each_event_once(org_env, make_trail, tmp_path):
    moto, logs = org_env
    moto.reset()
    s3 = prepare_s3(moto)
    sm = h.deploy(moto, STORE_BUCKET, STORE_PREFIX, max_concurrency=4)
    m = make_trail("sm-quiet-org", seed=43, accounts=20, regions=REGIONS, start_day="2024-06-01", days=2,
                   files_per_day=1, events_per_file=3, org_id="o-quietorg02", account_trail_accounts=1,
                   account_trail_prefix="acct-trail")
    exp = expected(m, START, END)
    assert exp["prefixesFound"] == 20 * 17 * 2 + 17 * 2 and exp["eventsDuplicate"] > 0
    trail = [f for f in m["files"] if f["kind"] == "trail"]
    assert any(f["key"].startswith("acct-trail/AWSLogs/") for f in trail)
    for f in trail:
        s3.upload_file(str(Path(m["root"]) / f["key"]), SOURCE_BUCKET, f["key"])

    d = h.run_execution(moto, sm, {"source": SOURCE, "store": STORE, "start": START, "end": END,
                                   "copyId": "sm-org-1"}, timeout=900)
    assert d["status"] == "SUCCEEDED", diagnose(d, moto, logs)
    record = store_json(s3, "sm-org-1", "record.json")
    s = record["statistics"]
    assert record["status"] == "COMPLETED" and stats_diff(s, exp) == {}, (s, stats_diff(s, exp))
    # The Map's children follow the data: a few packed items, not 714 day prefixes.
    items = store_json(s3, "sm-org-1", "workitems.json")
    assert 2 <= len(items) <= 4, items
    assert len({i["request"]["item"]["index"] for i in invokes_of(moto, "prepare")}) == len(items)
    assert s["workItemsFound"] == s["workItemsCompleted"] == len(items)

    import duckdb
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=STORE_BUCKET, Prefix=f"{STORE_PREFIX}events/")
    keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
    sizes = {o["Key"]: o["Size"] for p in s3.get_paginator("list_objects_v2").paginate(
        Bucket=STORE_BUCKET, Prefix=f"{STORE_PREFIX}events/") for o in p.get("Contents", [])}
    per_date = Counter(k.split("/")[-2] for k in keys)
    assert max(per_date.values()) <= 4, per_date
    assert sum(sizes.values()) < sum(f["size"] for f in trail), (sum(sizes.values()), sum(f["size"] for f in trail))
    dest = tmp_path / "store"
    for k in keys:
        p = dest / k
        p.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(STORE_BUCKET, k, str(p))
    con = duckdb.connect()
    n, distinct = con.execute(f"SELECT count(*), count(DISTINCT eventID) FROM read_parquet('{dest}/**/*.parquet')").fetchone()
    ids = Counter(json.loads(c).get("eventID") for c in exp["copied"])
    assert n == exp["eventsCompleted"] and distinct == len([k for k in ids if k is not None]), (n, distinct)
    # Tidy state: completed items keep only their checkpoint.
    left = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(
        Bucket=STORE_BUCKET, Prefix=f"{STORE_PREFIX}copies/sm-org-1/items/") for o in p.get("Contents", [])]
    assert left and all(k.endswith("/state.json") for k in left), left[:5]
