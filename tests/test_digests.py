"""End-to-end: `trailcopy verify` checks a trail's log files against CloudTrail's signed digests.

Trails from tests/gen_trail.py get digest files from tests/gen_digests.py (signed by a test RSA key
per region; the public keys written as `aws cloudtrail list-public-keys` prints them). Every case
is cross-checked, file by file, against gen_digests.reference_validate, aws-cli's validate-logs
algorithm re-implemented from its documented string to sign
(https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-log-file-custom-validation.html).

A local folder keeps no object metadata, so a digest's signature is the previousDigestSignature of
the digest after it (the user guide's offline method); on S3 it is the object's
x-amz-meta-signature, which the S3 cases set from the generator's manifest.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil

import pytest

import gen_digests
from conftest import duck, source_dir

# Wider than the fixtures (one day, 2024-03-01): every digest and log file is in range.
START, END = "2024-02-29T00:00:00Z", "2024-03-03T00:00:00Z"
T0, T1 = (dt.datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (START, END))
TINY = dict(seed=11, accounts=1, regions="us-east-1", days=1, files_per_day=6, events_per_file=3)
ORG = dict(seed=12, accounts=2, regions="us-east-1,eu-west-1", days=1, files_per_day=3, events_per_file=2,
           org_id="o-abc123defg", prefix="corp/trails", digest=True)


@pytest.fixture(scope="module")
def signed(make_trail, tmp_path_factory):
    """signed(name, **gen_trail options) -> (trail folder, digest manifest, public-keys file); cached
    per name, so a case copies a pristine trail (see `case`)."""
    made = {}

    def make(name, **opts):
        if name not in made:
            m = make_trail(name, **opts)
            d = gen_digests.generate(m["root"], trail_name="management-events")
            keys = tmp_path_factory.mktemp(name + "-keys") / "keys.json"
            gen_digests.write_keys(d, str(keys))
            made[name] = (m, d.manifest(), str(keys))
        return made[name]

    return make


def case(signed, tmp_path, name="tiny", **opts):
    """A private copy of the signed trail: (manifest with root pointing at the copy, digests, keys)."""
    m, digests, keys = signed(name, **(opts or TINY))
    root = tmp_path / "trail"
    shutil.copytree(m["root"], root)
    return {**m, "root": str(root)}, digests, keys


def awslogs(location: str) -> str:
    return location[location.index("AWSLogs/"):]


def verify(trailcopy, source, keys, *extra):
    r = trailcopy("verify", "--source", source, "--start", START, "--end", END, "--digest-public-keys", keys,
                  "--json", *extra)
    assert r.returncode in (0, 1), r.describe()
    rep = r.json
    assert (r.returncode == 0) == (not rep["failures"]), r.describe()
    for f in rep["failures"]:
        assert f["status"] == "FAILED" and f["errorMessage"] and f["location"], f
    return rep


def failures(rep, error_type=None) -> list:
    return sorted(awslogs(f["location"]) for f in rep["failures"] if error_type in (None, f["errorType"]))


def log_outcomes(rep) -> dict:
    """Per log file (key from AWSLogs/), trailcopy's outcome in aws-cli's words: valid, INVALID: hash
    value doesn't match, missing; files no authentic digest lists are absent (aws-cli says nothing)."""
    out = {}
    for f in rep["files"]:
        word = {"verified": "valid", "mismatch": "INVALID: hash value doesn't match"}.get(f["result"])
        if word:
            out[awslogs(f["location"])] = word
    for key in failures(rep, "LogFileMissing"):
        out[key] = "missing"
    return out


