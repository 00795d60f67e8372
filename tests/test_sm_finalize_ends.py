"""Issue 31 points 2, 3 and 4 on the state machine: the real ASL runs in moto and the real Lambda
binaries run under `cargo lambda watch` (tests/sm_harness.py; the session's `lambda_env` / `real`
fixtures of test_statemachine.py).

- Point 4, every end of an execution finalizes the record: an execution stopped from the console
  (StopExecution) never reaches the Finalize state, so its record stays IN_PROGRESS; the stack's
  always-on EventBridge rule (`ExecutionEndedRule`) then delivers Step Functions' "Execution Status
  Change" event to the Finalize function, delivered here as EventBridge would: the Lambda Invoke API
  on the deployed function, with the event built from DescribeExecution. The copy becomes STOPPED,
  its claim goes, `trailcopy status` says STOPPED and a retry execution completes it. The event is
  idempotent with itself and with a normal Finalize, and changes nothing for an execution that is
  not the copy's latest, or for one refused before it wrote a record.
- Point 2, a retried Enumerate plans again: the fault proxy in front of moto fails the PutObject of
  `workitems.json` past the SDK's retries (8 attempts), after record.json was written; the Enumerate
  state's Retry (errorType `Retryable`) re-invokes the function, which finds its own unfinished plan
  (FAILED "planning failed", or INITIALIZING with its claim still held, as after a timeout) and
  plans again instead of failing "copy … already exists".
- Point 3, a log file deleted after planning (a lifecycle rule) is one `LogFileVanished` entry naming
  its key while the rest of its item is copied; once it is back, a retry execution reads it.
- The ends around Enumerate (last in this file): a Stop while Enumerate runs (its invocation goes on
  and finishes the plan after the event was handled); a retry execution's Enumerate retried after a
  transient error (one attempt, the execution listed once); a retry execution that fails in its
  Enumerate after reopening the copy (its FAILED event must still finalize the copy).

moto's StopExecution ends a Distributed Map's waiting children at once (nothing runs after it), but
shows an execution RUNNING until a task's Lambda invocation in flight returns; on AWS it is ABORTED
at once. The events are built as Step Functions sends them either way.
"""
from __future__ import annotations

import datetime as dt
import json
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sm_harness as h  # noqa: E402
from test_statemachine import (  # noqa: E402,F401  (lambda_env and real are fixtures)
    RANGE, SOURCE, SOURCE_BUCKET, STORE, STORE_BUCKET, STORE_PREFIX, diagnose, invokes_of, lambda_env,
    needs_lambdas, real, store_json, stored_event_ids)

pytestmark = needs_lambdas

UTC = dt.timezone.utc
ACCOUNT = "111122223333"
REGION = "us-east-1"
DETAIL_TYPE = "Step Functions Execution Status Change"


def t(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(UTC)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------
class Trail:
    """Trail files in moto S3, with the events each holds."""

    def __init__(self, s3):
        self.s3 = s3
        self.n = 0
        self.files: dict[str, list[dict]] = {}  # key -> events
        self.classes: dict[str, str | None] = {}

    def file(self, name_time: str, event_times: list[str], storage_class: str | None = None) -> str:
        key = h.trail_key(ACCOUNT, REGION, t(name_time), uuid.uuid4().hex[:16].upper())
        events = []
        for et in event_times:
            self.n += 1
            events.append(h.make_event(t(et), ACCOUNT, REGION, self.n))
        self.files[key] = events
        self.classes[key] = storage_class
        self.put_back(key)
        return key

    def put_back(self, key: str) -> None:
        h.put_trail_file(self.s3, SOURCE_BUCKET, key, self.files[key], self.classes[key])

    def ids(self, key: str) -> set[str]:
        return {e["eventID"] for e in self.files[key]}

    def expected(self, start: str = RANGE["start"], end: str = RANGE["end"], without=()) -> set[str]:
        return {e["eventID"] for k, evs in self.files.items() if k not in without
                for e in evs if t(start) <= t(e["eventTime"]) < t(end)}

    def standard_days(self) -> None:
        # As test_statemachine.Trail: day 1 holds the previous day's last events, day 3 the last
        # minutes of day 2 (in range).
        self.file("2020-10-01T00:05Z", ["2020-09-30T23:55:00Z", "2020-10-01T00:01:00Z"])
        self.file("2020-10-01T12:00Z", ["2020-10-01T11:50:00Z", "2020-10-01T11:55:00Z", "2020-10-01T11:59:00Z"])
        self.file("2020-10-02T08:00Z", ["2020-10-02T07:48:00Z", "2020-10-02T07:59:59Z"])
        self.file("2020-10-03T00:05Z", ["2020-10-02T23:58:00Z", "2020-10-03T00:02:00Z"])


def record_bytes(s3, copy_id: str, name: str = "record.json") -> bytes:
    return s3.get_object(Bucket=STORE_BUCKET, Key=f"{STORE_PREFIX}copies/{copy_id}/{name}")["Body"].read()


def maybe_record(s3, copy_id: str) -> dict | None:
    try:
        return json.loads(record_bytes(s3, copy_id))
    except s3.exceptions.NoSuchKey:
        return None


def claims(s3) -> list[dict]:
    try:
        body = s3.get_object(Bucket=STORE_BUCKET, Key=f"{STORE_PREFIX}claims.json")["Body"].read()
    except s3.exceptions.NoSuchKey:
        return []
    return json.loads(body)["claims"]


def failure_list(doc) -> list[dict]:
    return doc["failures"] if isinstance(doc, dict) else doc


def copy_keys(s3, copy_id: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=STORE_BUCKET, Prefix=f"{STORE_PREFIX}copies/{copy_id}/")
            .get("Contents", [])]


