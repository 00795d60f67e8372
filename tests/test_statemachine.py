"""The real state machine (statemachine/copy-trail-events.asl.json with template.yaml's
DefinitionSubstitutions applied) executed by moto, with trail data in moto S3.

Two sets of tests share the harness (tests/sm_harness.py):
- `fakes`: the four Lambdas are `sm_harness.ContractFakes` (Python, per docs/contracts.md). Fast; they
  pin the definition's wiring: payload shapes, the restore wait loop and its bound, the copy cursor
  loop, failed items, Finalize's status, invalid input, the scheduled-run input.
- `lambdas`: the real Rust binaries under `cargo lambda watch`. They run when the four Lambda crates
  exist (functions/{enumerate,prepare,copy,finalize}); the first build takes minutes.
"""
from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sm_harness as h  # noqa: E402
from fault_proxy import FaultProxy  # noqa: E402

UTC = dt.timezone.utc
SOURCE_BUCKET = "trail-src"
STORE_BUCKET = "trailcopy-store"
STORE_PREFIX = "eds/"
SOURCE = f"s3://{SOURCE_BUCKET}"
STORE = f"s3://{STORE_BUCKET}/{STORE_PREFIX.rstrip('/')}"
ACCOUNT = "111122223333"
REGION = "us-east-1"
RANGE = {"start": "2020-10-01T00:00:00Z", "end": "2020-10-03T00:00:00Z"}
LAMBDA_CRATES = ("enumerate", "prepare", "copy", "finalize")


def t(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(UTC)


class Trail:
    """A small trail in moto S3 and the events a copy of RANGE must store."""

    def __init__(self, s3):
        self.s3 = s3
        self.n = 0
        self.expected: set[str] = set()
        self.keys: list[str] = []

    def file(self, name_time: str, event_times: list[str], storage_class: str | None = None,
             body: bytes | None = None) -> str:
        ts = t(name_time)
        key = h.trail_key(ACCOUNT, REGION, ts, uuid.uuid4().hex[:16].upper())
        events = []
        for et in event_times:
            self.n += 1
            ev = h.make_event(t(et), ACCOUNT, REGION, self.n)
            events.append(ev)
            if t(RANGE["start"]) <= t(et) < t(RANGE["end"]) and body is None:
                self.expected.add(ev["eventID"])
        h.put_trail_file(self.s3, SOURCE_BUCKET, key, events, storage_class, body)
        self.keys.append(key)
        return key

    def standard_days(self) -> None:
        # Day 1 holds the previous day's last events (out of range) and in-range ones; day 3 holds the
        # last minutes of day 2 (in range: the first minutes of the day after the end are in scope).
        self.file("2020-10-01T00:05Z", ["2020-09-30T23:55:00Z", "2020-10-01T00:01:00Z"])
        self.file("2020-10-01T12:00Z", ["2020-10-01T11:50:00Z", "2020-10-01T11:55:00Z", "2020-10-01T11:59:00Z"])
        self.file("2020-10-02T08:00Z", ["2020-10-02T07:48:00Z", "2020-10-02T07:59:59Z"])
        self.file("2020-10-03T00:05Z", ["2020-10-02T23:58:00Z", "2020-10-03T00:02:00Z"])


def invokes_of(moto: h.Moto, function: str) -> list[dict]:
    return [i for i in moto.invokes() if i["function"] == function]


def copy_id_of(moto: h.Moto) -> str:
    ok = [i for i in invokes_of(moto, "enumerate") if i["status"] == 200]
    assert ok, f"no successful enumerate invocation: {moto.invokes()}"
    return ok[-1]["response"]["copyId"]


def store_json(s3, copy_id: str, name: str):
    key = f"{STORE_PREFIX}copies/{copy_id}/{name}"
    return json.loads(s3.get_object(Bucket=STORE_BUCKET, Key=key)["Body"].read())


def history(moto: h.Moto, execution_arn: str) -> list[dict]:
    sfn = moto.client("stepfunctions")
    return sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]


