"""The codec benchmark runs and reports every case (its speed is not tested here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from switchboard.bench import protocol_codec

BENCH = [sys.executable, "-m", "switchboard.bench.protocol_codec"]


def test_run_benchmarks_reports_every_case() -> None:
    report = protocol_codec.run_benchmarks(frames=25, runs=2)
    assert report.runs == 2 and report.frames == 25
    names = [case.name for case in report.cases]
    assert len(names) == 7 and len(set(names)) == 7
    assert {case.operation for case in report.cases} == {
        "encode",
        "decode",
        "decode-batch",
        "split-batch",
    }
    assert any("TIME" in n for n in names) and any("MESSAGE" in n for n in names)
    for case in report.cases:
        assert len(case.runs_fps) == 2
        assert all(fps > 0 for fps in case.runs_fps)
        assert case.min_fps <= case.median_fps <= case.max_fps
        assert case.frames_per_run == 25
    sizes = {case.name.split()[1]: case.frame_bytes for case in report.cases}
    assert sizes["TIME"] == 14
    assert sizes["MESSAGE"] > 200  # 200 bytes of text plus header and fields
    assert report.machine["python"] and report.machine["cpus"]


def test_report_json_is_serialisable() -> None:
    data = json.loads(json.dumps(protocol_codec.run_benchmarks(frames=3, runs=1).to_json()))
    assert data["benchmark"] == "protocol_codec"
    assert set(data["cases"][0]) >= {"name", "median_fps", "min_fps", "max_fps", "median_mb_s"}


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        protocol_codec.run_benchmarks(frames=0, runs=1)
    with pytest.raises(SystemExit):
        protocol_codec.main(["--runs", "0"])


def test_command_line_json_output() -> None:
    proc = subprocess.run(
        [*BENCH, "--json", "--runs", "1", "--frames", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert len(data["cases"]) == 7
    assert data["runs"] == 1 and data["frames"] == 5


def test_command_line_table_output() -> None:
    proc = subprocess.run(
        [*BENCH, "--runs", "1", "--frames", "5"],
        env={**os.environ, "COLUMNS": "200"},  # one table row per case
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "median frames/s" in proc.stdout
    assert "decode MESSAGE" in proc.stdout
