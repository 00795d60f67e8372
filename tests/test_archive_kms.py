"""Archived and SSE-KMS trail objects, end to end with the CLI against moto S3 + KMS (issue 4).

moto runs as tests/sm_harness.py's launcher, whose RestoreObject starts "in progress" (unpatched moto
shows a restore as finished before anyone looks). How long a restore stays in progress is set with
moto's state manager (model s3::keyrestore): "immediate" = finished at the next look, "time" N s.
moto does not enforce KMS key state on GET: a disabled key is only seen through DescribeKey, which is
exactly what the engine checks before copying (one failure per key, not one per file).

Every test builds a tiny generated trail (1 account, 1 region, 3 days, 3 files a day) in moto S3 and
compares the store with tests/expect.py's ground truth.
"""
from __future__ import annotations

import copy
import datetime as dt
import gzip
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sm_harness as h  # noqa: E402
from conftest import base_env, read_store, rebuild_event  # noqa: E402
from expect import canon, expected, stats_diff  # noqa: E402

SRC_BUCKET = "archived-trail"
STORE_BUCKET = "kms-store"
SOURCE = f"s3://{SRC_BUCKET}"
START, END = "2024-03-01T00:00:00Z", "2024-03-04T00:00:00Z"
RANGE = ["--start", START, "--end", END]
TRAIL_ARGS = dict(seed=41, accounts=1, regions="us-east-1", start_day="2024-03-01", days=3,
                  files_per_day=3, events_per_file=6)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    logs = tmp_path_factory.mktemp("archive-kms-moto")
    m = h.Moto("http://127.0.0.1:9", routes={}, log_dir=logs)  # no Lambdas here
    yield m
    m.stop()


@pytest.fixture(scope="module")
def trail(make_trail) -> dict:
    m = make_trail("archive-kms", **TRAIL_ARGS)
    assert len({f["dayPrefix"] for f in m["files"]}) == 3 and len(m["files"]) == 9
    return m


