#!/usr/bin/env python3
"""The share of a store's bytes a needle query must read (issue 33).

A reader can skip a row group only by its min/max statistics or its bloom filter. For each needle
query (equality on one column), this reads every row group's metadata with DuckDB
(`parquet_metadata`; bloom filters probed as the Parquet spec defines them, checked against
`parquet_bloom_probe`) and counts the compressed bytes of the query's
projected columns in the row groups neither can skip, against those columns' bytes in the whole
store. Needles are the values of rows drawn at random (seeded) from the store, so a frequent value
is drawn as often as it is logged: the share is what an investigation of a random event's key,
address, request or principal reads.

    benches/needle_share.py STORE [--needles 7] [--seed 33] [--json]

Reports per query the median share over its needles and the bytes of its columns, then the median
over the queries (issue 33 asks ≤ 10 %).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

import duckdb

# (name, column as DuckDB reads it, its path in parquet_metadata, a fixed needle or None: drawn)
QUERIES = [
    ("accessKeyId", "userIdentity.accessKeyId", "userIdentity, accessKeyId", None),
    ("sourceIPAddress", "sourceIPAddress", "sourceIPAddress", None),
    ("eventID", "eventID", "eventID", None),
    ("requestID", "requestID", "requestID", None),
    ("userIdentity.arn", "userIdentity.arn", "userIdentity, arn", None),
    ("recipientAccountId", "recipientAccountId", "recipientAccountId", None),
    ("ConsoleLogin", "eventName", "eventName", "ConsoleLogin"),
]

# What an investigation shows of each event it finds (besides the needle's own column).
PROJECTED = ["eventTime", "eventSource", "eventName", "awsRegion", "sourceIPAddress", "userAgent", "errorCode",
             "userIdentity, arn", "recipientAccountId"]


def row_groups(con, files: str) -> list[dict]:
    rows = con.execute(
        "SELECT file_name, row_group_id, path_in_schema, stats_min_value, stats_max_value, total_compressed_size, "
        "bloom_filter_offset, bloom_filter_length FROM parquet_metadata(?)", [files]).fetchall()
    groups: dict[tuple, dict] = {}
    for f, rg, path, lo, hi, size, offset, length in rows:
        g = groups.setdefault((f, rg), {"file": f, "rg": rg, "cols": {}})
        bloom = bloom_bits(f, offset, length) if offset is not None and length else None
        g["cols"][path] = {"min": lo, "max": hi, "size": size, "bloom": bloom}
    return list(groups.values())


def check_against_duckdb(con, groups: list[dict], column: str, path: str, values: list[str]):
    """Our probe must agree with DuckDB's wherever DuckDB can probe (top-level columns)."""
    for f in sorted({g["file"] for g in groups if g["cols"].get(path, {}).get("bloom")})[:5]:
        ours = {g["rg"]: g["cols"][path]["bloom"] for g in groups if g["file"] == f}
        for v in values:
            for _, rg, excludes in con.execute("SELECT * FROM parquet_bloom_probe(?, ?, ?)", [f, column, v]).fetchall():
                assert excludes == (not bloom_may_contain(ours[rg], v)), (f, rg, column, v)


# ----------------------------------------------------------------------------- bloom filters
# DuckDB's parquet_bloom_probe takes top-level columns only; the needles include struct fields
# (userIdentity.accessKeyId, .arn), which Spark and Trino probe. So the split-block bloom filter
# is probed here as the Parquet spec defines it (XXH64 of the plain-encoded value, 8 salted bits
# in one 256-bit block), and checked against DuckDB's probe on the top-level columns.
M64 = (1 << 64) - 1
P1, P2, P3, P4, P5 = (0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x85EBCA77C2B2AE63,
                      0x27D4EB2F165667C5)
SALT = (0x47B6137B, 0x44974D91, 0x8824AD5B, 0xA2B7289D, 0x705495C7, 0x2DF1424B, 0x9EFC4947, 0x5C6BFB31)


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & M64


def _round(acc: int, lane: int) -> int:
    return (_rotl((acc + lane * P2) & M64, 31) * P1) & M64


