"""AWS's rules that moto does not enforce, checked on the real state machine (moto executes the ASL)
with the real Lambda binaries (cargo lambda watch), in the same session as test_statemachine.py:

- IAM: every S3 and KMS request the Lambdas make during a copy is recorded (tests/fault_proxy.py in
  record mode sits between the functions and moto), mapped to its IAM action, resource and condition
  keys (tests/aws_requests.py), and evaluated (tests/iam_eval.py) against the policies template.yaml
  attaches to that function's role as SAM expands them (tests/cfn_expand.py). A request AWS would
  deny fails the test. For a whole-bucket source, and for a source narrowed to one account (where the
  roles' s3:prefix conditions bite).
- A failure of the Map itself (its ItemReader cannot parse the work items) still ends the copy FAILED.
- Execution input cannot point the stack at another source or store; the store must be in the
  stack's region; scheduled runs get a findable copy id.
"""
from __future__ import annotations

import datetime as dt
import gzip
import json
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import aws_requests  # noqa: E402
import cfn_expand as cfn  # noqa: E402
import sm_harness as h  # noqa: E402
from iam_eval import evaluate  # noqa: E402
from test_statemachine import (  # noqa: E402,F401  (lambda_env and real are fixtures)
    SOURCE, SOURCE_BUCKET, STORE, STORE_BUCKET, STORE_PREFIX, copy_id_of, diagnose, lambda_env, needs_lambdas, real,
    store_json, stored_event_ids)

pytestmark = needs_lambdas

ORG = "o-abc123defg"
ACCOUNTS = ("111122223333", "444455556666")
REGION = "us-east-1"
RANGE = {"start": "2020-10-01T00:00:00Z", "end": "2020-10-03T00:00:00Z"}
FUNCTION_ROLES = {"enumerate": "EnumerateFunction", "prepare": "PrepareFunction", "copy": "CopyFunction",
                  "finalize": "FinalizeFunction"}


def org_trail(s3, kms_key_arn: str) -> dict[str, set[str]]:
    """Two accounts of an organization trail, two days each; per account one SSE-KMS object and one
    GLACIER object (so Prepare restores, and S3 decrypts for the copy). Returns each account's eventIDs
    (all in range)."""
    expected, n = {}, 0
    for acct in ACCOUNTS:
        expected[acct] = set()
        for day, kind in (("2020-10-01T10:00Z", "kms"), ("2020-10-01T12:00Z", None), ("2020-10-02T08:00Z", "glacier")):
            ts = dt.datetime.fromisoformat(day.replace("Z", "+00:00"))
            key = h.trail_key(acct, REGION, ts, uuid.uuid4().hex[:16].upper(), prefix="")
            key = key.replace("AWSLogs/", f"AWSLogs/{ORG}/", 1)
            events = []
            for m in range(3):
                n += 1
                ev = h.make_event(ts - dt.timedelta(minutes=5 + m), acct, REGION, n)
                events.append(ev)
                expected[acct].add(ev["eventID"])
            body = gzip.compress(json.dumps({"Records": events}).encode())
            extra = {}
            if kind == "kms":
                extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_arn}
            elif kind == "glacier":
                extra = {"StorageClass": "GLACIER"}
            s3.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=body, **extra)
    return expected


def expanded_roles(source_prefix: str, kms_key_arn: str) -> list[cfn.Stack]:
    """The template as deployed for this run, with the existing store bucket and with a created one."""
    common = {"SourceBucket": SOURCE_BUCKET, "SourcePrefix": source_prefix, "StorePrefix": STORE_PREFIX,
              "SourceKmsKeyArns": kms_key_arn}
    return [cfn.expand("trailcopy", {**common, "StoreBucketName": STORE_BUCKET}, region=REGION, account=h.ACCOUNT),
            cfn.expand("trailcopy", {**common, "StoreBucketName": ""}, region=REGION, account=h.ACCOUNT,
                       physical={"StoreBucket": STORE_BUCKET})]