def prepare_s3(moto: h.Moto):
    s3 = moto.client("s3")
    s3.create_bucket(Bucket=SOURCE_BUCKET)
    s3.create_bucket(Bucket=STORE_BUCKET)
    return s3


# ==================================================================================================
# Contract fakes
# ==================================================================================================
@pytest.fixture(scope="module")
def fake_env(tmp_path_factory):
    logs = tmp_path_factory.mktemp("sm-fakes")
    fakes = h.ContractFakes(default_store=STORE)
    moto = h.Moto(fakes.url, routes={}, log_dir=logs)
    fakes.connect(moto.url)
    yield moto, fakes
    moto.stop()
    fakes.stop()


@pytest.fixture
def fake(fake_env):
    moto, fakes = fake_env
    moto.reset()
    fakes.calls.clear()
    s3 = prepare_s3(moto)
    sm = h.deploy(moto, STORE_BUCKET, STORE_PREFIX, max_concurrency=2)
    return moto, fakes, s3, sm


def request(**extra) -> dict:
    return {"source": SOURCE, "store": STORE, **RANGE,
            "restore": {"tier": "Bulk", "days": 1, "pollSeconds": 1, "maxWaitSeconds": 30}, **extra}


def test_fakes_copy_succeeds_and_payloads_follow_the_contract(fake):
    moto, fakes, s3, sm = fake
    Trail(s3).standard_days()
    d = h.run_execution(moto, sm, request())
    assert d["status"] == "SUCCEEDED", d
    out = json.loads(d["output"])
    assert out["status"] == "COMPLETED" and out["failedEntries"] == 0
    assert set(out) == {"copyId", "status", "failedEntries", "statistics"}

    calls = {name: [b for n, b in fakes.calls if n == name] for name in h.FUNCTIONS.values()}
    assert len(calls["enumerate"]) == 1 and len(calls["finalize"]) == 1
    assert calls["finalize"][0] == {"copyId": out["copyId"], "store": STORE, "mapError": None}
    # One item per date (the fake packs a date's day prefixes together); each step gets the item
    # exactly as workitems.json holds it.
    items = store_json(s3, out["copyId"], "workitems.json")
    assert {p["item"]["index"] for p in calls["prepare"]} == {"00001", "00002", "00003"}
    assert all(p["item"] in items for p in calls["prepare"] + calls["copy"])
    assert all(p["waitedSeconds"] == 0 for p in calls["prepare"])
    # The copy loop passes each answer's cursor to the next call, starting from null.
    item1 = [c for c in calls["copy"] if c["item"]["index"] == "00001"]
    assert [c["cursor"] for c in item1] == [None, {"next": 1}]
    assert all(set(c) == {"item", "cursor"} for c in calls["copy"])
    # ResultWriter keeps the children's outputs out of the state: they go to <store>map-runs/.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=STORE_BUCKET, Prefix=f"{STORE_PREFIX}map-runs/")
            .get("Contents", [])]
    assert any(k.endswith("/manifest.json") for k in keys), keys


def test_fakes_failed_item_fails_the_copy_and_the_other_items_complete(fake):
    moto, fakes, s3, sm = fake
    trail = Trail(s3)
    trail.standard_days()
    trail.file("2020-10-09T10:00Z", ["2020-10-09T09:55:00Z"])  # the fake's copy fails this day
    d = h.run_execution(moto, sm, request(end="2020-10-10T00:00:00Z"))
    assert d["status"] == "FAILED", d
    assert d["error"] == "CopyFailed"
    assert "FAILED with 1 failure entries" in d["cause"], d["cause"]
    assert "trailcopy failures" in d["cause"]
    record = store_json(s3, copy_id_of(moto), "record.json")
    assert record["status"] == "FAILED"
    assert record["statistics"]["prefixesCompleted"] == 3
    failures = store_json(s3, copy_id_of(moto), "failures.json")
    assert [f["location"] for f in failures] == [f"AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/2020/10/09/"]


