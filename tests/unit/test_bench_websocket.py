"""The WebSocket benchmark's report: its table and its section of BENCHMARKS.md."""

from __future__ import annotations

import argparse
from pathlib import Path

from switchboard.bench.websocket import BEGIN, END, render, write_doc

RESULTS = {
    "time-tcp": {"ops": 100, "ops_per_sec": 3087.4, "cpu_us_per_op": 50.21, "p50_ms": 0.1009},
    "time-websocket": {"ops": 60, "ops_per_sec": 1988.0, "cpu_us_per_op": 81.6, "p50_ms": 0.134},
    "ring-tcp": {"ops": 1000, "ops_per_sec": 15021.3, "cpu_us_per_op": 8.68},
    "ring-websocket": {"ops": 900, "ops_per_sec": 12098.4, "cpu_us_per_op": 25.43},
    "idle-tcp": {"kib_per_connection": 1.73},
    "idle-websocket": {"kib_per_connection": 16.5},
}
ARGS = argparse.Namespace(duration=3.0, warmup=1.0, runs=3, idle=2000)


def test_the_report_has_both_transports_of_each_case_and_judges_the_goal() -> None:
    text = render(RESULTS, "switchboard serve --port P --http 127.0.0.1:H", ARGS)
    assert text.startswith(BEGIN) and text.rstrip().endswith(END)
    assert "| TIME round trips, W=1 | tcp | 3,087 | 50.2 | 0.101 |" in text
    assert "| TIME round trips, W=1 | websocket | 1,988 | 81.6 | 0.134 |" in text
    assert "| ring messages | websocket | 12,098 | 25.4 | - |" in text
    assert "TCP 1.73 KiB, WebSocket 16.50 KiB** (goal <= 16 KiB: missed)" in text
    assert "2,000 connections per kind" in text and "median of 3 run(s)" in text


def test_its_section_is_replaced_in_place_and_added_once(tmp_path: Path) -> None:
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\nhand-written\n", encoding="utf-8")
    write_doc(doc, f"{BEGIN}\nfirst\n{END}")
    write_doc(doc, f"{BEGIN}\nsecond\n{END}")
    text = doc.read_text(encoding="utf-8")
    assert text.count(END) == 1 and "second" in text and "first" not in text
    assert text.startswith("# Benchmarks\n\nhand-written\n")
