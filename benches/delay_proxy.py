"""A TCP proxy that adds a fixed one-way delay to what the client sends (benches only, stdlib).

Every chunk read from the client is forwarded to the upstream `delay` seconds after it arrived,
in order; replies come back at once. Each HTTP request on a keep-alive connection therefore waits
one `delay` more than it would, like a longer round trip, without limiting throughput (chunks in
the delay line are not waiting on each other). Prints the port it listens on, then serves until
killed.

    python benches/delay_proxy.py --upstream 127.0.0.1:9000 --delay-ms 30
"""
import argparse
import asyncio
import collections
import re
import sys
import time


LOG = None  # --log: one line per request start (Unix time in seconds, request line)


def log_request(data: bytes):
    if LOG is None:
        return
    first = data.split(b"\r\n", 1)[0]
    if re.match(rb"^(GET|PUT|HEAD|POST|DELETE) ", first):
        LOG.write(f"{time.time():.4f} {first.decode(errors='replace')}\n")
        LOG.flush()


async def pump_delayed(reader, writer, delay):
    loop = asyncio.get_running_loop()
    line = collections.deque()
    ready = asyncio.Event()
    done = False

    async def feed():
        nonlocal done
        try:
            while data := await reader.read(1 << 16):
                log_request(data)
                line.append((loop.time() + delay, data))
                ready.set()
        finally:
            done = True
            ready.set()

    feeder = asyncio.create_task(feed())
    try:
        while True:
            if not line:
                if done:
                    break
                ready.clear()
                await ready.wait()
                continue
            due, data = line.popleft()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
    finally:
        feeder.cancel()
        writer.close()


async def pump(reader, writer):
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True, help="host:port")
    ap.add_argument("--delay-ms", type=float, required=True)
    ap.add_argument("--log", help="append each request's start (Unix time) and request line here")
    a = ap.parse_args()
    global LOG
    LOG = open(a.log, "a") if a.log else None
    host, port = a.upstream.rsplit(":", 1)
    delay = a.delay_ms / 1000

    async def handle(client_r, client_w):
        try:
            up_r, up_w = await asyncio.open_connection(host, int(port))
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pump_delayed(client_r, up_w, delay), pump(up_r, client_w), return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