def test_fakes_pending_restore_waits_then_copies(fake):
    moto, fakes, s3, sm = fake
    trail = Trail(s3)
    trail.standard_days()
    moto.hold_restores(3)
    trail.file("2020-10-02T16:00Z", ["2020-10-02T15:50:00Z"], storage_class="GLACIER")
    d = h.run_execution(moto, sm, request())
    assert d["status"] == "SUCCEEDED", d
    day2 = [b for n, b in fakes.calls if n == "prepare" and b["item"]["index"] == "00002"]
    waited = [b["waitedSeconds"] for b in day2]
    assert len(waited) >= 3 and waited == sorted(waited) and waited[-1] >= 3, waited
    assert any(b["item"]["index"] == "00002" for n, b in fakes.calls if n == "copy")


def test_fakes_restore_that_never_finishes_hits_the_max_wait(fake):
    moto, fakes, s3, sm = fake
    trail = Trail(s3)
    trail.standard_days()
    moto.hold_restores(600)
    trail.file("2020-10-02T16:00Z", ["2020-10-02T15:50:00Z"], storage_class="GLACIER")
    d = h.run_execution(moto, sm, request(restore={"pollSeconds": 1, "maxWaitSeconds": 2}))
    assert d["status"] == "FAILED", d
    assert "1 failure entries" in d["cause"]
    assert not any(b["item"]["index"] == "00002" for n, b in fakes.calls if n == "copy")
    assert {b["item"]["index"] for n, b in fakes.calls if n == "copy"} == {"00001", "00003"}


def test_fakes_invalid_request_fails_at_once(fake):
    moto, fakes, s3, sm = fake
    d = h.run_execution(moto, sm, {"strat": "2020-10-01"})
    assert d["status"] == "FAILED", d
    assert d["error"] == "InvalidRequest" and "strat" in d["cause"]
    assert [n for n, _ in fakes.calls] == ["enumerate"]  # not retried, nothing else ran


def test_fakes_scheduled_input_copies_the_window_ending_at_the_scheduled_time(fake):
    moto, fakes, s3, sm = fake
    Trail(s3).standard_days()
    scheduled = {"request": {"source": SOURCE, "scheduledTime": "2020-10-03T00:00:00Z", "window": "P2D"},
                 "settleSeconds": 1}
    d = h.run_execution(moto, sm, scheduled)
    assert d["status"] == "SUCCEEDED", d
    assert fakes.calls[0][0] == "enumerate" and fakes.calls[0][1]["input"] == scheduled["request"]
    assert fakes.calls[0][1]["executionArn"] == d["executionArn"]
    states = [e["stateEnteredEventDetails"]["name"] for e in history(moto, d["executionArn"])
              if "stateEnteredEventDetails" in e]
    assert states[:3] == ["IsScheduledRun", "SettleBeforeScheduledCopy", "UnwrapScheduledRequest"]


# ==================================================================================================
# The real Lambda binaries under cargo lambda watch
# ==================================================================================================
def lambda_crates_missing() -> list[str]:
    return [c for c in LAMBDA_CRATES if not (h.ROOT / "functions" / c / "Cargo.toml").exists()]


needs_lambdas = pytest.mark.skipif(bool(lambda_crates_missing()),
                                   reason=f"Lambda crates not written yet: {lambda_crates_missing()}")