class Env:
    def __init__(self, moto: h.Moto, trail: dict, tmp: Path):
        self.moto = moto
        self.trail = trail
        self.s3 = moto.client("s3")
        self.kms = moto.client("kms")
        self.tmp = tmp
        self.cli_env = {"AWS_ENDPOINT_URL": moto.url, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_REGION": h.REGION, "AWS_DEFAULT_REGION": h.REGION}

    def restores(self, transition: dict) -> None:
        self.moto.api("state-manager/set-transition", {"model_name": "s3::keyrestore", "transition": transition})

    def days(self) -> list[str]:
        return sorted({f["dayPrefix"] for f in self.trail["files"]})

    def files_of(self, day_prefix: str) -> list[dict]:
        return sorted((f for f in self.trail["files"] if f["dayPrefix"] == day_prefix), key=lambda f: f["key"])

    def upload(self, extra=lambda f: {}) -> None:
        """Puts every trail file; extra(file entry) -> put_object arguments (StorageClass, SSE...)."""
        for f in self.trail["files"]:
            body = (Path(self.trail["root"]) / f["key"]).read_bytes()
            self.s3.put_object(Bucket=SRC_BUCKET, Key=f["key"], Body=body, **extra(f))


@pytest.fixture
def env(moto, trail, tmp_path) -> Env:
    moto.reset()
    e = Env(moto, trail, tmp_path)
    e.restores({"progression": "immediate"})  # the state manager's config survives a reset
    e.s3.create_bucket(Bucket=SRC_BUCKET)
    e.s3.create_bucket(Bucket=STORE_BUCKET)
    return e


# ----------------------------------------------------------------------------- helpers
def expectation(trail: dict, fatal: dict | None = None, drop_prefixes=()) -> dict:
    """expect.expected() with some files failing whole (fatal: key -> errorType) or some day
    prefixes left out (items that did not complete)."""
    m = copy.deepcopy(trail)
    m["files"] = [f for f in m["files"] if f["dayPrefix"] not in set(drop_prefixes)]
    for f in m["files"]:
        if f["key"] in (fatal or {}):
            f["fatal"], f["errorType"] = True, fatal[f["key"]]
    return expected(m, START, END)


def assert_store(store: Path, exp: dict) -> None:
    rows = read_store(store)
    got = Counter(canon(rebuild_event(r)) for r in rows)
    want = Counter(canon(json.loads(j)) for j in exp["copied"])
    assert got == want, (f"store holds {len(rows)} events, expected {len(exp['copied'])}; "
                         f"missing {sum((want - got).values())}, unexpected {sum((got - want).values())}")


def failures(trailcopy, e: Env, copy_id: str, store) -> list[dict]:
    r = trailcopy("failures", copy_id, "--store", store, "--json", env=e.cli_env)
    assert r.returncode == 0, r.describe()
    return r.json["failures"]


def copy_cmd(copy_id: str, store, *extra) -> list:
    return ["copy", "--source", SOURCE, "--store", store, *RANGE, "--copy-id", copy_id,
            "--restore-poll-seconds", "1", "--json", *extra]


# ----------------------------------------------------------------------------- (a) archived objects
def test_glacier_and_deep_archive_objects_are_restored_then_copied(env, trailcopy):
    d1, d2, d3 = env.days()
    classes = {env.files_of(d1)[0]["key"]: "GLACIER", env.files_of(d2)[1]["key"]: "DEEP_ARCHIVE",
               env.files_of(d3)[2]["key"]: "GLACIER", env.files_of(d3)[0]["key"]: "DEEP_ARCHIVE"}
    env.upload(lambda f: {"StorageClass": classes[f["key"]]} if f["key"] in classes else {})
    heads = {k: env.s3.head_object(Bucket=SRC_BUCKET, Key=k) for k in classes}
    assert all(heads[k]["StorageClass"] == c and "Restore" not in heads[k] for k, c in classes.items())

    store = env.tmp / "store"
    r = trailcopy(*copy_cmd("arch-a", store), env=env.cli_env, timeout=90)  # default --restore bulk
    assert r.returncode == 0, r.describe()
    rec = r.json
    assert rec["status"] == "COMPLETED", r.describe()
    exp = expectation(env.trail)
    s = rec["statistics"]
    assert stats_diff(s, exp) == {}, f"(got, expected): {stats_diff(s, exp)}"
    assert s["restoresStarted"] == len(classes), s
    assert s["restoresPending"] == 0, s
    assert s["restoresFinished"] == len(classes), s
    assert_store(store, exp)
    # The engine asked for the restores (Bulk, the default tier): every archived object now says so.
    for k in classes:
        assert 'ongoing-request="false"' in env.s3.head_object(Bucket=SRC_BUCKET, Key=k).get("Restore", ""), k


# ----------------------------------------------------------------------------- (b) a restore in progress
def test_restore_held_in_progress_makes_the_item_wait_then_succeed(env, trailcopy, trailcopy_bin):
    d1, d2, d3 = env.days()
    archived = env.files_of(d2)[1]["key"]
    env.upload(lambda f: {"StorageClass": "GLACIER"} if f["key"] == archived else {})
    env.restores({"progression": "time", "seconds": 4})
    store = env.tmp / "store"

    e = base_env()
    e.update(env.cli_env)
    t0 = time.monotonic()
    proc = subprocess.Popen([trailcopy_bin, *map(str, copy_cmd("arch-b", store))], env=e, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    seen_pending = []
    try:
        while proc.poll() is None and time.monotonic() - t0 < 60:
            st = trailcopy("status", "arch-b", "--store", store, "--json", env=env.cli_env)
            if st.returncode == 0 and st.stdout.strip():
                stats = st.json["statistics"]
                if stats.get("restoresPending", 0) > 0:
                    seen_pending.append((round(time.monotonic() - t0, 1), st.json["status"], stats["restoresPending"]))
            time.sleep(0.5)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-3000:]}\n{err[-3000:]}"
    rec = json.loads(out)
    assert rec["status"] == "COMPLETED"
    assert elapsed >= 4, f"the copy did not wait for the restore held 4 s (took {elapsed:.1f} s)"
    assert seen_pending, "status never showed a pending restore while the copy waited"
    assert all(status == "IN_PROGRESS" and n == 1 for _, status, n in seen_pending), seen_pending
    s = rec["statistics"]
    assert (s["restoresStarted"], s["restoresPending"], s["restoresFinished"]) == (1, 0, 1), s
    exp = expectation(env.trail)
    assert stats_diff(s, exp) == {}, f"(got, expected): {stats_diff(s, exp)}"
    assert_store(store, exp)


