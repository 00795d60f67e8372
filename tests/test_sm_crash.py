"""Crash safety in the state machine (issue 6 point 2, the Lambda half): the copy Lambda dies
mid-batch and the state machine's retry path finishes the copy with nothing lost and nothing twice.

The real ASL runs in moto and the real Lambda binaries run under `cargo lambda watch`
(tests/sm_harness.py, fixtures as in test_statemachine.py), with the engine's fault hook on:
TRAILCOPY_FAULT_ABORT_AFTER_BATCHES=n makes a process abort (std::process::abort) right after
writing the Parquet files of its (n+1)-th batch and before that batch's checkpoint; the counter is
per process. TRAILCOPY_BATCH_BYTES makes every log file about one batch, so each day prefix has
several batches and every copy process dies after a few of them. The store must then hold exactly
the events tests/expect.py computes from the generated trail's manifest.
"""
from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sm_harness as h  # noqa: E402
from expect import expected, stats_diff  # noqa: E402
from test_statemachine import (  # noqa: E402
    LAMBDA_CRATES, SOURCE, SOURCE_BUCKET, STORE, STORE_BUCKET, STORE_PREFIX, _ping, diagnose, invokes_of, needs_lambdas, prepare_s3,
    store_json, stored_event_ids)

pytestmark = needs_lambdas

# How a dead copy process looks here (measured 2026-11-24, cargo-lambda 1.9.2, moto's SFN
# interpreter): `cargo lambda watch` neither answers for nor restarts a function process that aborts;
# with `--timeout 30` it answers the dead invoke with HTTP 408 (moto: error "Exception"), and its idle
# runtimes then fail too. On AWS a crashed runtime is errorType Runtime.ExitError, which the Copy
# state retries. Here the crash ends the first execution (FAILED, or failed in Finalize); the retry
# path is then a new execution `{"copyId", "retry": true}` (what `trailcopy retry --state-machine`
# starts) against healthy functions, which resumes every item from its last checkpoint.
START, END = "2024-05-01T00:00:00Z", "2024-05-03T00:00:00Z"
ABORT_AFTER = 2  # each copy process commits 2 batches, then dies while writing its 3rd
BATCH_BYTES = 3000  # the generated files are ~3-5 KB gzip: one file per batch, 6 batches per day
CRASH_LINE = "trailcopy: injected crash"
# A function process that dies leaves its invoke unanswered: without a timeout `cargo lambda watch`
# holds the request (the launcher waits 900 s). With one, the watch answers the invoke with an error.
WATCH_ARGS = ("--timeout", "30")


@pytest.fixture(scope="module")
def crash_env(tmp_path_factory):
    """moto + `cargo lambda watch` whose functions run with the abort fault hook."""
    logs = tmp_path_factory.mktemp("sm-crash")
    h.build_lambda_binaries(LAMBDA_CRATES)
    moto_port = h.free_port()
    fn_env = h.function_env(f"http://127.0.0.1:{moto_port}", SOURCE, STORE, **{
        "TRAILCOPY_BATCH_BYTES": str(BATCH_BYTES),
        "TRAILCOPY_FAULT_ABORT_AFTER_BATCHES": str(ABORT_AFTER),
    })
    watch = h.CargoLambdaWatch(fn_env, logs, extra_args=WATCH_ARGS)
    env = {"moto": None, "logs": logs, "watch": watch, "fn_env": fn_env}
    try:
        env["moto"] = h.Moto(watch.url, routes={}, log_dir=logs, port=moto_port)
        for name in LAMBDA_CRATES:
            h.wait_for(lambda n=name: _ping(watch.url, n), 1800, f"binary {name} under cargo lambda watch",
                       interval=2, proc=watch.proc)
        yield env
    finally:
        if env["moto"]:
            env["moto"].stop()
        env["watch"].stop()


