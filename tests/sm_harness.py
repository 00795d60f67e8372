"""Run the real state machine without AWS: moto (S3 + Step Functions executing ASL + Lambda) with the
Lambda Invoke API forwarded to a Lambda Runtime API emulator (`cargo lambda watch`, or the contract
fakes in this file), and RestoreObject that starts "in progress".

Two uses:
- as a program (the launcher; adapted from ../shared/reference/moto_launcher.py):
      MOTO_PORT=5000 LAMBDA_FORWARD_URL=http://127.0.0.1:9000 \
      LAMBDA_ROUTES='{"deployed-name": "binary"}' LAMBDA_INVOKE_LOG=/tmp/invokes.jsonl \
      python tests/sm_harness.py
  It prints "moto listening on <port>" and serves until SIGTERM.
- as a module (imported by the tests): start/stop helpers, the template loader that tolerates
  CloudFormation tags, the ASL with the template's DefinitionSubstitutions applied, and
  `ContractFakes`, a tiny in-process stand-in for the four Lambdas that follows docs/contracts.md
  (it checks the ASL's wiring fast, without building the Rust binaries).
"""
from __future__ import annotations

import contextlib
import datetime
import gzip
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
ASL_PATH = ROOT / "statemachine" / "copy-trail-events.asl.json"
TEMPLATE_PATH = ROOT / "template.yaml"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account (the SFN interpreter calls moto with key "ak")
FUNCTIONS = {  # template logical id -> cargo binary (also the deployed name in the tests)
    "EnumerateFunction": "enumerate",
    "PrepareFunction": "prepare",
    "CopyFunction": "copy",
    "FinalizeFunction": "finalize",
}