def check_requests_against_iam(moto: h.Moto, stacks: list[cfn.Stack]) -> Counter:
    with moto.proxy.lock:
        records = list(moto.proxy.records)
    assert records, "the recording proxy saw no request: the functions do not go through it"
    denied, unmapped, seen = [], [], Counter()
    for rec in records:
        fn = aws_requests.function_of(rec)
        if fn not in FUNCTION_ROLES:
            unmapped.append(f"no trailcopy function in the User-Agent: {rec['method']} {rec['path'][:120]}")
            continue
        try:
            requests = aws_requests.to_iam(rec, h.ACCOUNT)
        except aws_requests.Unmapped as e:
            unmapped.append(str(e))
            continue
        for req in requests:
            seen[(fn, req.action)] += 1
            for stack in stacks:
                verdict = evaluate(stack.role_policies(FUNCTION_ROLES[fn]), req)
                if verdict != "Allow":
                    store = "created store bucket" if "StoreBucket" in stack.resources else "existing store bucket"
                    denied.append(f"{verdict} ({store}): {req.describe()}")
    assert not unmapped, "requests the IAM check cannot map:\n" + "\n".join(unmapped[:20])
    assert not denied, f"{len(denied)} requests AWS would deny:\n" + "\n".join(sorted(set(denied))[:30])
    return seen


def run_copy(moto, s3, sm, source: str, logs) -> dict:
    moto.api("state-manager/set-transition", {"model_name": "s3::keyrestore",
                                              "transition": {"progression": "immediate"}})
    d = h.run_execution(moto, sm, {"source": source, "store": STORE, **RANGE,
                                   "restore": {"tier": "Bulk", "days": 1, "pollSeconds": 1, "maxWaitSeconds": 60}},
                        timeout=900)
    assert d["status"] == "SUCCEEDED", diagnose(d, moto, logs)
    return d


@pytest.mark.parametrize("narrowed", [False, True], ids=["whole-bucket", "narrowed-to-an-account"])
def test_lambdas_requests_are_allowed_by_the_templates_iam(real, tmp_path, narrowed):
    moto, s3, sm, logs = real
    kms = moto.client("kms")
    key = kms.create_key(Description="trail key")["KeyMetadata"]["Arn"]
    by_account = org_trail(s3, key)
    prefix = f"AWSLogs/{ORG}/{ACCOUNTS[0]}/" if narrowed else ""
    expected = by_account[ACCOUNTS[0]] if narrowed else set().union(*by_account.values())
    run_copy(moto, s3, sm, f"{SOURCE}/{prefix}" if prefix else SOURCE, logs)
    ids = stored_event_ids(moto, s3, tmp_path / "store")
    assert sorted(ids) == sorted(expected)

    seen = check_requests_against_iam(moto, expanded_roles(prefix, key))
    # The run exercised what the policies are about (else the check above proves nothing).
    for fn, action in [("enumerate", "s3:ListBucket"), ("enumerate", "s3:GetBucketLocation"),
                       ("enumerate", "s3:PutObject"), ("prepare", "s3:GetObject"),
                       ("prepare", "s3:RestoreObject"), ("prepare", "kms:DescribeKey"), ("copy", "s3:GetObject"),
                       ("copy", "kms:Decrypt"), ("copy", "s3:PutObject"), ("finalize", "s3:PutObject")]:
        assert seen[(fn, action)] > 0, f"{fn} made no {action} request: {sorted(seen)}"
    # Only Enumerate lists the source: the items' file lists are frozen at planning (issue 11).
    assert not [k for k in seen if k[1] == "s3:ListBucket" and k[0] in ("prepare", "copy")], sorted(seen)
    if narrowed:
        # No listing above the narrowed prefix: the fixed levels were built.
        with moto.proxy.lock:
            lists = [aws_requests.to_iam(r, h.ACCOUNT)[0] for r in moto.proxy.records
                     if r["method"] == "GET" and "list-type=" in r["path"] and f"/{SOURCE_BUCKET}" in r["path"]]
        assert lists and all(x.context.get("s3:prefix", "").startswith(prefix) for x in lists), \
            [x.context for x in lists]