# One cargo lambda watch for every module that uses the real Lambdas (test_sfn_cli.py,
# test_sm_aws_rules.py): starting one costs a minute or more of CI time.
@pytest.fixture(scope="session")
def lambda_env(tmp_path_factory):
    logs = tmp_path_factory.mktemp("sm-lambdas")
    h.build_lambda_binaries(LAMBDA_CRATES)
    # moto needs the invoke URL at start and the functions need moto's: reserve moto's port first.
    # The functions reach moto through a recording proxy (no faults): every S3 and KMS request they
    # make is kept, for the IAM check (test_lambdas_requests_are_allowed_by_the_templates_iam).
    moto_port = h.free_port()
    proxy = FaultProxy(f"http://127.0.0.1:{moto_port}", rate=0.0, record=True).start()
    fn_env = h.function_env(proxy.endpoint, SOURCE, STORE, **{
        "TRAILCOPY_BATCH_BYTES": "600",  # several batches per item: the cursor loop runs
    })
    watch = h.CargoLambdaWatch(fn_env, logs)
    moto = None
    try:
        moto = h.Moto(watch.url, routes={}, log_dir=logs, port=moto_port)
        # Warm up: the first invoke of each binary waits for its build; a bad payload answers fast.
        for name in LAMBDA_CRATES:
            h.wait_for(lambda n=name: _ping(watch.url, n), 1800, f"binary {name} under cargo lambda watch",
                       interval=2, proc=watch.proc)
        moto.proxy = proxy
        yield moto, logs
    finally:
        if moto:
            moto.stop()
        watch.stop()
        proxy.stop()


def _ping(url: str, name: str) -> bool:
    import urllib.error
    import urllib.request
    req = urllib.request.Request(f"{url}/2015-03-31/functions/{name}/invocations", data=b'{"ping": true}',
                                 method="POST", headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=1800).read()
        return True
    except urllib.error.HTTPError as e:
        body = e.read()
        return e.code == 500 and b"errorType" in body


@pytest.fixture
def real(lambda_env):
    moto, logs = lambda_env
    moto.reset()
    with moto.proxy.lock:
        moto.proxy.records.clear()
    s3 = prepare_s3(moto)
    sm = h.deploy(moto, STORE_BUCKET, STORE_PREFIX, max_concurrency=2)
    return moto, s3, sm, logs


def stored_event_ids(moto: h.Moto, s3, dest: Path) -> list[str]:
    import duckdb
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=STORE_BUCKET, Prefix=f"{STORE_PREFIX}events/")
    keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
    for k in keys:
        p = dest / k
        p.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(STORE_BUCKET, k, str(p))
    if not any(k.endswith(".parquet") for k in keys):
        return []
    con = duckdb.connect()
    return [r[0] for r in con.execute(
        f"SELECT eventID FROM read_parquet('{dest}/**/*.parquet', hive_partitioning=true)").fetchall()]


def diagnose(d: dict, moto: h.Moto, logs: Path) -> str:
    tail = (logs / "cargo-lambda.log").read_text(errors="replace")[-4000:] if (logs / "cargo-lambda.log").exists() else ""
    return json.dumps({k: d.get(k) for k in ("status", "error", "cause", "output")}, indent=1) + \
        "\ninvokes:\n" + "\n".join(json.dumps(i)[:600] for i in moto.invokes()[-20:]) + "\ncargo lambda:\n" + tail


@needs_lambdas
def test_lambdas_copy_succeeds_with_exactly_the_expected_events(real, tmp_path):
    moto, s3, sm, logs = real
    trail = Trail(s3)
    trail.standard_days()
    d = h.run_execution(moto, sm, request(), timeout=900)
    assert d["status"] == "SUCCEEDED", diagnose(d, moto, logs)
    out = json.loads(d["output"])
    assert out["status"] == "COMPLETED"
    ids = stored_event_ids(moto, s3, tmp_path / "store")
    assert len(ids) == len(set(ids)), "duplicates in the store"
    assert set(ids) == trail.expected
    record = store_json(s3, out["copyId"], "record.json")
    assert record["status"] == "COMPLETED"
    assert record["statistics"]["eventsCompleted"] == len(trail.expected)
    assert record["statistics"]["failedEntries"] == 0
    # Every Copy call after the first continues from the cursor the previous one returned.
    for i in invokes_of(moto, "copy"):
        assert set(i["request"]) == {"item", "cursor"}


