#!/usr/bin/env python3
"""Query benchmark (issue 33): docs/queries.md's investigation queries and the needle queries, timed
with DuckDB on a store before and after a change, and on the raw trail.

    benches/query_bench.py --before STORE --after STORE --raw TRAIL_DIR [--runs 3] [--raw-runs N]
        [--start 2026-09-01 --end 2026-10-06] [--needle-seed 33] [--json] [--markdown]

Queries: every `sql duckdb` block of docs/queries.md, extracted as tests/test_cookbook.py does (its
DUCKDB dict when it imports, else the same regex), run over the cookbook's own setup view with the
store path substituted; plus the 7 needle queries of benches/needle_share.py (equality on
userIdentity.accessKeyId, sourceIPAddress, eventID, requestID, userIdentity.arn, recipientAccountId,
eventName = 'ConsoleLogin'), projecting needle_share's typical columns. Each drawn needle is the
value of a row drawn (seeded, as needle_share.py draws) from the after store: the same literal on all
three sources.

Sources:
- before, after: `read_parquet('<store>/events/**/*.parquet', hive_partitioning = true)`;
- raw: the gzip JSON log files as Athena's documented CloudTrail table reads them (CloudTrail SerDe
  over the raw objects, https://docs.aws.amazon.com/athena/latest/ug/create-cloudtrail-table.html):
  a view over `read_json('<trail>/AWSLogs/**/CloudTrail/*/*/*/*/*.json.gz', records = true)` with
  `Records` declared as that DDL's columns (userIdentity and tlsDetails structs, the free-form
  objects JSON text), unnested into the store's column names; eventTime as TIMESTAMPTZ, `date` its
  UTC date, `sourceLogFile` the file name. userIdentity is read as JSON and TRY_CAST to the struct
  (a non-object userIdentity -> NULL, as in the store; DuckDB's read_json would otherwise stop at
  the first such record). Only events with start <= eventTime < end are kept, the range the stores
  were copied with, so every query should return the same rows on all three (a mismatch is shown,
  not hidden).

Timing: a fresh DuckDB connection per run (TimeZone UTC, threads left default), the view created,
then the query executed and fetched: median of --runs (--raw-runs for the raw trail, default
--runs). Needle share: benches/needle_share.py's median share of the query's columns' bytes that
min/max and bloom filters cannot skip (its own needles, seed 33), per store. DuckDB's own pruning:
EXPLAIN ANALYZE of each needle query per store (row groups scanned / total, data read), and
parquet_bloom_probe on the eventID needle.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benches"))
sys.path.insert(0, str(REPO / "tests"))
import needle_share  # noqa: E402

DOC = (REPO / "docs" / "queries.md").read_text()
try:  # exactly the queries the cookbook test runs
    from test_cookbook import DUCKDB as COOKBOOK  # noqa: E402
except Exception:  # pytest or the test helpers missing: the same extraction
    COOKBOOK = {qid: sql for engine, qid, sql in
                re.findall(r"```sql (duckdb|athena) id=([\w-]+)\n(.*?)```", DOC, re.S) if engine == "duckdb"}
SETUP = re.search(r"```sql\n(CREATE VIEW events AS\n.*?)```", DOC, re.S).group(1).strip().rstrip(";")
assert "'store/events/**/*.parquet'" in SETUP, SETUP

# What an investigation shows of each event it finds (needle_share.PROJECTED, as DuckDB spells it).
NEEDLE_COLUMNS = ("eventTime, eventSource, eventName, awsRegion, sourceIPAddress, userAgent, errorCode, "
                  "userIdentity.arn AS arn, recipientAccountId")

# Athena's documented CloudTrail table (create-cloudtrail-table.html), its camelCase JSON names.
USER_IDENTITY = (
    'STRUCT("type" VARCHAR, principalId VARCHAR, arn VARCHAR, accountId VARCHAR, invokedBy VARCHAR, '
    'accessKeyId VARCHAR, userName VARCHAR, onBehalfOf STRUCT(userId VARCHAR, identityStoreArn VARCHAR), '
    'sessionContext STRUCT(attributes STRUCT(mfaAuthenticated VARCHAR, creationDate VARCHAR), '
    'sessionIssuer STRUCT("type" VARCHAR, principalId VARCHAR, arn VARCHAR, accountId VARCHAR, userName VARCHAR), '
    'ec2RoleDelivery VARCHAR, webIdFederationData JSON))')
RECORD = (
    "STRUCT(eventVersion VARCHAR, userIdentity JSON, eventTime VARCHAR, eventSource VARCHAR, eventName VARCHAR, "
    "awsRegion VARCHAR, sourceIPAddress VARCHAR, userAgent VARCHAR, errorCode VARCHAR, errorMessage VARCHAR, "
    "requestParameters JSON, responseElements JSON, additionalEventData JSON, requestID VARCHAR, eventID VARCHAR, "
    "resources JSON, eventType VARCHAR, apiVersion VARCHAR, readOnly BOOLEAN, recipientAccountId VARCHAR, "
    "serviceEventDetails JSON, sharedEventID VARCHAR, vpcEndpointId VARCHAR, vpcEndpointAccountId VARCHAR, "
    "eventCategory VARCHAR, managementEvent BOOLEAN, addendum JSON, sessionCredentialFromConsole VARCHAR, "
    "edgeDeviceDetails JSON, tlsDetails STRUCT(tlsVersion VARCHAR, cipherSuite VARCHAR, clientProvidedHostHeader VARCHAR))")


def lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def store_view(store: str) -> str:
    return SETUP.replace("'store/events/**/*.parquet'", lit(f"{Path(store).resolve()}/events/**/*.parquet"))


def raw_view(trail: str, start: str, end: str) -> str:
    files = f"{Path(trail).resolve()}/AWSLogs/**/CloudTrail/*/*/*/*/*.json.gz"
    t = "CAST(r.eventTime AS TIMESTAMPTZ)"
    return f"""CREATE VIEW events AS
