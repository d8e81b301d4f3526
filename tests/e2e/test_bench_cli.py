"""``switchboard bench`` against a real server and the null server (shape, not speed)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator

import pytest

from conftest import ServerProcess, run_cli, spawn_logged

QUICK = ("--duration", "0.5", "--warmup", "0.2", "--json")
KEYS = {
    "mode", "clients", "window", "size", "seconds", "ops", "ops_per_sec",
    "server_cpu_us_per_op", "latency_ms", "errors", "lost",
}  # fmt: skip


def check_report(report: dict[str, object], mode: str, clients: int) -> None:
    assert set(report) >= KEYS
    assert report["mode"] == mode and report["clients"] == clients
    assert isinstance(report["ops"], int) and report["ops"] > 0
    assert report["lost"] == 0
    assert report["errors"] == {}
    latency = report["latency_ms"]
    assert isinstance(latency, dict)
    assert set(latency) == {"p50", "p90", "p99", "p999", "max"}
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["p999"]
    assert latency["p999"] <= latency["max"] * 1.01


@pytest.mark.parametrize(
    ("mode", "clients", "window"),
    [("time", 2, 4), ("send", 3, 4), ("list", 4, 1), ("broadcast", 3, 2)],
)
def test_every_mode_against_the_server(
    server_process_factory: Callable[..., ServerProcess], mode: str, clients: int, window: int
) -> None:
    sp = server_process_factory("--rate", "0")
    pid = str(sp.proc.pid)
    proc = run_cli(
        "bench", "--mode", mode, "--clients", str(clients), "--window", str(window),
        "--server-pid", pid, *QUICK, port=sp.port, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    check_report(report, mode, clients)
    cpu = report["server_cpu_us_per_op"]
    assert isinstance(cpu, float | int) and cpu > 0
    if mode == "send":
        assert report["receipts"] >= report["ops"]


def test_requests_mode_and_table(server_process_factory: Callable[..., ServerProcess]) -> None:
    sp = server_process_factory("--rate", "0")
    proc = run_cli(
        "bench", "--mode", "time", "--clients", "2", "--window", "8", "--requests", "2000",
        "--warmup", "0.1", "--duration", "20", port=sp.port, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "throughput" in proc.stdout and "lost         0" in proc.stdout
    assert "pass --server-pid" in proc.stdout  # no pid: no CPU figure, said so


def test_rate_limited_server_shows_errors_by_code(
    server_process_factory: Callable[..., ServerProcess],
) -> None:
    sp = server_process_factory("--rate", "100", "--burst", "10")
    proc = run_cli(
        "bench", "--mode", "time", "--clients", "1", "--window", "16", *QUICK,
        port=sp.port, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["errors"].get("RATE_LIMITED", 0) > 0
    assert report["server_cpu_us_per_op"] is None


@pytest.fixture
def null_server() -> Iterator[tuple[int, int]]:
    """(port, pid) of ``python -m switchboard.bench.null_server`` on a free port."""
    sp = spawn_logged([sys.executable, "-m", "switchboard.bench.null_server", "--port", "0"])
    try:
        yield sp.port, sp.proc.pid
    finally:
        sp.stop()


@pytest.mark.parametrize(("mode", "clients"), [("time", 2), ("send", 2), ("list", 3)])
def test_against_the_null_server(null_server: tuple[int, int], mode: str, clients: int) -> None:
    port, pid = null_server
    proc = run_cli(
        "bench", "--mode", mode, "--clients", str(clients), "--window", "4",
        "--server-pid", str(pid), *QUICK, port=port, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    check_report(report, mode, clients)
    assert report["server_cpu_us_per_op"] > 0


def test_no_server_is_a_clear_error(unused_tcp_port: int) -> None:
    proc = run_cli("bench", "--clients", "1", *QUICK, port=unused_tcp_port, timeout=60)
    assert proc.returncode == 2
    assert "cannot set up 1 connection(s)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_options_are_refused() -> None:
    proc = run_cli("bench", "--mode", "send", "--clients", "1", "--json", port=1, timeout=30)
    assert proc.returncode == 2
    assert "send needs at least 2 clients" in proc.stderr
    proc = run_cli("bench", "--mode", "send", "--clients", "2", "--size", "4", port=1, timeout=30)
    assert proc.returncode == 2 and "--size must be at least 16" in proc.stderr
