#!/usr/bin/env python3
"""CloudTrail digest files for a generated trail, signed by test RSA keys, and aws-cli's
validation algorithm re-implemented to cross-check trailcopy.

Given a trail folder (tests/gen_trail.py), writes next to each `CloudTrail/` folder the
`CloudTrail-Digest/` folder CloudTrail would have delivered with log file validation on
(https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-log-file-validation-digest-file-structure.html):

    [PREFIX/]AWSLogs/[o-org/]<acct>/CloudTrail-Digest/<region>/YYYY/MM/DD/
        <acct>_CloudTrail-Digest_<region>_<trail>_<home-region>_YYYYMMDDTHHmmssZ.json.gz

one digest per account-region each hour (also hours without log files, as CloudTrail does),
from the hour of the first log file to one hour past the last, chained by
previousDigestS3Object/HashValue/Signature (the first one a starting digest with null
previous fields). Each log file is "delivered" a few seconds after its name timestamp and
listed, with the SHA-256 of its inflated bytes, by the digest whose hour holds that delivery.
Files that do not inflate whole (the generator's damaged-file defects) are not listed.

Each region gets its own key (CloudTrail signs with a key per region); the public keys are
written as `aws cloudtrail list-public-keys` (CLI v2) prints them. The signatures, which S3
keeps in each digest object's `x-amz-meta-signature` metadata, go to the manifest (a local
folder has no object metadata): tests that upload the trail to S3 set them from there.

Signing follows the user guide's custom validation page
(https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-log-file-custom-validation.html):
RSA PKCS#1 v1.5 with SHA-256 over
    digestEndTime \\n digestS3Bucket/digestS3Object \\n hex(sha256(inflated digest)) \\n previousDigestSignature|null

`reference_validate` is aws-cli's `validate-logs` traversal (awscli/customizations/cloudtrail/
validation.py) over a folder: newest digest first, following previousDigestS3Object, a missing
digest or an invalid one reported and skipped to the next older one, log files inflated with
zlib (first gzip member, as aws-cli does) and hashed.

The README's sample trail (examples/sample-trail, log files from tests/gen_trail.py) carries
digests made, exactly, by
    python3 tests/gen_digests.py --trail examples/sample-trail --key-seed trailcopy-sample-trail \\
        --keys-out examples/sample-trail-public-keys.json
over its shipped log files (which it does not change): hourly digests per account-region, signed
with a 2048-bit RSA key per region derived from the seed text (`seeded_private_key`; the private
keys are not shipped: this command rebuilds them), the two public keys in one
`list-public-keys`-style file (`--digest-public-keys` merges keys, fingerprints tell them apart).
A local folder keeps no object metadata, so each digest's signature is the next digest's
previousDigestSignature (trailcopy verify's offline rule); the newest digest of each chain lists
no file. tests/test_verify_demo.py checks that this command gives the shipped bytes.

Examples:
    python3 tests/gen_digests.py --trail /tmp/trail --manifest /tmp/digests.json --keys-out /tmp/keys.json
    python3 tests/gen_digests.py --write-vector tests/data/digest-vector
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import gzip
import hashlib
import json
import os
import random
import re
import shutil
import sys
import zlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

LOG_RE = re.compile(r"^(?P<root>(?:.*/)?AWSLogs/(?:o-[a-z0-9]+/)?(?P<acct>\d{12})/)CloudTrail/(?P<region>[^/]+)/"
                    r"\d{4}/\d{2}/\d{2}/(?P<name>[^/]+)$")
NAME_TS_RE = re.compile(r"(?<!\d)(\d{8}T\d{4})Z?(?!\d)")
DIGEST_RE = re.compile(r"^(?P<acct>\d{12})_CloudTrail-Digest_(?P<region>[^_]+)_(?P<trail>.+)_(?P<home>[^_]+)_"
                       r"(?P<end>\d{8}T\d{6}Z)(?P<backfill>_backfill)?\.json\.gz$")
HOUR = dt.timedelta(hours=1)
SIGNATURE_ALGORITHM = "SHA256withRSA"


def fmt(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def gz(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, 31)  # gzip, mtime 0: deterministic bytes
    return c.compress(data) + c.flush()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def string_to_sign(digest: dict, inflated: bytes) -> bytes:
    """The documented data signing string (aws-cli `_create_string_to_sign`)."""
    prev = digest["previousDigestSignature"]
    return "{}\n{}/{}\n{}\n{}".format(digest["digestEndTime"], digest["digestS3Bucket"], digest["digestS3Object"],
                                      sha256_hex(inflated), "null" if prev is None else prev).encode()


@dataclass
class Key:
    private: rsa.RSAPrivateKey
    der: bytes
    fingerprint: str
    valid_from: dt.datetime
    valid_to: dt.datetime

    @classmethod
    def new(cls, valid_from, valid_to, bits=2048, seed: str | None = None):
        """A fresh random key, or with `seed` the same key every time (see `seeded_private_key`)."""
        if seed is None:
            private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        else:
            private = seeded_private_key(seed, bits)
        der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
        # CloudTrail's fingerprints are the MD5 of the DER key (true of the user guide's sample keys).
        return cls(private, der, hashlib.md5(der).hexdigest(), valid_from, valid_to)

    def sign(self, message: bytes) -> str:
        return self.private.sign(message, padding.PKCS1v15(), hashes.SHA256()).hex()

    def listing(self) -> dict:
        return {"Value": base64.b64encode(self.der).decode(), "ValidityStartTime": self.valid_from.isoformat(),
                "ValidityEndTime": self.valid_to.isoformat(), "Fingerprint": self.fingerprint}


_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % d for d in range(2, int(p ** 0.5) + 1))]


def _probable_prime(n: int, rng: random.Random, rounds: int = 40) -> bool:
    """Miller-Rabin (bases from `rng`: the outcome is reproducible too)."""
    if any(n % p == 0 for p in _SMALL_PRIMES):
        return n in _SMALL_PRIMES
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def seeded_private_key(seed: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    """An RSA key (e = 65537) derived from `seed` alone, so a sample signed with it can be rebuilt
    without shipping the private key. Anyone can rebuild it: for samples and tests only."""
    rng = random.Random(hashlib.sha256(seed.encode()).digest())
    e = 65537

    def prime(nbits: int) -> int:
        while True:
            # The top two bits set: the product of two such primes has exactly 2 * nbits bits.
            n = rng.getrandbits(nbits) | (3 << (nbits - 2)) | 1
            if (n - 1) % e and _probable_prime(n, rng):
                return n

    p = prime(bits // 2)
    q = prime(bits // 2)
    while q == p:
        q = prime(bits // 2)
    d = pow(e, -1, (p - 1) * (q - 1))
    return rsa.RSAPrivateNumbers(p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q),
                                 rsa.RSAPublicNumbers(e, p * q)).private_key()


def name_time(name: str) -> dt.datetime | None:
    m = NAME_TS_RE.search(name)
    if not m:
        return None
    try:
        return dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def inflate_whole(data: bytes) -> bytes | None:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        return None


@dataclass
class Digests:
    bucket: str
    digests: list = field(default_factory=list)  # dicts: key, signature, end, previous, logFiles, region
    keys: dict = field(default_factory=dict)  # region -> [Key]
    unlisted: list = field(default_factory=list)  # log keys not listed (not whole gzip, no timestamp)

    def signatures(self) -> dict:
        return {d["key"]: d["signature"] for d in self.digests}

    def public_keys(self) -> dict:
        return {"PublicKeyList": [k.listing() for ks in self.keys.values() for k in ks]}

    def manifest(self) -> dict:
        return {"generator": "tests/gen_digests.py", "bucket": self.bucket, "digests": self.digests,
                "unlisted": sorted(self.unlisted), "fingerprints": sorted(k.fingerprint for ks in self.keys.values() for k in ks)}


def generate(trail_dir: str, *, bucket: str = "trail-bucket", trail_name: str = "management-events",
             home_region: str | None = None, seed: int = 1, rotate_at: dt.datetime | None = None,
             delivery_seconds=(5, 55), key_seed: str | None = None) -> Digests:
    """Writes CloudTrail-Digest/ folders for every account-region of the trail in `trail_dir`.
    Existing CloudTrail-Digest/ folders (gen_trail.py --digest writes unsigned decoys) are replaced.
    With `key_seed` the keys are derived from it (region `r`'s n-th key from `<key_seed>/<r>/<n>`),
    so the same trail gets byte-identical digests and keys every time."""
    rng = random.Random(seed)
    groups: dict = {}  # (root, acct, region) -> [(delivery, key, inflated)]
    out = Digests(bucket=bucket)
    for dirpath, dirnames, filenames in os.walk(trail_dir):
        rel_dir = os.path.relpath(dirpath, trail_dir).replace(os.sep, "/")
        if rel_dir.endswith("/CloudTrail-Digest") or "/CloudTrail-Digest/" in rel_dir + "/":
            continue
        for fn in sorted(filenames):
            key = f"{rel_dir}/{fn}" if rel_dir != "." else fn
            m = LOG_RE.match(key)
            if not m:
                continue
            with open(os.path.join(dirpath, fn), "rb") as f:
                data = f.read()
            t = name_time(m.group("name"))
            inflated = inflate_whole(data) if fn.endswith(".json.gz") else None
            if t is None or inflated is None:
                out.unlisted.append(key)
                continue
            delivery = t + dt.timedelta(seconds=rng.randrange(*delivery_seconds))
            groups.setdefault((m.group("root"), m.group("acct"), m.group("region")), []).append((delivery, key, inflated))
    for dirpath, dirnames, _ in os.walk(trail_dir):
        if os.path.basename(dirpath) == "CloudTrail-Digest":
            shutil.rmtree(dirpath)
            dirnames[:] = []
    regions = sorted({r for _, _, r in groups})
    home = home_region or ("us-east-1" if "us-east-1" in regions else (regions[0] if regions else "us-east-1"))
    all_times = [d for g in groups.values() for d, _, _ in g]
    if not all_times:
        return out
    span = (min(all_times) - dt.timedelta(days=1), max(all_times) + dt.timedelta(days=30))
    def seed_of(region, n):
        return None if key_seed is None else f"{key_seed}/{region}/{n}"

    for region in regions:
        keys = [Key.new(*span, seed=seed_of(region, 0))]
        if rotate_at:
            keys[0].valid_to = rotate_at
            keys.append(Key.new(rotate_at, span[1], seed=seed_of(region, 1)))
        out.keys[region] = keys

    for (root, acct, region), logs in sorted(groups.items()):
        logs.sort()
        offset = dt.timedelta(minutes=rng.randrange(60), seconds=rng.randrange(60))
        # The first digest's hour holds the first delivery.
        end = logs[0][0].replace(minute=0, second=0, microsecond=0) + offset
        if end <= logs[0][0]:
            end += HOUR
        last_end = logs[-1][0] + 2 * HOUR  # one more digest after the last listing one
        prev = None
        i = 0
        while end <= last_end:
            start = end - HOUR
            listed = []
            while i < len(logs) and logs[i][0] < end:
                if logs[i][0] >= start:
                    listed.append(logs[i])
                i += 1
            dkey = (f"{root}CloudTrail-Digest/{region}/{end:%Y/%m/%d}/"
                    f"{acct}_CloudTrail-Digest_{region}_{trail_name}_{home}_{end:%Y%m%dT%H%M%SZ}.json.gz")
            key = next(k for k in reversed(out.keys[region]) if k.valid_from <= end) if rotate_at else out.keys[region][0]
            body = {
                "awsAccountId": acct, "digestStartTime": fmt(start), "digestEndTime": fmt(end),
                "digestS3Bucket": bucket, "digestS3Object": dkey,
                "digestPublicKeyFingerprint": key.fingerprint, "digestSignatureAlgorithm": SIGNATURE_ALGORITHM,
                "newestEventTime": fmt(listed[-1][0]) if listed else None,
                "oldestEventTime": fmt(listed[0][0] - dt.timedelta(minutes=15)) if listed else None,
                "previousDigestS3Bucket": bucket if prev else None,
                "previousDigestS3Object": prev["key"] if prev else None,
                "previousDigestHashValue": prev["hash"] if prev else None,
                "previousDigestHashAlgorithm": "SHA-256" if prev else None,
                "previousDigestSignature": prev["signature"] if prev else None,
                "logFiles": [{"s3Bucket": bucket, "s3Object": lk, "hashValue": sha256_hex(inflated),
                              "hashAlgorithm": "SHA-256", "newestEventTime": fmt(d),
                              "oldestEventTime": fmt(d - dt.timedelta(minutes=15))} for d, lk, inflated in listed],
            }
            raw = json.dumps(body, separators=(",", ":")).encode()
            signature = key.sign(string_to_sign(body, raw))
            path = os.path.join(trail_dir, *dkey.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(gz(raw))
            entry = {"key": dkey, "signature": signature, "signatureAlgorithm": SIGNATURE_ALGORITHM,
                     "end": fmt(end), "region": region, "fingerprint": key.fingerprint,
                     "previous": prev["key"] if prev else None, "logFiles": [lk for _, lk, _ in listed]}
            out.digests.append(entry)
            prev = {"key": dkey, "hash": sha256_hex(raw), "signature": signature}
            end += HOUR
    return out


def write_keys(digests: Digests, path: str):
    with open(path, "w") as f:
        json.dump(digests.public_keys(), f, indent=2)
        f.write("\n")


# ----------------------------------------------------------------------------- tampering (the test cases)
def _path(trail_dir, key):
    return os.path.join(trail_dir, *key.split("/"))


def alter_log_file(trail_dir: str, key: str):
    """Changes one event's text after signing (the file stays valid gzip JSON)."""
    p = _path(trail_dir, key)
    with open(p, "rb") as f:
        text = gzip.decompress(f.read())
    altered = text.replace(b'"eventName":"', b'"eventName":"X', 1)
    assert altered != text, key
    with open(p, "wb") as f:
        f.write(gz(altered))


def append_gzip_member(trail_dir: str, key: str, records: list):
    """Appends a second gzip member with more records (aws-cli hashes the first member only)."""
    with open(_path(trail_dir, key), "ab") as f:
        f.write(gz(json.dumps({"Records": records}).encode()))


def alter_digest(trail_dir: str, key: str):
    """Rewrites a digest's body (a listed hash changed) without re-signing it."""
    p = _path(trail_dir, key)
    with open(p, "rb") as f:
        body = json.loads(gzip.decompress(f.read()))
    if body["logFiles"]:
        body["logFiles"][0]["hashValue"] = "0" * 64
    else:
        body["newestEventTime"] = "2000-01-01T00:00:00Z"
    with open(p, "wb") as f:
        f.write(gz(json.dumps(body, separators=(",", ":")).encode()))


def remove(trail_dir: str, key: str):
    os.remove(_path(trail_dir, key))


def upload(s3, bucket: str, prefix: str, trail_dir: str, manifest: dict):
    """Uploads the trail under `prefix` with each digest's signature in its object metadata
    (x-amz-meta-signature, x-amz-meta-signature-algorithm), as CloudTrail delivers digests."""
    sigs = {d["key"]: d for d in manifest["digests"]}
    for dirpath, _, files in os.walk(trail_dir):
        for fn in files:
            p = os.path.join(dirpath, fn)
            key = os.path.relpath(p, trail_dir).replace(os.sep, "/")
            extra = {}
            if key in sigs:
                extra = {"Metadata": {"signature": sigs[key]["signature"],
                                      "signature-algorithm": sigs[key]["signatureAlgorithm"]}}
            s3.upload_file(p, bucket, prefix + key, ExtraArgs=extra)


# ----------------------------------------------------------------------------- the reference validator
def _digest_chains(trail_dir: str) -> dict:
    chains: dict = {}
    for dirpath, _, filenames in os.walk(trail_dir):
        for fn in filenames:
            m = DIGEST_RE.match(fn)
            if not m:
                continue
            key = os.path.relpath(os.path.join(dirpath, fn), trail_dir).replace(os.sep, "/")
            root = key.split("CloudTrail-Digest/")[0]
            chains.setdefault((root, m.group("region"), m.group("trail"), m.group("home")), []).append(key)
    return chains


def _awslogs(key: str) -> str:
    i = key.find("AWSLogs/")
    return key[i:] if i >= 0 else key


def reference_validate(trail_dir: str, public_keys: dict, signatures: dict | None = None,
                       start: dt.datetime | None = None, end: dt.datetime | None = None) -> dict:
    """aws-cli validate-logs over a folder. `signatures` stands in for each digest object's
    x-amz-meta-signature (an S3 source); None validates offline, taking a digest's signature from
    the newer digest that names it (the newest digest then cannot be validated). Digests whose
    end time (from the key) is within [start, end + 1 h] are traversed, newest first.

    Returns {"digests": {key: "valid" | "missing" | "INVALID: ..."}, "logs": {key: "valid" |
    "missing" | "INVALID: hash value doesn't match" | "INVALID: invalid format"}}; log files no
    valid digest lists are absent, as in aws-cli's output."""
    keys = {k["Fingerprint"]: base64.b64decode(k["Value"]) for k in public_keys["PublicKeyList"]}
    result = {"digests": {}, "logs": {}}
    lo = start.strftime("%Y%m%dT%H%M%SZ") if start else ""
    hi = (end + HOUR).strftime("%Y%m%dT%H%M%SZ") if end else "99999999T999999Z"
    for _, chain in sorted(_digest_chains(trail_dir).items()):
        # aws-cli: keys in the range by the date in the key, then popped newest first.
        listing = sorted((k for k in chain if lo <= DIGEST_RE.match(k.rsplit("/", 1)[1]).group("end") <= hi),
                         key=lambda k: DIGEST_RE.match(k.rsplit("/", 1)[1]).group("end"))
        repeated = {}  # digest key -> previousDigestSignature of the newer digest naming it

        def older(before):
            bd = DIGEST_RE.match(before.rsplit("/", 1)[1]).group("end")
            while listing:
                k = listing.pop()
                if DIGEST_RE.match(k.rsplit("/", 1)[1]).group("end") < bd:
                    return k
            return None

        key = listing.pop() if listing else None
        while key:
            path = _path(trail_dir, key)
            if not os.path.exists(path):
                result["digests"][key] = "missing"
                key = older(key)
                continue
            try:
                with open(path, "rb") as f:
                    raw = zlib.decompress(f.read(), zlib.MAX_WBITS | 16)
                d = json.loads(raw.decode())
                required = ("digestPublicKeyFingerprint", "digestS3Bucket", "digestS3Object", "previousDigestSignature",
                            "digestEndTime", "digestStartTime")
                if any(r not in d for r in required):
                    raise ValueError("invalid format")
            except (ValueError, zlib.error):
                result["digests"][key] = "INVALID: invalid format"
                key = older(key)
                continue
            if _awslogs(d["digestS3Object"]) != _awslogs(key):
                result["digests"][key] = "INVALID: has been moved from its original location"
                key = older(key)
                continue
            if d.get("previousDigestS3Object"):
                repeated[_awslogs(d["previousDigestS3Object"])] = d["previousDigestSignature"]
            fp = d["digestPublicKeyFingerprint"]
            sig = (signatures or {}).get(key) if signatures is not None else repeated.get(_awslogs(key))
            if fp not in keys:
                result["digests"][key] = f"INVALID: public key not found for fingerprint {fp}"
            elif sig is None:
                result["digests"][key] = "INVALID: signature verification failed (no signature)"
            else:
                pub = _load_pkcs1(keys[fp])
                try:
                    pub.verify(bytes.fromhex(sig), string_to_sign(d, raw), padding.PKCS1v15(), hashes.SHA256())
                    result["digests"][key] = "valid"
                except (InvalidSignature, ValueError):
                    result["digests"][key] = "INVALID: signature verification failed"
            if result["digests"][key] == "valid":
                for log in d["logFiles"]:
                    result["logs"][_awslogs(log["s3Object"])] = _check_log(trail_dir, key, log)
            if d.get("previousDigestS3Object") is None or result["digests"][key] != "valid":
                key = older(key)
            else:
                key = _prefix_of(key) + _awslogs(d["previousDigestS3Object"])
    return result


def _prefix_of(key: str) -> str:
    return key[: key.find("AWSLogs/")]


def _load_pkcs1(der: bytes):
    """A DER PKCS#1 RSAPublicKey (what ListPublicKeys returns) as a `cryptography` key."""
    pem = b"-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(der) + b"-----END RSA PUBLIC KEY-----\n"
    return serialization.load_pem_public_key(pem)


def _check_log(trail_dir: str, digest_key: str, log: dict) -> str:
    path = _path(trail_dir, _prefix_of(digest_key) + _awslogs(log["s3Object"]))
    if not os.path.exists(path):
        return "missing"
    try:
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)  # aws-cli: the first gzip member only
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(2048), b""):
                h.update(inflater.decompress(chunk))
        h.update(inflater.flush())
    except zlib.error:
        return "INVALID: invalid format"
    return "valid" if h.hexdigest() == log["hashValue"] else "INVALID: hash value doesn't match"


