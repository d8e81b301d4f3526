"""A cluster's room history in Redis streams (issue 17 on ``serve --cluster``), measured on
two nodes of a cluster with a Redis of its own (docs/BENCHMARKS.md):

* HISTORY of 1,000 lines through node B of a room whose ``--lines`` lines were said through
  node A: one client asks ``--requests`` times for the 1,000 lines before a random id
  (BEFORE, the scroll-back case), each answer read whole (p50, p99 at the client);
* broadcast throughput of a cluster room: the load generator's broadcast case (50 members,
  W=1), the members alternating between the two nodes, messages delivered per second and CPU
  per message over both nodes and Redis; with ``--baseline-src DIR`` (the ``src`` folder of
  another checkout, e.g. the commit before, whose nodes kept a capped list per room) the
  same case on nodes run from there, in the same run, alternating ``--rounds`` times.

    python -m switchboard.bench.cluster_history [--lines 5000] [--requests 200]
        [--duration 5] [--warmup 2] [--rounds 2] [--baseline-src DIR] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from switchboard import defaults
from switchboard.client import AsyncClient, Client
from switchboard.protocol import HistoryMode

from .cluster_ring import start_redis
from .loadgen import BenchConfig, run_bench
from .suite import MEMORY_FLAGS, _free_port, _wait_listening, stop_process

PAGE = defaults.MAX_HISTORY_PAGE
TEXT = "a line of chat about as long as the ones people usually type"
MEMBERS = 50
ROOM = "hist"


@contextmanager
def cluster(src: str | None = None) -> Iterator[tuple[list[int], list[int]]]:
    """A Redis and two nodes on it (run from ``src`` when given): ([ports], [pids of the
    nodes and Redis])."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    with tempfile.TemporaryDirectory(prefix="switchboard-chist-") as workdir:
        redis, redis_port = start_redis(workdir)
        nodes: list[subprocess.Popen[bytes]] = []
        ports: list[int] = []
        try:
            time.sleep(0.3)
            url = f"redis://127.0.0.1:{redis_port}/0"
            for name in ("hist-a", "hist-b"):
                port = _free_port()
                argv = [
                    sys.executable, "-m", "switchboard", "serve", "--port", str(port),
                    *MEMORY_FLAGS, "--cluster", url, "--node-name", name, "--name", "bench",
                ]  # fmt: skip
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env
                )
                nodes.append(proc)
                _wait_listening(port, proc)
                ports.append(port)
            yield ports, [*(n.pid for n in nodes), redis.pid]
        finally:
            for proc in nodes:
                stop_process(proc)
            redis.terminate()
            redis.wait(10)


async def _fill(port: int, lines: int) -> list[int]:
    """``lines`` BROADCASTs through the node on ``port``, 500 in flight: their ids."""
    ids: list[int] = []
    client = await AsyncClient.connect("127.0.0.1", port, nick="writer", timeout=60)
    async with client:
        await client.join(ROOM)
        for first in range(0, lines, 500):
            oks = await asyncio.gather(
                *(
                    client.broadcast(ROOM, f"{i:08d} {TEXT}")
                    for i in range(first, min(lines, first + 500))
                )
            )
            ids += [ok.message_id for ok in oks]
    return ids


def history_latency(lines: int, requests: int) -> dict[str, Any]:
    """HISTORY BEFORE a random id, 1,000 lines each, through node B of lines said on A."""
    with cluster() as (ports, _):
        started = time.perf_counter()
        ids = asyncio.run(_fill(ports[0], lines))
        fill_s = time.perf_counter() - started
        chooser = random.Random(17)
        latencies: list[float] = []
        with Client("127.0.0.1", ports[1], nick="reader", timeout=30) as client:
            client.join(ROOM)
            for _ in range(requests):
                anchor = chooser.choice(ids[PAGE:])  # a full page before it
                started = time.perf_counter()
                page = client.history(ROOM, HistoryMode.BEFORE, anchor, limit=PAGE)
                latencies.append((time.perf_counter() - started) * 1000)
                if len(page.lines) != PAGE:
                    raise RuntimeError(f"a page of {len(page.lines)} lines, not {PAGE}")
    latencies.sort()
    return {
        "lines": lines,
        "fill_lines_per_sec": lines / fill_s,
        "requests": requests,
        "page": PAGE,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


def broadcast(src: str | None, duration: float, warmup: float) -> dict[str, Any]:
    """The broadcast case (50 members, W=1) on a two-node cluster run from ``src``."""
    with cluster(src) as (ports, pids):
        cfg = BenchConfig(
            "127.0.0.1", ports[0], "broadcast", MEMBERS, window=1, duration=duration,
            warmup=warmup, server_pid=pids[0], more_ports=(ports[1],), more_pids=tuple(pids[1:]),
        )  # fmt: skip
        return run_bench(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cluster_history", description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=5000)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--baseline-src", help="the src folder of a checkout to compare with")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.lines <= PAGE or args.requests < 1 or args.rounds < 1:
        p.error(f"--lines must be above {PAGE}, --requests and --rounds at least 1")
    results: dict[str, Any] = {"history": history_latency(args.lines, args.requests)}
    runs: dict[str, list[dict[str, Any]]] = {"streams": [], "baseline": []}
    for _ in range(args.rounds):
        runs["streams"].append(broadcast(None, args.duration, args.warmup))
        if args.baseline_src:
            runs["baseline"].append(broadcast(args.baseline_src, args.duration, args.warmup))
    results["broadcast"] = runs
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    h = results["history"]
    print(
        f"HISTORY of {h['page']:,} lines through node B ({h['lines']:,} said on node A, "
        f"{h['fill_lines_per_sec']:,.0f} lines/s): p50 {h['p50_ms']:.1f} ms, "
        f"p99 {h['p99_ms']:.1f} ms"
    )
    for name, reports in runs.items():
        for r in reports:
            print(
                f"broadcast {name:8s} {r['ops_per_sec']:>9,.0f} messages/s delivered  "
                f"p50 {r['latency_ms']['p50']:.2f} ms  p99 {r['latency_ms']['p99']:.2f} ms  "
                f"CPU {r['server_cpu_us_per_op']} us/message (nodes and Redis)  "
                f"errors {r.get('errors') or {}}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