# ----------------------------------------------------------------------------- (c) a restore that never ends
def test_restore_past_the_maximum_wait_fails_its_item_then_retry_finishes_it(env, trailcopy):
    d1, d2, d3 = env.days()
    archived = env.files_of(d2)[0]["key"]
    env.upload(lambda f: {"StorageClass": "DEEP_ARCHIVE"} if f["key"] == archived else {})
    env.restores({"progression": "time", "seconds": 3600})
    store = env.tmp / "store"

    t0 = time.monotonic()
    r = trailcopy(*copy_cmd("arch-c", store, "--restore-max-wait-seconds", "3"), env=env.cli_env, timeout=60)
    elapsed = time.monotonic() - t0
    assert r.returncode == 1, r.describe()
    rec = r.json
    assert rec["status"] == "FAILED", r.describe()
    assert elapsed >= 3, f"gave up after {elapsed:.1f} s, before the 3 s maximum wait"
    s = rec["statistics"]
    assert s["prefixesFound"] == 3 and s["prefixesCompleted"] == 2, s
    assert s["restoresStarted"] == 1 and s["restoresPending"] == 1, s
    assert s["failedEntries"] == 1, s
    fl = failures(trailcopy, env, "arch-c", store)
    assert len(fl) == 1, fl
    f = fl[0]
    assert f["errorType"] == "RestoreTimeout", fl
    assert f["location"] == f"s3://{SRC_BUCKET}/{d2}", fl
    assert "3 s" in f["errorMessage"] and "retry" in f["errorMessage"], f
    # Days 1 and 3 are in the store whole; day 2 not at all (its item waits before copying anything).
    assert_store(store, expectation(env.trail, drop_prefixes=[d2]))

    # The restore finishes; `trailcopy retry` resumes the item and the copy completes exactly.
    env.restores({"progression": "immediate"})
    r2 = trailcopy("retry", "arch-c", "--store", store, "--json", env=env.cli_env, timeout=60)
    assert r2.returncode == 0, r2.describe()
    rec2 = r2.json
    assert rec2["status"] == "COMPLETED", r2.describe()
    exp = expectation(env.trail)
    s2 = rec2["statistics"]
    assert stats_diff(s2, exp) == {}, f"(got, expected): {stats_diff(s2, exp)}"
    assert s2["restoresPending"] == 0 and s2["restoresFinished"] == 1, s2
    assert failures(trailcopy, env, "arch-c", store) == []
    assert_store(store, exp)