def test_lambdas_map_failure_ends_the_copy_failed_with_a_message(real):
    """The Distributed Map itself fails (its ItemReader cannot parse the work items): the Catch sends
    the error to Finalize, and the record ends FAILED with an entry naming the error, not IN_PROGRESS."""
    moto, s3, sm, logs = real
    kms = moto.client("kms")
    org_trail(s3, kms.create_key(Description="k")["KeyMetadata"]["Arn"])
    moto.corrupt_work_items_after("enumerate")
    d = h.run_execution(moto, sm, {"source": SOURCE, "store": STORE, **RANGE}, timeout=600)
    assert d["status"] == "FAILED", diagnose(d, moto, logs)
    assert d["error"] == "CopyFailed", diagnose(d, moto, logs)
    copy_id = copy_id_of(moto)
    record = store_json(s3, copy_id, "record.json")
    assert record["status"] == "FAILED", record
    assert "MapRunFailed" in record.get("message", ""), record
    failures = store_json(s3, copy_id, "failures.json")
    assert [f["errorType"] for f in failures] == ["MapRunFailed"], failures
    assert failures[0]["location"].endswith(f"copies/{copy_id}/workitems.json"), failures
    assert not [i for i in moto.invokes() if i["function"] in ("prepare", "copy")], "no item should have run"
    fin = [i for i in moto.invokes() if i["function"] == "finalize"]
    assert fin and fin[-1]["request"]["mapError"]["Error"].startswith("States."), fin


@pytest.mark.parametrize("field,value", [("source", "s3://another-trail-bucket/"),
                                         ("source", "s3://trail-src-elsewhere/AWSLogs/"),
                                         ("store", "s3://trailcopy-store/other-prefix/"),
                                         ("store", "s3://another-store/eds/")])
def test_lambdas_refuse_input_pointing_outside_the_stack(real, field, value):
    moto, s3, sm, logs = real
    d = h.run_execution(moto, sm, {"source": SOURCE, "store": STORE, **RANGE, field: value}, timeout=300)
    assert d["status"] == "FAILED" and d["error"] == "InvalidRequest", diagnose(d, moto, logs)
    assert f"invalid {field}:" in d["cause"] and value.rstrip("/") in d["cause"], d["cause"]
    assert [i["function"] for i in moto.invokes()] == ["enumerate"]
    assert not s3.list_objects_v2(Bucket=STORE_BUCKET).get("Contents"), "nothing may be written"


def test_lambdas_refuse_a_store_bucket_in_another_region(real):
    moto, s3, sm, logs = real
    # The stack's store bucket exists, but in eu-west-1: ResultWriter could not write there.
    s3.delete_bucket(Bucket=STORE_BUCKET)
    s3.create_bucket(Bucket=STORE_BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    d = h.run_execution(moto, sm, {"source": SOURCE, "store": STORE, **RANGE}, timeout=300)
    assert d["status"] == "FAILED" and d["error"] == "InvalidRequest", diagnose(d, moto, logs)
    assert "invalid store:" in d["cause"] and "eu-west-1" in d["cause"] and REGION in d["cause"], d["cause"]


def test_lambdas_scheduled_run_gets_a_findable_copy_id(real):
    moto, s3, sm, logs = real
    org_trail(s3, moto.client("kms").create_key(Description="k")["KeyMetadata"]["Arn"])
    moto.api("state-manager/set-transition", {"model_name": "s3::keyrestore",
                                              "transition": {"progression": "immediate"}})
    scheduled = {"request": {"scheduledTime": "2020-10-03T00:00:00Z", "window": "P2D",
                             "restore": {"pollSeconds": 1, "maxWaitSeconds": 600}}, "settleSeconds": 0}
    d = h.run_execution(moto, sm, scheduled, timeout=900)
    assert d["status"] == "SUCCEEDED", diagnose(d, moto, logs)
    assert json.loads(d["output"])["copyId"] == "scheduled-20201003T000000Z"
    record = store_json(s3, "scheduled-20201003T000000Z", "record.json")
    assert record["status"] == "COMPLETED" and record["executions"] == [d["executionArn"]], record
    # A second delivery of the same scheduled time is refused: it would copy the window twice.
    again = h.run_execution(moto, sm, scheduled, timeout=300)
    assert again["status"] == "FAILED" and again["error"] == "InvalidRequest", again
    assert "already exists" in again["cause"], again["cause"]
