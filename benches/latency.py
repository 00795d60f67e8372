"""The S3 latency curve (issue 13), for benches/bench.py: files/s of the CLI copy S3 -> local store
and of the copy Lambda's handler path (examples/copy_batch, source on S3), with 0, 30 and 100 ms
added to each request by a delaying proxy (functions/core/examples/delay_proxy.rs, built by
benches/run.sh) in front of a local S3 API server (s3s-fs, pinned, installed by benches/run.sh into
.bench-tools/; moto caps at a few hundred requests/s here, which would measure moto). Peak RSS of
each run from GNU time.

    python benches/latency.py [--delays 0,30,100] [--days 1] [--binary NAME=PATH ...]   # standalone

`--days N` copies N such days: the discovery's round trips (the `AWSLogs/` listing, then the
regions and day listings) are a fixed cost before the first GET, so a longer copy shows how far
it is spread. The handler path copies one item (one date) whatever N, so it runs for N = 1 only.
`--narrow` gives the CLI the account's `AWSLogs/<account>/CloudTrail/` as its source instead of the
bucket, which saves the `AWSLogs/` listing.

Each row also gives its *dependent round trips* k: requests that cannot start before the answer of
an earlier one, up to the first log file's bytes. The bucket as source: k = 3 (`AWSLogs/` names the
accounts; then an account's regions listing, with the day listings of the Regions sent beside it;
then the GETs). A narrowed source: k = 2. The handler path, whose item names its files: k = 1.
`T0 + k·d` is what the copy takes when the delay adds exactly those round trips to the no-delay
time T0 and nothing else: the work a copy does at 0 ms (parsing, writing) waits for the files,
so no client that does not know the bucket's layout in advance does much better. (One run's T0
swings by ±20 % on these machines; compare medians of paired runs, benches/RESULTS.md round 12.)
"""
import argparse
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = ROOT / ".venv" / "bin" / "python"
S3S_FS = ROOT / ".bench-tools" / "bin" / "s3s-fs"
DELAY_PROXY = ROOT / "target" / "release" / "examples" / "delay_proxy"
BUCKET = "bench-trail"
DAY = "2024-03-01"


def layout(days: int) -> list[str]:
    """The issue's shape: 1 account, 2 regions, 288 files per region and day (every 5 minutes),
    small; one day by default."""
    return ["--accounts", "1", "--regions", "us-east-1,eu-west-1", "--days", str(days), "--start-day", DAY,
            "--files-per-day", "288", "--events-per-file", "20"]


def end_day(days: int) -> str:
    return (dt.date.fromisoformat(DAY) + dt.timedelta(days=days)).isoformat()


def log(msg):
    print(f"[latency {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited ({proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on {port}")


def trail(work: Path, days: int = 1):
    name = "trail-latency" if days == 1 else f"trail-latency-{days}d"
    out, manifest, stamp = work / name, work / f"{name}.manifest.json", work / f"{name}.args"
    args = layout(days)
    if not (manifest.exists() and stamp.exists() and stamp.read_text() == json.dumps(args)):
        shutil.rmtree(out, ignore_errors=True)
        log(f"generating {out}")
        subprocess.run([str(PY), str(ROOT / "tests" / "gen_trail.py"), "--out", str(out), "--manifest", str(manifest),
                        "--manifest-detail", "summary", "--seed", "1", *args], check=True, stdout=subprocess.DEVNULL)
        stamp.write_text(json.dumps(args))
    m = json.loads(manifest.read_text())
    files = [f for f in m["files"] if f.get("kind") == "trail"]
    return out, {"files": len(files), "events": sum(f["events"] for f in files),
                 "compressed": sum(f["size"] for f in files)}


