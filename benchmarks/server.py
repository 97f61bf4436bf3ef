"""Throughput and latency of ``ponder serve`` under 64 concurrent connections.

    python -m benchmarks.server --json

The server runs a scripted agent with zero model latency (and no persistence, so the figures are
the HTTP and orchestration layers), in its own process; the load comes from another process, a
lean raw-socket HTTP/1.1 keep-alive client (httpx would cost more CPU than the server on 2 cores).
``direct_p50_ms`` is the same agent called in-process. Run again with 2 workers for
``rps_2_workers``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time

from ponder import Agent
from ponder.testing import ScriptedChatModel

BODY = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "ping"}]}).encode()


def agent() -> Agent:
    """The served agent: ``benchmarks.server:agent``."""
    return Agent("bench", ScriptedChatModel(replies=lambda m: "pong"), checkpointer=False)


async def _connection(port: int, until: float, latencies: list[float], errors: list[int],
                      thread: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Content-Type: application/json\r\nX-Thread-Id: t{thread}\r\n"
               f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY
    while time.perf_counter() < until:
        started = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        if status != 200:
            errors.append(status)
    writer.close()


async def _load(port: int, connections: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    errors: list[int] = []
    until = time.perf_counter() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(_connection(port, until, latencies, errors, i)
                           for i in range(connections)))
    wall = time.perf_counter() - started
    latencies.sort()
    return {"requests": len(latencies), "errors": len(errors), "rps": len(latencies) / wall,
            "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)]}


def _serve(workers: int) -> tuple[subprocess.Popen, int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "ponder.cli", "serve", "benchmarks.server:agent", "--port",
         str(port), "--workers", str(workers)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            time.sleep(1.0 if workers > 1 else 0.2)  # let every worker come up
            return server, port
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("ponder serve did not start within 30 s")


def measure(workers: int, connections: int, seconds: float) -> dict[str, float]:
    server, port = _serve(workers)
    try:
        loader = subprocess.run(
            [sys.executable, "-m", "benchmarks.server", "--load", str(port),
             "--connections", str(connections), "--seconds", str(seconds)],
            capture_output=True, text=True)
        if loader.returncode != 0:
            raise RuntimeError(f"the load generator failed:\n{loader.stderr[-2000:]}")
        return json.loads(loader.stdout)
    finally:
        server.terminate()
        server.wait(timeout=30)


async def direct_p50_ms(turns: int = 500) -> float:
    served = agent()
    timings = []
    for i in range(turns):
        started = time.perf_counter()
        await served.ainvoke("ping", thread_id=f"t{i}")
        timings.append(time.perf_counter() - started)
    return 1000 * statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--load", type=int, help=argparse.SUPPRESS)  # the load process
    args = parser.parse_args()
    if args.load:
        print(json.dumps(asyncio.run(_load(args.load, args.connections, args.seconds))))
        return
    one = measure(1, args.connections, args.seconds)
    two = measure(2, args.connections, args.seconds)
    result = {key: round(value, 3) for key, value in one.items()}
    result["direct_p50_ms"] = round(asyncio.run(direct_p50_ms()), 3)
    result["rps_2_workers"] = round(two["rps"], 3)
    result["errors_2_workers"] = two["errors"]
    result["rps_2_over_1"] = round(two["rps"] / one["rps"], 3)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
