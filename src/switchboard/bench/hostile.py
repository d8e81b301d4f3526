"""The hostile-client case of ``make bench``: output amplification.

    python -m switchboard.bench.hostile --port P --server-pid PID [--joins 20000] [--json]

A member fills a room's history (``--history`` messages of ``--text`` bytes: the server's
defaults, 50 of 4,096, unless told otherwise) and stays.  Then one client, in a process of its
own, pipelines ``--joins`` JOINs of that room in one write (20,000 by default, the default rate
limit's burst: 340 KB that ask for about 4 GB of answers) and reads everything it is sent as
fast as it can, until a TIME sent after them is answered.  Meanwhile a bystander in this
process asks TIME every 10 ms (W=1) and the server's resident memory is read from /proc every
10 ms.  Reported: the server's peak RSS above its baseline, the bystander's latency, and how
long the hostile client took to be answered and how much it received.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.connection
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from switchboard import defaults
from switchboard.client import Client, SwitchboardError
from switchboard.protocol import (
    ErrorCode,
    FrameDecoder,
    JoinRequest,
    MessageClass,
    MessageType,
    TimeRequest,
    encode,
)

from .histogram import Histogram
from .procstat import ProcError, rss_kib

ROOM = "x"
JOINS = 20_000
#: How often the bystander asks, and the server's RSS is read.
TICK_S = 0.01
_NS = 1_000_000_000
_RESPONSE = int(MessageClass.RESPONSE) << 16
_ERROR_KEY = _RESPONSE | int(MessageType.ERROR)
_MESSAGE_KEY = (int(MessageClass.INDICATION) << 16) | int(MessageType.MESSAGE)


def _hostile(
    host: str, port: int, joins: int, timeout: float, pipe: multiprocessing.connection.Connection
) -> None:
    """The hostile client (its own process): JOINs in one write, then read everything."""
    try:
        pipe.send(_flood(host, port, joins, timeout))
    except Exception as exc:  # reported by the parent, which fails the case
        pipe.send({"error": f"{exc.__class__.__name__}: {exc}"})


def _flood(host: str, port: int, joins: int, timeout: float) -> dict[str, Any]:
    decoder = FrameDecoder(max_frame=1 << 24)
    answers = messages = received = 0
    errors: dict[str, int] = {}
    barrier = joins + 1  # the TIME after the JOINs: its answer comes after all of theirs
    done = False
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        flood = b"".join(encode(JoinRequest(ROOM, request_id=i)) for i in range(1, joins + 1))
        flood += encode(TimeRequest(request_id=barrier))
        welcomed = False
        started = time.perf_counter_ns()
        deadline = time.monotonic() + timeout
        while not done:
            if time.monotonic() > deadline:
                break
            data = sock.recv(1 << 20)
            if not data:
                break
            received += len(data)
            decoder.feed(data)
            buf = decoder.buffer
            for key, request_id, start, _ in decoder.frames():
                if key == _MESSAGE_KEY:
                    messages += 1
                elif not welcomed:  # the WELCOME: now the flood, written while we read
                    welcomed = True
                    started = time.perf_counter_ns()
                    writer = threading.Thread(target=sock.sendall, args=(flood,), daemon=True)
                    writer.start()
                elif key & 0xFFFF0000 == _RESPONSE and request_id:
                    if request_id == barrier:
                        done = True
                    elif key == _ERROR_KEY:
                        name = ErrorCode(int.from_bytes(buf[start : start + 2], "big")).name
                        errors[name] = errors.get(name, 0) + 1
                    else:
                        answers += 1
        seconds = (time.perf_counter_ns() - started) / _NS
    return {
        "sent_bytes": len(flood),
        "received_bytes": received,
        "answers": answers,
        "history_messages": messages,
        "errors": errors,
        "seconds": round(seconds, 3),
        "complete": done,
    }


def _percentiles_ms(hist: Histogram) -> dict[str, float]:
    def ms(q: float) -> float:
        return round(hist.percentile(q) / 1e6, 4)

    return {"p50": ms(50), "p90": ms(90), "p99": ms(99), "max": round(hist.max / 1e6, 4)}


def run_amplification(
    host: str,
    port: int,
    *,
    server_pid: int | None = None,
    joins: int = JOINS,
    history: int = defaults.ROOM_HISTORY,
    text: int = defaults.MAX_TEXT,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Run the case once against a server at ``host:port``; the report (see the module)."""

    def rss() -> int | None:
        if server_pid is None:
            return None
        try:
            return rss_kib(server_pid)
        except ProcError:
            return None

    latencies = Histogram()
    peak: list[int] = []
    with Client(host, port, timeout=30) as member, Client(host, port, timeout=30) as bystander:
        member.join(ROOM)
        for _ in range(history):
            member.broadcast(ROOM, "x" * text)
        bystander.time()  # connected and answered before the baseline
        time.sleep(0.2)
        baseline = rss()
        ctx = multiprocessing.get_context("fork")
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_hostile, args=(host, port, joins, timeout, child), daemon=True)
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(TICK_S):
                value = rss()
                if value is not None:
                    peak.append(value)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        proc.start()
        try:
            while True:  # at least once, however fast the flood is answered
                asked = time.perf_counter_ns()
                bystander.time()
                latencies.record(time.perf_counter_ns() - asked)
                if parent.poll(0):
                    break
                if not proc.is_alive() and not parent.poll(0):
                    raise RuntimeError("the hostile client's process died without a report")
                time.sleep(max(0.0, TICK_S - (time.perf_counter_ns() - asked) / _NS))
            flood: dict[str, Any] = parent.recv()
        finally:
            stop.set()
            sampler.join(5)
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        if "error" in flood:
            raise RuntimeError(f"the hostile client failed: {flood['error']}")
        time.sleep(0.5)
        after = rss()
    peak_kib = max(peak) if peak else None
    return {
        "case": "amplification",
        "joins": joins,
        "history": history,
        "text_bytes": text,
        **flood,
        "rss_kib": {
            "baseline": baseline,
            "peak": peak_kib,
            "after": after,
            "peak_growth": None if baseline is None or peak_kib is None else peak_kib - baseline,
        },
        "bystander": {"requests": latencies.total, "latency_ms": _percentiles_ms(latencies)},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m switchboard.bench.hostile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=defaults.HOST)
    parser.add_argument("--port", type=int, default=defaults.PORT)
    parser.add_argument("--server-pid", type=int, help="read the server's RSS from /proc")
    parser.add_argument("--joins", type=int, default=JOINS, help="JOINs pipelined (%(default)s)")
    parser.add_argument("--history", type=int, default=defaults.ROOM_HISTORY,
                        help="messages in the room's history (%(default)s)")  # fmt: skip
    parser.add_argument("--text", type=int, default=defaults.MAX_TEXT,
                        help="bytes per history message (%(default)s)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds the hostile client reads at most (%(default)s)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.joins < 1 or args.history < 0 or args.text < 1 or args.timeout <= 0:
        parser.error("--joins and --text must be >= 1, --history >= 0, --timeout > 0")
    try:
        report = run_amplification(
            args.host,
            args.port,
            server_pid=args.server_pid,
            joins=args.joins,
            history=args.history,
            text=args.text,
            timeout=args.timeout,
        )
    except (OSError, RuntimeError, SwitchboardError) as exc:
        print(f"switchboard.bench.hostile: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        rss_ = report["rss_kib"]
        lat = report["bystander"]["latency_ms"]
        growth = rss_["peak_growth"]
        print(
            f"{report['joins']:,} JOINs ({report['sent_bytes']:,} bytes) answered with "
            f"{report['received_bytes']:,} bytes in {report['seconds']:.2f} s"
            f"{'' if report['complete'] else ' (incomplete)'}; errors {report['errors'] or 'none'}"
        )
        print(
            "server RSS: "
            + ("not measured" if growth is None else f"peak {growth / 1024:+.1f} MiB over baseline")
        )
        print(
            f"bystander: {report['bystander']['requests']} TIME requests, p50 {lat['p50']:.3f} "
            f"p99 {lat['p99']:.3f} max {lat['max']:.3f} ms"
        )
    return 0 if report["complete"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
