"""``switchboard bench``: load a running server and report throughput, latency and CPU."""

from __future__ import annotations

import argparse
import json
from typing import Any

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

from .common import CliExit, add_endpoint_args, endpoint


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "bench",
        help="load a running server and measure it",
        description=(
            "Open N connections (spread over K load processes), keep W requests in flight on "
            "each, and after a warm-up measure a fixed window: throughput, latency percentiles, "
            "errors, lost requests and (with --server-pid) the server's CPU time per operation. "
            "Run the server with --rate 0: its default rate limit would refuse a benchmark."
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
    )
    try:
        report = run_bench(cfg)
    except BenchError as exc:
        raise CliExit(2, str(exc)) from None
    if args.json:
        print(json.dumps(report))
    else:
        print(format_report(report))
    return 0


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