@needs_lambdas
def test_lambdas_failing_item_ends_failed_with_the_failure_listed(real, tmp_path):
    moto, s3, sm, logs = real
    trail = Trail(s3)
    trail.standard_days()
    bad = trail.file("2020-10-02T12:00Z", [], body=b"\x1f\x8b\x08\x00 this is not gzip data")
    d = h.run_execution(moto, sm, request(), timeout=900)
    assert d["status"] == "FAILED", diagnose(d, moto, logs)
    assert d["error"] == "CopyFailed" and "failure entries" in d["cause"], d
    copy_id = copy_id_of(moto)
    record = store_json(s3, copy_id, "record.json")
    assert record["status"] == "FAILED"
    assert record["statistics"]["failedEntries"] >= 1
    failures = store_json(s3, copy_id, "failures.json")
    failures = failures["failures"] if isinstance(failures, dict) else failures
    bad_prefix = bad.rsplit("/", 1)[0]
    assert any(bad in f["location"] or bad_prefix in f["location"] for f in failures), failures
    # The other files were still copied.
    assert set(stored_event_ids(moto, s3, tmp_path / "store")) == trail.expected


@needs_lambdas
def test_lambdas_pending_restore_makes_the_item_wait_then_copy(real, tmp_path):
    moto, s3, sm, logs = real
    trail = Trail(s3)
    trail.standard_days()
    moto.hold_restores(4)
    trail.file("2020-10-02T16:00Z", ["2020-10-02T15:50:00Z", "2020-10-02T15:51:00Z"], storage_class="GLACIER")
    d = h.run_execution(moto, sm, request(), timeout=900)
    assert d["status"] == "SUCCEEDED", diagnose(d, moto, logs)
    prepares = [i for i in invokes_of(moto, "prepare") if i["status"] == 200]
    pending = [i for i in prepares if i["response"]["pendingRestores"] > 0]
    assert pending, f"no prepare reported a pending restore: {prepares}"
    index = pending[0]["request"]["item"]["index"]
    waited = [i["request"]["waitedSeconds"] for i in prepares if i["request"]["item"]["index"] == index]
    # The item waited (Wait states between prepares) until moto finished the restore: the waits add
    # up while the restore is held (~4 s of wall time, which includes the invocations themselves).
    assert waited[0] == 0 and len(waited) >= 2 and waited == sorted(waited) and waited[-1] >= 2, waited
    assert set(stored_event_ids(moto, s3, tmp_path / "store")) == trail.expected


@needs_lambdas
def test_lambdas_restore_that_never_finishes_fails_its_item_and_the_others_complete(real, tmp_path):
    moto, s3, sm, logs = real
    trail = Trail(s3)
    trail.standard_days()
    moto.hold_restores(600)
    archived = trail.file("2020-10-02T16:00Z", ["2020-10-02T15:50:00Z"], storage_class="GLACIER")
    d = h.run_execution(moto, sm, request(restore={"tier": "Bulk", "days": 1, "pollSeconds": 1,
                                                   "maxWaitSeconds": 2}), timeout=900)
    assert d["status"] == "FAILED", diagnose(d, moto, logs)
    assert d["error"] == "CopyFailed", d
    copy_id = copy_id_of(moto)
    record = store_json(s3, copy_id, "record.json")
    assert record["status"] == "FAILED"
    failures = store_json(s3, copy_id, "failures.json")
    failures = failures["failures"] if isinstance(failures, dict) else failures
    day = archived.rsplit("/", 1)[0]
    assert any(day in f["location"] for f in failures), (failures, record, diagnose(d, moto, logs))
    # Day 2's other files wait with the archived one; days 1 and 3 are copied.
    stored = set(stored_event_ids(moto, s3, tmp_path / "store"))
    assert stored and stored < trail.expected
