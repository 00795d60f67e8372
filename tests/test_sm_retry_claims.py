"""Issue 30 on the state machine: the real ASL runs in moto and the real Lambda binaries run under
`cargo lambda watch` (tests/sm_harness.py; the session's `lambda_env` / `real` fixtures of
test_statemachine.py, shared with test_sm_aws_rules.py).

- A retry execution (`{"copyId", "store", "retry": true}`) re-reads every file that got a failure
  entry: a truncated .json.gz the user has since repaired is read afresh, the copy ends COMPLETED,
  the store holds each event once (the events salvaged from before the damage are not stored
  again), and record.json's `attempts` tells what the retry did.
- Copies into one store cannot collide: a copy claims (source, window) in `STORE/claims.json` by
  S3 conditional writes, its holder being `{"execution": <execution ARN>}`. Of two executions of
  overlapping ranges started at the same instant exactly one copies; the other fails at Enumerate
  with InvalidRequest naming the running copy, and writes no record. Finalize releases the claim.
- Windows are clamped to what can have been delivered: a scheduled run planned long after its
  window records `completeThrough == end`; the schedule's settle (template.yaml, 3,600 s) equals the
  default delivery allowance (1 h); `sinceLast` continues from there and records
  `completeThrough = planning time - deliveryAllowance`.
"""
from __future__ import annotations

import datetime as dt
import gzip
import json
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sm_harness as h  # noqa: E402
from test_statemachine import (  # noqa: E402,F401  (lambda_env and real are fixtures)
    SOURCE, SOURCE_BUCKET, STORE, STORE_BUCKET, STORE_PREFIX, diagnose, invokes_of, lambda_env, needs_lambdas,
    prepare_s3, real, store_json, stored_event_ids)

pytestmark = needs_lambdas

UTC = dt.timezone.utc
ACCOUNT = "111122223333"
REGION = "us-east-1"
RANGE = {"start": "2020-10-01T00:00:00Z", "end": "2020-10-03T00:00:00Z"}


def t(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(UTC)


class Source:
    """Trail files in moto S3, and every event they hold (so any window's expected events are known)."""

    def __init__(self, s3):
        self.s3 = s3
        self.n = 0
        self.events: dict[str, dt.datetime] = {}  # eventID -> eventTime

    def events_for(self, name_time: str, event_times: list[str]) -> tuple[str, list[dict]]:
        key = h.trail_key(ACCOUNT, REGION, t(name_time), uuid.uuid4().hex[:16].upper())
        events = []
        for et in event_times:
            self.n += 1
            events.append(h.make_event(t(et), ACCOUNT, REGION, self.n))
        return key, events

    def file(self, name_time: str, event_times: list[str]) -> str:
        key, events = self.events_for(name_time, event_times)
        self.put(key, events)
        return key

    def put(self, key: str, events: list[dict], body: bytes | None = None) -> None:
        h.put_trail_file(self.s3, SOURCE_BUCKET, key, events, body=body)
        if body is None:
            self.events.update({e["eventID"]: t(e["eventTime"]) for e in events})

    def expected(self, start: str | dt.datetime, end: str | dt.datetime) -> set[str]:
        s = t(start) if isinstance(start, str) else start
        e = t(end) if isinstance(end, str) else end
        return {i for i, ts in self.events.items() if s <= ts < e}

    def standard_days(self) -> None:
        # As test_statemachine.Trail: day 1 holds the previous day's last events, day 3 the last
        # minutes of day 2.
        self.file("2020-10-01T00:05Z", ["2020-09-30T23:55:00Z", "2020-10-01T00:01:00Z"])
        self.file("2020-10-01T12:00Z", ["2020-10-01T11:50:00Z", "2020-10-01T11:55:00Z", "2020-10-01T11:59:00Z"])
        self.file("2020-10-02T08:00Z", ["2020-10-02T07:48:00Z", "2020-10-02T07:59:59Z"])
        self.file("2020-10-03T00:05Z", ["2020-10-02T23:58:00Z", "2020-10-03T00:02:00Z"])


def failure_list(doc) -> list[dict]:
    return doc["failures"] if isinstance(doc, dict) else doc


def claims(s3) -> list[dict]:
    try:
        body = s3.get_object(Bucket=STORE_BUCKET, Key=f"{STORE_PREFIX}claims.json")["Body"].read()
    except s3.exceptions.NoSuchKey:
        return []
    return json.loads(body)["claims"]


def start(moto: h.Moto, sm: str, request: dict) -> str:
    sfn = moto.client("stepfunctions")
    return sfn.start_execution(stateMachineArn=sm, name=uuid.uuid4().hex, input=json.dumps(request))["executionArn"]


def wait(moto: h.Moto, arn: str, timeout: float = 900) -> dict:
    sfn = moto.client("stepfunctions")
    return h.wait_for(lambda: (d := sfn.describe_execution(executionArn=arn))["status"] != "RUNNING" and d,
                      timeout, f"execution {arn}", interval=0.5)


def copy_keys(s3, copy_id: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=STORE_BUCKET, Prefix=f"{STORE_PREFIX}copies/{copy_id}/")
            .get("Contents", [])]


