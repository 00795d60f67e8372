"""Issue 31 point 1 on the state machine: a fresh account's Lambda concurrency caps the Map's.

The real ASL runs in moto and the real Lambda binaries run under `cargo lambda watch`
(tests/sm_harness.py; the session's `lambda_env` / `real` fixtures of test_statemachine.py). moto has
no Lambda GetAccountSettings: the launcher answers it with the unreserved concurrency written to
`moto.account_settings_file` ({"UnreservedConcurrentExecutions": n}; 1000 without the file).

- An account with 10 unreserved and a stack asking MaxConcurrency 40: Enumerate answers
  maxConcurrency 8 (10 less a fifth for the account's other functions), the Distributed Map runs
  with MaxConcurrency 8 (its map run, and the state's input through MaxConcurrencyPath), and the
  copy completes with exactly the expected events.
- The default account (1000) and a stack asking 2: the Map runs 2, as asked.
- Enumerate's answer for a few more (asked, unreserved) rows, and when GetAccountSettings is denied
  (then MaxConcurrency as asked), recomputed here from the rule: by invoking the Enumerate function
  directly (the Lambda Invoke API, as the state machine does), no extra execution. The Copy
  reservation (COPY_RESERVED_CONCURRENCY) is the session's function environment, not set here: the
  Rust unit test (functions/core/src/serverless.rs) covers those rows.

The settings file is shared by every test of the session's launcher: each test removes it.
"""
from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sm_harness as h  # noqa: E402
from test_statemachine import (  # noqa: E402,F401  (lambda_env and real are fixtures)
    SOURCE, STORE, STORE_BUCKET, STORE_PREFIX, Trail, diagnose, history, invokes_of, lambda_env, needs_lambdas,
    prepare_s3, real, request, store_json, stored_event_ids)

pytestmark = needs_lambdas

ACCOUNT_SETTINGS_PATH = "/account-settings"


def map_concurrency(asked: int, unreserved: int | None, copy_reserved: int = 0) -> int:
    """The rule (issue 31 point 1), written independently of serverless.rs: what the stack asks, capped
    to the Copy reservation when there is one and to the unreserved pool less a fifth (rounded up) left
    to the account's other functions; at least 1. Unknown unreserved (GetAccountSettings failed): as
    asked, within the reservation."""
    cap = asked
    if copy_reserved > 0:
        cap = min(cap, copy_reserved)
    if unreserved is not None:
        cap = min(cap, unreserved - math.ceil(unreserved / 5))
    return max(cap, 1)


def set_unreserved(moto: h.Moto, n: int) -> None:
    moto.account_settings_file.write_text(json.dumps({"UnreservedConcurrentExecutions": n}))


@pytest.fixture
def account_settings(real):
    """The `real` fixture; the account settings file is removed after the test, whatever happens."""
    moto = real[0]
    moto.account_settings_file.unlink(missing_ok=True)
    try:
        yield real
    finally:
        moto.account_settings_file.unlink(missing_ok=True)


def account_settings_requests(moto: h.Moto) -> list[dict]:
    with moto.proxy.lock:
        return [r for r in moto.proxy.records if ACCOUNT_SETTINGS_PATH in r["path"]]


def enumerate_answers(moto: h.Moto) -> list[dict]:
    return [i for i in invokes_of(moto, "enumerate") if i["status"] == 200]


def map_runs(moto: h.Moto, execution_arn: str) -> list[dict]:
    sfn = moto.client("stepfunctions")
    runs = sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
    return [sfn.describe_map_run(mapRunArn=r["mapRunArn"]) for r in runs]


def map_state_concurrency(moto: h.Moto, execution_arn: str) -> dict:
    """From the execution history: Enumerate's output (TaskStateExited) and the Map's input
    (MapStateEntered), each state's `maxConcurrency` (None when absent)."""
    seen = {}
    for e in history(moto, execution_arn):
        if e["type"] == "TaskStateExited" and e["stateExitedEventDetails"]["name"] == "Enumerate":
            seen["enumerateOutput"] = json.loads(e["stateExitedEventDetails"]["output"]).get("maxConcurrency")
        if e["type"] == "MapStateEntered" and e["stateEnteredEventDetails"]["name"] == "CopyWorkItems":
            seen["mapInput"] = json.loads(e["stateEnteredEventDetails"]["input"]).get("maxConcurrency")
    return seen


