"""The store people query: userIdentity/tlsDetails structs, the Glue table against the Parquet
files, `trailcopy export` (range, S3, closed pipe), the generator's odd userIdentity shapes."""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from conftest import GEN_ORG_RANGE, REPO, base_env, export_store, source_dir
from expect import canon, expected


@pytest.fixture(scope="module")
def store(trailcopy, gen_trail_org, tmp_path_factory):
    s = tmp_path_factory.mktemp("query-store") / "store"
    r = trailcopy("copy", "--source", source_dir(gen_trail_org), "--store", s, "--start", GEN_ORG_RANGE[0],
                  "--end", GEN_ORG_RANGE[1], "--json")
    assert r.returncode == 1, r.describe()  # the trail's defects
    return s


def test_generated_trail_has_odd_user_identities(gen_trail_org):
    """The round-trip tests see the shapes the struct cannot hold."""
    uis = [json.loads(e["json"]) for e in gen_trail_org["events"] if e["valid"]]
    kinds = Counter()
    for e in uis:
        ui = e.get("userIdentity", "absent")
        kinds["absent" if ui == "absent" else "null" if ui is None else "dict" if isinstance(ui, dict) else "other"] += 1
        if isinstance(ui, dict) and (set(ui) - {"type", "principalId", "arn", "accountId", "accessKeyId", "userName",
                                                "sessionContext", "invokedBy", "onBehalfOf"}
                                     or any(not isinstance(v, (str, dict)) for v in ui.values())):
            kinds["odd subfield"] += 1
    assert kinds["absent"] and kinds["null"] and kinds["other"] and kinds["odd subfield"] >= 2, kinds


def parquet_hive_types(path: Path) -> dict:
    """Column -> Hive type of one Parquet file, from its schema tree (DuckDB's parquet_schema)."""
    import duckdb

    rows = duckdb.connect().execute(
        "SELECT name, type, converted_type, logical_type, num_children FROM parquet_schema(?)", [str(path)]).fetchall()
    pos = 1  # rows[0] is the root

    def node():
        nonlocal pos
        name, typ, conv, logical, children = rows[pos]
        pos += 1
        if children:
            return name, "struct<" + ",".join(f"{n}:{t}" for n, t in (node() for _ in range(children))) + ">"
        if typ == "BOOLEAN":
            return name, "boolean"
        if typ == "INT64" and "Timestamp" in str(logical):
            return name, "timestamp"
        assert typ == "BYTE_ARRAY" and conv == "UTF8", (name, typ, conv)
        return name, "string"

    return dict(node() for _ in range(rows[0][4]))


def test_glue_table_declares_every_parquet_column_with_its_type(store):
    """Glue columns ⊇ Parquet columns, struct types field for field in CloudTrail's casing."""
    import sm_harness

    doc = sm_harness.load_template()
    cols = {c["Name"]: c["Type"] for c in doc["Resources"]["EventsTable"]["Properties"]["TableInput"]
            ["StorageDescriptor"]["Columns"]}
    files = sorted(store.glob("events/**/*.parquet"))
    assert files
    parquet = parquet_hive_types(files[0])
    assert "userIdentity" in parquet and parquet["userIdentity"].startswith("struct<type:string,principalId:string")
    for name, typ in parquet.items():
        assert name in cols, f"Glue lacks column {name} ({typ})"
        assert cols[name] == typ, f"{name}: Glue {cols[name]} vs Parquet {typ}"


def test_duckdb_reads_structs_and_struct_filters_match_the_originals(store, gen_trail_org):
    from conftest import duck

    con, src = duck(store)
    types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {src})").fetchall())
    assert types["userIdentity"].startswith("STRUCT(") and types["tlsDetails"].startswith("STRUCT(")
    exp = expected(gen_trail_org, *GEN_ORG_RANGE)
    copied = [json.loads(j) for j in exp["copied"]]

    def ui(e):
        return e.get("userIdentity") if isinstance(e.get("userIdentity"), dict) else {}

    want = Counter(ui(e).get("sessionContext", {}).get("sessionIssuer", {}).get("arn") for e in copied
                   if ui(e).get("type") == "AssumedRole" and isinstance(ui(e).get("sessionContext", {}).get("sessionIssuer"), dict)
                   and isinstance(ui(e)["sessionContext"]["sessionIssuer"].get("arn"), str))
    got = Counter(dict(con.execute(f"""SELECT userIdentity.sessionContext.sessionIssuer.arn, count(*) FROM {src}
        WHERE userIdentity.type = 'AssumedRole' AND userIdentity.sessionContext.sessionIssuer.arn IS NOT NULL
        GROUP BY 1""").fetchall()))
    assert got == want and got
    roots = con.execute(f"SELECT count(*) FROM {src} WHERE userIdentity.type = 'Root'").fetchone()[0]
    assert roots == sum(1 for e in copied if ui(e).get("type") == "Root")
    buckets = con.execute(f"SELECT count(*) FROM {src} WHERE requestParameters->>'$.bucketName' IS NOT NULL").fetchone()[0]
    assert buckets == sum(1 for e in copied if isinstance(e.get("requestParameters"), dict)
                          and isinstance(e["requestParameters"].get("bucketName"), str))


def test_export_range_gives_the_events_of_the_range(trailcopy, store, gen_trail_org):
    start, end = "2024-03-02T06:00:00Z", "2024-03-02T18:00:00Z"
    got = Counter(canon(e) for e in export_store(trailcopy, store, "--start", start, "--end", end))
    want = Counter(canon(json.loads(j)) for j in expected(gen_trail_org, *GEN_ORG_RANGE)["copied"]
                   if start <= json.loads(j)["eventTime"][:19] + "Z" < end)
    assert got == want and len(got) > 100


def test_export_bad_range_is_an_invalid_request(trailcopy, store):
    r = trailcopy("export", "--store", store, "--start", "yesterday-ish")
    assert r.returncode == 2 and "--start" in r.stderr, r.describe()


def test_export_is_quiet_on_a_closed_pipe(trailcopy_bin, store):
    p = subprocess.run(f"'{trailcopy_bin}' export --store '{store}' | head -n 1", shell=True, capture_output=True,
                       text=True, env=base_env(), timeout=60)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert json.loads(p.stdout)["eventVersion"]


def test_export_from_an_s3_store(trailcopy, moto_s3, store, tmp_path):
    s3 = moto_s3.client()
    s3.create_bucket(Bucket="export-store")
    moto_s3.upload_dir("export-store", str(store), "trail/")
    local = Counter(canon(e) for e in export_store(trailcopy, store))
    remote = Counter(canon(e) for e in export_store(trailcopy, "s3://export-store/trail/", env=moto_s3.env))
    assert remote == local and local
