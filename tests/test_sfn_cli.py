"""The CLI against the deployed state machine (issue 3 item 5): `trailcopy start/status/list/retry/stop
--state-machine ARN` with the real ASL executed by moto and the real Lambda binaries under
`cargo lambda watch` (tests/sm_harness.py; the fixtures are test_statemachine.py's).

The CLI talks to moto through AWS_ENDPOINT_URL (S3 for the copy record, Step Functions for the
executions, KMS for the source keys seen by the Lambdas).
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sm_harness as h  # noqa: E402
from test_statemachine import (  # noqa: E402,F401  (lambda_env and real are fixtures)
    RANGE, SOURCE, STORE, Trail, diagnose, lambda_env, needs_lambdas, real, store_json, stored_event_ids)

pytestmark = needs_lambdas


def cli_env(moto: h.Moto) -> dict:
    return {"AWS_ENDPOINT_URL": moto.url, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": h.REGION, "AWS_DEFAULT_REGION": h.REGION}


def start(trailcopy, moto, sm, *extra):
    r = trailcopy("start", "--state-machine", sm, "--source", SOURCE, "--store", STORE,
                  "--start", RANGE["start"], "--end", RANGE["end"], "--json", *extra, env=cli_env(moto))
    assert r.returncode == 0, r.describe()
    out = r.json
    assert set(out) == {"copyId", "executionArn"}, out
    return out["copyId"], out["executionArn"]


def status(trailcopy, moto, sm, copy_id):
    r = trailcopy("status", copy_id, "--store", STORE, "--state-machine", sm, "--json", env=cli_env(moto))
    assert r.returncode in (0, 1), r.describe()
    return r


def wait_status(trailcopy, moto, sm, copy_id, done, timeout=300, what="status"):
    """Polls `trailcopy status --state-machine` until done(json) holds; returns the last Run."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        r = trailcopy("status", copy_id, "--store", STORE, "--state-machine", sm, "--json", env=cli_env(moto))
        if r.returncode in (0, 1) and r.stdout.strip():
            last = r
            if done(r.json):
                return r
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}; last:\n{last.describe() if last else None}")


def finished(j) -> bool:
    e = j.get("execution") or {}
    return j["status"] in ("COMPLETED", "FAILED", "STOPPED") and e.get("status") not in (None, "RUNNING")


def restores_finish_at_once(moto: h.Moto) -> None:
    """The state manager's transition survives /moto-api/reset: set it in every test."""
    moto.api("state-manager/set-transition", {"model_name": "s3::keyrestore",
                                              "transition": {"progression": "immediate"}})


def list_rows(trailcopy, moto, sm):
    r = trailcopy("list", "--state-machine", sm, "--json", env=cli_env(moto))
    assert r.returncode == 0, r.describe()
    return r.json


def test_cli_start_status_list_a_copy_on_the_state_machine(real, trailcopy, tmp_path):
    moto, s3, sm, logs = real
    restores_finish_at_once(moto)
    trail = Trail(s3)
    trail.standard_days()
    copy_id, arn = start(trailcopy, moto, sm)  # the CLI's defaults (restore poll 900 s, max wait 48 h)
    assert arn == sm.replace(":stateMachine:", ":execution:") + ":" + copy_id, (sm, arn)

    r = wait_status(trailcopy, moto, sm, copy_id, finished, what=f"copy {copy_id} to finish")
    j = r.json
    d = moto.client("stepfunctions").describe_execution(executionArn=arn)
    assert j["status"] == "COMPLETED", diagnose(d, moto, logs) + "\n" + r.describe()
    assert r.returncode == 0, r.describe()
    assert j["copyId"] == copy_id
    e = j["execution"]
    assert e["status"] == "SUCCEEDED" and e["executionArn"] == arn, e
    # moto 5.2.5 answers ListMapRuns/DescribeMapRun: the Map Run's item counts are shown.
    assert "mapRuns" in e, f"ListMapRuns failed (the CLI tolerates it, but moto supports it): {e}"
    assert [(m["status"], m["total"], m["succeeded"], m["failed"]) for m in e["mapRuns"]] == \
        [("SUCCEEDED", 3, 3, 0)], e["mapRuns"]
    assert j["statistics"]["eventsCompleted"] == len(trail.expected)
    assert j["statistics"]["prefixesCompleted"] == j["statistics"]["prefixesFound"] == 3
    assert j["statistics"]["failedEntries"] == 0
    ids = stored_event_ids(moto, s3, tmp_path / "store")
    assert sorted(ids) == sorted(trail.expected)

    rows = list_rows(trailcopy, moto, sm)
    mine = [x for x in rows if x["name"] == copy_id]
    assert len(mine) == 1, rows
    assert mine[0]["status"] == "SUCCEEDED" and mine[0]["executionArn"] == arn, mine

    # Plain-text status names the execution too.
    txt = trailcopy("status", copy_id, "--store", STORE, "--state-machine", sm, env=cli_env(moto))
    assert txt.returncode == 0 and f"execution SUCCEEDED {arn}" in txt.stdout, txt.describe()