# ----------------------------------------------------------------------------- the Rust unit-test vector
def write_vector(out_dir: str):
    """A one-digest fixture for the Rust unit tests: digest file, its signature, the string to
    sign rebuilt here from the documented format, and the public key (a throwaway test key)."""
    os.makedirs(out_dir, exist_ok=True)
    end = dt.datetime(2024, 3, 1, 1, 1, 31, tzinfo=dt.timezone.utc)
    key = Key.new(end - dt.timedelta(days=1), end + dt.timedelta(days=30))
    dkey = ("corp/AWSLogs/o-abc123defg/111122223333/CloudTrail-Digest/us-east-1/2024/03/01/"
            "111122223333_CloudTrail-Digest_us-east-1_org-trail_us-east-1_20240301T010131Z.json.gz")
    prev_sig = "ab" * 256
    body = {"awsAccountId": "111122223333", "digestStartTime": fmt(end - HOUR), "digestEndTime": fmt(end),
            "digestS3Bucket": "trail-bucket", "digestS3Object": dkey,
            "digestPublicKeyFingerprint": key.fingerprint, "digestSignatureAlgorithm": SIGNATURE_ALGORITHM,
            "newestEventTime": "2024-03-01T00:52:27Z", "oldestEventTime": "2024-03-01T00:42:27Z",
            "previousDigestS3Bucket": "trail-bucket",
            "previousDigestS3Object": dkey.replace("T010131Z", "T000131Z").replace("/03/01/", "/03/01/"),
            "previousDigestHashValue": "97fb791cf91ffc440d274f8190dbdd9aa09c34432aba82739df18b6d3c13df2d",
            "previousDigestHashAlgorithm": "SHA-256", "previousDigestSignature": prev_sig,
            "logFiles": [{"s3Bucket": "trail-bucket",
                          "s3Object": "corp/AWSLogs/o-abc123defg/111122223333/CloudTrail/us-east-1/2024/03/01/"
                                      "111122223333_CloudTrail_us-east-1_20240301T0045Z_9nYN7gp2eWAJHIfT.json.gz",
                          "hashValue": "9bb6196fc6b84d6f075a56548feca262bd99ba3c2de41b618e5b6e22c1fc71f6",
                          "hashAlgorithm": "SHA-256", "newestEventTime": "2024-03-01T00:52:27Z",
                          "oldestEventTime": "2024-03-01T00:42:27Z"}]}
    raw = json.dumps(body, indent=2).encode()  # any formatting: the hash covers the bytes
    message = string_to_sign(body, raw)
    name = dkey.rsplit("/", 1)[1]
    with open(os.path.join(out_dir, name), "wb") as f:
        f.write(gz(raw))
    vector = {"about": "tests/gen_digests.py --write-vector: a digest signed by a throwaway test key",
              "digestFile": name, "digestKey": dkey, "signature": key.sign(message),
              "stringToSign": message.decode(), "publicKeys": {"PublicKeyList": [key.listing()]}}
    with open(os.path.join(out_dir, "vector.json"), "w") as f:
        json.dump(vector, f, indent=2)
        f.write("\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trail", help="trail folder from tests/gen_trail.py (CloudTrail-Digest/ is written inside)")
    p.add_argument("--manifest", help="digest manifest JSON (signatures, listed files), outside the trail")
    p.add_argument("--keys-out", help="public keys JSON (as `aws cloudtrail list-public-keys` prints)")
    p.add_argument("--bucket", default="trail-bucket", help="bucket the digests name")
    p.add_argument("--trail-name", default="management-events")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rotate-at", help="RFC 3339: sign later digests with a second key per region")
    p.add_argument("--key-seed", help="derive the keys from this text (reproducible; anyone can rebuild the "
                                      "private keys, so for samples and tests only)")
    p.add_argument("--write-vector", help="write the Rust unit-test vector into this folder and exit")
    a = p.parse_args(argv)
    if a.write_vector:
        write_vector(a.write_vector)
        return
    if not a.trail:
        p.error("--trail is required")
    rotate = dt.datetime.fromisoformat(a.rotate_at.replace("Z", "+00:00")) if a.rotate_at else None
    d = generate(a.trail, bucket=a.bucket, trail_name=a.trail_name, seed=a.seed, rotate_at=rotate,
                 key_seed=a.key_seed)
    if a.keys_out:
        write_keys(d, a.keys_out)
    if a.manifest:
        with open(a.manifest, "w") as f:
            json.dump(d.manifest(), f)
    nlisted = sum(len(x["logFiles"]) for x in d.digests)
    print(f"gen_digests: {len(d.digests)} digests listing {nlisted} log files ({len(d.unlisted)} unlisted) "
          f"in {a.trail}", file=sys.stderr)


if __name__ == "__main__":
    main()
