"""Issue 9: the first hour of a new user, point by point (each test fails on the engine before the fix).

1. spellings of one source are one source (the overlap guard compares canonical forms);
2. a relative --source does not strand a copy: retry works from any directory;
3. a missing or empty local source is refused before anything is written; an S3 source with nothing
   in range is a COMPLETED copy that says so;
4. errors a user can fix are one or two plain lines naming the fix; a copy that fails while planning
   is recorded FAILED, `status` exits non-zero, `retry` resumes it once fixed;
5. progress: a bar on a terminal only, never with --json (the totals are checked at the engine's
   counters in functions/core/tests/progress.rs);
6. a closed stdout ends quietly;
7. (README: tests/test_readme.py)
8. JSON null is SQL NULL, and the rebuild restores it;
9. the smaller items: hints name --store, the overlap error, retry of a COMPLETED copy, byte units,
   plurals, createdTime <= updatedTime, help texts, tests/run, plausible generated events.
"""

from __future__ import annotations

import gzip
import http.server
import json
import os
import pty
import re
import select
import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, base_env, duck, free_port, read_store, rebuild_event, store_count
from expect import canon, ts

SAMPLE = REPO / "examples" / "sample-trail"
RANGE = ("--start", "2026-11-01", "--end", "2026-11-03")
ORG = "o-exampleorg1"


def sample_events():
    """Every event of the sample trail's CloudTrail/ files: (day prefix, event)."""
    out = []
    for f in sorted(SAMPLE.glob("AWSLogs/*/*/CloudTrail/*/*/*/*/*.json.gz")):
        for e in json.loads(gzip.decompress(f.read_bytes()))["Records"]:
            out.append((str(f.parent), e))
    return out


def expected_sample(account: str | None = None) -> list:
    """The events a copy of RANGE stores: in range, first of each eventID per day prefix."""
    seen, keep = set(), []
    for prefix, e in sample_events():
        if account and f"/{account}/" not in prefix:
            continue
        if not ("2026-11-01" <= e["eventTime"] < "2026-11-03"):
            continue
        key = (prefix, e.get("eventID") or canon(e))
        if key not in seen:
            seen.add(key)
            keep.append(e)
    return keep


def records(store: Path) -> dict:
    return {p.parent.name: json.loads(p.read_text()) for p in Path(store).glob("copies/*/record.json")}


# ============================================================================ 1. one source, one spelling
def test_every_spelling_of_a_source_is_the_same_source(trailcopy, tmp_path):
    (tmp_path / "link").symlink_to(SAMPLE)
    store = tmp_path / "store"
    first = trailcopy("copy", "--source", "examples/sample-trail", "--store", store, *RANGE, "--copy-id", "first",
                      cwd=REPO)
    assert first.returncode == 0, first.describe()
    for spelling, cwd in (("./examples/sample-trail/", REPO), (str(SAMPLE), tmp_path), ("link", tmp_path),
                          (str(SAMPLE / "AWSLogs"), tmp_path)):
        again = trailcopy("copy", "--source", spelling, "--store", store, *RANGE, cwd=cwd)
        assert again.returncode == 2, f"{spelling}: the same source copied twice\n{again.describe()}"
        assert "overlaps copy `first`" in again.stderr, again.describe()
    rec = records(store)
    assert list(rec) == ["first"], rec
    assert rec["first"]["request"]["source"] == str(SAMPLE.resolve()), "the record keeps the canonical source"
    con, src = duck(store)
    n, distinct = con.execute(f"SELECT count(*), count(DISTINCT coalesce(eventID, eventTime::VARCHAR || eventName)) "
                              f"FROM {src}").fetchone()
    assert n == len(expected_sample()) == distinct


