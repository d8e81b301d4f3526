"""The cross-node send ring (issue 16): the load generator's send ring (50 clients, 32 in
flight each, receipts) against one node, against two nodes of a cluster with a Redis of
its own, clients alternating between the nodes so that **every** message crosses, and
against ``serve --workers 2 --cluster`` on one port (the kernel spreads the clients, so
about half the messages cross): messages/s delivered with receipts, p50/p99, lost, and CPU
µs per delivered message summed over every server process (the nodes and Redis).  Usage::

    python -m switchboard.bench.cluster_ring [--duration S] [--warmup S] [--json]

Nothing is pinned: on a 2-core machine the nodes, Redis and the load generator share both
cores, which the report says.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from .loadgen import BenchConfig, run_bench
from .suite import MEMORY_FLAGS, SERVER_FLAGS, Server, _free_port

CLIENTS = 50
WINDOW = 32


def start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("cluster_ring: redis-server is not installed (Debian: redis-server)")
    port = _free_port()
    argv = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", workdir, "--loglevel", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return proc, port


def _wait_children(pid: int, count: int, timeout: float = 20.0) -> list[int]:
    """The pids of ``pid``'s first ``count`` children (Linux: /proc/PID/task/PID/children)."""
    deadline = time.monotonic() + timeout
    path = f"/proc/{pid}/task/{pid}/children"
    while time.monotonic() < deadline:
        with open(path, encoding="ascii") as fh:
            found = [int(x) for x in fh.read().split()]
        if len(found) >= count:
            return found[:count]
        time.sleep(0.1)
    raise SystemExit(f"cluster_ring: the workers did not start within {timeout:g}s")


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            time.sleep(1.0)  # both workers: the second binds a moment after the first
            return
        time.sleep(0.1)
    raise SystemExit(f"cluster_ring: nothing listens on port {port} after {timeout:g}s")


def ring(port: int, pid: int, more_ports: tuple[int, ...], more_pids: tuple[int, ...],
         duration: float, warmup: float) -> dict[str, Any]:  # fmt: skip
    cfg = BenchConfig(
        "127.0.0.1", port, "send", CLIENTS, window=WINDOW, duration=duration, warmup=warmup,
        server_pid=pid, more_ports=more_ports, more_pids=more_pids,
    )  # fmt: skip
    return run_bench(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cluster_ring", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    results: dict[str, Any] = {"clients": CLIENTS, "window": WINDOW, "pinned": False}
    single = Server("switchboard", [])
    try:
        results["single"] = ring(single.port, single.pid, (), (), args.duration, args.warmup)
    finally:
        single.stop()
    with tempfile.TemporaryDirectory(prefix="switchboard-ring-") as workdir:
        redis, redis_port = start_redis(workdir)
        nodes: list[Server] = []
        try:
            time.sleep(0.3)
            url = f"redis://127.0.0.1:{redis_port}/0"
            for name in ("ring-a", "ring-b"):
                flags = (*MEMORY_FLAGS, "--cluster", url, "--node-name", name)  # no --data-dir
                nodes.append(Server("switchboard", [], flags))
            results["cluster"] = ring(
                nodes[0].port,
                nodes[0].pid,
                (nodes[1].port,),
                (nodes[1].pid, redis.pid),
                args.duration,
                args.warmup,
            )
        finally:
            for node in nodes:
                node.stop()
            redis.terminate()
            redis.wait(10)
    with tempfile.TemporaryDirectory(prefix="switchboard-ring-") as workdir:
        redis, redis_port = start_redis(workdir)
        workers: subprocess.Popen[bytes] | None = None
        try:
            time.sleep(0.3)
            url = f"redis://127.0.0.1:{redis_port}/0"
            port = _free_port()
            argv = [
                sys.executable, "-m", "switchboard", "serve", "--port", str(port),
                *SERVER_FLAGS, "--workers", "2", "--cluster", url, "--node-name", "pool",
            ]  # fmt: skip
            workers = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            children = _wait_children(workers.pid, 2)
            _wait_port(port)
            results["workers"] = ring(
                port, children[0], (), (children[1], redis.pid), args.duration, args.warmup
            )
        finally:
            if workers is not None:
                workers.terminate()
                workers.wait(30)
            redis.terminate()
            redis.wait(10)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for name in ("single", "cluster", "workers"):
        r = results[name]
        print(
            f"{name:8s} {r['ops_per_sec']:>10,.0f} messages/s delivered  "
            f"p50 {r['latency_ms']['p50']:.2f} ms  p99 {r['latency_ms']['p99']:.2f} ms  "
            f"lost {r['lost']}  errors {r.get('errors') or {}}  "
            f"CPU {r['server_cpu_us_per_op']} us/message (all server processes)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