# --------------------------------------------------------------------------------------------------
# The launcher (only runs as a program: importing this module patches nothing).
# --------------------------------------------------------------------------------------------------
def _launcher_main() -> None:
    from moto.core.config import default_user_config
    from moto.server import ThreadedMotoServer
    import moto.awslambda_simple.models as lsm
    from moto.s3.models import FakeKey

    port = int(os.environ.get("MOTO_PORT", "5000"))
    lambda_url = os.environ.get("LAMBDA_FORWARD_URL", "http://127.0.0.1:9000")
    # Test faults at the seam between the state machine and the functions: a JSON file
    # {"after": "<function>", "corrupt": "workItems"} makes the launcher overwrite the work-items
    # object that function's answer names with bytes that are not JSON (the Map's ItemReader then
    # fails), once; the file is removed when used.
    faults_file = os.environ.get("LAMBDA_FAULTS_FILE")
    routes = json.loads(os.environ.get("LAMBDA_ROUTES", "{}"))  # deployed name -> cargo bin name
    invoke_log = os.environ.get("LAMBDA_INVOKE_LOG")
    log_lock = threading.Lock()

    def log_invoke(name: str, payload: bytes, status: int, answer: bytes) -> None:
        if not invoke_log:
            return
        try:
            req = json.loads(payload or b"null")
        except ValueError:
            req = None
        try:
            resp = json.loads(answer or b"null")
        except ValueError:
            resp = answer.decode("utf-8", "replace")
        line = json.dumps({"function": name, "time": time.time(), "status": status,
                           "request": req, "response": resp})
        with log_lock, open(invoke_log, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def invoke(self, function_name, qualifier, body, headers, response_headers):
        name = function_name.split(":function:")[-1].split(":")[0]
        name = routes.get(name, name)
        data = body.encode() if isinstance(body, str) else (body or b"{}")
        req = urllib.request.Request(f"{lambda_url}/2015-03-31/functions/{name}/invocations",
                                     data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=900) as r:
                answer = r.read()
                log_invoke(name, data, r.status, answer)
                inject_fault(name, answer)
                return answer
        except urllib.error.HTTPError as e:  # a function error comes back as HTTP 500
            answer = e.read()
            log_invoke(name, data, e.code, answer)
            response_headers["x-amz-function-error"] = "Unhandled"
            return answer

    def inject_fault(name: str, answer: bytes) -> None:
        if not faults_file or not os.path.exists(faults_file):
            return
        with open(faults_file) as f:
            fault = json.load(f)
        if fault.get("after") != name or fault.get("corrupt") != "workItems":
            return
        os.remove(faults_file)
        out = json.loads(answer)
        import boto3
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name=REGION,
                          aws_access_key_id="test", aws_secret_access_key="test")
        s3.put_object(Bucket=out["storeBucket"], Key=out["workItemsKey"], Body=b"{{ this is not JSON")

    lsm.LambdaSimpleBackend.invoke = invoke

    # moto has no Lambda GetAccountSettings (GET /2016-08-19/account-settings/): answer it in AWS's
    # documented shape (https://docs.aws.amazon.com/lambda/latest/api/API_GetAccountSettings.html),
    # with the unreserved concurrency a test writes to LAMBDA_ACCOUNT_SETTINGS_FILE
    # ({"UnreservedConcurrentExecutions": n}; default 1000, the default quota).
    import moto.awslambda.urls as lambda_urls
    settings_file = os.environ.get("LAMBDA_ACCOUNT_SETTINGS_FILE")

    def account_settings(request, full_url, headers):
        wanted = {}
        if settings_file and os.path.exists(settings_file):
            with open(settings_file) as f:
                wanted = json.load(f)
        limit = {"TotalCodeSize": 80530636800, "CodeSizeUnzipped": 262144000, "CodeSizeZipped": 52428800,
                 "ConcurrentExecutions": wanted.get("ConcurrentExecutions", 1000),
                 "UnreservedConcurrentExecutions": wanted.get("UnreservedConcurrentExecutions", 1000)}
        body = {"AccountLimit": limit, "AccountUsage": {"TotalCodeSize": 0, "FunctionCount": len(routes)}}
        return 200, {"Content-Type": "application/json"}, json.dumps(body)

    lambda_urls.url_paths[r"{0}/(?P<api_version>[^/]+)/account-settings/?$"] = account_settings

    orig_restore = FakeKey.restore

    def restore(self, days):
        first = self._expiry is None
        orig_restore(self, days)
        if first:  # unpatched, moto shows a restore as finished before its first tick
            self._status, self._tick, self._time_progressed = (
                "IN_PROGRESS", 0, datetime.datetime.now())

    FakeKey.restore = restore

    default_user_config["stepfunctions"] = {"execute_state_machine": True}
    default_user_config["lambda"] = {"use_docker": False}
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    srv.start()
    print(f"moto listening on {port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    try:
        stop.wait()
    finally:
        srv.stop()


# --------------------------------------------------------------------------------------------------
# Helpers for the tests.
# --------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2,
              proc: subprocess.Popen | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def tool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment with the venv's bin dir first on PATH (cargo-lambda and zig live there)."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


class Moto:
    """The launcher as a subprocess on a free port."""

    def __init__(self, lambda_url: str, routes: dict[str, str], log_dir: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.invoke_log = log_dir / "invokes.jsonl"
        self.faults_file = log_dir / "faults.json"
        self.account_settings_file = log_dir / "account-settings.json"
        self._out = open(log_dir / "moto.log", "wb")
        env = tool_env({
            "MOTO_PORT": str(self.port),
            "LAMBDA_FORWARD_URL": lambda_url,
            "LAMBDA_ROUTES": json.dumps(routes),
            "LAMBDA_INVOKE_LOG": str(self.invoke_log),
            "LAMBDA_FAULTS_FILE": str(self.faults_file),
            "LAMBDA_ACCOUNT_SETTINGS_FILE": str(self.account_settings_file),
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": REGION,
        })
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve())], env=env,
                                     stdout=self._out, stderr=subprocess.STDOUT)
        wait_for(lambda: urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=2),
                 60, "moto server", proc=self.proc)

    def api(self, path: str, body: dict | None = None) -> None:
        req = urllib.request.Request(f"{self.url}/moto-api/{path}", method="POST",
                                     data=json.dumps(body or {}).encode(),
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=30).read()

    def reset(self) -> None:
        self.api("reset")
        self.invoke_log.unlink(missing_ok=True)
        self.faults_file.unlink(missing_ok=True)

    def corrupt_work_items_after(self, function: str) -> None:
        """The next answer of `function` that names a work-items object gets that object overwritten
        with bytes that are not JSON (see the launcher)."""
        self.faults_file.write_text(json.dumps({"after": function, "corrupt": "workItems"}))

    def hold_restores(self, seconds: int) -> None:
        """Restores started from now on stay in progress for `seconds`."""
        self.api("state-manager/set-transition",
                 {"model_name": "s3::keyrestore",
                  "transition": {"progression": "time", "seconds": seconds}})

    def invokes(self) -> list[dict]:
        if not self.invoke_log.exists():
            return []
        return [json.loads(l) for l in self.invoke_log.read_text().splitlines() if l.strip()]

    def client(self, service: str):
        import boto3
        return boto3.client(service, endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id="test", aws_secret_access_key="test")

    def stop(self) -> None:
        stop_process(self.proc)
        self._out.close()