def test_s3_spellings_and_narrowings_are_compared_as_prefixes(trailcopy, moto_s3, tmp_path):
    s3 = moto_s3.client()
    s3.create_bucket(Bucket="first-hour-src")
    moto_s3.upload_dir("first-hour-src", str(SAMPLE))
    accounts = sorted(p.name for p in (SAMPLE / "AWSLogs" / ORG).iterdir())
    store = tmp_path / "store"
    a = f"s3://first-hour-src/AWSLogs/{ORG}/{accounts[0]}/"
    r = trailcopy("copy", "--source", a, "--store", store, *RANGE, "--copy-id", "acct-a", env=moto_s3.env)
    assert r.returncode == 0, r.describe()
    # The other account does not overlap: it is copied.
    b = f"s3://first-hour-src/AWSLogs/{ORG}/{accounts[1]}"
    r = trailcopy("copy", "--source", b, "--store", store, *RANGE, "--copy-id", "acct-b", env=moto_s3.env)
    assert r.returncode == 0, r.describe()
    # The whole bucket, however spelled, holds both: refused.
    for spelling in ("s3://first-hour-src", "s3://first-hour-src/", "s3://first-hour-src/AWSLogs/",
                     f"s3://first-hour-src//AWSLogs/{ORG}/"):
        r = trailcopy("copy", "--source", spelling, "--store", store, *RANGE, env=moto_s3.env)
        assert r.returncode == 2 and "overlaps copy `acct-a`" in r.stderr, f"{spelling}\n{r.describe()}"
    assert sorted(records(store)) == ["acct-a", "acct-b"]
    assert store_count(store) == len(expected_sample())


