"""Bad input (issue 6.3).

A hand-made trail day (one day prefix) mixes good files with every kind of damage a trail bucket can
hold: corrupt gzip, truncated gzip, gzip of non-JSON, JSON without Records, Records not an array,
events that are not objects, a bad eventTime, an event over 1 MB, non-UTF-8 bytes inside a string,
an empty gzip file, a zero-byte object, a non-gzip file, and keys with spaces, unicode, '+' and '%'.
Copied from a local folder and from S3 (moto), each defect must give a failure entry (errorType +
a location naming the file + a message) or an invalid-event count with a clear message; everything
readable in the same day prefix is still copied; nothing panics (exit 0/1, never 101).

Invalid copy requests (bad URIs, end before start, unknown flags, a store inside the source) are
refused before any work: exit 2, a message naming the problem, nothing written.

The right behaviour, stated where it is not obvious: the truncated file's readable events are
salvaged; a non-UTF-8 string spoils its event, not its file; an event over 1 MB is counted invalid
with a message saying so; `s3:/x` is not taken for a local folder; store-inside-source is decided on
resolved paths (symlinks, `..`).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
import subprocess
import zlib
from collections import Counter
from pathlib import Path

import pytest

from conftest import base_env, duck, parquet_files, read_store, rebuild_event
from expect import canon

logging.getLogger("werkzeug").setLevel(logging.WARNING)

ACCT = "111122223333"
REGION = "us-east-1"
DAY_PREFIX = f"AWSLogs/{ACCT}/CloudTrail/{REGION}/2024/04/10/"
START, END = "2024-04-10T00:00:00Z", "2024-04-11T00:00:00Z"
ONE_MB = 1024 * 1024


# ----------------------------------------------------------------------------- the trail
class Trail:
    def __init__(self):
        self.rng = random.Random(606)
        self.n = 0
        self.files = {}  # key -> bytes
        self.kind = {}  # defect kind -> key
        self.good_ids = set()  # eventIDs that must be copied
        self.maybe_ids = set()  # eventIDs whose copy is the right behaviour under test elsewhere
        self.salvage_ids = set()  # complete events in the readable part of the truncated file
        self.events = {}  # eventID -> event (JSON value)

    def event(self, hhmm: str, **over) -> dict:
        self.n += 1
        minute = int(hhmm[:2]) * 60 + int(hhmm[2:]) - 1 - self.rng.randrange(10)
        ev = {
            "eventVersion": "1.08",
            "userIdentity": {"type": "IAMUser", "principalId": "AIDAEXAMPLE", "accountId": ACCT,
                             "arn": f"arn:aws:iam::{ACCT}:user/alice", "userName": "alice"},
            "eventTime": f"2024-04-10T{minute // 60:02d}:{minute % 60:02d}:{self.rng.randrange(60):02d}Z",
            "eventSource": "s3.amazonaws.com", "eventName": "GetObject", "awsRegion": REGION,
            "sourceIPAddress": "203.0.113.%d" % self.rng.randrange(1, 255), "userAgent": "aws-cli/2.15",
            "requestParameters": {"bucketName": "data", "key": "k/" + "".join(self.rng.choices("abcdefgh0123", k=40))},
            "responseElements": None, "requestID": "REQ%012d" % self.n,
            "eventID": "00000000-0000-4000-8000-%012d" % self.n, "readOnly": True, "eventType": "AwsApiCall",
            "managementEvent": False, "recipientAccountId": ACCT, "eventCategory": "Data",
        }
        ev.update(over)
        self.events[ev["eventID"]] = ev
        return ev

    def name(self, hhmm: str, unique: str) -> str:
        return f"{DAY_PREFIX}{ACCT}_CloudTrail_{REGION}_20240410T{hhmm}Z_{unique}.json.gz"

    def add(self, kind, key, body: bytes):
        assert key not in self.files
        self.files[key] = body
        if kind:
            self.kind[kind] = key
        return key

    def good_file(self, kind, hhmm, unique, n=4):
        evs = [self.event(hhmm) for _ in range(n)]
        self.good_ids |= {e["eventID"] for e in evs}
        return self.add(kind, self.name(hhmm, unique), gzip.compress(json.dumps({"Records": evs}).encode(), mtime=0))

    def truncated_file(self, hhmm, unique, n=12):
        """A gzip cut mid-stream, at a point well inside an event: events[:k] are readable whole."""
        evs = [self.event(hhmm) for _ in range(n)]
        parts = [json.dumps(e).encode() for e in evs]
        text = b'{"Records": [' + b", ".join(parts) + b"]}"
        ends, pos = [], len(b'{"Records": [')
        for p in parts:
            pos += len(p)
            ends.append(pos)
            pos += 2
        full = gzip.compress(text, mtime=0)
        for cut in range(len(full) * 6 // 10, len(full) - 16):
            readable = len(zlib.decompressobj(31).decompress(full[:cut]))
            k = sum(1 for e in ends if e <= readable)
            if k >= 3 and readable - ends[k - 1] > 100 and ends[k] - readable > 100:
                break
        else:
            raise AssertionError("no good cut point")
        self.salvage_ids = {e["eventID"] for e in evs[:k]}
        return self.add("truncated-gzip", self.name(hhmm, unique), full[:cut])


def make_trail() -> Trail:
    t = Trail()
    t.good_file(None, "0100", "good0000000001")
    t.good_file(None, "0200", "good0000000002")
    t.add("corrupt-gzip", t.name("0300", "corrupt0000001"),
          b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + bytes(t.rng.getrandbits(8) for _ in range(400)))
    t.truncated_file("0400", "truncated00001")
    t.add("gzip-non-json", t.name("0500", "nonjson0000001"),
          gzip.compress(b"2024-04-10 05:00:00 INFO this is a text log, not JSON\n", mtime=0))
    t.add("no-records", t.name("0600", "norecords00001"), gzip.compress(b'{"records": []}', mtime=0))
    t.add("records-not-array", t.name("0610", "notarray000001"),
          gzip.compress(b'{"Records": {"eventName": "x"}}', mtime=0))

    # events that are not objects: 4 of 6 records
    a, b = t.event("0700"), t.event("0700")
    t.good_ids |= {a["eventID"], b["eventID"]}
    t.add("not-objects", t.name("0700", "notobjects0001"),
          gzip.compress(json.dumps({"Records": [a, 42, "an event", None, ["eventName", "x"], b]}).encode(), mtime=0))

    # bad eventTime: 2 of 4 records
    a, b = t.event("0800"), t.event("0800")
    bad1, bad2 = t.event("0800", eventTime="yesterday"), t.event("0800", eventTime="2024-02-30T25:61:00Z")
    t.good_ids |= {a["eventID"], b["eventID"]}
    t.add("bad-eventTime", t.name("0800", "badtime0000001"),
          gzip.compress(json.dumps({"Records": [a, bad1, bad2, b]}).encode(), mtime=0))

    # an event over 1 MB between two good ones
    a, b = t.event("0900"), t.event("0900")
    big = t.event("0900", requestParameters={"bucketName": "data", "policy": "x" * (ONE_MB + 1000)})
    t.big_id = big["eventID"]
    t.good_ids |= {a["eventID"], b["eventID"]}
    t.add("event-over-1mb", t.name("0900", "bigevent000001"),
          gzip.compress(json.dumps({"Records": [a, big, b]}).encode(), mtime=0))

    # non-UTF-8 bytes inside one event's string
    a, b, c = t.event("1000"), t.event("1000"), t.event("1000", userAgent="UTF8_PLACEHOLDER")
    t.utf8_good = {a["eventID"], b["eventID"]}
    t.utf8_bad = c["eventID"]
    text = json.dumps({"Records": [a, c, b]}).encode().replace(b"UTF8_PLACEHOLDER", b"agent-\xff\xfe\xc3(-x")
    t.add("non-utf8", t.name("1000", "nonutf80000001"), gzip.compress(text, mtime=0))

    t.add("empty-gzip", t.name("1100", "emptygzip00001"), gzip.compress(b"", mtime=0))
    t.add("zero-byte", t.name("1110", "zerobyte000001"), b"")
    t.add("not-gzip", f"{DAY_PREFIX}{ACCT}_CloudTrail_{REGION}_20240410T1120Z_plainjson00001.json",
          json.dumps({"Records": [t.event("1120")]}).encode())

    # keys with odd characters: good files, and one damaged file whose failure must name it exactly
    t.good_file("odd-space", "1200", "with space 01")
    t.good_file("odd-unicode", "1210", "ünïcødé-日本")
    t.good_file("odd-plus", "1220", "plus+sign+01")
    t.good_file("odd-percent", "1230", "per%25cent%")
    t.add("odd-corrupt", t.name("1240", "bad name+%é ~"), b"\x1f\x8b\x08\x00garbage that is not deflate")
    return t


TRAIL = make_trail()

# kind -> allowed errorTypes, and words (any of) the message must contain (lower case)
FILE_FAILURES = {
    "corrupt-gzip": ({"CorruptGzip"}, ()),
    "truncated-gzip": ({"CorruptGzip"}, ()),
    "gzip-non-json": ({"InvalidJson"}, ()),
    "no-records": ({"InvalidLogFile"}, ("records",)),
    "records-not-array": ({"InvalidLogFile"}, ("records",)),
    "empty-gzip": ({"InvalidJson", "InvalidLogFile", "CorruptGzip"}, ("empty",)),
    "zero-byte": ({"InvalidJson", "InvalidLogFile", "CorruptGzip"}, ("empty", "0 bytes", "zero")),
    "not-gzip": ({"UnsupportedFileType"}, ("json.gz",)),
    "odd-corrupt": ({"CorruptGzip"}, ()),
    "not-objects": ({"InvalidEvents"}, ("not a json object",)),
    "bad-eventTime": ({"InvalidEvents"}, ("eventtime",)),
}


# ----------------------------------------------------------------------------- the copies
def write_local(root: Path):
    for key, body in TRAIL.files.items():
        p = root / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(body)


@pytest.fixture(scope="module", params=["local", "s3"])
def bad_copy(request, trailcopy, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"bad-{request.param}")
    store = base / "store"
    env = {}
    if request.param == "local":
        src = base / "trail"
        write_local(src)
        source = str(src)
        location = lambda key: str(src / key)  # noqa: E731
    else:
        moto = request.getfixturevalue("moto_s3")
        s3 = moto.client()
        s3.create_bucket(Bucket="bad-input-src")
        for key, body in TRAIL.files.items():
            s3.put_object(Bucket="bad-input-src", Key="trail/" + key, Body=body)
        got = set(moto.list_keys("bad-input-src"))
        assert got == {"trail/" + k for k in TRAIL.files}, "moto mangled a key: " + str(got ^ {"trail/" + k for k in TRAIL.files})
        source = "s3://bad-input-src/trail"
        location = lambda key: f"s3://bad-input-src/trail/{key}"  # noqa: E731
        env = moto.env
    r = trailcopy("copy", "--source", source, "--store", store, "--start", START, "--end", END,
                  "--copy-id", "bad-1", "--json", env=env, timeout=120)
    f = trailcopy("failures", "bad-1", "--store", store, "--json", env=env)
    return r, f, store, location


def by_location(bad_copy) -> dict:
    r, f, store, location = bad_copy
    assert f.returncode in (0, 1), f.describe()
    out = {}
    for e in f.json["failures"]:
        out.setdefault(e["location"], []).append(e)
    return out


def store_ids(store) -> Counter:
    return Counter(row["eventID"] for row in read_store(store))


def test_no_panic_and_copy_finishes_failed(bad_copy):
    r, f, store, location = bad_copy
    assert r.returncode != 101 and "panicked" not in r.stderr, r.describe()
    assert r.returncode == 1, r.describe()
    rec = r.json
    assert rec["status"] == "FAILED"
    s = rec["statistics"]
    assert s["eventsRead"] == s["eventsCompleted"] + s["eventsOutOfRange"] + s["eventsInvalid"] + s["eventsDuplicate"], s
    assert s["prefixesFound"] == 1 and s["prefixesCompleted"] == 1, s
    assert s["failedEntries"] == len(f.json["failures"]), (s, f.json)


@pytest.mark.parametrize("kind", sorted(FILE_FAILURES))
def test_failure_entry_names_the_file(bad_copy, kind):
    r, f, store, location = bad_copy
    types, words = FILE_FAILURES[kind]
    loc = location(TRAIL.kind[kind])
    entries = by_location(bad_copy).get(loc)
    assert entries, f"no failure entry at {loc!r}; entries at: {sorted(by_location(bad_copy))}"
    assert len(entries) == 1, entries
    e = entries[0]
    assert e["errorType"] in types, e
    assert e["status"] == "FAILED" and len(e["errorMessage"]) >= 10, e
    if words:
        assert any(w in e["errorMessage"].lower() for w in words), f"message should say {words}: {e}"


def test_every_failure_is_a_known_file(bad_copy):
    r, f, store, location = bad_copy
    known = {location(k) for k in TRAIL.files}
    unknown = [loc for loc in by_location(bad_copy) if loc not in known]
    assert not unknown, f"failure locations that name no source file: {unknown}"


def test_good_files_and_good_events_copied(bad_copy):
    """Every good file (odd keys included) and every valid event of a partly bad file is in the store,
    once; nothing else is except the events the salvage / UTF-8 / 1 MB tests below judge."""
    r, f, store, location = bad_copy
    ids = store_ids(store)
    assert not [i for i, n in ids.items() if n > 1], "eventIDs stored twice"
    missing = TRAIL.good_ids - set(ids)
    assert not missing, f"{len(missing)} good events missing, e.g. {sorted(missing)[:3]}"
    allowed = TRAIL.good_ids | TRAIL.salvage_ids | TRAIL.utf8_good | {TRAIL.utf8_bad, TRAIL.big_id}
    assert set(ids) <= allowed, f"unexpected events: {sorted(set(ids) - allowed)[:3]}"
    rows = read_store(store)
    for row in rows:  # stored events rebuild exactly
        assert canon(rebuild_event(row)) == canon(TRAIL.events[row["eventID"]]), row["eventID"]


@pytest.mark.parametrize("kind", ["odd-space", "odd-unicode", "odd-plus", "odd-percent"])
def test_odd_keys_are_read(bad_copy, kind):
    r, f, store, location = bad_copy
    body = json.loads(gzip.decompress(TRAIL.files[TRAIL.kind[kind]]))
    want = {e["eventID"] for e in body["Records"]}
    assert want <= set(store_ids(store)), f"{TRAIL.kind[kind]!r}: events not copied"
    assert location(TRAIL.kind[kind]) not in by_location(bad_copy)


def test_invalid_events_counted_with_reasons(bad_copy):
    r, f, store, location = bad_copy
    s = r.json["statistics"]
    # 4 non-objects + 2 bad eventTimes + the event over 1 MB (+ the non-UTF-8 one, if not copied)
    assert s["eventsInvalid"] >= 6, s
    e = by_location(bad_copy)[location(TRAIL.kind["not-objects"])][0]
    assert "4 of 6" in e["errorMessage"] and "Records[1]" in e["errorMessage"], e
    e = by_location(bad_copy)[location(TRAIL.kind["bad-eventTime"])][0]
    assert "2 of 4" in e["errorMessage"] and "yesterday" in e["errorMessage"], e


def test_event_over_1mb_is_invalid_with_a_clear_message(bad_copy):
    """An event over 1 MB is not a CloudTrail event: counted invalid, its file's entry says why; the
    events around it are copied."""
    r, f, store, location = bad_copy
    ids = store_ids(store)
    key = TRAIL.kind["event-over-1mb"]
    body = json.loads(gzip.decompress(TRAIL.files[key]))
    others = {e["eventID"] for e in body["Records"] if e["eventID"] != TRAIL.big_id}
    assert others <= set(ids), "the events next to the big one were not copied"
    entries = by_location(bad_copy).get(location(key))
    assert entries and entries[0]["errorType"] == "InvalidEvents", \
        f"no InvalidEvents entry for the file with a {ONE_MB + 1000}+ byte event (stored: {TRAIL.big_id in ids})"
    msg = entries[0]["errorMessage"].lower()
    assert any(w in msg for w in ("mb", "bytes", "large", "size")), entries[0]
    assert TRAIL.big_id not in ids


def test_truncated_gzip_readable_events_are_copied(bad_copy):
    """A truncated gzip: the events whose JSON is whole in the readable part are copied (counted as
    read), and the file still gets its CorruptGzip entry (test_failure_entry_names_the_file)."""
    r, f, store, location = bad_copy
    ids = set(store_ids(store))
    assert TRAIL.salvage_ids, "the generator found no cut point"
    missing = TRAIL.salvage_ids - ids
    assert not missing, (f"{len(missing)} of the {len(TRAIL.salvage_ids)} complete events before the cut were not "
                         f"copied (the whole file was dropped)")


def test_non_utf8_spoils_the_event_not_the_file(bad_copy):
    """Bytes that are not UTF-8 inside one event's string: the other events of the file are copied;
    the file's entry says UTF-8 (the event itself is counted invalid, or copied with replacement
    characters — either way it is reported)."""
    r, f, store, location = bad_copy
    ids = set(store_ids(store))
    key = TRAIL.kind["non-utf8"]
    entries = by_location(bad_copy).get(location(key), [])
    assert TRAIL.utf8_good <= ids, (f"the 2 good events of the file were not copied; its entries: "
                                    f"{[(e['errorType'], e['errorMessage'][:120]) for e in entries]}")
    assert entries and any(w in entries[0]["errorMessage"].lower() for w in ("utf-8", "utf8", "unicode")), entries


# ----------------------------------------------------------------------------- invalid requests
def run_in(cwd: Path, trailcopy_bin, *args, env=None):
    """trailcopy with cwd=cwd (a URI mistaken for a local path must not land in the repo)."""
    e = base_env()
    e.update(env or {})
    return subprocess.run([trailcopy_bin, *map(str, args)], cwd=cwd, env=e, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture
def small_source(tmp_path):
    src = tmp_path / "src"
    write_local(src)
    return src


def files_under(d: Path) -> list:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


INVALID_REQUESTS = {
    # id: (args builder (src, tmp) -> args, words the message names (any of))
    "source s3:/x": (lambda src, t: ["--source", "s3:/x", "--store", t / "st"], ("--source",)),
    "source s3://UPPER": (lambda src, t: ["--source", "s3://UPPER", "--store", t / "st"], ("--source",)),
    "source ftp://x": (lambda src, t: ["--source", "ftp://x", "--store", t / "st"], ("--source",)),
    "store s3:/x": (lambda src, t: ["--source", src, "--store", "s3:/x"], ("--store",)),
    "store s3://UPPER/p": (lambda src, t: ["--source", src, "--store", "s3://UPPER/p"], ("--store",)),
    "store ftp://x/y": (lambda src, t: ["--source", src, "--store", "ftp://x/y"], ("--store",)),
    "end before start": (lambda src, t: ["--source", src, "--store", t / "st", "--start", END, "--end", START],
                         ("--end", "--start")),
    "empty range": (lambda src, t: ["--source", src, "--store", t / "st", "--start", START, "--end", START],
                    ("--end", "--start")),
    "unknown flag": (lambda src, t: ["--source", src, "--store", t / "st", "--frobnicate", "1"], ("--frobnicate",)),
    "store = source": (lambda src, t: ["--source", src, "--store", src], ("--store",)),
    "store inside source": (lambda src, t: ["--source", src, "--store", src / "eds"], ("--store",)),
    "store inside source via ..": (lambda src, t: ["--source", src, "--store", f"{src}/AWSLogs/../eds"], ("--store",)),
    "store inside source, relative": (lambda src, t: ["--source", "src", "--store", "src/eds"], ("--store",)),
}


@pytest.mark.parametrize("case", sorted(INVALID_REQUESTS))
def test_invalid_request_refused_before_any_work(case, trailcopy_bin, small_source, tmp_path):
    build, words = INVALID_REQUESTS[case]
    args = build(small_source, tmp_path)
    if "--start" not in args and "--end" not in args:
        args += ["--start", START, "--end", END]
    before = files_under(tmp_path)
    p = run_in(tmp_path, trailcopy_bin, "copy", *args, "--copy-id", "inv-1")
    assert "panicked" not in p.stderr, p.stderr
    assert p.returncode == 2, f"exit {p.returncode}\nstdout: {p.stdout[-1500:]}\nstderr: {p.stderr[-1500:]}"
    assert any(w in p.stderr for w in words), f"the message should name {words}: {p.stderr}"
    assert files_under(tmp_path) == before, "files were written by a refused request"


@pytest.mark.parametrize("source,store", [
    ("s3://bad-req-src/trail", "s3://bad-req-src/trail/eds"),
    ("s3://bad-req-src/trail/", "s3://bad-req-src/trail/AWSLogs/eds"),
    ("s3://bad-req-src/trail", "s3://bad-req-src/trail"),
])
def test_s3_store_inside_source_refused(source, store, trailcopy_bin, moto_s3, tmp_path):
    s3 = moto_s3.client()
    try:
        s3.create_bucket(Bucket="bad-req-src")
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    before = moto_s3.list_keys("bad-req-src")
    p = run_in(tmp_path, trailcopy_bin, "copy", "--source", source, "--store", store, "--start", START,
               "--end", END, "--copy-id", "inv-s3", env=moto_s3.env)
    assert p.returncode == 2, f"exit {p.returncode}\n{p.stdout[-1500:]}\n{p.stderr[-1500:]}"
    assert "--store" in p.stderr and "inside" in p.stderr, p.stderr
    assert moto_s3.list_keys("bad-req-src") == before


def test_store_inside_source_through_a_symlink_refused(trailcopy_bin, small_source, tmp_path):
    """`linked` -> src/AWSLogs: a store under `linked/` is inside the source (paths are compared after
    resolving links), and the copy would write into the trail."""
    (tmp_path / "linked").symlink_to(small_source / "AWSLogs")
    before = files_under(small_source)
    p = run_in(tmp_path, trailcopy_bin, "copy", "--source", small_source, "--store", tmp_path / "linked" / "eds",
               "--start", START, "--end", END, "--copy-id", "inv-link")
    assert p.returncode == 2, f"exit {p.returncode}: the store was accepted; files written into the source: " \
                              f"{sorted(set(files_under(small_source)) - set(before))[:3]}"
    assert "--store" in p.stderr
    assert files_under(small_source) == before


def test_store_next_to_the_source_via_dotdot_accepted(trailcopy_bin, small_source, tmp_path):
    """`SRC/../eds` is a sibling of the source, not inside it: a valid request."""
    p = run_in(tmp_path, trailcopy_bin, "copy", "--source", small_source, "--store", f"{small_source}/../eds",
               "--start", START, "--end", END, "--copy-id", "sibling", "--json")
    assert p.returncode in (0, 1), f"exit {p.returncode}: {p.stderr}"
    assert (tmp_path / "eds" / "copies" / "sibling" / "record.json").exists()