def cross_check(rep, m, digests, keys, signatures=None):
    """trailcopy agrees with the reference on every log file and on which digests are valid."""
    with open(keys) as f:
        public = json.load(f)
    ref = gen_digests.reference_validate(m["root"], public, signatures, T0, T1)
    ref_logs = {gen_digests._awslogs(k): v for k, v in ref["logs"].items()}
    assert log_outcomes(rep) == ref_logs
    ours_valid = sorted(awslogs(d["location"]) for d in rep["digests"] if d["verified"])
    ref_valid = sorted(gen_digests._awslogs(k) for k, v in ref["digests"].items() if v == "valid")
    assert ours_valid == ref_valid
    ref_missing = sorted(gen_digests._awslogs(k) for k, v in ref["digests"].items() if v == "missing")
    assert failures(rep, "DigestChainBroken") == ref_missing
    return ref


def listing_digests(digests) -> list:
    """Digests listing log files, oldest first, each with the digest before it."""
    ds = digests["digests"]
    return [(d, ds[i - 1] if i else None) for i, d in enumerate(ds) if d["logFiles"]]


def src(m) -> str:
    return source_dir(m)


# ============================================================================ cases
def test_all_files_verified(trailcopy, signed, tmp_path):
    m, digests, keys = case(signed, tmp_path)
    rep = verify(trailcopy, src(m), keys)
    listed = sum(len(d["logFiles"]) for d in digests["digests"])
    s = rep["statistics"]
    assert listed == s["filesFound"] == s["filesVerified"] == 6 and rep["failures"] == []
    assert s["filesNotInDigest"] == s["filesUnverified"] == s["filesMismatched"] == s["logFilesMissing"] == 0
    # Offline, the newest digest has no later one to repeat its signature; it lists no file.
    assert s["digestsVerified"] == len(digests["digests"]) - 1
    assert rep["keyFingerprints"] == digests["fingerprints"]
    cross_check(rep, m, digests, keys)


def test_log_file_altered_after_signing_is_a_digest_mismatch(trailcopy, signed, tmp_path):
    m, digests, keys = case(signed, tmp_path)
    digest, _ = listing_digests(digests)[1]
    victim = digest["logFiles"][0]
    gen_digests.alter_log_file(m["root"], victim)
    rep = verify(trailcopy, src(m), keys)
    assert failures(rep) == [awslogs(victim)]
    assert rep["failures"][0]["errorType"] == "DigestMismatch"
    assert awslogs(digest["key"]) in rep["failures"][0]["errorMessage"]
    s = rep["statistics"]
    assert (s["filesMismatched"], s["filesVerified"]) == (1, 5)
    ref = cross_check(rep, m, digests, keys)
    assert ref["logs"][victim] == "INVALID: hash value doesn't match"


def test_records_appended_as_a_second_gzip_member_are_caught(trailcopy, signed, tmp_path):
    """aws-cli hashes only a file's first gzip member; trailcopy copies the events of every member,
    so it hashes them all: events smuggled in after the signed member are a DigestMismatch. The one
    place trailcopy and the reference disagree, on purpose."""
    m, digests, keys = case(signed, tmp_path)
    digest, _ = listing_digests(digests)[0]
    victim = digest["logFiles"][0]
    gen_digests.append_gzip_member(m["root"], victim, [{"eventVersion": "1.08", "eventName": "Smuggled"}])
    rep = verify(trailcopy, src(m), keys)
    assert [(f["errorType"], awslogs(f["location"])) for f in rep["failures"]] == [("DigestMismatch", awslogs(victim))]
    with open(keys) as f:
        ref = gen_digests.reference_validate(m["root"], json.load(f), None, T0, T1)
    assert ref["logs"][victim] == "valid"