# ============================================================================ 2. retry from anywhere
def test_a_relative_source_does_not_strand_the_copy(trailcopy, tmp_path):
    store = tmp_path / "store"
    fail = {"TRAILCOPY_BATCH_BYTES": "20000", "TRAILCOPY_FAULT_FAIL_AFTER_BATCHES": "3"}
    r = trailcopy("copy", "--source", "examples/sample-trail", "--store", store, *RANGE, "--copy-id", "rel",
                  "--concurrency", "1", "--json", env=fail, cwd=REPO)
    assert r.returncode == 1 and r.json["status"] == "FAILED", r.describe()
    assert r.json["request"]["source"] == str(SAMPLE.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    rr = trailcopy("retry", "rel", "--store", os.path.relpath(store, elsewhere), "--json", cwd=elsewhere)
    assert rr.returncode == 0, rr.describe()
    s = rr.json["statistics"]
    assert rr.json["status"] == "COMPLETED" and s["failedEntries"] == 0, s
    assert s["filesCompleted"] == s["filesFound"] == 48 and s["prefixesCompleted"] == 8, s
    assert Counter(canon(rebuild_event(row)) for row in read_store(store)) == \
        Counter(canon(e) for e in expected_sample())


def test_retry_names_a_source_that_moved(trailcopy, tmp_path):
    src = tmp_path / "trail"
    shutil.copytree(SAMPLE, src)
    store = tmp_path / "store"
    fail = {"TRAILCOPY_BATCH_BYTES": "20000", "TRAILCOPY_FAULT_FAIL_AFTER_BATCHES": "2"}
    r = trailcopy("copy", "--source", src, "--store", store, *RANGE, "--copy-id", "moved", "--concurrency", "1",
                  env=fail)
    assert r.returncode == 1, r.describe()
    src.rename(tmp_path / "trail-elsewhere")
    rr = trailcopy("retry", "moved", "--store", store)
    assert rr.returncode == 2, rr.describe()
    assert f"--source: `{src}` does not exist" in rr.stderr, rr.describe()
    assert records(store)["moved"]["status"] == "FAILED", "the record is left as it was"


# ============================================================================ 3. no source, no copy
@pytest.mark.parametrize("kind", ["missing", "empty", "no-awslogs", "a-file"])
def test_a_source_that_is_not_a_trail_is_refused_before_anything_is_written(trailcopy, tmp_path, kind):
    src = tmp_path / "src"
    if kind == "empty":
        src.mkdir()
    elif kind == "no-awslogs":
        (src / "logs" / "2026").mkdir(parents=True)
        (src / "logs" / "2026" / "x.json.gz").write_bytes(gzip.compress(b'{"Records":[]}'))
    elif kind == "a-file":
        src.write_text("not a folder")
    store = tmp_path / "store"
    r = trailcopy("copy", "--source", src, "--store", store, *RANGE)
    assert r.returncode == 2, r.describe()
    want = {"missing": "does not exist", "empty": "holds no AWSLogs/", "no-awslogs": "holds no AWSLogs/",
            "a-file": "is a file, not a folder"}[kind]
    assert r.stderr.startswith(f"error: --source: `{src}` {want}"), r.describe()
    assert len(r.stderr.strip().splitlines()) == 1, r.describe()
    assert not store.exists(), "nothing may be written for a refused copy"


def test_a_local_source_inside_awslogs_narrows_the_copy(trailcopy, tmp_path):
    account = sorted(p.name for p in (SAMPLE / "AWSLogs" / ORG).iterdir())[0]
    store = tmp_path / "store"
    r = trailcopy("copy", "--source", SAMPLE / "AWSLogs" / ORG / account, "--store", store, *RANGE, "--json")
    assert r.returncode == 0, r.describe()
    assert r.json["statistics"]["prefixesFound"] == 4, r.json["statistics"]
    assert Counter(canon(rebuild_event(row)) for row in read_store(store)) == \
        Counter(canon(e) for e in expected_sample(account))
    wrong = trailcopy("copy", "--source", SAMPLE / "AWSLogs" / ORG / account / "CloudTrail-Digest", "--store",
                      tmp_path / "s2", *RANGE)
    assert wrong.returncode == 2 and "only CloudTrail/ holds trail events" in wrong.stderr, wrong.describe()
    assert not (tmp_path / "s2").exists()


def test_an_s3_source_with_nothing_in_range_is_a_completed_copy_that_says_so(trailcopy, moto_s3, tmp_path):
    moto_s3.client().create_bucket(Bucket="first-hour-empty")
    store = tmp_path / "store"
    r = trailcopy("copy", "--source", "s3://first-hour-empty", "--store", store, *RANGE, "--json", env=moto_s3.env)
    assert r.returncode == 0 and r.json["status"] == "COMPLETED", r.describe()
    assert r.json["statistics"]["eventsRead"] == 0
    assert "nothing to copy" in r.json["message"], r.json
    t = trailcopy("status", r.json["copyId"], "--store", store)
    assert "note       nothing to copy: no CloudTrail day folders" in t.stdout, t.describe()


# ============================================================================ 4. errors a user can fix
def no_credentials_env(tmp_path, endpoint: str) -> dict:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", "HOME": str(home)}


def assert_plain(r, *needles):
    lines = r.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2 and all(len(line) < 400 for line in lines), f"not one or two plain lines:\n{r.stderr}"
    low = r.stderr.lower()
    for dump in ("retryable", "dispatchfailure", "connectorerror", "credentialsnotloaded", "{ source", "sdkerror"):
        assert dump not in low, f"{dump!r} in:\n{r.stderr}"
    for n in needles:
        assert n in r.stderr, f"{n!r} not in:\n{r.stderr}"


def test_no_credentials_is_one_line_with_the_fix_and_a_failed_record_retry_resumes(trailcopy, moto_s3, tmp_path):
    s3 = moto_s3.client()
    s3.create_bucket(Bucket="first-hour-creds")
    moto_s3.upload_dir("first-hour-creds", str(SAMPLE))
    store = tmp_path / "store"
    env = no_credentials_env(tmp_path, moto_s3.endpoint)
    r = trailcopy("copy", "--source", "s3://first-hour-creds", "--store", store, *RANGE, "--copy-id", "nocreds",
                  env=env)
    assert r.returncode == 1, r.describe()
    assert_plain(r, "AWS credentials: run `aws configure`", "AWS_PROFILE", "trailcopy retry nocreds --store")
    rec = records(store)["nocreds"]
    assert rec["status"] == "FAILED" and "AWS credentials: run `aws configure`" in rec["message"], rec
    st = trailcopy("status", "nocreds", "--store", store)
    assert st.returncode == 1 and "FAILED" in st.stdout, st.describe()
    rr = trailcopy("retry", "nocreds", "--store", store, "--json", env=moto_s3.env)
    assert rr.returncode == 0 and rr.json["status"] == "COMPLETED", rr.describe()
    assert rr.json["statistics"]["eventsCompleted"] == len(expected_sample())
    assert ts(rr.json["createdTime"]) <= ts(rr.json["updatedTime"])


def test_no_such_bucket_names_the_bucket(trailcopy, moto_s3, tmp_path):
    r = trailcopy("copy", "--source", "s3://first-hour-no-such-bucket", "--store", tmp_path / "store", *RANGE,
                  env=moto_s3.env)
    assert r.returncode == 1, r.describe()
    assert_plain(r, "bucket `first-hour-no-such-bucket` does not exist")
    st = trailcopy("status", "x", "--store", "s3://first-hour-no-such-bucket/store", env=moto_s3.env)
    assert st.returncode == 1, st.describe()
    assert_plain(st, "bucket `first-hour-no-such-bucket` does not exist")


class S3Refuses:
    """An endpoint answering every request with one S3 error response (moto has no expired tokens
    and does not enforce IAM): how the SDK reports what real S3 sends."""

    def __init__(self, status: int, code: str, message: str):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}'
                        f"</Message><RequestId>R</RequestId></Error>").encode()
                outer.requests += 1
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_HEAD = do_POST = _answer

            def log_message(self, *a):
                pass

        self.requests = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.mark.parametrize("status,code,needles", [
    (400, "ExpiredToken", ("session token has expired", "aws sso login")),
    (403, "AccessDenied", ("access denied", "s3:ListBucket", "access denied: s3://some-trail/:")),
    (403, "InvalidAccessKeyId", ("access key", "AWS_ACCESS_KEY_ID")),
])
def test_a_refused_request_is_one_line_naming_the_fix(trailcopy, tmp_path, status, code, needles):
    refuses = S3Refuses(status, code, "refused by the test")
    try:
        env = {"AWS_ENDPOINT_URL": refuses.endpoint, "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
               "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1"}
        store = tmp_path / "store"
        r = trailcopy("copy", "--source", "s3://some-trail", "--store", store, *RANGE, "--copy-id", "refused", env=env)
    finally:
        refuses.close()
    assert r.returncode == 1, r.describe()
    assert_plain(r, *needles)
    assert records(store)["refused"]["status"] == "FAILED"