def test_cli_retry_on_the_state_machine_resumes_a_failed_copy(real, trailcopy, tmp_path):
    moto, s3, sm, logs = real
    restores_finish_at_once(moto)
    kms = moto.client("kms")
    key = kms.create_key(Description="trail key")["KeyMetadata"]
    trail = Trail(s3)
    trail.standard_days()
    trail.file("2020-10-02T18:00Z", ["2020-10-02T17:50:00Z", "2020-10-02T17:55:00Z"])
    # Day 2's files are encrypted under a key that is then disabled: its item fails with one entry.
    day2 = [k for k in trail.keys if "/2020/10/02/" in k]
    assert len(day2) == 2
    for k in day2:
        b = s3.get_object(Bucket="trail-src", Key=k)["Body"].read()
        s3.put_object(Bucket="trail-src", Key=k, Body=b, ServerSideEncryption="aws:kms", SSEKMSKeyId=key["Arn"])
    kms.disable_key(KeyId=key["KeyId"])  # (moto takes the key id here, not the ARN)

    copy_id, arn = start(trailcopy, moto, sm)
    r = wait_status(trailcopy, moto, sm, copy_id, finished, what="the first execution to finish")
    j = r.json
    assert j["status"] == "FAILED", r.describe()
    assert r.returncode == 1, r.describe()
    assert j["execution"]["status"] == "FAILED" and j["execution"]["executionArn"] == arn, j["execution"]
    assert j["statistics"]["prefixesCompleted"] == 2 and j["statistics"]["failedEntries"] == 1, j["statistics"]
    f = trailcopy("failures", copy_id, "--store", STORE, "--json", env=cli_env(moto))
    assert f.returncode == 0, f.describe()
    assert [x["errorType"] for x in f.json["failures"]] == ["KmsKeyDisabled"], f.json
    assert key["Arn"] in f.json["failures"][0]["errorMessage"], f.json
    before = set(stored_event_ids(moto, s3, tmp_path / "before"))
    assert before and before < trail.expected

    # Fix the cause, retry: a new execution <copyId>-retry-<n> that resumes the copy.
    kms.enable_key(KeyId=key["KeyId"])
    rr = trailcopy("retry", copy_id, "--store", STORE, "--state-machine", sm, "--json", env=cli_env(moto))
    assert rr.returncode == 0, rr.describe()
    retry_arn = rr.json["executionArn"]
    assert rr.json["copyId"] == copy_id
    assert re.fullmatch(re.escape(sm.replace(":stateMachine:", ":execution:")) + ":" + re.escape(copy_id)
                        + r"-retry-\d+", retry_arn), retry_arn
    r2 = wait_status(trailcopy, moto, sm, copy_id,
                     lambda j: finished(j) and j["execution"]["executionArn"] == retry_arn,
                     what="the retry execution to finish")
    j2 = r2.json
    d = moto.client("stepfunctions").describe_execution(executionArn=retry_arn)
    assert j2["status"] == "COMPLETED", diagnose(d, moto, logs) + "\n" + r2.describe()
    assert r2.returncode == 0
    assert j2["execution"]["status"] == "SUCCEEDED", j2["execution"]
    s = j2["statistics"]
    assert s["eventsCompleted"] == len(trail.expected), s
    assert s["prefixesCompleted"] == 3 and s["failedEntries"] == 0, s
    ids = stored_event_ids(moto, s3, tmp_path / "after")
    assert len(ids) == len(set(ids)), "the retry stored events twice"
    assert set(ids) == trail.expected
    # The retry's Enumerate got {"copyId","store","retry":true} (it resumes, does not plan anew).
    enum_reqs = [i["request"]["input"] for i in moto.invokes() if i["function"] == "enumerate"]
    assert {"copyId": copy_id, "store": STORE, "retry": True} in enum_reqs, enum_reqs
    # Completed items were not prepared again: only day 2's item ran in the retry.
    rows = {x["name"]: x["status"] for x in list_rows(trailcopy, moto, sm)}
    assert rows.get(copy_id) == "FAILED" and rows.get(retry_arn.rsplit(":", 1)[1]) == "SUCCEEDED", rows


