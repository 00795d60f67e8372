"""Driver for benches/run.sh (run that, not this): generates the trails, runs every measurement
in one go and prints the results table (Markdown) plus a JSON file of the raw numbers.

Each measured command runs under GNU time (`/usr/bin/time -v`) for wall time, CPU time and peak
RSS. "1 worker" runs are pinned to one CPU with `taskset -c 0` (trailcopy's tokio runtime and
blocking pool, DuckDB threads=1, inflate 1 thread), so they measure one core; "all cores" runs use
every CPU the machine has.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import latency

ROOT = Path(__file__).resolve().parent.parent
PY = ROOT / ".venv" / "bin" / "python"
TRAILCOPY = ROOT / "target" / "release" / "trailcopy"
INFLATE = ROOT / "target" / "release" / "examples" / "inflate"
COPY_BATCH = ROOT / "target" / "release" / "examples" / "copy_batch"
FLOOR = ROOT / "target" / "release" / "examples" / "floor"
START, END = "2024-02-28", "2024-03-06"
CORES = os.cpu_count() or 1
MB = 1e6


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def generate(work: Path, name: str, target_mb: int, layout: list[str]) -> tuple[Path, dict]:
    """A trail from tests/gen_trail.py, reused when its manifest says the same options."""
    trail, manifest = work / f"trail-{name}", work / f"trail-{name}.manifest.json"
    args = ["--seed", "1", "--target-mb", str(target_mb), "--events-per-file", "200", *layout]
    stamp = work / f"trail-{name}.args"
    if manifest.exists() and stamp.exists() and stamp.read_text() == json.dumps(args):
        log(f"reusing {trail}")
    else:
        shutil.rmtree(trail, ignore_errors=True)
        log(f"generating {trail} ({target_mb} MiB uncompressed)")
        subprocess.run([str(PY), str(ROOT / "tests" / "gen_trail.py"), "--out", str(trail),
                        "--manifest", str(manifest), "--manifest-detail", "summary", *args],
                       check=True, stdout=subprocess.DEVNULL)
        stamp.write_text(json.dumps(args))
    m = json.loads(manifest.read_text())
    files = [f for f in m["files"] if f.get("kind") == "trail"]
    return trail, {
        "files": len(files),
        "events": sum(f["events"] for f in files),
        "uncompressed": m["bytesUncompressed"],
        "compressed": sum(f["size"] for f in files),
    }


def timed(cmd: list[str], pin: bool) -> tuple[dict, str]:
    """Runs cmd under GNU time; returns (wall s, cpu s, peak RSS MiB) and its stdout."""
    tv = Path("/tmp") / f"bench-time-{os.getpid()}.txt"
    full = ["/usr/bin/time", "-v", "-o", str(tv)] + (["taskset", "-c", "0"] if pin else []) + cmd
    started = time.perf_counter()
    p = subprocess.run(full, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    t = tv.read_text()
    field = lambda name: float(re.search(rf"{re.escape(name)}: ([0-9.]+)", t).group(1))
    return {
        "seconds": wall,
        "cpuSeconds": field("User time (seconds)") + field("System time (seconds)"),
        "peakRssMiB": field("Maximum resident set size (kbytes)") / 1024,
    }, p.stdout


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*.parquet"))


def measure(trail: Path, facts: dict, work: Path, workers: str) -> list[dict]:
    pin = workers == "1"
    threads = 1 if pin else CORES
    rows = []
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    m, out = timed([str(TRAILCOPY), "copy", "--source", str(trail), "--store", str(store),
                    "--start", START, "--end", END, "--concurrency", str(threads), "--json"], pin)
    record = json.loads(out)
    assert record["status"] == "COMPLETED", record
    events = record["statistics"]["eventsCompleted"]
    assert events == facts["events"], (events, facts)
    rows.append({"tool": "trailcopy copy", "events": events, "output": du(store / "events"), **m})
    if pin:
        # The floor of the work itself (examples/floor, one thread): inflate + JSON check + zstd
        # of the pages this copy wrote.
        _, out = timed([str(FLOOR), str(trail), str(store / "events")], pin)
        rows[0]["floor"] = json.loads(out)
    shutil.rmtree(store, ignore_errors=True)

    parquet = work / "duckdb.parquet"
    m, out = timed([str(PY), str(ROOT / "benches" / "duckdb_convert.py"), str(trail), str(parquet),
                    str(threads)], pin)
    d = json.loads(out)
    rows.append({"tool": f"DuckDB {d['duckdb']}", "events": d["rows"], "output": du(parquet), **m})
    parquet.unlink()

    m, out = timed([str(INFLATE), str(trail), str(threads)], pin)
    i = json.loads(out)
    assert i["bytesOut"] == facts["uncompressed"], (i, facts)
    rows.append({"tool": "inflate only (floor)", "events": facts["events"], "output": None, **m})
    for r in rows:
        r["workers"] = "1 (pinned)" if pin else f"all ({CORES})"
        r["eventsPerSecond"] = r["events"] / r["seconds"]
        r["mbPerSecond"] = facts["uncompressed"] / MB / r["seconds"]
    copy, duck, floor = rows
    copy["vsDuckdb"] = copy["mbPerSecond"] / duck["mbPerSecond"]
    copy["vsInflate"] = copy["mbPerSecond"] / floor["mbPerSecond"]
    return rows


def lambda_batch(work: Path, target_mb: int) -> dict:
    trail, facts = generate(work, f"lambda-{target_mb}mb", target_mb,
                            ["--accounts", "1", "--regions", "us-east-1", "--days", "1"])
    store = work / "store-lambda"
    shutil.rmtree(store, ignore_errors=True)
    m, out = timed([str(COPY_BATCH), str(trail), str(store), START, END], True)
    r = json.loads(out)
    shutil.rmtree(store, ignore_errors=True)
    return {**r, **m, "uncompressed": facts["uncompressed"],
            "mbPerSecond": facts["uncompressed"] / MB / r["seconds"]}


def fmt(x, spec):
    return "" if x is None else format(x, spec)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="50,1024", help="trail sizes, MiB uncompressed")
    ap.add_argument("--lambda-mb", type=int, default=480,
                    help="MiB uncompressed of the Lambda batch trail (~64 MB gzip)")
    ap.add_argument("--workdir", default=os.environ.get("TRAILCOPY_BENCH_DIR", "/tmp/trailcopy-bench"))
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--delays", default="0,p0,30,100",
                    help="ms added per S3 request for the latency curve (p0: 0 ms through the proxy; empty: skip it)")
    ap.add_argument("--latency-days", default="1,7",
                    help="days of the latency shape (576 files a day), one curve each; the handler path runs for 1")
    a = ap.parse_args()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    layout = ["--accounts", "4", "--regions", "us-east-1,eu-west-1,ap-southeast-2", "--days", "3"]
    results = {"cores": CORES, "cpu": cpu_model(), "sizes": []}
    for size in [int(s) for s in a.sizes.split(",") if s]:
        trail, facts = generate(work, f"{size}mb", size, layout)
        entry = {"sizeMiB": size, **facts, "runs": []}
        for workers in ("1", "all"):
            log(f"{size} MiB, {workers} worker(s)")
            entry["runs"] += measure(trail, facts, work, workers)
        results["sizes"].append(entry)
    if a.lambda_mb > 0:
        log(f"copy Lambda handler path, one work item ({a.lambda_mb} MiB uncompressed)")
        results["lambda"] = lambda_batch(work, a.lambda_mb)
    if a.delays:
        log("S3 latency curve (s3s-fs behind examples/delay_proxy)")
        results["latency"] = [row for days in a.latency_days.split(",") if days
                              for row in latency.curve(work, {"this tree": TRAILCOPY}, COPY_BATCH,
                                                       latency.parse_delays(a.delays), days=int(days))]
        # One day with the account's CloudTrail/ folder as the source: one dependent round trip fewer.
        results["latency"] += latency.curve(work, {"this tree": TRAILCOPY}, None, latency.parse_delays(a.delays),
                                            narrow=True)
    out = Path(a.json_out) if a.json_out else work / "results.json"
    out.write_text(json.dumps(results, indent=1))
    print_table(results)
    if results.get("latency"):
        latency.print_table(results["latency"])
    if results.get("lambda") and results["sizes"]:
        results["cost"] = cost_on_paper(results)
        out.write_text(json.dumps(results, indent=1))
    log(f"raw numbers: {out}")


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def print_table(results):
    print(f"\nMachine: {results['cores']} CPUs ({results['cpu']}). MB = 10^6 bytes of uncompressed JSON.\n")
    print("| trail | workers | tool | seconds | CPU s | events/s | MB/s | peak RSS MiB | output MB | a/b | a/c |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in results["sizes"]:
        label = (f"{s['uncompressed'] / MB:.0f} MB ({s['compressed'] / MB:.0f} MB gz, "
                 f"{s['files']} files, {s['events']} events)")
        for r in s["runs"]:
            print(f"| {label} | {r['workers']} | {r['tool']} | {r['seconds']:.2f} | {r['cpuSeconds']:.2f} "
                  f"| {r['eventsPerSecond']:,.0f} | {r['mbPerSecond']:.1f} | {r['peakRssMiB']:.0f} "
                  f"| {fmt(r['output'] and r['output'] / MB, '.1f')} | {fmt(r.get('vsDuckdb'), '.1f')} "
                  f"| {fmt(r.get('vsInflate'), '.2f')} |")
    for s in results["sizes"]:
        for r in s["runs"]:
            f = r.get("floor")
            if f:
                print(f"\nFloor of the work ({s['uncompressed'] / MB:.0f} MB trail, one thread, thread CPU; "
                      f"examples/floor): inflate {f['inflateSeconds']:.2f} s + JSON check (serde_json into "
                      f"IgnoredAny) {f['jsonCheckSeconds']:.2f} s + zstd level 1 of the store's "
                      f"{f['pageBytes'] / MB:.0f} MB of pages {f['zstdSeconds']:.2f} s = "
                      f"{f['floorSeconds']:.2f} s = **{f['floorOverInflate']:.2f}x inflate**: no copy into "
                      f"this store can take less CPU than that. The copy took {r['cpuSeconds']:.2f} CPU s = "
                      f"{r['cpuSeconds'] / f['floorSeconds']:.2f}x the floor. Snappy instead of zstd: "
                      f"{f['snappySeconds']:.2f} s for {f['snappyBytes'] / MB:.0f} MB against zstd's "
                      f"{f['zstdBytes'] / MB:.0f} MB, a floor of {f['snappyFloorOverInflate']:.2f}x inflate.")
    lam = results.get("lambda")
    if lam:
        print(f"\nCopy Lambda handler path (in process, one work item = {lam['batches']} batch(es) of "
              f"{lam['bytesRead'] / MB:.1f} MB gzip / {lam['uncompressed'] / MB:.0f} MB JSON, "
              f"{lam['files']} files, {lam['events']} events): {lam['seconds']:.2f} s, "
              f"{lam['eventsPerSecond']:,.0f} events/s, {lam['mbPerSecond']:.1f} MB/s uncompressed, "
              f"CPU {lam['cpuSeconds']:.2f} s, peak RSS {lam['vmHwmKb'] / 1024:.0f} MiB (VmHWM; "
              f"{lam['vmHwmKbBeforeCopy'] / 1024:.0f} MiB before the copy).")


# List prices, us-east-1 (assumed; check https://aws.amazon.com/lambda/pricing/ etc.).
PRICE = {
    "lambda_arm_gb_s": 0.0000133334,  # Lambda arm64, first 7.5 billion GB-s / month
    "lambda_request": 0.20 / 1e6,
    "s3_get": 0.0004 / 1000,  # GET, S3 Standard
    "s3_put_list": 0.005 / 1000,  # PUT, COPY, POST, LIST
    "sfn_transition": 0.025 / 1000,  # Step Functions standard workflows
    "lake_1y": 0.75,  # CloudTrail Lake ingestion + 1-year extendable retention, per GB
    "lake_7y": 2.50,  # CloudTrail Lake ingestion + 7-year retention, per GB
}


def cost_on_paper(results, gz_bytes=100e9, prefixes=7300, memory_gb=1.0, get_ms=25.0, get_concurrency=256):
    """100 GB of gzip trail through the state machine, from the measured rates.

    prefixes: day prefixes (work items); 7,300 = 20 account-regions x 365 days.
    memory_gb and get_concurrency: the copy function's MemorySize in template.yaml (1,024 MB) and
    its default GETs in flight (budget::DEFAULT_MAX_REQUESTS, 256).
    The Lambda's CPU share is memory/1769 MB of one vCPU; an invocation lasts as long as its CPU
    work at the measured one-core rate, or its GETs (get_ms each, get_concurrency at once) if longer.
    """
    lam, big = results["lambda"], results["sizes"][-1]
    ratio = big["uncompressed"] / big["compressed"]
    avg_file = big["compressed"] / big["files"]
    files = gz_bytes / avg_file
    json_mb = gz_bytes * ratio / MB
    rate = lam["mbPerSecond"]  # one core, MB of JSON per second (handler path, pinned)
    share = memory_gb * 1024 / 1769
    cpu_s = json_mb / rate / share
    get_s = files * get_ms / 1000 / get_concurrency
    seconds = max(cpu_s, get_s)
    gb_s = seconds * memory_gb
    batches = prefixes + gz_bytes / (64 << 20)  # at least one per item, and one per 64 MiB
    gets = files + prefixes * 4 + 10  # log files; state, files.json, record reads per item
    puts = batches * 4 + prefixes * 3 + 10  # parquet (~2 dates) + seen + state per batch; files/state
    lists = prefixes * 2 + 500  # prepare's listing (+ page) per item; plan's delimiter listings
    transitions = prefixes * 5 + 10  # Prepare, RestoresPending, Copy, CopyDone, ItemCompleted
    invocations = prefixes * 2 + 2
    rows = [
        ("Lambda compute (arm64)", f"{gb_s:,.0f} GB-s ({seconds / 3600:,.1f} h at {memory_gb * 1024:.0f} MB)",
         gb_s * PRICE["lambda_arm_gb_s"]),
        ("Lambda requests", f"{invocations:,.0f}", invocations * PRICE["lambda_request"]),
        ("S3 GET", f"{gets:,.0f}", gets * PRICE["s3_get"]),
        ("S3 PUT", f"{puts:,.0f}", puts * PRICE["s3_put_list"]),
        ("S3 LIST", f"{lists:,.0f}", lists * PRICE["s3_put_list"]),
        ("Step Functions (standard)", f"{transitions:,.0f} transitions", transitions * PRICE["sfn_transition"]),
    ]
    total = sum(r[2] for r in rows)
    lake_gb = json_mb * MB / 1e9
    print(f"\nCost on paper: {gz_bytes / 1e9:.0f} GB gzip trail = {files:,.0f} files of {avg_file / 1e3:.0f} KB, "
          f"{json_mb / 1e3:,.0f} GB JSON (ratio {ratio:.1f}), {prefixes:,} day prefixes; CPU at the measured "
          f"one-core handler rate {rate:.0f} MB/s x {share:.2f} vCPU = {cpu_s / 3600:.1f} h, GET-bound "
          f"{get_s / 3600:.1f} h.\n")
    print("| item | quantity | USD |")
    print("|---|---:|---:|")
    for name, q, usd in rows:
        print(f"| {name} | {q} | {usd:,.2f} |")
    print(f"| **trailcopy total** | | **{total:,.2f}** |")
    print(f"| CloudTrail Lake ingestion, 1-year retention (${PRICE['lake_1y']}/GB x {lake_gb:,.0f} GB) | | "
          f"{lake_gb * PRICE['lake_1y']:,.2f} |")
    print(f"| CloudTrail Lake ingestion, 7-year retention (${PRICE['lake_7y']}/GB x {lake_gb:,.0f} GB) | | "
          f"{lake_gb * PRICE['lake_7y']:,.2f} |")
    return {"rows": rows, "total": total, "lakeGb": lake_gb, "cpuHours": cpu_s / 3600, "getHours": get_s / 3600}


if __name__ == "__main__":
    main()