def no_duplicates(ids: list[str]) -> None:
    dupes = {k: n for k, n in Counter(ids).items() if n > 1}
    assert not dupes, f"events stored more than once: {dupes}"


# ==================================================================================================
# 1. A retry execution re-reads the repaired file
# ==================================================================================================
def test_lambdas_retry_execution_rereads_a_repaired_file_and_stores_each_event_once(real, tmp_path):
    moto, s3, sm, logs = real
    src = Source(s3)
    src.standard_days()
    # A file of many distinct events, uploaded truncated: the copy salvages the events before the
    # damage (CorruptGzip); the user then uploads the whole file and retries.
    times = [(t("2020-10-02T10:00:00Z") + dt.timedelta(seconds=10 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
             for i in range(150)]
    bad_key, bad_events = src.events_for("2020-10-02T10:30Z", times)
    good_body = gzip.compress(json.dumps({"Records": bad_events}).encode())
    src.put(bad_key, bad_events, body=good_body[: len(good_body) * 11 // 20])
    bad_ids = {e["eventID"] for e in bad_events}
    others = src.expected(**RANGE)  # the good files' events in range (the truncated file's are not yet known)

    copy_id = "sm-retry-fix"
    request = {"source": SOURCE, "store": STORE, **RANGE, "copyId": copy_id}
    first = h.run_execution(moto, sm, request, timeout=900)
    assert first["status"] == "FAILED", diagnose(first, moto, logs)
    assert first["error"] == "CopyFailed", diagnose(first, moto, logs)
    record = store_json(s3, copy_id, "record.json")
    assert record["status"] == "FAILED", record
    failures = failure_list(store_json(s3, copy_id, "failures.json"))
    corrupt = [f for f in failures if f["errorType"] == "CorruptGzip"]
    assert len(corrupt) == 1 and bad_key in corrupt[0]["location"], failures
    assert len(failures) == 1, failures
    assert [(a["number"], a["kind"], a.get("status")) for a in record["attempts"]] == [(1, "copy", "FAILED")], record
    assert not [c for c in claims(s3) if c["copyId"] == copy_id], f"Finalize kept the claim: {claims(s3)}"

    ids = stored_event_ids(moto, s3, tmp_path / "first")
    no_duplicates(ids)
    salvaged = set(ids) & bad_ids
    assert set(ids) - bad_ids == others, "the good files were not all copied by the first execution"
    # Else the "exactly once" check below proves nothing about salvaged events.
    assert 0 < len(salvaged) < len(bad_ids), f"salvaged {len(salvaged)} of {len(bad_ids)} events of the truncated file"

    # The user repairs the file; a retry execution re-reads it.
    src.put(bad_key, bad_events)
    expected = src.expected(**RANGE)
    assert expected == others | bad_ids
    retry = h.run_execution(moto, sm, {"copyId": copy_id, "store": STORE, "retry": True}, timeout=900)
    assert retry["status"] == "SUCCEEDED", diagnose(retry, moto, logs)
    out = json.loads(retry["output"])
    assert out["status"] == "COMPLETED" and out["failedEntries"] == 0, out

    record = store_json(s3, copy_id, "record.json")
    assert record["status"] == "COMPLETED", record
    assert record["executions"] == [first["executionArn"], retry["executionArn"]], record["executions"]
    assert failure_list(store_json(s3, copy_id, "failures.json")) == []
    stats = record["statistics"]
    assert stats["failedEntries"] == 0, stats
    # Statistics as a clean copy gives: the re-read file's counts replace its damaged ones.
    assert stats["eventsCompleted"] == len(expected), (stats, len(expected))
    attempts = record["attempts"]
    assert [(a["number"], a["kind"]) for a in attempts] == [(1, "copy"), (2, "retry")], attempts
    assert attempts[0]["filesReread"] == 0 and attempts[0]["status"] == "FAILED" and attempts[0]["failedEntries"] == 1
    a2 = attempts[1]
    assert (a2["filesReread"], a2["filesFixed"], a2["status"], a2["failedEntries"]) == (1, 1, "COMPLETED", 0), a2
    assert a2["eventsCopied"] == len(bad_ids) - len(salvaged), (a2, len(bad_ids), len(salvaged))
    assert t(a2["startedTime"]) >= t(attempts[0]["finishedTime"]) and "finishedTime" in a2, attempts
    assert not [c for c in claims(s3) if c["copyId"] == copy_id], f"Finalize kept the claim: {claims(s3)}"

    # DuckDB over the store's Parquet: every event of the repaired trail in range, once.
    ids = stored_event_ids(moto, s3, tmp_path / "after-retry")
    no_duplicates(ids)
    assert len(ids) == len(expected), (len(ids), len(expected))
    assert set(ids) == expected, (expected - set(ids), set(ids) - expected)


# ==================================================================================================
# 2. Two overlapping executions started at once: one copies, the other is refused
# ==================================================================================================
ROUNDS = 8


def test_lambdas_overlapping_executions_started_at_once_exactly_one_copies(real, tmp_path):
    moto, s3, sm, logs = real
    t0 = time.monotonic()
    ranges = {"a": RANGE, "b": {"start": "2020-10-02T00:00:00Z", "end": "2020-10-04T00:00:00Z"}}
    for rnd in range(ROUNDS):
        if rnd:
            moto.reset()
            s3 = prepare_s3(moto)
            sm = h.deploy(moto, STORE_BUCKET, STORE_PREFIX, max_concurrency=2)
        src = Source(s3)
        src.standard_days()
        src.file("2020-10-03T12:00Z", ["2020-10-03T11:50:00Z", "2020-10-03T11:55:00Z"])
        ids = {k: f"race{rnd}-{k}" for k in ranges}
        # Back to back: both Enumerates plan at the same instant.
        arns = {k: start(moto, sm, {"source": SOURCE, "store": STORE, **ranges[k], "copyId": ids[k]}) for k in ranges}
        done = {k: wait(moto, arns[k]) for k in ranges}
        statuses = {k: d["status"] for k, d in done.items()}
        won = [k for k, s in statuses.items() if s == "SUCCEEDED"]
        assert len(won) == 1, f"round {rnd}: {statuses}\n" + "\n".join(diagnose(d, moto, logs) for d in done.values())
        winner, loser = won[0], ({"a", "b"} - set(won)).pop()
        d = done[loser]
        assert d["status"] == "FAILED" and d["error"] == "InvalidRequest", (rnd, diagnose(d, moto, logs))
        assert f"overlaps copy `{ids[winner]}`" in d["cause"] and "which is running" in d["cause"], (rnd, d["cause"])
        assert arns[winner] in d["cause"], (rnd, d["cause"])  # the running holder is named
        # Refused at Enumerate: nothing of it ran, no record, no claim left behind.
        ran = [i for i in moto.invokes() if i["function"] != "enumerate"
               and ids[loser] in json.dumps(i["request"])]
        assert not ran, (rnd, ran[:3])
        assert copy_keys(s3, ids[loser]) == [], (rnd, copy_keys(s3, ids[loser]))
        assert claims(s3) == [], (rnd, claims(s3))
        record = store_json(s3, ids[winner], "record.json")
        assert record["status"] == "COMPLETED", (rnd, record)
        stored = stored_event_ids(moto, s3, tmp_path / f"round{rnd}")
        no_duplicates(stored)
        assert set(stored) == src.expected(**ranges[winner]), (rnd, winner)
    # How the losers were refused (the functions reach moto through the session's recording proxy):
    # conditional writes of claims.json that lost (412), and Step Functions asked about the holder.
    with moto.proxy.lock:
        records = list(moto.proxy.records)
    lost = sum(1 for r in records if r["method"] == "PUT" and "claims.json" in r["path"] and r["status"] == 412)
    probes = Counter(r["status"] for r in records
                     if r.get("headers", {}).get("x-amz-target", "").endswith(".DescribeExecution"))
    print(f"{ROUNDS} rounds in {time.monotonic() - t0:.1f} s; claims.json writes refused (412): {lost}; "
          f"DescribeExecution answers by status: {dict(probes)}")


# ==================================================================================================
# 3. Scheduled windows are complete through their end; sinceLast continues from there
# ==================================================================================================
def test_lambdas_scheduled_window_long_past_is_complete_through_its_end_and_since_last_continues(real, tmp_path):
    moto, s3, sm, logs = real
    src = Source(s3)
    src.standard_days()
    src.file("2020-10-05T12:00Z", ["2020-10-05T11:50:00Z"])
    scheduled = {"request": {"scheduledTime": "2020-10-03T00:00:00Z", "window": "P2D"}, "settleSeconds": 0}
    d = h.run_execution(moto, sm, scheduled, timeout=900)
    assert d["status"] == "SUCCEEDED", diagnose(d, moto, logs)
    copy_id = json.loads(d["output"])["copyId"]
    assert copy_id == "scheduled-20201003T000000Z"
    req = store_json(s3, copy_id, "record.json")["request"]
    assert t(req["start"]) == t("2020-10-01T00:00:00Z") and t(req["end"]) == t("2020-10-03T00:00:00Z"), req
    assert "completeThrough" in req, req
    assert t(req["completeThrough"]) == t(req["end"]), req
    assert req["deliveryAllowanceSeconds"] == 3600, req  # the default: 1 h

    # The schedule waits exactly the default delivery allowance before planning, so its windows are
    # complete through their end: template.yaml's schedule input and the ASL's Wait on it.
    _, sm_res = h.state_machine_resource(h.load_template())
    text = sm_res["Properties"]["Events"]["ScheduledSnapshot"]["Properties"]["Input"]["Fn::Sub"]
    doc = json.loads(text.replace("${ScheduleWindow}", "P1D"))
    assert doc["settleSeconds"] == 3600 == req["deliveryAllowanceSeconds"], doc
    asl = json.loads(h.ASL_PATH.read_text())
    choice = asl["States"][asl["StartAt"]]
    settle = asl["States"][choice["Choices"][0]["Next"]]
    assert settle["Type"] == "Wait" and settle["SecondsPath"] == "$.settleSeconds", settle

    # sinceLast: from the scheduled copy's completeThrough to the planning time; complete through
    # planning time - deliveryAllowance.
    before = dt.datetime.now(UTC).replace(microsecond=0)
    d = h.run_execution(moto, sm, {"source": SOURCE, "store": STORE, "sinceLast": True, "deliveryAllowance": "2h",
                                   "copyId": "since-last-1"}, timeout=900)
    after = dt.datetime.now(UTC)
    assert d["status"] == "SUCCEEDED", diagnose(d, moto, logs)
    record = store_json(s3, "since-last-1", "record.json")
    req2 = record["request"]
    assert record["status"] == "COMPLETED", record
    assert t(req2["start"]) == t(req["completeThrough"]), req2
    assert before <= t(req2["end"]) <= after, (req2, before, after)
    assert req2["deliveryAllowanceSeconds"] == 7200, req2
    assert t(req2["completeThrough"]) == t(req2["end"]) - dt.timedelta(hours=2), req2
    assert req2.get("continues") == copy_id, req2
    # The two copies together: every event from the scheduled window's start on, once.
    ids = stored_event_ids(moto, s3, tmp_path / "store")
    no_duplicates(ids)
    assert set(ids) == src.expected("2020-10-01T00:00:00Z", after), set(ids) ^ src.expected("2020-10-01T00:00:00Z", after)
    assert claims(s3) == [], claims(s3)


# ==================================================================================================
# 4. A claim whose execution is no longer RUNNING: refused with a resume hint, taken over by retry
# ==================================================================================================
def test_lambdas_retry_execution_takes_over_the_claim_of_an_execution_no_longer_running(real, tmp_path):
    moto, s3, sm, logs = real
    src = Source(s3)
    src.standard_days()
    key, events = src.events_for("2020-10-02T12:00Z", ["2020-10-02T11:50:00Z", "2020-10-02T11:55:00Z"])
    src.put(key, events, body=b"\x1f\x8b\x08\x00 this is not gzip data")
    copy_id = "sm-takeover"
    first = h.run_execution(moto, sm, {"source": SOURCE, "store": STORE, **RANGE, "copyId": copy_id}, timeout=900)
    assert first["status"] == "FAILED" and first["error"] == "CopyFailed", diagnose(first, moto, logs)
    assert claims(s3) == [], claims(s3)
    # As if its Finalize had died before releasing: the claim stays, held by an execution that has
    # ended (FAILED in Step Functions).
    req = store_json(s3, copy_id, "record.json")["request"]
    stale = {"copyId": copy_id, "source": req["source"], "start": req["start"], "end": req["end"],
             "holder": {"execution": first["executionArn"]}, "since": req["start"]}
    s3.put_object(Bucket=STORE_BUCKET, Key=f"{STORE_PREFIX}claims.json", Body=json.dumps({"claims": [stale]}).encode())

    other = h.run_execution(moto, sm, {"source": SOURCE, "store": STORE, "start": "2020-10-02T00:00:00Z",
                                       "end": "2020-10-04T00:00:00Z", "copyId": "sm-takeover-other"}, timeout=300)
    assert other["status"] == "FAILED" and other["error"] == "InvalidRequest", diagnose(other, moto, logs)
    cause = other["cause"]
    assert f"overlaps copy `{copy_id}`" in cause and "not running" in cause, cause
    assert first["executionArn"] in cause and f"trailcopy retry {copy_id}" in cause, cause
    assert copy_keys(s3, "sm-takeover-other") == []

    src.put(key, events)  # repaired
    # While the claim's execution runs, a retry is refused: the copy is running. (A scheduled run
    # waiting out its settle is an execution that stays RUNNING.)
    sfn = moto.client("stepfunctions")
    waiting = start(moto, sm, {"request": {"scheduledTime": "2020-10-10T00:00:00Z", "window": "PT1H"},
                               "settleSeconds": 3600})
    try:
        assert sfn.describe_execution(executionArn=waiting)["status"] == "RUNNING"
        running = {**stale, "holder": {"execution": waiting}}
        s3.put_object(Bucket=STORE_BUCKET, Key=f"{STORE_PREFIX}claims.json",
                      Body=json.dumps({"claims": [running]}).encode())
        refused = h.run_execution(moto, sm, {"copyId": copy_id, "store": STORE, "retry": True}, timeout=300)
        assert refused["status"] == "FAILED" and refused["error"] == "InvalidRequest", diagnose(refused, moto, logs)
        assert f"copy `{copy_id}` is running" in refused["cause"] and waiting in refused["cause"], refused["cause"]
        assert store_json(s3, copy_id, "record.json")["status"] == "FAILED"
        assert claims(s3) == [running], claims(s3)
    finally:
        sfn.stop_execution(executionArn=waiting)
    assert sfn.describe_execution(executionArn=waiting)["status"] == "ABORTED"
    # Its execution has ended now: the retry takes the claim over.
    retry = h.run_execution(moto, sm, {"copyId": copy_id, "store": STORE, "retry": True}, timeout=900)
    assert retry["status"] == "SUCCEEDED", diagnose(retry, moto, logs)
    enum = [i for i in invokes_of(moto, "enumerate") if i["request"]["executionArn"] == retry["executionArn"]]
    assert [i["status"] for i in enum] == [200], enum
    record = store_json(s3, copy_id, "record.json")
    assert record["status"] == "COMPLETED", record
    assert record["attempts"][-1]["kind"] == "retry" and record["attempts"][-1]["filesFixed"] == 1, record["attempts"]
    assert claims(s3) == [], f"the retry's Finalize kept a claim: {claims(s3)}"
    # The stopped execution stopped in its Wait (moto interrupts it): it planned nothing.
    assert not [i for i in invokes_of(moto, "enumerate") if i["request"]["executionArn"] == waiting]
    ids = stored_event_ids(moto, s3, tmp_path / "store")
    no_duplicates(ids)
    assert set(ids) == src.expected(**RANGE)