def test_cli_stop_marks_the_record_stopped_and_retry_finishes_it(real, trailcopy, tmp_path):
    moto, s3, sm, logs = real
    trail = Trail(s3)
    trail.standard_days()
    moto.hold_restores(3600)
    trail.file("2020-10-02T16:00Z", ["2020-10-02T15:50:00Z"], storage_class="GLACIER")
    copy_id, arn = start(trailcopy, moto, sm, "--restore-poll-seconds", "1", "--restore-max-wait-seconds", "300")

    # Hold: the day-2 item waits for its restore while the other two complete.
    wait_status(trailcopy, moto, sm, copy_id,
                lambda j: j["status"] == "IN_PROGRESS" and j["execution"]["status"] == "RUNNING"
                and j["statistics"].get("restoresPending", 0) == 1 and j["statistics"]["prefixesCompleted"] == 2,
                timeout=120, what="a running execution with a pending restore")
    st = trailcopy("stop", copy_id, "--store", STORE, "--state-machine", sm, "--json", env=cli_env(moto))
    assert st.returncode == 1, st.describe()  # STOPPED exits 1 (contracts.md)
    assert st.json["status"] == "STOPPED", st.describe()
    sfn = moto.client("stepfunctions")
    d = sfn.describe_execution(executionArn=arn)
    assert d["status"] == "ABORTED", d
    # Nothing running any more overwrites the record (wait several poll intervals).
    time.sleep(5)
    r = status(trailcopy, moto, sm, copy_id)
    assert r.json["status"] == "STOPPED", r.describe()
    assert r.json["execution"]["status"] == "ABORTED", r.json["execution"]
    assert r.returncode == 1
    assert "stop" in (r.json.get("message") or ""), r.json
    rows = {x["name"]: x["status"] for x in list_rows(trailcopy, moto, sm)}
    assert rows.get(copy_id) == "ABORTED", rows

    # A stopped copy resumes with retry once the restore is done.
    restores_finish_at_once(moto)
    rr = trailcopy("retry", copy_id, "--store", STORE, "--state-machine", sm, "--json", env=cli_env(moto))
    assert rr.returncode == 0, rr.describe()
    retry_arn = rr.json["executionArn"]
    r2 = wait_status(trailcopy, moto, sm, copy_id,
                     lambda j: finished(j) and j["execution"]["executionArn"] == retry_arn,
                     what="the retry execution to finish")
    d2 = sfn.describe_execution(executionArn=retry_arn)
    assert r2.json["status"] == "COMPLETED", diagnose(d2, moto, logs) + "\n" + r2.describe()
    ids = stored_event_ids(moto, s3, tmp_path / "store")
    assert len(ids) == len(set(ids)) and set(ids) == trail.expected


def test_cli_retry_on_the_state_machine_after_a_restore_timeout(real, trailcopy, tmp_path):
    moto, s3, sm, logs = real
    trail = Trail(s3)
    trail.standard_days()
    moto.hold_restores(3600)
    archived = trail.file("2020-10-02T16:00Z", ["2020-10-02T15:50:00Z"], storage_class="DEEP_ARCHIVE")
    copy_id, arn = start(trailcopy, moto, sm, "--restore-poll-seconds", "1", "--restore-max-wait-seconds", "2")
    r = wait_status(trailcopy, moto, sm, copy_id, finished, timeout=120, what="the first execution to finish")
    assert r.json["status"] == "FAILED" and r.json["execution"]["status"] == "FAILED", r.describe()
    f = trailcopy("failures", copy_id, "--store", STORE, "--json", env=cli_env(moto))
    assert f.returncode == 0, f.describe()
    day2 = "s3://trail-src/" + archived.rsplit("/", 1)[0] + "/"
    assert [(x["location"], x["errorType"]) for x in f.json["failures"]] == [(day2, "RestoreTimeout")], f.json
    assert r.json["statistics"]["restoresPending"] == 1, r.json["statistics"]

    restores_finish_at_once(moto)
    rr = trailcopy("retry", copy_id, "--store", STORE, "--state-machine", sm, "--json", env=cli_env(moto))
    assert rr.returncode == 0, rr.describe()
    retry_arn = rr.json["executionArn"]
    r2 = wait_status(trailcopy, moto, sm, copy_id,
                     lambda j: finished(j) and j["execution"]["executionArn"] == retry_arn,
                     what="the retry execution to finish")
    d = moto.client("stepfunctions").describe_execution(executionArn=retry_arn)
    assert r2.json["status"] == "COMPLETED", diagnose(d, moto, logs) + "\n" + r2.describe()
    s = r2.json["statistics"]
    assert s["restoresPending"] == 0 and s["failedEntries"] == 0, s
    assert s["eventsCompleted"] == len(trail.expected), s
    ids = stored_event_ids(moto, s3, tmp_path / "store")
    assert len(ids) == len(set(ids)) and set(ids) == trail.expected


