"""Throughput of the protocol codec alone, in frames per second (no sockets, no event loop).

    python -m switchboard.bench.protocol_codec [--json] [--runs N] [--frames N]

Cases:

* encoding and decoding a TIME request (the smallest frame, 14 bytes) and a MESSAGE
  indication carrying 200 bytes of text (a typical chat line, 252 bytes in all), one frame
  per ``feed`` as when every read brings a single frame;
* decoding a batch of frames fed in one chunk, as a server reads pipelined requests or a
  client reads a burst of messages: the realistic path, where the per-call overhead of
  ``feed`` and the buffer compaction are shared by the whole batch;
* splitting such a batch of TIME requests with ``FrameDecoder.frames()``, which finds frame
  boundaries without building message objects: the server's hot path.

Each case is timed ``runs`` times after an untimed warm-up; the report gives the median and
the spread (min/max) of the runs.  The garbage collector stays on, as in a real process, and
is run before each timed run so that one run does not pay for another's garbage.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from switchboard.protocol import Frame, FrameDecoder, Message, TimeRequest, encode

#: Frames per timed run of each case: long enough (~0.1-0.5 s on a 2020s core) for the timer
#: and scheduler noise to vanish, short enough for the whole benchmark to take seconds.
DEFAULT_FRAMES = 100_000
DEFAULT_RUNS = 7
#: Frames per chunk in the batch cases: what one 64 KiB read holds of small requests.
BATCH_SIZE = 1_000
#: A typical chat line (the limit, MAX_TEXT, is 4 KiB).
MESSAGE_TEXT_BYTES = 200


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One case: frames/s of every run and their summary."""

    name: str
    operation: str
    frame_bytes: int
    frames_per_run: int
    runs_fps: list[float]
    median_fps: float
    min_fps: float
    max_fps: float

    @property
    def median_mb_s(self) -> float:
        return self.median_fps * self.frame_bytes / 1e6