class S3Bench:
    """s3s-fs serving a copy of the trail as bucket BUCKET, and delaying proxies in front of it."""

    def __init__(self, work: Path, trail_dir: Path):
        self.root = work / "s3s-root"
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.copytree(trail_dir, self.root / BUCKET)
        self.port = free_port()
        self.procs = []
        self.server = subprocess.Popen([str(S3S_FS), "--host", "127.0.0.1", "--port", str(self.port),
                                        "--access-key", "bench", "--secret-key", "benchsecret", str(self.root)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(self.server)
        wait_port(self.port, self.server)

    def endpoint(self, delay_ms: float, proxied: bool = False) -> str:
        """The server itself for 0 ms, else (or when `proxied`) a delaying proxy in front of it."""
        if delay_ms == 0 and not proxied:
            return f"http://127.0.0.1:{self.port}"
        if not DELAY_PROXY.exists():
            sys.exit(f"{DELAY_PROXY} is missing: cargo build --release -p trailcopy-core --example delay_proxy")
        p = subprocess.Popen([str(DELAY_PROXY), "--upstream", f"127.0.0.1:{self.port}", "--delay-ms", str(delay_ms)],
                             stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        return f"http://127.0.0.1:{int(p.stdout.readline())}"

    def close(self):
        for p in self.procs:
            p.terminate()
            p.wait()


def env(endpoint: str, batch_bytes: int = 0) -> dict:
    e = dict(os.environ)
    if batch_bytes:
        e["TRAILCOPY_BATCH_BYTES"] = str(batch_bytes)
    e.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "benchsecret",
              "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"})
    return e


def timed(cmd, environ):
    tv = Path("/tmp") / f"latency-time-{os.getpid()}.txt"
    started = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", "-o", str(tv), *cmd], capture_output=True, text=True, env=environ)
    wall = time.perf_counter() - started
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    t = tv.read_text()
    field = lambda name: float(next(l for l in t.splitlines() if name in l).rsplit(":", 1)[1])
    return wall, field("User time") + field("System time"), field("Maximum resident set size") / 1024, p.stdout


def parse_delays(text: str) -> list[tuple[float, bool]]:
    """`0,p0,30,100`: milliseconds added per request; `p0` is 0 ms through the proxy (the proxy's
    own cost, so that the delay is the only difference from the delayed points)."""
    return [(float(d[1:]), True) if d.startswith("p") else (float(d), float(d) > 0) for d in text.split(",") if d]


# Dependent round trips up to the first log file's bytes (see the docstring).
ROUND_TRIPS = {"bucket": 3, "narrowed": 2, "handler": 1}


def curve(work: Path, binaries: dict, copy_batch: Path | None, delays, repeat: int = 1, batch_bytes: int = 0,
          days: int = 1, narrow: bool = False) -> list[dict]:
    trail_dir, facts = trail(work, days)
    if days > 1 or narrow:
        copy_batch = None
    source = f"s3://{BUCKET}"
    if narrow:
        accounts = sorted(p.name for p in (trail_dir / "AWSLogs").iterdir())
        assert len(accounts) == 1, accounts
        source = f"s3://{BUCKET}/AWSLogs/{accounts[0]}/CloudTrail/"
    shape = ("" if days == 1 else f", {days} days") + (", narrowed source" if narrow else "")
    s3 = S3Bench(work, trail_dir)
    rows = []
    try:
        for delay, proxied in delays:
            endpoint = s3.endpoint(delay, proxied)
            via = "proxy" if proxied else "direct"
            for name, binary in binaries.items():
                best = None
                for _ in range(repeat):
                    store = work / "store-latency"
                    shutil.rmtree(store, ignore_errors=True)
                    wall, cpu, rss, out = timed([str(binary), "copy", "--source", source, "--store",
                                                 str(store), "--start", DAY, "--end", end_day(days), "--json"],
                                                env(endpoint, batch_bytes))
                    record = json.loads(out)
                    s = record["statistics"]
                    assert record["status"] == "COMPLETED" and s["eventsRead"] == facts["events"] and s["filesCompleted"] == facts["files"], record
                    if best is None or wall < best[0]:
                        best = (wall, cpu, rss)
                wall, cpu, rss = best
                batches = f", {batch_bytes // 1024} KiB batches" if batch_bytes else ""
                rows.append({"path": f"CLI S3 -> local{shape}{batches}",
                             "roundTrips": ROUND_TRIPS["narrowed" if narrow else "bucket"],
                             "binary": name, "delayMs": delay, "via": via, "files": facts["files"],
                             "seconds": wall, "cpuSeconds": cpu, "peakRssMiB": rss, "filesPerSecond": facts["files"] / wall})
                log(f"{name}{shape} {delay} ms: {facts['files'] / wall:.0f} files/s ({wall:.2f} s, RSS {rss:.0f} MiB)")
            if copy_batch:
                best = None
                for _ in range(repeat):
                    store = work / "store-latency-lambda"
                    shutil.rmtree(store, ignore_errors=True)
                    _, cpu, rss, out = timed([str(copy_batch), f"s3://{BUCKET}", str(store), DAY, end_day(1)],
                                             env(endpoint))
                    r = json.loads(out)
                    if best is None or r["seconds"] < best[2]["seconds"]:
                        best = (cpu, rss, r)
                cpu, rss, r = best
                rows.append({"path": "copy Lambda handler (one item)", "roundTrips": ROUND_TRIPS["handler"],
                             "binary": "this tree", "delayMs": delay, "via": via,
                             "files": r["files"], "seconds": r["seconds"], "cpuSeconds": cpu, "peakRssMiB": rss,
                             "filesPerSecond": r["files"] / r["seconds"]})
                log(f"copy_batch {delay} ms: {r['files'] / r['seconds']:.0f} files/s")
    finally:
        s3.close()
    return rows


def print_table(rows):
    """`vs 0 ms`: against the direct 0 ms run; `vs proxied 0 ms`: against 0 ms through the proxy;
    `k`, `(T0 + k·d) ÷ T0`: the dependent round trips and the ratio they alone give (T0 the direct
    0 ms time)."""
    print("\n| path | binary | added delay | via | files | seconds | files/s | CPU s | peak RSS MiB | vs 0 ms "
          "| vs proxied 0 ms | k | (T0 + k·d) ÷ T0 |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = {}
    for r in rows:
        if r["delayMs"] == 0:
            base[(r["path"], r["binary"], r.get("via", "direct"))] = r["seconds"]
    for r in rows:
        t0 = lambda via: base.get((r["path"], r["binary"], via), float("nan"))
        k = r.get("roundTrips", 0)
        floor = (t0("direct") + k * r["delayMs"] / 1000) / t0("direct")
        print(f"| {r['path']} | {r['binary']} | {r['delayMs']:g} ms | {r.get('via', 'direct')} | {r['files']} "
              f"| {r['seconds']:.2f} | {r['filesPerSecond']:.0f} | {r['cpuSeconds']:.2f} | {r['peakRssMiB']:.0f} "
              f"| {r['seconds'] / t0('direct'):.2f}x | {r['seconds'] / t0('proxy'):.2f}x | {k} | {floor:.2f}x |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default=os.environ.get("TRAILCOPY_BENCH_DIR", "/tmp/trailcopy-bench"))
    ap.add_argument("--delays", default="0,p0,30,100", help="ms per request; p0 = 0 ms through the proxy")
    ap.add_argument("--binary", action="append", default=[], help="NAME=PATH of a trailcopy binary (repeatable)")
    ap.add_argument("--copy-batch", default=str(ROOT / "target" / "release" / "examples" / "copy_batch"))
    ap.add_argument("--repeat", type=int, default=1, help="runs per point; the fastest is kept")
    ap.add_argument("--batch-bytes", type=int, default=0, help="TRAILCOPY_BATCH_BYTES for the CLI runs (0: default)")
    ap.add_argument("--days", type=int, default=1, help="days of the shape copied (the handler path: 1 only)")
    ap.add_argument("--narrow", action="store_true",
                    help="the CLI's source is AWSLogs/<account>/CloudTrail/, not the bucket (no handler path)")
    a = ap.parse_args()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    binaries = dict(b.split("=", 1) for b in a.binary) or {"this tree": str(ROOT / "target" / "release" / "trailcopy")}
    cb = Path(a.copy_batch) if a.copy_batch and Path(a.copy_batch).exists() else None
    rows = curve(work, binaries, cb, parse_delays(a.delays), a.repeat, a.batch_bytes, a.days, a.narrow)
    print_table(rows)
    (work / "latency.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