def copy_and_check_concurrency(moto: h.Moto, s3, sm: str, logs: Path, tmp_path: Path, asked: int,
                               expected: int) -> None:
    """One execution of the usual test data: it succeeds with exactly the expected events, and the
    Map ran `expected` items at most at once (Enumerate's answer, the map run, the Map state's input)."""
    trail = Trail(s3)
    trail.standard_days()
    d = h.run_execution(moto, sm, request(), timeout=900)
    assert d["status"] == "SUCCEEDED", diagnose(d, moto, logs)
    out = json.loads(d["output"])
    assert out["status"] == "COMPLETED" and out["failedEntries"] == 0, out
    ids = stored_event_ids(moto, s3, tmp_path / "store")
    dupes = {k: n for k, n in Counter(ids).items() if n > 1}
    assert not dupes, f"events stored more than once: {dupes}"
    assert set(ids) == trail.expected, (sorted(set(ids) ^ trail.expected), diagnose(d, moto, logs))
    record = store_json(s3, out["copyId"], "record.json")
    assert record["status"] == "COMPLETED", record
    assert record["statistics"]["eventsCompleted"] == len(trail.expected), record["statistics"]

    # Enumerate got the stack's MaxConcurrency as a number and answered the capped value.
    answers = enumerate_answers(moto)
    assert len(answers) == 1, [json.dumps(i)[:600] for i in invokes_of(moto, "enumerate")]
    assert answers[0]["request"]["maxConcurrency"] == asked, answers[0]["request"]
    assert answers[0]["request"]["executionArn"] == d["executionArn"], answers[0]["request"]
    assert answers[0]["response"]["maxConcurrency"] == expected, \
        f"Enumerate answered maxConcurrency {answers[0]['response'].get('maxConcurrency')}, expected {expected}:\n" \
        + json.dumps(answers[0])[:1500]
    # Enumerate asked the account (through the recording proxy, as it reaches moto), and got an answer.
    asked_account = account_settings_requests(moto)
    assert asked_account, "Enumerate did not call Lambda GetAccountSettings"
    assert all(r["method"] == "GET" and r["status"] == 200 for r in asked_account), \
        [(r["method"], r["path"], r["status"]) for r in asked_account]

    # The Map ran with it: the map run moto describes, and the state's input (MaxConcurrencyPath).
    runs = map_runs(moto, d["executionArn"])
    if runs and all("maxConcurrency" in r for r in runs):
        assert [r["maxConcurrency"] for r in runs] == [expected], runs
    states = map_state_concurrency(moto, d["executionArn"])
    assert states == {"enumerateOutput": expected, "mapInput": expected}, states


# ==================================================================================================
# 1. A fresh account's 10 unreserved: the Map runs 8, not the stack's 40
# ==================================================================================================
def test_lambdas_a_fresh_accounts_concurrency_caps_the_map(account_settings, tmp_path):
    moto, s3, sm, logs = account_settings
    moto.reset()  # a state machine asking 40 (the template's default) in place of the fixture's 2
    s3 = prepare_s3(moto)
    sm = h.deploy(moto, STORE_BUCKET, STORE_PREFIX, max_concurrency=40)
    set_unreserved(moto, 10)
    with moto.proxy.lock:
        moto.proxy.records.clear()
    assert map_concurrency(40, 10) == 8
    copy_and_check_concurrency(moto, s3, sm, logs, tmp_path, asked=40, expected=8)


# ==================================================================================================
# 2. The default account (1000): MaxConcurrency as the stack asks
# ==================================================================================================
def test_lambdas_the_default_account_keeps_the_stacks_max_concurrency(account_settings, tmp_path):
    moto, s3, sm, logs = account_settings
    moto.reset()
    s3 = prepare_s3(moto)
    sm = h.deploy(moto, STORE_BUCKET, STORE_PREFIX, max_concurrency=2)
    assert not moto.account_settings_file.exists()  # the launcher answers 1000
    with moto.proxy.lock:
        moto.proxy.records.clear()
    assert map_concurrency(2, 1000) == 2
    copy_and_check_concurrency(moto, s3, sm, logs, tmp_path, asked=2, expected=2)


# ==================================================================================================
# 3. The rule, row by row, against Enumerate's answer (direct invokes: no execution)
# ==================================================================================================
# (asked, unreserved; None: GetAccountSettings denied)
ROWS = [
    (40, 1000),
    (40, 50),   # 50 - 10
    (40, 49),   # 49 - 10 (a fifth rounded up)
    (40, 10),
    (40, 7),    # 7 - 2
    (3, 10),    # asked is less than the account's cap
    (40, 2),    # 2 - 1
    (40, 1),    # 1 - 1 = 0: never 0
    (40, 0),
    (500, None),  # the account cannot be read: as asked
]


def test_lambdas_enumerate_answers_the_rule_for_each_account(account_settings):
    moto, s3, sm, logs = account_settings
    lam = moto.client("lambda")
    got, want = {}, {}
    for n, (asked, unreserved) in enumerate(ROWS):
        rule = None
        if unreserved is None:
            moto.account_settings_file.unlink(missing_ok=True)
            rule = moto.proxy.fault_matching(ACCOUNT_SETTINGS_PATH, kind="denied", times=1)
        else:
            set_unreserved(moto, unreserved)
        # A window of its own per row (an empty day: the plan is quick, and no claim overlaps another
        # row's: a direct invoke's claim stays held by the function's process).
        day = f"2021-01-{n + 1:02d}"
        payload = {"input": {"source": SOURCE, "store": STORE, "start": f"{day}T00:00:00Z",
                             "end": f"{day}T01:00:00Z", "copyId": f"concurrency-row-{n}"},
                   "maxConcurrency": asked}
        try:
            r = lam.invoke(FunctionName="enumerate", Payload=json.dumps(payload).encode())
            body = json.loads(r["Payload"].read())
            assert "FunctionError" not in r, (ROWS[n], body)
        finally:
            if rule is not None:
                moto.proxy.clear_rules()
        if rule is not None:
            assert rule["faulted"], f"GetAccountSettings was not called for row {ROWS[n]}"
        got[ROWS[n]] = body["maxConcurrency"]
        want[ROWS[n]] = map_concurrency(asked, unreserved)
    assert got == want, "\n".join(f"asked {a}, unreserved {u}: Enumerate {got[(a, u)]}, rule {want[(a, u)]}"
                                  for a, u in ROWS if got[(a, u)] != want[(a, u)])
    assert want[(40, 10)] == 8 and want[(40, 1)] == 1 and want[(40, 0)] == 1 and want[(500, None)] == 500
