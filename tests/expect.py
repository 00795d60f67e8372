"""Expected outcome of a copy, computed from a gen_trail.py manifest by the rules of docs/contracts.md.

Selection rules (contracts.md):
  * day prefix in scope iff its UTC day intersects [start - 15 min, end + 60 min);
  * a file in such a prefix not named like a CloudTrail log file (`.DS_Store`, `notes-x.txt`; manifest
    `notLogFile`) is skipped by name: filesSkipped and filesNotLogFiles, a "skipped" entry, not a failure;
  * a log file in such a prefix is read iff its name timestamp is in [start - 15 min, end + 60 min)
    (unparseable timestamp: read); a read file that is not .json.gz is an UnsupportedFileType failure;
  * an event is copied iff it is valid, max(start, retentionCutoff) <= eventTime < end, and its dedup key
    (eventID, else the record's hash) was not already copied within the same account-region-day, from
    any trail (an organization trail's AWSLogs/o-x/<acct>/... and an account trail's AWSLogs/<acct>/...).
Every event read is counted once: invalid, out of range, duplicate or copied. Events of a file that
fails as a whole (corrupt gzip, not JSON, not {"Records":[...]}) are not read.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict

BEFORE = dt.timedelta(minutes=15)
AFTER = dt.timedelta(minutes=60)


def ts(s: str) -> dt.datetime:
    """RFC 3339 / YYYY-MM-DD -> aware UTC datetime."""
    if len(s) == 10:
        return dt.datetime.fromisoformat(s).replace(tzinfo=dt.timezone.utc)
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(dt.timezone.utc)


def day_group(day_prefix: str) -> str:
    """The account-region-day of a day prefix, whatever trail delivered it: <acct>/CloudTrail/<region>/Y/M/D."""
    return "/".join(day_prefix.rstrip("/").split("/")[-6:])


def expected(manifest: dict, start, end, retention_cutoff=None) -> dict:
    start = ts(start) if isinstance(start, str) else start
    end = ts(end) if isinstance(end, str) else end
    lo = max(start, retention_cutoff) if retention_cutoff else start
    win_lo, win_hi = start - BEFORE, end + AFTER

    events_by_file = defaultdict(list)
    for e in manifest["events"]:
        events_by_file[e["file"]].append(e)

    trail_files = [f for f in manifest["files"] if f["kind"] == "trail"]
    prefixes = set()
    for f in trail_files:
        d = ts(f["day"])
        if d < win_hi and d + dt.timedelta(days=1) > win_lo:
            prefixes.add(f["dayPrefix"])

    out = {"prefixesFound": len(prefixes), "filesFound": 0, "filesSkipped": 0, "filesNotLogFiles": 0,
           "filesCompleted": 0, "eventsRead": 0, "eventsCompleted": 0, "eventsOutOfRange": 0, "eventsInvalid": 0,
           "eventsDuplicate": 0, "bytesInScope": 0}
    failures = []  # (key, errorType)
    skipped = []  # keys of files not named like log files
    copied = []  # canonical JSON of every copied event
    seen = defaultdict(set)
    for f in sorted(trail_files, key=lambda f: f["key"]):
        if f["dayPrefix"] not in prefixes:
            continue
        out["filesFound"] += 1
        if f.get("notLogFile"):
            out["filesSkipped"] += 1
            out["filesNotLogFiles"] += 1
            skipped.append(f["key"])
            continue
        if f["fileTime"] is not None and not (win_lo <= ts(f["fileTime"]) < win_hi):
            out["filesSkipped"] += 1
            continue
        out["bytesInScope"] += f["size"]
        if f["fatal"]:
            failures.append((f["key"], f["errorType"]))
            continue
        out["filesCompleted"] += 1
        if f["errorType"]:
            failures.append((f["key"], f["errorType"]))
        evs = sorted(events_by_file[f["key"]], key=lambda e: e["index"])
        assert len(evs) == f["events"], "manifest was written with --manifest-detail summary"
        for e in evs:
            out["eventsRead"] += 1
            if not e["valid"]:
                out["eventsInvalid"] += 1
                continue
            t = ts(e["eventTime"])
            if not (lo <= t < end):
                out["eventsOutOfRange"] += 1
                continue
            key = e["eventID"] if e["eventID"] is not None else e["json"]
            group = day_group(f["dayPrefix"])
            if key in seen[group]:
                out["eventsDuplicate"] += 1
                continue
            seen[group].add(key)
            out["eventsCompleted"] += 1
            copied.append(e["json"])
    out["failures"] = sorted(failures)
    out["failedEntries"] = len(failures)
    out["skipped"] = sorted(skipped)
    out["copied"] = copied
    return out


# Statistics compared exactly with the copy record.
EXACT_STATS = ("prefixesFound", "filesFound", "filesSkipped", "filesCompleted", "eventsRead", "eventsCompleted",
               "eventsOutOfRange", "eventsInvalid", "eventsDuplicate", "failedEntries")


def stats_diff(record_stats: dict, exp: dict) -> dict:
    return {k: (record_stats.get(k), exp[k]) for k in EXACT_STATS if record_stats.get(k) != exp[k]}


def canon(v) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
