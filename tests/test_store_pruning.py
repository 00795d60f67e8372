"""Issue 33: a store needle queries barely read. Read back with DuckDB (the README's pinned version):
each item's rows lie in account-region order with a row group per account-region, the needle columns
carry bloom filters that rule out the row groups without the value, min/max rule out the other
accounts, the measuring script agrees with DuckDB's own probe, and export stays lossless."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict

import duckdb
import pytest

from conftest import REPO, export_store, source_dir

NEEDLE_COLUMNS = ["eventID", "requestID", "userIdentity, accessKeyId", "sourceIPAddress", "userIdentity, arn",
                  "recipientAccountId", "eventName"]


@pytest.fixture(scope="module")
def store(trailcopy, make_trail, tmp_path_factory):
    # 3 accounts x 2 regions, ~2,900 events an account-region-day: each gets row groups of its own.
    manifest = make_trail("pruning", seed=41, accounts=3, regions="us-east-1,eu-west-1", start_day="2026-11-01",
                          days=2, files_per_day=24, events_per_file=120, org_id="o-pruning111")
    out = tmp_path_factory.mktemp("pruning") / "store"
    r = trailcopy("copy", "--source", source_dir(manifest), "--store", out, "--start", "2026-11-01", "--end",
                  "2026-11-03", "--json")
    assert r.returncode == 0, r.describe()
    return out, r.json


def metadata(store) -> list[tuple]:
    con = duckdb.connect()
    return con.execute(
        "SELECT file_name, row_group_id, row_group_num_rows, path_in_schema, stats_min_value, stats_max_value, "
        "bloom_filter_offset FROM parquet_metadata(?)", [str(store / "events" / "**" / "*.parquet")]).fetchall()


def test_every_row_group_has_bloom_filters_on_the_needle_columns(store):
    rows = metadata(store[0])
    groups = {(f, rg) for f, rg, *_ in rows}
    for column in NEEDLE_COLUMNS:
        with_filter = {(f, rg) for f, rg, _, path, _, _, bloom in rows if path == column and bloom is not None}
        assert with_filter == groups, f"{column}: {len(groups - with_filter)} row groups without a bloom filter"


def test_rows_lie_in_account_region_row_groups(store):
    rows = metadata(store[0])
    by_group = defaultdict(dict)
    sizes = {}
    for f, rg, n, path, lo, hi, _ in rows:
        by_group[(f, rg)][path] = (lo, hi)
        sizes[(f, rg)] = n
    date_files = sorted({f for f, _ in by_group if "date=2026-11-01" in f and f.split("/")[-1].startswith("20261101")})
    assert date_files, sorted(by_group)
    for f in date_files:
        rgs = sorted(rg for g, rg in by_group if g == f)
        assert len(rgs) >= 6 + 1, f"{f}: {len(rgs)} row groups for 6 account-regions and the first hour"
        first, rest = rgs[0], rgs[1:]
        # The first hour's files (every account-region) make the first row group; then each row group
        # holds one account and one region, so min/max skip the others.
        lo, hi = by_group[(f, first)]["recipientAccountId"]
        assert lo != hi, "the first row group holds the first hour of every account"
        # (awsRegion is not single-valued: a region's files also log global services as us-east-1.)
        for rg in rest:
            lo, hi = by_group[(f, rg)]["recipientAccountId"]
            assert lo == hi, f"{f} row group {rg}: recipientAccountId spans {lo} .. {hi}"
        assert all(sizes[(f, rg)] <= 16384 for rg in rgs)


def test_a_needle_is_found_in_the_row_group_its_bloom_filter_keeps(store):
    con = duckdb.connect()
    files = str(store[0] / "events" / "**" / "*.parquet")
    needles = con.execute(f"SELECT eventID, filename FROM read_parquet('{files}', filename = true) "
                          "USING SAMPLE 5 ROWS (reservoir, 7)").fetchall()
    for event_id, file_name in needles:
        probe = con.execute("SELECT row_group_id, bloom_filter_excludes FROM parquet_bloom_probe(?, 'eventID', ?)",
                            [file_name, event_id]).fetchall()
        kept = [rg for rg, excludes in probe if not excludes]
        assert kept, f"{event_id}: every row group excluded, though {file_name} holds it"
        assert len(kept) <= max(2, len(probe) // 5), f"{event_id}: {len(kept)} of {len(probe)} row groups kept"
        found = con.execute(f"SELECT count(*) FROM read_parquet('{files}') WHERE eventID = ?", [event_id]).fetchone()
        assert found[0] == 1, event_id
    # A value nobody logged: (nearly) every row group of every file is ruled out (fpp 2 %).
    probes = [excludes for f in {f for _, f in needles}
              for _, excludes in con.execute("SELECT row_group_id, bloom_filter_excludes FROM "
                                             "parquet_bloom_probe(?, 'eventID', ?)", [f, "no-such-event"]).fetchall()]
    assert sum(probes) >= 0.8 * len(probes), f"{sum(probes)} of {len(probes)} row groups ruled out"


def test_the_share_script_agrees_with_duckdb_and_needles_read_little(store):
    r = subprocess.run([sys.executable, str(REPO / "benches" / "needle_share.py"), str(store[0]), "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr  # it asserts its bloom probe equals DuckDB's on the top-level columns
    import json

    report = json.loads(r.stdout)
    share = {q["query"]: q["medianShare"] for q in report["queries"]}
    for q in ("eventID", "requestID", "accessKeyId"):
        assert share[q] <= 0.10, report
    assert share["recipientAccountId"] <= 0.5, report  # min/max: its account's row groups (3 accounts here)
    assert report["medianShare"] <= 0.10, report


def test_export_is_lossless_with_the_new_layout(trailcopy, store):
    events = export_store(trailcopy, store[0])
    assert len(events) == store[1]["statistics"]["eventsCompleted"]
    with_id = [e["eventID"] for e in events if "eventID" in e]  # 1.0 events have none
    assert with_id and len(set(with_id)) == len(with_id)
