"""A fault-injecting HTTP reverse proxy for the S3 API (stdlib only).

Sits on 127.0.0.1 in front of a moto server; the client under test (the `trailcopy` binary, via
AWS_ENDPOINT_URL) talks to the proxy. For a seeded fraction of requests it injects a fault instead of
(or while) forwarding:

    slowdown   503 with S3's `SlowDown` XML error body (throttling)
    internal   500 with S3's `InternalError` XML error body
    stall      no response: the connection stays open, silent, until the client gives up (its read
               timeout) or `stall_seconds` pass; then the proxy resets the connection
    reset      the connection is reset (TCP RST) as soon as the request is read
    body_cut   (opt-in) the request is forwarded, the response headers and about half the body are
               sent, then the connection is reset: a broken download the SDK's retries don't cover

The n-th request (in arrival order) gets the n-th decision of a `random.Random(seed)` stream; a
fault's kind is dealt from a shuffled deck of the enabled kinds, so every kind occurs once per
len(kinds) faults. `counts` (by kind), `requests` and `log` tell what was injected.

Targeted faults, whatever `rate` says: `fault_matching(path_contains, kind, times, methods, skip)` faults
the matching requests after the first `skip` of them, `times` times (kinds: slowdown, internal, reset,
stall, or `denied`: 403 AccessDenied, which the SDK does not retry). `clear_rules()` drops them.

    with FaultProxy(moto_endpoint, rate=0.10, seed=3) as proxy:
        env["AWS_ENDPOINT_URL"] = proxy.endpoint
        ...
    print(proxy.counts)
"""

from __future__ import annotations

import http.client
import random
import select
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

DEFAULT_KINDS = ("slowdown", "internal", "stall", "reset")
ALL_KINDS = DEFAULT_KINDS + ("body_cut",)

ERROR_BODIES = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
    "denied": (403, "AccessDenied", "Access Denied"),  # targeted faults only (fault_matching)
}

# Hop-by-hop headers are not forwarded (RFC 9110 7.6.1); the body is re-framed with Content-Length.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