def healthy_functions(env):
    """Replaces the crashing watch by one without the fault hook, on the same invoke port."""
    old = env["watch"]
    old.stop()
    clean = {k: v for k, v in env["fn_env"].items() if k != "TRAILCOPY_FAULT_ABORT_AFTER_BATCHES"}
    env["watch"] = h.CargoLambdaWatch(clean, env["logs"], port=old.port, log_name="cargo-lambda-healthy.log")
    for name in LAMBDA_CRATES:
        h.wait_for(lambda n=name: _ping(env["watch"].url, n), 1800, f"binary {name} under cargo lambda watch",
                   interval=2, proc=env["watch"].proc)


def test_lambdas_copy_that_dies_mid_batch_is_retried_and_stores_each_event_once(crash_env, make_trail, tmp_path):
    moto, logs = crash_env["moto"], crash_env["logs"]
    moto.reset()
    s3 = prepare_s3(moto)
    sm = h.deploy(moto, STORE_BUCKET, STORE_PREFIX, max_concurrency=2)
    m = make_trail("sm-crash", seed=31, accounts=1, regions="us-east-1", start_day="2024-05-01", days=2,
                   files_per_day=6, events_per_file=15, duplicates=4)
    exp = expected(m, START, END)
    assert exp["failedEntries"] == 0 and exp["eventsDuplicate"] > 0 and exp["prefixesFound"] == 2
    for f in m["files"]:
        if f["kind"] == "trail":
            s3.upload_file(str(Path(m["root"]) / f["key"]), SOURCE_BUCKET, f["key"])
    # Events without an eventID are deduplicated by their hash: they come back as NULL eventIDs.
    expected_ids = Counter(json.loads(c).get("eventID") for c in exp["copied"])
    assert max(n for k, n in expected_ids.items() if k is not None) == 1

    t0 = time.monotonic()
    copy_id = "sm-crash-1"
    d = h.run_execution(moto, sm, {"source": SOURCE, "store": STORE, "start": START, "end": END,
                                   "copyId": copy_id}, timeout=900)
    elapsed = time.monotonic() - t0
    copies = invokes_of(moto, "copy")
    errors = [i for i in copies if i["status"] != 200]
    error_types = Counter(f"HTTP {i['status']} errorType="
                          + str(i["response"].get("errorType") if isinstance(i["response"], dict)
                                else repr(i["response"])[:80]) for i in errors)
    watch_log = (logs / "cargo-lambda.log").read_text(errors="replace")
    crashes = watch_log.count(CRASH_LINE)
    summary = (f"execution {d['status']} in {elapsed:.1f} s; copy invocations {len(copies)}, "
               f"error responses {len(errors)} {dict(error_types)}; '{CRASH_LINE}' lines {crashes}")
    print(summary)

    # The fault fired: copy processes died mid-batch and their invocations came back as errors.
    assert crashes >= 1, summary + "\n" + diagnose(d, moto, logs)
    assert errors, summary + "\n" + diagnose(d, moto, logs)

    assert d["status"] != "SUCCEEDED", summary
    first = store_json(s3, copy_id, "record.json")
    assert first["status"] != "COMPLETED", first

    # The retry path: a new execution resumes the copy from its checkpoints on healthy functions.
    healthy_functions(crash_env)
    d = h.run_execution(moto, sm, {"copyId": copy_id, "store": STORE, "retry": True}, timeout=900)
    assert d["status"] == "SUCCEEDED", diagnose(d, moto, logs)
    out = json.loads(d["output"])
    assert out["status"] == "COMPLETED", out
    record = store_json(s3, copy_id, "record.json")
    assert record["status"] == "COMPLETED", record
    assert stats_diff(record["statistics"], exp) == {}, (record["statistics"], summary)

    # DuckDB over the store in moto S3: every expected event, none twice.
    ids = stored_event_ids(moto, s3, tmp_path / "store")
    assert len(ids) == exp["eventsCompleted"], (len(ids), exp["eventsCompleted"], summary)
    dupes = {k: n for k, n in Counter(ids).items() if k is not None and n > 1}
    assert not dupes, f"events stored twice: {dupes}"
    assert len(set(i for i in ids if i is not None)) == sum(1 for k in expected_ids if k is not None)
    assert Counter(ids) == expected_ids, (set(expected_ids) - set(ids), set(ids) - set(expected_ids))