def test_altered_digest_fails_its_signature(trailcopy, signed, tmp_path):
    m, digests, keys = case(signed, tmp_path)
    digest, _ = listing_digests(digests)[1]
    gen_digests.alter_digest(m["root"], digest["key"])
    rep = verify(trailcopy, src(m), keys)
    assert [(f["errorType"], awslogs(f["location"])) for f in rep["failures"]] == \
        [("DigestSignatureInvalid", awslogs(digest["key"]))]
    s = rep["statistics"]
    n = len(digest["logFiles"])
    # Its files are listed only by a digest that failed: not verified, and not called altered.
    assert (s["filesUnverified"], s["filesVerified"], s["filesMismatched"]) == (n, 6 - n, 0)
    assert s["digestsFailed"] == 1
    # --require-verified names each of them too.
    strict = verify(trailcopy, src(m), keys, "--require-verified")
    assert failures(strict, "FileNotVerified") == sorted(awslogs(k) for k in digest["logFiles"])
    ref = cross_check(rep, m, digests, keys)
    assert ref["digests"][digest["key"]].startswith("INVALID: signature verification failed")


def test_digest_removed_mid_chain_breaks_the_chain(trailcopy, signed, tmp_path):
    m, digests, keys = case(signed, tmp_path)
    digest, before = listing_digests(digests)[2]
    gen_digests.remove(m["root"], digest["key"])
    rep = verify(trailcopy, src(m), keys)
    assert failures(rep, "DigestChainBroken") == [awslogs(digest["key"])]
    s = rep["statistics"]
    n = len(digest["logFiles"])
    assert s["filesNotInDigest"] == n
    # Offline, the digest before the removed one lost the only copy of its signature.
    lost = len(before["logFiles"])
    assert s["filesUnverified"] == lost and s["filesVerified"] == 6 - n - lost
    if lost:
        assert failures(rep, "DigestSignatureMissing") == [awslogs(before["key"])]
    ref = cross_check(rep, m, digests, keys)
    assert ref["digests"][digest["key"]] == "missing"


def test_listed_log_file_deleted_is_log_file_missing(trailcopy, signed, tmp_path):
    m, digests, keys = case(signed, tmp_path)
    digest, _ = listing_digests(digests)[-1]
    victim = digest["logFiles"][-1]
    gen_digests.remove(m["root"], victim)
    rep = verify(trailcopy, src(m), keys)
    assert [(f["errorType"], awslogs(f["location"])) for f in rep["failures"]] == \
        [("LogFileMissing", awslogs(victim))]
    s = rep["statistics"]
    assert (s["logFilesMissing"], s["filesFound"], s["filesVerified"]) == (1, 5, 5)
    ref = cross_check(rep, m, digests, keys)
    assert ref["logs"][victim] == "missing"


def test_organization_trail_all_accounts_and_regions(trailcopy, signed, tmp_path):
    m, digests, keys = case(signed, tmp_path, "org", **ORG)
    chains = {(d["key"].split("/CloudTrail-Digest/")[0], d["region"]) for d in digests["digests"]}
    assert len(chains) == 4, chains  # 2 accounts x 2 regions under AWSLogs/o-abc123defg/
    assert len(digests["fingerprints"]) == 2  # a key per region
    rep = verify(trailcopy, src(m), keys)
    listed = sum(len(d["logFiles"]) for d in digests["digests"])
    s = rep["statistics"]
    assert rep["failures"] == [] and s["filesFound"] == s["filesVerified"] == listed == 12
    assert s["digestsVerified"] == len(digests["digests"]) - len(chains)
    assert rep["keyFingerprints"] == digests["fingerprints"]
    cross_check(rep, m, digests, keys)
    # Narrowed to one account: only its files and digests.
    acct = sorted(chains)[0][0]
    one = verify(trailcopy, os.path.join(m["root"], acct), keys)
    assert one["failures"] == [] and all(f"/{acct}/" in f["location"] for f in one["files"] + one["digests"])
    assert one["statistics"]["filesVerified"] == sum(len(d["logFiles"]) for d in digests["digests"]
                                                     if d["key"].startswith(acct + "/"))
    # Narrowed to one account-region, and to one day of it (an s3:// prefix narrows the same way).
    region = os.path.join(m["root"], acct, "CloudTrail", "eu-west-1")
    day = os.path.join(region, "2024", "03", "01")
    for narrowed in (region, day):
        r = verify(trailcopy, narrowed, keys)
        assert r["failures"] == [] and r["files"]
        assert all(f"{acct}/CloudTrail/eu-west-1/2024/03/01/" in f["location"] for f in r["files"])
        assert r["statistics"]["filesVerified"] == sum(
            len(d["logFiles"]) for d in digests["digests"] if d["key"].startswith(acct + "/") and d["region"] == "eu-west-1")


