"""Issue 30's three scenarios, measured on one binary (run it on the old and the new one):

1. race: two copies of overlapping ranges of the sample trail into one local store, started at the
   same instant, N rounds: how many rounds both ran, rows stored, duplicate rows;
2. repaired file: one log file of the sample trail cut short; copy; put the good file back; retry:
   events in the store after each step (the clean copy stores 1,762);
3. late delivery: ~300 events of the last two hours in 5-minute files, the files of 40 of them
   delivered late; a copy of the two hours, the late files arrive, then the next copy (the new
   binary: `--since-last`; the old one, which has no such flag: the back-to-back range from the
   first copy's end to now): events stored of 300, duplicates.

    .venv/bin/python benches/retry_claims.py --bin target/debug/trailcopy [--rounds 20]

Not a test (no assertions): it prints the counts for the issue note and benches/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import duckdb  # noqa: E402

from test_retry_fixes import Logs, floor_minute, fmt, gz, utcnow  # noqa: E402

SAMPLE = REPO / "examples" / "sample-trail"
RANGES = (("2026-11-01", "2026-11-03"), ("2026-11-02", "2026-11-04"))


def rows(store: Path) -> tuple[int, int]:
    """Rows, and rows less the repeats of an eventID (events without one, CloudTrail 1.0, count once each)."""
    files = list(store.glob("events/**/*.parquet"))
    if not files:
        return 0, 0
    glob = str(store / "events" / "**" / "*.parquet")
    q = f"SELECT count(*), count(*) - count(eventID) + count(DISTINCT eventID) FROM read_parquet('{glob}')"
    n, distinct = duckdb.sql(q).fetchall()[0]
    return n, distinct


def run(binary: str, *args, check=False) -> subprocess.CompletedProcess:
    r = subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=300)
    if check and r.returncode != 0:
        raise SystemExit(f"{args}: exit {r.returncode}\n{r.stderr}")
    return r


def race(binary: str, work: Path, rounds: int) -> dict:
    both = refused = total_rows = total_dups = 0
    for i in range(rounds):
        store = work / f"race-{i}"
        procs = [
            subprocess.Popen([binary, "copy", "--source", SAMPLE, "--store", store, "--start", s, "--end", e,
                              "--copy-id", f"r{i}-{n}", "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for n, (s, e) in enumerate(RANGES)
        ]
        codes = [p.wait(timeout=300) for p in procs]
        both += codes.count(0) == 2
        refused += codes.count(2)
        n, distinct = rows(store)
        total_rows += n
        total_dups += n - distinct
    return {"rounds": rounds, "both ran": both, "refused": refused, "rows": total_rows, "duplicate rows": total_dups}


def repaired(binary: str, work: Path) -> dict:
    trail, store = work / "repair-trail", work / "repair-store"
    shutil.copytree(SAMPLE, trail)
    victim = sorted(trail.glob("AWSLogs/**/CloudTrail/**/*.json.gz"))[4]
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 3])
    first = run(binary, "copy", "--source", trail, "--store", store, "--start", RANGES[0][0], "--end", RANGES[0][1],
                "--copy-id", "rep", "--json")
    after_copy = rows(store)[0]
    victim.write_bytes(good)
    retry = run(binary, "retry", "rep", "--store", store)
    record = json.loads((store / "copies" / "rep" / "record.json").read_text())
    return {"copy exit": first.returncode, "events after copy": after_copy, "retry exit": retry.returncode,
            "events after retry": rows(store)[0], "distinct after retry": rows(store)[1],
            "status after retry": record["status"], "retry said": retry.stdout.splitlines()[0]}


def late(binary: str, work: Path, new: bool) -> dict:
    trail, store = work / "late-trail", work / "late-store"
    logs = Logs(seed=30)
    t0 = floor_minute(utcnow())
    start = t0 - dt.timedelta(hours=2)
    files, late_files = [], []
    for k in range(24):  # a file every 5 minutes, events of the 14 minutes before its delivery
        delivered = start + dt.timedelta(minutes=5 * (k + 1))
        records = logs.before(delivered, 12 if k < 20 else 15)
        files.append((logs.key(delivered), records))
    # 40 events' files (the last ones before t0) are late: they arrive after the first copy.
    late_files, files = files[-3:], files[:-3]
    # Events of the window (the first file also holds a few from before it: out of range for both copies).
    total = sum(1 for _, r in files + late_files for e in r if e["eventTime"] >= fmt(start))
    late_events = sum(len(r) for _, r in late_files)
    for key, records in files:
        (trail / key).parent.mkdir(parents=True, exist_ok=True)
        (trail / key).write_bytes(gz(records))
    first = run(binary, "copy", "--source", trail, "--store", store, "--start", fmt(start), "--end", fmt(t0),
                "--copy-id", "first", "--json", check=True)
    end = json.loads(first.stdout)["request"]["end"]
    for key, records in late_files:
        (trail / key).write_bytes(gz(records))
    nxt = ("--since-last",) if new else ("--start", end, "--end", fmt(utcnow() + dt.timedelta(seconds=1)))
    second = run(binary, "copy", "--source", trail, "--store", store, *nxt, "--copy-id", "next", "--json")
    n, distinct = rows(store)
    return {"events in the window": total, "late events": late_events, "next copy exit": second.returncode,
            "stored": n, "distinct": distinct, "lost": total - distinct, "duplicate rows": n - distinct}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    new = "--since-last" in run(a.bin, "copy", "--help").stdout
    with tempfile.TemporaryDirectory(prefix="trailcopy-issue30-") as tmp:
        work = Path(tmp)
        out = {"binary": a.bin, "since-last": new, "race": race(a.bin, work, a.rounds),
               "repaired file": repaired(a.bin, work), "late delivery": late(a.bin, work, new)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
