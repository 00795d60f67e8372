"""The Glue table of template.yaml against the Parquet files of a real store: every column the files
hold is declared with a compatible type, so Athena sees every field (Athena reads Parquet columns by
name; a file column the table lacks is invisible). The store is a small copy of examples/sample-trail
with the trailcopy binary; DuckDB reads its Parquet schema.

Types: Glue's Hive type names (https://docs.aws.amazon.com/athena/latest/ug/data-types.html) mapped
to the DuckDB types that read the same Parquet column; struct<...>, array<...> and map<...> are
compared field by field (Athena matches struct fields by name, case-insensitively), so struct
columns (issue 12) are checked the same way.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sm_harness as h  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "sample-trail"

# Glue (Hive) scalar -> the DuckDB types a Parquet column of that type reads as.
SCALARS = {
    "string": {"VARCHAR"}, "varchar": {"VARCHAR"}, "char": {"VARCHAR"},
    "boolean": {"BOOLEAN"},
    "tinyint": {"TINYINT"}, "smallint": {"SMALLINT"}, "int": {"INTEGER"}, "integer": {"INTEGER"},
    "bigint": {"BIGINT"}, "float": {"FLOAT"}, "double": {"DOUBLE"},
    "timestamp": {"TIMESTAMP WITH TIME ZONE", "TIMESTAMP"}, "date": {"DATE"}, "binary": {"BLOB"},
}


def _split_top(text: str, sep: str = ",") -> list[str]:
    out, depth, cur = [], 0, ""
    for c in text:
        if c in "<(":
            depth += 1
        elif c in ">)":
            depth -= 1
        if c == sep and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += c
    if cur.strip():
        out.append(cur.strip())
    return out


def glue_type(t: str):
    """struct<a:string,b:array<int>> -> ("struct", [("a", "string"), ("b", ("array", "int"))])"""
    t = t.strip()
    low = t.lower()
    if low.startswith("struct<") and t.endswith(">"):
        fields = []
        for f in _split_top(t[7:-1]):
            name, _, ft = f.partition(":")
            fields.append((name.strip().strip("`"), glue_type(ft)))
        return ("struct", fields)
    if low.startswith("array<") and t.endswith(">"):
        return ("array", glue_type(t[6:-1]))
    if low.startswith("map<") and t.endswith(">"):
        k, v = _split_top(t[4:-1])
        return ("map", glue_type(k), glue_type(v))
    return re.sub(r"\(.*\)$", "", low)


def duck_type(t: str):
    """STRUCT("type" VARCHAR, b INTEGER[]) -> ("struct", [("type", "VARCHAR"), ("b", ("array", "INTEGER"))])"""
    t = t.strip()
    if t.endswith("[]"):
        return ("array", duck_type(t[:-2]))
    if t.upper().startswith("STRUCT(") and t.endswith(")"):
        fields = []
        for f in _split_top(t[7:-1]):
            m = re.match(r'^("(?:[^"]|"")+"|\S+)\s+(.*)$', f)
            name = m.group(1).strip('"').replace('""', '"')
            fields.append((name, duck_type(m.group(2))))
        return ("struct", fields)
    if t.upper().startswith("MAP(") and t.endswith(")"):
        k, v = _split_top(t[4:-1])
        return ("map", duck_type(k), duck_type(v))
    return t.upper()


def compatible(glue, duck) -> str | None:
    """None when a Glue type reads the Parquet column DuckDB reports, else why not."""
    if isinstance(glue, str):
        ok = isinstance(duck, str) and duck in SCALARS.get(glue, set())
        return None if ok else f"Glue {glue} cannot read Parquet {duck}"
    if not isinstance(duck, tuple) or duck[0] != glue[0]:
        return f"Glue {glue[0]} vs Parquet {duck}"
    if glue[0] == "array":
        return compatible(glue[1], duck[1])
    if glue[0] == "map":
        return compatible(glue[1], duck[1]) or compatible(glue[2], duck[2])
    declared = {n.lower(): ft for n, ft in glue[1]}
    for name, ft in duck[1]:
        if name.lower() not in declared:
            return f"struct field {name} is not declared"
        why = compatible(declared[name.lower()], ft)
        if why:
            return f"{name}: {why}"
    return None


def template_columns() -> dict[str, str]:
    t = h.load_template()["Resources"]["EventsTable"]["Properties"]["TableInput"]
    cols = {c["Name"]: c["Type"] for c in t["StorageDescriptor"]["Columns"]}
    cols.update({c["Name"]: c["Type"] for c in t["PartitionKeys"]})
    return cols


def test_type_comparison_itself():
    assert compatible(glue_type("string"), duck_type("VARCHAR")) is None
    assert compatible(glue_type("timestamp"), duck_type("TIMESTAMP WITH TIME ZONE")) is None
    assert compatible(glue_type("boolean"), duck_type("VARCHAR")) is not None
    s = "struct<type:string,sessionContext:struct<attributes:struct<mfaAuthenticated:string>>,ids:array<string>>"
    d = 'STRUCT("type" VARCHAR, sessionContext STRUCT(attributes STRUCT(mfaAuthenticated VARCHAR)), ids VARCHAR[])'
    assert compatible(glue_type(s), duck_type(d)) is None
    assert "arn" in compatible(glue_type("struct<type:string>"), duck_type('STRUCT("type" VARCHAR, arn VARCHAR)'))
    assert compatible(glue_type("map<string,bigint>"), duck_type("MAP(VARCHAR, BIGINT)")) is None


def test_glue_table_declares_every_parquet_column_of_a_real_store(trailcopy, tmp_path):
    import duckdb

    store = tmp_path / "store"
    r = trailcopy("copy", "--source", SAMPLE, "--store", store, "--start", "2026-11-01", "--end", "2026-11-03",
                  "--json")
    assert r.returncode == 0, r.describe()
    files = sorted(store.glob("events/**/*.parquet"))
    assert files, "the copy wrote no Parquet file"
    con = duckdb.connect()
    declared = template_columns()
    problems = []
    for f in files:
        rows = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{f}', hive_partitioning = false)").fetchall()
        assert rows
        for name, dtype, *_ in rows:
            if name not in declared:
                problems.append(f"{f.name}: Parquet column {name} ({dtype}) is not in the Glue table")
                continue
            why = compatible(glue_type(declared[name]), duck_type(dtype))
            if why:
                problems.append(f"{f.name}: column {name}: {why}")
    assert not problems, "\n".join(sorted(set(problems)))
    # The partition column comes from the path, as the table's projection template writes it.
    parts = {p.parent.name for p in files}
    assert all(re.fullmatch(r"date=\d{4}-\d{2}-\d{2}", p) for p in parts), parts
    assert declared["date"] == "string"
