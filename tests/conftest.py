"""Shared fixtures for the end-to-end tests of the `trailcopy` CLI (local folders and the S3 API).

- `trailcopy`: runs the binary (env TRAILCOPY_BIN, default target/debug/trailcopy; tests/run builds it).
- `make_trail`: runs tests/gen_trail.py and returns its ground-truth manifest.
- `gen_trail_org`: the session's generated trail (org layout, prefix, every defect).
- `moto_s3`: a moto server on a free 127.0.0.1 port, with the env the CLI needs to talk to it.
- `read_store` / `rebuild_event`: DuckDB over STORE/events/**/*.parquet and the contract's rebuild rule.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))

import gen_trail  # noqa: E402

# Nested CloudTrail objects stored as JSON text (docs/contracts.md).
JSON_COLUMNS = {"requestParameters", "responseElements", "resources", "additionalEventData",
                "serviceEventDetails", "addendum", "edgeDeviceDetails", "insightDetails", "eventContext"}
# Struct columns, and their leaves that hold JSON text (dotted paths inside the struct).
STRUCT_COLUMNS = {"userIdentity": {"sessionContext.webIdFederationData.attributes"}, "tlsDetails": set()}
# Columns that are not part of the CloudTrail record.
PROVENANCE_COLUMNS = {"sourceLogFile"}

# The session's generated trail: the layout and defects the e2e tests share (local and S3).
GEN_ORG_ARGS = dict(seed=7, accounts=3, regions="us-east-1,eu-west-1,ap-southeast-2", start_day="2024-03-01",
                    days=3, files_per_day=5, events_per_file=20, org_id="o-abc123defg", prefix="corp/trails",
                    all_defects=True)
# A range cutting through the first files of the first and last day (they hold the previous day's last events);
# it covers the defect day (2024-03-02) whole.
GEN_ORG_RANGE = ("2024-03-01T00:05:00Z", "2024-03-03T00:05:00Z")


# ----------------------------------------------------------------------------- the binary
@dataclass
class Run:
    args: list
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self):
        try:
            return json.loads(self.stdout)
        except ValueError as e:
            raise AssertionError(f"stdout is not one JSON document ({e}):\n{self.describe()}") from None

    def describe(self) -> str:
        return (f"$ trailcopy {' '.join(map(str, self.args))}\nexit {self.returncode}\n"
                f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}")


def base_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and not k.startswith("TRAILCOPY_")}
    env.update(AWS_EC2_METADATA_DISABLED="true", RUST_BACKTRACE="1", NO_COLOR="1")
    return env


@pytest.fixture(scope="session")
def trailcopy_bin() -> str:
    b = os.environ.get("TRAILCOPY_BIN") or str(REPO / "target" / "debug" / "trailcopy")
    if not os.path.isabs(b):
        b = str(REPO / b)
    if not os.access(b, os.X_OK):
        pytest.fail(f"trailcopy binary not found at {b}: build it (cargo build --bin trailcopy) or set TRAILCOPY_BIN")
    return b


@pytest.fixture(scope="session")
def trailcopy(trailcopy_bin):
    """trailcopy(*args, env={...}, timeout=..., cwd=...) -> Run. Never raises on a non-zero exit."""

    def run(*args, env: dict | None = None, timeout: float = 60, cwd=None) -> Run:
        e = base_env()
        e.update(env or {})
        args = [str(a) for a in args]
        try:
            p = subprocess.run([trailcopy_bin, *args], capture_output=True, text=True, env=e, timeout=timeout,
                               stdin=subprocess.DEVNULL, cwd=cwd)
        except subprocess.TimeoutExpired as t:
            out = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
            raise AssertionError("trailcopy did not finish in %ss:\n%s" % (
                timeout, Run(args, -1, out(t.stdout), out(t.stderr)).describe())) from None
        return Run(args, p.returncode, p.stdout, p.stderr)

    return run


# ----------------------------------------------------------------------------- generated trails
@pytest.fixture(scope="session")
def make_trail(tmp_path_factory):
    """make_trail(name, **gen_trail options) -> manifest dict (manifest['root'] is the trail folder)."""

    def make(name: str, **opts) -> dict:
        d = tmp_path_factory.mktemp(name)
        argv = ["--out", str(d / "trail"), "--manifest", str(d / "manifest.json")]
        for k, v in opts.items():
            flag = "--" + k.replace("_", "-")
            if v is True:
                argv.append(flag)
            elif v not in (False, None):
                argv += [flag, str(v)]
        gen_trail.main(argv)
        with open(d / "manifest.json") as f:
            return json.load(f)

    return make


@pytest.fixture(scope="session")
def gen_trail_org(make_trail) -> dict:
    return make_trail("gen-org", **GEN_ORG_ARGS)


def source_dir(manifest: dict) -> str:
    """The local source folder of a generated trail: root/prefix (the folder holding AWSLogs/)."""
    return os.path.join(manifest["root"], manifest["prefix"].rstrip("/")) if manifest["prefix"] else manifest["root"]


# ----------------------------------------------------------------------------- moto
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Moto:
    endpoint: str
    env: dict  # for the trailcopy subprocess

    def client(self, service="s3"):
        import boto3
        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def upload_dir(self, bucket: str, local_root: str, key_prefix: str = ""):
        s3 = self.client()
        n = 0
        for dirpath, _, files in os.walk(local_root):
            for fn in files:
                p = os.path.join(dirpath, fn)
                key = key_prefix + os.path.relpath(p, local_root).replace(os.sep, "/")
                s3.upload_file(p, bucket, key)
                n += 1
        return n

    def list_keys(self, bucket: str, prefix: str = "") -> list:
        s3 = self.client()
        keys = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    def download_prefix(self, bucket: str, prefix: str, dest: Path) -> Path:
        """Downloads s3://bucket/prefix/... into dest/... (prefix stripped): dest is then a local STORE."""
        s3 = self.client()
        prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        for key in self.list_keys(bucket, prefix):
            p = dest / key[len(prefix):]
            p.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, key, str(p))
        return dest