@dataclass(frozen=True, slots=True)
class Report:
    """Every case plus where it ran."""

    machine: dict[str, Any]
    runs: int
    frames: int
    batch_size: int
    cases: list[CaseResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for case, raw in zip(self.cases, data["cases"], strict=True):
            raw["median_mb_s"] = case.median_mb_s
        return {"benchmark": "protocol_codec", **data}


def time_request() -> TimeRequest:
    return TimeRequest(request_id=123_456)


def message_indication() -> Message:
    text = ("Switchboard " * 20)[:MESSAGE_TEXT_BYTES]
    return Message(9_000_001, 42, "192.0.2.17", 50_123, "alice", "", 1_763_865_000_000, 0, text)


# --- the timed loops: each returns the seconds spent on ``n`` frames --------------------------


def _encode_loop(msg: Frame, n: int) -> float:
    enc = encode
    started = time.perf_counter()
    for _ in range(n):
        enc(msg)
    return time.perf_counter() - started


def _decode_single_loop(data: bytes, n: int) -> float:
    """One frame per ``feed``, then iterate until the decoder needs more: one read's work."""
    decoder = FrameDecoder()
    feed = decoder.feed
    count = 0
    started = time.perf_counter()
    for _ in range(n):
        feed(data)
        for _event in decoder:
            count += 1
    elapsed = time.perf_counter() - started
    if count != n or decoder.buffered:
        raise RuntimeError(f"decoded {count} frames, expected {n}")
    return elapsed


def _decode_batch_loop(data: bytes, n: int) -> float:
    """``n`` frames in chunks of BATCH_SIZE frames (``data`` is one frame)."""
    chunk = data * BATCH_SIZE
    batches, rest = divmod(n, BATCH_SIZE)
    tail = data * rest
    decoder = FrameDecoder()
    count = 0
    started = time.perf_counter()
    for _ in range(batches):
        decoder.feed(chunk)
        for _event in decoder:
            count += 1
    if tail:
        decoder.feed(tail)
        for _event in decoder:
            count += 1
    elapsed = time.perf_counter() - started
    if count != n:
        raise RuntimeError(f"decoded {count} frames, expected {n}")
    return elapsed


def _split_batch_loop(data: bytes, n: int) -> float:
    """Like ``_decode_batch_loop`` through ``FrameDecoder.frames()``: boundaries only, no
    message objects (the server's hot path, whose handlers read the payload in place)."""
    chunk = data * BATCH_SIZE
    batches, rest = divmod(n, BATCH_SIZE)
    tail = data * rest
    decoder = FrameDecoder()
    count = 0
    started = time.perf_counter()
    for _ in range(batches):
        decoder.feed(chunk)
        for _frame in decoder.frames():
            count += 1
    if tail:
        decoder.feed(tail)
        for _frame in decoder.frames():
            count += 1
    elapsed = time.perf_counter() - started
    if count != n:
        raise RuntimeError(f"split {count} frames, expected {n}")
    return elapsed


def _check_decodes(data: bytes, msg: Frame) -> None:
    decoder = FrameDecoder()
    decoder.feed(data)
    if list(decoder) != [msg]:
        raise RuntimeError(f"{type(msg).__name__} does not survive a round trip")


def _measure(
    name: str,
    operation: str,
    frame_bytes: int,
    loop: Callable[[int], float],
    frames: int,
    runs: int,
) -> CaseResult:
    loop(max(1, frames // 10))  # warm-up: caches, branch predictors, lazy imports
    fps = []
    for _ in range(runs):
        gc.collect()
        elapsed = loop(frames)
        fps.append(frames / elapsed if elapsed > 0 else float("inf"))
    return CaseResult(
        name=name,
        operation=operation,
        frame_bytes=frame_bytes,
        frames_per_run=frames,
        runs_fps=fps,
        median_fps=statistics.median(fps),
        min_fps=min(fps),
        max_fps=max(fps),
    )


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: CPU, cores, interpreter."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def run_benchmarks(*, frames: int = DEFAULT_FRAMES, runs: int = DEFAULT_RUNS) -> Report:
    """Time every case ``runs`` times over ``frames`` frames each."""
    if frames < 1 or runs < 1:
        raise ValueError("frames and runs must be at least 1")
    report = Report(machine=machine_info(), runs=runs, frames=frames, batch_size=BATCH_SIZE)
    for label, msg in (("TIME request", time_request()), ("MESSAGE 200 B", message_indication())):
        data = encode(msg)
        _check_decodes(data, msg)
        size = len(data)
        cases: list[tuple[str, str, Callable[[int], float]]] = [
            (f"encode {label}", "encode", functools.partial(_encode_loop, msg)),
            (f"decode {label}", "decode", functools.partial(_decode_single_loop, data)),
            (
                f"decode {label}, {BATCH_SIZE} per chunk",
                "decode-batch",
                functools.partial(_decode_batch_loop, data),
            ),
        ]
        if isinstance(msg, TimeRequest):
            cases.append(
                (
                    f"split {label}, {BATCH_SIZE} per chunk (frames())",
                    "split-batch",
                    functools.partial(_split_batch_loop, data),
                )
            )
        for name, operation, loop in cases:
            report.cases.append(_measure(name, operation, size, loop, frames, runs))
    return report


def _format_rate(fps: float) -> str:
    return f"{fps:,.0f}"


def print_table(report: Report) -> None:
    from rich.console import Console
    from rich.table import Table

    machine = report.machine
    table = Table(
        title=(
            f"protocol codec: median of {report.runs} runs x {report.frames:,} frames\n"
            f"{machine['implementation']} {machine['python']} on {machine['cpu']} "
            f"({machine['cpus']} CPUs)"
        )
    )
    table.add_column("case")
    table.add_column("frame B", justify="right")
    table.add_column("median frames/s", justify="right")
    table.add_column("min", justify="right")
    table.add_column("max", justify="right")
    table.add_column("MB/s", justify="right")
    for case in report.cases:
        table.add_row(
            case.name,
            str(case.frame_bytes),
            _format_rate(case.median_fps),
            _format_rate(case.min_fps),
            _format_rate(case.max_fps),
            f"{case.median_mb_s:.1f}",
        )
    Console().print(table)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m switchboard.bench.protocol_codec",
        description="Measure the protocol codec's encode/decode throughput (frames/s).",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--runs", type=int, default=DEFAULT_RUNS, help=f"timed runs per case ({DEFAULT_RUNS})"
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=DEFAULT_FRAMES,
        help=f"frames per timed run ({DEFAULT_FRAMES:,})",
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.frames < 1:
        parser.error("--runs and --frames must be at least 1")
    report = run_benchmarks(frames=args.frames, runs=args.runs)
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