def s3_error_xml(code: str, message: str, resource: str, request_id: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<Resource>{resource}</Resource><RequestId>{request_id}</RequestId></Error>").encode()


class FaultProxy:
    def __init__(self, upstream: str, rate: float = 0.10, seed: int = 0, kinds=DEFAULT_KINDS,
                 stall_seconds: float = 3.0, methods=None, record: bool = False):
        """upstream: http://host:port of the real S3 API. methods: only requests with these HTTP methods
        may be faulted (None: all). body_cut applies to GET responses only (others get no fault).
        record: keep every forwarded request in `records` (method, path, headers, body of JSON-protocol
        calls such as KMS's, response status and headers) for tests that check what was asked."""
        u = urlsplit(upstream)
        self.upstream = (u.hostname, u.port or 80)
        self.rate = rate
        self.kinds = tuple(kinds)
        assert self.kinds and set(self.kinds) <= set(ALL_KINDS), self.kinds
        self.stall_seconds = stall_seconds
        self.methods = set(methods) if methods else None
        self.rng = random.Random(seed)
        self.deck = []
        self.lock = threading.Lock()
        self.requests = 0
        self.counts = Counter()
        # stalls the client abandoned (its timeout fired) vs. stalls the proxy ended with a reset
        self.stalls_abandoned_by_client = 0
        self.stalls_ended_by_proxy = 0
        self.log = []  # (n, method, path, kind)
        self.record = record
        self.records: list[dict] = []
        self.enabled = True
        self.rules: list[dict] = []  # targeted faults (fault_matching)
        self.server = None
        self.thread = None

    # ------------------------------------------------------------------ decisions
    def decide(self, method: str, path: str):
        with self.lock:
            self.requests += 1
            n = self.requests
            roll = self.rng.random()  # drawn first: targeted rules leave the seeded stream as it was
            for rule in self.rules:
                if rule["path_contains"] not in path or (rule["methods"] and method not in rule["methods"]):
                    continue
                rule["seen"] += 1
                if rule["seen"] > rule["skip"] and rule["left"] > 0:
                    rule["left"] -= 1
                    rule["faulted"].append((n, method, path))
                    self.counts[rule["kind"]] += 1
                    self.log.append((n, method, path, rule["kind"]))
                    return n, rule["kind"]
            if not self.enabled or (self.methods and method not in self.methods) or roll >= self.rate:
                return n, None
            if not self.deck:
                self.deck = list(self.kinds)
                self.rng.shuffle(self.deck)
            kind = self.deck.pop()
            if kind == "body_cut" and method != "GET":
                self.deck.append(kind)  # keep it for a GET
                return n, None
            self.counts[kind] += 1
            self.log.append((n, method, path, kind))
            return n, kind

    def fault_matching(self, path_contains: str, kind: str = "internal", times: int = 1, methods=None,
                       skip: int = 0) -> dict:
        """Faults requests whose path contains `path_contains` (and whose method is in `methods`, if given):
        the first `skip` matching ones pass, the next `times` get `kind`. Returns the rule: "seen" counts
        the matching requests, "faulted" lists (n, method, path) of those faulted, "left" what remains."""
        assert kind in ERROR_BODIES or kind in ("stall", "reset"), kind
        rule = {"path_contains": path_contains, "kind": kind, "left": times, "skip": skip,
                "methods": set(methods) if methods else None, "seen": 0, "faulted": []}
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear_rules(self) -> None:
        with self.lock:
            self.rules.clear()

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        proxy = self

        class Handler(_Handler):
            pass

        Handler.proxy = proxy
        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def summary(self) -> str:
        kinds = ", ".join(f"{k}={self.counts.get(k, 0)}" for k in self.kinds)
        return (f"{self.requests} requests, {sum(self.counts.values())} faults ({kinds}); stalls abandoned by the "
                f"client {self.stalls_abandoned_by_client}, ended by the proxy {self.stalls_ended_by_proxy}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    errors = 0

    def handle_error(self, request, client_address):  # a client that went away mid-response
        self.errors += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: FaultProxy = None

    def log_message(self, *args):  # quiet
        pass

    def finish(self):
        try:
            super().finish()
        except OSError:  # the connection was reset on purpose
            pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _reset(self):
        """Close with SO_LINGER 0: the peer sees ECONNRESET."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True
        try:
            self.connection.close()
        except OSError:
            pass

    def _stall(self):
        """Say nothing until the client hangs up or stall_seconds pass (then reset)."""
        deadline = time.monotonic() + self.proxy.stall_seconds
        sock = self.connection
        while time.monotonic() < deadline:
            r, _, _ = select.select([sock], [], [], 0.05)
            if r:
                try:
                    data = sock.recv(1, socket.MSG_PEEK)
                except OSError:
                    data = b""
                if not data:  # the client closed: its timeout fired
                    with self.proxy.lock:
                        self.proxy.stalls_abandoned_by_client += 1
                    self._reset()
                    return
                time.sleep(0.05)  # a pipelined request? keep stalling
        with self.proxy.lock:
            self.proxy.stalls_ended_by_proxy += 1
        self._reset()

    def _send_error_xml(self, kind: str, n: int):
        status, code, message = ERROR_BODIES[kind]
        body = s3_error_xml(code, message, self.path.split("?")[0], f"FAULT{n:08d}")
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amz-request-id", f"FAULT{n:08d}")
        if status == 503:
            self.send_header("Retry-After", "0")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self, body: bytes):
        conn = http.client.HTTPConnection(*self.proxy.upstream, timeout=60)
        try:
            # (Expect: 100-continue was answered by this server already)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "expect"}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP], data
        finally:
            conn.close()

    def _handle(self):
        body = self._read_body()
        n, kind = self.proxy.decide(self.command, self.path)
        if kind in ERROR_BODIES:
            self._send_error_xml(kind, n)
            return
        if kind == "reset":
            self._reset()
            return
        if kind == "stall":
            self._stall()
            return
        status, reason, headers, data = self._forward(body)
        if self.proxy.record:
            entry = {"method": self.command, "path": self.path,
                     "headers": {k.lower(): v for k, v in self.headers.items()},
                     "body": body if self.headers.get("X-Amz-Target") else b"",
                     "status": status, "response_headers": {k.lower(): v for k, v in headers}}
            with self.proxy.lock:
                self.proxy.records.append(entry)
        self.send_response(status, reason)
        has_length = False
        for k, v in headers:
            if k.lower() in ("server", "date"):
                continue
            if k.lower() == "content-length":
                has_length = True
                if self.command != "HEAD":
                    v = str(len(data))
            self.send_header(k, v)
        if not has_length:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if kind == "body_cut" and len(data) > 1:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self._reset()
            return
        self.wfile.write(data)

    def do_GET(self):
        self._handle()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET
