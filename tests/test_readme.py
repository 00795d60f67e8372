"""The README's first command and its DuckDB queries, run as written (issue 9 point 7): the commands and
SQL are read from README.md, so they cannot drift from what the tool does.

The demo store path in the README (/tmp/trailcopy-demo) is replaced by a temporary folder, in the
commands and in the SQL alike; the built binary stands in for target/debug/trailcopy.
"""

from __future__ import annotations

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


def test_the_readme_sql_runs_against_the_demo_store(demo):
    import duckdb

    store, _ = demo
    queries = [b for b in blocks("sql") if b.startswith("-- DuckDB")]
    assert queries, "no DuckDB SQL in the README"
    con = duckdb.connect()
    ran = 0
    for block in queries:
        assert DEMO_STORE in block, f"the README's SQL must read the store the first command made:\n{block}"
        for statement in filter(str.strip, block.replace(DEMO_STORE, str(store)).split(";")):
            # Counted, not fetched: the rows (TIMESTAMPTZ) would need pytz in Python.
            rows = con.execute(f"SELECT count(*) FROM ({statement}\n)").fetchone()[0]
            assert rows > 0, f"no rows from:\n{statement}"
            ran += 1
    assert ran >= 3