# ----------------------------------------------------------------------------- (d) --restore no
def test_restore_no_makes_archived_files_failure_entries_that_say_how_to_restore(env, trailcopy):
    d1, d2, d3 = env.days()
    classes = {env.files_of(d2)[2]["key"]: "GLACIER", env.files_of(d3)[1]["key"]: "DEEP_ARCHIVE"}
    env.upload(lambda f: {"StorageClass": classes[f["key"]]} if f["key"] in classes else {})
    store = env.tmp / "store"
    r = trailcopy(*copy_cmd("arch-d", store, "--restore", "no"), env=env.cli_env, timeout=60)
    assert r.returncode == 1, r.describe()
    rec = r.json
    assert rec["status"] == "FAILED", r.describe()
    exp = expectation(env.trail, fatal={k: "ArchivedObject" for k in classes})
    s = rec["statistics"]
    assert stats_diff(s, exp) == {}, f"(got, expected): {stats_diff(s, exp)}"
    assert s["restoresStarted"] == 0 and s["restoresPending"] == 0, s
    assert s["prefixesCompleted"] == 3, s
    fl = failures(trailcopy, env, "arch-d", store)
    assert sorted((f["location"], f["errorType"]) for f in fl) == \
        sorted((f"s3://{SRC_BUCKET}/{k}", "ArchivedObject") for k in classes), fl
    for f in fl:
        msg = f["errorMessage"]
        cls = classes[f["location"][len(f"s3://{SRC_BUCKET}/"):]]
        assert cls in msg, f
        assert "restore-object" in msg and "--restore bulk" in msg, f
    assert_store(store, exp)
    # Nothing was restored.
    for k in classes:
        assert "Restore" not in env.s3.head_object(Bucket=SRC_BUCKET, Key=k), k


# ----------------------------------------------------------------------------- (e) KMS
def kms_key(e: Env, alias: str) -> str:
    return e.kms.create_key(Description=f"trail key {alias}")["KeyMetadata"]["Arn"]


def key_id(arn: str) -> str:
    """moto's DisableKey/EnableKey/ScheduleKeyDeletion take the key id only (an ARN is a KeyError there)."""
    return arn.rsplit("/", 1)[1]


def sse(arn: str) -> dict:
    return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": arn}


def test_disabled_kms_key_is_one_failure_naming_the_key_and_retry_completes_after_enable(env, trailcopy):
    d1, d2, d3 = env.days()
    arn = kms_key(env, "a")
    env.upload(lambda f: sse(arn) if f["dayPrefix"] in (d1, d2) else {})  # 6 encrypted files, day 3 plain
    head = env.s3.head_object(Bucket=SRC_BUCKET, Key=env.files_of(d1)[0]["key"])
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == arn, head
    env.kms.disable_key(KeyId=key_id(arn))
    store = env.tmp / "store"

    r = trailcopy(*copy_cmd("kms-e", store), env=env.cli_env, timeout=60)
    assert r.returncode == 1, r.describe()
    rec = r.json
    assert rec["status"] == "FAILED", r.describe()
    fl = failures(trailcopy, env, "kms-e", store)
    assert len(fl) == 1, f"expected one failure entry for the one disabled key, got {len(fl)}: {fl}"
    f = fl[0]
    assert f["errorType"] == "KmsKeyDisabled", fl
    assert arn in f["location"] or arn in f["errorMessage"], f
    assert arn in f["errorMessage"], f
    s = rec["statistics"]
    assert s["failedEntries"] == 1 and s["prefixesCompleted"] == 1, s
    assert_store(store, expectation(env.trail, drop_prefixes=[d1, d2]))

    env.kms.enable_key(KeyId=key_id(arn))
    r2 = trailcopy("retry", "kms-e", "--store", store, "--json", env=env.cli_env, timeout=60)
    assert r2.returncode == 0, r2.describe()
    assert r2.json["status"] == "COMPLETED", r2.describe()
    exp = expectation(env.trail)
    assert stats_diff(r2.json["statistics"], exp) == {}, stats_diff(r2.json["statistics"], exp)
    assert failures(trailcopy, env, "kms-e", store) == []
    assert_store(store, exp)