def xxh64(data: bytes, seed: int = 0) -> int:
    n, i = len(data), 0
    if n >= 32:
        v = [(seed + P1 + P2) & M64, (seed + P2) & M64, seed, (seed - P1) & M64]
        while i + 32 <= n:
            for k in range(4):
                v[k] = _round(v[k], int.from_bytes(data[i + 8 * k:i + 8 * k + 8], "little"))
            i += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & M64
        for k in range(4):
            h = ((h ^ _round(0, v[k])) * P1 + P4) & M64
    else:
        h = (seed + P5) & M64
    h = (h + n) & M64
    while i + 8 <= n:
        h = ((_rotl(h ^ _round(0, int.from_bytes(data[i:i + 8], "little")), 27)) * P1 + P4) & M64
        i += 8
    if i + 4 <= n:
        h = ((_rotl(h ^ (int.from_bytes(data[i:i + 4], "little") * P1) & M64, 23)) * P2 + P3) & M64
        i += 4
    while i < n:
        h = (_rotl(h ^ (data[i] * P5) & M64, 11) * P1) & M64
        i += 1
    h ^= h >> 33
    h = (h * P2) & M64
    h ^= h >> 29
    h = (h * P3) & M64
    return h ^ (h >> 32)


def bloom_bits(path: str, offset: int, length: int) -> bytes:
    """The filter's bitset: the last power-of-two bytes of [offset, offset + length) (the Thrift
    header before it is shorter than the smallest bitset, 32 bytes)."""
    with open(path, "rb") as f:
        f.seek(offset)
        raw = f.read(length)
    size = 1 << (len(raw).bit_length() - 1)
    return raw[-size:]


def bloom_may_contain(bits: bytes, value: str) -> bool:
    h = xxh64(value.encode())
    blocks = len(bits) // 32
    block = ((h >> 32) * blocks) >> 32
    key = h & 0xFFFFFFFF
    for i in range(8):
        word = int.from_bytes(bits[32 * block + 4 * i:32 * block + 4 * i + 4], "little")
        if not word & (1 << (((key * SALT[i]) & 0xFFFFFFFF) >> 27)):
            return False
    return True


def share(con, groups: list[dict], column: str, path: str, value: str) -> tuple[float, int, int, int]:
    """(share of the projected bytes read, bytes read, bytes in all, row groups read)."""
    cols = list(dict.fromkeys(PROJECTED + [path]))
    read = total = kept = 0
    for g in groups:
        size = sum(g["cols"][c]["size"] for c in cols if c in g["cols"])
        total += size
        c = g["cols"].get(path, {})
        by_stats = c.get("min") is not None and c.get("max") is not None and not (c["min"] <= value <= c["max"])
        by_bloom = c.get("bloom") is not None and not bloom_may_contain(c["bloom"], value)
        if by_stats or by_bloom:
            continue
        read += size
        kept += 1
    return read / total, read, total, kept


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store")
    ap.add_argument("--needles", type=int, default=7, help="needles drawn per query")
    ap.add_argument("--seed", type=int, default=33)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    files = str(Path(a.store) / "events" / "**" / "*.parquet")
    con = duckdb.connect()
    groups = row_groups(con, files)
    n_rows = con.execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchone()[0]
    rng = random.Random(a.seed)
    picks = sorted(rng.randrange(n_rows) for _ in range(a.needles))
    report = {"store": a.store, "rowGroups": len(groups), "files": len({g["file"] for g in groups}), "queries": []}
    for name, column, path, fixed in QUERIES:
        if fixed is not None:
            values = [fixed]
        else:
            values = []
            for i in picks:
                v = con.execute(f"SELECT {column} FROM read_parquet(?) LIMIT 1 OFFSET ?", [files, i]).fetchone()[0]
                if v is not None:
                    values.append(v)
        if "." not in column:
            check_against_duckdb(con, groups, column, path, values + ["no-such-value-" + str(a.seed)])
        results = [share(con, groups, column, path, v) for v in values]
        shares = [r[0] for r in results]
        report["queries"].append({
            "query": name, "needles": len(values), "medianShare": statistics.median(shares) if shares else None,
            "maxShare": max(shares) if shares else None,
            "medianRowGroupsRead": statistics.median(r[3] for r in results) if results else None,
            "projectedBytes": results[0][2] if results else 0,
        })
    medians = [q["medianShare"] for q in report["queries"] if q["medianShare"] is not None]
    report["medianShare"] = statistics.median(medians)
    if a.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{a.store}: {report['files']} files, {report['rowGroups']} row groups, {n_rows:,} rows")
    print(f"{'query':<20} {'needles':>7} {'median share':>13} {'max share':>10} {'row groups read':>16}")
    for q in report["queries"]:
        print(f"{q['query']:<20} {q['needles']:>7} {q['medianShare']:>12.1%} {q['maxShare']:>10.1%} "
              f"{q['medianRowGroupsRead']:>16}")
    print(f"median over the queries: {report['medianShare']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