def test_verify_finds_the_trail_below_its_source_and_refuses_two(trailcopy, signed, tmp_path):
    """A folder above the trail's key prefix (corp/trails/AWSLogs/) verifies that trail; with a
    second trail beside it, verify names both and asks for one at a time."""
    m, digests, keys = case(signed, tmp_path, "org", **ORG)
    rep = verify(trailcopy, m["root"], keys)
    assert rep["failures"] == [] and rep["statistics"]["filesVerified"] == 12
    shutil.copytree(os.path.join(src(m), "AWSLogs"), os.path.join(m["root"], "other", "AWSLogs"))
    r = trailcopy("verify", "--source", m["root"], "--start", START, "--end", END, "--digest-public-keys", keys)
    assert r.returncode == 2 and "holds 2 trails" in r.stderr and "corp/trails/AWSLogs" in r.stderr, r.describe()


def test_local_folder_without_keys_is_refused(trailcopy, signed, tmp_path):
    m, _, _ = case(signed, tmp_path)
    r = trailcopy("verify", "--source", src(m), "--start", START, "--end", END)
    assert r.returncode == 2 and "--digest-public-keys" in r.stderr, r.describe()
    bad = tmp_path / "keys.json"
    bad.write_text('{"PublicKeyList": [{"Value": "AAAA", "Fingerprint": "00"}]}')
    r = trailcopy("verify", "--source", src(m), "--start", START, "--end", END, "--digest-public-keys", bad)
    assert r.returncode == 2 and "PublicKeyList[0]" in r.stderr and "fingerprint" in r.stderr, r.describe()


# ============================================================================ S3 (signatures in object metadata)
def upload_signed(moto_s3, bucket, m, digests):
    s3 = moto_s3.client()
    s3.create_bucket(Bucket=bucket)
    gen_digests.upload(s3, bucket, "mirror/", m["root"], digests)
    return f"s3://{bucket}/mirror"


def test_s3_source_verifies_every_digest_from_its_metadata(trailcopy, signed, tmp_path, moto_s3):
    m, digests, keys = case(signed, tmp_path)
    digest, before = listing_digests(digests)[2]
    gen_digests.remove(m["root"], digest["key"])
    source = upload_signed(moto_s3, "digests-removed", m, digests)
    r = trailcopy("verify", "--source", source, "--start", START, "--end", END, "--digest-public-keys", keys,
                  "--json", env=moto_s3.env)
    assert r.returncode == 1, r.describe()
    rep = r.json
    # With metadata every remaining digest verifies (the newest too); the removed one breaks the chain
    # and only its own files are in no digest.
    assert [(f["errorType"], awslogs(f["location"])) for f in rep["failures"]] == \
        [("DigestChainBroken", awslogs(digest["key"]))]
    s = rep["statistics"]
    n = len(digest["logFiles"])
    assert (s["filesNotInDigest"], s["filesVerified"], s["filesUnverified"]) == (n, 6 - n, 0)
    assert s["digestsVerified"] == len(digests["digests"]) - 1
    assert all(f["location"].startswith("s3://digests-removed/mirror/AWSLogs/") for f in rep["files"])
    cross_check(rep, m, digests, keys, signatures={d["key"]: d["signature"] for d in digests["digests"]})


