"""Issue 32, points 2 and 3: what a new user meets first.

2. every error a user can fix is ONE line on stderr starting with `error: ` (exactly one line
   holds `error:`), without ANSI escapes when stderr is a pipe, naming the flag and the fix, with
   exit 2 for a request trailcopy refuses (1 for no credentials: the copy is recorded FAILED);
3. `trailcopy list --store S [--json]`: a store's copies, newest first (local and S3 stores).

The error runs drop NO_COLOR (the `trailcopy` fixture sets it) so an escape on a pipe would show.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO, Run, base_env

SAMPLE = REPO / "examples" / "sample-trail"
RANGE = ("--start", "2026-11-01", "--end", "2026-11-03")
DEMO_ID = "demo-one"


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def tc(trailcopy_bin):
    """tc(*args, env={...}, preexec_fn=None, cwd=REPO) -> Run, with NO_COLOR unset (stderr is a pipe)."""

    def run(*args, env: dict | None = None, preexec_fn=None, cwd=REPO, timeout: float = 120) -> Run:
        e = base_env()
        e.pop("NO_COLOR", None)
        e.update(env or {})
        args = [str(a) for a in args]
        try:
            p = subprocess.run([trailcopy_bin, *args], capture_output=True, text=True, env=e, cwd=cwd,
                               stdin=subprocess.DEVNULL, timeout=timeout, preexec_fn=preexec_fn)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"trailcopy {' '.join(args)} did not finish in {timeout}s") from None
        return Run(args, p.returncode, p.stdout, p.stderr)

    return run


def assert_error(r: Run, code: int, *needles: str, ignore_case: bool = False):
    """Exit `code`; stderr's first line starts `error: `, exactly one line holds `error:`, no ANSI
    escape; every needle is in stderr."""
    assert r.returncode == code, f"exit {r.returncode}, want {code}\n{r.describe()}"
    lines = r.stderr.splitlines()
    assert lines and lines[0].startswith("error: "), f"stderr does not start with `error: `\n{r.describe()}"
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1, f"{len(errors)} lines hold `error:`, want one\n{r.describe()}"
    assert "\x1b[" not in r.stderr, f"ANSI escape on a pipe: {r.stderr!r}"
    text = r.stderr.lower() if ignore_case else r.stderr
    for n in needles:
        assert (n.lower() if ignore_case else n) in text, f"{n!r} not in stderr\n{r.describe()}"


def copy_sample(tc, store, *args) -> Run:
    r = tc("copy", "--source", SAMPLE, "--store", store, *args)
    assert r.returncode == 0, f"the fixture's copy failed\n{r.describe()}"
    return r


@pytest.fixture(scope="module")
def demo(tc, tmp_path_factory) -> Path:
    """A store made from the sample trail holding one copy, DEMO_ID (the tests here only read it)."""
    store = tmp_path_factory.mktemp("new-user") / "demo"
    copy_sample(tc, store, *RANGE, "--copy-id", DEMO_ID)
    return store


@pytest.fixture
def a_file(tmp_path) -> Path:
    f = tmp_path / "a-file"
    f.write_text("a regular file\n")
    return f


# ============================================================================ 2. errors
def test_a_store_that_is_a_file_is_refused(tc, a_file):
    r = tc("copy", "--source", SAMPLE, "--store", a_file, *RANGE)
    assert_error(r, 2, "--store", str(a_file), "is a file")
    assert a_file.read_text() == "a regular file\n", "the file given as --store was changed"


def test_a_store_under_a_file_is_refused_naming_the_file(tc, a_file):
    r = tc("copy", "--source", SAMPLE, "--store", a_file / "sub", *RANGE)
    assert_error(r, 2, "--store", "is a file")
    assert str(a_file) in r.stderr.replace(str(a_file / "sub"), ""), \
        f"the message must name the file {a_file}, not only {a_file / 'sub'}\n{r.describe()}"


def test_a_store_that_cannot_be_written_is_refused(tc):
    # pytest's tmp_path is 0700 root-owned: uid 65534 could not even reach the trail there.
    root = Path(tempfile.mkdtemp(prefix="trailcopy-new-user-"))
    try:
        os.chmod(root, 0o755)
        trail = root / "trail"
        shutil.copytree(SAMPLE, trail)
        for dirpath, dirs, files in os.walk(trail):
            os.chmod(dirpath, 0o755)
            for f in files:
                os.chmod(os.path.join(dirpath, f), 0o644)
        store = root / "store"
        store.mkdir()
        os.chmod(store, 0o555)
        as_nobody = None
        if os.geteuid() == 0:
            def as_nobody():
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
        r = tc("copy", "--source", trail, "--store", store, *RANGE, env={"HOME": str(root)}, preexec_fn=as_nobody,
               cwd=root)
        assert_error(r, 2, "--store", str(store), "permission denied", ignore_case=True)
        assert list(store.iterdir()) == [], "something was written into the store"
    finally:
        if (root / "store").exists():
            os.chmod(root / "store", 0o755)
        shutil.rmtree(root, ignore_errors=True)


def test_a_source_that_is_a_file_is_refused(tc, a_file, tmp_path):
    r = tc("copy", "--source", a_file, "--store", tmp_path / "store", *RANGE)
    assert_error(r, 2, "--source", "is a file")
    assert not (tmp_path / "store").exists(), "nothing may be written for a refused copy"


def no_credentials_env(tmp_path) -> dict:
    # base_env already drops every AWS_* and TRAILCOPY_* variable and sets AWS_EC2_METADATA_DISABLED.
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"AWS_CONFIG_FILE": str(tmp_path / "no-such-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-such-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_REGION": "us-east-1", "HOME": str(home)}


def test_no_credentials_is_one_short_error_without_warnings(tc, tmp_path):
    r = tc("copy", "--source", "s3://some-bucket", "--store", tmp_path / "store", "--last", "1h",
           env=no_credentials_env(tmp_path))
    assert_error(r, 1, "aws configure", "AWS_ACCESS_KEY_ID")
    first = r.stderr.splitlines()[0]
    assert "aws configure" in first and "AWS_ACCESS_KEY_ID" in first, f"the first line must name the fix: {first}"
    assert "WARN" not in r.stderr, f"log warnings shown without TRAILCOPY_LOG:\n{r.stderr}"
    assert len(r.stderr.encode()) < 1000, f"{len(r.stderr.encode())} bytes of stderr:\n{r.stderr}"


def test_no_credentials_with_trailcopy_log_debug_shows_the_logs(tc, tmp_path):
    env = dict(no_credentials_env(tmp_path), TRAILCOPY_LOG="debug")
    r = tc("copy", "--source", "s3://some-bucket", "--store", tmp_path / "store", "--last", "1h", env=env)
    assert r.returncode == 1, r.describe()
    error_lines = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert error_lines and "aws configure" in error_lines[0], r.describe()
    logs = [line for line in r.stderr.splitlines() if line.strip() and "error:" not in line]
    assert len(logs) >= 2 and any("DEBUG" in line for line in logs), \
        f"TRAILCOPY_LOG=debug shows no log lines:\n{r.stderr[:3000]}"


@pytest.mark.parametrize("cmd", ["summary", "export", "list"])
def test_a_missing_store_is_refused(tc, tmp_path, cmd):
    missing = tmp_path / "does-not-exist-xyz"
    r = tc(cmd, "--store", missing)
    assert_error(r, 2, "--store", str(missing), "does not exist")
    assert r.stdout == "", r.describe()
    assert not missing.exists(), "reading a store created it"


@pytest.fixture(scope="module")
def moto_bucket(moto_s3):
    moto_s3.client().create_bucket(Bucket="new-user-store")
    return "new-user-store"


@pytest.mark.parametrize("cmd", ["summary", "export"])
def test_an_s3_prefix_without_a_store_is_refused(tc, moto_s3, moto_bucket, cmd):
    store = f"s3://{moto_bucket}/nothing/"
    r = tc(cmd, "--store", store, env=moto_s3.env)
    assert_error(r, 2, "--store", "no event data store")
    assert r.stdout == "", r.describe()
    assert moto_s3.list_keys(moto_bucket, "nothing/") == [], "reading a store wrote to it"


def test_export_with_end_before_start_is_refused(tc, demo):
    r = tc("export", "--store", demo, "--start", "2026-11-02", "--end", "2026-11-01")
    assert_error(r, 2, "--end", "before")
    assert r.stdout == "", r.describe()


def test_a_range_wholly_past_retention_is_refused_before_anything_is_written(tc, tmp_path):
    store = tmp_path / "store"
    r = tc("copy", "--source", SAMPLE, "--store", store, *RANGE, "--retention-days", "1")
    assert_error(r, 2, "retention", "--retention-days")
    assert not (store / "copies").exists(), f"a refused copy wrote {sorted(os.listdir(store / 'copies'))}"


def test_concurrency_zero_is_refused(tc, tmp_path):
    store = tmp_path / "store"
    r = tc("copy", "--source", SAMPLE, "--store", store, *RANGE, "--concurrency", "0")
    assert_error(r, 2, "--concurrency")
    assert not (store / "copies").exists(), "a refused copy wrote its record"


def test_a_time_without_a_zone_is_refused(tc, tmp_path):
    store = tmp_path / "store"
    r = tc("copy", "--source", SAMPLE, "--store", store, "--start", "2026-11-01T00:00:00", "--end", "2026-11-03")
    assert_error(r, 2, "--start", "time zone")
    assert not (store / "copies").exists(), "a refused copy wrote its record"


def test_export_of_a_time_without_a_zone_is_refused(tc, demo):
    r = tc("export", "--store", demo, "--start", "2026-11-01T12:00")
    assert_error(r, 2, "--start", "time zone")
    assert r.stdout == "", "a refused export wrote records"


@pytest.mark.parametrize("cmd", ["status", "failures", "retry"])
def test_an_unknown_copy_id_names_the_copies_and_the_list_command(tc, demo, cmd):
    r = tc(cmd, "nope", "--store", demo)
    assert_error(r, 2, "nope", DEMO_ID, "trailcopy list --store")
    assert sorted(p.name for p in (demo / "copies").iterdir()) == [DEMO_ID], "an unknown id made a copy"


# ============================================================================ 3. trailcopy list --store
COPIES = {"a-first": ("2026-11-01", "2026-11-02"), "b-second": ("2026-11-02", "2026-11-03")}


@pytest.fixture(scope="module", params=["local", "s3"])
def two_copies(request, tc, tmp_path_factory):
    """(store, env, {copyId: status --json}) for a store holding a-first then b-second (created in
    different seconds: createdTime has whole seconds)."""
    env = {}
    if request.param == "local":
        store = str(tmp_path_factory.mktemp("new-user-list") / "store")
    else:
        moto = request.getfixturevalue("moto_s3")
        moto.client().create_bucket(Bucket="new-user-list")
        store, env = "s3://new-user-list/prefix/", moto.env
    records = {}
    for n, (copy_id, (start, end)) in enumerate(COPIES.items()):
        if n:
            time.sleep(1.1)
        r = tc("copy", "--source", SAMPLE, "--store", store, "--start", start, "--end", end, "--copy-id", copy_id,
               env=env)
        assert r.returncode == 0, f"the fixture's copy failed\n{r.describe()}"
        st = tc("status", copy_id, "--store", store, "--json", env=env)
        assert st.returncode == 0, st.describe()
        records[copy_id] = st.json
    assert records["a-first"]["createdTime"] < records["b-second"]["createdTime"], records
    return store, env, records


def test_list_shows_a_header_and_one_line_per_copy_newest_first(tc, two_copies):
    store, env, records = two_copies
    r = tc("list", "--store", store, env=env)
    assert r.returncode == 0 and r.stderr == "", r.describe()
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    assert len(lines) == 3, f"want a header and two copies:\n{r.stdout}"
    header, rows = lines[0], lines[1:]
    assert not any(copy_id in header for copy_id in COPIES), f"no header line:\n{r.stdout}"
    order = [next((c for c in COPIES if re.search(rf"(^|\s){c}(\s|$)", row)), None) for row in rows]
    assert order == ["b-second", "a-first"], f"want newest created first:\n{r.stdout}"
    for row, copy_id in zip(rows, order):
        rec = records[copy_id]
        start, end = COPIES[copy_id]
        want = {"status": "COMPLETED", "source": str(SAMPLE.resolve()),
                "start": f"{start}T00:00:00Z", "end": f"{end}T00:00:00Z",
                "events copied": f"{rec['statistics']['eventsCompleted']:,}", "created time": rec["createdTime"]}
        assert rec["request"]["source"] == want["source"], rec["request"]
        for what, value in want.items():
            assert re.search(rf"(^|\s){re.escape(value)}(\s|$)", row), f"{copy_id}: no {what} `{value}` in\n{row}"


def test_list_json_has_every_copy_with_its_record_values(tc, two_copies):
    store, env, records = two_copies
    r = tc("list", "--store", store, "--json", env=env)
    assert r.returncode == 0 and r.stderr == "", r.describe()
    doc = r.json
    assert isinstance(doc, dict) and isinstance(doc.get("store"), str) and isinstance(doc.get("copies"), list), doc
    assert [c.get("copyId") for c in doc["copies"]] == ["b-second", "a-first"], f"want newest first: {doc}"
    for c in doc["copies"]:
        rec = records[c["copyId"]]
        start, end = COPIES[c["copyId"]]
        want = {"copyId": c["copyId"], "status": "COMPLETED", "source": rec["request"]["source"],
                "start": f"{start}T00:00:00Z", "end": f"{end}T00:00:00Z",
                "eventsCopied": rec["statistics"]["eventsCompleted"], "createdTime": rec["createdTime"]}
        got = {k: c.get(k) for k in want}
        assert got == want, f"{c['copyId']}: list --json disagrees with status --json"


def test_list_writes_events_with_thousands_separators(tc, demo):
    r = tc("list", "--store", demo)
    assert r.returncode == 0, r.describe()
    st = tc("status", DEMO_ID, "--store", demo, "--json")
    n = st.json["statistics"]["eventsCompleted"]
    assert n >= 1000, "the demo copy must have a count with a thousands separator"
    row = next((line for line in r.stdout.splitlines() if DEMO_ID in line), None)
    assert row is not None, r.describe()
    assert re.search(rf"(^|\s){re.escape(f'{n:,}')}(\s|$)", row), f"no `{n:,}` (as `status` writes it) in\n{row}"


def test_list_of_a_store_without_copies_says_so(tc, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = tc("list", "--store", empty)
    assert r.returncode == 0, r.describe()
    assert f"no copies in {empty}" in r.stdout, r.describe()
    assert list(empty.iterdir()) == [], "listing wrote to the store"


def test_list_without_a_store_or_state_machine_is_refused(tc):
    r = tc("list")
    assert r.returncode == 2, r.describe()
    assert r.stderr.startswith("error: ") and "--store" in r.stderr, r.describe()
    assert r.stdout == "", r.describe()
