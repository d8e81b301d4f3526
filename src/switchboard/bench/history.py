"""The durable history's own figures, for ``make bench`` (docs/BENCHMARKS.md):

* the database's size per million lines: ``--lines`` chat lines (about 60 characters each,
  spread over ``--rooms`` rooms) written through the store's own ``write`` in transactions of
  1,000 (what the server's group commits do under load), the WAL checkpointed, the file
  measured;
* the time the server takes to answer HISTORY for 1,000 lines: a ``switchboard serve`` on
  that database, one client asking ``--requests`` times for the 1,000 lines before a random
  id of a room (BEFORE, the scroll-back case), each answer read whole (p50, p99).

    python -m switchboard.bench.history [--lines 1000000] [--requests 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from switchboard import defaults
from switchboard.client import Client
from switchboard.protocol import HistoryMode, Message, MessageFlags
from switchboard.server.history import SqliteHistory

#: Lines per transaction while filling: a busy server's group commits are of this order.
FILL_BATCH = 1000
#: What a line says: about 60 characters, a chat line's usual length.
TEXT = "a line of chat about as long as the ones people usually type"
PAGE = defaults.MAX_HISTORY_PAGE


def fill(path: Path, lines: int, rooms: int) -> dict[str, float]:
    """Write ``lines`` lines into a new database at ``path``; its size and the write rate."""
    store = SqliteHistory(path, keep=lines, max_age_s=0)
    started = time.perf_counter()
    try:
        now_ms = time.time_ns() // 1_000_000
        for first in range(1, lines + 1, FILL_BATCH):
            batch = [
                Message(i, 1 + i % 50, "127.0.0.1", 40000 + i % 50, f"user{i % 50}",
                        f"room{i % rooms}", now_ms, MessageFlags.HISTORY, f"{i:08d} {TEXT}")
                for i in range(first, min(first + FILL_BATCH, lines + 1))
            ]  # fmt: skip
            store.write(batch)
        seconds = time.perf_counter() - started
        store._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return {
        "lines": lines,
        "rooms": rooms,
        "db_bytes": size,
        "bytes_per_line": size / lines,
        "mib_per_million_lines": size / lines * 1_000_000 / 2**20,
        "fill_lines_per_sec": lines / seconds,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} at start")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"no server listening on port {port} after {timeout:g}s")


def measure(data_dir: Path, lines: int, rooms: int, requests: int) -> dict[str, Any]:
    """HISTORY BEFORE a random id, 1,000 lines each, against a server on ``data_dir``."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "switchboard", "serve", "--port", str(port), "--rate", "0",
         "--log-level", "warning", "--name", "bench", "--data-dir", str(data_dir),
         "--http", "off"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_listening(port, proc)
        room = "room0"
        room_ids = range(rooms, lines + 1, rooms)  # room0 holds every rooms-th id
        chooser = random.Random(17)
        latencies: list[float] = []
        with Client("127.0.0.1", port, nick="reader", timeout=30) as client:
            client.join(room)
            for _ in range(requests):
                anchor = chooser.choice(room_ids[PAGE:])  # a full page before it
                started = time.perf_counter()
                page = client.history(room, HistoryMode.BEFORE, anchor, limit=PAGE)
                latencies.append((time.perf_counter() - started) * 1000)
                if len(page.lines) != PAGE:
                    raise RuntimeError(f"a page of {len(page.lines)} lines, not {PAGE}")
    finally:
        proc.terminate()
        proc.wait(30)
    latencies.sort()
    return {
        "requests": requests,
        "page": PAGE,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "max_ms": latencies[-1],
    }


def run(lines: int, rooms: int, requests: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="switchboard-bench-history-"))
    try:
        size = fill(work / defaults.HISTORY_DB_FILE, lines, rooms)
        return {**size, **measure(work, lines, rooms, requests)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m switchboard.bench.history", description=__doc__
    )
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.rooms < 1 or args.lines < args.rooms * (PAGE + 1) or args.requests < 1:
        parser.error(f"--rooms >= 1, --lines >= rooms x {PAGE + 1}, --requests >= 1")
    report = run(args.lines, args.rooms, args.requests)
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{report['lines']:,} lines: {report['db_bytes'] / 2**20:.1f} MiB "
            f"({report['bytes_per_line']:.0f} bytes/line, written at "
            f"{report['fill_lines_per_sec']:,.0f} lines/s); HISTORY of {PAGE:,} lines: "
            f"p50 {report['p50_ms']:.2f} ms, p99 {report['p99_ms']:.2f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