def test_s3_forged_signature_metadata_fails_that_digest_not_the_next(trailcopy, signed, tmp_path, moto_s3):
    """A mid-chain digest whose x-amz-meta-signature is another digest's signature: aws-cli calls
    that digest invalid. The next digest still repeats its true signature, but that must not
    rescue it, and the next (authentic) digest is not blamed for a broken chain."""
    m, digests, keys = case(signed, tmp_path)
    (digest, _), (other, _) = listing_digests(digests)[1], listing_digests(digests)[0]
    forged = {**digests, "digests": [{**d, "signature": other["signature"]} if d["key"] == digest["key"] else d
                                     for d in digests["digests"]]}
    source = upload_signed(moto_s3, "signature-forged", m, forged)
    r = trailcopy("verify", "--source", source, "--start", START, "--end", END, "--digest-public-keys", keys,
                  "--json", env=moto_s3.env)
    assert r.returncode == 1, r.describe()
    rep = r.json
    assert [(f["errorType"], awslogs(f["location"])) for f in rep["failures"]] == \
        [("DigestSignatureInvalid", awslogs(digest["key"]))]
    s = rep["statistics"]
    n = len(digest["logFiles"])
    assert (s["filesUnverified"], s["filesVerified"], s["digestsFailed"]) == (n, 6 - n, 1)
    assert s["digestsVerified"] == len(digests["digests"]) - 1
    ref = cross_check(rep, m, digests, keys, signatures={d["key"]: d["signature"] for d in forged["digests"]})
    assert ref["digests"][digest["key"]].startswith("INVALID: signature verification failed")


# ============================================================================ copy --verify-digests
# Two days, so the copy has two work items: the digest that ends early on day 2 lists day 1's last
# files too, and both items read it; it must count once.
TWO_DAYS = dict(seed=13, accounts=1, regions="us-east-1", days=2, files_per_day=4, events_per_file=3)
VERIFY_STATS = ("filesVerified", "filesNotInDigest", "filesUnverified", "filesMismatched", "logFilesMissing",
                "digestsVerified", "digestsFailed")
EVENT_STATS = ("eventsRead", "eventsCompleted", "eventsOutOfRange", "eventsInvalid", "eventsDuplicate")


def tamper(m, digests) -> dict:
    """One log file altered after signing, a digest removed mid-chain, a listed log file deleted.
    Returns what was done (keys from AWSLogs/)."""
    listing = listing_digests(digests)
    altered = listing[0][0]["logFiles"][0]
    removed = listing[2][0]
    deleted = listing[-1][0]["logFiles"][-1]
    assert deleted != altered and deleted not in removed["logFiles"] and altered not in removed["logFiles"]
    gen_digests.alter_log_file(m["root"], altered)
    gen_digests.remove(m["root"], removed["key"])
    gen_digests.remove(m["root"], deleted)
    return {"altered": altered, "removedDigest": removed["key"], "removedDigestFiles": removed["logFiles"],
            "deleted": deleted}


def copy_verified(trailcopy, source, store, keys, *extra, env=None, expect_rc=(0, 1)):
    r = trailcopy("copy", "--source", source, "--store", store, "--start", START, "--end", END,
                  "--verify-digests", "--digest-public-keys", keys, "--json", *extra, env=env)
    assert r.returncode in expect_rc, r.describe()
    return r.json


def store_failures(trailcopy, store, copy_id, env=None) -> list:
    r = trailcopy("failures", copy_id, "--store", store, "--json", env=env)
    assert r.returncode == 0, r.describe()
    return r.json["failures"]


def entries(fs) -> list:
    return sorted((f["errorType"], awslogs(f["location"])) for f in fs)