def stop_process(proc: subprocess.Popen, grace: float = 10) -> None:
    """Stop a process we started (and its process group when it leads one)."""
    if proc.poll() is not None:
        return
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        proc.wait(grace)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        proc.wait(grace)


def build_lambda_binaries(crates) -> None:
    """Builds the Lambda binaries once, before a `cargo lambda watch` serves them (its own first
    build per binary would run inside the first invoke's timeout); cargo-lambda comes from .ci/setup."""
    import shutil
    if not shutil.which("cargo-lambda", path=str(VENV_BIN)):
        raise RuntimeError("cargo-lambda missing from .venv/bin: run bash .ci/setup")
    build = subprocess.run(["cargo", "build", *sum((["--bin", c] for c in crates), [])],
                           cwd=ROOT, env=tool_env(), capture_output=True, text=True, timeout=3600)
    assert build.returncode == 0, build.stderr[-6000:]


def function_env(endpoint: str, source: str, store: str, **extra: str) -> dict[str, str]:
    """The environment the stack gives the functions, pointed at `endpoint` (moto or a proxy)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_EC2_METADATA_DISABLED": "true",
        "DEFAULT_SOURCE": source, "DEFAULT_STORE": store, "RETENTION_DAYS": "2557",
        "DEFAULT_LAST": "PT1H", "RUST_LOG": "info", "RUST_BACKTRACE": "1",
        **extra,
    }


class CargoLambdaWatch:
    """`cargo lambda watch` on a free invoke port, running the workspace's Lambda binaries."""

    def __init__(self, env: dict[str, str], log_dir: Path, ready_timeout: float = 1800,
                 extra_args: tuple[str, ...] = (), port: int | None = None, log_name: str = "cargo-lambda.log"):
        """`extra_args` go to `cargo lambda watch` as they are (e.g. ("--timeout", "30")); `port` lets a
        restarted watch take over the invoke port the launcher forwards to."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env_file = log_dir / (log_name + ".env")
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        self._out = open(log_dir / log_name, "wb")
        self.proc = subprocess.Popen(
            ["cargo", "lambda", "watch", "--invoke-address", "127.0.0.1",
             "--invoke-port", str(self.port), "--ignore-changes", "--concurrency", "4",
             "--env-file", str(env_file), *extra_args],
            cwd=ROOT, env=tool_env(env), stdout=self._out, stderr=subprocess.STDOUT,
            start_new_session=True)
        wait_for(lambda: socket.create_connection(("127.0.0.1", self.port), timeout=1),
                 ready_timeout, "cargo lambda watch", interval=1, proc=self.proc)

    def stop(self) -> None:
        stop_process(self.proc)
        self._out.close()


# --------------------------------------------------------------------------------------------------
# Template and definition.
# --------------------------------------------------------------------------------------------------
def load_template(path: Path = TEMPLATE_PATH) -> dict:
    """YAML loader that keeps CloudFormation short-form tags as {"Fn::X": value} / {"Ref": value}."""
    import yaml

    class CfnLoader(yaml.SafeLoader):
        pass

    def construct(loader, tag_suffix, node):
        name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if tag_suffix == "GetAtt" and isinstance(value, str):
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    CfnLoader.add_multi_constructor("!", construct)
    return yaml.load(path.read_text(), Loader=CfnLoader)


def state_machine_resource(template: dict) -> tuple[str, dict]:
    for name, res in template["Resources"].items():
        if res.get("Type") == "AWS::Serverless::StateMachine":
            return name, res
    raise KeyError("no AWS::Serverless::StateMachine in template.yaml")


def template_substitution_names(template: dict | None = None) -> set[str]:
    _, sm = state_machine_resource(template or load_template())
    return set(sm["Properties"]["DefinitionSubstitutions"])


def asl_substitution_names(text: str | None = None) -> set[str]:
    text = ASL_PATH.read_text() if text is None else text
    return set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", text))


def definition(values: dict[str, Any]) -> str:
    """The ASL with the template's DefinitionSubstitutions replaced by test values."""
    names = template_substitution_names()
    missing = names - set(values)
    if missing:
        raise KeyError(f"no test value for substitutions {sorted(missing)}")
    text = ASL_PATH.read_text()
    for name in names:
        text = text.replace("${" + name + "}", str(values[name]))
    left = asl_substitution_names(text)
    if left:
        raise KeyError(f"substitutions left in the definition: {sorted(left)}")
    json.loads(text)
    return text