def test_one_failure_per_blocking_key_disabled_and_pending_deletion(env, trailcopy):
    d1, d2, d3 = env.days()
    disabled, deleting, fine = kms_key(env, "disabled"), kms_key(env, "deleting"), kms_key(env, "fine")
    by_day = {d1: disabled, d2: deleting, d3: fine}
    env.upload(lambda f: sse(by_day[f["dayPrefix"]]))
    env.kms.disable_key(KeyId=key_id(disabled))
    env.kms.schedule_key_deletion(KeyId=key_id(deleting), PendingWindowInDays=7)
    # A second prefix under the disabled key (day 4, in scope: the first hour after END) must not add
    # a second entry for that key.
    extra = h.trail_key(env.trail["files"][0]["key"].split("/")[1], "us-east-1",
                        dt.datetime(2024, 3, 4, 0, 20), "EXTRAEXTRAEXTRA1")
    env.s3.put_object(Bucket=SRC_BUCKET, Key=extra, **sse(disabled),
                      Body=gzip.compress(json.dumps({"Records": []}).encode()))
    store = env.tmp / "store"

    r = trailcopy(*copy_cmd("kms-two", store), env=env.cli_env, timeout=60)
    assert r.returncode == 1, r.describe()
    assert r.json["status"] == "FAILED"
    fl = failures(trailcopy, env, "kms-two", store)
    got = sorted((f["errorType"], f["location"]) for f in fl)
    assert len(fl) == 2, f"expected one entry per blocking key (2), got {len(fl)}: {got}"
    types = {f["errorType"]: f for f in fl}
    assert set(types) == {"KmsKeyDisabled", "KmsKeyPendingDeletion"}, got
    assert disabled in types["KmsKeyDisabled"]["errorMessage"], types
    assert deleting in types["KmsKeyPendingDeletion"]["errorMessage"], types
    assert "CancelKeyDeletion" in types["KmsKeyPendingDeletion"]["errorMessage"], types
    s = r.json["statistics"]
    assert s["prefixesFound"] == 4 and s["prefixesCompleted"] == 1 and s["failedEntries"] == 2, s
    assert_store(store, expectation(env.trail, drop_prefixes=[d1, d2]))