def test_copy_verify_digests_agrees_with_verify_and_copies_every_event(trailcopy, signed, tmp_path):
    m, digests, keys = case(signed, tmp_path, "two-days", **TWO_DAYS)
    done = tamper(m, digests)
    ref = verify(trailcopy, src(m), keys)
    rec = copy_verified(trailcopy, src(m), tmp_path / "store", keys)
    assert rec["statistics"]["workItemsFound"] == 2, rec["statistics"]
    s = rec["statistics"]
    assert {k: s[k] for k in VERIFY_STATS} == {k: ref["statistics"][k] for k in VERIFY_STATS}
    assert s["filesMismatched"] == 1 and s["logFilesMissing"] == 1 and s["filesNotInDigest"] == \
        len(done["removedDigestFiles"]) and s["filesVerified"] > 0
    got = store_failures(trailcopy, tmp_path / "store", rec["copyId"])
    assert entries(got) == entries(ref["failures"])
    assert ("DigestMismatch", done["altered"]) in entries(got)
    assert ("DigestChainBroken", done["removedDigest"]) in entries(got)
    assert ("LogFileMissing", done["deleted"]) in entries(got)
    assert rec["status"] == "FAILED" and s["failedEntries"] == len(got)
    # The record: verified or not, and with which keys.
    v = rec["verification"]
    assert v["verified"] is False and v["requireVerified"] is False and v["keyFingerprints"] == digests["fingerprints"]
    assert rec["request"]["verification"]["publicKeys"][0]["Fingerprint"] == digests["fingerprints"][0]
    # Verification changes no event count: every file is copied, the altered one too.
    plain = trailcopy("copy", "--source", src(m), "--store", tmp_path / "plain", "--start", START, "--end", END,
                      "--json")
    assert plain.returncode == 0, plain.describe()
    p = plain.json["statistics"]
    assert {k: s[k] for k in EVENT_STATS} == {k: p[k] for k in EVENT_STATS}
    assert (s["filesCompleted"], s["filesFailed"], s["filesRejected"]) == (p["filesCompleted"], 0, 0)
    assert "verification" not in plain.json and p["filesVerified"] == p["digestsVerified"] == 0


def test_copy_of_an_intact_trail_is_verified(trailcopy, signed, tmp_path):
    m, digests, keys = case(signed, tmp_path, "two-days", **TWO_DAYS)
    rec = copy_verified(trailcopy, src(m), tmp_path / "store", keys, expect_rc=(0,))
    s = rec["statistics"]
    ref = verify(trailcopy, src(m), keys)
    assert {k: s[k] for k in VERIFY_STATS} == {k: ref["statistics"][k] for k in VERIFY_STATS}
    assert s["filesVerified"] == s["filesCompleted"] == 8 and s["failedEntries"] == 0
    # Offline, the newest digest has no later one to repeat its signature (it lists no file).
    assert s["digestsVerified"] == len(digests["digests"]) - 1
    assert rec["status"] == "COMPLETED" and rec["verification"]["verified"] is True


def test_require_verified_skips_and_lists_every_file_not_verified(trailcopy, signed, tmp_path):
    m, digests, keys = case(signed, tmp_path, "two-days", **TWO_DAYS)
    done = tamper(m, digests)
    loose = copy_verified(trailcopy, src(m), tmp_path / "loose", keys)
    strict = copy_verified(trailcopy, src(m), tmp_path / "strict", keys, "--require-verified")
    ls, ss = loose["statistics"], strict["statistics"]
    assert {k: ss[k] for k in VERIFY_STATS} == {k: ls[k] for k in VERIFY_STATS}
    rejected = sorted([done["altered"], *done["removedDigestFiles"]])
    assert ss["filesRejected"] == len(rejected) == ss["filesMismatched"] + ss["filesNotInDigest"]
    assert ss["filesCompleted"] == ls["filesCompleted"] - len(rejected) and ss["filesFailed"] == len(rejected)
    # Every event read is accounted for: the rejected files' events are counted, not copied.
    assert ss["eventsRead"] == ls["eventsRead"]
    assert ss["eventsCompleted"] + ss["eventsUnverified"] + ss["eventsOutOfRange"] + ss["eventsDuplicate"] + \
        ss["eventsInvalid"] == ss["eventsRead"]
    assert ss["eventsUnverified"] == ls["eventsCompleted"] - ss["eventsCompleted"] > 0
    fs = entries(store_failures(trailcopy, tmp_path / "strict", strict["copyId"]))
    assert [k for t, k in fs if t in ("DigestMismatch", "FileNotInDigest")] == rejected
    assert all("not copied" in f["errorMessage"] for f in store_failures(trailcopy, tmp_path / "strict",
                                                                            strict["copyId"])
               if f["errorType"] in ("DigestMismatch", "FileNotInDigest"))
    # The store holds no event of a rejected file.
    con, t = duck(tmp_path / "strict")
    stored = {awslogs(r[0]) for r in con.execute(f"SELECT DISTINCT sourceLogFile FROM {t}").fetchall()}
    assert stored and not stored & set(rejected)
    assert con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] == ss["eventsCompleted"]
    assert strict["verification"]["requireVerified"] is True


