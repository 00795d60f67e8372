"""Issue 6 points 5 and 6: overlapping and concurrent copies into one store, and what the logs
and paths may never contain or reach."""

import json
import subprocess
import threading

from conftest import base_env, read_store, source_dir, store_count

RANGE_A = ("2024-05-01", "2024-05-03")


def gen(make_trail, name="overlap"):
    return make_trail(name, seed=11, accounts=2, regions="us-east-1,eu-west-1", start_day="2024-05-01", days=3,
                      files_per_day=4, events_per_file=15, duplicates=2)


def record(store, copy_id):
    return json.loads((store / "copies" / copy_id / "record.json").read_text())


def test_overlapping_copy_is_refused_unless_allowed(trailcopy, make_trail, tmp_path):
    m = gen(make_trail)
    store = tmp_path / "store"
    a = trailcopy("copy", "--source", source_dir(m), "--store", store, "--start", RANGE_A[0], "--end", RANGE_A[1],
                  "--copy-id", "first", "--json")
    assert a.returncode == 0, a.describe()
    rows = store_count(store)
    b = trailcopy("copy", "--source", source_dir(m), "--store", store, "--start", "2024-05-02", "--end", "2024-05-04",
                  "--copy-id", "second", "--json")
    assert b.returncode == 2, b.describe()
    assert "first" in b.stderr and "--allow-overlap" in b.stderr and "twice" in b.stderr, b.stderr
    assert not (store / "copies" / "second").exists(), "refused before any work"
    assert store_count(store) == rows
    c = trailcopy("copy", "--source", source_dir(m), "--store", store, "--start", "2024-05-02", "--end", "2024-05-04",
                  "--copy-id", "second", "--allow-overlap", "--json")
    assert c.returncode == 0, c.describe()
    assert c.json["request"]["allowOverlap"] is True


def test_adjacent_windows_neither_overlap_nor_gap(trailcopy, make_trail, tmp_path):
    """Consecutive snapshots [d1,d2) then [d2,d3) hold exactly what one copy of [d1,d3) holds."""
    m = gen(make_trail, "adjacent")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    r = trailcopy("copy", "--source", source_dir(m), "--store", whole, "--start", "2024-05-01", "--end", "2024-05-03")
    assert r.returncode == 0, r.describe()
    for s, e in [("2024-05-01", "2024-05-02"), ("2024-05-02", "2024-05-03")]:
        r = trailcopy("copy", "--source", source_dir(m), "--store", parts, "--start", s, "--end", e)
        assert r.returncode == 0, r.describe()
    ids = lambda store: sorted(row["eventID"] or row["eventTime"] + row["eventName"] for row in read_store(store))
    assert ids(parts) == ids(whole)
    assert len(ids(whole)) > 0


def test_two_copies_at_once_into_one_store(trailcopy_bin, make_trail, tmp_path):
    """Different sources, same store, same moment: both records stay intact and exact."""
    m1 = make_trail("conc1", seed=21, accounts=1, regions="us-east-1", start_day="2024-06-01", days=2,
                    files_per_day=6, events_per_file=20)
    m2 = make_trail("conc2", seed=22, accounts=1, regions="eu-west-1", start_day="2024-06-01", days=2,
                    files_per_day=6, events_per_file=20)
    store = tmp_path / "store"
    results = {}

    def run(name, m):
        p = subprocess.run([trailcopy_bin, "copy", "--source", source_dir(m), "--store", str(store), "--start",
                            "2024-06-01", "--end", "2024-06-03", "--copy-id", name, "--json"],
                           capture_output=True, text=True, env={**base_env(), "TRAILCOPY_BATCH_BYTES": "20000"},
                           timeout=120)
        results[name] = p

    threads = [threading.Thread(target=run, args=a) for a in [("one", m1), ("two", m2)]]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for name in ("one", "two"):
        assert results[name].returncode == 0, results[name].stderr
    s1, s2 = record(store, "one")["statistics"], record(store, "two")["statistics"]
    assert record(store, "one")["request"]["source"] != record(store, "two")["request"]["source"]
    assert s1["eventsCompleted"] > 0 and s2["eventsCompleted"] > 0
    assert store_count(store) == s1["eventsCompleted"] + s2["eventsCompleted"]
    ids = [r["eventID"] for r in read_store(store) if r["eventID"] is not None]  # 1.0 events have none
    assert len(set(ids)) == len(ids) > 0


def test_logs_never_hold_event_contents_or_credentials(trailcopy, make_trail, moto_s3, tmp_path):
    m = gen(make_trail, "logs")
    s3 = moto_s3.client()
    s3.create_bucket(Bucket="log-src")
    moto_s3.upload_dir("log-src", source_dir(m))
    secret = "SeCrEt-testing-KEY-do-not-log"
    env = {**moto_s3.env, "AWS_SECRET_ACCESS_KEY": secret, "TRAILCOPY_LOG": "trailcopy=trace,info"}
    r = trailcopy("copy", "--source", "s3://log-src", "--store", tmp_path / "store", "--start", RANGE_A[0],
                  "--end", RANGE_A[1], "--json", env=env)
    assert r.returncode in (0, 1), r.describe()
    assert r.json["statistics"]["eventsCompleted"] > 0
    events = [e for e in m["events"]][:200]
    leaked = [e["eventID"] for e in events if e.get("eventID") and e["eventID"] in r.stderr]
    assert not leaked, f"event ids in logs: {leaked[:3]}"
    assert secret not in r.stderr and secret not in r.stdout
    for marker in ("userIdentity", "sourceIPAddress", "arn:aws:iam::"):
        assert marker not in r.stderr, marker


def test_copy_ids_and_keys_cannot_leave_the_store(trailcopy, tmp_path):
    for bad in ["../outside", "a/b", ".hidden", "x" * 81]:
        r = trailcopy("copy", "--source", tmp_path / "src", "--store", tmp_path / "store", "--last", "1h",
                      "--copy-id", bad)
        assert r.returncode == 2 and "--copy-id" in r.stderr, r.describe()
    r = trailcopy("status", "../../etc", "--store", tmp_path / "store")
    assert r.returncode == 2 and "copy-id" in r.stderr, r.describe()
    assert not (tmp_path / "outside").exists()