SELECT r.* REPLACE ({t} AS eventTime,
                    CASE WHEN json_type(r.userIdentity) = 'OBJECT' THEN TRY_CAST(r.userIdentity AS {USER_IDENTITY}) END
                      AS userIdentity),
       filename AS sourceLogFile, CAST({t} AS DATE) AS date
FROM (SELECT unnest(Records) AS r, filename
      FROM read_json({lit(files)}, format = 'auto', records = true, filename = true,
                     columns = {{'Records': '{RECORD}[]'}}))
WHERE {t} >= TIMESTAMPTZ {lit(start + ' 00:00:00+00')} AND {t} < TIMESTAMPTZ {lit(end + ' 00:00:00+00')}"""


def connect(view: str):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(view)
    return con


def time_query(view: str, sql: str, runs: int) -> dict:
    times, rows = [], None
    for _ in range(runs):
        con = connect(view)
        t0 = time.perf_counter()
        try:
            out = con.execute(sql).fetchall()
        except Exception as e:  # report, don't hide
            return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
        times.append(time.perf_counter() - t0)
        if rows is not None and rows != len(out):
            return {"error": f"row count changed between runs: {rows} vs {len(out)}"}
        rows = len(out)
        con.close()
    return {"seconds": statistics.median(times), "runs": times, "rows": rows}


def explain(view: str, sql: str) -> dict:
    con = connect(view)
    plan = "\n".join(r[1] for r in con.execute("EXPLAIN ANALYZE " + sql).fetchall())
    scanned = [tuple(map(int, m)) for m in re.findall(r"Row Groups Scanned:\s*(\d+)\s*/\s*(\d+)", plan)]
    read = re.search(r"Data Read:\s*([\d.]+\s*\w+)", plan)
    return {"rowGroupsScanned": sum(a for a, _ in scanned) if scanned else None,
            "rowGroups": sum(b for _, b in scanned) if scanned else None,
            "dataRead": read.group(1) if read else None}


def draw_needles(store: str, seed: int) -> dict:
    """One needle per needle query: the first non-NULL value among rows drawn as needle_share.py draws."""
    files = f"{Path(store).resolve()}/events/**/*.parquet"
    con = duckdb.connect()
    n_rows = con.execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchone()[0]
    rng = random.Random(seed)
    picks = sorted(rng.randrange(n_rows) for _ in range(7))
    needles = {}
    for name, column, _path, fixed in needle_share.QUERIES:
        if fixed is not None:
            needles[name] = (column, fixed)
            continue
        for i in picks:
            v = con.execute(f"SELECT {column} FROM read_parquet(?) LIMIT 1 OFFSET ?", [files, i]).fetchone()[0]
            if v is not None:
                needles[name] = (column, v)
                break
    return needles


def shares(store: str) -> dict:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        needle_share.main([store, "--json"])
    return {q["query"]: q for q in json.loads(buf.getvalue())["queries"]}


def du(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def fmt_s(r: dict) -> str:
    return "error" if "error" in r else f"{r['seconds']:.3f}"


def markdown(rep: dict) -> str:
    out = [f"# Query benchmark (benches/query_bench.py, {rep['startedAt']})", "",
           f"- load at start: `{rep['uptimeStart']}`", f"- load at end: `{rep['uptimeEnd']}`",
           f"- DuckDB {rep['duckdb']}, threads default ({rep['threads']}), {os.cpu_count()} CPUs; "
           f"median of {rep['runs']} runs on the stores, {rep['rawRuns']} on the raw JSON; "
           "fresh connection per run",
           f"- before: `{rep['before']}`; after: `{rep['after']}`; raw: `{rep['raw']}` "
           f"({rep['rawFiles']:,} .json.gz files, {rep['rawBytes']:,} bytes), events with "
           f"{rep['start']} <= eventTime < {rep['end']}",
           f"- events: before {rep['events']['before']:,}, after {rep['events']['after']:,}, "
           f"raw view {rep['events']['raw']:,}",
           f"- store size (du -sb events/): before {rep['sizes']['before']:,} bytes, "
           f"after {rep['sizes']['after']:,} bytes", "",
           "| query | rows | raw JSON s | before s | after s | after÷raw | needle share before | needle share after |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for q in rep["queries"]:
        t = q["timings"]
        counts = {k: v.get("rows") for k, v in t.items()}
        if len(set(counts.values())) == 1 and None not in counts.values():
            rows = f"{counts['after']:,}"
        else:
            rows = "**MISMATCH** " + " / ".join(f"{k} {'error' if v is None else v}" for k, v in counts.items())
        ratio = (f"{t['after']['seconds'] / t['raw']['seconds']:.4f}"
                 if "seconds" in t["after"] and "seconds" in t["raw"] and t["raw"]["seconds"] else "–")
        sb = q.get("shareBefore")
        sa = q.get("shareAfter")
        out.append(f"| {q['name']} | {rows} | {fmt_s(t['raw'])} | {fmt_s(t['before'])} | {fmt_s(t['after'])} | {ratio} | "
                   f"{'' if sb is None else f'{sb:.1%}'} | {'' if sa is None else f'{sa:.1%}'} |")
    errors = [(q["name"], k, v["error"]) for q in rep["queries"] for k, v in q["timings"].items() if "error" in v]
    if errors:
        out += ["", "Errors:"] + [f"- {n} on {k}: {e}" for n, k, e in errors]
    tot = {k: sum(q["timings"][k].get("seconds", 0) for q in rep["queries"]) for k in ("raw", "before", "after")}
    out += ["", f"Sum of medians: raw JSON {tot['raw']:.1f} s, before {tot['before']:.2f} s, after {tot['after']:.2f} s.",
            "", "Needle queries: the needle (one per query, drawn from the after store, seed "
            f"{rep['needleSeed']}) and DuckDB's own pruning (EXPLAIN ANALYZE: row groups scanned / total, data read):", "",
            "| needle query | value | before: row groups | before: data read | after: row groups | after: data read |",
            "|---|---|---:|---:|---:|---:|"]
    for q in rep["queries"]:
        if "needle" not in q:
            continue
        eb, ea = q["explain"]["before"], q["explain"]["after"]
        out.append(f"| {q['name']} | `{q['needle']}` | {eb['rowGroupsScanned']} / {eb['rowGroups']} | {eb['dataRead']} | "
                   f"{ea['rowGroupsScanned']} / {ea['rowGroups']} | {ea['dataRead']} |")
    b = rep["bloomProbe"]
    e = next(q for q in rep["queries"] if q["name"] == "needle: eventID")
    out += ["", f"eventID needle `{b['value']}`: after store {fmt_s(e['timings']['after'])} s vs before store "
            f"{fmt_s(e['timings']['before'])} s (raw JSON {fmt_s(e['timings']['raw'])} s); "
            f"parquet_bloom_probe on the after store excludes {b['after']['excluded']} of {b['after']['rowGroups']} "
            f"row groups ({b['after']['files']} files); on the before store {b['before']['excluded']} of "
            f"{b['before']['rowGroups']}.",
            "", "Needle share: benches/needle_share.py (median over its 7 needles, seed 33) of the query's projected "
            "columns' bytes that min/max and bloom filters cannot skip."]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--raw", required=True, help="the trail folder the stores were copied from")
    ap.add_argument("--start", default="2026-09-01", help="the copy's --start (a day)")
    ap.add_argument("--end", default="2026-10-06", help="the copy's --end (a day)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--raw-runs", type=int, default=None, help="runs on the raw JSON (default --runs)")
    ap.add_argument("--needle-seed", type=int, default=33)
    ap.add_argument("--only", help="regex: run only the queries whose name matches")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args(argv)
    raw_runs = a.raw_runs or a.runs
    views = {"raw": raw_view(a.raw, a.start, a.end), "before": store_view(a.before), "after": store_view(a.after)}
    con = duckdb.connect()
    rep = {"startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "uptimeStart": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
           "duckdb": duckdb.__version__, "threads": con.execute("SELECT current_setting('threads')").fetchone()[0],
           "runs": a.runs, "rawRuns": raw_runs, "before": a.before, "after": a.after, "raw": a.raw,
           "start": a.start, "end": a.end, "needleSeed": a.needle_seed,
           "sizes": {k: du(Path(getattr(a, k)) / "events") for k in ("before", "after")}}
    gz = list(Path(a.raw).glob("AWSLogs/**/CloudTrail/*/*/*/*/*.json.gz"))
    rep["rawFiles"], rep["rawBytes"] = len(gz), sum(p.stat().st_size for p in gz)
    rep["events"] = {k: connect(v).execute("SELECT count(*) FROM events").fetchone()[0] for k, v in views.items()}

    needles = draw_needles(a.after, a.needle_seed)
    share_b, share_a = shares(a.before), shares(a.after)
    queries = [{"name": qid, "sql": sql.strip().rstrip(";")} for qid, sql in COOKBOOK.items()]
    for name, (column, value) in needles.items():
        queries.append({"name": f"needle: {name}", "needle": value, "column": column,
                        "sql": f"SELECT {NEEDLE_COLUMNS} FROM events WHERE {column} = {lit(value)}",
                        "shareBefore": share_b.get(name, {}).get("medianShare"),
                        "shareAfter": share_a.get(name, {}).get("medianShare")})
    if a.only:
        queries = [q for q in queries if re.search(a.only, q["name"])]
    for q in queries:
        q["timings"] = {}
        for src in ("raw", "before", "after"):
            q["timings"][src] = time_query(views[src], q["sql"], raw_runs if src == "raw" else a.runs)
            print(f"{q['name']:<32} {src:<7} {fmt_s(q['timings'][src]):>8} s  rows {q['timings'][src].get('rows')}",
                  file=sys.stderr, flush=True)
        if "needle" in q:
            q["explain"] = {src: explain(views[src], q["sql"]) for src in ("before", "after")}

    ev = needles["eventID"][1]
    rep["bloomProbe"] = {"value": ev}
    for src in ("before", "after"):
        files = f"{Path(getattr(a, src)).resolve()}/events/**/*.parquet"
        ex, n, f = con.execute("SELECT count(*) FILTER (WHERE bloom_filter_excludes), count(*), count(DISTINCT file_name) "
                               "FROM parquet_bloom_probe(?, 'eventID', ?)", [files, ev]).fetchone()
        rep["bloomProbe"][src] = {"excluded": ex, "rowGroups": n, "files": f}
    rep["queries"] = queries
    rep["uptimeEnd"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    if a.json:
        print(json.dumps(rep, indent=2))
    if a.markdown or not a.json:
        print(markdown(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