def test_an_endpoint_out_of_reach_is_one_line(trailcopy, tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x",
           "AWS_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}
    r = trailcopy("copy", "--source", "s3://some-trail", "--store", tmp_path / "store", *RANGE, env=env)
    assert r.returncode == 1, r.describe()
    assert_plain(r, f"cannot connect to {endpoint}", "AWS_ENDPOINT_URL")


# ============================================================================ 5. progress
def run_on_pty(binary: str, args: list, cwd=REPO, timeout=60):
    """Runs with stderr on a pseudo-terminal (stdout a pipe): (exit code, stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    env = base_env()
    env.update(TERM="xterm", TRAILCOPY_BATCH_BYTES="8000")
    p = subprocess.Popen([binary, *map(str, args)], stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
                         env=env, cwd=cwd)
    os.close(slave)
    shown = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
        elif p.poll() is not None:
            break
    out = p.stdout.read().decode()
    p.wait(timeout=10)
    os.close(master)
    return p.returncode, out, shown.decode(errors="replace")


def test_a_terminal_shows_progress_counts_and_rates(trailcopy_bin, tmp_path):
    # The sample trail copies within one or two redraws (200 ms): the spinner shows, and whatever
    # copying frame is drawn has its fixed totals. tests/test_progress_line.py follows a longer copy
    # frame by frame (rates, ETA, totals that never change).
    code, out, shown = run_on_pty(trailcopy_bin, ["copy", "--source", SAMPLE, "--store", tmp_path / "s", *RANGE,
                                                   "--concurrency", "1"])
    assert code == 0, out + shown
    assert "planning: listing day folders" in shown, shown
    for done, total in re.findall(r"(\d+)/(\d+) files", shown):
        assert int(done) <= int(total) == 48, shown
    assert "\n" not in shown.replace("\r\n", ""), f"the line wrapped or the report went to the terminal: {shown!r}"
    assert "copy " in out and "COMPLETED" in out


def test_no_bar_without_a_terminal_or_with_json(trailcopy, trailcopy_bin, tmp_path):
    piped = trailcopy("copy", "--source", SAMPLE, "--store", tmp_path / "a", *RANGE)
    assert piped.returncode == 0 and piped.stderr == "", piped.describe()
    code, out, shown = run_on_pty(trailcopy_bin, ["copy", "--source", SAMPLE, "--store", tmp_path / "b", *RANGE,
                                                   "--json"])
    assert code == 0 and json.loads(out)["status"] == "COMPLETED"
    assert "files" not in shown and "prefix" not in shown, shown


# ============================================================================ 6. closed pipe
@pytest.fixture(scope="module")
def small_store(trailcopy, tmp_path_factory):
    store = tmp_path_factory.mktemp("first-hour") / "store"
    r = trailcopy("copy", "--source", SAMPLE, "--store", store, *RANGE, "--copy-id", "piped")
    assert r.returncode == 0, r.describe()
    return store


@pytest.mark.parametrize("args", [["failures", "piped"], ["status", "piped"], ["status", "piped", "--json"],
                                  ["summary"], ["retry", "piped"], ["--help"]])
def test_a_closed_stdout_ends_quietly(trailcopy_bin, small_store, args):
    argv = [trailcopy_bin, *args] + (["--store", str(small_store)] if args != ["--help"] else [])
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write: every write fails with EPIPE
    p = subprocess.run(argv, stdout=write, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=base_env(),
                       timeout=60)
    os.close(write)
    err = p.stderr.decode()
    assert p.returncode in (0, 141), f"exit {p.returncode}\n{err}"
    assert "panicked" not in err and "Broken pipe" not in err, err


# ============================================================================ 8. JSON null
def test_json_null_is_sql_null_and_the_rebuild_restores_it(small_store):
    events = expected_sample()
    explicit = sum(1 for e in events if "responseElements" in e and e["responseElements"] is None)
    absent = sum(1 for e in events if "responseElements" not in e)
    assert explicit > 100, "the sample must hold JSON nulls"
    con, src = duck(small_store)
    text_null, sql_null, kept = con.execute(
        f"""SELECT count(*) FILTER (WHERE responseElements = 'null'), count(*) FILTER (WHERE responseElements IS NULL),
                   count(*) FILTER (WHERE json_type(otherFields, '$.responseElements') = 'NULL') FROM {src}""").fetchone()
    assert text_null == 0, "JSON null stored as the text null"
    assert sql_null == explicit + absent and kept == explicit
    assert Counter(canon(rebuild_event(row)) for row in read_store(small_store)) == Counter(canon(e) for e in events)


# ============================================================================ 9. smaller items
def test_resume_hints_name_the_store(trailcopy, tmp_path):
    store = tmp_path / "store"
    fail = {"TRAILCOPY_BATCH_BYTES": "20000", "TRAILCOPY_FAULT_FAIL_AFTER_BATCHES": "2"}
    r = trailcopy("copy", "--source", SAMPLE, "--store", store, *RANGE, "--copy-id", "hint", "--concurrency", "1",
                  env=fail)
    assert r.returncode == 1, r.describe()
    assert f"resume with `trailcopy retry hint --store {store}`" in r.stdout, r.describe()
    # A past range that overlaps nothing (a range wholly in the future is refused for that first: issue 30).
    again = trailcopy("copy", "--source", SAMPLE, "--store", store, "--start", "2025-01-01", "--end", "2025-01-02",
                      "--copy-id", "hint")
    assert again.returncode == 2 and f"`trailcopy retry hint --store {store}`" in again.stderr, again.describe()


def test_the_overlap_error_is_labelled_right_and_said_once(trailcopy, small_store):
    r = trailcopy("copy", "--source", SAMPLE, "--store", small_store, "--start", "2026-11-02", "--end", "2026-11-04")
    assert r.returncode == 2, r.describe()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, f"one line, no WARN repeating it:\n{r.stderr}"
    assert lines[0].startswith("error: the range (--start/--end or --last): overlaps copy `piped`"), lines[0]
    assert "COMPLETED" in lines[0] and "trailcopy retry" not in lines[0], "a COMPLETED copy has nothing to resume"
    assert "--allow-overlap" in lines[0]


def test_retry_of_a_completed_copy_changes_nothing(trailcopy, small_store):
    record = small_store / "copies" / "piped" / "record.json"
    before = record.read_bytes(), record.stat().st_mtime_ns
    r = trailcopy("retry", "piped", "--store", small_store)
    assert r.returncode == 0, r.describe()
    assert "already COMPLETED: nothing to retry" in r.stdout, r.describe()
    assert (record.read_bytes(), record.stat().st_mtime_ns) == before, "the record was rewritten"


def test_bytes_counts_and_plurals_read_as_english(trailcopy, small_store, tmp_path):
    t = trailcopy("status", "piped", "--store", small_store).stdout
    assert re.search(r"; \d+(\.\d+)? kB read", t) and " 0 MB " not in t, t
    assert re.search(r"events +\d{1,3}(,\d{3})+ copied", t), t
    # one defective file in one day folder: singular everywhere
    one = tmp_path / "one" / "AWSLogs" / "111122223333" / "CloudTrail" / "us-east-1" / "2026" / "11" / "01"
    one.mkdir(parents=True)
    (one / "111122223333_CloudTrail_us-east-1_20261101T0100Z_x.json.gz").write_bytes(b"\x1f\x8b broken")
    store = tmp_path / "one-store"
    r = trailcopy("copy", "--source", tmp_path / "one", "--store", store, *RANGE, "--copy-id", "one")
    assert r.returncode == 1, r.describe()
    assert "note       finished with 1 failure entry" in r.stdout, r.stdout
    f = trailcopy("failures", "one", "--store", store)
    assert f.stdout.rstrip().endswith("\n1 failure entry"), f.stdout
    s = trailcopy("summary", "--store", store)
    assert "0 events in 0 Parquet files" in s.stdout, s.stdout


def test_created_time_is_never_after_updated_time(trailcopy, tmp_path):
    # The plan's time used to be rounded (up half the time) while the update took the clock.
    for i in range(6):
        r = trailcopy("copy", "--source", SAMPLE, "--store", tmp_path / "store", "--last", "5m", "--copy-id", f"t{i}",
                      "--allow-overlap", "--json")
        assert r.returncode == 0, r.describe()
        assert ts(r.json["createdTime"]) <= ts(r.json["updatedTime"]), r.json


def help_entries(text: str):
    """(name, description) of every argument and option in a clap help page, in its short layout
    (`  --flag <X>  text`) or its long one (the text on the lines below, indented deeper)."""
    entries, section = [], False
    for line in text.splitlines():
        if line in ("Arguments:", "Options:"):
            section = True
            continue
        if line and not line.startswith(" "):
            section = False
        if not section or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        m = re.match(r"^(-\S.*?|<\S+>|\[\S+\])(?:  +(.*))?$", line.strip())
        if m and indent <= 6:
            entries.append([m.group(1), (m.group(2) or "").strip()])
        elif entries and indent > 6:
            entries[-1][1] += " " + line.strip()
    return entries


@pytest.mark.parametrize("cmd", ["copy", "start", "retry", "status", "stop", "list", "failures", "summary"])
def test_every_argument_and_flag_has_a_help_text(trailcopy, cmd):
    r = trailcopy(cmd, "--help")
    assert r.returncode == 0, r.describe()
    entries = help_entries(r.stdout)
    assert entries, r.stdout
    bare = [name for name, text in entries if not re.sub(r"\[default: [^]]*\]", "", text).strip()]
    assert not bare, f"{cmd}: no help text for {bare}\n{r.stdout}"


def test_the_test_command_shows_unit_test_counts():
    run = (REPO / "tests" / "run").read_text()
    line = next(line for line in run.splitlines() if "cargo test" in line)
    assert "|" not in line, f"cargo test's output is piped (the CI log must show the counts): {line}"


PLAUSIBLE_SOURCES = {"signin.amazonaws.com": ("ConsoleLogin",)}


def check_plausible(events):
    problems = []
    for e in events:
        ui, ip, agent = e["userIdentity"], e["sourceIPAddress"], e["userAgent"]
        name = e["eventName"]
        service = ui.get("invokedBy")
        if ui["type"] == "AWSService" and not service:
            problems.append(f"{name}: AWSService without invokedBy")
        if ip.endswith(".amazonaws.com") and ip != service:
            problems.append(f"{name}: sourceIPAddress {ip} but invokedBy {service}")
        if service and (ip, agent) != (service, service):
            problems.append(f"{name} invoked by {service} from {ip} with {agent}")
        if name == "ConsoleLogin":
            if ui["type"] not in ("IAMUser", "AssumedRole", "Root") or not agent.startswith("Mozilla/"):
                problems.append(f"ConsoleLogin by {ui['type']} with {agent}")
            if e["eventSource"] != "signin.amazonaws.com" or e.get("eventType", "AwsConsoleSignIn") != "AwsConsoleSignIn":
                problems.append(f"ConsoleLogin from {e['eventSource']}")
        elif agent.startswith("Mozilla/") and ui["type"] == "AWSService":
            problems.append(f"{name}: a browser acting as a service")
        if name == "AssumeRole" and ui["type"] == "AWSService" and "lambda-exec" not in e["requestParameters"]["roleArn"]:
            problems.append(f"the Lambda service assumed {e['requestParameters']['roleArn']}")
    return problems


def test_the_sample_trail_reads_like_a_real_trail():
    events = [e for _, e in sample_events()]
    assert not check_plausible(events), check_plausible(events)[:10]
    kinds = Counter(e["userIdentity"]["type"] for e in events)
    assert {"IAMUser", "AssumedRole", "AWSService", "Root"} <= set(kinds), kinds
    assert any(e["eventName"] == "ConsoleLogin" for e in events)


def test_generated_trails_read_like_real_trails(gen_trail_org):
    events = [json.loads(e["json"]) for e in gen_trail_org["events"] if e["valid"]]
    # The generator also plants odd identity shapes (null, a string, odd subfields) on purpose, for
    # the store's lossless tests (issue 12): only the well-formed ones are judged here.
    events = [
        e for e in events
        if isinstance(e, dict) and isinstance(e.get("userIdentity"), dict)
        and isinstance(e["userIdentity"].get("type"), str)
        and all(isinstance(e.get(k), str) for k in ("sourceIPAddress", "userAgent", "eventName"))
    ]
    assert len(events) > 1000
    assert not check_plausible(events), check_plausible(events)[:10]