def start(moto: h.Moto, sm: str, request: dict, name: str | None = None) -> str:
    sfn = moto.client("stepfunctions")
    return sfn.start_execution(stateMachineArn=sm, name=name or uuid.uuid4().hex,
                               input=json.dumps(request))["executionArn"]


def wait(moto: h.Moto, arn: str, timeout: float = 300) -> dict:
    sfn = moto.client("stepfunctions")
    return h.wait_for(lambda: (d := sfn.describe_execution(executionArn=arn))["status"] != "RUNNING" and d,
                      timeout, f"execution {arn}", interval=0.5)


def no_duplicates(ids: list[str]) -> None:
    dupes = {k: n for k, n in Counter(ids).items() if n > 1}
    assert not dupes, f"events stored more than once: {dupes}"


def status_change(d: dict, status: str | None = None, error: str | None = None, cause: str | None = None) -> dict:
    """Step Functions' "Execution Status Change" event for the execution DescribeExecution `d`
    describes, as EventBridge delivers it to a Lambda target
    (https://docs.aws.amazon.com/step-functions/latest/dg/eb-events.html). Empty strings are null
    (a console Stop has neither error nor cause)."""
    ms = lambda ts: int(ts.timestamp() * 1000) if ts else None  # noqa: E731
    stop = d.get("stopDate") or dt.datetime.now(UTC)
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": DETAIL_TYPE, "source": "aws.states",
        "account": h.ACCOUNT, "time": stop.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "region": h.REGION,
        "resources": [d["executionArn"]],
        "detail": {
            "executionArn": d["executionArn"], "stateMachineArn": d["stateMachineArn"], "name": d["name"],
            "status": status or d["status"], "startDate": ms(d["startDate"]), "stopDate": ms(d.get("stopDate")),
            "input": d["input"], "inputDetails": {"included": True},
            "output": d.get("output") or None, "outputDetails": {"included": True} if d.get("output") else None,
            "error": error if error is not None else (d.get("error") or None),
            "cause": cause if cause is not None else (d.get("cause") or None),
        },
    }


def deliver(moto: h.Moto, event: dict) -> dict:
    """EventBridge's delivery to the rule's target: an asynchronous-style Invoke of the deployed
    Finalize function through moto's Lambda API (the launcher forwards it to cargo lambda watch)."""
    import boto3
    import botocore.config
    lam = boto3.client("lambda", endpoint_url=moto.url, region_name=h.REGION, aws_access_key_id="test",
                       aws_secret_access_key="test",
                       config=botocore.config.Config(read_timeout=300, retries={"max_attempts": 1}))
    r = lam.invoke(FunctionName=h.FUNCTIONS["FinalizeFunction"], Payload=json.dumps(event).encode())
    payload = json.loads(r["Payload"].read() or b"null")
    assert "FunctionError" not in r, f"Finalize failed on the {event['detail']['status']} event: {payload}"
    return payload