@pytest.fixture(scope="session")
def moto_s3():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        yield Moto(endpoint, env)
    finally:
        server.stop()


# ----------------------------------------------------------------------------- the store
def parquet_files(store: Path) -> list:
    return sorted(str(p.relative_to(store)) for p in Path(store).glob("events/**/*.parquet"))


def duck(store: Path):
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    return con, f"read_parquet('{Path(store)}/events/**/*.parquet', hive_partitioning=true)"


def store_schema(store: Path) -> dict:
    con, src = duck(store)
    return {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}


def read_store(store: Path) -> list:
    """Every row of the store as a dict; eventTime as '%Y-%m-%dT%H:%M:%SZ' (UTC), date as 'YYYY-MM-DD'."""
    if not parquet_files(store):
        return []
    con, src = duck(store)
    cur = con.execute(f"""SELECT * REPLACE (strftime(timezone('UTC', "eventTime"), '%Y-%m-%dT%H:%M:%SZ') AS "eventTime",
                                            CAST("date" AS VARCHAR) AS "date") FROM {src}""")
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def store_count(store: Path) -> int:
    if not parquet_files(store):
        return 0
    con, src = duck(store)
    return con.execute(f"SELECT count(*) FROM {src}").fetchone()[0]


def _struct_value(v: dict, json_leaves: set, path: str = "") -> dict:
    out = {}
    for k, x in v.items():
        p = f"{path}{k}"
        if x is None:
            continue
        if isinstance(x, dict):
            out[k] = _struct_value(x, json_leaves, p + ".")
        else:
            out[k] = json.loads(x) if p in json_leaves else x
    return out


def _deep_merge(base: dict, overlay: dict) -> dict:
    for k, v in overlay.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v)
        else:
            base[k] = v
    return base


def rebuild_event(row: dict) -> dict:
    """contracts.md, written independently of the Rust rebuild (`trailcopy export`): typed columns
    that are non-NULL (JSON columns parsed, structs as objects of their non-NULL fields, eventTime
    formatted), then otherFields deep-merged on top (an object onto a struct, at every depth)."""
    ev = {}
    for k, v in row.items():
        if k in ("date", "otherFields") or k in PROVENANCE_COLUMNS or v is None:
            continue
        if k in STRUCT_COLUMNS:
            ev[k] = _struct_value(v, STRUCT_COLUMNS[k])
        else:
            ev[k] = json.loads(v) if k in JSON_COLUMNS else v
    if row.get("otherFields") is not None:
        _deep_merge(ev, json.loads(row["otherFields"]))
    return ev


def export_store(trailcopy, store, *args, env=None) -> list:
    """`trailcopy export --store STORE [args]`: the records it writes, one JSON object per line."""
    r = trailcopy("export", "--store", store, *args, env=env, timeout=120)
    assert r.returncode == 0, r.describe()
    return [json.loads(line) for line in r.stdout.splitlines()]


def duplicate_report(store: Path, limit: int = 5) -> str:
    """Which Parquet files hold eventIDs stored more than once (for assertion messages)."""
    con, src = duck(store)
    src = src.replace("hive_partitioning=true", "hive_partitioning=true, filename=true")
    rows = con.execute(f"""SELECT eventID, list(filename ORDER BY filename) FROM {src} WHERE eventID IS NOT NULL
                           GROUP BY eventID HAVING count(*) > 1 ORDER BY eventID LIMIT {limit}""").fetchall()
    return "\n".join(f"  {eid}: {[str(Path(f).relative_to(store)) for f in files]}" for eid, files in rows)