# ----------------------------------------------------------------------------- (f) the store's own key
def test_a_key_in_another_region_is_checked_in_its_own_region(env, trailcopy):
    """KMS keys are regional: DescribeKey of an eu-west-1 key from us-east-1 finds nothing (which
    decides nothing). Asked in the key's region (from its ARN), the disabled key is one entry."""
    d1, d2, d3 = env.days()
    import boto3
    kms_eu = boto3.client("kms", endpoint_url=env.moto.url, region_name="eu-west-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    arn = kms_eu.create_key(Description="trail key in eu-west-1")["KeyMetadata"]["Arn"]
    assert ":eu-west-1:" in arn
    env.upload(lambda f: sse(arn) if f["dayPrefix"] == d2 else {})
    kms_eu.disable_key(KeyId=key_id(arn))
    store = env.tmp / "store-eu-key"
    r = trailcopy(*copy_cmd("kms-eu", store), env=env.cli_env, timeout=60)
    assert r.returncode == 1, r.describe()
    fl = failures(trailcopy, env, "kms-eu", store)
    assert [(f["errorType"], f["location"]) for f in fl] == [("KmsKeyDisabled", arn)], fl
    assert_store(store, expectation(env.trail, drop_prefixes=[d2]))


def test_store_kms_key_encrypts_the_store_objects(env, trailcopy):
    env.upload()
    arn = kms_key(env, "store")
    store = f"s3://{STORE_BUCKET}/eds"
    r = trailcopy(*copy_cmd("kms-f", store, "--store-kms-key", arn), env=env.cli_env, timeout=60)
    assert r.returncode == 0, r.describe()
    assert r.json["status"] == "COMPLETED"
    keys = env.moto.client("s3").list_objects_v2(Bucket=STORE_BUCKET, Prefix="eds/").get("Contents", [])
    keys = [o["Key"] for o in keys]
    parquet = [k for k in keys if k.endswith(".parquet")]
    assert parquet, keys
    for k in parquet:
        head = env.s3.head_object(Bucket=STORE_BUCKET, Key=k)
        assert head.get("ServerSideEncryption") == "aws:kms", (k, head.get("ServerSideEncryption"))
        assert head.get("SSEKMSKeyId") in (arn, key_id(arn)), (k, head.get("SSEKMSKeyId"))
    # "Encrypt the store's new objects" (the flag's help): the copy record's objects too.
    plain = [k for k in keys if env.s3.head_object(Bucket=STORE_BUCKET, Key=k).get("ServerSideEncryption") != "aws:kms"]
    assert plain == [], f"store objects written without SSE-KMS: {plain}"
    local = env.tmp / "dl"  # the events read back: the same rows as a plain copy
    for k in parquet:
        p = local / k[len("eds/"):]
        p.parent.mkdir(parents=True, exist_ok=True)
        env.s3.download_file(STORE_BUCKET, k, str(p))
    assert_store(local, expectation(env.trail))


def test_store_kms_key_with_a_local_store_is_refused(env, trailcopy):
    env.upload()
    r = trailcopy(*copy_cmd("kms-local", env.tmp / "store", "--store-kms-key",
                            "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"),
                  env=env.cli_env, timeout=60)
    assert r.returncode == 2, r.describe()
    assert "--store-kms-key" in r.stderr, r.describe()
    assert not (env.tmp / "store" / "events").exists()


# ----------------------------------------------------------------------------- more storage classes
def test_readable_storage_classes_are_copied_without_restores(env, trailcopy):
    """Issue 4: STANDARD_IA, ONEZONE_IA, REDUCED_REDUNDANCY, GLACIER_IR and INTELLIGENT_TIERING (moto
    has no archive tiers for it: frequent access) are read as they are."""
    readable = ["STANDARD_IA", "ONEZONE_IA", "REDUCED_REDUNDANCY", "GLACIER_IR", "INTELLIGENT_TIERING"]
    keys = sorted(f["key"] for f in env.trail["files"])
    classes = {k: readable[i % len(readable)] for i, k in enumerate(keys[1:7])}  # 6 files, every class
    env.upload(lambda f: {"StorageClass": classes[f["key"]]} if f["key"] in classes else {})
    store = env.tmp / "store"
    r = trailcopy(*copy_cmd("classes", store), env=env.cli_env, timeout=60)
    assert r.returncode == 0, r.describe()
    s = r.json["statistics"]
    exp = expectation(env.trail)
    assert stats_diff(s, exp) == {}, f"(got, expected): {stats_diff(s, exp)}"
    assert s["restoresStarted"] == 0 and s["restoresPending"] == 0, s
    assert_store(store, exp)
    for k in classes:
        assert "Restore" not in env.s3.head_object(Bucket=SRC_BUCKET, Key=k), k


def test_expedited_restore_is_refused_for_deep_archive_only(env, trailcopy):
    """Issue 4: Deep Archive has no Expedited tier: say so (the GLACIER object is restored Expedited)."""
    d1, d2, d3 = env.days()
    glacier, deep = env.files_of(d1)[1]["key"], env.files_of(d2)[1]["key"]
    classes = {glacier: "GLACIER", deep: "DEEP_ARCHIVE"}
    env.upload(lambda f: {"StorageClass": classes[f["key"]]} if f["key"] in classes else {})
    store = env.tmp / "store"
    r = trailcopy(*copy_cmd("expedited", store, "--restore", "expedited"), env=env.cli_env, timeout=60)
    assert r.returncode == 1, r.describe()
    assert r.json["status"] == "FAILED"
    fl = failures(trailcopy, env, "expedited", store)
    assert [(f["location"], f["errorType"]) for f in fl] == [(f"s3://{SRC_BUCKET}/{deep}", "RestoreTierInvalid")], fl
    assert "Expedited" in fl[0]["errorMessage"] and "DEEP_ARCHIVE" in fl[0]["errorMessage"], fl
    s = r.json["statistics"]
    assert s["restoresStarted"] == 1 and s["restoresPending"] == 0, s
    exp = expectation(env.trail, fatal={deep: "RestoreTierInvalid"})
    assert stats_diff(s, exp) == {}, f"(got, expected): {stats_diff(s, exp)}"
    assert_store(store, exp)
    assert "Restore" in env.s3.head_object(Bucket=SRC_BUCKET, Key=glacier)
    assert "Restore" not in env.s3.head_object(Bucket=SRC_BUCKET, Key=deep)