def cli_env(moto: h.Moto) -> dict:
    return {"AWS_ENDPOINT_URL": moto.url, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": h.REGION, "AWS_DEFAULT_REGION": h.REGION}


def restores_finish_at_once(moto: h.Moto) -> None:
    """The state manager's transition survives /moto-api/reset."""
    moto.api("state-manager/set-transition", {"model_name": "s3::keyrestore",
                                              "transition": {"progression": "immediate"}})


@pytest.fixture
def sm_env(real):
    """`real`, and afterwards: restores finish at once again, no targeted proxy faults left."""
    moto = real[0]
    moto.proxy.clear_rules()
    try:
        yield real
    finally:
        moto.proxy.clear_rules()
        restores_finish_at_once(moto)


def wait_running(moto: h.Moto, logs, arn: str, predicate, what: str, timeout: float = 120):
    """Waits for `predicate`; fails at once (with the diagnosis) if the execution ends meanwhile."""
    state = {}

    def check():
        value = predicate()
        if not value and (d := moto.client("stepfunctions").describe_execution(executionArn=arn))["status"] != "RUNNING":
            state["ended"] = d
            return True
        return value
    value = h.wait_for(check, timeout, what, interval=0.1)
    if "ended" in state:
        raise AssertionError(f"the execution ended while waiting for {what}:\n" + diagnose(state["ended"], moto, logs))
    return value


def item_done(i: dict) -> bool:
    return i["status"] == 200 and isinstance(i["response"], dict) and i["response"].get("done") is True


# ==================================================================================================
# Point 4: a console Stop, then the EventBridge event to Finalize
# ==================================================================================================
POLL = 2  # restore.pollSeconds of the stopped copy


def test_lambdas_stopped_execution_is_finalized_stopped_by_the_event_and_retry_completes_it(sm_env, trailcopy, tmp_path):
    moto, s3, sm, logs = sm_env
    sfn = moto.client("stepfunctions")
    trail = Trail(s3)
    trail.standard_days()
    moto.hold_restores(3600)
    archived = trail.file("2020-10-02T16:00Z", ["2020-10-02T15:50:00Z", "2020-10-02T15:51:00Z"], storage_class="GLACIER")
    copy_id = "sm-console-stop"
    request = {"source": SOURCE, "store": STORE, **RANGE, "copyId": copy_id,
               "restore": {"tier": "Bulk", "days": 1, "pollSeconds": POLL, "maxWaitSeconds": 600}}
    first = start(moto, sm, request)

    # Hold: day 2's item waits for its restore (Wait states between Prepares) while days 1 and 3 complete.
    def held():
        prep = [i for i in invokes_of(moto, "prepare") if i["status"] == 200
                and i["request"]["item"]["date"] == "2020-10-02" and i["response"]["pendingRestores"] > 0]
        done = {i["request"]["item"]["date"] for i in invokes_of(moto, "copy") if item_done(i)}
        return prep and done == {"2020-10-01", "2020-10-03"}
    wait_running(moto, logs, first, held, "days 1 and 3 copied while day 2 waits for its restore")
    record = store_json(s3, copy_id, "record.json")
    assert record["status"] == "IN_PROGRESS" and record["executions"] == [first], record

    # The console's Stop.
    sfn.stop_execution(executionArn=first)
    stopped_at = time.time()
    d1 = sfn.describe_execution(executionArn=first)
    assert d1["status"] == "ABORTED", d1
    time.sleep(2 * POLL + 1)  # more than a poll: whatever still ran had its chance to write
    assert not invokes_of(moto, "finalize"), "something ran Finalize after a Stop"
    print(f"\n[stop] invocations after the Stop (moto): {[i['function'] for i in moto.invokes() if i['time'] > stopped_at + 0.5]}")
    record = store_json(s3, copy_id, "record.json")
    assert record["status"] == "IN_PROGRESS", f"a Stop alone changed the record (moto ran Finalize?): {record}"
    assert [c["copyId"] for c in claims(s3)] == [copy_id], claims(s3)
    r = trailcopy("status", copy_id, "--store", STORE, "--json", env=cli_env(moto))
    assert r.json["status"] == "IN_PROGRESS", r.describe()

    # EventBridge delivers the ABORTED event to Finalize.
    d1 = sfn.describe_execution(executionArn=first)
    assert json.loads(d1["input"]) == request, d1["input"]
    event = status_change(d1)
    out = deliver(moto, event)
    assert out["copyId"] == copy_id and out["status"] == "STOPPED", out
    record = store_json(s3, copy_id, "record.json")
    assert record["status"] == "STOPPED", record
    message = record.get("message") or ""
    assert "stopped" in message and first in message, message
    assert f"trailcopy retry {copy_id} --store" in message and f"--state-machine {sm}" in message, message
    assert record["executions"] == [first], record["executions"]
    assert record["statistics"]["prefixesCompleted"] == 2 and record["statistics"]["prefixesFound"] == 3, \
        record["statistics"]
    assert [(a["number"], a["kind"], a.get("status")) for a in record["attempts"]] == [(1, "copy", "STOPPED")], \
        record["attempts"]
    assert not [c for c in claims(s3) if c["copyId"] == copy_id], f"the claim was not released: {claims(s3)}"
    # A stop is no failure: nothing listed.
    assert failure_list(store_json(s3, copy_id, "failures.json")) == [], store_json(s3, copy_id, "failures.json")

    # Delivered again (EventBridge delivers at least once): nothing changes.
    before = {n: record_bytes(s3, copy_id, n) for n in ("record.json", "failures.json")}
    again = deliver(moto, dict(event, id=str(uuid.uuid4())))
    assert again["status"] == "UNCHANGED" and again["copyId"] == copy_id, again
    assert {n: record_bytes(s3, copy_id, n) for n in before} == before, "a second delivery changed the record"

    # `trailcopy status` (the record only) says STOPPED and how to resume.
    r = trailcopy("status", copy_id, "--store", STORE, "--json", env=cli_env(moto))
    assert r.returncode == 1, r.describe()  # STOPPED exits 1 (contracts.md)
    assert r.json["status"] == "STOPPED", r.describe()
    assert "stopped" in (r.json.get("message") or ""), r.json
    txt = trailcopy("status", copy_id, "--store", STORE, env=cli_env(moto))
    assert "STOPPED" in txt.stdout and "--state-machine" in txt.stdout, txt.describe()

    # A retry execution resumes it. While it waits for the (still held) restore, late events of the
    # stopped execution change nothing: it is no longer the copy's latest.
    retry = start(moto, sm, {"copyId": copy_id, "store": STORE, "retry": True})
    h.wait_for(lambda: (rec := store_json(s3, copy_id, "record.json"))["status"] == "IN_PROGRESS"
               and rec["executions"][-1] == retry, 60, "the retry's plan", interval=0.2)
    running = record_bytes(s3, copy_id)
    assert json.loads(running)["executions"] == [first, retry], running
    for status, error, cause in (("ABORTED", None, None), ("FAILED", "States.Runtime", "late"),
                                 ("TIMED_OUT", "States.Timeout", None)):
        late = deliver(moto, status_change(d1, status=status, error=error, cause=cause))
        assert late["status"] == "UNCHANGED", (status, late)
        assert record_bytes(s3, copy_id) == running, f"a late {status} event of the stopped execution changed the record"
    assert sfn.describe_execution(executionArn=retry)["status"] == "RUNNING", "the retry ended before the check"
    assert [c["copyId"] for c in claims(s3)] == [copy_id], f"a late event released the retry's claim: {claims(s3)}"

    restores_finish_at_once(moto)
    d2 = wait(moto, retry, timeout=300)
    assert d2["status"] == "SUCCEEDED", diagnose(d2, moto, logs)
    record = store_json(s3, copy_id, "record.json")
    assert record["status"] == "COMPLETED", record
    assert record["executions"] == [first, retry], record["executions"]
    assert [(a["number"], a["kind"], a.get("status")) for a in record["attempts"]] == \
        [(1, "copy", "STOPPED"), (2, "retry", "COMPLETED")], record["attempts"]
    assert not claims(s3), claims(s3)
    ids = stored_event_ids(moto, s3, tmp_path / "store")
    no_duplicates(ids)
    assert set(ids) == trail.expected(), (trail.expected() - set(ids), set(ids) - trail.expected())
    assert trail.ids(archived) <= set(ids)

    # The ended retry's own (redundant) event, and the first's again: final records stay as they are.
    done = record_bytes(s3, copy_id)
    for d, status in ((d2, "FAILED"), (d2, "ABORTED"), (d1, "ABORTED")):
        out = deliver(moto, status_change(d, status=status))
        assert out["status"] == "UNCHANGED", (status, out)
    assert record_bytes(s3, copy_id) == done


# ==================================================================================================
# Point 4: idempotent with a normal Finalize; the copy found from any input the schedule or console gives
# ==================================================================================================
def test_lambdas_ended_events_change_nothing_after_a_normal_finalize_or_without_a_record(sm_env):
    moto, s3, sm, logs = sm_env
    sfn = moto.client("stepfunctions")
    trail = Trail(s3)
    trail.standard_days()
    trail.file("2020-10-05T12:00Z", ["2020-10-05T11:50:00Z"])

    # Started from the console without a copyId: the execution's name is the copy id.
    name = f"sm-console-{uuid.uuid4().hex[:8]}"
    d = wait(moto, start(moto, sm, {"source": SOURCE, "store": STORE, **RANGE}, name=name))
    assert d["status"] == "SUCCEEDED", diagnose(d, moto, logs)
    assert json.loads(d["output"])["copyId"] == name, d["output"]
    # A scheduled run (the store is the function's DEFAULT_STORE): copy id from the scheduled time.
    sched = wait(moto, start(moto, sm, {"request": {"scheduledTime": "2020-10-06T00:00:00Z", "window": "P1D"},
                                        "settleSeconds": 0}))
    assert sched["status"] == "SUCCEEDED", diagnose(sched, moto, logs)
    sched_id = json.loads(sched["output"])["copyId"]
    assert sched_id == "scheduled-20201006T000000Z", sched["output"]

    for copy_id, ended in ((name, d), (sched_id, sched)):
        assert store_json(s3, copy_id, "record.json")["status"] == "COMPLETED"
        before = {n: record_bytes(s3, copy_id, n) for n in ("record.json", "failures.json")}
        for status, error, cause in (("FAILED", "States.Runtime", "An error occurred while executing the state"),
                                     ("TIMED_OUT", "States.Timeout", None), ("ABORTED", None, None)):
            out = deliver(moto, status_change(ended, status=status, error=error, cause=cause))
            # UNCHANGED, not NO_RECORD: the copy was found from the input (or the execution's name).
            assert out == {**out, "copyId": copy_id, "status": "UNCHANGED"}, (copy_id, status, out)
        assert {n: record_bytes(s3, copy_id, n) for n in before} == before, f"an ended event changed {copy_id}"
    assert not claims(s3), claims(s3)

    # An execution refused at Enumerate (an invalid range) wrote no record: its FAILED event finds none.
    refused_id = "sm-refused"
    refused = wait(moto, start(moto, sm, {"source": SOURCE, "store": STORE, "copyId": refused_id,
                                          "start": RANGE["end"], "end": RANGE["start"]}))
    assert refused["status"] == "FAILED" and refused["error"] == "InvalidRequest", diagnose(refused, moto, logs)
    out = deliver(moto, status_change(refused))
    assert out["status"] == "NO_RECORD" and out["copyId"] == refused_id, out
    assert copy_keys(s3, refused_id) == [], copy_keys(s3, refused_id)
    assert not claims(s3), claims(s3)


# ==================================================================================================
# Point 2: Enumerate retried by the state machine plans again
# ==================================================================================================
SDK_ATTEMPTS = 8  # the functions' S3 client: adaptive retries, 8 attempts (AWS_MAX_ATTEMPTS unset)


@pytest.mark.parametrize("left_as", ["planning-failed", "initializing"])
def test_lambdas_enumerate_retried_after_a_transient_error_plans_again(sm_env, tmp_path, left_as):
    """`planning-failed`: the first attempt fails cleanly (record FAILED "planning failed …", claim
    released). `initializing`: what a timed-out Enumerate leaves: the record INITIALIZING and the claim
    still held by the execution (the proxy refuses the FAILED record's write and the claim's release
    with 403, which the SDK does not retry and plan_copy only logs)."""
    moto, s3, sm, logs = sm_env
    proxy = moto.proxy
    trail = Trail(s3)
    trail.standard_days()
    copy_id = f"sm-enum-retry-{left_as}"
    # 500 InternalError on every attempt of the first Enumerate's PutObject of workitems.json: the SDK
    # gives up, the function answers errorType Retryable, which the Enumerate state retries.
    items_rule = proxy.fault_matching(f"copies/{copy_id}/workitems.json", "internal", times=SDK_ATTEMPTS,
                                      methods={"PUT"})
    rules = {"workitems.json": items_rule}
    if left_as == "initializing":
        # record.json: the INITIALIZING write passes, the FAILED one is refused.
        rules["record.json"] = proxy.fault_matching(f"copies/{copy_id}/record.json", "denied", times=1,
                                                    methods={"PUT"}, skip=1)
        # claims.json: the claim's write passes, its release's write is refused.
        rules["claims.json"] = proxy.fault_matching(f"{STORE_PREFIX}claims.json", "denied", times=1,
                                                    methods={"PUT"}, skip=1)
    t0 = time.monotonic()
    d = h.run_execution(moto, sm, {"source": SOURCE, "store": STORE, **RANGE, "copyId": copy_id}, timeout=300)
    took = time.monotonic() - t0
    faults = {k: (len(r["faulted"]), r["seen"]) for k, r in rules.items()}
    enums = invokes_of(moto, "enumerate")
    summary = (f"{took:.1f} s; faults (faulted, seen) {faults}; enumerate answers "
               f"{[(i['status'], i['response'].get('errorType') if isinstance(i['response'], dict) else None) for i in enums]}")
    print(summary)
    assert d["status"] == "SUCCEEDED", summary + "\n" + diagnose(d, moto, logs)
    assert all(len(r["faulted"]) == (SDK_ATTEMPTS if k == "workitems.json" else 1) for k, r in rules.items()), summary

    # The first attempt failed Retryable naming what failed; the state's Retry re-invoked Enumerate.
    failed = [i for i in enums if i["status"] != 200]
    assert failed and enums[-1]["status"] == 200 and len(enums) == len(failed) + 1, summary
    for i in failed:
        assert i["response"]["errorType"] == "Retryable", i["response"]
        assert "workitems.json" in i["response"]["errorMessage"], i["response"]
        assert "already exists" not in i["response"]["errorMessage"], i["response"]
    assert all(i["request"] == enums[0]["request"] for i in enums), "the retry changed Enumerate's payload"
    hist = h.wait_for(lambda: sfn_history(moto, d["executionArn"]), 10, "history")
    assert sum(1 for e in hist if e["type"] == "TaskFailed") == len(failed), [e["type"] for e in hist]

    out = json.loads(d["output"])
    assert out["status"] == "COMPLETED" and out["failedEntries"] == 0, out
    record = store_json(s3, copy_id, "record.json")
    assert record["status"] == "COMPLETED", record
    assert record["executions"] == [d["executionArn"]], record["executions"]
    assert "message" not in record or not (record["message"] or "").startswith("planning failed"), record
    assert [(a["number"], a["kind"], a.get("status")) for a in record["attempts"]] == [(1, "copy", "COMPLETED")], \
        record["attempts"]
    assert record["statistics"]["prefixesFound"] == record["statistics"]["prefixesCompleted"] == 3, record["statistics"]
    assert record["statistics"]["eventsCompleted"] == len(trail.expected()), record["statistics"]
    assert len(store_json(s3, copy_id, "workitems.json")) == record["statistics"]["workItemsFound"]
    assert not claims(s3), f"Finalize kept the claim: {claims(s3)}"
    ids = stored_event_ids(moto, s3, tmp_path / "store")
    no_duplicates(ids)
    assert set(ids) == trail.expected(), (trail.expected() - set(ids), set(ids) - trail.expected())


def sfn_history(moto: h.Moto, arn: str) -> list[dict]:
    return moto.client("stepfunctions").get_execution_history(executionArn=arn, maxResults=1000)["events"]


# ==================================================================================================
# Point 3: a log file deleted after planning
# ==================================================================================================
def test_lambdas_log_file_deleted_after_planning_is_one_entry_and_the_rest_is_copied(sm_env, tmp_path):
    moto, s3, sm, logs = sm_env
    sfn = moto.client("stepfunctions")
    trail = Trail(s3)
    trail.standard_days()
    # Day 2's item: the standard-days file, one that a lifecycle rule deletes once the item is
    # planned and prepared, and an archived one whose restore holds the item in Prepare's wait loop
    # (its Copy cannot start before the restore finishes: a deterministic window).
    vanishing = trail.file("2020-10-02T10:00Z", ["2020-10-02T09:55:00Z", "2020-10-02T09:56:00Z", "2020-10-02T09:57:00Z"])
    moto.hold_restores(3600)
    archived = trail.file("2020-10-02T16:00Z", ["2020-10-02T15:50:00Z", "2020-10-02T15:51:00Z"], storage_class="GLACIER")
    copy_id = "sm-vanished"
    request = {"source": SOURCE, "store": STORE, **RANGE, "copyId": copy_id,
               "restore": {"tier": "Bulk", "days": 1, "pollSeconds": 1, "maxWaitSeconds": 600}}
    arn = start(moto, sm, request)

    def waiting():
        return [i for i in invokes_of(moto, "prepare") if i["status"] == 200
                and i["request"]["item"]["date"] == "2020-10-02" and i["response"]["pendingRestores"] > 0]
    prep = wait_running(moto, logs, arn, waiting, "day 2's item waiting for its restore")
    listing = store_json(s3, copy_id, f"items/{prep[0]['request']['item']['index']}/listing.json")
    assert vanishing in json.dumps(listing), f"the item's frozen list lacks the file: {listing}"
    s3.delete_object(Bucket=SOURCE_BUCKET, Key=vanishing)
    assert not [c for c in invokes_of(moto, "copy") if c["request"]["item"]["date"] == "2020-10-02"], \
        "day 2's Copy ran before the restore finished"
    restores_finish_at_once(moto)
    d = wait(moto, arn, timeout=300)
    assert d["status"] == "FAILED" and d["error"] == "CopyFailed", diagnose(d, moto, logs)
    assert "1 failure entries" in d["cause"], d["cause"]

    record = store_json(s3, copy_id, "record.json")
    assert record["status"] == "FAILED" and record["statistics"]["failedEntries"] == 1, record
    failures = failure_list(store_json(s3, copy_id, "failures.json"))
    assert len(failures) == 1, failures
    f = failures[0]
    print(f"\n[vanished] {f}")
    assert f["errorType"] == "LogFileVanished", f
    assert vanishing in f["location"] or vanishing in f["errorMessage"], f
    # Not the old reading of a 404/403: not an access problem, not the whole item.
    assert "AccessDenied" not in json.dumps(f) and "s3:GetObject" not in f["errorMessage"], f
    ids = stored_event_ids(moto, s3, tmp_path / "first")
    no_duplicates(ids)
    expected = trail.expected(without={vanishing})
    assert set(ids) == expected, (expected - set(ids), set(ids) - expected)
    assert trail.ids(archived) <= set(ids), "the rest of the item (the archived file) was not copied"

    # The file is back (restored from a backup): a retry execution reads it.
    trail.put_back(vanishing)
    d2 = h.run_execution(moto, sm, {"copyId": copy_id, "store": STORE, "retry": True}, timeout=300)
    assert d2["status"] == "SUCCEEDED", diagnose(d2, moto, logs)
    record = store_json(s3, copy_id, "record.json")
    assert record["status"] == "COMPLETED" and record["statistics"]["failedEntries"] == 0, record
    assert failure_list(store_json(s3, copy_id, "failures.json")) == []
    assert record["statistics"]["eventsCompleted"] == len(trail.expected()), record["statistics"]
    ids = stored_event_ids(moto, s3, tmp_path / "after-retry")
    no_duplicates(ids)
    assert set(ids) == trail.expected(), (trail.expected() - set(ids), set(ids) - trail.expected())


# ==================================================================================================
# Point 4: a Stop while Enumerate runs; a timed-out or failed execution
# ==================================================================================================
@pytest.mark.parametrize("ended", ["TIMED_OUT", "FAILED"])
def test_lambdas_timed_out_or_failed_execution_is_finalized_failed_by_the_event(sm_env, tmp_path, ended):
    """An execution that timed out (TimeoutSeconds) or failed with an error no Catch takes
    (States.Runtime, States.DataLimitExceeded): its event makes the copy FAILED with one entry naming
    the execution and the error, and releases the claim; the completed items stay, a retry finishes.
    (moto cannot time an execution out or raise States.Runtime: the execution is stopped there and
    the event says what Step Functions would.)"""
    moto, s3, sm, logs = sm_env
    sfn = moto.client("stepfunctions")
    trail = Trail(s3)
    trail.standard_days()
    moto.hold_restores(3600)
    trail.file("2020-10-02T16:00Z", ["2020-10-02T15:50:00Z"], storage_class="GLACIER")
    copy_id = f"sm-ended-{ended.lower()}"
    arn = start(moto, sm, {"source": SOURCE, "store": STORE, **RANGE, "copyId": copy_id,
                           "restore": {"tier": "Bulk", "days": 1, "pollSeconds": 1, "maxWaitSeconds": 600}})

    def held():
        waiting = [i for i in invokes_of(moto, "prepare") if i["status"] == 200
                   and i["request"]["item"]["date"] == "2020-10-02" and i["response"]["pendingRestores"] > 0]
        done = {i["request"]["item"]["date"] for i in invokes_of(moto, "copy") if item_done(i)}
        return waiting and done == {"2020-10-01", "2020-10-03"}
    wait_running(moto, logs, arn, held, "days 1 and 3 copied while day 2 waits for its restore")
    sfn.stop_execution(executionArn=arn)  # (the execution must end in moto; the event says how)
    d = sfn.describe_execution(executionArn=arn)
    error, cause = {"TIMED_OUT": ("States.Timeout", None),
                    "FAILED": ("States.Runtime", "An error occurred while executing the state 'X'")}[ended]
    out = deliver(moto, status_change(d, status=ended, error=error, cause=cause))
    assert out["status"] == "FAILED" and out["copyId"] == copy_id, out
    record = store_json(s3, copy_id, "record.json")
    assert record["status"] == "FAILED", record
    failures = failure_list(store_json(s3, copy_id, "failures.json"))
    entry_type = {"TIMED_OUT": "ExecutionTimedOut", "FAILED": "ExecutionFailed"}[ended]
    mine = [f for f in failures if f["errorType"] == entry_type]
    assert len(mine) == 1 and mine[0]["location"] == arn, failures
    assert error in mine[0]["errorMessage"] and (cause or "") in mine[0]["errorMessage"], mine[0]
    assert record["statistics"]["failedEntries"] == len(failures) and out["failedEntries"] == len(failures), \
        (record["statistics"], out, failures)
    assert record["statistics"]["prefixesCompleted"] == 2, record["statistics"]
    message = record.get("message") or ""
    assert entry_type in message and f"trailcopy retry {copy_id}" in message, message
    assert [(a["number"], a.get("status")) for a in record["attempts"]] == [(1, "FAILED")], record["attempts"]
    assert not claims(s3), claims(s3)
    before = record_bytes(s3, copy_id)
    assert deliver(moto, status_change(d, status=ended, error=error, cause=cause))["status"] == "UNCHANGED"
    assert record_bytes(s3, copy_id) == before

    restores_finish_at_once(moto)
    d2 = h.run_execution(moto, sm, {"copyId": copy_id, "store": STORE, "retry": True}, timeout=300)
    assert d2["status"] == "SUCCEEDED", diagnose(d2, moto, logs)
    record = store_json(s3, copy_id, "record.json")
    assert record["status"] == "COMPLETED" and failure_list(store_json(s3, copy_id, "failures.json")) == [], record
    ids = stored_event_ids(moto, s3, tmp_path / "store")
    no_duplicates(ids)
    assert set(ids) == trail.expected(), (trail.expected() - set(ids), set(ids) - trail.expected())


def test_lambdas_stop_while_enumerate_runs_leaves_the_copy_stopped(sm_env, tmp_path):
    """A Stop does not end a running Lambda invocation (on AWS as here): the Enumerate of a stopped
    execution finishes its plan after the ABORTED event was handled. The copy must still end STOPPED
    (not IN_PROGRESS with no execution running), and a retry execution completes it."""
    moto, s3, sm, logs = sm_env
    sfn = moto.client("stepfunctions")
    proxy = moto.proxy
    trail = Trail(s3)
    trail.standard_days()
    copy_id = "sm-stop-in-enumerate"
    # The PutObject of workitems.json hangs for STALL s (then the connection is reset and the SDK's
    # retry writes it): the record is INITIALIZING meanwhile.
    stall = 8.0
    old_stall, proxy.stall_seconds = proxy.stall_seconds, stall
    try:
        rule = proxy.fault_matching(f"copies/{copy_id}/workitems.json", "stall", times=1, methods={"PUT"})
        arn = start(moto, sm, {"source": SOURCE, "store": STORE, **RANGE, "copyId": copy_id})
        wait_running(moto, logs, arn, lambda: rule["faulted"], "Enumerate's PutObject of workitems.json to hang")
        t_stall = time.monotonic()
        rec = store_json(s3, copy_id, "record.json")
        assert rec["status"] == "INITIALIZING" and rec["executions"] == [arn], rec
        sfn.stop_execution(executionArn=arn)
        # On AWS the execution is ABORTED at once; moto shows it RUNNING until the task's invocation
        # returns: the event says ABORTED, as Step Functions' would.
        d = sfn.describe_execution(executionArn=arn)
        out = deliver(moto, status_change(d, status="ABORTED"))
        handled_in = time.monotonic() - t_stall
        assert handled_in < stall - 1, f"the event took {handled_in:.1f} s: the stall no longer covers it"
        assert out["status"] == "STOPPED", out
        after_event = store_json(s3, copy_id, "record.json")
        assert after_event["status"] == "STOPPED", after_event
        # The stopped execution's Enumerate finishes (its invocation goes on after the Stop).
        h.wait_for(lambda: invokes_of(moto, "enumerate"), 60, "the stopped execution's Enumerate to return")
        # On AWS the execution stays ABORTED. moto lets the in-flight task decide: Enumerate now refuses
        # to mark a STOPPED copy IN_PROGRESS (an error), so moto ends it FAILED; that FAILED end is
        # handled like any late event (the record is final: unchanged).
        ended = wait(moto, arn, timeout=60)
        assert ended["status"] in ("ABORTED", "FAILED"), ended
        if ended["status"] == "FAILED":
            assert "became STOPPED while it was planned" in json.dumps(invokes_of(moto, "enumerate")[0]["response"])
            assert deliver(moto, status_change(ended, status="FAILED"))["status"] == "UNCHANGED"
    finally:
        proxy.stall_seconds = old_stall
    enum = invokes_of(moto, "enumerate")[0]
    settled = store_json(s3, copy_id, "record.json")
    held = [c for c in claims(s3) if c["copyId"] == copy_id]
    problems = []
    if settled["status"] != "STOPPED":
        problems.append(
            f"after the ABORTED event made the copy STOPPED, the stopped execution's Enumerate (HTTP {enum['status']}, "
            f"answer {json.dumps(enum['response'])[:300]}) rewrote the record {settled['status']} "
            f"(message {settled.get('message')!r}, executions {settled.get('executions')}); no execution runs it and no "
            f"later event will finalize it")
    if held:
        problems.append(f"a claim is left for the stopped copy: {held}")

    # Whatever the record says, a retry execution must complete the copy.
    d2 = h.run_execution(moto, sm, {"copyId": copy_id, "store": STORE, "retry": True}, timeout=300)
    if d2["status"] != "SUCCEEDED":
        problems.append("the retry execution did not succeed:\n" + diagnose(d2, moto, logs))
    else:
        final = store_json(s3, copy_id, "record.json")
        if final["status"] != "COMPLETED":
            problems.append(f"after the retry the record is {final['status']}: {final}")
        ids = stored_event_ids(moto, s3, tmp_path / "store")
        if sorted(ids) != sorted(trail.expected()):
            problems.append(f"stored events differ: missing {trail.expected() - set(ids)}, "
                            f"twice {[k for k, n in Counter(ids).items() if n > 1]}, extra {set(ids) - trail.expected()}")
    assert not problems, "\n".join(problems)


# ==================================================================================================
# Points 2 and 4 for a retry execution: its Enumerate retried, or failing
# ==================================================================================================
def failed_copy(moto: h.Moto, s3, sm, logs, copy_id: str) -> tuple[Trail, str, str]:
    """A copy that ends FAILED (day 2 holds a file that is not gzip); returns the trail, the bad
    file's key and the first execution's ARN. Putting the file back (`trail.put_back`) repairs it."""
    trail = Trail(s3)
    trail.standard_days()
    bad = trail.file("2020-10-02T12:00Z", ["2020-10-02T11:40:00Z", "2020-10-02T11:41:00Z"])
    s3.put_object(Bucket=SOURCE_BUCKET, Key=bad, Body=b"\x1f\x8b\x08\x00 this is not gzip data")
    d = h.run_execution(moto, sm, {"source": SOURCE, "store": STORE, **RANGE, "copyId": copy_id}, timeout=300)
    assert d["status"] == "FAILED" and d["error"] == "CopyFailed", diagnose(d, moto, logs)
    assert store_json(s3, copy_id, "record.json")["status"] == "FAILED"
    return trail, bad, d["executionArn"]


def test_lambdas_retry_execution_whose_enumerate_is_retried_keeps_one_attempt(sm_env, tmp_path):
    """The commit's "a retried retry-Enumerate keeps its attempt": a transient S3 error in a retry
    execution's Enumerate (after it reopened the copy) is retried by the state; the record then
    lists the retry execution once and one retry attempt."""
    moto, s3, sm, logs = sm_env
    copy_id = "sm-retry-enum-retried"
    trail, bad, first = failed_copy(moto, s3, sm, logs, copy_id)
    trail.put_back(bad)
    rule = moto.proxy.fault_matching(f"copies/{copy_id}/workitems-pending.json", "internal", times=SDK_ATTEMPTS,
                                     methods={"PUT"})
    n0 = len(invokes_of(moto, "enumerate"))
    d = h.run_execution(moto, sm, {"copyId": copy_id, "store": STORE, "retry": True}, timeout=300)
    enums = invokes_of(moto, "enumerate")[n0:]
    answers = [(i["status"], i["response"].get("errorType") if isinstance(i["response"], dict) else None) for i in enums]
    assert d["status"] == "SUCCEEDED", f"enumerate answers {answers}\n" + diagnose(d, moto, logs)
    assert len(rule["faulted"]) == SDK_ATTEMPTS and answers[0] == (500, "Retryable") and answers[-1][0] == 200, answers
    record = store_json(s3, copy_id, "record.json")
    assert record["status"] == "COMPLETED", record
    assert record["executions"] == [first, d["executionArn"]], record["executions"]
    attempts = [(a["number"], a["kind"], a.get("status")) for a in record["attempts"]]
    assert attempts == [(1, "copy", "FAILED"), (2, "retry", "COMPLETED")], \
        f"the retried retry-Enumerate added an attempt: {attempts}"
    ids = stored_event_ids(moto, s3, tmp_path / "store")
    no_duplicates(ids)
    assert set(ids) == trail.expected()


def test_lambdas_retry_execution_that_fails_in_enumerate_is_finalized_by_its_event(sm_env, tmp_path):
    """A retry execution whose Enumerate fails after reopening the copy (the record is IN_PROGRESS
    again, with a new attempt and the claim held by the retry): the execution ends FAILED without
    reaching Finalize, so its FAILED event must end the copy FAILED; a later retry completes it."""
    moto, s3, sm, logs = sm_env
    copy_id = "sm-retry-enum-fails"
    trail, bad, first = failed_copy(moto, s3, sm, logs, copy_id)
    trail.put_back(bad)
    # 403 on the retry's list of pending items: errorType ItemFailed, which Enumerate's Retry does
    # not take (as any error does once the Retry's attempts are spent): the execution FAILS there.
    rule = moto.proxy.fault_matching(f"copies/{copy_id}/workitems-pending.json", "denied", times=1, methods={"PUT"})
    d = h.run_execution(moto, sm, {"copyId": copy_id, "store": STORE, "retry": True}, timeout=300)
    assert rule["faulted"] and d["status"] == "FAILED", diagnose(d, moto, logs)
    assert d["error"] == "ItemFailed" and "workitems-pending.json" in d["cause"], diagnose(d, moto, logs)
    left = store_json(s3, copy_id, "record.json")
    holders = [c["holder"] for c in claims(s3) if c["copyId"] == copy_id]
    out = deliver(moto, status_change(d))
    record = store_json(s3, copy_id, "record.json")
    problems = []
    if not (out["status"] == "FAILED" and record["status"] == "FAILED"):
        problems.append(
            f"the FAILED event of the retry execution {d['executionArn']} left the copy {record['status']} "
            f"(Finalize answered {out['status']}); before the event: status {left['status']}, executions "
            f"{left.get('executions')}, attempts {[(a['number'], a['kind'], a.get('status')) for a in left.get('attempts', [])]}, "
            f"claim holders {holders}")
    else:
        failures = failure_list(store_json(s3, copy_id, "failures.json"))
        if [f["location"] for f in failures if f["errorType"] == "ExecutionFailed"] != [d["executionArn"]]:
            problems.append(f"no ExecutionFailed entry naming the retry execution: {failures}")
    if [c for c in claims(s3) if c["copyId"] == copy_id]:
        problems.append(f"the claim is left: {claims(s3)}")

    # Whatever the event did, a later retry must complete the copy.
    d3 = h.run_execution(moto, sm, {"copyId": copy_id, "store": STORE, "retry": True}, timeout=300)
    if d3["status"] != "SUCCEEDED":
        problems.append("a later retry execution did not succeed:\n" + diagnose(d3, moto, logs))
    else:
        final = store_json(s3, copy_id, "record.json")
        ids = stored_event_ids(moto, s3, tmp_path / "store")
        if final["status"] != "COMPLETED" or sorted(ids) != sorted(trail.expected()):
            problems.append(f"after a later retry: record {final['status']}, {len(ids)} events stored "
                            f"({len(set(ids))} distinct) of {len(trail.expected())}")
    assert not problems, "\n".join(problems)
