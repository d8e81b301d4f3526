"""``switchboard serve --backlog N``: the listen() backlog the server asks of the kernel, as
``ss -ltn`` reads it back (a listener's Send-Q is its backlog); without it, --max-clients
within 128-4096.  --backlog is a setting like the others: on the command line and in TOML."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from support.commands import assert_one_clear_error_line
from support.servers import ServerProcess, run_cli

pytestmark = pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
Factory = Callable[..., ServerProcess]


def listen_backlog(port: int) -> int:
    """The backlog of the listener on ``port``, from the kernel (ss: Send-Q of a listener)."""
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    # State Recv-Q Send-Q Local:Port Peer:Port
    assert out and out[0] == "LISTEN", out
    return int(out[2])


def test_backlog_sets_the_listeners_backlog(server_process_factory: Factory) -> None:
    assert listen_backlog(server_process_factory("--backlog", "3").port) == 3


def test_the_default_follows_max_clients_within_bounds(server_process_factory: Factory) -> None:
    assert listen_backlog(server_process_factory().port) == 1024  # --max-clients' default
    assert listen_backlog(server_process_factory("--max-clients", "5").port) == 128


def test_backlog_from_a_config_file(server_process_factory: Factory, tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text("[server]\nbacklog = 7\n")
    assert listen_backlog(server_process_factory("--config", str(config)).port) == 7


def test_a_negative_backlog_is_a_usage_error() -> None:
    result = run_cli("serve", "--port", "0", "--backlog", "-1")
    line = assert_one_clear_error_line(result, 2)
    assert "backlog" in line