def test_cli_start_refuses_now_what_the_execution_would_refuse(real, trailcopy):
    """`start` checks the request before starting ("a bad flag fails now, not in the execution"): a
    request it accepts must not fail the execution with InvalidRequest. --restore-poll-seconds 60 with
    the default restore wait of the Bulk tier (Deep Archive's 48 h plus a quarter: 60 h) is 3,600 polls, over Enumerate's limit of 2,000."""
    moto, s3, sm, logs = real
    restores_finish_at_once(moto)
    Trail(s3).standard_days()
    r = trailcopy("start", "--state-machine", sm, "--source", SOURCE, "--store", STORE, "--start", RANGE["start"],
                  "--end", RANGE["end"], "--restore-poll-seconds", "60", "--json", env=cli_env(moto))
    if r.returncode == 2:
        assert "--restore-poll-seconds" in r.stderr or "--restore-max-wait-seconds" in r.stderr, r.describe()
        assert not moto.client("stepfunctions").list_executions(stateMachineArn=sm)["executions"]
        return
    assert r.returncode == 0, r.describe()
    copy_id, arn = r.json["copyId"], r.json["executionArn"]
    sfn = moto.client("stepfunctions")
    d = h.wait_for(lambda: (x := sfn.describe_execution(executionArn=arn))["status"] != "RUNNING" and x,
                   300, f"execution {arn}", interval=0.5)
    assert d["status"] == "SUCCEEDED", (
        f"`trailcopy start` accepted the request (exit 0) but the execution failed: "
        f"{d.get('error')}: {d.get('cause')}")


@pytest.mark.parametrize("flag,value", [("--store", "/tmp/trailcopy-local-store"), ("--source", "/tmp/trailcopy-local-trail")])
def test_cli_start_refuses_local_folders(real, trailcopy, flag, value):
    """The Lambdas cannot read or write this machine's folders: `start` refuses them at once (exit 2,
    naming the flag) and starts no execution."""
    moto, s3, sm, logs = real
    args = {"--source": SOURCE, "--store": STORE, flag: value}
    r = trailcopy("start", "--state-machine", sm, "--source", args["--source"], "--store", args["--store"],
                  "--start", RANGE["start"], "--end", RANGE["end"], "--json", env=cli_env(moto))
    sfn = moto.client("stepfunctions")
    execs = sfn.list_executions(stateMachineArn=sm)["executions"]
    outcome = ""
    if r.returncode == 0:  # say what the started execution then did
        arn = r.json["executionArn"]
        d = h.wait_for(lambda: (x := sfn.describe_execution(executionArn=arn))["status"] != "RUNNING" and x,
                       120, f"execution {arn}", interval=0.5)
        outcome = f"\nthe execution started anyway and ended {d['status']}: {d.get('error')}: {d.get('cause')}" \
                  f" output={d.get('output')}"
    assert r.returncode == 2 and flag in r.stderr, r.describe() + outcome
    assert execs == []


def test_cli_stop_without_a_running_execution_changes_nothing(real, trailcopy):
    moto, s3, sm, logs = real
    restores_finish_at_once(moto)
    Trail(s3).standard_days()
    copy_id, arn = start(trailcopy, moto, sm)
    wait_status(trailcopy, moto, sm, copy_id, finished, what=f"copy {copy_id} to finish")
    st = trailcopy("stop", copy_id, "--store", STORE, "--state-machine", sm, env=cli_env(moto))
    assert st.returncode == 1 and "no running execution" in st.stderr, st.describe()
    r = status(trailcopy, moto, sm, copy_id)
    assert r.json["status"] == "COMPLETED" and r.json["execution"]["status"] == "SUCCEEDED", r.describe()
