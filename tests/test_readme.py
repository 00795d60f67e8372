"""The README's first command and its DuckDB queries, run as written (issue 9 point 7): the commands and
SQL are read from README.md, so they cannot drift from what the tool does.

The demo store path in the README (/tmp/trailcopy-demo) is replaced by a temporary folder, in the
commands and in the SQL alike; the built binary stands in for target/debug/trailcopy.
"""

from __future__ import annotations

import gzip
import json
import re
import shlex
import subprocess

import pytest

from conftest import REPO, base_env

README = (REPO / "README.md").read_text()
DEMO_STORE = "/tmp/trailcopy-demo"
BINARY = "target/debug/trailcopy"


def blocks(lang: str) -> list:
    return re.findall(rf"^```{lang}\n(.*?)^```", README, flags=re.S | re.M)


def first_command() -> list:
    return [line for line in blocks("bash")[0].splitlines() if line.strip()]


def test_the_first_command_shows_the_build_or_says_how_long_it_takes():
    build = first_command()[0]
    assert build.startswith("cargo build") and " -q" not in build and "--quiet" not in build, build
    assert re.search(r"\d+ minutes", build), f"the first build's time is not given: {build}"


@pytest.fixture(scope="module")
def demo(trailcopy_bin, tmp_path_factory):
    store = tmp_path_factory.mktemp("readme") / "demo"
    line = first_command()[1]
    assert DEMO_STORE in line and BINARY in line, line
    outputs = []
    for part in line.split("&&"):
        argv = shlex.split(part.replace(DEMO_STORE, str(store)))
        if argv[:2] == ["rm", "-rf"]:
            continue
        assert argv[0] == BINARY, f"the demo runs something else: {part}"
        p = subprocess.run([trailcopy_bin, *argv[1:]], capture_output=True, text=True, cwd=REPO, env=base_env(),
                           stdin=subprocess.DEVNULL, timeout=120)
        assert p.returncode == 0, f"$ {part}\nexit {p.returncode}\n{p.stdout}\n{p.stderr}"
        outputs.append(p.stdout)
    return store, "".join(outputs)


def test_the_readme_shows_what_the_first_command_prints(demo):
    store, printed = demo
    shown = blocks("text")[0]
    # Lines that do not depend on the day or the clone's path must match exactly.
    varies = re.compile(r"^(copy \S+: |  range |  source |  store |/tmp/trailcopy-demo: )")
    want = [line for line in shown.splitlines() if line.strip() and not varies.match(line)]
    got = [line for line in printed.splitlines()
           if line.strip() and not varies.match(line) and not line.startswith(f"{store}: ")]
    assert got == want, "README's demo output is out of date:\n" + "\n".join(got)
    counts = re.search(r"^/tmp/trailcopy-demo: (.*)$", shown, flags=re.M).group(1)
    assert f"{store}: {counts}" in printed, printed


def sql_statements(store) -> list:
    """Every statement of the README's DuckDB blocks, on `store`."""
    queries = [b for b in blocks("sql") if b.startswith("-- DuckDB")]
    assert queries, "no DuckDB SQL in the README"
    out = []
    for block in queries:
        assert DEMO_STORE in block, f"the README's SQL must read the store the first command made:\n{block}"
        out += [s.strip() for s in block.replace(DEMO_STORE, str(store)).split(";") if s.strip()]
    return out


def test_the_readme_states_the_duckdb_version_its_sql_is_tested_with():
    import duckdb

    stated = re.findall(r"tested with DuckDB (\d+\.\d+\.\d+)", README)
    assert len(stated) == 1, f"the README must state once the DuckDB version its SQL is tested with: {stated}"
    pinned = re.search(r"^duckdb==(\S+)$", (REPO / ".ci" / "requirements.txt").read_text(), flags=re.M)
    assert pinned and pinned.group(1) == stated[0], f"README states DuckDB {stated[0]}, .ci/requirements.txt pins {pinned}"
    assert duckdb.__version__ == stated[0], f"the tests run DuckDB {duckdb.__version__}, the README states {stated[0]}"
    assert f"pip install duckdb=={stated[0]}" in README, "the README's `pip install duckdb` must install that version"


def test_the_readme_sql_runs_against_the_demo_store(demo):
    import duckdb

    store, _ = demo
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    statements = sql_statements(store)
    for statement in statements:
        # Fetched, not only counted: every value (TIMESTAMPTZ included: pytz) reaches Python.
        rows = con.execute(statement).fetchall()
        assert rows, f"no rows from:\n{statement}"
    assert len(statements) >= 3


def test_the_readme_sql_keeps_json_operators_in_parentheses():
    # DuckDB before 2.0 parses `a = 1 AND x->>'$.k' = 'v'` as `(a = 1 AND x) ->> ('$.k' = 'v')`
    # (->> binds looser than = and AND): written so, a query fails or returns wrong rows there.
    bare = []
    for block in blocks("sql"):
        for m in re.finditer(r"(\S*?)([\w.]+)\s*->>?\s*('[^']*'|\w+)(\S?)", block):
            if not (m.group(1).endswith("(") and m.group(4) == ")"):
                bare.append(m.group(0))
    assert not bare, f"JSON operators outside parentheses in the README's SQL: {bare}"


def sample_console_login_failures() -> list:
    """The ConsoleLogin failures of the sample trail the first command copies (its range, each event of
    a day folder once), read from the log files: (sourceIPAddress, userAgent, userName)."""
    seen, out = set(), []
    for f in sorted((REPO / "examples" / "sample-trail").glob("AWSLogs/*/*/CloudTrail/*/*/*/*/*.json.gz")):
        for e in json.loads(gzip.decompress(f.read_bytes()))["Records"]:
            key = (f.parent, e.get("eventID") or json.dumps(e, sort_keys=True))  # 1.0 events: by content
            if not ("2026-11-01" <= e["eventTime"] < "2026-11-03") or key in seen:
                continue
            seen.add(key)
            if e["eventName"] == "ConsoleLogin" and (e.get("responseElements") or {}).get("ConsoleLogin") == "Failure":
                out.append((e["sourceIPAddress"], e["userAgent"], e["userIdentity"].get("userName")))
    return sorted(out)


def test_the_console_login_failure_query_finds_every_failure(demo):
    import duckdb

    store, _ = demo
    want = sample_console_login_failures()
    assert len(want) >= 3, "the sample trail must hold failed console logins"
    query = [s for s in sql_statements(store) if "'ConsoleLogin'" in s and "'Failure'" in s]
    assert len(query) == 1, "the README's SQL must have one query for failed console logins"
    got = sorted(duckdb.connect().execute(query[0]).fetchall())
    assert got == want, f"{len(got)} rows, the sample trail has {len(want)} failed console logins:\n{query[0]}"
