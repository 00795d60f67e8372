"""Issue 30: retry that fixes things, copies that cannot collide, windows that neither lock the
future nor lose late files (spec: the issue's six points; `issues show 30`).

1. `retry` re-reads every file that has a failure entry: a repaired truncated gzip or a file whose
   invalid events were fixed ends COMPLETED with each of its events stored once (the part an earlier
   attempt salvaged is not stored again); statistics are those of a clean copy; `record.json` keeps
   the attempts; `retry` says what it re-read. A file that still fails stays listed.
2. Files in a day folder not named like CloudTrail log files (`.DS_Store`, `notes.txt`) are skipped
   (filesSkipped, filesNotLogFiles, `failures`' "skipped" list), not failures; a log-file name that is
   not .json.gz stays UnsupportedFileType.
3. Two overlapping copies into one store started at the same instant: exactly one runs, the other is
   refused (exit 2, naming the first) and writes no record; no eventID is stored twice (>= 20 rounds,
   local store and S3 store on moto).
4. A copy whose process died: `status` says it is not running and names `retry` (exit 1); a new
   overlapping copy is refused; `retry` finishes it exactly.
5. An end after now is clipped to now (the record keeps what was asked); a range wholly in the future
   is refused; the open tail [completeThrough, end) of a finished copy is no overlap, and `--since-last`
   copies lose nothing delivered late and store nothing twice.
6. Ctrl-C: STOPPED, no WorkItemFailed entries, `retry` completes with the events of an uninterrupted copy.

Hand-made trails (class Logs) are small so the whole file runs in a couple of minutes on 2 cores.
"""

from __future__ import annotations

import datetime as dt
import gzip
import itertools
import json
import os
import random
import signal
import string
import subprocess
import sys
import time
import uuid
import zlib
from collections import Counter
from pathlib import Path

import pytest

from conftest import base_env, duck, duplicate_report, parquet_files, source_dir
from expect import expected, stats_diff, ts

UTC = dt.timezone.utc
ALNUM = string.ascii_letters + string.digits
ACCT = "210987654321"
REGION = "eu-central-1"
# Statistics a retry that fixed everything must share with a clean copy of the repaired trail.
CLEAN_STATS = ("prefixesFound", "prefixesCompleted", "filesFound", "filesSkipped", "filesCompleted", "filesFailed",
               "eventsRead", "eventsCompleted", "eventsOutOfRange", "eventsInvalid", "eventsDuplicate", "failedEntries")