def test_a_verifying_copy_that_fails_midway_resumes_without_counting_twice(trailcopy, signed, tmp_path):
    m, digests, keys = case(signed, tmp_path, "two-days", **TWO_DAYS)
    tamper(m, digests)
    clean = copy_verified(trailcopy, src(m), tmp_path / "clean", keys)
    store = tmp_path / "store"
    fail = {"TRAILCOPY_BATCH_BYTES": "1500", "TRAILCOPY_FAULT_FAIL_AFTER_BATCHES": "2"}
    first = copy_verified(trailcopy, src(m), store, keys, "--copy-id", "v1", "--concurrency", "1", env=fail,
                          expect_rc=(1,))
    assert first["statistics"]["workItemsCompleted"] < 2, first["statistics"]
    r = trailcopy("retry", "v1", "--store", store, "--json", env={"TRAILCOPY_BATCH_BYTES": "1500"})
    assert r.returncode == 1, r.describe()
    cs, rs = clean["statistics"], r.json["statistics"]
    keys_compared = VERIFY_STATS + EVENT_STATS + ("filesCompleted", "filesFailed", "failedEntries")
    assert {k: rs[k] for k in keys_compared} == {k: cs[k] for k in keys_compared}
    assert entries(store_failures(trailcopy, store, "v1")) == \
        entries(store_failures(trailcopy, tmp_path / "clean", clean["copyId"]))


def test_verify_digests_needs_keys_for_a_local_folder_and_keys_need_verification(trailcopy, signed, tmp_path):
    m, _, keys = case(signed, tmp_path)
    r = trailcopy("copy", "--source", src(m), "--store", tmp_path / "s", "--start", START, "--end", END,
                  "--verify-digests")
    assert r.returncode == 2 and "--digest-public-keys" in r.stderr, r.describe()
    r = trailcopy("copy", "--source", src(m), "--store", tmp_path / "s", "--start", START, "--end", END,
                  "--digest-public-keys", keys)
    assert r.returncode == 2 and "--verify-digests" in r.stderr, r.describe()
    assert not (tmp_path / "s" / "copies").exists() or not os.listdir(tmp_path / "s" / "copies")


def test_copy_of_an_organization_trail_verifies_every_account_and_region(trailcopy, signed, tmp_path):
    m, digests, keys = case(signed, tmp_path, "org", **ORG)
    victim = listing_digests(digests)[-1][0]["logFiles"][0]
    gen_digests.alter_log_file(m["root"], victim)
    ref = verify(trailcopy, src(m), keys)
    rec = copy_verified(trailcopy, src(m), tmp_path / "store", keys)
    s = rec["statistics"]
    assert {k: s[k] for k in VERIFY_STATS} == {k: ref["statistics"][k] for k in VERIFY_STATS}
    assert s["filesVerified"] == 11 and s["filesMismatched"] == 1
    assert entries(store_failures(trailcopy, tmp_path / "store", rec["copyId"])) == \
        entries(ref["failures"]) == [("DigestMismatch", awslogs(victim))]
    assert rec["verification"]["keyFingerprints"] == digests["fingerprints"]  # a key per region
