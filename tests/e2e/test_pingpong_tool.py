"""tools/latency/pingpong.c, the C round-trip floor docs/BENCHMARKS.md quotes: it builds,
and a real server/client pair over loopback reports its percentiles (shape, not speed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from support.network import free_port

SOURCE = Path(__file__).resolve().parents[2] / "tools" / "latency" / "pingpong.c"
REPORT = re.compile(
    r"^(sleeping|spinning) client: 200 round trips, "
    r"p50 ([\d.]+) us, p90 ([\d.]+) us, p99 ([\d.]+) us$"
)


@pytest.fixture(scope="module")
def pingpong(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    assert gcc is not None, "gcc is needed (Debian: gcc, libc6-dev)"
    binary = tmp_path_factory.mktemp("pingpong") / "pingpong"
    subprocess.run(
        [gcc, "-O2", "-Wall", "-Werror", "-o", str(binary), str(SOURCE)], check=True, timeout=60
    )
    return binary


def wait_listening(port: int, server: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Until the kernel lists ``port`` as listening (/proc/net/tcp, state 0A), without
    connecting: the server serves exactly one client, which must be the one measured."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, "the server exited"
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()  # sl, local address (hex ip:port), remote, state, ...
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                return
        time.sleep(0.01)
    raise AssertionError(f"nothing listening on port {port} after {timeout}s")


@pytest.mark.parametrize("spin", [False, True], ids=["sleeping", "spinning"])
def test_a_round_trip_report(pingpong: Path, spin: bool) -> None:
    port = free_port()
    server = subprocess.Popen([str(pingpong), "server", str(port)])
    try:
        wait_listening(port, server)
        cmd = [str(pingpong), "client", str(port), "200", *(["spin"] if spin else [])]
        client = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert client.returncode == 0, client.stderr
        match = REPORT.match(client.stdout.strip())
        assert match is not None, client.stdout
        assert match.group(1) == ("spinning" if spin else "sleeping")
        p50, p90, p99 = (float(match.group(i)) for i in (2, 3, 4))
        assert 0 < p50 <= p90 <= p99
        assert server.wait(10) == 0  # it exits when its one client leaves
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(5)


def test_usage_is_refused(pingpong: Path) -> None:
    proc = subprocess.run([str(pingpong), "bogus"], capture_output=True, text=True, timeout=10)
    assert proc.returncode == 2 and "usage:" in proc.stderr