def deploy(moto: Moto, store_bucket: str, store_prefix: str = "", max_concurrency: int = 4,
           name: str | None = None) -> str:
    """Create the four functions (dummy code; invokes are forwarded) and the state machine."""
    import io
    import zipfile
    lam = moto.client("lambda")
    iam = moto.client("iam")
    role_arn = iam.create_role(RoleName=f"trailcopy-{uuid.uuid4().hex[:8]}",
                               AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("bootstrap", "#!/bin/sh\n")
    arns = {}
    for logical, binary in FUNCTIONS.items():
        arns[logical] = lam.create_function(
            FunctionName=binary, Runtime="provided.al2023", Role=role_arn, Handler="bootstrap",
            Code={"ZipFile": buf.getvalue()}, Architectures=["arm64"])["FunctionArn"]
    values = {f"{logical}Arn": arn for logical, arn in arns.items()}
    values.update({"StoreBucket": store_bucket, "StorePrefix": store_prefix,
                   "MaxConcurrency": max_concurrency, "Partition": "aws"})
    sfn = moto.client("stepfunctions")
    return sfn.create_state_machine(
        name=name or f"trailcopy-{uuid.uuid4().hex[:8]}", definition=definition(values),
        roleArn=role_arn, type="STANDARD")["stateMachineArn"]


def run_execution(moto: Moto, sm_arn: str, request: dict, timeout: float = 600, name: str | None = None) -> dict:
    """Starts and waits for an execution. Named (moto names unnamed executions "None": a second one
    on the same state machine would collide)."""
    import uuid

    sfn = moto.client("stepfunctions")
    arn = sfn.start_execution(stateMachineArn=sm_arn, name=name or uuid.uuid4().hex,
                              input=json.dumps(request))["executionArn"]
    return wait_for(lambda: (d := sfn.describe_execution(executionArn=arn))["status"] != "RUNNING"
                    and d, timeout, f"execution {arn}", interval=0.5)


# --------------------------------------------------------------------------------------------------
# Trail data in the CloudTrail layout.
# --------------------------------------------------------------------------------------------------
def trail_key(account: str, region: str, ts: datetime.datetime, unique: str, prefix: str = "") -> str:
    return (f"{prefix}AWSLogs/{account}/CloudTrail/{region}/{ts:%Y/%m/%d}/"
            f"{account}_CloudTrail_{region}_{ts:%Y%m%dT%H%MZ}_{unique}.json.gz")


def make_event(ts: datetime.datetime, account: str, region: str, n: int) -> dict:
    return {
        "eventVersion": "1.08",
        "userIdentity": {"type": "IAMUser", "principalId": "AIDAEXAMPLE", "accountId": account,
                         "userName": "alice"},
        "eventTime": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "s3.amazonaws.com",
        "eventName": "ListBuckets",
        "awsRegion": region,
        "sourceIPAddress": "192.0.2.10",
        "userAgent": "aws-cli/2.0",
        "requestParameters": None,
        "responseElements": None,
        "requestID": f"REQ{n:08d}",
        "eventID": str(uuid.UUID(int=n + 1)),
        "readOnly": True,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": account,
        "eventCategory": "Management",
    }


def put_trail_file(s3, bucket: str, key: str, events: list[dict], storage_class: str | None = None,
                   body: bytes | None = None) -> None:
    data = body if body is not None else gzip.compress(json.dumps({"Records": events}).encode())
    extra = {"StorageClass": storage_class} if storage_class else {}
    s3.put_object(Bucket=bucket, Key=key, Body=data, **extra)


# --------------------------------------------------------------------------------------------------
# Contract fakes: the four Lambdas as docs/contracts.md and the ASL expect them, in Python.
# --------------------------------------------------------------------------------------------------
class FunctionError(Exception):
    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type


class ContractFakes:
    """An HTTP server answering `POST /2015-03-31/functions/<name>/invocations` like cargo lambda
    watch does (200 + JSON, or 500 + {errorType, errorMessage}). It copies nothing: it lists files,
    restores archived ones, walks a cursor one file per call and keeps per-item markers in the
    store, enough to drive every branch of the definition."""

    def __init__(self, default_store: str):
        self.s3 = None  # set by connect(), once moto runs (moto needs this server's URL first)
        self.default_store = default_store
        self.calls: list[tuple[str, dict]] = []
        fakes = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                name = self.path.split("/functions/")[1].split("/")[0]
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                fakes.calls.append((name, body))
                try:
                    status, out = 200, getattr(fakes, name)(body)
                except FunctionError as e:
                    status, out = 500, {"errorType": e.error_type, "errorMessage": str(e)}
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def connect(self, moto_url: str) -> None:
        import boto3
        self.s3 = boto3.client("s3", endpoint_url=moto_url, region_name=REGION,
                               aws_access_key_id="test", aws_secret_access_key="test")

    def stop(self) -> None:
        self.server.shutdown()

    @staticmethod
    def _split(uri: str) -> tuple[str, str]:
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return bucket, prefix

    def _get(self, store: str, key: str) -> Any:
        bucket, prefix = self._split(store)
        return json.loads(self.s3.get_object(Bucket=bucket, Key=prefix + key)["Body"].read())

    def _put(self, store: str, key: str, value: Any) -> None:
        bucket, prefix = self._split(store)
        self.s3.put_object(Bucket=bucket, Key=prefix + key, Body=json.dumps(value).encode())

    def _files(self, source: str, prefix: str) -> list[dict]:
        bucket, _ = self._split(source)
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o for p in pages for o in p.get("Contents", [])]

    def enumerate(self, call: dict) -> dict:
        if set(call) != {"input", "executionArn", "maxConcurrency"} or ":execution:" not in str(call["executionArn"]) \
                or not isinstance(call["maxConcurrency"], int):
            raise FunctionError("InvalidRequest",
                                f"enumerate takes {{input, executionArn, maxConcurrency}}, got {sorted(call)}")
        req = call["input"]
        known = {"source", "store", "start", "end", "last", "retentionDays", "copyId", "restore",
                 "scheduledTime", "window", "sinceLast", "deliveryAllowance"}
        unknown = set(req) - known
        if unknown:
            raise FunctionError("InvalidRequest", f"unknown field(s): {sorted(unknown)}")
        if "source" not in req:
            raise FunctionError("InvalidRequest", "source: required")
        store = req.get("store", self.default_store)
        copy_id = req.get("copyId") or uuid.uuid4().hex[:12]
        restore = req.get("restore") or {}
        src_bucket, src_prefix = self._split(req["source"])
        days = sorted({o["Key"].rsplit("/", 1)[0] + "/" for o in self._files(req["source"], src_prefix)})
        # Packed as the engine packs (docs/contracts.md): one date's day prefixes in one item (the
        # fake has no byte target); each item's prefixes kept in the store, as its frozen list.
        by_date: dict[str, list[str]] = {}
        for p in days:
            by_date.setdefault("-".join(p.rstrip("/").split("/")[-3:]), []).append(p)
        items = []
        for i, (date, prefixes) in enumerate(sorted(by_date.items()), 1):
            items.append({"copyId": copy_id, "store": store, "index": f"{i:05d}", "date": date,
                          "prefixes": len(prefixes), "files": 0, "bytes": 0, "tag": "0",
                          "first": prefixes[0], "last": prefixes[-1]})
            self._put(store, f"copies/{copy_id}/items/{i:05d}/listing.json", prefixes)
        self._put(store, f"copies/{copy_id}/workitems.json", items)
        self._put(store, f"copies/{copy_id}/record.json",
                  {"copyId": copy_id, "status": "IN_PROGRESS", "request": {**req, "store": store},
                   "statistics": {"prefixesFound": len(days)}})
        bucket, prefix = self._split(store)
        return {"copyId": copy_id, "store": store, "storeBucket": bucket,
                "workItemsKey": f"{prefix}copies/{copy_id}/workitems.json", "workItems": len(items),
                "prefixesFound": len(days), "pollSeconds": restore.get("pollSeconds", 1),
                "maxWaitSeconds": restore.get("maxWaitSeconds", 30), "maxConcurrency": call["maxConcurrency"],
                "status": "IN_PROGRESS"}

    ITEM_FIELDS = {"copyId", "store", "index", "date", "prefixes", "files", "bytes", "tag", "first", "last"}

    def _item(self, req: dict) -> tuple[dict, dict, list[dict]]:
        """(record, the work item as the Map passed it, the objects of its day prefixes)."""
        item = req["item"]
        if set(item) != self.ITEM_FIELDS:
            raise FunctionError("InvalidRequest", f"work item fields {sorted(item)}")
        record = self._get(item["store"], f"copies/{item['copyId']}/record.json")
        prefixes = self._get(item["store"], f"copies/{item['copyId']}/items/{item['index']}/listing.json")
        files = [o for p in prefixes for o in self._files(record["request"]["source"], p)]
        return record, item, files

    def prepare(self, req: dict) -> dict:
        if set(req) != {"item", "waitedSeconds"}:
            raise FunctionError("InvalidRequest", f"prepare input fields {sorted(req)}")
        record, item, files = self._item(req)
        src_bucket, _ = self._split(record["request"]["source"])
        pending = 0
        for o in files:
            if o.get("StorageClass", "STANDARD") in ("GLACIER", "DEEP_ARCHIVE"):
                head = self.s3.head_object(Bucket=src_bucket, Key=o["Key"])
                restore = head.get("Restore")
                if restore is None:
                    self.s3.restore_object(Bucket=src_bucket, Key=o["Key"],
                                           RestoreRequest={"Days": 1})
                    pending += 1
                elif 'ongoing-request="true"' in restore:
                    pending += 1
        max_wait = record["request"].get("restore", {}).get("maxWaitSeconds", 30)
        return {"pendingRestores": pending, "filesFound": len(files),
                "restoreWaitExceeded": pending > 0 and req["waitedSeconds"] >= max_wait,
                "waitSeconds": record["request"].get("restore", {}).get("pollSeconds", 1)}

    def copy(self, req: dict) -> dict:
        if set(req) != {"item", "cursor"}:
            raise FunctionError("InvalidRequest", f"copy input fields {sorted(req)}")
        record, item, files = self._item(req)
        if "/2020/10/09/" in item["first"]:
            raise FunctionError("ItemFailed", f"injected failure for {item['first']}")
        nxt = (req["cursor"] or {}).get("next", 0) + 1  # one file per call: exercises the loop
        done = nxt >= len(files)
        if done:
            self._put(item["store"], f"copies/{item['copyId']}/items/{item['index']}/state.json",
                      {"done": True, "files": len(files)})
        return {"done": done, "cursor": {"next": nxt}, "filesCompleted": 1, "eventsCompleted": 0}

    def finalize(self, req: dict) -> dict:
        if set(req) != {"copyId", "store", "mapError"}:
            raise FunctionError("InvalidRequest", f"finalize input fields {sorted(req)}")
        items = self._get(req["store"], f"copies/{req['copyId']}/workitems.json")
        failed = []
        for it in items:
            try:
                self._get(req["store"], f"copies/{req['copyId']}/items/{it['index']}/state.json")
            except Exception:  # noqa: BLE001 - no checkpoint: the item failed
                failed.append({"location": it["first"], "status": "FAILED",
                               "errorType": "WorkItemFailed", "errorMessage": "item failed"})
        status = "FAILED" if failed or req["mapError"] else "COMPLETED"
        stats = {"prefixesFound": sum(i["prefixes"] for i in items),
                 "prefixesCompleted": sum(i["prefixes"] for i in items if i["first"] not in [f["location"] for f in failed]),
                 "workItemsFound": len(items), "failedEntries": len(failed)}
        record = self._get(req["store"], f"copies/{req['copyId']}/record.json")
        record.update(status=status, statistics=stats)
        self._put(req["store"], f"copies/{req['copyId']}/record.json", record)
        self._put(req["store"], f"copies/{req['copyId']}/failures.json", failed)
        return {"copyId": req["copyId"], "status": status, "statistics": stats,
                "failedEntries": len(failed)}


if __name__ == "__main__":
    _launcher_main()
