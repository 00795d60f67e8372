"""Resume: a copy stopped part-way (injected batch failure, or a crash) and `trailcopy retry` finish
with exactly the expected events in the store: no loss, no duplicate. Also: re-running a COMPLETED copy
overwrites (same file names) instead of duplicating.

Fault injection (docs/contracts.md): TRAILCOPY_FAULT_FAIL_AFTER_BATCHES=n fails the item of the
n+1-th batch commit; TRAILCOPY_FAULT_ABORT_AFTER_BATCHES=n aborts the process after batch n+1's
Parquet is written, before its checkpoint. TRAILCOPY_BATCH_BYTES makes batches small.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from conftest import duplicate_report, parquet_files, read_store, rebuild_event, source_dir, store_count
from expect import canon, expected, stats_diff

START, END = "2024-05-01T00:00:00Z", "2024-05-03T00:00:00Z"
SMALL_BATCHES = {"TRAILCOPY_BATCH_BYTES": "6000"}  # ~1 log file per batch: dozens of batches


@pytest.fixture(scope="module")
def clean_trail(make_trail):
    """No defective files or invalid events (they would leave any copy FAILED), but duplicates and
    stray events, so dedup and range checks run across the resume boundary."""
    m = make_trail("resume", seed=11, accounts=2, regions="us-east-1,eu-west-1", start_day="2024-05-01", days=2,
                   files_per_day=8, events_per_file=15, duplicates=8, stray=1, digest=True)
    return m, expected(m, START, END)


def copy(trailcopy, m, store, copy_id, *extra, env=None):
    return trailcopy("copy", "--source", source_dir(m), "--store", store, "--start", START, "--end", END,
                     "--copy-id", copy_id, "--json", *extra, env=env)


def assert_exact_store(store, exp):
    """STORE/events/**/*.parquet (what DuckDB, Athena or Spark read) holds exactly the expected events."""
    rows = read_store(store)
    ids = Counter(row["eventID"] for row in rows if row["eventID"] is not None)
    dups = [i for i, n in ids.items() if n > 1]
    assert not dups, (f"{len(dups)} eventIDs stored more than once ({len(rows)} rows, expected "
                      f"{exp['eventsCompleted']}); files holding them:\n{duplicate_report(store)}")
    assert len(rows) == exp["eventsCompleted"], (len(rows), exp["eventsCompleted"])
    got = Counter(canon(rebuild_event(row)) for row in rows)
    want = Counter(canon(json.loads(j)) for j in exp["copied"])
    assert got == want, f"missing {sum((want - got).values())}, extra {sum((got - want).values())}"


def test_clean_trail_is_interesting(clean_trail):
    m, exp = clean_trail
    assert exp["failedEntries"] == 0 and exp["eventsInvalid"] == 0
    assert exp["eventsDuplicate"] >= 4 and exp["eventsOutOfRange"] >= 2
    assert exp["filesCompleted"] >= 50


def test_completed_copy_and_retry_same_names(trailcopy, clean_trail, tmp_path):
    m, exp = clean_trail
    store = tmp_path / "store"
    r = copy(trailcopy, m, store, "done-1", env=SMALL_BATCHES)
    assert r.returncode == 0, r.describe()
    assert r.json["status"] == "COMPLETED"
    assert stats_diff(r.json["statistics"], exp) == {}, stats_diff(r.json["statistics"], exp)
    names = parquet_files(store)
    assert_exact_store(store, exp)

    rr = trailcopy("retry", "done-1", "--store", store, "--json", env=SMALL_BATCHES)
    assert rr.returncode == 0, rr.describe()
    assert rr.json["status"] == "COMPLETED"
    assert rr.json["statistics"]["eventsCompleted"] == exp["eventsCompleted"]
    assert parquet_files(store) == names
    assert_exact_store(store, exp)

    # the same range under another copy id into a new store: the same file names
    store2 = tmp_path / "store2"
    r2 = copy(trailcopy, m, store2, "done-2", "--concurrency", "1", env=SMALL_BATCHES)
    assert r2.returncode == 0, r2.describe()
    assert parquet_files(store2) == names


@pytest.mark.parametrize("concurrency", ["1", "4"])
def test_injected_failure_then_retry(trailcopy, clean_trail, tmp_path, concurrency):
    m, exp = clean_trail
    store = tmp_path / "store"
    r = copy(trailcopy, m, store, "fail-1", "--concurrency", concurrency,
             env={**SMALL_BATCHES, "TRAILCOPY_FAULT_FAIL_AFTER_BATCHES": "3"})
    assert r.returncode == 1, r.describe()
    assert r.json["status"] == "FAILED"
    s = r.json["statistics"]
    assert s["eventsCompleted"] < exp["eventsCompleted"], "the fault did not stop anything"
    assert s["eventsRead"] == s["eventsCompleted"] + s["eventsOutOfRange"] + s["eventsInvalid"] + s["eventsDuplicate"]
    assert store_count(store) == s["eventsCompleted"]
    fr = trailcopy("failures", "fail-1", "--store", store, "--json")
    assert any(f["errorType"] == "WorkItemFailed" for f in fr.json["failures"]), fr.describe()

    rr = trailcopy("retry", "fail-1", "--store", store, "--concurrency", concurrency, "--json", env=SMALL_BATCHES)
    assert rr.returncode == 0, rr.describe()
    assert rr.json["status"] == "COMPLETED"
    assert stats_diff(rr.json["statistics"], exp) == {}, stats_diff(rr.json["statistics"], exp)
    assert_exact_store(store, exp)


def test_crash_then_retry(trailcopy, clean_trail, tmp_path):
    m, exp = clean_trail
    store = tmp_path / "store"
    fault = {**SMALL_BATCHES, "TRAILCOPY_FAULT_ABORT_AFTER_BATCHES": "3"}
    # 8 items at once: each abort usually lands while other items are writing their Parquet files.
    # The copy crashes, then two retries crash too, then a retry finishes.
    r = copy(trailcopy, m, store, "crash-1", "--concurrency", "8", env=fault)
    assert r.returncode not in (0, 1, 2), f"expected an abort:\n{r.describe()}"
    for _ in range(2):
        st = trailcopy("status", "crash-1", "--store", store, "--json")
        assert st.json["status"] == "IN_PROGRESS", st.describe()
        r = trailcopy("retry", "crash-1", "--store", store, "--concurrency", "8", "--json", env=fault)
        if r.returncode == 0:
            break  # nothing left to crash on
        assert r.returncode not in (1, 2), r.describe()
    assert 0 < store_count(store) <= exp["eventsCompleted"] + 200  # (a crash may leave partial files)

    rr = trailcopy("retry", "crash-1", "--store", store, "--json", env=SMALL_BATCHES)
    assert rr.returncode == 0, rr.describe()
    # ENGINE BUG (open): a crash leaves other items' in-flight temp files
    # events/date=.../.tmp-<pid>-<name>.parquet behind; they match events/**/*.parquet, so DuckDB reads
    # them as extra rows (duplicates), or fails on a truncated one ("too small to be a Parquet file").
    # Temp names must not end in .parquet (or live outside events/), or retry must remove them.
    assert rr.json["status"] == "COMPLETED"
    assert stats_diff(rr.json["statistics"], exp) == {}, stats_diff(rr.json["statistics"], exp)
    assert_exact_store(store, exp)


def test_crash_twice_then_retry(trailcopy, clean_trail, tmp_path):
    """A retry that itself crashes, then a second retry."""
    m, exp = clean_trail
    store = tmp_path / "store"
    fault = {**SMALL_BATCHES, "TRAILCOPY_FAULT_ABORT_AFTER_BATCHES": "2"}
    r = copy(trailcopy, m, store, "crash-2", "--concurrency", "1", env=fault)
    assert r.returncode not in (0, 1, 2), r.describe()
    r2 = trailcopy("retry", "crash-2", "--store", store, "--concurrency", "1", "--json", env=fault)
    assert r2.returncode not in (0, 1, 2), r2.describe()
    rr = trailcopy("retry", "crash-2", "--store", store, "--json", env=SMALL_BATCHES)
    assert rr.returncode == 0, rr.describe()
    assert stats_diff(rr.json["statistics"], exp) == {}, stats_diff(rr.json["statistics"], exp)
    assert_exact_store(store, exp)


def test_ctrl_c_stops_then_retry(trailcopy_bin, trailcopy, make_trail, tmp_path):
    """Ctrl-C (SIGINT) stops the copy at the next file: status STOPPED, exit 1; retry finishes exactly."""
    import signal
    import subprocess
    import time

    from conftest import base_env

    m = make_trail("sigint", seed=13, accounts=1, regions="us-east-1", start_day="2024-07-01", days=2,
                   files_per_day=600, events_per_file=40, duplicates=4)
    exp = expected(m, "2024-07-01", "2024-07-03")
    store = tmp_path / "store"
    env = {**base_env(), "TRAILCOPY_BATCH_BYTES": "60000"}
    p = subprocess.Popen([trailcopy_bin, "copy", "--source", source_dir(m), "--store", str(store), "--start", "2024-07-01",
                          "--end", "2024-07-03", "--copy-id", "int-1", "--concurrency", "1", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while p.poll() is None and time.monotonic() < deadline and not list(store.glob("events/**/*.parquet")):
        time.sleep(0.005)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    if p.returncode == 0:
        pytest.fail("the copy finished before Ctrl-C reached it: make the trail bigger")
    assert p.returncode == 1, f"exit {p.returncode}\n{out[-2000:]}\n{err[-2000:]}"
    rec = json.loads(out)
    assert rec["status"] == "STOPPED", rec
    assert rec["statistics"]["eventsCompleted"] < exp["eventsCompleted"]

    rr = trailcopy("retry", "int-1", "--store", store, "--json")
    assert rr.returncode == 0, rr.describe()
    assert rr.json["status"] == "COMPLETED"
    assert stats_diff(rr.json["statistics"], exp) == {}, stats_diff(rr.json["statistics"], exp)
    assert_exact_store(store, exp)
