"""`verifyDigests` on the real state machine (moto executes the ASL; the real Lambda binaries run under
cargo lambda watch, the session's lambda_env from test_statemachine.py) gives what the local CLI gives
on the same S3 source: the same statistics and failure entries, for a trail with an altered log file,
a digest removed mid-chain and a deleted listed log file (test_digests.tamper), with and without
`requireVerified`. The digests carry their signatures in S3 object metadata, as CloudTrail writes
them. moto has no CloudTrail ListPublicKeys, so the keys come in the execution input
(`digestPublicKeys`). Every S3 request the functions make is checked against template.yaml's IAM.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import aws_requests  # noqa: E402
import gen_digests  # noqa: E402
import sm_harness as h  # noqa: E402
from test_digests import END, EVENT_STATS, START, TWO_DAYS, VERIFY_STATS, tamper  # noqa: E402
from test_sfn_cli import cli_env  # noqa: E402
from test_sm_aws_rules import check_requests_against_iam, expanded_roles  # noqa: E402
from test_statemachine import (  # noqa: E402,F401  (lambda_env and real are fixtures)
    SOURCE, SOURCE_BUCKET, STORE, copy_id_of, diagnose, lambda_env, needs_lambdas, real, store_json)

pytestmark = needs_lambdas

COMPARED = VERIFY_STATS + EVENT_STATS + ("filesCompleted", "filesFailed", "filesRejected", "eventsUnverified",
                                         "failedEntries")


@pytest.fixture(scope="module")
def tampered(make_trail, tmp_path_factory):
    m = make_trail("sm-digests", **TWO_DAYS)
    d = gen_digests.generate(m["root"], trail_name="management-events")
    keys = tmp_path_factory.mktemp("sm-digest-keys") / "keys.json"
    gen_digests.write_keys(d, str(keys))
    digests = d.manifest()
    done = tamper(m, digests)
    return m, digests, str(keys), done


def entries(fs) -> list:
    return sorted((f["errorType"], f["location"]) for f in fs)


def run_sm(moto, sm, logs, keys, **extra) -> tuple[dict, list]:
    with open(keys) as f:
        public = json.load(f)
    d = h.run_execution(moto, sm, {"source": SOURCE, "store": STORE, "start": START, "end": END,
                                   "verifyDigests": True, "digestPublicKeys": [public], **extra}, timeout=900)
    # Finished with failure entries: the execution fails with CopyFailed, the record says FAILED.
    assert d["status"] == "FAILED" and d["error"] == "CopyFailed", diagnose(d, moto, logs)
    copy_id = copy_id_of(moto)
    s3 = moto.client("s3")
    return store_json(s3, copy_id, "record.json"), store_json(s3, copy_id, "failures.json")


def run_local(trailcopy, moto, store, keys, *extra) -> tuple[dict, list]:
    r = trailcopy("copy", "--source", SOURCE, "--store", store, "--start", START, "--end", END,
                  "--verify-digests", "--digest-public-keys", keys, "--json", *extra, env=cli_env(moto), timeout=300)
    assert r.returncode == 1, r.describe()
    f = trailcopy("failures", r.json["copyId"], "--store", store, "--json")
    assert f.returncode == 0, f.describe()
    return r.json, f.json["failures"]


def test_lambdas_verify_digests_as_the_local_cli_does(real, trailcopy, tampered, tmp_path):
    moto, s3, sm, logs = real
    m, digests, keys, done = tampered
    gen_digests.upload(s3, SOURCE_BUCKET, "", m["root"], digests)
    record, failures = run_sm(moto, sm, logs, keys)
    # Every request the functions made (digest listings and reads included) is allowed by the template.
    seen = check_requests_against_iam(moto, expanded_roles("", ""))
    assert seen[("copy", "s3:ListBucket")] > 0 and seen[("copy", "s3:GetObject")] > 0, sorted(seen)
    with moto.proxy.lock:
        copy_lists = [r["path"] for r in moto.proxy.records
                      if "list-type=" in r["path"] and aws_requests.function_of(r) == "copy"]
    # Copy lists only digest day folders (the items' log files were listed once, at planning).
    assert copy_lists and all("CloudTrail-Digest%2F" in p or "CloudTrail-Digest/" in p for p in copy_lists), \
        [p[:160] for p in copy_lists]

    local, local_failures = run_local(trailcopy, moto, tmp_path / "local", keys)
    s, ls = record["statistics"], local["statistics"]
    assert s["workItemsFound"] == 2
    assert {k: s[k] for k in COMPARED} == {k: ls[k] for k in COMPARED}
    assert entries(failures) == entries(local_failures)
    by_type = {t: k for t, k in entries(failures)}
    assert by_type["DigestMismatch"] == f"s3://{SOURCE_BUCKET}/{done['altered']}"
    assert by_type["DigestChainBroken"] == f"s3://{SOURCE_BUCKET}/{done['removedDigest']}"
    assert by_type["LogFileMissing"] == f"s3://{SOURCE_BUCKET}/{done['deleted']}"
    # With metadata every remaining digest verifies, the newest too; each counted once over both items.
    assert s["digestsVerified"] == len(digests["digests"]) - 1 and s["digestsFailed"] == 0
    assert s["filesNotInDigest"] == len(done["removedDigestFiles"]) and s["filesMismatched"] == 1
    assert s["filesRejected"] == 0 and s["filesCompleted"] == s["filesFound"] - s["filesSkipped"]
    for r in (record, local):
        assert r["verification"]["verified"] is False
        assert r["verification"]["keyFingerprints"] == digests["fingerprints"]


def test_lambdas_require_verified_skips_what_the_local_cli_skips(real, trailcopy, tampered, tmp_path):
    moto, s3, sm, logs = real
    m, digests, keys, done = tampered
    gen_digests.upload(s3, SOURCE_BUCKET, "", m["root"], digests)
    record, failures = run_sm(moto, sm, logs, keys, requireVerified=True)
    local, local_failures = run_local(trailcopy, moto, tmp_path / "local", keys, "--require-verified")
    s, ls = record["statistics"], local["statistics"]
    assert {k: s[k] for k in COMPARED} == {k: ls[k] for k in COMPARED}
    assert entries(failures) == entries(local_failures)
    assert s["filesRejected"] == 1 + len(done["removedDigestFiles"]) and s["eventsUnverified"] > 0
    assert s["eventsCompleted"] + s["eventsUnverified"] + s["eventsOutOfRange"] + s["eventsDuplicate"] + \
        s["eventsInvalid"] == s["eventsRead"]
    assert record["verification"]["requireVerified"] is True
