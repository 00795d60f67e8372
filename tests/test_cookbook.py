"""docs/queries.md runs: every DuckDB query gives the planted answer on the cookbook trail
(tests/cookbook_trail.py, with near misses each query must leave out); every Athena query parses
as Trino SQL (sqlglot, dialect "trino": a parse check, not Athena itself)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import cookbook_trail
from conftest import REPO, duck

DOC = (REPO / "docs" / "queries.md").read_text()
BLOCKS = re.findall(r"```sql (duckdb|athena) id=([\w-]+)\n(.*?)```", DOC, re.S)
DUCKDB = {qid: sql for engine, qid, sql in BLOCKS if engine == "duckdb"}
ATHENA = {qid: sql for engine, qid, sql in BLOCKS if engine == "athena"}


def test_the_cookbook_has_both_spellings_of_every_question():
    assert 15 <= len(DUCKDB) <= 20, sorted(DUCKDB)
    assert set(DUCKDB) == set(ATHENA)
    assert "docs/queries.md" in (REPO / "README.md").read_text()


@pytest.fixture(scope="module")
def cookbook_store(trailcopy, tmp_path_factory):
    root = tmp_path_factory.mktemp("cookbook")
    expected = cookbook_trail.write(str(root / "trail"))
    store = root / "store"
    r = trailcopy("copy", "--source", root / "trail", "--store", store, "--start", cookbook_trail.RANGE[0],
                  "--end", cookbook_trail.RANGE[1], "--retention-days", "36500", "--json")
    assert r.returncode == 0, r.describe()
    return store, expected


def test_every_query_has_a_known_answer(cookbook_store):
    _, expected = cookbook_store
    assert set(expected) == set(DUCKDB)


@pytest.mark.parametrize("qid", sorted(DUCKDB))
def test_duckdb_query_gives_the_planted_answer(cookbook_store, qid):
    store, expected = cookbook_store
    con, src = duck(store)
    con.execute(f"CREATE VIEW events AS SELECT * FROM {src}")
    rows = {tuple(r) for r in con.execute(DUCKDB[qid]).fetchall()}
    assert rows == expected[qid], f"{qid}:\n{DUCKDB[qid]}"


@pytest.mark.parametrize("qid", sorted(ATHENA))
def test_athena_query_parses_as_trino(qid):
    import sqlglot

    tree = sqlglot.parse_one(ATHENA[qid], read="trino")
    assert tree.find(sqlglot.exp.Table).sql(dialect="trino") == "trailcopy.events"


def test_the_stack_saves_every_athena_query_in_its_work_group():
    """Issue 31 point 6: the stack's work group holds the cookbook's Athena queries as saved queries
    (AWS::Athena::NamedQuery), equal to docs/queries.md but for the table, which the query's database
    (the stack's Glue database) names; each still parses as Trino SQL."""
    import sqlglot
    import sm_harness as h

    named = {r["Properties"]["Name"]: r["Properties"] for r in h.load_template()["Resources"].values()
             if r["Type"] == "AWS::Athena::NamedQuery"}
    assert set(named) == set(ATHENA)
    for qid, sql in ATHENA.items():
        q = named[qid]
        assert q["QueryString"].strip() == sql.strip().replace("trailcopy.events", "events"), qid
        assert q["Database"] == {"Ref": "GlueDatabase"} and q["WorkGroup"] == {"Ref": "AthenaWorkGroup"}, qid
        assert sqlglot.parse_one(q["QueryString"], read="trino").find(sqlglot.exp.Table).sql(dialect="trino") == "events"
        heading = re.search(rf"## ([^\n]+)\n(?:(?!## ).)*?```sql athena id={qid}\n", DOC, re.S).group(1)
        assert q["Description"] == heading.replace('"', "'"), qid
