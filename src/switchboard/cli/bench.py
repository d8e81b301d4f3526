"""``switchboard bench``: load a running server and report throughput, latency and CPU."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from switchboard import defaults
from switchboard.bench.loadgen import (
    DEFAULT_DURATION,
    DEFAULT_SIZE,
    DEFAULT_WARMUP,
    DEFAULT_WINDOW,
    DRAIN_TIMEOUT_S,
    MODES,
    STAMP_BYTES,
    BenchConfig,
    BenchError,
    run_bench,
)
from switchboard.protocol import PROTOCOL_VERSION

from .common import CliExit, add_endpoint_args, endpoint


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "bench",
        help="load a running server and measure it",
        description=(
            "Open N connections (spread over K load processes), keep W requests in flight on "
            "each, and after a warm-up measure a fixed window: throughput, latency percentiles, "
            "errors, lost requests and (with --server-pid) the server's CPU time per operation. "
            "Run the server with --rate 0: its default rate limit would refuse a benchmark. "
            "Exit code 1 when the server refused requests (errors) or some were lost: the "
            "figures then do not measure the server. On a terminal, a progress line on stderr."
        ),
    )
    add_endpoint_args(p)
    p.add_argument("--mode", choices=MODES, default="time", help="what to measure (default time)")
    p.add_argument("--clients", type=int, default=1, metavar="N", help="connections (default 1)")
    p.add_argument(
        "--window",
        type=int,
        default=DEFAULT_WINDOW,
        metavar="W",
        help=f"requests in flight per client, pipelined (default {DEFAULT_WINDOW})",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=DEFAULT_DURATION,
        metavar="S",
        help=f"seconds measured (default {DEFAULT_DURATION:g}); with --requests, an upper bound",
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=DEFAULT_WARMUP,
        metavar="S",
        help=f"seconds of load before measuring (default {DEFAULT_WARMUP:g})",
    )
    p.add_argument(
        "--requests",
        type=int,
        default=None,
        metavar="M",
        help="send exactly M requests in the measured window instead of measuring a duration",
    )
    p.add_argument(
        "--size",
        type=int,
        default=DEFAULT_SIZE,
        metavar="BYTES",
        help=(
            f"message text size for send and broadcast (default {DEFAULT_SIZE}, "
            f"at least {STAMP_BYTES})"
        ),
    )
    p.add_argument(
        "--procs",
        type=int,
        default=None,
        metavar="K",
        help="load processes (default: one per CPU this command may run on, at most N)",
    )
    p.add_argument(
        "--server-pid",
        type=int,
        default=None,
        metavar="PID",
        help="read this process's CPU time (/proc) to report server CPU per operation",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=DRAIN_TIMEOUT_S,
        metavar="S",
        help=(
            "after the measured window, seconds to wait for answers still in flight before "
            f"counting them as lost (default {DRAIN_TIMEOUT_S:g})"
        ),
    )
    p.add_argument(
        "--busy-poll",
        action="store_true",
        help=(
            "load processes never sleep: each polls its sockets without blocking, so an answer "
            "is read as soon as it arrives, not after the load's CPU wakes up; costs one whole "
            "CPU per load process (for latency at low load, e.g. one client with W=1)"
        ),
    )
    p.add_argument(
        "--protocol",
        type=int,
        choices=(1, PROTOCOL_VERSION),
        default=PROTOCOL_VERSION,
        help=(
            f"send mode: the protocol version to negotiate (default {PROTOCOL_VERSION}: one "
            "ACKS per read and receipts in RECEIPTS frames; 1: an ACK and a RECEIPT per message)"
        ),
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    host, port = endpoint(args)
    cfg = BenchConfig(
        host=host,
        port=port,
        mode=args.mode,
        clients=args.clients,
        window=args.window,
        duration=args.duration,
        warmup=args.warmup,
        requests=args.requests,
        size=args.size,
        procs=args.procs,
        server_pid=args.server_pid,
        drain_timeout=args.drain_timeout,
        busy_poll=args.busy_poll,
        protocol=args.protocol,
    )
    line = ProgressLine(sys.stderr) if sys.stderr.isatty() else None
    try:
        report = run_bench(cfg, line.show if line is not None else None)
    except BenchError as exc:
        raise CliExit(2, str(exc)) from None
    finally:
        if line is not None:
            line.clear()
    if args.json:
        print(json.dumps(report))
    else:
        print(format_report(report))
    verdict = failure(report)
    if verdict is None:
        return 0
    print(f"switchboard bench: {verdict}", file=sys.stderr)
    return 1


def failure(r: dict[str, Any]) -> str | None:
    """Why the run does not measure the server doing its work (refusals, losses), or None.

    A server that refuses requests answers its refusals faster than it does the work, so a
    run with errors measures the refusals: it fails, saying so, whatever its throughput."""
    errors: dict[str, int] = r["errors"]
    problems = []
    if errors:
        refused = sum(errors.values())
        by_code = ", ".join(f"{name} {n:,}" for name, n in sorted(errors.items()))
        problems.append(f"the server refused {refused:,} request(s) ({by_code})")
    if r["lost"]:
        problems.append(f"{r['lost']:,} request(s) or message(s) were lost")
    if not problems:
        return None
    text = "; ".join(problems) + ": these figures do not measure the server"
    if "RATE_LIMITED" in errors:
        text += (
            ". The server is rate limiting this load (its default allows "
            f"{defaults.RATE:,.0f} requests/s per connection); start it for benchmarks with "
            "`switchboard serve --rate 0`"
        )
    return text


class ProgressLine:
    """One line on a terminal, rewritten in place while the run goes on, erased at the end
    (only on a terminal: a log or a pipe gets no carriage returns)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def show(self, text: str) -> None:
        self._stream.write(f"\r\x1b[Kswitchboard bench: {text}")
        self._stream.flush()

    def clear(self) -> None:
        self._stream.write("\r\x1b[K")
        self._stream.flush()


def format_report(r: dict[str, Any]) -> str:
    """The report as a few aligned lines for people."""
    lat = r["latency_ms"]
    cpu = r["server_cpu_us_per_op"]
    errors = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items())) or "none"
    lines = [
        f"mode {r['mode']}: {r['clients']} client(s), window {r['window']}, size {r['size']} B, "
        f"{r['procs']} load process(es)" + (", busy-polling" if r.get("busy_poll") else ""),
        f"  throughput   {r['ops_per_sec']:,.0f} ops/s ({r['ops']:,} ops in {r['seconds']:g} s)",
        "  latency ms   "
        + "  ".join(f"{k} {lat[k]:.3f}" for k in ("p50", "p90", "p99", "p999", "max")),
        "  server CPU   "
        + (f"{cpu:.2f} µs/op" if cpu is not None else "- (pass --server-pid to measure it)"),
        f"  errors       {errors}",
        f"  lost         {r['lost']}",
    ]
    if r.get("receipts") is not None:
        lines.append(f"  receipts     {r['receipts']:,}")
    return "\n".join(lines)