# ============================================================================ hand-made trails
def fmt(t: dt.datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


def floor_minute(t: dt.datetime) -> dt.datetime:
    return t.replace(second=0, microsecond=0)


class Logs:
    """CloudTrail log files named by delivery time (`<acct>_CloudTrail_<region>_<YYYYMMDDTHHmm>Z_<16 alnum>.json.gz`
    in `AWSLogs/<acct>/CloudTrail/<region>/YYYY/MM/DD/`), events with unique eventIDs and every field the
    copier checks (eventTime, eventName, an object)."""

    def __init__(self, seed: int, acct: str = ACCT, region: str = REGION):
        self.rng = random.Random(seed)
        self.seed = seed
        self.n = 0
        self.acct, self.region = acct, region

    def event(self, t: dt.datetime) -> dict:
        self.n += 1
        r = self.rng
        return {
            "eventVersion": "1.08",
            "userIdentity": {"type": "IAMUser", "principalId": "AIDAEXAMPLEEXAMPLE1", "accountId": self.acct,
                             "arn": f"arn:aws:iam::{self.acct}:user/alice", "userName": "alice"},
            "eventTime": fmt(t), "eventSource": "s3.amazonaws.com", "eventName": r.choice(("GetObject", "PutObject")),
            "awsRegion": self.region, "sourceIPAddress": "203.0.113.%d" % r.randrange(1, 255),
            "userAgent": "aws-cli/2.15.30 md/awscrt#0.19.19 ua/2.0 os/linux#6.1",
            "requestParameters": {"bucketName": "data", "key": "k/" + "".join(r.choices(ALNUM, k=40))},
            "responseElements": None, "requestID": "REQ%012d" % self.n,
            "eventID": str(uuid.UUID(int=(self.seed << 64) | self.n)), "readOnly": True, "eventType": "AwsApiCall",
            "managementEvent": False, "recipientAccountId": self.acct, "eventCategory": "Data",
        }

    def before(self, delivered: dt.datetime, n: int, lo_s: int = 60, hi_s: int = 14 * 60) -> list:
        """n events written lo_s..hi_s seconds before their file's delivery."""
        evs = [self.event(delivered - dt.timedelta(seconds=self.rng.randrange(lo_s, hi_s))) for _ in range(n)]
        return sorted(evs, key=lambda e: e["eventTime"])

    def between(self, a: dt.datetime, b: dt.datetime, n: int) -> list:
        span = int((b - a).total_seconds())
        evs = [self.event(a + dt.timedelta(seconds=self.rng.randrange(span))) for _ in range(n)]
        return sorted(evs, key=lambda e: e["eventTime"])

    def key(self, delivered: dt.datetime, ext: str = ".json.gz") -> str:
        unique = "".join(self.rng.choices(ALNUM, k=16))
        return (f"AWSLogs/{self.acct}/CloudTrail/{self.region}/{delivered:%Y/%m/%d}/"
                f"{self.acct}_CloudTrail_{self.region}_{delivered:%Y%m%dT%H%M}Z_{unique}{ext}")

    def day_folder(self, day: dt.datetime) -> str:
        return f"AWSLogs/{self.acct}/CloudTrail/{self.region}/{day:%Y/%m/%d}/"


def gz(records) -> bytes:
    return gzip.compress(json.dumps({"Records": records}).encode(), mtime=0)


def cut_in_half(records: list) -> tuple:
    """(whole gzip, the gzip cut near its middle, k): the cut lands well inside an event, so exactly
    records[:k] are readable whole before the damage (k >= 3, and k < len(records))."""
    parts = [json.dumps(e).encode() for e in records]
    head = b'{"Records": ['
    text = head + b", ".join(parts) + b"]}"
    ends, pos = [], len(head)
    for p in parts:
        pos += len(p)
        ends.append(pos)
        pos += 2
    full = gzip.compress(text, mtime=0)
    mid = len(full) // 2
    for cut in sorted(range(len(full) * 3 // 10, len(full) * 7 // 10), key=lambda c: abs(c - mid)):
        readable = len(zlib.decompressobj(31).decompress(full[:cut]))
        k = sum(1 for e in ends if e <= readable)
        if 3 <= k < len(records) and readable - ends[k - 1] > 100 and ends[k] - readable > 100:
            return full, full[:cut], k
    raise AssertionError("no good cut point")


# ============================================================================ where: local folders or moto S3
_names = itertools.count(1)


class LocalPlace:
    kind = "local"

    def __init__(self, base: Path):
        self.base = base
        self.root = base / "trail"
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = {}
        self.source = str(self.root)

    def store(self, name: str = "store") -> str:
        return str(self.base / name)

    def put(self, key: str, data: bytes):
        p = self.root / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    def location(self, key: str) -> str:
        return os.path.realpath(self.root / key)

    @staticmethod
    def norm(location: str) -> str:
        return os.path.realpath(location)

    def store_dir(self, name: str = "store") -> Path:
        return self.base / name

    def has_copy(self, copy_id: str, name: str = "store") -> bool:
        return (self.base / name / "copies" / copy_id).exists()

    def store_json(self, rel: str, name: str = "store"):
        p = self.base / name / rel
        return json.loads(p.read_text()) if p.exists() else None


class S3Place:
    """Source bucket `<n>-src` (trail under `trail/`), store bucket `<n>-eds` (stores under `<name>/`)."""
    kind = "s3"

    def __init__(self, moto, base: Path):
        self.moto, self.base = moto, base
        self.s3 = moto.client()
        n = f"rf{os.getpid() % 100000}-{next(_names)}"
        self.src, self.dst = f"{n}-src", f"{n}-eds"
        self.s3.create_bucket(Bucket=self.src)
        self.s3.create_bucket(Bucket=self.dst)
        self.env = moto.env
        self.source = f"s3://{self.src}/trail"
        self._downloads = itertools.count(1)

    def store(self, name: str = "store") -> str:
        return f"s3://{self.dst}/{name}"

    def put(self, key: str, data: bytes):
        self.s3.put_object(Bucket=self.src, Key="trail/" + key, Body=data)

    def location(self, key: str) -> str:
        return f"s3://{self.src}/trail/{key}"

    @staticmethod
    def norm(location: str) -> str:
        return location

    def store_dir(self, name: str = "store") -> Path:
        """A fresh local copy of the store (DuckDB reads it)."""
        d = self.base / f"download-{name}-{next(self._downloads)}"
        return self.moto.download_prefix(self.dst, name, d)

    def has_copy(self, copy_id: str, name: str = "store") -> bool:
        return bool(self.moto.list_keys(self.dst, f"{name}/copies/{copy_id}/"))

    def store_json(self, rel: str, name: str = "store"):
        try:
            return json.loads(self.s3.get_object(Bucket=self.dst, Key=f"{name}/{rel}")["Body"].read())
        except self.s3.exceptions.NoSuchKey:
            return None


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path):
    if request.param == "local":
        return LocalPlace(tmp_path)
    return S3Place(request.getfixturevalue("moto_s3"), tmp_path)


# ============================================================================ store and record helpers
def id_counts(store_dir: Path) -> Counter:
    """eventID -> rows in STORE/events/**/*.parquet (DuckDB)."""
    if not parquet_files(store_dir):
        return Counter()
    con, src = duck(store_dir)
    return Counter(dict(con.execute(f"SELECT eventID, count(*) FROM {src} GROUP BY eventID").fetchall()))


def assert_each_once(store_dir: Path, want_ids, what: str = ""):
    got = id_counts(store_dir)
    dups = {i: n for i, n in got.items() if n > 1}
    assert not dups, (f"{what}: {len(dups)} eventIDs stored more than once ({sum(got.values())} rows):\n"
                      f"{duplicate_report(store_dir)}")
    want = set(want_ids)
    missing, extra = want - set(got), set(got) - want
    assert not missing and not extra, (f"{what}: {len(missing)} events missing (e.g. {sorted(missing)[:2]}), "
                                       f"{len(extra)} unexpected (e.g. {sorted(extra, key=str)[:2]}); "
                                       f"{sum(got.values())} rows, expected {len(want)}")


def ids_of(records) -> list:
    return [e["eventID"] for e in records]


def reread_line(files: int, events: int, still: int = 0) -> str:
    line = f"re-read {files} failed file{'' if files == 1 else 's'}: {events:,} event{'' if events == 1 else 's'} copied"
    return line + (f", {still} still failing" if still else "")


def check_attempts(record: dict, want: list):
    att = record.get("attempts")
    assert isinstance(att, list) and len(att) == len(want), f"attempts: want {len(want)}, got {att!r}"
    for i, (a, w) in enumerate(zip(att, want), 1):
        assert a.get("number") == i, att
        for k, v in w.items():
            assert a.get(k) == v, f"attempt {i}: {k} is {a.get(k)!r}, expected {v!r}: {a}"
        assert ts(a["startedTime"]) <= ts(a["finishedTime"]), a
    for a, b in zip(att, att[1:]):
        assert ts(a["finishedTime"]) <= ts(b["startedTime"]), att


def copy(trailcopy, place, copy_id, *args, store=None, env=None, json_out=True):
    argv = ["copy", "--source", place.source, "--store", store or place.store(), *args, "--copy-id", copy_id]
    return trailcopy(*argv, *(["--json"] if json_out else []), env={**place.env, **(env or {})}, timeout=120)


def status(trailcopy, place, copy_id, store=None, json_out=True):
    return trailcopy("status", copy_id, "--store", store or place.store(), *(["--json"] if json_out else []),
                     env=place.env)


def failures(trailcopy, place, copy_id, store=None):
    r = trailcopy("failures", copy_id, "--store", store or place.store(), "--json", env=place.env)
    assert r.returncode == 0, r.describe()
    return r.json


def failure_pairs(place, doc) -> list:
    return sorted((place.norm(f["location"]), f["errorType"]) for f in doc["failures"])


# ============================================================================ 1. retry re-reads failed files
DAY1 = dt.datetime(2024, 8, 6, tzinfo=UTC)


def good_day(logs: Logs, place, day: dt.datetime, hours=(1, 5, 9, 13), n=15) -> list:
    """Good files at the given hours of the day: their events."""
    events = []
    for h in hours:
        delivered = day + dt.timedelta(hours=h, minutes=10)
        recs = logs.before(delivered, n)
        place.put(logs.key(delivered), gz(recs))
        events += recs
    return events


def clean_statistics(trailcopy, place, tmp_path, start, end) -> dict:
    """A clean copy of the (repaired) source into a fresh local store: what a retry must end with."""
    r = trailcopy("copy", "--source", place.source, "--store", tmp_path / "clean-store", "--start", start, "--end", end,
                  "--copy-id", "clean", "--json", env=place.env, timeout=120)
    assert r.returncode == 0 and r.json["status"] == "COMPLETED", r.describe()
    return r.json["statistics"]


def test_repaired_truncated_file_is_reread(trailcopy, place, tmp_path):
    logs = Logs(301)
    good = good_day(logs, place, DAY1)
    xkey = logs.key(DAY1 + dt.timedelta(hours=7))
    xrecs = logs.before(DAY1 + dt.timedelta(hours=7), 40)
    whole, cut, k = cut_in_half(xrecs)
    place.put(xkey, cut)
    rng = ("--start", "2024-08-06", "--end", "2024-08-07")

    r = copy(trailcopy, place, "cut-1", *rng)
    assert r.returncode == 1 and r.json["status"] == "FAILED", r.describe()
    assert failure_pairs(place, failures(trailcopy, place, "cut-1")) == [(place.location(xkey), "CorruptGzip")]
    salvaged = ids_of(xrecs[:k])
    assert_each_once(place.store_dir(), ids_of(good) + salvaged, "after the copy (the salvaged part of the cut file)")

    place.put(xkey, whole)  # the user puts the good file back
    rr = trailcopy("retry", "cut-1", "--store", place.store(), env=place.env, timeout=120)
    assert rr.returncode == 0, rr.describe()
    assert reread_line(1, len(xrecs) - k) in rr.stdout, (
        f"expected `{reread_line(1, len(xrecs) - k)}` ({k} of the file's {len(xrecs)} events were salvaged "
        f"by the copy)\n{rr.describe()}")
    assert "COMPLETED" in rr.stdout, rr.describe()

    st = status(trailcopy, place, "cut-1")
    assert st.returncode == 0 and st.json["status"] == "COMPLETED", st.describe()
    s = st.json["statistics"]
    clean = clean_statistics(trailcopy, place, tmp_path, *rng[1::2])
    diff = {k2: (s.get(k2), clean.get(k2)) for k2 in CLEAN_STATS if s.get(k2) != clean.get(k2)}
    assert not diff, f"statistics after the retry differ from a clean copy's (retry, clean): {diff}"
    assert_each_once(place.store_dir(), ids_of(good) + ids_of(xrecs), "after the retry")

    fj = failures(trailcopy, place, "cut-1")
    assert fj["failures"] == [], fj
    ft = trailcopy("failures", "cut-1", "--store", place.store(), env=place.env)
    assert "no failure entries" in ft.stdout, ft.describe()
    assert place.store_json("copies/cut-1/record.json")["attempts"] == st.json.get("attempts"), \
        "record.json and status disagree on the attempts"
    check_attempts(st.json, [
        dict(kind="copy", filesReread=0, status="FAILED", failedEntries=1),
        dict(kind="retry", filesReread=1, filesFixed=1, eventsCopied=len(xrecs) - k, status="COMPLETED",
             failedEntries=0),
    ])


def test_fixed_invalid_events_are_reread(trailcopy, place, tmp_path):
    logs = Logs(302)
    good = good_day(logs, place, DAY1)
    delivered = DAY1 + dt.timedelta(hours=7)
    valid = logs.before(delivered, 4)
    timeless = logs.before(delivered, 1)[0]
    broken_timeless = {k: v for k, v in timeless.items() if k != "eventTime"}
    replacement = logs.before(delivered, 1)[0]  # what the not-an-object record should have been
    ykey = logs.key(delivered)
    place.put(ykey, gz([valid[0], broken_timeless, valid[1], 42, valid[2], valid[3]]))
    rng = ("--start", "2024-08-06", "--end", "2024-08-07")

    r = copy(trailcopy, place, "inv-1", *rng)
    assert r.returncode == 1 and r.json["status"] == "FAILED", r.describe()
    assert r.json["statistics"]["eventsInvalid"] == 2, r.json["statistics"]
    assert failure_pairs(place, failures(trailcopy, place, "inv-1")) == [(place.location(ykey), "InvalidEvents")]
    assert_each_once(place.store_dir(), ids_of(good) + ids_of(valid), "after the copy")

    fixed = [valid[0], timeless, valid[1], replacement, valid[2], valid[3]]
    place.put(ykey, gz(fixed))
    rr = trailcopy("retry", "inv-1", "--store", place.store(), env=place.env, timeout=120)
    assert rr.returncode == 0, rr.describe()
    assert reread_line(1, 2) in rr.stdout, rr.describe()

    st = status(trailcopy, place, "inv-1")
    assert st.returncode == 0 and st.json["status"] == "COMPLETED", st.describe()
    s = st.json["statistics"]
    clean = clean_statistics(trailcopy, place, tmp_path, *rng[1::2])
    diff = {k: (s.get(k), clean.get(k)) for k in CLEAN_STATS if s.get(k) != clean.get(k)}
    assert not diff, f"statistics after the retry differ from a clean copy's (retry, clean): {diff}"
    assert s["eventsInvalid"] == 0, s
    assert_each_once(place.store_dir(), ids_of(good) + ids_of(fixed), "after the retry")
    assert failures(trailcopy, place, "inv-1")["failures"] == []
    check_attempts(st.json, [
        dict(kind="copy", filesReread=0, status="FAILED", failedEntries=1),
        dict(kind="retry", filesReread=1, filesFixed=1, eventsCopied=2, status="COMPLETED", failedEntries=0),
    ])


def test_file_still_failing_stays_listed(trailcopy, tmp_path):
    place = LocalPlace(tmp_path)
    logs = Logs(303)
    good = good_day(logs, place, DAY1)
    xkey = logs.key(DAY1 + dt.timedelta(hours=7))
    xrecs = logs.before(DAY1 + dt.timedelta(hours=7), 40)
    whole, cut, k = cut_in_half(xrecs)
    place.put(xkey, cut)
    r = copy(trailcopy, place, "still-1", "--start", "2024-08-06", "--end", "2024-08-07")
    assert r.returncode == 1, r.describe()
    before = failures(trailcopy, place, "still-1")["failures"]
    rows_before = id_counts(place.store_dir())

    # retried without repairing anything: re-read, still failing, still listed, nothing stored twice
    rr = trailcopy("retry", "still-1", "--store", place.store(), timeout=120)
    assert rr.returncode == 1, rr.describe()
    assert reread_line(1, 0, still=1) in rr.stdout, rr.describe()
    st = status(trailcopy, place, "still-1")
    assert st.returncode == 1 and st.json["status"] == "FAILED", st.describe()
    assert st.json["statistics"]["eventsCompleted"] == r.json["statistics"]["eventsCompleted"], st.json["statistics"]
    after = failures(trailcopy, place, "still-1")["failures"]
    assert [(place.norm(f["location"]), f["errorType"]) for f in after] == [(place.location(xkey), "CorruptGzip")], after
    assert ts(after[0]["lastUpdatedTime"]) >= ts(before[0]["lastUpdatedTime"]), (before, after)
    assert id_counts(place.store_dir()) == rows_before, "a re-read that still fails stored something again"

    # then repaired: the next retry fixes it
    place.put(xkey, whole)
    rr = trailcopy("retry", "still-1", "--store", place.store(), timeout=120)
    assert rr.returncode == 0 and reread_line(1, len(xrecs) - k) in rr.stdout, rr.describe()
    st = status(trailcopy, place, "still-1")
    assert st.json["status"] == "COMPLETED", st.describe()
    assert_each_once(place.store_dir(), ids_of(good) + ids_of(xrecs), "after the repaired retry")
    check_attempts(st.json, [
        dict(kind="copy", filesReread=0, status="FAILED", failedEntries=1),
        dict(kind="retry", filesReread=1, filesFixed=0, eventsCopied=0, status="FAILED", failedEntries=1),
        dict(kind="retry", filesReread=1, filesFixed=1, eventsCopied=len(xrecs) - k, status="COMPLETED",
             failedEntries=0),
    ])


# ============================================================================ 2. non-log files are skipped
def test_non_log_files_are_skipped(trailcopy, place):
    logs = Logs(304)
    day = dt.datetime(2024, 8, 7, tzinfo=UTC)
    good = good_day(logs, place, day, hours=(2, 8, 14), n=10)
    folder = logs.day_folder(day)
    junk = [folder + ".DS_Store", folder + "notes.txt"]
    place.put(junk[0], b"\x00\x00\x00\x01Bud1\x00\x00\x10\x00")
    place.put(junk[1], b"remember to rotate the keys\n")
    rng = ("--start", "2024-08-07", "--end", "2024-08-08")

    r = copy(trailcopy, place, "skip-1", *rng)
    assert r.returncode == 0 and r.json["status"] == "COMPLETED", r.describe()
    s = r.json["statistics"]
    assert (s["filesSkipped"], s.get("filesNotLogFiles"), s["failedEntries"], s["filesCompleted"], s["filesFailed"]) \
        == (2, 2, 0, 3, 0), s
    assert s["filesFound"] == s["filesCompleted"] + s["filesSkipped"] + s["filesFailed"], s
    assert_each_once(place.store_dir(), ids_of(good), "skip-1")

    fj = failures(trailcopy, place, "skip-1")
    assert fj["failures"] == [], fj
    skipped = fj.get("skipped")
    assert isinstance(skipped, list), fj
    assert sorted(place.norm(e["location"]) for e in skipped) == sorted(place.location(k) for k in junk), skipped
    for e in skipped:
        assert (e["status"], e["errorType"]) == ("SKIPPED", "NotALogFile") and e["errorMessage"], e
        ts(e["lastUpdatedTime"])
    ft = trailcopy("failures", "skip-1", "--store", place.store(), env=place.env)
    lines = [line for line in ft.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(lines) == 2 and all(any(os.path.basename(k) in line for line in lines) for k in junk), ft.describe()
    st = status(trailcopy, place, "skip-1", json_out=False)
    want = (f"  skipped    2 files not named like CloudTrail log files "
            f"(trailcopy failures skip-1 --store {r.json['request']['store']})")
    assert st.returncode == 0 and want in st.stdout, f"no line {want!r}:\n{st.describe()}"

    # named like a log file but not .json.gz: still a failure; a .json.gz that is not gzip: CorruptGzip
    t = day + dt.timedelta(hours=16)
    plain = logs.key(t, ext=".json")
    place.put(plain, json.dumps({"Records": logs.before(t, 2)}).encode())
    notgz = logs.key(t + dt.timedelta(minutes=5))
    place.put(notgz, json.dumps({"Records": logs.before(t, 2)}).encode())
    r2 = copy(trailcopy, place, "skip-2", *rng, store=place.store("store2"))
    assert r2.returncode == 1 and r2.json["status"] == "FAILED", r2.describe()
    s2 = r2.json["statistics"]
    assert (s2["filesSkipped"], s2.get("filesNotLogFiles"), s2["failedEntries"]) == (2, 2, 2), s2
    f2 = failures(trailcopy, place, "skip-2", store=place.store("store2"))
    assert failure_pairs(place, f2) == sorted([(place.location(plain), "UnsupportedFileType"),
                                               (place.location(notgz), "CorruptGzip")]), f2
    assert sorted(place.norm(e["location"]) for e in f2["skipped"]) == sorted(place.location(k) for k in junk), f2


# ============================================================================ 3. copies cannot collide
RACE_ROUNDS = 20
# Started by a tiny Python launcher that waits for the gate file, then execs trailcopy: both copies
# start within a fraction of a millisecond of each other.
GATED = ("import os, sys, time\nopen(sys.argv[2], 'w').close()\n"
         "while not os.path.exists(sys.argv[1]):\n    time.sleep(0.0002)\nos.execv(sys.argv[3], sys.argv[3:])\n")


def spawn_gated(gate: Path, ready: Path, argv: list, env: dict):
    return subprocess.Popen([sys.executable, "-c", GATED, str(gate), str(ready), *map(str, argv)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def claim_ids(doc) -> list:
    """Every copyId in a claims.json document, whatever its nesting."""
    out = []
    if isinstance(doc, dict):
        if isinstance(doc.get("copyId"), str):
            out.append(doc["copyId"])
        for v in doc.values():
            out += claim_ids(v)
    elif isinstance(doc, list):
        for v in doc:
            out += claim_ids(v)
    return out


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_two_overlapping_copies_started_together(kind, trailcopy_bin, request, tmp_path):
    place = LocalPlace(tmp_path) if kind == "local" else S3Place(request.getfixturevalue("moto_s3"), tmp_path)
    logs = Logs(305)
    day = dt.datetime(2024, 8, 10, tzinfo=UTC)
    events = good_day(logs, place, day, hours=(13, 18), n=10)  # in both ranges below
    env = {**base_env(), **place.env}
    problems, both_ran, rows, refusals = [], 0, [], Counter()
    for i in range(RACE_ROUNDS):
        store = place.store(f"race{i}")
        ids = (f"a{i}", f"b{i}")
        argv = {ids[0]: ["--start", "2024-08-10", "--end", "2024-08-11"],
                ids[1]: ["--start", "2024-08-10T12:00:00Z", "--end", "2024-08-12"]}
        gate = tmp_path / f"gate-{i}"
        procs = {cid: spawn_gated(gate, tmp_path / f"ready-{cid}", [
            trailcopy_bin, "copy", "--source", place.source, "--store", store, *argv[cid], "--copy-id", cid, "--json"],
            env) for cid in ids}
        deadline = time.monotonic() + 30
        while not all((tmp_path / f"ready-{cid}").exists() for cid in ids):
            assert time.monotonic() < deadline, "the launchers did not start"
            time.sleep(0.001)
        gate.touch()
        res = {}
        for cid, p in procs.items():
            out, err = p.communicate(timeout=120)
            res[cid] = (p.returncode, out, err)
        codes = sorted(res[c][0] for c in ids)
        got = id_counts(place.store_dir(f"race{i}"))
        n_rows = sum(got.values())
        rows.append(n_rows)
        if codes != [0, 2]:
            both_ran += codes == [0, 0]
            problems.append(f"round {i}: exits {[(c, res[c][0]) for c in ids]}, {n_rows} rows; stderr: "
                            f"{[res[c][2].strip()[-300:] for c in ids]}")
            continue
        winner = next(c for c in ids if res[c][0] == 0)
        loser = next(c for c in ids if res[c][0] == 2)
        refusals["while it ran" if "running" in res[loser][2] else "after it finished"] += 1
        rec = json.loads(res[winner][1])
        if rec["status"] != "COMPLETED":
            problems.append(f"round {i}: the copy that ran is {rec['status']}")
        if f"overlaps copy `{winner}`" not in res[loser][2]:
            problems.append(f"round {i}: the refusal does not name `{winner}`: {res[loser][2].strip()}")
        if place.has_copy(loser, f"race{i}"):
            problems.append(f"round {i}: the refused copy {loser} wrote STORE/copies/{loser}/")
        dups = sum(n - 1 for n in got.values() if n > 1)
        if dups or set(got) != set(ids_of(events)):
            problems.append(f"round {i}: {n_rows} rows for {len(events)} events ({dups} duplicates)")
        left = claim_ids(place.store_json("claims.json", f"race{i}"))
        if set(left) & set(ids):
            problems.append(f"round {i}: claims.json still holds {left} after both finished")
    summary = (f"{kind} store: {RACE_ROUNDS} rounds, {both_ran} with both copies running, the other copy refused "
               f"{dict(refusals)}, rows per round {sorted(Counter(rows).items())} (expected {len(events)})")
    print("\n" + summary)
    assert not problems, summary + "\n" + "\n".join(problems)


# ============================================================================ 4. a copy whose process died
def committed(store: Path, copy_id: str) -> int:
    """Batches committed so far, from the items' checkpoints."""
    total = 0
    for p in (store / "copies" / copy_id / "items").glob("*/state.json"):
        try:
            total += json.loads(p.read_text())["cursor"]["batch"]
        except (ValueError, KeyError, OSError):
            pass
    return total


def assert_dead_holder_status(trailcopy, place, copy_id, store=None):
    st = status(trailcopy, place, copy_id, store=store)
    assert st.returncode == 1, f"status of a copy whose process died must exit 1:\n{st.describe()}"
    assert st.json["status"] in ("IN_PROGRESS", "INITIALIZING") and st.json.get("running") is False, st.json
    txt = status(trailcopy, place, copy_id, store=store, json_out=False)
    assert txt.returncode == 1, txt.describe()
    hint = f"trailcopy retry {copy_id} --store {st.json['request']['store']}"
    assert "not running" in txt.stdout and hint in txt.stdout, f"expected `not running` and `{hint}`:\n{txt.describe()}"


def test_dead_copy_is_reported_and_retried(trailcopy, place):
    logs = Logs(306)
    day = dt.datetime(2024, 8, 12, tzinfo=UTC)
    events = good_day(logs, place, day, hours=(1, 4, 7, 10, 13, 16, 19, 22), n=8)
    rng = ("--start", "2024-08-12", "--end", "2024-08-13")
    # one file per batch; the process aborts after the second batch's Parquet, before its checkpoint
    r = copy(trailcopy, place, "dead-1", *rng, "--concurrency", "1",
             env={"TRAILCOPY_BATCH_BYTES": "1", "TRAILCOPY_FAULT_ABORT_AFTER_BATCHES": "1"})
    assert r.returncode == -signal.SIGABRT, f"expected the injected abort:\n{r.describe()}"
    assert_dead_holder_status(trailcopy, place, "dead-1")

    other = copy(trailcopy, place, "dead-2", "--start", "2024-08-12T06:00:00Z", "--end", "2024-08-14")
    assert other.returncode == 2 and "overlaps copy `dead-1`" in other.stderr, other.describe()
    assert not place.has_copy("dead-2")

    rr = trailcopy("retry", "dead-1", "--store", place.store(), "--json", env=place.env, timeout=120)
    assert rr.returncode == 0 and rr.json["status"] == "COMPLETED", rr.describe()
    assert rr.json["statistics"]["eventsCompleted"] == len(events), rr.json["statistics"]
    assert_each_once(place.store_dir(), ids_of(events), "after the retry of the dead copy")
    after = status(trailcopy, place, "dead-1", json_out=False)
    assert after.returncode == 0 and "not running" not in after.stdout, after.describe()


# the slow trail: many small files, one per batch, one item at a time (Ctrl-C and kill -9 land mid-copy)
SLOW_RANGE = ("2024-09-01", "2024-09-04")
SLOW_ENV = {"TRAILCOPY_BATCH_BYTES": "2000"}


@pytest.fixture(scope="module")
def slow_trail(make_trail):
    m = make_trail("retry-slow", seed=71, accounts=1, regions="us-east-1", start_day="2024-09-01", days=3,
                   files_per_day=100, events_per_file=10, duplicates=3)
    exp = expected(m, *SLOW_RANGE)
    assert exp["failedEntries"] == 0 and exp["filesCompleted"] == 300
    return m, exp


def assert_exact(store: Path, exp: dict, what: str):
    """The store holds the expected events (eventIDs; version-1.0 events have none), each once."""
    want = Counter(json.loads(j).get("eventID") for j in exp["copied"])
    got = id_counts(store)
    dups = {i: n for i, n in got.items() if i is not None and n > 1}
    assert not dups, f"{what}: {len(dups)} eventIDs stored twice:\n{duplicate_report(store)}"
    assert got == want, (f"{what}: {sum(got.values())} rows, expected {exp['eventsCompleted']}; missing "
                         f"{sum((want - got).values())}, extra {sum((got - want).values())}")


def spawn_slow(trailcopy_bin, m, store, copy_id):
    return subprocess.Popen([trailcopy_bin, "copy", "--source", source_dir(m), "--store", str(store),
                             "--start", SLOW_RANGE[0], "--end", SLOW_RANGE[1], "--copy-id", copy_id,
                             "--concurrency", "1", "--json"],
                            env={**base_env(), **SLOW_ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)


def wait_committed(p, store: Path, copy_id: str, timeout=60):
    deadline = time.monotonic() + timeout
    while p.poll() is None and time.monotonic() < deadline and committed(store, copy_id) < 2:
        time.sleep(0.005)
    if p.poll() is not None:
        out, err = p.communicate()
        pytest.fail(f"the copy ended (exit {p.returncode}) before it could be interrupted: make the trail "
                    f"bigger\n{err[-2000:]}")


def test_killed_copy_is_reported_refused_and_retried(trailcopy_bin, trailcopy, slow_trail, tmp_path):
    m, exp = slow_trail
    place = LocalPlace(tmp_path)
    store = tmp_path / "store"
    p = spawn_slow(trailcopy_bin, m, store, "k9-1")
    try:
        wait_committed(p, store, "k9-1")
        alive = status(trailcopy, place, "k9-1", json_out=False)
        assert alive.returncode == 0 and "not running" not in alive.stdout, alive.describe()
        other = trailcopy("copy", "--source", source_dir(m), "--store", store, "--start", "2024-09-02",
                          "--end", "2024-09-05", "--copy-id", "k9-2", "--json")
        assert other.returncode == 2, other.describe()
        assert "overlaps copy `k9-1`" in other.stderr and "running" in other.stderr, other.describe()
        assert not place.has_copy("k9-2")
        assert p.poll() is None, "the copy finished before kill -9: make the trail bigger"
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert_dead_holder_status(trailcopy, place, "k9-1")
    again = trailcopy("copy", "--source", source_dir(m), "--store", store, "--start", "2024-09-02",
                      "--end", "2024-09-05", "--copy-id", "k9-3", "--json")
    assert again.returncode == 2 and "overlaps copy `k9-1`" in again.stderr, again.describe()
    assert not place.has_copy("k9-3")

    rr = trailcopy("retry", "k9-1", "--store", store, "--json", timeout=180)
    assert rr.returncode == 0 and rr.json["status"] == "COMPLETED", rr.describe()
    assert stats_diff(rr.json["statistics"], exp) == {}, stats_diff(rr.json["statistics"], exp)
    assert_exact(store, exp, "after kill -9 and retry")


# ============================================================================ 6. Ctrl-C
def test_ctrl_c_stops_then_retry_completes(trailcopy_bin, trailcopy, slow_trail, tmp_path):
    m, exp = slow_trail
    place = LocalPlace(tmp_path)
    store = tmp_path / "store"
    p = spawn_slow(trailcopy_bin, m, store, "int-1")
    wait_committed(p, store, "int-1")
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    if p.returncode == 0:
        pytest.fail("the copy finished before Ctrl-C reached it: make the trail bigger")
    assert p.returncode == 1, f"exit {p.returncode}\n{out[-2000:]}\n{err[-2000:]}"
    rec = json.loads(out)
    assert rec["status"] == "STOPPED", rec
    assert 0 < rec["statistics"]["eventsCompleted"] < exp["eventsCompleted"], rec["statistics"]
    fj = failures(trailcopy, place, "int-1")
    assert not [f for f in fj["failures"] if f["errorType"] == "WorkItemFailed"], fj
    assert fj["failures"] == [], f"the stop made failure entries: {fj['failures']}"
    st = status(trailcopy, place, "int-1")
    assert st.returncode == 1 and st.json["status"] == "STOPPED", st.describe()

    rr = trailcopy("retry", "int-1", "--store", store, timeout=180)
    assert rr.returncode == 0 and "COMPLETED" in rr.stdout, rr.describe()
    assert "re-read" not in rr.stdout, f"no failed files, nothing re-read, nothing to say:\n{rr.describe()}"
    st = status(trailcopy, place, "int-1")
    assert st.json["status"] == "COMPLETED", st.describe()
    assert stats_diff(st.json["statistics"], exp) == {}, stats_diff(st.json["statistics"], exp)
    assert_exact(store, exp, "after Ctrl-C and retry")
    check_attempts(st.json, [dict(kind="copy", filesReread=0, status="STOPPED"),
                             dict(kind="retry", filesReread=0, filesFixed=0, status="COMPLETED", failedEntries=0)])


# ============================================================================ 5. windows: the future and the open tail
def recent_trail(logs: Logs, place, now: dt.datetime, minutes_ago=(100, 80, 60, 40, 20, 5), n=8) -> list:
    """Files delivered minutes_ago before now (events up to 14 minutes before each): (key, events)."""
    out = []
    for m_ago in minutes_ago:
        delivered = floor_minute(now - dt.timedelta(minutes=m_ago))
        recs = logs.before(delivered, n)
        key = logs.key(delivered)
        place.put(key, gz(recs))
        out.append((key, recs))
    return out


def test_a_range_wholly_in_the_future_is_refused(trailcopy, place):
    logs = Logs(307)
    recent_trail(logs, place, utcnow(), minutes_ago=(30,), n=2)
    r = copy(trailcopy, place, "fut-0", "--start", "2099-01-01", "--end", "2099-02-01")
    assert r.returncode == 2, r.describe()
    assert "in the future" in r.stderr, r.describe()
    assert not place.has_copy("fut-0"), "a refused copy wrote a record"


def test_end_after_now_is_clipped_and_the_tail_stays_open(trailcopy, place):
    logs = Logs(308)
    now0 = utcnow()
    files = recent_trail(logs, place, now0)
    events = [e for _, recs in files for e in recs]
    start = fmt(floor_minute(now0 - dt.timedelta(hours=3)))
    t0 = utcnow().replace(microsecond=0)
    r = copy(trailcopy, place, "fut-1", "--start", start, "--end", "2099-01-01")
    t1 = utcnow()
    assert r.returncode == 0 and r.json["status"] == "COMPLETED", r.describe()
    req = r.json["request"]
    end = ts(req["end"])
    assert t0 <= end <= t1, f"the end is not the planning time: {req['end']} (ran {fmt(t0)} .. {fmt(t1)})"
    assert req.get("requestedEnd") == "2099-01-01T00:00:00Z", req
    assert req.get("deliveryAllowanceSeconds") == 3600, req
    ct1 = ts(req["completeThrough"])
    assert ct1 == end - dt.timedelta(hours=1), req
    assert r.json["statistics"]["eventsCompleted"] == len(events), r.json["statistics"]
    txt = status(trailcopy, place, "fut-1", json_out=False)
    assert "clipped to now" in txt.stdout, txt.describe()

    # the open tail onwards: not an overlap; its events are already stored (duplicates, not stored again)
    r2 = copy(trailcopy, place, "fut-2", "--start", req["completeThrough"], "--end", "2099-01-01")
    assert r2.returncode == 0 and r2.json["status"] == "COMPLETED", r2.describe()
    in_tail = sum(1 for e in events if ts(e["eventTime"]) >= ct1)
    s2 = r2.json["statistics"]
    assert (s2["eventsCompleted"], s2["eventsDuplicate"]) == (0, in_tail), (
        f"the tail copy stored {s2['eventsCompleted']} (expected 0) and found {s2['eventsDuplicate']} duplicates "
        f"(expected the {in_tail} events already stored from the tail): {s2}")
    assert_each_once(place.store_dir(), ids_of(events), "after the tail copy")

    # what fut-1 copied completely is still refused
    r3 = copy(trailcopy, place, "fut-3", "--start", start, "--end", "2099-01-01")
    assert r3.returncode == 2 and "overlaps copy `" in r3.stderr, r3.describe()
    assert not place.has_copy("fut-3")


def test_since_last_picks_up_late_files(trailcopy, place):
    logs = Logs(309)
    now0 = utcnow()
    on_time = recent_trail(logs, place, now0)
    on_time_events = [e for _, recs in on_time for e in recs]

    r1 = copy(trailcopy, place, "late-1", "--last", "2h")
    assert r1.returncode == 0 and r1.json["status"] == "COMPLETED", r1.describe()
    req1 = r1.json["request"]
    ct1, end1 = ts(req1["completeThrough"]), ts(req1["end"])
    assert ct1 == end1 - dt.timedelta(hours=1) and req1.get("deliveryAllowanceSeconds") == 3600, req1
    rows_before = sum(id_counts(place.store_dir()).values())
    assert rows_before == len(on_time_events), (rows_before, len(on_time_events))

    # delivered late: events of the last hour in files delivered after the first copy planned
    late_events = []
    for _ in range(2):
        recs = logs.between(now0 - dt.timedelta(minutes=50), now0 - dt.timedelta(minutes=10), 8)
        place.put(logs.key(floor_minute(utcnow())), gz(recs))
        late_events += recs
    assert all(ts(e["eventTime"]) >= ct1 for e in late_events)

    r2 = copy(trailcopy, place, "late-2", "--since-last")
    assert r2.returncode == 0 and r2.json["status"] == "COMPLETED", r2.describe()
    assert ts(r2.json["request"]["start"]) == ct1, (r2.json["request"], req1)
    s2 = r2.json["statistics"]
    rows_after = sum(id_counts(place.store_dir()).values())
    in_tail = sum(1 for e in on_time_events if ts(e["eventTime"]) >= ct1)
    counts = (f"before: {rows_before} rows of {len(on_time_events)} on-time events; then {len(late_events)} events "
              f"delivered late; after --since-last: {rows_after} rows, expected {len(on_time_events) + len(late_events)}; "
              f"the second copy stored {s2['eventsCompleted']} and found {s2['eventsDuplicate']} duplicates "
              f"({in_tail} on-time events in the first copy's open tail)")
    print(f"\n[{place.kind}] late delivery: {counts}")
    assert_each_once(place.store_dir(), ids_of(on_time_events) + ids_of(late_events), counts)
    assert (s2["eventsCompleted"], s2["eventsDuplicate"]) == (len(late_events), in_tail), counts

    # back to back: nothing new, nothing twice
    r3 = copy(trailcopy, place, "late-3", "--since-last")
    assert r3.returncode == 0 and r3.json["status"] == "COMPLETED", r3.describe()
    assert ts(r3.json["request"]["start"]) == ts(r2.json["request"]["completeThrough"]), r3.json["request"]
    assert r3.json["statistics"]["eventsCompleted"] == 0, r3.json["statistics"]
    assert_each_once(place.store_dir(), ids_of(on_time_events) + ids_of(late_events), "after a third --since-last")


def test_since_last_needs_an_earlier_completed_copy(trailcopy, tmp_path):
    place = LocalPlace(tmp_path / "a")
    logs = Logs(310)
    recent_trail(logs, place, utcnow(), minutes_ago=(30,), n=2)
    r = copy(trailcopy, place, "sl-0", "--since-last")
    assert r.returncode == 2, r.describe()
    assert "--start" in r.stderr or "--last" in r.stderr, r.describe()
    assert not place.has_copy("sl-0")
    for extra in (["--last", "1h"], ["--start", "2024-01-01", "--end", "2024-01-02"]):
        r = copy(trailcopy, place, "sl-1", "--since-last", *extra)
        assert r.returncode == 2 and "--since-last" in r.stderr, r.describe()
        assert not place.has_copy("sl-1")
    # a completed copy of another source into the store does not count
    other = LocalPlace(tmp_path / "b")
    recent_trail(Logs(311), other, utcnow(), minutes_ago=(30,), n=2)
    r = copy(trailcopy, other, "sl-other", "--last", "2h", store=place.store())
    assert r.returncode == 0, r.describe()
    r = copy(trailcopy, place, "sl-2", "--since-last")
    assert r.returncode == 2, r.describe()
    assert not place.has_copy("sl-2")


def test_delivery_allowance(trailcopy, tmp_path):
    place = LocalPlace(tmp_path)
    recent_trail(Logs(312), place, utcnow(), minutes_ago=(30,), n=2)
    r = copy(trailcopy, place, "da-1", "--last", "2h", "--delivery-allowance", "30m")
    assert r.returncode == 0, r.describe()
    req = r.json["request"]
    assert req["deliveryAllowanceSeconds"] == 1800, req
    assert ts(req["completeThrough"]) == ts(req["end"]) - dt.timedelta(minutes=30), req
    old = copy(trailcopy, place, "da-2", "--start", "2024-01-01", "--end", "2024-01-02", store=place.store("s2"))
    assert old.returncode == 0, old.describe()
    assert ts(old.json["request"]["completeThrough"]) == ts("2024-01-02T00:00:00Z"), old.json["request"]
    assert "requestedEnd" not in old.json["request"] or old.json["request"]["requestedEnd"] == "2024-01-02T00:00:00Z"
